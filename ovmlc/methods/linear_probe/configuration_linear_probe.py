"""Configuration of the linear-probe baseline (a per-label linear classifier on frozen CLIP image embeddings)."""

from ovmlc.core.modeling_base import OVMLCConfig

LINEAR_PROBE_INITS = ("text", "zeros")


class LinearProbeConfig(OVMLCConfig):
    r"""
    Linear probe: frozen CLIP; each training label c gets a weight vector and a bias, `logit_c = w_c . x + b_c` on the
    L2-normalised image embedding x, trained with masked BCE (unannotated entries ignored). Fields are those of
    `OVMLCConfig` plus:

    probe_labels (`list[str]`, *optional*): the labels with a learned row, in row order; filled from `seen_labels` when
        the model is built (the trainer passes them).
    init (`"text"` | `"zeros"`): rows start as the zero-shot classifier (`w_c = scale * text embedding of the label`,
        normalised; `b_c = logit_bias`) or at zero (classic logistic regression).

    Labels outside `probe_labels` are scored zero-shot with the same formula as the text initialisation (`scale *
    cos(x, text_c)` plus the mean learned bias): the probe is a closed-set baseline that still runs on any label.
    `logit_scale`: the text rows' scale (`None` = CLIP's learned temperature, capped at 100); `logit_bias`: the initial
    bias.
    """

    model_type = "ovmlc_linear_probe"

    probe_labels: list[str] | None = None
    init: str = "text"

    def __post_init__(self, **kwargs):
        if self.init not in LINEAR_PROBE_INITS:
            raise ValueError(f"LinearProbeConfig.init must be one of {LINEAR_PROBE_INITS}, got {self.init!r}")
        if self.probe_labels is not None and (
            not self.probe_labels or not all(isinstance(name, str) and name.strip() for name in self.probe_labels)
        ):
            raise ValueError("LinearProbeConfig.probe_labels must be a non-empty list of label names or None")
        super().__post_init__(**kwargs)


__all__ = ["LINEAR_PROBE_INITS", "LinearProbeConfig"]
