"""Plain CLIP zero-shot multi-label classification as a Hub-native model."""

import contextlib
from collections.abc import Iterator

import torch
import torch.nn.functional as F

from ovmlc.core.backbones import SIGLIP_FAMILY, backbone_family, logit_scale_and_bias, patch_grid_size
from ovmlc.core.modeling_base import OVMLCPreTrainedModel
from ovmlc.core.outputs import MultiLabelOutput
from ovmlc.core.vocabulary import LabelVocabulary

from .configuration_clip_zeroshot import CLIPZeroShotConfig


class CLIPZeroShotModel(OVMLCPreTrainedModel):
    """CLIP zero-shot: logits `[B, C]` = scale * (cos(image, label_c) - cos(image, reference prompt)) + bias.

    On a SigLIP / SigLIP 2 backbone: logits = exp(logit_scale) * cos(image, label_c) + logit_bias with the
    checkpoint's own scale and bias (+ `config.logit_bias` as an offset, 0 by default), no reference prompt: SigLIP
    was trained with exactly this sigmoid per (image, text) pair, so its scores are per-label probabilities as they are.

    No softmax across labels: a label's score depends only on the image and that label. The neutral reference prompt
    ("a photo.") turns CLIP's narrow cosine range into usable sigmoid scores (on the shipped synthetic CLIP: F1 0.89 at
    threshold 0.5 with it, vs every score ~1 without). It subtracts one constant per image, so each image's ranking of
    labels is unchanged but the ranking of images within a label is not (mAP changes): paper-style tables rank the
    plain cosine instead (`config.ranking_scores`, `ranking_scores()`). `label_maps [B, C, h, w]` are the same score
    per patch token (projected through `post_layernorm` and `visual_projection`), usable as coarse heatmaps.
    """

    config: CLIPZeroShotConfig
    supported_backbone_families = ("clip", "siglip")

    @classmethod
    def from_clip(cls, backbone="synthetic", dtype=torch.float32, revision=None, **config_kwargs):
        """`OVMLCPreTrainedModel.from_clip`; on a SigLIP backbone the reference prompt defaults to None (SigLIP's own
        bias calibrates its sigmoid scores)."""
        from ovmlc.core.backbones import load_backbone_config

        kwargs = {"revision": revision} if revision else {}
        if backbone_family(load_backbone_config(backbone, **kwargs)) is SIGLIP_FAMILY:
            config_kwargs.setdefault("reference_prompt", None)
        return super().from_clip(backbone, dtype=dtype, revision=revision, **config_kwargs)

    def __init__(self, config: CLIPZeroShotConfig):
        super().__init__(config)
        self._reference_disabled = False
        self.post_init()
        self._freeze_text_side()

    def _freeze_text_side(self) -> None:
        # Labels are encoded once, without gradients (`trains_text_side` is False): the text tower never trains.
        # The image side stays trainable, so a recipe can fine-tune CLIP as it is (with `training.epochs: 0` it only
        # evaluates).
        for module in self.text_side_modules():
            module.requires_grad_(False)

    def post_load(self) -> None:
        self._freeze_text_side()

    @contextlib.contextmanager
    def ranking_scores(self) -> Iterator[str | None]:
        """With `config.ranking_scores="plain_cosine"` and a reference prompt: score without the reference inside the
        context (what paper-style tables rank); yields that description, else None (scores unchanged)."""
        if self.config.ranking_scores != "plain_cosine" or not self.config.reference_prompt:
            yield None
            return
        previous, self._reference_disabled = self._reference_disabled, True
        try:
            yield (
                "plain cosine (scale * cos(image, label) + bias; the reference prompt "
                f"{self.config.reference_prompt!r} is not subtracted: CLIPZeroShotConfig.ranking_scores=plain_cosine)"
            )
        finally:
            self._reference_disabled = previous

    def logit_scale(self) -> torch.Tensor:
        if self.config.logit_scale is not None:
            return torch.tensor(float(self.config.logit_scale), device=self.device)
        return logit_scale_and_bias(self.clip)[0]  # CLIP: exp(logit_scale) capped at 100; SigLIP: uncapped

    def logit_bias(self, dtype: torch.dtype) -> float | torch.Tensor:
        """`config.logit_bias` (CLIP), plus the checkpoint's learned `logit_bias` on SigLIP (`[1]`)."""
        backbone_bias = logit_scale_and_bias(self.clip)[1]
        if backbone_bias is None:
            return self.config.logit_bias
        return backbone_bias.to(dtype) + self.config.logit_bias

    def reference_embedding(self) -> torch.Tensor | None:
        """`[1, D]` text embedding of `config.reference_prompt` (cached like any label), or None."""
        if not self.config.reference_prompt or self._reference_disabled:
            return None
        with torch.no_grad():
            return self.encode_labels(LabelVocabulary([self.config.reference_prompt], templates="{}"))

    def score(self, image_features, label_embeds, return_label_maps=False) -> MultiLabelOutput:
        scale = self.logit_scale()
        dtype = image_features["image_embeds"].dtype
        label_embeds = F.normalize(label_embeds.to(dtype), dim=-1)  # [C, D]
        reference = self.reference_embedding()
        if reference is not None:
            reference = F.normalize(reference.to(dtype), dim=-1)  # [1, D]
        image_embeds = F.normalize(image_features["image_embeds"], dim=-1)  # [B, D]
        similarity = image_embeds @ label_embeds.T  # [B, C]
        if reference is not None:
            similarity = similarity - image_embeds @ reference.T  # baseline per image: [B, 1]
        bias = self.logit_bias(dtype)
        logits = scale * similarity + bias  # [B, C]
        label_maps = None
        if return_label_maps and self.config.dense_maps and "patch_embeds" in image_features:
            patch_embeds = F.normalize(image_features["patch_embeds"], dim=-1)  # [B, N, D]
            height, width = patch_grid_size(self.clip)
            dense = patch_embeds @ label_embeds.T  # [B, N, C]
            if reference is not None:
                dense = dense - patch_embeds @ reference.T  # baseline per patch: [B, N, 1]
            dense = scale * dense + bias
            label_maps = dense.transpose(1, 2).reshape(dense.shape[0], -1, height, width)  # [B, C, h, w]
        return MultiLabelOutput(logits=logits, label_maps=label_maps, image_embeds=image_embeds)


CLIPZeroShotConfig.register_for_auto_class()
CLIPZeroShotModel.register_for_auto_class("AutoModel")

__all__ = ["CLIPZeroShotModel"]
