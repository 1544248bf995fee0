"""Engine of `ovmlc evaluate`: batched inference, the scores file, protocol metrics, reports and threshold calibration.

Scores file (`scores.npz`, the contract between inference and metrics), written by `save_scores` and read back by
`load_scores`:

| key | shape | dtype | meaning |
| --- | --- | --- | --- |
| `scores` | `[N, C]` | float32 | higher = more likely; `ovmlc` inference writes sigmoid scores in [0, 1] |
| `labels` | `[N, C]` | int8 | 1 positive, 0 unannotated, -1 negative |
| `label_names` | `[C]` | unicode str | column names, unique |
| `unseen` | `[C]` | bool | True for labels held out of training (all False without a seen/unseen split) |
| `image_ids` | `[N]` | unicode str | optional: which image each row is |
| `unseen_scores` | `[N, C_unseen]` | float32 | optional: the unseen labels scored on their own (see below) |
| `threshold_scores` | `[N, C]` | float32 | optional: the scores the threshold metrics use, when they are not `scores` |
| `logits` | `[N, C]` | float32 | optional: the logits of `scores` (`scores = sigmoid(logits)`); AP, top-K rank them |
| `unseen_logits` | `[N, C_unseen]` | float32 | optional: the logits of `unseen_scores` (with both of those) |

`unseen_scores` is for models whose scores depend on the scored label set (MKT normalises across labels): their ZSL
protocol scores the unseen labels alone, so the views over unseen labels use these columns instead of the GZSL ones.
`threshold_scores` is for models whose paper-style ranking scores differ from their predicted scores (CLIP zero-shot
ranks the plain cosine, `model.ranking_scores()`, but predicts and calibrates with its reference prompt): `scores`
holds the ranking scores, `threshold_scores` the predicted ones that calibrated thresholds apply to.
`logits` (written by `ovmlc evaluate --model` and the trainer) are what AP and top-K rank when present: a float32
sigmoid saturates to exactly 1.0 for logits above ~17, which would tie every such entry; thresholds stay in the space
of the sigmoid scores. Each view's `tie_fraction` in metrics.json measures the ties that remain, and evaluation warns
above `TIE_WARNING_FRACTION`.
Any other key is ignored. The file is read with `allow_pickle=False`, so names must be stored as a unicode array
(`np.asarray(names, dtype=str)`), not as Python objects.

`evaluate_scores` turns such a file into a report with `ovmlc.evaluation.metrics.evaluate_protocol`;
`write_report` saves the
report folder (`metrics.json`, `results.md`, `per_label_ap.csv`, PNG plots); `evaluate_model` runs a model over a
canonical dataset first (through `ovmlc.core.scoring.Scorer`: float32 head, logits kept, the ZSL unseen-alone rule);
`calibrate_thresholds` fits per-label and global score thresholds on a validation split.
"""

from __future__ import annotations

import csv
import json
import math
import warnings
import zipfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from ..core.scoring import Scorer
from ..files import (
    METRICS_FILE_NAME,
    PER_LABEL_FILE_NAME,
    PLOT_FILE_NAMES,
    RESULTS_FILE_NAME,
    SCORES_FILE_NAME,
    THRESHOLDS_FILE_NAME,
)
from .metrics import (
    LABEL_POSITIVE,
    LABEL_UNANNOTATED,
    SINGLE_LABEL_HARMONIC_MEAN_VIEW,
    TASK_SINGLE_LABEL,
    EvaluationProtocol,
    average_precision,
    load_protocol,
    precision_recall_curve,
    select_view,
    threshold_f1_curve,
)
from .metrics import evaluate_protocol as _evaluate_protocol

SCORES_FILE_KEYS = ("scores", "labels", "label_names", "unseen")
OPTIONAL_SCORES_FILE_KEYS = ("image_ids", "unseen_scores", "threshold_scores", "logits", "unseen_logits")
# A view whose ranking scores tie on more than this share of (positive, negative) pairs gets a warning.
TIE_WARNING_FRACTION = 0.01
# |sigmoid(logits) - scores| above this means the logits are not those of the scores.
LOGIT_CONSISTENCY_TOLERANCE = 1e-3
VIEW_TITLES = {
    "zsl": "ZSL",
    "gzsl": "GZSL",
    "seen": "Seen",
    "all": "All labels",
    "with_positive": "All labels, images with a positive",
}


class ScoresFileError(ValueError):
    """A scores file is missing, unreadable, or breaks the format (the message names the file and the key)."""


class TiedScoresWarning(UserWarning):
    """A view's ranking scores tie on many (positive, negative) pairs: its AP depends on the tie policy."""


@dataclass
class ScoresFile:
    """The content of a scores file (see the module docstring)."""

    scores: np.ndarray  # [N, C] float32
    labels: np.ndarray  # [N, C] int8 in {1, 0, -1}
    label_names: list[str]  # [C]
    unseen: np.ndarray  # [C] bool
    image_ids: list[str] | None = None  # [N]
    unseen_scores: np.ndarray | None = None  # [N, C_unseen] float32: unseen labels scored alone (see module docstring)
    threshold_scores: np.ndarray | None = None  # [N, C] float32: predicted scores, when `scores` are ranking scores
    logits: np.ndarray | None = None  # [N, C] float32: logits of `scores`, what AP and top-K rank when present
    unseen_logits: np.ndarray | None = None  # [N, C_unseen] float32: logits of `unseen_scores`

    @property
    def num_images(self) -> int:
        return self.scores.shape[0]


# ----------------------------------------------------------------------------------------------------------------------
# Scores file
# ----------------------------------------------------------------------------------------------------------------------


