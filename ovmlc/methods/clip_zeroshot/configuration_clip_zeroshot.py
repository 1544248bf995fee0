"""Configuration of plain CLIP zero-shot multi-label classification."""

from ovmlc.modeling_base import OVMLCConfig


class CLIPZeroShotConfig(OVMLCConfig):
    r"""
    CLIP zero-shot multi-label classifier: per-label logit = scale * cos(image, prompt) + bias, independent per
    label. Fields are those of `OVMLCConfig` plus:

    dense_maps (`bool`): whether `label_maps` (patch-token cosine maps `[B, C, h, w]`) can be returned.
    """

    model_type = "ovmlc_clip_zeroshot"

    dense_maps: bool = True


__all__ = ["CLIPZeroShotConfig"]
