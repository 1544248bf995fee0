"""Configuration of plain CLIP zero-shot multi-label classification."""

from ovmlc.core.modeling_base import OVMLCConfig


class CLIPZeroShotConfig(OVMLCConfig):
    r"""
    CLIP zero-shot multi-label classifier: per-label logit = scale * (cos(image, prompt_c) - cos(image, reference))
    + bias, independent per label. Fields are those of `OVMLCConfig` plus:

    reference_prompt (`str` or `None`): a neutral prompt whose similarity is each image's baseline, so that raw CLIP
        cosines (which sit around 0.2-0.3 for every label) become sigmoid scores near 1 for present and near 0 for
        absent labels without any calibration data. `None` gives plain `scale * cos + bias`. The baseline is one
        constant per image: the ranking of labels within an image is unchanged, but the ranking of images within a
        label changes, and so does mAP.
    ranking_scores (`"plain_cosine"` | `"reference"`): the scores evaluation ranks for paper-style tables (mAP,
        P/R/F1@K; `ranking_scores()` context). `"plain_cosine"` (default): `scale * cos + bias` without the reference,
        what the papers' CLIP zero-shot rows rank; `"reference"`: the predicted scores. `predict`, calibrated
        thresholds and the threshold metrics always use the reference prompt.
    dense_maps (`bool`): whether `label_maps` (patch-token maps `[B, C, h, w]`) can be returned.
    """

    model_type = "ovmlc_clip_zeroshot"

    reference_prompt: str | None = "a photo."
    ranking_scores: str = "plain_cosine"
    dense_maps: bool = True

    def __post_init__(self, **kwargs):
        if self.ranking_scores not in ("plain_cosine", "reference"):
            raise ValueError(
                f"CLIPZeroShotConfig.ranking_scores must be 'plain_cosine' or 'reference', got {self.ranking_scores!r}"
            )
        super().__post_init__(**kwargs)


__all__ = ["CLIPZeroShotConfig"]
