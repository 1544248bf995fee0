"""LAMM's hierarchical-loss terms (feature space and logits space) and the single-label task loss.

L_param (parameter space) is `PromptLearner.label_token_penalty()`; the terms here take embeddings and logits, so they
work for any head. Written from the paper and the notes in `docs/methods.md`; no code copied from the official repo.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def single_label_targets(
    labels: torch.Tensor, label_mask: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Class index `[B]` (long) of each row of a multi-hot `labels [B, C]`, and the rows `[B]` (bool) that have one.

    A row without a positive among these columns (e.g. an image of a class the model does not train on) is left
    out; a row with several positives is an error (the single-label task needs exactly one label per image).
    """
    positive = labels > 0.5
    if label_mask is not None:
        positive = positive & (label_mask > 0.5)
    counts = positive.sum(dim=1)  # [B]
    if bool((counts > 1).any()):
        row = int(torch.nonzero(counts > 1)[0, 0])
        raise ValueError(
            f"single-label training: image {row} of the batch has {int(counts[row])} positive labels; the "
            f"single_label task needs exactly one label per image (use task: multi_label for multi-label data)"
        )
    return positive.float().argmax(dim=1), counts == 1


def single_label_cross_entropy(
    logits: torch.Tensor, labels: torch.Tensor, label_mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Cross-entropy over the softmax of `logits [B, C]` against the one positive of each row of `labels [B, C]`;
    rows without a positive are left out (zero loss with a graph when none is left)."""
    targets, keep = single_label_targets(labels, label_mask)
    if not bool(keep.any()):
        return logits.sum() * 0.0
    return F.cross_entropy(logits[keep], targets[keep])


def feature_alignment_loss(
    text_features: torch.Tensor, original_features: torch.Tensor, pair_label: torch.Tensor, counted: torch.Tensor
) -> torch.Tensor:
    """L_feat = mean over the counted (sample, label) pairs of `1 - cos(t_c, t0_c)`, 0 when no pair is counted.

    text_features, original_features `[C, D]` (or `[C, S, D]`, the cosine then averaged over prompt sets): the label
    embeddings with learned label tokens (t) and with the original name tokens and the current context (t0, used as
    a fixed target: detached, as in the official code). pair_label `[P]` (long): the label of each pair;
    counted `[P]` (bool): which pairs count (the batch condition, see `single_label_feature_pairs` /
    `multi_label_feature_pairs`).
    """
    if not bool(counted.any()):
        return text_features.sum() * 0.0
    cosine = F.cosine_similarity(text_features, original_features.detach(), dim=-1)  # [C] or [C, S]
    if cosine.dim() == 2:
        cosine = cosine.mean(dim=1)
    return (1.0 - cosine[pair_label[counted]]).mean()


def single_label_feature_pairs(targets: torch.Tensor, keep: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Pairs of L_feat for single-label batches: one per sample (its label), counted when the batch holds another
    label than the sample's (the official `FeatureLoss` condition)."""
    kept_targets = targets[keep]  # [B']
    other_label_in_batch = (kept_targets[None, :] != kept_targets[:, None]).any(dim=1)  # [B']
    return kept_targets, other_label_in_batch


def multi_label_feature_pairs(
    labels: torch.Tensor, label_mask: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pairs of L_feat for multi-label batches: one per (image, annotated positive label), counted when that image's
    positives include another label (the multi-label form of "the batch holds another label")."""
    positive = labels > 0.5
    if label_mask is not None:
        positive = positive & (label_mask > 0.5)
    rows, columns = torch.nonzero(positive, as_tuple=True)  # [P] each
    positives_per_image = positive.sum(dim=1)  # [B]
    return columns, positives_per_image[rows] > 1


def distillation_loss(
    current_logits: torch.Tensor,
    original_logits: torch.Tensor,
    temperature: float,
    direction: str = "paper",
    multi_label: bool = False,
) -> torch.Tensor:
    """L_kd between the logits with learned label tokens (current) and with the original names (original), `[B, C]`.

    direction "paper": knowledge flows from CLIP (original-name logits, detached target) to LAMM (the current logits,
    the student). direction "official": the official code's `distillation(current, original)`, whose softmax target
    is the *current* logits (gradient flows through it) and whose input is the original-name logits.
    Single-label: `T^2 * CE(input / T, softmax(target / T))`, mean over the batch. Multi-label (independent sigmoid
    scores): the same per label with a sigmoid target, `T^2 * sum_c BCE(input_c / T, sigmoid(target_c / T))`, mean
    over the batch.
    """
    if direction == "paper":
        target, student = original_logits.detach(), current_logits
    elif direction == "official":
        target, student = current_logits, original_logits
    else:
        raise ValueError(f"kd direction must be 'paper' or 'official', got {direction!r}")
    scale = temperature**2
    if multi_label:
        target_scores = torch.sigmoid(target / temperature)
        per_label = F.binary_cross_entropy_with_logits(student / temperature, target_scores, reduction="none")
        return scale * per_label.sum(dim=1).mean()
    return scale * F.cross_entropy(student / temperature, F.softmax(target / temperature, dim=1))


__all__ = [
    "distillation_loss",
    "feature_alignment_loss",
    "multi_label_feature_pairs",
    "single_label_cross_entropy",
    "single_label_feature_pairs",
    "single_label_targets",
]
