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
* **mAP** = mean of AP over the evaluated classes. **WmAP** (BiAM Open Images) = `sum_c n+_c AP_c / sum_c n+_c`.
* **P@K, R@K, F1@K** ("overall", pooled over images): each kept image predicts its K best labels,
  `P = TP / (N * K)` (images without positives still contribute K predictions), `R = TP / sum_i |positives_i|`,
  `F1 = 2PR / (P + R)`.
* **P/R/F1 at a threshold** (partial-label setting): predicted positive means `score >= threshold`; per class
  `P_c = TP_c / (TP_c + FP_c)`, `R_c = TP_c / (TP_c + FN_c)`; class-averaged CP, CR, CF1 = 2 CP CR / (CP + CR) and
  overall (pooled) OP, OR, OF1 as in ML-GCN; macro-F1 = mean of the per-class F1.

Tie policy (the reference code uses `torch.sort` / `torch.topk`, whose order among equal scores is unspecified; ours is
always deterministic):

* `"stable"` (default): equal scores keep their index order. Ranking images for AP, the earlier image (row) comes first;
  choosing the top K labels of an image, the earlier label (column) wins.
* `"pessimistic"`: among equal scores, non-positives come first (a lower bound of any tie order).
* `"optimistic"`: among equal scores, positives come first (an upper bound).

Undefined numbers (a precision over zero predictions, a recall over zero positives, ...) are NaN in the array
functions and `None` in the report dict of `evaluate_protocol`.

Evaluation presets ("protocols": which label set each view ranks, which images and classes it keeps, K values, ...)
live as YAML files in `ovmlc/protocols/`; see `load_protocol`, `list_protocols` and `evaluate_protocol`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from .single_label_metrics import TASK_SINGLE_LABEL, SingleLabelProtocol, evaluate_single_label
from .single_label_metrics import protocol_from_dict as single_label_protocol_from_dict

LABEL_POSITIVE = 1
LABEL_UNANNOTATED = 0
LABEL_NEGATIVE = -1

TIE_POLICIES = ("stable", "pessimistic", "optimistic")
NO_POSITIVE_POLICIES = ("zero", "exclude")
IMAGE_FILTERS = ("all", "has_positive")
CLASS_FILTERS = ("none", "annotated_only")
VIEW_LABEL_SETS = ("unseen", "seen", "all")

PROTOCOLS_DIR = Path(__file__).resolve().parent / "protocols"

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


def threshold_metrics(scores: Any, labels: Any, thresholds: Any = 0.5, no_positive: str = "zero") -> dict[str, Any]:
    """Per-class and overall precision, recall and F1 when every label with `score >= threshold` is predicted.

    `thresholds` is a scalar or a vector [C] (one per label). Only annotated entries count. Per class, a precision over
    zero predictions is 0; a class without positives gets recall, F1 = 0 (`no_positive="zero"`) or NaN and is left out
    of the class averages (`"exclude"`). Returns per-class arrays (`per_class_precision`, `per_class_recall`,
    `per_class_f1`, `per_class_true_positives`, ...) and the scalars CP, CR, CF1, macro_f1, OP, OR, OF1.
    """
    scores, labels = _scores_and_labels(scores, labels)
    _check_choice(no_positive, NO_POSITIVE_POLICIES, "no-positive policy")
    thresholds = np.asarray(_to_numpy(thresholds), dtype=np.float64)
    if thresholds.ndim > 1 or (thresholds.ndim == 1 and thresholds.shape[0] != scores.shape[1]):
        raise ValueError(
            f"`thresholds` must be a scalar or a vector of {scores.shape[1]} values, got {thresholds.shape}."
        )
    predicted = scores >= thresholds  # [N, C]
    is_positive = labels == LABEL_POSITIVE
    true_positives = (predicted & is_positive).sum(axis=0)  # [C]
    false_positives = (predicted & (labels == LABEL_NEGATIVE)).sum(axis=0)
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


@dataclass(frozen=True)
class ProtocolView:
    """One evaluated view: which labels are ranked and which images and classes are kept."""

    name: str
    labels: str  # "unseen" (ZSL), "all" (GZSL, or every label without a split), "seen"
    image_filter: str = "all"
    class_filter: str = "none"


