"""What every ovmlc model returns (`MultiLabelOutput`) and how scores become ranked labels (`rank_labels`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from transformers.utils import ModelOutput


@dataclass
class MultiLabelOutput(ModelOutput):
    """Output of every ovmlc model.

    loss: scalar, present when `labels` were given (unannotated entries ignored).
    logits: `[B, C]` independent per-label logits (sigmoid gives scores; no softmax across labels).
    label_maps: `[B, C, h, w]` per-label spatial scores for heatmaps, when asked for and supported.
    query_index: `[B, C]` (QKS) index of the query each label picked.
    """

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    label_maps: torch.FloatTensor | None = None
    query_index: torch.LongTensor | None = None
    image_embeds: torch.FloatTensor | None = None


def rank_labels(
    scores: np.ndarray,
    names: Sequence[str],
    top_k: int | None = None,
    thresholds: np.ndarray | None = None,
    order_by: np.ndarray | None = None,
) -> list[list[tuple[str, float]]]:
    """Per row of `scores [N, C]`: `[(label, score), ...]` sorted descending, thresholded, cut to `top_k`.

    `order_by [N, C]` (the logits) sets the order instead of the scores: a float32 sigmoid saturates at 1.0 for large
    logits, which would leave such labels in column order."""
    if top_k is not None and top_k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}")
    if order_by is not None and np.shape(order_by) != np.shape(scores):
        raise ValueError(f"order_by has shape {np.shape(order_by)}; scores have {np.shape(scores)}")
    results = []
    for position, row in enumerate(scores):
        order = np.argsort(-(row if order_by is None else order_by[position]), kind="stable")
        if thresholds is not None:
            order = order[row[order] >= thresholds[order]]
        if top_k is not None:
            order = order[:top_k]
        results.append([(names[index], float(row[index])) for index in order])
    return results


__all__ = ["MultiLabelOutput", "rank_labels"]