def save_scores(
    path: str | Path,
    scores: Any,
    labels: Any,
    label_names: Sequence[str],
    unseen: Any = None,
    image_ids: Sequence[str] | None = None,
    unseen_scores: Any = None,
    threshold_scores: Any = None,
    logits: Any = None,
    unseen_logits: Any = None,
) -> Path:
    """Write a scores file; `unseen=None` means no seen/unseen split. The content is validated before writing.
    `logits` / `unseen_logits` are the logits of `scores` / `unseen_scores` (ovmlc inference: `Scorer` results)."""
    path = Path(path)
    scores = np.asarray(scores, dtype=np.float32)
    unseen = np.zeros(len(label_names), dtype=bool) if unseen is None else np.asarray(unseen, dtype=bool)
    arrays = {
        "scores": scores,
        "labels": np.asarray(labels).astype(np.int8),
        "label_names": np.asarray(list(label_names), dtype=str),
        "unseen": unseen,
    }
    if image_ids is not None:
        arrays["image_ids"] = np.asarray(list(image_ids), dtype=str)
    if unseen_scores is not None:
        arrays["unseen_scores"] = np.asarray(unseen_scores, dtype=np.float32)
    if threshold_scores is not None:
        arrays["threshold_scores"] = np.asarray(threshold_scores, dtype=np.float32)
    if logits is not None:
        arrays["logits"] = np.asarray(logits, dtype=np.float32)
    if unseen_logits is not None:
        arrays["unseen_logits"] = np.asarray(unseen_logits, dtype=np.float32)
    _validate_scores_arrays(arrays, path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as handle:  # a file handle keeps numpy from appending ".npz" to other suffixes
        np.savez_compressed(handle, **arrays)
    return path


def load_scores(path: str | Path) -> ScoresFile:
    """Read and validate a scores file; raises `ScoresFileError` naming the file and the offending key."""
    path = Path(path)
    if not path.is_file():
        raise ScoresFileError(f"Scores file {path} does not exist.")
    try:
        archive = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
        raise ScoresFileError(f"Scores file {path} is not a readable .npz archive: {error}") from None
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise ScoresFileError(f"Scores file {path} holds a single array, not an .npz archive of named arrays.")
    with archive:
        missing = [key for key in SCORES_FILE_KEYS if key not in archive.files]
        if missing:
            raise ScoresFileError(
                f"Scores file {path} is missing key(s) {', '.join(missing)}; "
                f"it has {', '.join(archive.files) or 'no arrays'} (expected {', '.join(SCORES_FILE_KEYS)})."
            )
        arrays = {}
        for key in (*SCORES_FILE_KEYS, *OPTIONAL_SCORES_FILE_KEYS):
            if key not in archive.files:
                continue
            try:
                arrays[key] = archive[key]
            except ValueError as error:  # object arrays need pickle, which is refused
                raise ScoresFileError(
                    f"Scores file {path}: key `{key}` cannot be read without pickle ({error}); "
                    "store names as a unicode array, e.g. np.asarray(names, dtype=str)."
                ) from None
            except (OSError, zipfile.BadZipFile, EOFError) as error:
                raise ScoresFileError(f"Scores file {path}: key `{key}` is unreadable: {error}") from None
    return _validate_scores_arrays(arrays, path)


def _validate_scores_arrays(arrays: Mapping[str, np.ndarray], path: Path) -> ScoresFile:
    def fail(key: str, message: str) -> ScoresFileError:
        return ScoresFileError(f"Scores file {path}: key `{key}` {message}")

    scores, labels = arrays["scores"], arrays["labels"]
    label_names, unseen = arrays["label_names"], arrays["unseen"]
    if scores.ndim != 2:
        raise fail("scores", f"must be a matrix [num_images, num_labels], got shape {scores.shape}.")
    if not np.issubdtype(scores.dtype, np.floating):
        raise fail("scores", f"must hold floats, got dtype {scores.dtype}.")
    if np.isnan(scores).any():
        rows, cols = np.nonzero(np.isnan(scores))
        raise fail("scores", f"holds {rows.size} NaN value(s), first at image {rows[0]}, label {cols[0]}.")
    num_images, num_labels = scores.shape

    if labels.shape != scores.shape:
        raise fail("labels", f"has shape {labels.shape} but `scores` has shape {scores.shape}.")
    if not (np.issubdtype(labels.dtype, np.integer) or np.issubdtype(labels.dtype, np.floating)):
        raise fail("labels", f"must hold integers 1/0/-1, got dtype {labels.dtype}.")
    bad = ~np.isin(labels, (1, 0, -1))
    if bad.any():
        rows, cols = np.nonzero(bad)
        raise fail(
            "labels",
            f"must hold only 1 (positive), 0 (unannotated), -1 (negative); found {labels[rows[0], cols[0]].item()!r} "
            f"at image {rows[0]}, label {cols[0]} (bad entries: {rows.size}).",
        )

    if label_names.ndim != 1 or label_names.shape[0] != num_labels:
        raise fail(
            "label_names", f"must be a vector of {num_labels} names (one per column), got shape {label_names.shape}."
        )
    if label_names.dtype.kind not in ("U", "S"):
        raise fail("label_names", f"must hold strings, got dtype {label_names.dtype}.")
    names = [name.decode() if isinstance(name, bytes) else str(name) for name in label_names.tolist()]
    seen_names: set[str] = set()
    duplicates = sorted({name for name in names if name in seen_names or seen_names.add(name)})
    if duplicates:
        raise fail("label_names", f"holds duplicate names: {', '.join(duplicates[:10])}.")

    if unseen.ndim != 1 or unseen.shape[0] != num_labels:
        raise fail("unseen", f"must be a vector of {num_labels} booleans (one per column), got shape {unseen.shape}.")
    if unseen.dtype != bool and not (np.issubdtype(unseen.dtype, np.integer) and np.isin(unseen, (0, 1)).all()):
        raise fail("unseen", f"must hold booleans, got dtype {unseen.dtype}.")

    image_ids = None
    if "image_ids" in arrays:
        ids = arrays["image_ids"]
        if ids.ndim != 1 or ids.shape[0] != num_images:
            raise fail("image_ids", f"must be a vector of {num_images} ids (one per row), got shape {ids.shape}.")
        image_ids = [str(image_id) for image_id in ids.tolist()]
    unseen_scores = arrays.get("unseen_scores")
    if unseen_scores is not None:
        expected = (num_images, int(unseen.astype(bool).sum()))
        if unseen_scores.shape != expected:
            raise fail(
                "unseen_scores",
                f"must be a matrix {list(expected)} (every image, the unseen labels only), got {unseen_scores.shape}.",
            )
        if not np.issubdtype(unseen_scores.dtype, np.floating) or np.isnan(unseen_scores).any():
            raise fail("unseen_scores", f"must hold floats without NaN (dtype {unseen_scores.dtype}).")
        unseen_scores = unseen_scores.astype(np.float32, copy=False)
    threshold_scores = arrays.get("threshold_scores")
    if threshold_scores is not None:
        if threshold_scores.shape != scores.shape:
            raise fail("threshold_scores", f"has shape {threshold_scores.shape} but `scores` has shape {scores.shape}.")
        if not np.issubdtype(threshold_scores.dtype, np.floating) or np.isnan(threshold_scores).any():
            raise fail("threshold_scores", f"must hold floats without NaN (dtype {threshold_scores.dtype}).")
        threshold_scores = threshold_scores.astype(np.float32, copy=False)
    logits = _validated_logits(arrays, "logits", scores, fail)
    unseen_logits = _validated_logits(arrays, "unseen_logits", unseen_scores, fail)
    if unseen_logits is not None and logits is None:
        raise fail("unseen_logits", "needs `logits` (the logits of `scores`) as well.")
    if logits is not None and unseen_scores is not None and unseen_logits is None:
        raise fail(
            "unseen_logits", "is missing: with `logits` and `unseen_scores`, store the unseen labels' logits too."
        )
    return ScoresFile(
        scores=scores.astype(np.float32, copy=False),
        labels=labels.astype(np.int8),
        label_names=names,
        unseen=unseen.astype(bool),
        image_ids=image_ids,
        unseen_scores=unseen_scores,
        threshold_scores=threshold_scores,
        logits=logits,
        unseen_logits=unseen_logits,
    )


def _validated_logits(
    arrays: Mapping[str, np.ndarray], key: str, scores: np.ndarray | None, fail: Callable[[str, str], ScoresFileError]
) -> np.ndarray | None:
    """`logits` / `unseen_logits`: the shape of the scores they belong to, finite floats, `sigmoid(logits) = scores`."""
    logits = arrays.get(key)
    if logits is None:
        return None
    scores_key = "scores" if key == "logits" else "unseen_scores"
    if scores is None:
        raise fail(key, f"needs `{scores_key}` (the scores these are the logits of).")
    if logits.shape != scores.shape:
        raise fail(key, f"has shape {logits.shape} but `{scores_key}` has shape {scores.shape}.")
    if not np.issubdtype(logits.dtype, np.floating) or not np.isfinite(logits).all():
        raise fail(key, f"must hold finite floats (dtype {logits.dtype}).")
    logits = logits.astype(np.float32, copy=False)
    with np.errstate(over="ignore"):
        gap = np.abs(1.0 / (1.0 + np.exp(-logits.astype(np.float64))) - scores)
    if gap.size and gap.max() > LOGIT_CONSISTENCY_TOLERANCE:
        row, column = np.unravel_index(int(gap.argmax()), gap.shape)
        raise fail(
            key,
            f"are not the logits of `{scores_key}`: sigmoid({logits[row, column]:.6g}) != {scores[row, column]:.6g} "
            f"at image {row}, label {column} (`{scores_key}` must be sigmoid(`{key}`)).",
        )
    return logits


# ----------------------------------------------------------------------------------------------------------------------
# Inference
# ----------------------------------------------------------------------------------------------------------------------


def dataset_batches(model: Any, dataset_split: Any, batch_size: int = 32, limit: int | None = None) -> Iterator[Any]:
    """`pixel_values [B, 3, H, W]` batches of the first `limit` (default all) rows of a dataset split, for a `Scorer`.

    The split has an `image` column (canonical schema; preprocessed with `model.preprocess`) or a `pixel_values`
    column (a split that already carries a transform)."""
    import torch

    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
    num_images = len(dataset_split) if limit is None else min(int(limit), len(dataset_split))
    for start in range(0, num_images, batch_size):
        batch = dataset_split[start : min(start + batch_size, num_images)]
        if "pixel_values" in batch:
            pixel_values = batch["pixel_values"]
            if not isinstance(pixel_values, torch.Tensor):
                pixel_values = torch.stack([torch.as_tensor(values) for values in pixel_values])
            yield pixel_values
        elif "image" in batch:
            yield model.preprocess(batch["image"])
        else:
            raise ValueError(f"The dataset split has neither an `image` nor a `pixel_values` column: {sorted(batch)}.")


def _num_rows(dataset_split: Any, limit: int | None) -> int:
    return len(dataset_split) if limit is None else min(int(limit), len(dataset_split))


def score_dataset(
    model: Any,
    dataset_split: Any,
    label_names: Sequence[str],
    batch_size: int = 32,
    limit: int | None = None,
    progress: bool = True,
    ranking: bool = False,
    image_dtype: Any = None,
) -> np.ndarray:
    """Sigmoid scores `[N, C]` (float32) of `model` on the first `limit` (default all) images of a dataset split.

    A thin wrapper of `Scorer(model, ...).score_pixel_batches(dataset_batches(...), label_names)` (see
    `dataset_batches` for the split's columns), for code that wants the scores only; use the `Scorer` for the logits.
    Label embeddings are encoded once; the model is in eval mode for the pass (restored afterwards). `ranking=True`
    scores under `model.ranking_scores()` (what paper-style tables rank; differs for CLIP zero-shot); `image_dtype`
    (e.g. `torch.bfloat16`) runs the image side under autocast, the head stays float32.
    """
    scorer = Scorer(model, batch_size=batch_size, image_dtype=image_dtype, progress=progress)
    batches = dataset_batches(model, dataset_split, batch_size, limit)
    return scorer.score_pixel_batches(
        batches, label_names, ranking=ranking, num_rows=_num_rows(dataset_split, limit)
    ).scores


# ----------------------------------------------------------------------------------------------------------------------
# Threshold calibration
# ----------------------------------------------------------------------------------------------------------------------


def best_f1_threshold(scores: Any, labels: Any) -> tuple[float, float] | None:
    """The score threshold (predict `score >= t`) that maximises F1 over the annotated entries given.

    `scores` and `labels` are flat arrays of the same size, labels in {1, 0, -1}. Returns `(threshold, f1)`, or None
    without any positive. The threshold sits halfway between the last predicted and the first rejected score, so that
    it generalises rather than sitting on a training score; among equal F1 the highest threshold wins.
    """
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    labels = np.asarray(labels).reshape(-1)
    annotated = labels != LABEL_UNANNOTATED
    scores, is_positive = scores[annotated], labels[annotated] == LABEL_POSITIVE
    num_positives = int(is_positive.sum())
    if num_positives == 0:
        return None
    order = np.argsort(-scores, kind="stable")
    sorted_scores, sorted_positive = scores[order], is_positive[order]
    true_positives = np.cumsum(sorted_positive)
    num_predicted = np.arange(1, scores.size + 1)
    f1 = 2 * true_positives / (num_predicted + num_positives)
    # A threshold cannot split equal scores: only the last entry of each run of equal scores is a valid cut.
    is_cut = np.r_[sorted_scores[1:] != sorted_scores[:-1], True]
    f1 = np.where(is_cut, f1, -1.0)
    best = int(np.argmax(f1))
    threshold = float(sorted_scores[best])
    if best + 1 < scores.size:
        midpoint = (sorted_scores[best] + sorted_scores[best + 1]) / 2
        if sorted_scores[best + 1] < midpoint <= sorted_scores[best]:
            threshold = float(midpoint)
    return threshold, float(f1[best])


def calibrate_thresholds(scores: Any, labels: Any, label_names: Sequence[str]) -> dict[str, Any]:
    """Fit score thresholds on validation scores `[N, C]` and labels `[N, C]` in {1, 0, -1}.

    The global threshold maximises micro-F1 over every annotated entry; each label with at least one annotated
    positive gets the threshold that maximises its own F1, the others (e.g. unseen labels, whose validation entries
    should be passed as 0 = unannotated) fall back to the global one. Thresholds live in the space of `scores`
    (sigmoid scores for ovmlc inference). Returns `{"label_thresholds": {name: t}, "global_threshold": t}`, the
    fields `config.label_thresholds` / `config.global_threshold` that `predict(threshold="calibrated")` reads.
    """
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels)
    if scores.ndim != 2 or scores.shape != labels.shape:
        raise ValueError(f"scores {scores.shape} and labels {labels.shape} must be matrices of the same shape.")
    if len(label_names) != scores.shape[1]:
        raise ValueError(f"Got {len(label_names)} label names for {scores.shape[1]} score columns.")
    global_fit = best_f1_threshold(scores, labels)
    if global_fit is None:
        raise ValueError("Cannot calibrate thresholds: the calibration labels hold no annotated positive.")
    global_threshold = global_fit[0]
    label_thresholds = {}
    for column, name in enumerate(label_names):
        fit = best_f1_threshold(scores[:, column], labels[:, column])
        label_thresholds[str(name)] = global_threshold if fit is None else fit[0]
    return {"label_thresholds": label_thresholds, "global_threshold": global_threshold}


