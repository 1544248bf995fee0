"""Plain CLIP zero-shot multi-label classification as a Hub-native model."""

import torch
import torch.nn.functional as F

from ovmlc.clip_utils import patch_grid_size
from ovmlc.modeling_base import MultiLabelOutput, OVMLCPreTrainedModel

from .configuration_clip_zeroshot import CLIPZeroShotConfig


class CLIPZeroShotModel(OVMLCPreTrainedModel):
    """CLIP zero-shot: logits `[B, C]` = scale * cos(image_embeds, label_embeds) + bias (no softmax across labels).

    `label_maps [B, C, h, w]` are the same score per patch token (projected through `post_layernorm` and
    `visual_projection`), usable as coarse heatmaps.
    """

    config: CLIPZeroShotConfig

    def __init__(self, config: CLIPZeroShotConfig):
        super().__init__(config)
        self.post_init()

    def logit_scale(self) -> torch.Tensor:
        if self.config.logit_scale is not None:
            return torch.tensor(float(self.config.logit_scale), device=self.device)
        return self.clip.logit_scale.exp().clamp(max=100.0)

    def score(self, image_features, label_embeds, return_label_maps=False) -> MultiLabelOutput:
        scale = self.logit_scale()
        label_embeds = F.normalize(label_embeds.to(image_features["image_embeds"].dtype), dim=-1)  # [C, D]
        image_embeds = F.normalize(image_features["image_embeds"], dim=-1)  # [B, D]
        logits = scale * image_embeds @ label_embeds.T + self.config.logit_bias  # [B, C]
        label_maps = None
        if return_label_maps and self.config.dense_maps and "patch_embeds" in image_features:
            patch_embeds = F.normalize(image_features["patch_embeds"], dim=-1)  # [B, N, D]
            height, width = patch_grid_size(self.clip)
            dense = scale * patch_embeds @ label_embeds.T + self.config.logit_bias  # [B, N, C]
            label_maps = dense.transpose(1, 2).reshape(dense.shape[0], -1, height, width)  # [B, C, h, w]
        return MultiLabelOutput(logits=logits, label_maps=label_maps, image_embeds=image_embeds)


CLIPZeroShotConfig.register_for_auto_class()
CLIPZeroShotModel.register_for_auto_class("AutoModel")

__all__ = ["CLIPZeroShotModel"]
