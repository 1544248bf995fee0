"""Multi-label losses that ignore unannotated entries.

`labels` and `label_mask` are `[B, C]` in {0, 1}; `label_mask == 0` marks unannotated entries, which contribute
nothing. A `None` mask means everything is annotated.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _mask(labels: torch.Tensor, label_mask: torch.Tensor | None) -> torch.Tensor:
    return torch.ones_like(labels) if label_mask is None else label_mask.to(labels.dtype)


def masked_bce_with_logits(
    logits: torch.Tensor, labels: torch.Tensor, label_mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Mean binary cross-entropy over annotated entries."""
    labels = labels.to(logits.dtype)
    mask = _mask(labels, label_mask)
    loss = F.binary_cross_entropy_with_logits(logits, labels, reduction="none") * mask
    return loss.sum() / mask.sum().clamp(min=1.0)


def asymmetric_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    label_mask: torch.Tensor | None = None,
    gamma_neg: float = 4.0,
    gamma_pos: float = 0.0,
    clip: float = 0.0,
    eps: float = 1e-8,
    focal_weight_grad: bool = False,
    reduction: str = "batch_mean",
) -> torch.Tensor:
    """Asymmetric loss (Ridnik et al., ICCV 2021), summed over annotated entries and divided by B
    (`reduction="batch_mean"`) or only summed (`reduction="sum"`, DualCoOp's code).

    `clip` shifts negative probabilities down (probability margin); the focal weights carry no gradient by
    default, as in the optimised reference implementation. On `logits = pos - neg` of a two-way (negative, positive)
    softmax, `sigmoid(logits)` is the softmax's positive probability, so this is also DualCoOp's ASL on the 2-way
    softmax.
    """
    if reduction not in ("batch_mean", "sum"):
        raise ValueError(f"asymmetric_loss reduction must be 'batch_mean' or 'sum', got {reduction!r}")
    labels = labels.to(logits.dtype)
    mask = _mask(labels, label_mask)
    prob = torch.sigmoid(logits)
    prob_neg = (1 - prob + clip).clamp(max=1) if clip > 0 else 1 - prob
    loss_pos = labels * torch.log(prob.clamp(min=eps))
    loss_neg = (1 - labels) * torch.log(prob_neg.clamp(min=eps))
    loss = loss_pos + loss_neg
    if gamma_neg > 0 or gamma_pos > 0:
        with torch.set_grad_enabled(focal_weight_grad and torch.is_grad_enabled()):
            pt = prob * labels + prob_neg * (1 - labels)
            gamma = gamma_pos * labels + gamma_neg * (1 - labels)
            weight = torch.pow(1 - pt, gamma)
        loss = loss * weight
    total = -(loss * mask).sum()
    return total if reduction == "sum" else total / logits.shape[0]


def ranking_loss(
    logits: torch.Tensor, labels: torch.Tensor, label_mask: torch.Tensor | None = None, margin: float = 1.0
) -> torch.Tensor:
    """Pairwise hinge ranking loss (BiAM `ranking_lossT`, copied by MKT and QKS), reduced per image.

    For each image, every annotated positive should outscore every annotated negative by `margin`:
    `loss_i = sum of max(0, margin - s_pos + s_neg) over its (pos, neg) pairs / number of those pairs with a positive
    hinge` (0 when no pair violates), and the loss is the mean of `loss_i` over the images with at least one
    annotated positive (the reference training loops drop the others before calling the loss; images with positives
    but no violation or no negative still count, as 0). The violation count carries no gradient.
    """
    labels = labels.to(logits.dtype)
    mask = _mask(labels, label_mask)
    positive = labels * mask  # [B, C]
    negative = (1 - labels) * mask  # [B, C]
    keep = positive.sum(dim=1) > 0
    if not bool(keep.any()):
        return logits.sum() * 0.0
    logits, positive, negative = logits[keep], positive[keep], negative[keep]
    # margin - s_pos + s_neg for every (pos, neg) pair of an image: [B, C_pos, C_neg] via broadcasting.
    violation = margin - logits.unsqueeze(2) + logits.unsqueeze(1)
    pair_mask = positive.unsqueeze(2) * negative.unsqueeze(1)
    hinge = F.relu(violation) * pair_mask
    per_image_hinge = hinge.sum(dim=(1, 2))  # [B]
    per_image_violating = (hinge > 0).to(logits.dtype).sum(dim=(1, 2))  # [B]
    # An image without violations has a zero hinge sum: dividing by max(count, 1) gives its 0.
    return (per_image_hinge / per_image_violating.clamp(min=1.0)).mean()


def l1_distillation(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference between student and (detached) teacher embeddings."""
    return F.l1_loss(student, teacher.detach())


LOSSES = {"bce": masked_bce_with_logits, "asl": asymmetric_loss, "ranking": ranking_loss}
