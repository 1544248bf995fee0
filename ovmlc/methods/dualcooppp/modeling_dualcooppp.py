"""DualCoOp++ (Evidence-guided Dual Context Optimization) as a Hub-native model.

Hu, Sun, Sclaroff & Saenko, "DualCoOp++: Fast and Effective Adaptation to Multi-Label Recognition with Limited
Annotations", IEEE TPAMI (arXiv 2308.01890). No official code exists; written from the paper's description, with every
decision listed in `docs/methods.md` and the method card.
"""

from functools import partial

import torch

from ovmlc.core.outputs import MultiLabelOutput
from ovmlc.methods.dualcoop.modeling_dualcoop import DualCoOpModel, region_aggregated_logits

from .configuration_dualcooppp import DualCoOpPPConfig

# Prompt-set order of DualCoOp++'s label embeddings `[C, 3, D]`.
EVIDENTIAL, POSITIVE, NEGATIVE = 0, 1, 2


def winner_take_all(guide_logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Parameter-free competition between labels at every region: `g [B, C, R]` → `g + log softmax_C(g / T)`.

    After the spatial softmax the weight of region r for label c becomes proportional to `exp(g_{c,r}) *
    p(c | r)`, where `p(c | r)` is label c's share of region r among the labels scored together.
    """
    return guide_logits + torch.log_softmax(guide_logits / temperature, dim=1)


def dualcooppp_logits(
    region_embeds: torch.Tensor,
    label_embeds: torch.Tensor,
    region_logit_scale: float = 20.0,
    aggregated_logit_scale: float = 5.0,
    wta_temperature: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """DualCoOp++'s head. region_embeds `[B, R, D]`, label_embeds `[C, 3, D]` (evidential, positive, negative).

    The evidential prompt's response weights the regions (with `winner_take_all` when `wta_temperature` is given);
    the positive and negative prompts are aggregated with those weights. Returns `logits [B, C]` = positive −
    negative and the evidential `weights [B, C, R]`.
    """
    transform = None if wta_temperature is None else partial(winner_take_all, temperature=float(wta_temperature))
    pair, weights = region_aggregated_logits(
        region_embeds,
        label_embeds[:, [NEGATIVE, POSITIVE]],
        label_embeds[:, EVIDENTIAL],
        region_logit_scale,
        aggregated_logit_scale,
        guide_transform=transform,
    )  # [B, C, 2], [B, C, R]
    return pair[..., 1] - pair[..., 0], weights


class DualCoOpPPModel(DualCoOpModel):
    """DualCoOp++: evidence-guided aggregation of a positive/negative prompt pair, WTA across labels in training.

    Same image side as DualCoOp (`dense_embeds`); `label_maps [B, C, h, w]` are the evidential prompt's weights.
    """

    config: DualCoOpPPConfig
    num_prompt_sets = 3

    def score(self, image_features, label_embeds, return_label_maps=False) -> MultiLabelOutput:
        config = self.config
        # WTA only where gradients flow (training); inference scores each label independently of the others.
        competing = config.winner_take_all and self.training and torch.is_grad_enabled()
        logits, weights = dualcooppp_logits(
            self.region_embeds(image_features),
            self.prompt_sets(label_embeds, self.num_prompt_sets),
            float(config.region_logit_scale),
            float(config.aggregated_logit_scale),
            wta_temperature=float(config.wta_temperature) if competing else None,
        )
        return MultiLabelOutput(logits=logits, label_maps=self.label_maps(weights) if return_label_maps else None)


DualCoOpPPConfig.register_for_auto_class()
DualCoOpPPModel.register_for_auto_class("AutoModel")

__all__ = ["EVIDENTIAL", "NEGATIVE", "POSITIVE", "DualCoOpPPModel", "dualcooppp_logits", "winner_take_all"]