def write_thresholds(
    thresholds: Mapping[str, Any], labels: Any, label_names: Sequence[str], output_dir: str | Path, **provenance: Any
) -> Path:
    """Write `thresholds.json`: the calibration dict, the labels that fell back to the global threshold, and where the
    calibration came from (split, number of images, ...)."""
    labels = np.asarray(labels)
    fallback = [str(name) for column, name in enumerate(label_names) if not (labels[:, column] == 1).any()]
    content = {
        "label_thresholds": dict(thresholds["label_thresholds"]),
        "global_threshold": thresholds["global_threshold"],
        "fallback_labels": fallback,
        "calibration": {"num_images": int(labels.shape[0]), **provenance},
        "score_space": "same as the scores (sigmoid for ovmlc inference); predict label if score >= threshold",
    }
    path = Path(output_dir) / THRESHOLDS_FILE_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_json_ready(content), indent=2) + "\n", encoding="utf-8")
    return path


# ----------------------------------------------------------------------------------------------------------------------
# End-to-end evaluation
# ----------------------------------------------------------------------------------------------------------------------


def default_output_dir(protocol_name: str) -> Path:
    """`./ovmlc-eval/<protocol>-<YYYYmmdd-HHMMSS>`."""
    return Path("ovmlc-eval") / f"{protocol_name}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"