@dataclass(frozen=True)
class EvaluationProtocol:
    """An evaluation preset, loaded from `ovmlc/protocols/<name>.yaml` (see `load_protocol`)."""

    name: str
    description: str
    citation: str
    top_k: tuple[int, ...]
    views: tuple[ProtocolView, ...]
    weighted_map: bool = False
    no_positive_class: str = "zero"
    ties: str = "stable"
    threshold: float | None = None
    source: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def settings(self) -> dict[str, Any]:
        """The numbers-defining fields, as written in metrics.json."""
        return {
            "top_k": list(self.top_k),
            "weighted_map": self.weighted_map,
            "no_positive_class": self.no_positive_class,
            "ties": self.ties,
            "threshold": self.threshold,
            "views": {
                view.name: {"labels": view.labels, "image_filter": view.image_filter, "class_filter": view.class_filter}
                for view in self.views
            },
        }


_PROTOCOL_KEYS = {
    "name",
    "description",
    "citation",
    "top_k",
    "views",
    "weighted_map",
    "no_positive_class",
    "ties",
    "threshold",
}
_VIEW_KEYS = {"labels", "image_filter", "class_filter"}


def list_protocols() -> list[str]:
    """Names of the shipped presets (`ovmlc/protocols/*.yaml`)."""
    return sorted(path.stem for path in PROTOCOLS_DIR.glob("*.yaml"))


def load_protocol(name_or_path: str | Path | EvaluationProtocol) -> EvaluationProtocol:
    """Load a preset by name (`"nus-wide-biam"`) or from a YAML file with the same fields. A file with
    `task: single-label` gives an `ovmlc.single_label_metrics.SingleLabelProtocol` (accuracy presets)."""
    if isinstance(name_or_path, (EvaluationProtocol, SingleLabelProtocol)):
        return name_or_path
    path = Path(name_or_path)
    if path.suffix not in (".yaml", ".yml") or not path.is_file():
        preset = PROTOCOLS_DIR / f"{name_or_path}.yaml"
        if not preset.is_file():
            raise ValueError(
                f"Unknown evaluation protocol {str(name_or_path)!r}: not a preset name nor a YAML file. "
                f"Available presets: {', '.join(list_protocols())}."
            )
        path = preset
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        raise ValueError(f"Protocol file {path} is not valid YAML: {error}") from None
    if isinstance(data, Mapping) and data.get("task") == TASK_SINGLE_LABEL:  # top-1/top-5 accuracy presets
        protocol = single_label_protocol_from_dict(data, source=str(path))
    else:
        protocol = _protocol_from_dict(data, source=str(path))
    if path.parent == PROTOCOLS_DIR and protocol.name != path.stem:
        raise ValueError(
            f"Protocol file {path}: `name` is {protocol.name!r} but presets must be named after their file."
        )
    return protocol


