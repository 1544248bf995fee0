"""What every ovmlc model returns (`MultiLabelOutput`) and how scores become ranked labels (`rank_labels`, with
per-label thresholds from `thresholds_from_mapping`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from transformers.utils import ModelOutput

from .vocabulary import normalize_label


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



def thresholds_from_mapping(names: Sequence[str], thresholds: Mapping[str, Any]) -> np.ndarray:
    """Per-label thresholds `[C]` from `{label: t}` (every label needed) or a calibration dict
    `{"label_thresholds": {label: t}, "global_threshold": t}` (missing labels fall back to the global threshold).
    Labels match case- and whitespace-insensitively."""
    if "label_thresholds" in thresholds or "global_threshold" in thresholds:
        per_label, fallback = thresholds.get("label_thresholds") or {}, thresholds.get("global_threshold")
    else:
        per_label, fallback = thresholds, None
    by_key = {normalize_label(str(name)): value for name, value in per_label.items()}
    missing = [name for name in names if normalize_label(name) not in by_key and fallback is None]
    if missing:
        raise ValueError(f"no threshold for labels {missing[:10]} (and no global_threshold to fall back to)")
    values = [by_key.get(normalize_label(name), fallback) for name in names]
    bad = [(name, value) for name, value in zip(names, values) if not isinstance(value, (int, float))]
    if bad:
        raise ValueError(f"thresholds must be numbers; got {bad[:5]}")
    return np.asarray(values, dtype=np.float32)


__all__ = ["MultiLabelOutput", "rank_labels", "thresholds_from_mapping"]