def evaluate_scores(
    scores_file: ScoresFile | str | Path,
    protocol: str | Path | EvaluationProtocol,
    output_dir: str | Path | None = None,
    thresholds: Any = None,
    plots: bool = True,
    provenance: Mapping[str, Any] | None = None,
    localization: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Compute a protocol's report on a scores file and (if `output_dir`) write the report folder.

    `thresholds` (scalar, vector or calibration dict) adds P/R/F1 at those thresholds; `provenance` (model, dataset,
    split, ...) is recorded in metrics.json; `localization` (from `evaluation.localization.evaluate_localization`) is
    added as the report's `localization` section. AP and top-K rank the file's `logits` when it has them. A view whose
    ranking scores tie on more than `TIE_WARNING_FRACTION` of its (positive, negative) pairs raises a
    `TiedScoresWarning` and is listed in the report's `warnings`. Returns the report dict.
    """
    provenance = dict(provenance or {})
    if not isinstance(scores_file, ScoresFile):
        provenance.setdefault("scores_file", str(scores_file))
        scores_file = load_scores(scores_file)
    protocol = load_protocol(protocol)
    report = _evaluate_protocol(
        scores_file.scores,
        scores_file.labels,
        scores_file.label_names,
        scores_file.unseen,
        protocol,
        thresholds=thresholds,
        unseen_scores=scores_file.unseen_scores,
        threshold_scores=scores_file.threshold_scores,
        logits=scores_file.logits,
        unseen_logits=scores_file.unseen_logits,
    )
    report["provenance"] = {"created": datetime.now().isoformat(timespec="seconds"), **provenance}
    tie_warnings = [
        f"{VIEW_TITLES.get(name, name)}: {100 * view['tie_fraction']:.1f}% of (positive, negative) pairs have equal "
        f"ranking {report['ranked_by']}, so its AP depends on the tie policy (`{protocol.ties}`)"
        + (
            "; store logits next to the scores (ovmlc inference does)"
            if report["ranked_by"] == "scores"
            else "; score the head in float32"
        )
        for name, view in report["views"].items()
        if view.get("tie_fraction") is not None and view["tie_fraction"] > TIE_WARNING_FRACTION
    ]
    if tie_warnings:
        report["warnings"] = tie_warnings
        for message in tie_warnings:
            warnings.warn(f"ovmlc evaluate: {message}.", TiedScoresWarning, stacklevel=2)
    if localization is not None:
        report["localization"] = dict(localization)
    if thresholds is not None and isinstance(thresholds, Mapping):
        report["calibrated_thresholds"] = {"global_threshold": thresholds["global_threshold"]}
    if output_dir is not None:
        write_report(report, output_dir, scores_file=scores_file, protocol=protocol, plots=plots)
    return report


def evaluate_model(
    model: Any,
    dataset: Any,
    protocol: str | Path | EvaluationProtocol,
    output_dir: str | Path | None = None,
    split: str = "test",
    batch_size: int = 32,
    limit: int | None = None,
    calibrate_split: str | None = None,
    label_split: tuple[Sequence[str], Sequence[str]] | None = None,
    plots: bool = True,
    progress: bool = True,
    image_dtype: Any = None,
    localization: bool = True,
) -> dict[str, Any]:
    """Score a canonical dataset split with a model, save `scores.npz`, and compute and write the protocol's report.

    `model` is a loaded model or a name/path for `ovmlc.load_model`; `dataset` a name/path for
    `ovmlc.data.load_canonical` (its card gives the seen/unseen split) or an in-memory `DatasetDict` (then pass
    `label_split=(seen, unseen)`, else every label counts as seen). Labels are ordered seen then unseen (BiAM/MKT/QKS
    order). With `calibrate_split`, thresholds are fitted on that split with the unseen columns masked as
    unannotated (so no unseen annotation leaks in), written to `thresholds.json` and used for the threshold metrics.
    Writes everything to `output_dir` (default `./ovmlc-eval/<protocol>-<timestamp>`) and returns the report.
    Scoring goes through `ovmlc.core.scoring.Scorer`: `image_dtype` (e.g. `torch.bfloat16`) runs the image side under
    autocast, the head and the saved scores and logits are float32. With
    `localization` (default), a model that returns boxes (ViLD) on a split with an `objects` column also gets box
    AP@0.5 and pointing accuracy (the report's `localization` section).
    """
    from .. import data as ovmlc_data
    from ..inference.factory import load_model

    protocol = load_protocol(protocol)
    model_id = (
        str(model) if isinstance(model, (str, Path)) else getattr(model, "name_or_path", "") or type(model).__name__
    )
    dataset_id = str(dataset) if isinstance(dataset, (str, Path)) else "<in-memory dataset>"
    if isinstance(dataset, (str, Path)):
        if label_split is None:
            label_split = ovmlc_data.read_label_split(dataset)
        dataset = ovmlc_data.load_canonical(dataset)
    for name in (split, calibrate_split):
        if name is not None and name not in dataset:
            raise ValueError(f"Dataset {dataset_id} has no split {name!r}; it has {', '.join(dataset)}.")
    if isinstance(model, (str, Path)):
        model = load_model(model)
    label_names, unseen = _evaluation_labels(dataset[split], label_split)

    output_dir = Path(output_dir) if output_dir is not None else default_output_dir(protocol.name)
    evaluated = _first_rows(dataset[split], limit)

    scorer = Scorer(model, batch_size=batch_size, image_dtype=image_dtype, progress=progress)
    # Ranking scores (what paper-style tables rank), the predicted ones when they differ (CLIP zero-shot), and the
    # unseen labels scored alone when the model's scores depend on the label set (MKT), all with their logits.
    view_scores = scorer.score_for_views(
        lambda: dataset_batches(model, evaluated, batch_size), label_names, unseen, num_rows=len(evaluated)
    )
    arrays = view_scores.scores_file_arrays()
    labels = np.asarray(ovmlc_data.label_matrix(evaluated, label_names), dtype=np.int8)
    image_ids = list(evaluated["image_id"]) if "image_id" in evaluated.column_names else None
    scores_path = save_scores(
        output_dir / SCORES_FILE_NAME,
        labels=labels,
        label_names=label_names,
        unseen=unseen,
        image_ids=image_ids,
        **arrays,
    )
    provenance = {
        "model": model_id,
        "dataset": dataset_id,
        "split": split,
        "limit": limit,
        "scores_file": str(scores_path),
    }
    if view_scores.ranking_description is not None:
        provenance["ranking_scores"] = view_scores.ranking_description
    if scorer.image_dtype is not None:
        provenance["image_dtype"] = str(scorer.image_dtype).removeprefix("torch.")

    thresholds = None
    if calibrate_split is not None:
        calibration = _first_rows(dataset[calibrate_split], limit)
        calibration_scores = scorer.score_pixel_batches(  # predicted scores: what thresholds apply to
            dataset_batches(model, calibration, batch_size), label_names, num_rows=len(calibration)
        ).scores
        calibration_labels = np.asarray(ovmlc_data.label_matrix(calibration, label_names), dtype=np.int8)
        calibration_labels[:, unseen] = LABEL_UNANNOTATED  # unseen labels must not be tuned on their annotations
        thresholds = calibrate_thresholds(calibration_scores, calibration_labels, label_names)
        write_thresholds(
            thresholds,
            calibration_labels,
            label_names,
            output_dir,
            split=calibrate_split,
            model=model_id,
            dataset=dataset_id,
        )
        provenance["calibrate_split"] = calibrate_split
    scores_file = ScoresFile(
        arrays["scores"],
        labels,
        label_names,
        unseen,
        image_ids,
        arrays["unseen_scores"],
        arrays["threshold_scores"],
        arrays["logits"],
        arrays["unseen_logits"],
    )
    localization_report = None
    if localization:
        from .localization import evaluate_localization, supports_localization

        if supports_localization(model, evaluated):
            localization_report = evaluate_localization(
                model, evaluated, label_names, unseen, batch_size=batch_size, progress=progress, image_dtype=image_dtype
            )
    return evaluate_scores(
        scores_file,
        protocol,
        output_dir=output_dir,
        thresholds=thresholds,
        plots=plots,
        provenance=provenance,
        localization=localization_report,
    )


def _first_rows(split: Any, limit: int | None) -> Any:
    return split if limit is None or limit >= len(split) else split.select(range(limit))


def _evaluation_labels(
    split: Any, label_split: tuple[Sequence[str], Sequence[str]] | None
) -> tuple[list[str], np.ndarray]:
    """Label order seen + unseen (the dataset's own order without a split) and the unseen mask [C]."""
    from ..data import dataset_label_names

    all_names = dataset_label_names(split)
    seen, unseen_names = ([], []) if label_split is None else (list(label_split[0]), list(label_split[1]))
    if not seen and not unseen_names:
        return all_names, np.zeros(len(all_names), dtype=bool)
    unknown = [name for name in (*seen, *unseen_names) if name not in all_names]
    if unknown:
        raise ValueError(f"The seen/unseen split names labels the dataset does not have: {', '.join(unknown[:10])}.")
    return [*seen, *unseen_names], np.array([False] * len(seen) + [True] * len(unseen_names), dtype=bool)


# ----------------------------------------------------------------------------------------------------------------------
# Report folder
# ----------------------------------------------------------------------------------------------------------------------


def write_report(
    report: Mapping[str, Any],
    output_dir: str | Path,
    scores_file: ScoresFile | None = None,
    protocol: EvaluationProtocol | None = None,
    plots: bool = True,
) -> dict[str, Path]:
    """Write `metrics.json`, `results.md`, `per_label_ap.csv` and (with `plots`) the PNG plots; returns their paths.

    The precision-recall plot needs the scores (`scores_file` and `protocol`); the other files only need `report`.
    Single-label reports (`task: single-label`) get their own table and per-class CSV, without plots.
    """
    if report.get("task") == TASK_SINGLE_LABEL:
        return write_single_label_report_files(report, output_dir)
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    written = {
        "metrics": output_dir / METRICS_FILE_NAME,
        "results": output_dir / RESULTS_FILE_NAME,
        "per_label": output_dir / PER_LABEL_FILE_NAME,
    }
    written["metrics"].write_text(json.dumps(_json_ready(report), indent=2) + "\n", encoding="utf-8")
    written["results"].write_text(render_results_markdown(report), encoding="utf-8")
    write_per_label_csv(report, written["per_label"])
    if plots:
        written.update(write_plots(report, output_dir, scores_file=scores_file, protocol=protocol))
    return written


def _json_ready(value: Any) -> Any:
    """Recursively turn numpy scalars/arrays into Python values and non-finite floats into None."""
    if isinstance(value, Mapping):
        return {str(key): _json_ready(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_ready(item) for item in value]
    if isinstance(value, np.ndarray):
        return _json_ready(value.tolist())
    if isinstance(value, (np.bool_, bool)):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, Path):
        return str(value)
    return value


def _percent(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.1f}"


def _main_view(report: Mapping[str, Any]) -> str | None:
    """The view the plots describe: GZSL (every label) when present, else the first computed view."""
    views = report["views"]
    for name in ("gzsl", "all"):
        if name in views:
            return name
    return next(iter(views), None)


def render_results_markdown(report: Mapping[str, Any]) -> str:
    """A paper-style table (views x P/R/F1@K, mAP, WmAP), in percent, headed by the protocol and provenance."""
    protocol = report["protocol"]
    settings = report["settings"]
    top_k = settings["top_k"]
    with_wmap = settings["weighted_map"]
    provenance = report.get("provenance", {})
    lines = [f"# Evaluation results: protocol `{protocol}`", ""]
    for key in (
        "model",
        "dataset",
        "split",
        "scores_file",
        "limit",
        "calibrate_split",
        "ranking_scores",
        "image_dtype",
        "created",
    ):
        if provenance.get(key) is not None:
            lines.append(f"- {key.replace('_', ' ')}: `{provenance[key]}`")
    row_pooled = settings.get("ap_mode") == "row_pooled"
    lines += [
        f"- protocol `{protocol}`: {report['description']}",
        f"- definitions from: {report['citation']}",
        f"- ties: `{settings['ties']}`; classes without positives: `{settings['no_positive_class']}`; AP: "
        f"`{settings.get('ap_mode', 'per_class')}`; ranked by: `{report.get('ranked_by', 'scores')}`",
        *(f"- **warning**: {message}" for message in report.get("warnings", [])),
        "",
        "All numbers in %. P/R/F1@K are pooled over images (every kept image makes K predictions).",
        "",
    ]
    header = ["View", "Labels", "Images"]
    for k in top_k:
        header += [f"P@{k}", f"R@{k}", f"F1@{k}"]
    header.append("mAP")
    if with_wmap:
        header.append("WmAP")
    if row_pooled:
        header.append("per-class mAP")
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    bounds = []
    for name, view in report["views"].items():
        row = [VIEW_TITLES.get(name, name), str(view["num_labels"]), str(view["num_images"])]
        for k in top_k:
            metrics = view["top_k"][str(k)]
            row += [_percent(metrics["precision"]), _percent(metrics["recall"]), _percent(metrics["f1"])]
            if metrics.get("f1_upper_bound") is not None:
                bounds.append(f"{VIEW_TITLES.get(name, name)} F1@{k} ≤ {_percent(metrics['f1_upper_bound'])}")
        row.append(_percent(view["mAP"]))
        if with_wmap:
            row.append(_percent(view.get("WmAP")))
        if row_pooled:
            row.append(_percent(view.get("mAP_per_class")))
        lines.append("| " + " | ".join(row) + " |")
    lines.append("")
    if row_pooled:
        lines += [
            "mAP (and WmAP) use BiAM's row-pooled Open Images AP: each class ranks every annotated entry of the images "
            "annotated for it, across labels; per-class mAP is the true per-class AP of the same scores.",
            "",
        ]
    if bounds:
        lines += ["Best F1@K any ranking can reach on these images: " + "; ".join(bounds) + ".", ""]
    notes = [
        f"{VIEW_TITLES.get(name, name)} F1@{k}: {metrics['note']}"
        for name, view in report["views"].items()
        for k, metrics in view["top_k"].items()
        if metrics.get("note")
    ]
    if notes:
        lines += ["Not computed: " + "; ".join(notes) + ".", ""]

    threshold_views = {name: view["threshold"] for name, view in report["views"].items() if "threshold" in view}
    if threshold_views:
        columns = ["CP", "CR", "CF1", "macro_f1", "OP", "OR", "OF1"]
        lines += [
            "## At a score threshold",
            "",
            "| View | Thresholds | " + " | ".join(columns) + " |",
            "|" + "---|" * (len(columns) + 2),
        ]
        for name, metrics in threshold_views.items():
            values = " | ".join(_percent(metrics[column]) for column in columns)
            source = f"{metrics['source']} (score {metrics.get('rule', '>=')} t)"
            lines.append(f"| {VIEW_TITLES.get(name, name)} | {source} | {values} |")
            for k, block in report["views"][name].get("threshold_top_k", {}).items():
                values = " | ".join(_percent(block.get(column)) for column in columns)
                lines.append(f"| {VIEW_TITLES.get(name, name)} | top-{k} that pass {source} | {values} |")
        lines += [
            "",
            "CF1 = 2·CP·CR/(CP+CR) (ML-GCN); macro_f1 = mean of the per-class F1 (what DualCoOp reports as F_C). "
            f"Unannotated entries: `{settings.get('threshold_unannotated', 'ignore')}` (negative: a prediction on "
            "one is a false positive).",
            "",
        ]
    lines += ["## Views", ""] + [f"- {_view_line(name, view)}" for name, view in report["views"].items()]
    for name, reason in report.get("skipped_views", {}).items():
        lines.append(f"- {VIEW_TITLES.get(name, name)}: skipped ({reason})")
    lines.append("")
    if report.get("localization"):
        lines += render_localization_markdown(report["localization"])
    return "\n".join(lines)


def _view_line(name: str, view: Mapping[str, Any]) -> str:
    """One line per view: its labels, and the images and labels each filter keeps (counts people check first)."""
    total = view["num_images"] + view["num_images_dropped"]
    by_filter = view.get("num_images_by_filter", {})
    counts = ", ".join(f"`{key}` {value:,}" for key, value in by_filter.items())
    line = (
        f"{VIEW_TITLES.get(name, name)}: {view['labels']} labels; images kept by `{view['image_filter']}`: "
        f"{view['num_images']:,} of {total:,}"
        + (f" (per image filter: {counts})" if counts else "")
        + f"; labels kept by class filter `{view['class_filter']}`: {view['num_labels']:,} of "
        f"{view['num_labels'] + view['num_labels_dropped']:,} ({view['num_labels_without_positives']:,} without "
        "positives)"
    )
    if "num_top_k_labels" in view:
        line += f"; top-K chooses among {view['num_top_k_labels']:,} labels (`{view['top_k_class_filter']}`)"
    if view.get("scored_labels"):
        line += f"; scored: {view['scored_labels']}"
    if view.get("tie_fraction") is not None:
        line += f"; tied (positive, negative) pairs: {100 * view['tie_fraction']:.2f}%"
    return line


def render_localization_markdown(localization: Mapping[str, Any]) -> list[str]:
    """The localisation section of results.md: box AP and pointing accuracy per label group (see
    `ovmlc.evaluation.box_metrics`)."""
    threshold = localization["iou_threshold"]
    lines = [
        "## Localisation",
        "",
        f"Box AP@{threshold:g} (VOC all-point AP per label, mean over labels with a box) and pointing accuracy "
        "(share of (image, label) pairs whose best region's centre lies in a box of the label), on "
        f"{localization['num_images']} images, in %.",
        "",
        "| Labels | With boxes | Box AP | Pointing |",
        "|---|---|---|---|",
    ]
    for group in ("seen", "unseen", "all"):
        lines.append(
            f"| {group} | {localization['labels_with_boxes'][group]} | {_percent(localization['box_ap'][group])} | "
            f"{_percent(localization['pointing'][group])} |"
        )
    lines.append("")
    return lines


def write_per_label_csv(report: Mapping[str, Any], path: str | Path) -> Path:
    """One row per (view, label): AP, positives, annotated images, and threshold P/R/F1 when computed."""
    columns = ["protocol", "view", "label", "unseen", "ap", "num_positives", "num_annotated"]
    if any("mAP_per_class" in view for view in report["views"].values()):
        columns.insert(columns.index("ap") + 1, "ap_per_class")
    if any("threshold" in view for view in report["views"].values()):
        columns += ["threshold", "precision", "recall", "f1"]
    path = Path(path)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        for view_name, view in report["views"].items():
            for row in view["per_label"]:
                values = {"protocol": report["protocol"], "view": view_name, **row}
                writer.writerow({key: "" if values.get(key) is None else values[key] for key in columns})
    return path


def write_plots(
    report: Mapping[str, Any],
    output_dir: str | Path,
    scores_file: ScoresFile | None = None,
    protocol: EvaluationProtocol | None = None,
) -> dict[str, Path]:
    """Per-label AP bar chart (sorted) and seen vs unseen AP distribution of the GZSL view (or the only view); with the
    scores (`scores_file` and `protocol`) also precision-recall curves of labels spread over the AP range (one panel
    per view), threshold -> F1 (global threshold, and the calibrated per-label thresholds' F1) and score histograms of
    seen vs unseen labels. Uses matplotlib's Agg canvas only."""
    from matplotlib.figure import Figure

    output_dir = Path(output_dir)
    view_name = _main_view(report)
    if view_name is None:
        return {}
    view = report["views"][view_name]
    title = f"{report['protocol']} · {VIEW_TITLES.get(view_name, view_name)}"
    rows = [row for row in view["per_label"] if row["ap"] is not None]
    rows.sort(key=lambda row: row["ap"], reverse=True)
    written = {}

    width_inches = max(6.0, min(0.25 * len(rows), 12.0))
    figure = Figure(figsize=(width_inches, 4.0), layout="constrained")
    axes = figure.add_subplot()
    colors = ["tab:orange" if row["unseen"] else "tab:blue" for row in rows]
    values = [100 * row["ap"] for row in rows]
    if len(rows) <= 200:
        axes.bar(range(len(rows)), values, color=colors, width=0.85)
    else:  # one line per label draws thousands of labels in a fraction of the time of bar patches
        axes.vlines(range(len(rows)), 0, values, colors=colors, linewidth=max(0.1, 0.8 * 72 * width_inches / len(rows)))
        axes.set_xlim(-1, len(rows))
    if len(rows) <= 60:
        axes.set_xticks(range(len(rows)), [row["label"] for row in rows], rotation=90, fontsize=7)
    else:
        axes.set_xticks([])
        axes.set_xlabel(f"{len(rows)} labels, sorted by AP")
    axes.set_ylabel("AP (%)")
    axes.set_ylim(0, 100)
    if any(row["unseen"] for row in rows):
        from matplotlib.patches import Patch

        axes.legend(
            handles=[Patch(color="tab:blue", label="seen"), Patch(color="tab:orange", label="unseen")],
            loc="upper right",
        )
    axes.set_title(f"Per-label AP ({title})")
    written["per_label_ap_plot"] = output_dir / PLOT_FILE_NAMES["per_label_ap"]
    figure.savefig(written["per_label_ap_plot"], dpi=110)

    figure = Figure(figsize=(6.0, 4.0), layout="constrained")
    axes = figure.add_subplot()
    groups = {
        "seen": [100 * row["ap"] for row in rows if not row["unseen"]],
        "unseen": [100 * row["ap"] for row in rows if row["unseen"]],
    }
    groups = {name: values for name, values in groups.items() if values}
    if len(groups) == 1:
        groups = {"all labels": next(iter(groups.values()))}
    bins = np.linspace(0, 100, 21)
    for (name, values), color in zip(groups.items(), ("tab:blue", "tab:orange")):
        axes.hist(
            values, bins=bins, alpha=0.6, color=color, label=f"{name} (n={len(values)}, mean {np.mean(values):.1f})"
        )
    axes.set_xlabel("AP (%)")
    axes.set_ylabel("labels")
    axes.legend()
    axes.set_title(f"AP distribution ({title})")
    written["ap_distribution_plot"] = output_dir / PLOT_FILE_NAMES["ap_distribution"]
    figure.savefig(written["ap_distribution_plot"], dpi=110)

    if scores_file is not None and protocol is not None:
        written.update(_write_score_plots(report, output_dir, scores_file, protocol, view_name))
    return written


@dataclass
class _ViewData:
    """A view's score and label matrices as the report computed them (AP / threshold columns)."""

    name: str
    scores: np.ndarray  # [n, c] what AP ranks: logits or ranking scores (unseen labels alone where the report did so)
    threshold_scores: np.ndarray  # [n, c] the scores the threshold metrics used
    labels: np.ndarray  # [n, c]
    label_names: list[str]  # [c]
    unseen: np.ndarray  # [c]


def _view_data(scores_file: ScoresFile, protocol: EvaluationProtocol, view_name: str) -> _ViewData:
    spec = next(spec for spec in protocol.views if spec.name == view_name)
    labels = scores_file.labels
    if protocol.unannotated == "negative":
        labels = np.where(labels == LABEL_UNANNOTATED, -1, labels).astype(np.int8)
    selection = select_view(labels, scores_file.unseen, spec)
    scores, ranked = scores_file.scores, scores_file.logits  # ranked: what AP ranks (the logits when there are some)
    if scores_file.unseen_scores is not None and spec.labels == "unseen":
        scores = scores.copy()
        scores[:, scores_file.unseen] = scores_file.unseen_scores
        if ranked is not None:
            ranked = ranked.copy()
            ranked[:, scores_file.unseen] = scores_file.unseen_logits
    threshold_scores = scores if scores_file.threshold_scores is None else scores_file.threshold_scores
    return _ViewData(
        name=view_name,
        scores=selection.take(scores if ranked is None else ranked),
        threshold_scores=selection.take(threshold_scores),
        labels=selection.take(labels),
        label_names=[scores_file.label_names[column] for column in selection.label_indices],
        unseen=scores_file.unseen[selection.label_indices],
    )


def pick_labels_across_ap(ap: Sequence[float], count: int = 5) -> list[int]:
    """Indices of up to `count` labels spread over the AP *values* (best, worst and the labels closest to evenly spaced
    APs between them, so a cluster of near-perfect labels does not fill the plot), one label per distinct AP (rounded
    to 0.01 points) so that no two curves coincide; best first, NaN APs skipped."""
    by_value: dict[float, int] = {}
    for index in np.argsort(-np.asarray(ap, dtype=np.float64), kind="stable"):
        value = float(ap[index])
        if not math.isnan(value):
            by_value.setdefault(round(value, 4), int(index))
    values = np.array(list(by_value))  # distinct APs, descending
    if values.size <= count:
        return list(by_value.values())
    chosen: list[int] = []
    for target in np.linspace(values[0], values[-1], count):
        free = [position for position in range(values.size) if position not in chosen]
        chosen.append(min(free, key=lambda position: abs(values[position] - target)))
    return [list(by_value.values())[position] for position in sorted(chosen)]


def precision_at_positives(scores: Any, labels: Any, ties: str = "stable") -> tuple[np.ndarray, np.ndarray]:
    """The points AP averages over: `(recall, precision)` after each positive of one class ranked by descending score
    (annotated images only), so that the step curve from recall 0 encloses exactly the per-class AP."""
    precision, recall = precision_recall_curve(scores, labels, ties)
    ranked_positive = np.diff(np.r_[0.0, np.nan_to_num(recall)]) > 0  # recall grows exactly at positives
    return recall[ranked_positive], precision[ranked_positive]


def _write_score_plots(
    report: Mapping[str, Any],
    output_dir: Path,
    scores_file: ScoresFile,
    protocol: EvaluationProtocol,
    main_view: str,
) -> dict[str, Path]:
    """The plots that need the scores: PR curves per view, threshold -> F1 and (with unseen labels) score histograms."""
    from matplotlib.figure import Figure

    written = {}
    views = {name: _view_data(scores_file, protocol, name) for name in report["views"]}

    # Precision-recall: one panel per view, labels spread over the AP range (per-class AP, what the curve encloses).
    figure = Figure(figsize=(4.2 * len(views), 4.2), layout="constrained")
    for panel, (name, data) in enumerate(views.items(), start=1):
        axes = figure.add_subplot(1, len(views), panel)
        ap = average_precision(data.scores, data.labels, ties=protocol.ties, no_positive="exclude")
        for index in pick_labels_across_ap(ap):
            recall, precision = precision_at_positives(data.scores[:, index], data.labels[:, index], protocol.ties)
            axes.plot(
                np.r_[0.0, recall],
                np.r_[precision[:1], precision],
                drawstyle="steps-pre",
                label=f"{data.label_names[index]}{' (unseen)' if data.unseen[index] else ''}: AP {100 * ap[index]:.1f}",
            )
        axes.set_xlabel("recall")
        axes.set_ylabel("precision")
        axes.set_xlim(0, 1)
        axes.set_ylim(0, 1.02)
        axes.legend(fontsize=7, loc="lower left")
        axes.set_title(f"{VIEW_TITLES.get(name, name)}: labels across the AP range", fontsize=9)
    figure.suptitle(f"Precision-recall ({report['protocol']}; per-class AP = area under each step curve)", fontsize=9)
    written["pr_curves_plot"] = output_dir / PLOT_FILE_NAMES["pr_curves"]
    figure.savefig(written["pr_curves_plot"], dpi=110)

    # Threshold -> F1 on the main view (predicted scores), with the calibrated thresholds' result when there is one.
    data = views[main_view]
    annotated = data.threshold_scores[data.labels != LABEL_UNANNOTATED]
    if annotated.size:
        grid = np.linspace(float(annotated.min()), float(annotated.max()), 201)
        curve = threshold_f1_curve(
            data.threshold_scores,
            data.labels,
            grid,
            no_positive=protocol.no_positive_class,
            unannotated=protocol.threshold_unannotated,
        )
        figure = Figure(figsize=(6.5, 4.2), layout="constrained")
        axes = figure.add_subplot()
        axes.plot(grid, 100 * curve["overall_f1"], color="tab:blue", label="overall F1 (OF1), one global threshold")
        axes.plot(grid, 100 * curve["macro_f1"], color="tab:green", label="macro-F1, one global threshold")
        block = report["views"][main_view].get("threshold")
        global_threshold = (report.get("calibrated_thresholds") or {}).get("global_threshold")
        if block is not None and block["source"] == "calibrated":
            for key, color, what in (("OF1", "tab:blue", "OF1"), ("macro_f1", "tab:green", "macro-F1")):
                if block.get(key) is not None:
                    axes.axhline(
                        100 * block[key], color=color, linestyle="--", label=f"{what}, calibrated per-label thresholds"
                    )
        if global_threshold is not None:
            axes.axvline(global_threshold, color="gray", linestyle=":", label="calibrated global threshold")
        elif block is not None and block["source"] == "protocol":
            axes.axvline(protocol.threshold, color="gray", linestyle=":", label="the preset's threshold")
        axes.set_xlabel("threshold (predict score >= t)")
        axes.set_ylabel("F1 (%)")
        axes.set_ylim(0, 100)
        axes.legend(fontsize=7)
        axes.set_title(f"Threshold -> F1 ({report['protocol']} · {VIEW_TITLES.get(main_view, main_view)})", fontsize=9)
        written["threshold_f1_plot"] = output_dir / PLOT_FILE_NAMES["threshold_f1"]
        figure.savefig(written["threshold_f1_plot"], dpi=110)

    # Score histograms of seen vs unseen labels (GZSL): the bias the ZSL/GZSL gap comes from. The predicted scores
    # (what thresholds see; CLIP zero-shot's plain cosine saturates its sigmoid), binned over their central 99%.
    if data.unseen.any() and (~data.unseen).any():
        figure = Figure(figsize=(9.0, 3.8), layout="constrained")
        scores = data.threshold_scores
        low, high = np.quantile(scores[data.labels != LABEL_UNANNOTATED], [0.005, 0.995])
        bins = np.linspace(float(low), float(high), 41) if high > low else 40
        for panel, (value, what) in enumerate(((1, "positive"), (-1, "negative")), start=1):
            axes = figure.add_subplot(1, 2, panel)
            for is_unseen, color, group in ((False, "tab:blue", "seen"), (True, "tab:orange", "unseen")):
                entries = scores[:, data.unseen == is_unseen][data.labels[:, data.unseen == is_unseen] == value]
                if entries.size:
                    axes.hist(
                        entries,
                        bins=bins,
                        density=True,
                        alpha=0.55,
                        color=color,
                        label=f"{group} labels (n={entries.size:,}, median {np.median(entries):.3g})",
                    )
            axes.set_xlabel("predicted score (central 99% of the range)")
            axes.set_ylabel("density")
            axes.legend(fontsize=7)
            axes.set_title(f"{what} entries", fontsize=9)
        figure.suptitle(
            f"Scores of seen vs unseen labels ({report['protocol']} · {VIEW_TITLES.get(main_view, main_view)}, "
            "ranked together)",
            fontsize=9,
        )
        written["score_histograms_plot"] = output_dir / PLOT_FILE_NAMES["score_histograms"]
        figure.savefig(written["score_histograms_plot"], dpi=110)
    return written


# ----------------------------------------------------------------------------------------------------------------------
# Report files of single-label reports (`task: single-label`, see `metrics.evaluate_single_label`)
# ----------------------------------------------------------------------------------------------------------------------

SINGLE_LABEL_VIEW_TITLES = {
    "all": "All classes",
    "base": "Base",
    "new": "New",
    SINGLE_LABEL_HARMONIC_MEAN_VIEW: "Harmonic mean (base, new)",
}


def _percent_2(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.2f}"


def render_single_label_markdown(report: Mapping[str, Any]) -> str:
    """A paper-style table (views x top-1, top-5, mean per-class accuracy, mAP), in percent."""
    provenance = report.get("provenance", {})
    lines = [f"# Evaluation results: protocol `{report['protocol']}` (single-label)", ""]
    for key in ("model", "dataset", "split", "scores_file", "limit", "created"):
        if provenance.get(key) is not None:
            lines.append(f"- {key.replace('_', ' ')}: `{provenance[key]}`")
    lines += [
        f"- protocol `{report['protocol']}`: {report['description']}",
        f"- definitions from: {report['citation']}",
        "",
        "All numbers in %. Each view ranks only its own classes, on the images of those classes.",
        "",
        "| View | Classes | Images | Top-1 | Top-5 | Mean per-class acc. | mAP |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, view in report["views"].items():
        if name == SINGLE_LABEL_HARMONIC_MEAN_VIEW:
            continue
        numbers = (view["top1"], view["top5"], view["mean_per_class_accuracy"], view["mAP"])
        lines.append(
            f"| {SINGLE_LABEL_VIEW_TITLES.get(name, name)} | {view['num_labels']} | {view['num_images']} | "
            + " | ".join(_percent_2(number) for number in numbers)
            + " |"
        )
    block = report["views"].get(SINGLE_LABEL_HARMONIC_MEAN_VIEW)
    if block:
        lines += [
            "",
            f"Harmonic mean of {block['base_view']} and {block['new_view']}: "
            f"top-1 H = {_percent_2(block.get('top1'))}, top-5 H = {_percent_2(block.get('top5'))}.",
        ]
    for name, reason in report.get("skipped_views", {}).items():
        lines.append(f"- {SINGLE_LABEL_VIEW_TITLES.get(name, name)}: skipped ({reason})")
    lines.append("")
    return "\n".join(lines)


def write_single_label_report_files(report: Mapping[str, Any], output_dir: str | Path) -> dict[str, Path]:
    """`metrics.json`, `results.md` and `per_label_ap.csv` (per class: accuracy, images, AP) of a single-label
    report."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    written = {
        "metrics": output_dir / METRICS_FILE_NAME,
        "results": output_dir / RESULTS_FILE_NAME,
        "per_label": output_dir / PER_LABEL_FILE_NAME,
    }
    written["metrics"].write_text(json.dumps(_json_ready(report), indent=2) + "\n", encoding="utf-8")
    written["results"].write_text(render_single_label_markdown(report), encoding="utf-8")
    columns = ["protocol", "view", "label", "unseen", "accuracy", "num_images", "ap"]
    with written["per_label"].open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        for view_name, view in report["views"].items():
            for row in view.get("per_label", []):
                values = {"protocol": report["protocol"], "view": view_name, **row}
                writer.writerow({key: "" if values.get(key) is None else values[key] for key in columns})
    return written