def _protocol_from_dict(data: Any, source: str) -> EvaluationProtocol:
    def fail(message: str) -> ValueError:
        return ValueError(f"Protocol file {source}: {message}")

    if not isinstance(data, Mapping):
        raise fail("the top level must be a mapping.")
    unknown = set(data) - _PROTOCOL_KEYS
    if unknown:
        raise fail(f"unknown field(s) {sorted(unknown)}; allowed: {sorted(_PROTOCOL_KEYS)}.")
    for key in ("name", "description", "citation", "top_k", "views"):
        if key not in data:
            raise fail(f"missing field `{key}`.")

    top_k = data["top_k"]
    if isinstance(top_k, int):
        top_k = [top_k]
    if not isinstance(top_k, list) or not top_k or not all(isinstance(k, int) and k >= 1 for k in top_k):
        raise fail(f"`top_k` must be a list of positive integers, got {data['top_k']!r}.")

    views_data = data["views"]
    if not isinstance(views_data, Mapping) or not views_data:
        raise fail("`views` must be a non-empty mapping of view name -> {labels, image_filter, class_filter}.")
    views = []
    for view_name, view in views_data.items():
        if not isinstance(view, Mapping):
            raise fail(f"view `{view_name}` must be a mapping.")
        unknown = set(view) - _VIEW_KEYS
        if unknown:
            raise fail(f"view `{view_name}` has unknown field(s) {sorted(unknown)}; allowed: {sorted(_VIEW_KEYS)}.")
        settings = {
            "labels": view.get("labels"),
            "image_filter": view.get("image_filter", "all"),
            "class_filter": view.get("class_filter", "none"),
        }
        choices_by_key = {"labels": VIEW_LABEL_SETS, "image_filter": IMAGE_FILTERS, "class_filter": CLASS_FILTERS}
        for key, choices in choices_by_key.items():
            if settings[key] not in choices:
                raise fail(f"view `{view_name}`: `{key}` is {settings[key]!r}; choose one of {', '.join(choices)}.")
        views.append(ProtocolView(name=str(view_name), **settings))

    no_positive = data.get("no_positive_class", "zero")
    if no_positive not in NO_POSITIVE_POLICIES:
        raise fail(f"`no_positive_class` is {no_positive!r}; choose one of {', '.join(NO_POSITIVE_POLICIES)}.")
    ties = data.get("ties", "stable")
    if ties not in TIE_POLICIES:
        raise fail(f"`ties` is {ties!r}; choose one of {', '.join(TIE_POLICIES)}.")
    threshold = data.get("threshold")
    if threshold is not None and not isinstance(threshold, (int, float)):
        raise fail(f"`threshold` must be a number or null, got {threshold!r}.")
    weighted_map = data.get("weighted_map", False)
    if not isinstance(weighted_map, bool):
        raise fail(f"`weighted_map` must be true or false, got {weighted_map!r}.")

    return EvaluationProtocol(
        name=str(data["name"]),
        description=" ".join(str(data["description"]).split()),
        citation=" ".join(str(data["citation"]).split()),
        top_k=tuple(top_k),
        views=tuple(views),
        weighted_map=weighted_map,
        no_positive_class=no_positive,
        ties=ties,
        threshold=None if threshold is None else float(threshold),
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
    label_indices: np.ndarray  # [c] columns kept by the view's label set and class filter
    num_labels_in_set: int  # columns of the view's label set before the class filter

    def take(self, matrix: np.ndarray) -> np.ndarray:
        """`matrix[images][:, labels]`; kept whole (no copy) along an axis where the view keeps everything."""
        if self.image_indices.size != matrix.shape[0]:  # indices are sorted and unique: same size = identity
            matrix = matrix[self.image_indices]
        if self.label_indices.size != matrix.shape[1]:
            matrix = matrix[:, self.label_indices]
        return matrix


def select_view(labels: np.ndarray, unseen: np.ndarray, view: ProtocolView) -> ViewSelection:
    """Apply a view's label set, then its image filter (on those columns), then its class filter (on kept images)."""
    labels = to_label_matrix(labels)
    columns = np.flatnonzero(view_label_columns(np.asarray(unseen, dtype=bool), view.labels))
    images = np.flatnonzero(filter_images(labels[:, columns], view.image_filter))
    kept_classes = filter_classes(labels[np.ix_(images, columns)], view.class_filter)
    return ViewSelection(image_indices=images, label_indices=columns[kept_classes], num_labels_in_set=columns.size)


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
) -> dict[str, Any]:
    """Compute every number of a protocol preset on a score matrix.

    Args:
        scores: `[N, C]` scores, higher = more likely.
        labels: `[N, C]` in {1, 0, -1} (or booleans / with a mask, see `to_label_matrix`).
        label_names: the C label names, in column order.
        unseen: `[C]` booleans, True for the labels held out of training (all False without a split).
        protocol: preset name, YAML path or `EvaluationProtocol`.
        thresholds: optional scalar, vector [C] or calibration dict for the P/R/F1-at-threshold block; without it the
            preset's `threshold` is used (if any).
        unseen_scores: optional `[N, C_unseen]` scores of the unseen labels scored on their own (columns in the order
            of the unseen columns of `scores`), used by the views over unseen labels. For models whose scores depend
            on the scored label set (MKT normalises across labels): their ZSL protocol scores the unseen labels alone.

    Returns a JSON-ready dict: `protocol` (name), `description`, `citation`, `settings`, image/label counts, and
    `views[name]` with `mAP`, `WmAP` (when the preset reports it), `top_k[str(K)]` (`precision`, `recall`, `f1`,
    `f1_upper_bound`, counts), optional `threshold` (CP/CR/CF1/OP/OR/OF1), and `per_label` rows. Every view repeats the
    protocol name. Views that cannot be computed (e.g. ZSL without unseen labels) are listed in `skipped_views` with
    the reason. Undefined numbers are None.
    """
    protocol = load_protocol(protocol)
    if isinstance(protocol, SingleLabelProtocol):
        return evaluate_single_label(scores, labels, label_names, unseen, protocol, unseen_scores=unseen_scores)
    scores, labels = _scores_and_labels(scores, labels)
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
        view_scores = selection.take(zsl_scores if unseen_alone else scores)
        view_labels = selection.take(labels)
        view_thresholds = None if threshold_vector is None else threshold_vector[selection.label_indices]
        report["views"][view.name] = _evaluate_view(
            protocol,
            view,
            selection,
            view_scores,
            view_labels,
            label_names,
            unseen,
            view_thresholds,
            threshold_source,
            num_images,
        )
        if unseen_alone:
            report["views"][view.name]["scored_labels"] = "unseen labels alone"
    return report


