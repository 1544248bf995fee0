"""DualCoOp (Dual Context Optimization) as a Hub-native model.

Sun, Hu & Saenko, "DualCoOp: Fast Adaptation to Multi-Label Recognition with Limited Annotations", NeurIPS 2022.
Written from the paper and the notes in `docs/methods.md`; no code copied from the official repository.

The scoring is two reusable functions: `region_aggregated_logits` (class-specific region feature aggregation guided by
any prompt) and `dualcoop_logits` (DualCoOp's negative/positive pair guided by the positive prompt).
"""

from collections.abc import Callable

import torch
import torch.nn.functional as F

from ovmlc.core.backbones import dense_image_tokens, token_grid_size
from ovmlc.core.outputs import MultiLabelOutput
from ovmlc.methods.coop.modeling_coop import CoOpFamilyModel

from .configuration_dualcoop import DualCoOpConfig

# Prompt-set order of DualCoOp's label embeddings `[C, 2, D]` (the code's `[B, 2, C]` logits: 0 = negative).
NEGATIVE, POSITIVE = 0, 1
# The code's hard-coded scales: s = 20 * cos per region, logit = 5 * sum_r w_r * s_r (i.e. 100 x the weighted cosine).
REGION_LOGIT_SCALE = 20.0
AGGREGATED_LOGIT_SCALE = 5.0


