"""Multi-label losses that ignore unannotated entries.

`labels` and `label_mask` are `[B, C]` in {0, 1}; `label_mask == 0` marks unannotated entries, which contribute
nothing. A `None` mask means everything is annotated.

Split batches (data-parallel training): when one global batch is split over W processes, each process sees B/W
images and DDP averages the W gradients. A loss normalised by a count of its batch (annotated entries, images with a
positive, images) would then divide by each process's own count, and the average of those ratios is not the global
batch's ratio. Inside `split_batch(...)` (the trainer enters it under several processes) every loss here divides its
process's sum by the count summed over the processes, times W, so the averaged gradient and loss equal those of the
global batch on one process; `sample_weight` zeroes the samples a process received only to even out the last batch
of an epoch. Outside it (one process, inference) the code path is the plain one. A method writing its own loss keeps
this property by reducing batch terms with `batch_mean(total, count)`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class SplitBatch:
    """How a process's share of a global batch is reduced (see the module docstring)."""

    world_size: int
    all_reduce_sum: Callable[[torch.Tensor], torch.Tensor]  # sum over the processes (no gradient)
    sample_weight: torch.Tensor | None = None  # [B_local]: 1 for real samples, 0 for padding repeats


_SPLIT_BATCH: ContextVar[SplitBatch | None] = ContextVar("ovmlc_split_batch", default=None)


@contextlib.contextmanager
def split_batch(
    world_size: int,
    all_reduce_sum: Callable[[torch.Tensor], torch.Tensor],
    sample_weight: torch.Tensor | None = None,
) -> Iterator[SplitBatch]:
    """Reduce the losses computed inside over the global batch of `world_size` processes. Every process must compute
    the same losses in the same order (each reduction is a collective call)."""
    token = _SPLIT_BATCH.set(SplitBatch(world_size, all_reduce_sum, sample_weight))
    try:
        yield _SPLIT_BATCH.get()
    finally:
        _SPLIT_BATCH.reset(token)


def batch_mean(total: torch.Tensor, count: torch.Tensor) -> torch.Tensor:
    """`total / count` (count at least 1) for this batch; inside `split_batch`, `total * W / (count summed over the
    processes)`, so that DDP's average of the W processes' gradients is the gradient of the global batch's mean."""
    split = _SPLIT_BATCH.get()
    if split is None:
        return total / count.clamp(min=1.0)
    global_count = split.all_reduce_sum(count.detach().to(torch.float32).reshape(1))[0]
    return total * split.world_size / global_count.clamp(min=1.0).to(total.dtype)


def _sample_weight(batch_size: int, like: torch.Tensor) -> torch.Tensor | None:
    """`[B]` weights of the samples of this process's share (None: every sample counts)."""
    split = _SPLIT_BATCH.get()
    if split is None or split.sample_weight is None:
        return None
    if split.sample_weight.shape != (batch_size,):
        raise ValueError(f"split_batch sample_weight has shape {tuple(split.sample_weight.shape)}, batch {batch_size}")
    return split.sample_weight.to(device=like.device, dtype=like.dtype)


def _mask(labels: torch.Tensor, label_mask: torch.Tensor | None) -> torch.Tensor:
    mask = torch.ones_like(labels) if label_mask is None else label_mask.to(labels.dtype)
    weight = _sample_weight(labels.shape[0], mask)
    return mask if weight is None else mask * weight[:, None]  # padding samples: nothing annotated


def masked_bce_with_logits(
    logits: torch.Tensor, labels: torch.Tensor, label_mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Mean binary cross-entropy over annotated entries."""
    labels = labels.to(logits.dtype)
    mask = _mask(labels, label_mask)
    loss = F.binary_cross_entropy_with_logits(logits, labels, reduction="none") * mask
    return batch_mean(loss.sum(), mask.sum())


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
    split = _SPLIT_BATCH.get()
    if reduction == "sum":  # DDP averages the W shares' gradients: W x a share's sum gives the global batch's sum
        return total if split is None else total * split.world_size
    if split is None:
        return total / logits.shape[0]
    weight = _sample_weight(logits.shape[0], logits)
    images = torch.tensor(float(logits.shape[0])) if weight is None else weight.sum()
    return batch_mean(total, images)


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
    if _SPLIT_BATCH.get() is not None:  # every process takes part in the reduction, even without a kept image
        return _ranking_loss_split(logits, positive, negative, keep, margin)
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


def _ranking_loss_split(logits, positive, negative, keep, margin: float) -> torch.Tensor:
    """`ranking_loss` inside `split_batch`: the per-image losses of the kept images summed here, divided by the
    number of kept images of the global batch."""
    violation = margin - logits.unsqueeze(2) + logits.unsqueeze(1)  # [B, C, C]
    hinge = F.relu(violation) * (positive.unsqueeze(2) * negative.unsqueeze(1))
    per_image = hinge.sum(dim=(1, 2)) / (hinge > 0).to(logits.dtype).sum(dim=(1, 2)).clamp(min=1.0)  # [B]
    kept = keep.to(logits.dtype)
    return batch_mean((per_image * kept).sum(), kept.sum())


def l1_distillation(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference between student and (detached) teacher embeddings."""
    if _SPLIT_BATCH.get() is None:
        return F.l1_loss(student, teacher.detach())
    per_sample = (student - teacher.detach()).abs().flatten(1).sum(dim=1)  # [B]
    weight = _sample_weight(student.shape[0], per_sample)
    if weight is not None:
        per_sample = per_sample * weight
    samples = torch.tensor(float(student.shape[0])) if weight is None else weight.sum()
    return batch_mean(per_sample.sum(), samples * student[0].numel())


LOSSES = {"bce": masked_bce_with_logits, "asl": asymmetric_loss, "ranking": ranking_loss}