def _evaluate_view(
    protocol: EvaluationProtocol,
    view: ProtocolView,
    selection: ViewSelection,
    scores: np.ndarray,
    labels: np.ndarray,
    label_names: Sequence[str],
    unseen: np.ndarray,
    thresholds: np.ndarray | None,
    threshold_source: str | None,
    total_images: int,
) -> dict[str, Any]:
    num_images, num_labels = scores.shape
    ap = average_precision(scores, labels, ties=protocol.ties, no_positive=protocol.no_positive_class)
    num_positives = (labels == LABEL_POSITIVE).sum(axis=0)
    num_annotated = (labels != LABEL_UNANNOTATED).sum(axis=0)
    result: dict[str, Any] = {
        "protocol": protocol.name,
        "labels": view.labels,
        "image_filter": view.image_filter,
        "class_filter": view.class_filter,
        "num_images": num_images,
        "num_images_dropped": total_images - num_images,
        "num_labels": num_labels,
        "num_labels_dropped": selection.num_labels_in_set - num_labels,
        "num_labels_without_positives": int((num_positives == 0).sum()),
        "mAP": _number(_nanmean(ap)),
    }
    if protocol.weighted_map:
        result["WmAP"] = _number(_divide((num_positives * np.nan_to_num(ap)).sum(), num_positives.sum()))
    result["top_k"] = {}
    for k in protocol.top_k:
        if k > num_labels:
            result["top_k"][str(k)] = {
                "precision": None,
                "recall": None,
                "f1": None,
                "note": f"K={k} exceeds the {num_labels} labels of this view",
            }
            continue
        metrics = top_k_metrics(scores, labels, k, ties=protocol.ties)
        result["top_k"][str(k)] = {
            key: (_number(value) if isinstance(value, float) else value) for key, value in metrics.items()
        }
    per_label_thresholds = None
    if thresholds is not None:
        metrics = threshold_metrics(scores, labels, thresholds, no_positive=protocol.no_positive_class)
        result["threshold"] = {"source": threshold_source}
        result["threshold"].update(
            {key: _number(value) for key, value in metrics.items() if not key.startswith("per_class")}
        )
        per_label_thresholds = metrics
    rows = []
    for position, column in enumerate(selection.label_indices):
        row = {
            "label": label_names[column],
            "unseen": bool(unseen[column]),
            "ap": _number(ap[position]),
            "num_positives": int(num_positives[position]),
            "num_annotated": int(num_annotated[position]),
        }
        if per_label_thresholds is not None:
            row["threshold"] = float(thresholds[position])
            for key in ("precision", "recall", "f1"):
                row[key] = _number(per_label_thresholds[f"per_class_{key}"][position])
        rows.append(row)
    result["per_label"] = rows
    return result
