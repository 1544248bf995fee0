"""Exact metrics for zero-shot (ZSL) and generalized zero-shot (GZSL) multi-label image classification.

Every function takes a score matrix `scores [N, C]` (higher = more likely; any monotone score: logits, sigmoid, cosine)
and a label matrix `labels [N, C]` with values in {+1 positive, -1 negative, 0 unannotated}. A boolean matrix of
positives is also accepted, optionally with an annotation mask; see `to_label_matrix`. Unannotated entries (0) never
count: they are neither hits nor misses, and they never enter a denominator. numpy arrays and torch tensors both work.

Definitions (from BiAM's `compute_AP` / `compute_F1`, reused verbatim by MKT and QKS; DualCoOp's `calc_F1` gives the
same numbers):

* **AP** of class c: restrict to the images annotated for c, rank them by descending score,
  `AP_c = (1 / n+_c) * sum over positives of precision at the positive's rank` (non-interpolated; equal to
  `sklearn.metrics.average_precision_score` when there are no ties). A class without positives has no AP: it counts as
  0 and stays in the mean (`no_positive="zero"`, BiAM/MKT/QKS/DualCoOp) or is left out of the mean
  (`no_positive="exclude"`).
* **Row-pooled AP** (`ap_mode: row_pooled`; BiAM's Open Images `util_openimages.compute_AP`, which MKT's Open Images
  table quotes): for class c, take the images annotated for c and rank *every annotated entry of every evaluated
  class in those images* together (one pooled list of (image, label) entries); `AP_c` is the non-interpolated AP of
  that list. It depends on how scores compare across classes; it is 0 (or excluded) when the pooled list holds no
  positive. See `row_pooled_average_precision`.
* **mAP** = mean of AP over the evaluated classes. **WmAP** (BiAM Open Images) = `sum_c n+_c AP_c / sum_c n+_c`.
* **P@K, R@K, F1@K** ("overall", pooled over images): each kept image predicts its K best labels,
  `P = TP / (N * K)` (images without positives still contribute K predictions), `R = TP / sum_i |positives_i|`,
  `F1 = 2PR / (P + R)`.
* **P/R/F1 at a threshold** (partial-label setting): predicted positive means `score >= threshold` (or `>`, as
  DualCoOp); per class `P_c = TP_c / (TP_c + FP_c)`, `R_c = TP_c / (TP_c + FN_c)`; class-averaged CP, CR,
  CF1 = 2 CP CR / (CP + CR) and overall (pooled) OP, OR, OF1 as in ML-GCN; macro-F1 = mean of the per-class F1 (what
  DualCoOp reports as its class-averaged F). Unannotated entries are ignored, or (ML-GCN, whose VOC "difficult"
  entries are unannotated here) a prediction on them is a false positive. Optionally only each image's top-K labels
  that pass the threshold are predicted (ML-GCN's "top-3" CP ... OF1).

Tie policy (the reference code uses `torch.sort` / `torch.topk`, whose order among equal scores is unspecified; ours is
always deterministic):

* `"stable"` (default): equal scores keep their index order. Ranking images for AP, the earlier image (row) comes first;
  choosing the top K labels of an image, the earlier label (column) wins.
* `"pessimistic"`: among equal scores, non-positives come first (a lower bound of any tie order).
* `"optimistic"`: among equal scores, positives come first (an upper bound).

Undefined numbers (a precision over zero predictions, a recall over zero positives, ...) are NaN in the array
functions and `None` in the report dict of `evaluate_protocol`.

Evaluation presets ("protocols": which label set each view ranks, which images and classes it keeps, K values, ...)
live as YAML files in `ovmlc/evaluation/protocols/`; see `load_protocol`, `list_protocols` and `evaluate_protocol`.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np

from ..resources import PROTOCOLS_DIR
from ..yaml_schema import INTERNAL, Check, KeyedBy, PositiveInt, SchemaError, from_data, read_yaml

LABEL_POSITIVE = 1
LABEL_UNANNOTATED = 0
LABEL_NEGATIVE = -1

# The choices of the protocol schema (below) and of the metric functions' arguments: one definition each.
TiePolicy = Literal["stable", "pessimistic", "optimistic"]
NoPositivePolicy = Literal["zero", "exclude"]
ImageFilter = Literal["all", "has_positive"]
ClassFilter = Literal["none", "annotated_only"]
ViewLabelSet = Literal["unseen", "seen", "all"]
APMode = Literal["per_class", "row_pooled"]
UnannotatedPolicy = Literal["ignore", "negative"]
ThresholdRule = Literal[">=", ">"]
TIE_POLICIES = typing.get_args(TiePolicy)
NO_POSITIVE_POLICIES = typing.get_args(NoPositivePolicy)
IMAGE_FILTERS = typing.get_args(ImageFilter)
CLASS_FILTERS = typing.get_args(ClassFilter)
VIEW_LABEL_SETS = typing.get_args(ViewLabelSet)
AP_MODES = typing.get_args(APMode)
UNANNOTATED_POLICIES = typing.get_args(UnannotatedPolicy)
THRESHOLD_RULES = typing.get_args(ThresholdRule)

# Work on blocks of about this many matrix entries, so that 100k images x 7.5k labels (Open Images) fits in memory.
_BLOCK_ELEMENTS = 1 << 22


# ----------------------------------------------------------------------------------------------------------------------
# Input conversion
# ----------------------------------------------------------------------------------------------------------------------


def _to_numpy(array: Any) -> np.ndarray:
    if hasattr(array, "detach"):  # torch.Tensor, without importing torch
        array = array.detach().cpu().numpy()
    return np.asarray(array)


def to_score_matrix(scores: Any, name: str = "scores") -> np.ndarray:
    """Return `scores` as a float32/float64 matrix [N, C]; rejects other ranks and NaN."""
    scores = _to_numpy(scores)
    if scores.ndim != 2:
        raise ValueError(f"`{name}` must be a matrix [num_images, num_labels], got shape {scores.shape}.")
    if not np.issubdtype(scores.dtype, np.number) or np.issubdtype(scores.dtype, np.complexfloating):
        raise ValueError(f"`{name}` must hold real numbers, got dtype {scores.dtype}.")
    if scores.dtype not in (np.float32, np.float64):
        scores = scores.astype(np.float64)  # float32/float64 rank exactly as given; other types are widened
    if np.isnan(scores).any():
        rows, cols = np.nonzero(np.isnan(scores))
        raise ValueError(f"`{name}` holds {rows.size} NaN value(s), first at image {rows[0]}, label {cols[0]}.")
    return scores


def to_label_matrix(labels: Any, annotation_mask: Any = None, name: str = "labels") -> np.ndarray:
    """Return labels as an int8 matrix [N, C] in {+1 positive, -1 negative, 0 unannotated}.

    Accepted inputs:
    * an integer matrix with values in {1, 0, -1} (the scores-file encoding), used as is;
    * a boolean matrix of positives: every entry is annotated (False = negative) unless `annotation_mask` is given;
    * any matrix of positives plus `annotation_mask` (nonzero/True = annotated), as in `label_mask` of the losses.

    An integer matrix in {0, 1} without a mask is read as {unannotated, positive}; pass booleans (or a mask) when 0
    means negative.
    """
    labels = _to_numpy(labels)
    if labels.ndim != 2:
        raise ValueError(f"`{name}` must be a matrix [num_images, num_labels], got shape {labels.shape}.")
    if annotation_mask is not None:
        annotation_mask = _to_numpy(annotation_mask)
        if annotation_mask.shape != labels.shape:
            raise ValueError(
                f"`annotation_mask` has shape {annotation_mask.shape} but `{name}` has shape {labels.shape}."
            )
        annotated = annotation_mask.astype(bool)
        signed = np.where(labels > 0, LABEL_POSITIVE, LABEL_NEGATIVE)
        return np.where(annotated, signed, LABEL_UNANNOTATED).astype(np.int8)
    if labels.dtype == bool:
        return np.where(labels, LABEL_POSITIVE, LABEL_NEGATIVE).astype(np.int8)
    if not (np.issubdtype(labels.dtype, np.integer) or np.issubdtype(labels.dtype, np.floating)):
        raise ValueError(f"`{name}` must be integer or boolean, got dtype {labels.dtype}.")
    if np.issubdtype(labels.dtype, np.integer) and (labels.size == 0 or (labels.min() >= -1 and labels.max() <= 1)):
        return labels.astype(np.int8, copy=False)  # the common case, checked without a full isin pass
    bad = ~np.isin(labels, (LABEL_POSITIVE, LABEL_UNANNOTATED, LABEL_NEGATIVE))
    if bad.any():
        rows, cols = np.nonzero(bad)
        raise ValueError(
            f"`{name}` must hold only 1 (positive), 0 (unannotated) and -1 (negative); found "
            f"{labels[rows[0], cols[0]].item()!r} at image {rows[0]}, label {cols[0]} (bad entries: {rows.size})."
        )
    return labels.astype(np.int8)


def _scores_and_labels(scores: Any, labels: Any) -> tuple[np.ndarray, np.ndarray]:
    scores = to_score_matrix(scores)
    labels = to_label_matrix(labels)
    if scores.shape != labels.shape:
        raise ValueError(f"`scores` has shape {scores.shape} but `labels` has shape {labels.shape}.")
    return scores, labels


def _check_choice(value: str, choices: Sequence[str], what: str) -> None:
    if value not in choices:
        raise ValueError(f"Unknown {what} {value!r}; choose one of {', '.join(choices)}.")


def _divide(numerator: np.ndarray | float, denominator: np.ndarray | float) -> np.ndarray:
    """Elementwise numerator / denominator, NaN where the denominator is 0."""
    numerator = np.asarray(numerator, dtype=np.float64)
    denominator = np.asarray(denominator, dtype=np.float64)
    out = np.full(np.broadcast(numerator, denominator).shape, np.nan)
    np.divide(numerator, denominator, out=out, where=denominator != 0)
    return out


def f1_from_precision_recall(precision: Any, recall: Any) -> np.ndarray:
    """2PR / (P + R); 0 where P + R = 0, NaN where P or R is NaN."""
    precision = np.asarray(precision, dtype=np.float64)
    recall = np.asarray(recall, dtype=np.float64)
    total = precision + recall
    f1 = _divide(2 * precision * recall, total)
    return np.where(total == 0, 0.0, f1)


# ----------------------------------------------------------------------------------------------------------------------
# Ranking
# ----------------------------------------------------------------------------------------------------------------------


def rank_order(scores: np.ndarray, is_positive: np.ndarray, ties: str = "stable", axis: int = 0) -> np.ndarray:
    """Indices that sort `scores` by descending score along `axis`, equal scores ordered by the tie policy."""
    _check_choice(ties, TIE_POLICIES, "tie policy")
    scores = np.moveaxis(np.asarray(scores), axis, -1)
    is_positive = np.moveaxis(np.asarray(is_positive, dtype=bool), axis, -1)
    if scores.dtype == np.float32 and scores.shape[-1] < 2**31:
        order = _float32_rank_order(np.ascontiguousarray(scores), np.ascontiguousarray(is_positive), ties)
    elif ties == "stable":
        order = np.argsort(-scores, axis=-1, kind="stable")
    else:
        # np.lexsort: the last key is the primary one; it is stable, so remaining ties keep their index order.
        order = np.lexsort((is_positive if ties == "pessimistic" else ~is_positive, -scores), axis=-1)
    return np.moveaxis(order, -1, axis)


def _float32_rank_order(scores: np.ndarray, is_positive: np.ndarray, ties: str) -> np.ndarray:
    """`rank_order` along the last axis for float32, about 3x faster than a stable argsort.

    Each entry becomes one unique uint64 key: 32 bits of descending score, 1 tie-policy bit, 31 bits of index. An
    (unstable, SIMD) sort of unique keys is deterministic and gives exactly the stable/pessimistic/optimistic order.
    """
    bits = (scores + np.float32(0.0)).view(np.uint32)  # + 0.0 turns -0.0 into +0.0, which compares equal
    # Order-preserving map float32 -> uint32 (negative floats flip all bits, positive ones set the sign bit).
    ascending = np.where(bits >= np.uint32(0x80000000), ~bits, bits | np.uint32(0x80000000))
    keys = (~ascending).astype(np.uint64) << np.uint64(32)
    if ties != "stable":
        last = is_positive if ties == "pessimistic" else ~is_positive  # entries with the bit set go after their ties
        keys |= last.astype(np.uint64) << np.uint64(31)
    keys |= np.arange(scores.shape[-1], dtype=np.uint64)
    keys.sort(axis=-1)
    return (keys & np.uint64(0x7FFFFFFF)).astype(np.intp)


def average_precision(scores: Any, labels: Any, ties: str = "stable", no_positive: str = "zero") -> np.ndarray:
    """Per-class non-interpolated AP over the annotated images of each class.

    Returns a float64 array [C]. Classes without positives get 0.0 (`no_positive="zero"`) or NaN (`"exclude"`).
    """
    scores, labels = _scores_and_labels(scores, labels)
    _check_choice(no_positive, NO_POSITIVE_POLICIES, "no-positive policy")
    num_images, num_classes = scores.shape
    ap = np.zeros(num_classes, dtype=np.float64)
    block = max(1, _BLOCK_ELEMENTS // max(num_images, 1))
    for start in range(0, num_classes, block):
        # Classes as rows, so that each class's images are contiguous for sorting.
        block_scores = np.ascontiguousarray(scores[:, start : start + block].T)  # [b, N]
        block_labels = np.ascontiguousarray(labels[:, start : start + block].T)  # [b, N]
        order = rank_order(block_scores, block_labels == LABEL_POSITIVE, ties, axis=1)  # [b, N]
        ranked = np.take_along_axis(block_labels, order, axis=1)  # [b, N]
        # Unannotated images are skipped by counting ranks among annotated images only.
        annotated_rank = np.cumsum(ranked != LABEL_UNANNOTATED, axis=1, dtype=np.int64)  # [b, N]
        classes, positions = np.nonzero(ranked == LABEL_POSITIVE)  # positives, class by class in rank order
        num_positives = np.bincount(classes, minlength=block_scores.shape[0])  # [b]
        first_positive = np.cumsum(num_positives) - num_positives
        hits = np.arange(classes.size) - first_positive[classes] + 1  # TP count at each positive's rank
        precision = hits / annotated_rank[classes, positions]
        ap[start : start + block] = np.bincount(classes, weights=precision, minlength=block_scores.shape[0]) / (
            np.maximum(num_positives, 1)
        )
    if no_positive == "exclude":
        ap[(labels == LABEL_POSITIVE).sum(axis=0) == 0] = np.nan
    return ap


def tie_fraction(scores: Any, labels: Any) -> float | None:
    """Share of a label's (positive, negative) pairs whose scores are equal, pooled over the labels (columns).

    Only those pairs' order in an AP ranking is decided by the tie policy rather than by the model (ties among
    positives, or among negatives, change no AP). `sum_c tied_pairs_c / sum_c (n+_c * n-_c)` over annotated entries;
    None when no label has both a positive and a negative. A float32 head gives ~0; scores rounded to bf16, or float32
    sigmoids saturated at 1.0, give many ties (evaluation warns above 1%).
    """
    scores, labels = _scores_and_labels(scores, labels)
    num_images, num_classes = scores.shape
    is_positive, is_negative = labels == LABEL_POSITIVE, labels == LABEL_NEGATIVE
    total = float((is_positive.sum(axis=0).astype(np.float64) * is_negative.sum(axis=0)).sum())
    if total == 0:
        return None
    tied = 0.0
    block = max(1, _BLOCK_ELEMENTS // max(num_images, 1))
    for start in range(0, num_classes, block):
        block_scores = np.ascontiguousarray(scores[:, start : start + block].T)  # [b, N]
        order = np.argsort(block_scores, axis=1, kind="stable")
        ranked = np.take_along_axis(block_scores, order, axis=1)  # [b, N] ascending per class
        # Runs of equal scores within a class: a new run starts at each class's first entry and at each change.
        new_run = np.ones_like(ranked, dtype=bool)
        new_run[:, 1:] = ranked[:, 1:] != ranked[:, :-1]
        run = np.cumsum(new_run.ravel()) - 1  # [b * N] run id
        positives = np.take_along_axis(is_positive[:, start : start + block].T, order, axis=1).ravel()
        negatives = np.take_along_axis(is_negative[:, start : start + block].T, order, axis=1).ravel()
        tied += float(np.dot(np.bincount(run, weights=positives), np.bincount(run, weights=negatives)))
    return tied / total


def mean_average_precision(scores: Any, labels: Any, ties: str = "stable", no_positive: str = "zero") -> float:
    """mAP over all columns passed in (see `average_precision`); NaN when no class is left to average."""
    ap = average_precision(scores, labels, ties=ties, no_positive=no_positive)
    return _nanmean(ap)


def weighted_mean_average_precision(scores: Any, labels: Any, ties: str = "stable") -> float:
    """WmAP = sum_c n+_c AP_c / sum_c n+_c (BiAM Open Images); NaN without any positive."""
    scores, labels = _scores_and_labels(scores, labels)
    ap = average_precision(scores, labels, ties=ties, no_positive="zero")
    num_positives = (labels == LABEL_POSITIVE).sum(axis=0)
    return float(_divide((num_positives * ap).sum(), num_positives.sum()))


def row_pooled_average_precision(
    scores: Any, labels: Any, ties: str = "stable", no_positive: str = "zero"
) -> np.ndarray:
    """BiAM's Open Images "AP" (`util_openimages.compute_AP`), per class: a row-pooled AP.

    For class c, the images annotated for c (`labels[:, c] != 0`) are taken and *every annotated entry of every column
    in those images* is ranked together by score; `AP_c` is the non-interpolated AP of that pooled list (positives =
    the +1 entries of any column). So it depends on how scores compare across classes, and two classes annotated on
    the same images get the same value. A class whose pooled list holds no positive gets 0.0 (`no_positive="zero"`,
    as BiAM) or NaN (`"exclude"`). Ties: `"stable"` keeps row-major (image, then label) order, the order in which
    BiAM's code flattens the entries; `"pessimistic"` / `"optimistic"` put negatives / positives first.

    Cost: one global sort of the annotated entries, then per class a sort of integer ranks over its images' entries
    (`sum over images of (annotated entries)^2` in all). Returns a float64 array [C].
    """
    scores, labels = _scores_and_labels(scores, labels)
    _check_choice(no_positive, NO_POSITIVE_POLICIES, "no-positive policy")
    num_images, num_classes = scores.shape
    annotated = labels != LABEL_UNANNOTATED  # [N, C]
    entry_rows, entry_cols = np.nonzero(annotated)  # [E] each, row-major: entries of one image are contiguous
    entry_positive = labels[entry_rows, entry_cols] == LABEL_POSITIVE  # [E]
    order = rank_order(scores[entry_rows, entry_cols][None, :], entry_positive[None, :], ties, axis=1)[0]  # [E]
    position = np.empty(order.size, dtype=np.int64)
    position[order] = np.arange(order.size)  # global rank of each entry
    positive_at_position = entry_positive[order]  # [E]
    row_counts = np.bincount(entry_rows, minlength=num_images)  # [N] annotated entries per image
    row_starts = np.cumsum(row_counts) - row_counts  # [N] first entry of each image
    class_ids, class_rows = np.nonzero(annotated.T)  # images annotated for each class, grouped by class
    class_bounds = np.searchsorted(class_ids, np.arange(num_classes + 1))  # [C + 1]
    ap = np.full(num_classes, np.nan if no_positive == "exclude" else 0.0)
    for column in range(num_classes):
        rows = class_rows[class_bounds[column] : class_bounds[column + 1]]
        counts = row_counts[rows]
        total = int(counts.sum())
        if total == 0:
            continue
        # Entry indices of these images: each image's contiguous block, concatenated.
        entries = np.repeat(row_starts[rows] - (np.cumsum(counts) - counts), counts) + np.arange(total)
        is_positive = positive_at_position[np.sort(position[entries])]  # [total], in pooled rank order
        num_positives = int(is_positive.sum())
        if num_positives == 0:
            continue
        ranks = np.flatnonzero(is_positive) + 1
        ap[column] = float((np.arange(1, num_positives + 1) / ranks).sum() / num_positives)
    return ap


def _nanmean(values: np.ndarray) -> float:
    kept = values[~np.isnan(values)]
    return float(kept.mean()) if kept.size else math.nan


def precision_recall_curve(scores: Any, labels: Any, ties: str = "stable") -> tuple[np.ndarray, np.ndarray]:
    """Precision and recall after each annotated image of one class ranked by descending score.

    `scores` and `labels` are vectors [N] of one class. Returns `(precision, recall)`, each [num_annotated];
    recall is NaN for a class without positives.
    """
    scores = to_score_matrix(_to_numpy(scores).reshape(-1, 1))
    labels = to_label_matrix(_to_numpy(labels).reshape(-1, 1))
    annotated = labels[:, 0] != LABEL_UNANNOTATED
    scores, labels = scores[annotated], labels[annotated]
    order = rank_order(scores, labels == LABEL_POSITIVE, ties, axis=0)[:, 0]
    true_positives = np.cumsum(labels[order, 0] == LABEL_POSITIVE)
    ranks = np.arange(1, true_positives.size + 1)
    return true_positives / ranks, _divide(true_positives, true_positives[-1] if true_positives.size else 0)


# ----------------------------------------------------------------------------------------------------------------------
# Top-K and threshold metrics
# ----------------------------------------------------------------------------------------------------------------------


def top_k_mask(scores: Any, k: int, labels: Any = None, ties: str = "stable") -> np.ndarray:
    """Boolean mask [N, C] with exactly `k` True per row: each image's `k` highest-scoring labels.

    Equal scores at the cut are resolved by `ties` (column order for `"stable"`); `"pessimistic"` and `"optimistic"`
    need `labels`.
    """
    scores = to_score_matrix(scores)
    _check_choice(ties, TIE_POLICIES, "tie policy")
    num_images, num_classes = scores.shape
    if not 1 <= k <= num_classes:
        raise ValueError(f"K={k} is out of range: each image has {num_classes} labels to choose from.")
    if ties != "stable" and labels is None:
        raise ValueError(f"The {ties!r} tie policy needs `labels`.")
    is_positive = (
        np.zeros_like(scores, dtype=bool) if labels is None else to_label_matrix(labels) == LABEL_POSITIVE
    )  # [N, C]
    mask = np.zeros_like(scores, dtype=bool)
    block = max(1, _BLOCK_ELEMENTS // num_classes)
    for start in range(0, num_images, block):
        rows = slice(start, start + block)
        block_scores = scores[rows]  # [b, C]
        # The k-th largest score of each row; everything above it is in, and the ties at it fill the remaining slots.
        kth = -np.partition(-block_scores, k - 1, axis=1)[:, k - 1 : k]  # [b, 1]
        above = block_scores > kth
        at_cut = block_scores == kth
        slots = k - above.sum(axis=1, keepdims=True)  # [b, 1], >= 1
        if ties == "stable":
            chosen = at_cut & (np.cumsum(at_cut, axis=1) <= slots)
        else:
            first = at_cut & (~is_positive[rows] if ties == "pessimistic" else is_positive[rows])
            second = at_cut & ~first
            chosen_first = first & (np.cumsum(first, axis=1) <= slots)
            slots_left = slots - chosen_first.sum(axis=1, keepdims=True)
            chosen = chosen_first | (second & (np.cumsum(second, axis=1) <= slots_left))
        mask[rows] = above | chosen
    return mask


def top_k_metrics(scores: Any, labels: Any, k: int, ties: str = "stable") -> dict[str, float]:
    """Overall (pooled) P@K, R@K and F1@K, plus the counts behind them and the best F1@K any ranking can reach."""
    scores, labels = _scores_and_labels(scores, labels)
    is_positive = labels == LABEL_POSITIVE
    predicted = top_k_mask(scores, k, labels=labels, ties=ties)
    true_positives = int((predicted & is_positive).sum())
    num_predictions = scores.shape[0] * k
    positives_per_image = is_positive.sum(axis=1)
    num_positives = int(positives_per_image.sum())
    precision = float(_divide(true_positives, num_predictions))
    recall = float(_divide(true_positives, num_positives))
    # An oracle ranks every positive first: it hits min(K, |positives|) per image.
    oracle_hits = int(np.minimum(positives_per_image, k).sum())
    oracle_f1 = f1_from_precision_recall(_divide(oracle_hits, num_predictions), _divide(oracle_hits, num_positives))
    return {
        "precision": precision,
        "recall": recall,
        "f1": float(f1_from_precision_recall(precision, recall)),
        "f1_upper_bound": float(oracle_f1),
        "num_true_positives": true_positives,
        "num_predictions": num_predictions,
        "num_positives": num_positives,
    }


def threshold_metrics(
    scores: Any,
    labels: Any,
    thresholds: Any = 0.5,
    no_positive: str = "zero",
    rule: str = ">=",
    unannotated: str = "ignore",
    top_k: int | None = None,
    ties: str = "stable",
) -> dict[str, Any]:
    """Per-class and overall precision, recall and F1 when every label with `score >= threshold` is predicted.

    `thresholds` is a scalar or a vector [C] (one per label); `rule=">"` predicts `score > threshold` (DualCoOp).
    Unannotated entries are ignored (`unannotated="ignore"`), or a prediction on one is a false positive
    (`"negative"`: ML-GCN's VOC "difficult" entries); they are never false negatives. With `top_k`, only each image's
    `top_k` highest-scoring labels that also pass the threshold are predicted (ML-GCN's "top-3" metrics; equal scores
    at the cut resolved by `ties`). Per class, a precision over zero predictions is 0; a class without positives gets
    recall, F1 = 0 (`no_positive="zero"`) or NaN and is left out of the class averages (`"exclude"`). Returns
    per-class arrays (`per_class_precision`, `per_class_recall`, `per_class_f1`, `per_class_true_positives`, ...) and
    the scalars CP, CR, CF1, macro_f1, OP, OR, OF1.
    """
    scores, labels = _scores_and_labels(scores, labels)
    _check_choice(no_positive, NO_POSITIVE_POLICIES, "no-positive policy")
    thresholds = np.asarray(_to_numpy(thresholds), dtype=np.float64)
    if thresholds.ndim > 1 or (thresholds.ndim == 1 and thresholds.shape[0] != scores.shape[1]):
        raise ValueError(
            f"`thresholds` must be a scalar or a vector of {scores.shape[1]} values, got {thresholds.shape}."
        )
    _check_choice(rule, THRESHOLD_RULES, "threshold rule")
    _check_choice(unannotated, UNANNOTATED_POLICIES, "unannotated policy")
    predicted = scores >= thresholds if rule == ">=" else scores > thresholds  # [N, C]
    if top_k is not None:
        predicted &= top_k_mask(scores, top_k, labels=labels, ties=ties)
    is_positive = labels == LABEL_POSITIVE
    counted_negative = labels != LABEL_POSITIVE if unannotated == "negative" else labels == LABEL_NEGATIVE
    true_positives = (predicted & is_positive).sum(axis=0)  # [C]
    false_positives = (predicted & counted_negative).sum(axis=0)
    false_negatives = (~predicted & is_positive).sum(axis=0)
    num_positives = true_positives + false_negatives

    precision = np.nan_to_num(_divide(true_positives, true_positives + false_positives), nan=0.0)
    recall = np.nan_to_num(_divide(true_positives, num_positives), nan=0.0)
    f1 = f1_from_precision_recall(precision, recall)
    if no_positive == "exclude":
        without_positives = num_positives == 0
        precision, recall, f1 = (np.where(without_positives, np.nan, values) for values in (precision, recall, f1))

    class_precision, class_recall = _nanmean(precision), _nanmean(recall)
    overall_precision = float(_divide(true_positives.sum(), (true_positives + false_positives).sum()))
    overall_recall = float(_divide(true_positives.sum(), num_positives.sum()))
    return {
        "per_class_precision": precision,
        "per_class_recall": recall,
        "per_class_f1": f1,
        "per_class_true_positives": true_positives,
        "per_class_false_positives": false_positives,
        "per_class_false_negatives": false_negatives,
        "CP": class_precision,
        "CR": class_recall,
        "CF1": float(f1_from_precision_recall(class_precision, class_recall)),
        "macro_f1": _nanmean(f1),
        "OP": overall_precision,
        "OR": overall_recall,
        "OF1": float(f1_from_precision_recall(overall_precision, overall_recall)),
    }


def threshold_f1_curve(
    scores: Any,
    labels: Any,
    thresholds: Any,
    no_positive: str = "zero",
    unannotated: str = "ignore",
) -> dict[str, np.ndarray]:
    """OF1 (pooled) and macro-F1 (mean per-class F1) when every label with `score >= t` is predicted, for each `t`
    of a grid: the same numbers as `threshold_metrics(scores, labels, t)["OF1" / "macro_f1"]` at every grid point,
    computed in one pass over the matrix (a histogram of the scores on the grid per label).

    `thresholds` is a vector [T] (sorted here). Returns `{"thresholds": [T], "overall_f1": [T], "macro_f1": [T]}`.
    """
    scores, labels = _scores_and_labels(scores, labels)
    _check_choice(no_positive, NO_POSITIVE_POLICIES, "no-positive policy")
    _check_choice(unannotated, UNANNOTATED_POLICIES, "unannotated policy")
    grid = np.sort(np.asarray(_to_numpy(thresholds), dtype=np.float64).reshape(-1))  # [T]
    num_images, num_classes = scores.shape
    num_bins = grid.size + 1
    # Per label, entries by bin b = number of grid points <= score: predicted at grid point j iff b > j.
    positive_hist = np.zeros((num_classes, num_bins), dtype=np.int64)
    negative_hist = np.zeros((num_classes, num_bins), dtype=np.int64)
    block = max(1, _BLOCK_ELEMENTS // max(num_classes, 1))
    for start in range(0, num_images, block):
        block_scores, block_labels = scores[start : start + block], labels[start : start + block]
        bins = np.searchsorted(grid, block_scores, side="right")  # [b, C]
        keys = np.arange(num_classes) * num_bins + bins  # [b, C]
        counted_negative = block_labels != LABEL_POSITIVE if unannotated == "negative" else block_labels < 0
        size = num_classes * num_bins
        positive_hist += np.bincount(keys[block_labels == LABEL_POSITIVE], minlength=size).reshape(num_classes, -1)
        negative_hist += np.bincount(keys[counted_negative], minlength=size).reshape(num_classes, -1)
    # Suffix sums over bins > j: [C, T].
    true_positives = np.cumsum(positive_hist[:, ::-1], axis=1)[:, ::-1][:, 1:]
    false_positives = np.cumsum(negative_hist[:, ::-1], axis=1)[:, ::-1][:, 1:]
    num_positives = positive_hist.sum(axis=1, keepdims=True)  # [C, 1]
    false_negatives = num_positives - true_positives
    # F1 = 2TP / (2TP + FP + FN), 0 without any true positive (= 2PR / (P + R) of threshold_metrics).
    per_class = np.nan_to_num(_divide(2 * true_positives, 2 * true_positives + false_positives + false_negatives))
    if no_positive == "exclude":
        per_class = per_class[num_positives[:, 0] > 0]
    tp, fp, fn = true_positives.sum(axis=0), false_positives.sum(axis=0), false_negatives.sum(axis=0)
    overall = f1_from_precision_recall(_divide(tp, tp + fp), _divide(tp, tp + fn))
    macro = per_class.mean(axis=0) if per_class.shape[0] else np.full(grid.size, np.nan)
    return {"thresholds": grid, "overall_f1": overall, "macro_f1": macro}


# ----------------------------------------------------------------------------------------------------------------------
# Image and class filters
# ----------------------------------------------------------------------------------------------------------------------


def filter_images(labels: Any, image_filter: str) -> np.ndarray:
    """Boolean mask [N] of the images a view keeps: `"all"`, or `"has_positive"` (>= 1 positive in these columns)."""
    labels = to_label_matrix(labels)
    _check_choice(image_filter, IMAGE_FILTERS, "image filter")
    if image_filter == "all":
        return np.ones(labels.shape[0], dtype=bool)
    return (labels == LABEL_POSITIVE).any(axis=1)


def filter_classes(labels: Any, class_filter: str) -> np.ndarray:
    """Boolean mask [C] of the classes a view keeps: `"none"` keeps all, `"annotated_only"` drops classes whose
    entries are all unannotated (among the images passed in)."""
    labels = to_label_matrix(labels)
    _check_choice(class_filter, CLASS_FILTERS, "class filter")
    if class_filter == "none":
        return np.ones(labels.shape[1], dtype=bool)
    return (labels != LABEL_UNANNOTATED).any(axis=0)


# ----------------------------------------------------------------------------------------------------------------------
# Protocol presets
# ----------------------------------------------------------------------------------------------------------------------


class ProtocolError(SchemaError):
    """A protocol preset name or file is invalid (a `ValueError`); the message names the file and the key."""


@dataclass(frozen=True)
class ProtocolView:
    """One evaluated view: which labels are ranked and which images and classes are kept."""

    name: str  # in a protocol file: the key of the view under `views`
    labels: ViewLabelSet  # "unseen" (ZSL), "all" (GZSL, or every label without a split), "seen"
    image_filter: ImageFilter = "all"
    class_filter: ClassFilter = "none"
    # Class filter of the columns top-K chooses from; None = `class_filter`. BiAM's Open Images GZSL takes AP over
    # the annotated columns but the top K over all 7,586 (never-annotated seen labels included).
    top_k_class_filter: ClassFilter | None = None

    @property
    def top_k_columns_filter(self) -> str:
        return self.class_filter if self.top_k_class_filter is None else self.top_k_class_filter

    def settings(self) -> dict[str, Any]:
        settings = {"labels": self.labels, "image_filter": self.image_filter, "class_filter": self.class_filter}
        if self.top_k_class_filter is not None:
            settings["top_k_class_filter"] = self.top_k_class_filter
        return settings


@dataclass(frozen=True)
class EvaluationProtocol:
    """An evaluation preset, loaded from `ovmlc/evaluation/protocols/<name>.yaml` (see `load_protocol`); the fields
    are the file's keys (`views` is a mapping of view name -> settings there)."""

    name: str
    description: str
    citation: str
    top_k: tuple[PositiveInt, ...]  # may be empty
    views: Annotated[tuple[ProtocolView, ...], KeyedBy("name"), Check(len, "a non-empty mapping of views")]
    weighted_map: bool = False
    no_positive_class: NoPositivePolicy = "zero"
    ties: TiePolicy = "stable"
    threshold: float | None = None
    ap_mode: APMode = "per_class"  # "row_pooled": BiAM's Open Images compute_AP (see row_pooled_average_precision)
    unannotated: UnannotatedPolicy = "ignore"  # "negative": every 0 entry is read as -1 (DualCoOp's VOC "difficult")
    threshold_rule: ThresholdRule = ">="  # ">" for DualCoOp's `output > 0.5`
    threshold_unannotated: UnannotatedPolicy = "ignore"  # "negative": a prediction on an unannotated entry is a FP
    # Also CP..OF1 on each image's top-K predictions that pass the threshold.
    threshold_top_k: tuple[PositiveInt, ...] = ()
    source: str = field(default="", metadata=INTERNAL)
    extra: dict[str, Any] = field(default_factory=dict, metadata=INTERNAL)

    def __post_init__(self) -> None:
        if self.threshold_top_k and self.threshold is None:
            raise SchemaError("needs a threshold (top-K predictions must also pass it)", key="threshold_top_k")

    def settings(self) -> dict[str, Any]:
        """The numbers-defining fields, as written in metrics.json."""
        return {
            "top_k": list(self.top_k),
            "weighted_map": self.weighted_map,
            "no_positive_class": self.no_positive_class,
            "ties": self.ties,
            "threshold": self.threshold,
            "ap_mode": self.ap_mode,
            "unannotated": self.unannotated,
            "threshold_rule": self.threshold_rule,
            "threshold_unannotated": self.threshold_unannotated,
            "threshold_top_k": list(self.threshold_top_k),
            "views": {view.name: view.settings() for view in self.views},
        }


def list_protocols() -> list[str]:
    """Names of the shipped presets (`ovmlc/evaluation/protocols/*.yaml`)."""
    return sorted(path.stem for path in PROTOCOLS_DIR.glob("*.yaml"))


def load_protocol(name_or_path: str | Path | EvaluationProtocol) -> EvaluationProtocol:
    """Load a preset by name (`"nus-wide-biam"`) or from a YAML file with the same fields; `ProtocolError` (a
    `ValueError`) names the file and the key."""
    if isinstance(name_or_path, EvaluationProtocol):
        return name_or_path
    path = Path(name_or_path)
    if path.suffix not in (".yaml", ".yml") or not path.is_file():
        preset = PROTOCOLS_DIR / f"{name_or_path}.yaml"
        if not preset.is_file():
            raise ProtocolError(
                f"Unknown evaluation protocol {str(name_or_path)!r}: not a preset name nor a YAML file. "
                f"Available presets: {', '.join(list_protocols())}."
            )
        path = preset
    protocol = protocol_from_dict(read_yaml(path, error=ProtocolError), source=str(path))
    if path.parent == PROTOCOLS_DIR and protocol.name != path.stem:
        raise ProtocolError(
            f"expected {path.stem!r} (a preset is named after its file), got {protocol.name!r}", source=path, key="name"
        )
    return protocol


def protocol_from_dict(data: Mapping[str, Any], source: str = "<protocol>") -> EvaluationProtocol:
    """Validate a protocol mapping (the YAML file's content) and build the `EvaluationProtocol`."""
    protocol = from_data(EvaluationProtocol, data, source=source, error=ProtocolError)
    # Folded YAML text keeps line breaks; the report shows one paragraph.
    return dataclasses.replace(
        protocol,
        description=" ".join(protocol.description.split()),
        citation=" ".join(protocol.citation.split()),
        source=source,
    )


# ----------------------------------------------------------------------------------------------------------------------
# Full report
# ----------------------------------------------------------------------------------------------------------------------


def view_label_columns(unseen: np.ndarray, label_set: str) -> np.ndarray:
    """Boolean mask [C] of the columns a view ranks: `"unseen"`, `"seen"` or `"all"`."""
    _check_choice(label_set, VIEW_LABEL_SETS, "view label set")
    if label_set == "unseen":
        return unseen.copy()
    if label_set == "seen":
        return ~unseen
    return np.ones_like(unseen)


@dataclass
class ViewSelection:
    """The rows and columns of the full score matrix one view evaluates."""

    image_indices: np.ndarray  # [n] rows of the full matrix kept by the image filter
    label_indices: np.ndarray  # [c] columns kept by the view's label set and class filter (AP, thresholds)
    num_labels_in_set: int  # columns of the view's label set before the class filter
    top_k_label_indices: np.ndarray | None = None  # [c'] columns top-K chooses from; None = label_indices
    num_images_by_filter: dict[str, int] = field(default_factory=dict)  # images each image filter would keep

    def take(self, matrix: np.ndarray, columns: np.ndarray | None = None) -> np.ndarray:
        """`matrix[images][:, columns]` (default: `label_indices`); kept whole (no copy) along an axis where the view
        keeps everything."""
        columns = self.label_indices if columns is None else columns
        if self.image_indices.size != matrix.shape[0]:  # indices are sorted and unique: same size = identity
            matrix = matrix[self.image_indices]
        if columns.size != matrix.shape[1]:
            matrix = matrix[:, columns]
        return matrix

    def take_top_k(self, matrix: np.ndarray) -> np.ndarray:
        """`matrix` restricted to the images and the columns top-K chooses from."""
        return self.take(matrix, self.label_indices if self.top_k_label_indices is None else self.top_k_label_indices)


def select_view(labels: np.ndarray, unseen: np.ndarray, view: ProtocolView) -> ViewSelection:
    """Apply a view's label set, then its image filter (on those columns), then its class filter (on kept images)."""
    labels = to_label_matrix(labels)
    columns = np.flatnonzero(view_label_columns(np.asarray(unseen, dtype=bool), view.labels))
    by_filter = {name: filter_images(labels[:, columns], name) for name in IMAGE_FILTERS}
    images = np.flatnonzero(by_filter[view.image_filter])
    kept_labels = labels[np.ix_(images, columns)]
    label_indices = columns[filter_classes(kept_labels, view.class_filter)]
    top_k_label_indices = None
    if view.top_k_columns_filter != view.class_filter:
        top_k_label_indices = columns[filter_classes(kept_labels, view.top_k_columns_filter)]
    return ViewSelection(
        image_indices=images,
        label_indices=label_indices,
        num_labels_in_set=columns.size,
        top_k_label_indices=top_k_label_indices,
        num_images_by_filter={name: int(mask.sum()) for name, mask in by_filter.items()},
    )


def resolve_thresholds(thresholds: Any, label_names: Sequence[str]) -> np.ndarray:
    """Turn a scalar, a vector [C] or a calibration dict (`{"label_thresholds": {name: t}, "global_threshold": t}`)
    into a vector [C] in `label_names` order; labels missing from the dict use the global threshold."""
    if isinstance(thresholds, Mapping):
        if "global_threshold" not in thresholds:
            raise ValueError("A threshold mapping needs `global_threshold` (and optionally `label_thresholds`).")
        per_label = thresholds.get("label_thresholds") or {}
        global_threshold = float(thresholds["global_threshold"])
        return np.array([float(per_label.get(name, global_threshold)) for name in label_names], dtype=np.float64)
    values = np.asarray(_to_numpy(thresholds), dtype=np.float64)
    if values.ndim == 0:
        return np.full(len(label_names), float(values))
    if values.shape != (len(label_names),):
        raise ValueError(f"Expected one threshold per label ({len(label_names)}), got shape {values.shape}.")
    return values


def _number(value: Any) -> float | None:
    value = float(value)
    return None if math.isnan(value) else value


def evaluate_protocol(
    scores: Any,
    labels: Any,
    label_names: Sequence[str],
    unseen: Any,
    protocol: str | Path | EvaluationProtocol,
    thresholds: Any = None,
    unseen_scores: Any = None,
    threshold_scores: Any = None,
    logits: Any = None,
    unseen_logits: Any = None,
) -> dict[str, Any]:
    """Compute every number of a protocol preset on a score matrix.

    Args:
        scores: `[N, C]` scores, higher = more likely.
        labels: `[N, C]` in {1, 0, -1} (or booleans / with a mask, see `to_label_matrix`).
        label_names: the C label names, in column order.
        unseen: `[C]` booleans, True for the labels held out of training (all False without a split).
        protocol: preset name, YAML path or `EvaluationProtocol`.
        thresholds: optional scalar, vector [C] or calibration dict for the P/R/F1-at-threshold block; without it the
            preset's `threshold` is used (if any). Calibrated thresholds always predict `score >= t`; the preset's
            `threshold_rule` applies to the preset's own threshold.
        unseen_scores: optional `[N, C_unseen]` scores of the unseen labels scored on their own (columns in the order
            of the unseen columns of `scores`), used by the views over unseen labels. For models whose scores depend
            on the scored label set (MKT normalises across labels): their ZSL protocol scores the unseen labels alone.
        threshold_scores: optional `[N, C]` scores the threshold metrics use instead, when the ranking `scores` are
            not the predicted scores thresholds apply to (CLIP zero-shot: plain cosine vs its reference prompt).
        logits: optional `[N, C]` logits of `scores` (`scores = sigmoid(logits)`): the ranking metrics (AP, top-K)
            then rank these, so a float32 sigmoid saturated at 1.0 creates no ties; the threshold metrics keep the
            scores. `unseen_logits` `[N, C_unseen]` are the logits of `unseen_scores` (needed with both).

    Returns a JSON-ready dict: `protocol` (name), `description`, `citation`, `settings`, image/label counts, and
    `views[name]` with `mAP` (`mAP_per_class` too when the preset's AP is row-pooled), `WmAP` (when the preset
    reports it), `tie_fraction` (see `tie_fraction`, of the scores the view ranks), `top_k[str(K)]` (`precision`,
    `recall`, `f1`, `f1_upper_bound`, counts), optional `threshold`
    (CP/CR/CF1/OP/OR/OF1) and `threshold_top_k[str(K)]`, image counts per image filter, and `per_label` rows. Every
    view repeats the protocol name. Views that cannot be computed (e.g. ZSL without unseen labels) are listed in
    `skipped_views` with the reason. Undefined numbers are None.
    """
    protocol = load_protocol(protocol)
    scores, labels = _scores_and_labels(scores, labels)
    if protocol.unannotated == "negative":
        labels = np.where(labels == LABEL_UNANNOTATED, LABEL_NEGATIVE, labels).astype(np.int8)
    label_names = [str(name) for name in label_names]
    unseen = np.asarray(_to_numpy(unseen)).astype(bool).reshape(-1)
    num_images, num_labels = scores.shape
    if len(label_names) != num_labels:
        raise ValueError(f"Got {len(label_names)} label names for {num_labels} score columns.")
    if unseen.shape[0] != num_labels:
        raise ValueError(f"`unseen` has {unseen.shape[0]} entries for {num_labels} score columns.")
    zsl_scores = None  # [N, C]: `scores` with the unseen columns replaced by `unseen_scores`
    if unseen_scores is not None:
        unseen_scores = to_score_matrix(unseen_scores, name="unseen_scores")
        if unseen_scores.shape != (num_images, int(unseen.sum())):
            raise ValueError(
                f"`unseen_scores` has shape {unseen_scores.shape}; expected {(num_images, int(unseen.sum()))} "
                "(every image, the unseen labels only)."
            )
        zsl_scores = scores.astype(np.result_type(scores, unseen_scores))  # a copy
        zsl_scores[:, unseen] = unseen_scores
    if threshold_scores is not None:
        threshold_scores = to_score_matrix(threshold_scores, name="threshold_scores")
        if threshold_scores.shape != scores.shape:
            raise ValueError(f"`threshold_scores` has shape {threshold_scores.shape}; `scores` has {scores.shape}.")
    zsl_logits = None  # [N, C]: `logits` with the unseen columns replaced by `unseen_logits`
    if logits is not None:
        logits = to_score_matrix(logits, name="logits")
        if logits.shape != scores.shape:
            raise ValueError(f"`logits` has shape {logits.shape}; `scores` has {scores.shape}.")
        if (unseen_scores is None) != (unseen_logits is None):
            raise ValueError("`unseen_logits` go with `unseen_scores` when `logits` are given: pass both or neither.")
        if unseen_logits is not None:
            unseen_logits = to_score_matrix(unseen_logits, name="unseen_logits")
            if unseen_logits.shape != unseen_scores.shape:
                raise ValueError(f"`unseen_logits` has shape {unseen_logits.shape}; expected {unseen_scores.shape}.")
            zsl_logits = logits.astype(np.result_type(logits, unseen_logits))  # a copy
            zsl_logits[:, unseen] = unseen_logits

    threshold_source = None
    threshold_vector = None
    if thresholds is not None:
        threshold_vector, threshold_source = resolve_thresholds(thresholds, label_names), "calibrated"
    elif protocol.threshold is not None:
        threshold_vector, threshold_source = np.full(num_labels, protocol.threshold), "protocol"

    report: dict[str, Any] = {
        "protocol": protocol.name,
        "description": protocol.description,
        "citation": protocol.citation,
        "settings": protocol.settings(),
        "num_images": num_images,
        "num_labels": num_labels,
        "num_unseen_labels": int(unseen.sum()),
        "ranked_by": "scores" if logits is None else "logits",
        "views": {},
        "skipped_views": {},
    }
    for view in protocol.views:
        if view.labels == "seen" and not unseen.any():
            report["skipped_views"][view.name] = "no seen/unseen split: the seen view would repeat the all-labels view"
            continue
        selection = select_view(labels, unseen, view)
        if selection.num_labels_in_set == 0:
            report["skipped_views"][view.name] = f"no {view.labels} labels"
            continue
        if selection.image_indices.size == 0:
            report["skipped_views"][view.name] = f"no image passes the `{view.image_filter}` filter"
            continue
        if selection.label_indices.size == 0:
            report["skipped_views"][view.name] = f"no label passes the `{view.class_filter}` filter"
            continue
        unseen_alone = zsl_scores is not None and view.labels == "unseen"
        view_thresholds = None if threshold_vector is None else threshold_vector[selection.label_indices]
        view_scores = zsl_scores if unseen_alone else scores  # [N, C] sigmoid scores (predicted or ranking)
        ranked, thresholded = view_scores, threshold_scores
        if logits is not None:  # rank the logits; thresholds apply to the scores
            ranked = zsl_logits if unseen_alone else logits
            thresholded = view_scores if threshold_scores is None else threshold_scores
        report["views"][view.name] = _evaluate_view(
            protocol,
            view,
            selection,
            ranked,
            labels,
            label_names,
            unseen,
            view_thresholds,
            threshold_source,
            num_images,
            thresholded,
        )
        if unseen_alone:
            report["views"][view.name]["scored_labels"] = "unseen labels alone"
    return report


def view_average_precision(protocol: EvaluationProtocol, scores: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """AP [C] of a view's score and label matrices under the protocol's `ap_mode`, ties and no-positive policy."""
    if protocol.ap_mode == "row_pooled":
        return row_pooled_average_precision(scores, labels, ties=protocol.ties, no_positive=protocol.no_positive_class)
    return average_precision(scores, labels, ties=protocol.ties, no_positive=protocol.no_positive_class)


def _evaluate_view(
    protocol: EvaluationProtocol,
    view: ProtocolView,
    selection: ViewSelection,
    all_scores: np.ndarray,
    all_labels: np.ndarray,
    label_names: Sequence[str],
    unseen: np.ndarray,
    thresholds: np.ndarray | None,
    threshold_source: str | None,
    total_images: int,
    all_threshold_scores: np.ndarray | None = None,
) -> dict[str, Any]:
    scores, labels = selection.take(all_scores), selection.take(all_labels)  # [n, c]: AP and threshold columns
    num_images, num_labels = scores.shape
    ap = view_average_precision(protocol, scores, labels)
    num_positives = (labels == LABEL_POSITIVE).sum(axis=0)
    num_annotated = (labels != LABEL_UNANNOTATED).sum(axis=0)
    result: dict[str, Any] = {
        "protocol": protocol.name,
        "labels": view.labels,
        "image_filter": view.image_filter,
        "class_filter": view.class_filter,
        "num_images": num_images,
        "num_images_dropped": total_images - num_images,
        "num_images_by_filter": dict(selection.num_images_by_filter),
        "num_labels": num_labels,
        "num_labels_dropped": selection.num_labels_in_set - num_labels,
        "num_labels_without_positives": int((num_positives == 0).sum()),
        "mAP": _number(_nanmean(ap)),
        "tie_fraction": tie_fraction(scores, labels),
    }
    ap_per_class = None
    if protocol.ap_mode != "per_class":  # the true per-class AP next to the paper's number, for comparison
        ap_per_class = average_precision(scores, labels, ties=protocol.ties, no_positive=protocol.no_positive_class)
        result["mAP_per_class"] = _number(_nanmean(ap_per_class))
    if protocol.weighted_map:
        result["WmAP"] = _number(_divide((num_positives * np.nan_to_num(ap)).sum(), num_positives.sum()))
    top_k_scores, top_k_labels = scores, labels
    if selection.top_k_label_indices is not None:
        top_k_scores, top_k_labels = selection.take_top_k(all_scores), selection.take_top_k(all_labels)
        result["top_k_class_filter"] = view.top_k_columns_filter
        result["num_top_k_labels"] = int(top_k_scores.shape[1])
    result["top_k"] = {}
    for k in protocol.top_k:
        if k > top_k_scores.shape[1]:
            result["top_k"][str(k)] = {
                "precision": None,
                "recall": None,
                "f1": None,
                "note": f"K={k} exceeds the {top_k_scores.shape[1]} labels of this view",
            }
            continue
        metrics = top_k_metrics(top_k_scores, top_k_labels, k, ties=protocol.ties)
        result["top_k"][str(k)] = {
            key: (_number(value) if isinstance(value, float) else value) for key, value in metrics.items()
        }
    per_label_thresholds = None
    if thresholds is not None:
        options = {
            "no_positive": protocol.no_positive_class,
            "rule": protocol.threshold_rule if threshold_source == "protocol" else ">=",
            "unannotated": protocol.threshold_unannotated,
            "ties": protocol.ties,
        }
        if all_threshold_scores is not None:
            scores = selection.take(all_threshold_scores)  # the predicted scores (the ranking ones are done)
        metrics = threshold_metrics(scores, labels, thresholds, **options)
        result["threshold"] = {"source": threshold_source, "rule": options["rule"]}
        result["threshold"].update(
            {key: _number(value) for key, value in metrics.items() if not key.startswith("per_class")}
        )
        per_label_thresholds = metrics
        if protocol.threshold_top_k:
            result["threshold_top_k"] = {}
        for k in protocol.threshold_top_k:
            if k > num_labels:
                result["threshold_top_k"][str(k)] = {"note": f"K={k} exceeds the {num_labels} labels of this view"}
                continue
            top_k_block = threshold_metrics(scores, labels, thresholds, top_k=k, **options)
            result["threshold_top_k"][str(k)] = {
                key: _number(value) for key, value in top_k_block.items() if not key.startswith("per_class")
            }
    rows = []
    for position, column in enumerate(selection.label_indices):
        row = {
            "label": label_names[column],
            "unseen": bool(unseen[column]),
            "ap": _number(ap[position]),
            "num_positives": int(num_positives[position]),
            "num_annotated": int(num_annotated[position]),
        }
        if ap_per_class is not None:
            row["ap_per_class"] = _number(ap_per_class[position])
        if per_label_thresholds is not None:
            row["threshold"] = float(thresholds[position])
            for key in ("precision", "recall", "f1"):
                row[key] = _number(per_label_thresholds[f"per_class_{key}"][position])
        rows.append(row)
    result["per_label"] = rows
    return result