def region_aggregated_logits(
    region_embeds: torch.Tensor,
    prompt_embeds: torch.Tensor,
    guide_embeds: torch.Tensor,
    region_logit_scale: float = REGION_LOGIT_SCALE,
    aggregated_logit_scale: float = AGGREGATED_LOGIT_SCALE,
    guide_transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Class-specific region feature aggregation.

    region_embeds `[B, R, D]` (dense image features), prompt_embeds `[C, S, D]` (S prompts per label), guide_embeds
    `[C, D]` (the prompt whose response weights the regions). With unit vectors, per label c and region r:
    `g_{c,r} = region_logit_scale * cos(guide_c, region_r)`, `w_{c,r} = softmax_r(g_{c,r})` (after `guide_transform`
    of `g [B, C, R]`, if any) and, per prompt k of c, `logit_{c,k} = aggregated_logit_scale * sum_r w_{c,r} *
    region_logit_scale * cos(prompt_{c,k}, region_r)`. Returns `logits [B, C, S]` and `weights [B, C, R]`.
    The sum over regions is taken on the features (`sum_r w_{c,r} region_r`, then one cosine-like product), which is
    the same number without a `[B, C, S, R]` tensor.
    """
    regions = F.normalize(region_embeds, dim=-1)  # [B, R, D]
    prompts = F.normalize(prompt_embeds.to(regions.dtype), dim=-1)  # [C, S, D]
    guides = F.normalize(guide_embeds.to(regions.dtype), dim=-1)  # [C, D]
    guide_logits = region_logit_scale * torch.einsum("brd,cd->bcr", regions, guides)  # [B, C, R]
    if guide_transform is not None:
        guide_logits = guide_transform(guide_logits)
    weights = guide_logits.softmax(dim=-1)  # [B, C, R]
    pooled = torch.einsum("bcr,brd->bcd", weights, regions)  # [B, C, D], not re-normalised (as the code)
    logits = aggregated_logit_scale * region_logit_scale * torch.einsum("bcd,csd->bcs", pooled, prompts)
    return logits, weights


def dualcoop_logits(
    region_embeds: torch.Tensor,
    label_embeds: torch.Tensor,
    region_logit_scale: float = REGION_LOGIT_SCALE,
    aggregated_logit_scale: float = AGGREGATED_LOGIT_SCALE,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """DualCoOp's head. region_embeds `[B, R, D]`, label_embeds `[C, 2, D]` (negative, positive prompts).

    The spatial weights come from the positive prompt and serve both prompts. Returns `logits [B, C]` = positive −
    negative logit (so `sigmoid(logits)` is the 2-way softmax's positive probability), `pair_logits [B, 2, C]` (the
    code's layout: index 0 negative, 1 positive) and `weights [B, C, R]`.
    """
    pair, weights = region_aggregated_logits(
        region_embeds, label_embeds, label_embeds[:, POSITIVE], region_logit_scale, aggregated_logit_scale
    )  # [B, C, 2], [B, C, R]
    return pair[..., POSITIVE] - pair[..., NEGATIVE], pair.transpose(1, 2), weights


def spatial_label_maps(weights: torch.Tensor, has_global_token: bool) -> torch.Tensor:
    """Aggregation weights `[B, C, R]` → label maps `[B, C, h, w]` over the patch grid (the global token's weight
    left out)."""
    patches = weights[..., 1:] if has_global_token else weights
    height, width = token_grid_size(patches.shape[-1])
    return patches.reshape(*patches.shape[:2], height, width)


def dense_region_features(clip, pixel_values: torch.Tensor, dense_features: str) -> dict[str, torch.Tensor]:
    """`{"dense_embeds": [B, 1 + N, D]}` from the frozen CLIP (the global token then the patch grid; `[B, 1, D]` for
    `dense_features="global"`): the regions DualCoOp's head scores, no gradients (cacheable)."""
    with torch.no_grad():
        dense = dense_image_tokens(clip, pixel_values, value_path=dense_features == "value")
    return {"dense_embeds": dense[:, :1] if dense_features == "global" else dense}


def select_regions(image_features: dict[str, torch.Tensor], include_global_token: bool, owner: str) -> torch.Tensor:
    """The regions `[B, R, D]` of `dense_region_features`' output, with or without the global token; `owner` names
    the caller in the error for features of another kind."""
    if "dense_embeds" not in image_features:
        raise ValueError(
            f"{owner} needs image_features['dense_embeds'] (from encode_image_features), got keys "
            f"{sorted(image_features)}"
        )
    dense = image_features["dense_embeds"]  # [B, 1 + N, D]
    return dense if include_global_token else dense[:, 1:]


class DualCoOpModel(CoOpFamilyModel):
    """DualCoOp: `logits [B, C] = pos_c - neg_c` from class-specific region aggregation over dense CLIP features.

    `encode_image_features` returns `{"dense_embeds": [B, 1 + N, D]}` (frozen, cacheable: the global token then the
    patch grid, `config.dense_features` path); `label_maps [B, C, h, w]` are the positive prompt's spatial weights.
    """

    config: DualCoOpConfig
    num_prompt_sets = 2

    def encode_image_features(self, pixel_values: torch.Tensor) -> dict[str, torch.Tensor]:
        return dense_region_features(self.clip, pixel_values.to(self.dtype), self.config.dense_features)

    def region_embeds(self, image_features: dict[str, torch.Tensor]) -> torch.Tensor:
        return select_regions(image_features, self.config.include_global_token, f"{type(self).__name__}.score")

    def score(self, image_features, label_embeds, return_label_maps=False) -> MultiLabelOutput:
        regions = self.region_embeds(image_features)
        logits, _, weights = dualcoop_logits(
            regions,
            self.prompt_sets(label_embeds, self.num_prompt_sets),
            float(self.config.region_logit_scale),
            float(self.config.aggregated_logit_scale),
        )
        return MultiLabelOutput(logits=logits, label_maps=self.label_maps(weights) if return_label_maps else None)

    def label_maps(self, weights: torch.Tensor) -> torch.Tensor | None:
        """`[B, C, h, w]` from the aggregation weights `[B, C, R]` (None for the global embedding alone)."""
        if self.config.dense_features == "global":
            return None
        return spatial_label_maps(weights, self.config.include_global_token)


DualCoOpConfig.register_for_auto_class()
DualCoOpModel.register_for_auto_class("AutoModel")

__all__ = [
    "NEGATIVE",
    "POSITIVE",
    "DualCoOpModel",
    "dense_region_features",
    "dualcoop_logits",
    "region_aggregated_logits",
    "select_regions",
    "spatial_label_maps",
]
