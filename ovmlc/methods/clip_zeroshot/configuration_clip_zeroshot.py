"""Configuration of plain CLIP zero-shot multi-label classification."""

from ovmlc.core.modeling_base import OVMLCConfig


class CLIPZeroShotConfig(OVMLCConfig):
    r"""
    CLIP zero-shot multi-label classifier: per-label logit = scale * (cos(image, prompt_c) - cos(image, reference))
    + bias, independent per label. Fields are those of `OVMLCConfig` plus:

    reference_prompt (`str` or `None`): a neutral prompt whose similarity is each image's baseline, so that raw CLIP
        cosines (which sit around 0.2-0.3 for every label) become sigmoid scores near 1 for present and near 0 for
        absent labels without any calibration data. `None` gives plain `scale * cos + bias` (rankings are the same).
    dense_maps (`bool`): whether `label_maps` (patch-token maps `[B, C, h, w]`) can be returned.
    """

    model_type = "ovmlc_clip_zeroshot"

    reference_prompt: str | None = "a photo."
    dense_maps: bool = True


__all__ = ["CLIPZeroShotConfig"]
