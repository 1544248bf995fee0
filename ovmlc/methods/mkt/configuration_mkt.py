"""Configuration of MKT (Multi-modal Knowledge Transfer, He et al., AAAI 2023)."""

from ovmlc.core.modeling_base import OVMLCConfig

MKT_STAGES = (1, 2)
MKT_PROMPT_TUNING = ("context", "token_table")
MKT_CONTEXT_INIT = ("template", "random")


class MKTConfig(OVMLCConfig):
    r"""
    MKT: a student CLIP image tower (the last `num_trainable_layers` blocks, final LayerNorm and projection trained,
    with layer-wise LR decay) distilled towards the frozen original tower, scored by a two-stream (global CLS + top-k
    local patches) similarity with label embeddings; stage 2 tunes the prompt with the image side frozen. Fields are
    those of `OVMLCConfig` (defaults: `templates="mkt"`, i.e. "There is a {} in the scene", `prompt_pool="raw"`,
    `logit_scale=1.0`) plus:

    stage (`1` | `2`): 1 = image-side training (ranking + distillation), 2 = prompt tuning (image side frozen).
    num_trainable_layers (`int`): how many of the last vision blocks the student trains (2 in the paper's code).
    layer_decay (`float`): LR multiplier per block going down from the head (0.65); the head (final LayerNorm and
        projection) gets 1, the last block `layer_decay`, the one before `layer_decay**2`, ...
    top_k (`int`): k of the local stream (mean of the top-k patch scores per label; 16 at 196 patches), capped by the
        number of patches.
    distillation_weight (`float`): lambda of the L1 distillation on the raw CLS embedding (1.0).
    ranking_margin (`float`): margin of the pairwise ranking loss (1.0).
    prompt_tuning (`"context"` | `"token_table"`): stage 2's learnable text side. `"context"` (the paper's intent,
        CoOp-style) learns one vector per word of the template around the label; `"token_table"` (the official code)
        trains a copy of the whole token-embedding table while the label words keep their frozen embeddings.
    prompt_context_init (`"template"` | `"random"`): context vectors start from the template words' embeddings (so
        stage 2 starts exactly at stage 1's label embeddings) or from N(0, `initializer_range`).
    initializer_range (`float`): std of random initialisations.
    """

    model_type = "ovmlc_mkt"

    templates: str | list[str] | None = "mkt"
    prompt_pool: str = "raw"
    logit_scale: float | None = 1.0
    stage: int = 1
    num_trainable_layers: int = 2
    layer_decay: float = 0.65
    top_k: int = 16
    distillation_weight: float = 1.0
    ranking_margin: float = 1.0
    prompt_tuning: str = "context"
    prompt_context_init: str = "template"
    initializer_range: float = 0.02

    def __post_init__(self, **kwargs):
        if int(self.stage) not in MKT_STAGES:
            raise ValueError(f"MKTConfig.stage must be 1 or 2, got {self.stage!r}")
        self.stage = int(self.stage)
        if self.prompt_tuning not in MKT_PROMPT_TUNING:
            raise ValueError(f"MKTConfig.prompt_tuning must be one of {MKT_PROMPT_TUNING}, got {self.prompt_tuning!r}")
        if self.prompt_context_init not in MKT_CONTEXT_INIT:
            raise ValueError(
                f"MKTConfig.prompt_context_init must be one of {MKT_CONTEXT_INIT}, got {self.prompt_context_init!r}"
            )
        if int(self.num_trainable_layers) < 0:
            raise ValueError(f"MKTConfig.num_trainable_layers must be >= 0, got {self.num_trainable_layers!r}")
        if int(self.top_k) < 1:
            raise ValueError(f"MKTConfig.top_k must be >= 1, got {self.top_k!r}")
        if not 0.0 < float(self.layer_decay) <= 1.0:
            raise ValueError(f"MKTConfig.layer_decay must be in (0, 1], got {self.layer_decay!r}")
        super().__post_init__(**kwargs)


__all__ = ["MKTConfig"]
