"""The canonical multi-label dataset schema shared by every part of ovmlc.

A canonical split is a `datasets.Dataset` with

* `image`: `Image()` (stored as encoded bytes, so a folder of shards is self-contained),
* `labels`: `List(ClassLabel(names=ALL_LABELS))`, the positives,
* `image_id`: `Value("string")`,
* `negative_labels` (only for partially annotated data): same type as `labels`, the explicit negatives,
* `caption` (optional): `Value("string")`,
* `objects` (optional): `List({"label": ClassLabel, "bbox": List(float32, length=4)})`, labelled boxes, XYWH pixels
  (see `ovmlc.data.objects`).

Without `negative_labels` every label that is not positive is negative (`annotation: full`); with it, a label that is
in neither column is unannotated (`annotation: partial`). `label_matrix` turns this into the `int8 [N, C]` matrix in
{1 positive, 0 unannotated, -1 negative} that `ovmlc.evaluation.metrics` and `scores.npz` use.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from datasets import ClassLabel, Dataset, Features, Image, List, Value

# Version of the canonical folder layout + card block (bumped only on incompatible changes).
CANONICAL_FORMAT_VERSION = "1"
SPLITS = ("train", "validation", "test")
ANNOTATION_FULL = "full"
ANNOTATION_PARTIAL = "partial"
ANNOTATIONS = (ANNOTATION_FULL, ANNOTATION_PARTIAL)

LABEL_POSITIVE = 1
LABEL_UNANNOTATED = 0
LABEL_NEGATIVE = -1


class CanonicalSchemaError(ValueError):
    """A dataset does not follow the canonical schema; the message names the split and column."""


OBJECTS_COLUMN = "objects"


def objects_feature(label_names: Sequence[str]) -> List:
    """The `objects` feature over `label_names` (same ClassLabel names as `labels`)."""
    return List({"label": ClassLabel(names=list(label_names)), "bbox": List(Value("float32"), length=4)})


def validate_objects_feature(feature: Any, label_names: Sequence[str], where: str) -> None:
    """Raise `CanonicalSchemaError` unless `feature` is `objects_feature(label_names)`."""
    inner = getattr(feature, "feature", None)
    if not isinstance(feature, List) or not isinstance(inner, dict) or set(inner) != {"label", "bbox"}:
        raise CanonicalSchemaError(
            f"{where}: column 'objects' must be List({{'label': ClassLabel, 'bbox': List(float32, length=4)}}), "
            f"got {feature!r}"
        )
    if not isinstance(inner["label"], ClassLabel) or list(inner["label"].names) != list(label_names):
        raise CanonicalSchemaError(f"{where}: 'objects' labels must be ClassLabel with the names of 'labels'")
    bbox = inner["bbox"]
    if not isinstance(bbox, List) or getattr(bbox, "length", None) != 4:
        raise CanonicalSchemaError(f"{where}: 'objects' bbox must be List(Value('float32'), length=4), got {bbox!r}")


def canonical_features(
    label_names: Sequence[str],
    *,
    with_negative_labels: bool = False,
    with_caption: bool = False,
    with_objects: bool = False,
) -> Features:
    """Features of a canonical split over `label_names` (the ClassLabel order is the label order everywhere)."""
    label_names = list(label_names)
    duplicates = sorted({name for name in label_names if label_names.count(name) > 1})
    if duplicates:
        raise CanonicalSchemaError(f"label names must be unique; duplicated: {duplicates[:20]}")
    columns = {
        "image": Image(),
        "labels": List(ClassLabel(names=label_names)),
        "image_id": Value("string"),
    }
    if with_negative_labels:
        columns["negative_labels"] = List(ClassLabel(names=label_names))
    if with_caption:
        columns["caption"] = Value("string")
    if with_objects:
        columns["objects"] = objects_feature(label_names)
    return Features(columns)


def _class_label_names(feature: object, where: str) -> list[str]:
    inner = getattr(feature, "feature", None)
    if not isinstance(feature, List) or not isinstance(inner, ClassLabel):
        raise CanonicalSchemaError(f"{where} must be List(ClassLabel(names=...)), got {feature!r}")
    return list(inner.names)


def dataset_label_names(dataset: Dataset) -> list[str]:
    """The ClassLabel names of a canonical split's `labels` column (the dataset's full label list)."""
    if "labels" not in dataset.features:
        raise CanonicalSchemaError(f"dataset has no 'labels' column (columns: {list(dataset.features)})")
    return _class_label_names(dataset.features["labels"], "column 'labels'")


def validate_canonical_features(features: Features, split: str = "dataset") -> list[str]:
    """Check `features` against the canonical schema and return the label names; raises `CanonicalSchemaError`."""
    missing = [column for column in ("image", "labels", "image_id") if column not in features]
    if missing:
        raise CanonicalSchemaError(f"{split}: missing column(s) {missing} (columns: {list(features)})")
    if not isinstance(features["image"], Image):
        raise CanonicalSchemaError(f"{split}: column 'image' must be datasets.Image(), got {features['image']!r}")
    if not isinstance(features["image_id"], Value) or features["image_id"].dtype not in ("string", "large_string"):
        raise CanonicalSchemaError(f"{split}: column 'image_id' must be Value('string'), got {features['image_id']!r}")
    names = _class_label_names(features["labels"], f"{split}: column 'labels'")
    if "negative_labels" in features:
        negative_names = _class_label_names(features["negative_labels"], f"{split}: column 'negative_labels'")
        if negative_names != names:
            raise CanonicalSchemaError(f"{split}: 'negative_labels' and 'labels' must share the same ClassLabel names")
    if "caption" in features and not isinstance(features["caption"], Value):
        raise CanonicalSchemaError(f"{split}: column 'caption' must be Value('string'), got {features['caption']!r}")
    if "objects" in features:
        validate_objects_feature(features["objects"], names, split)
    return names


def _list_column(dataset: Dataset, column: str) -> tuple[np.ndarray, np.ndarray]:
    """Row index and class id of every entry of a list column, read from Arrow without decoding images.

    Returns `(rows [E], class_ids [E])` for the E list entries of the dataset. A `select`/`shuffle` indices mapping
    is applied to the list offsets in numpy, so the cost stays linear in the selected rows.
    """
    chunked = dataset.data.table.column(column)
    array = chunked.combine_chunks() if chunked.num_chunks != 1 else chunked.chunk(0)
    if array.null_count:
        array = pc.fill_null(array, pa.scalar([], type=array.type))
    offsets = array.offsets.to_numpy(zero_copy_only=False).astype(np.int64, copy=False)
    values = array.values.to_numpy(zero_copy_only=False).astype(np.int64, copy=False)
    indices = getattr(dataset, "_indices", None)
    rows_index = (
        indices.column(0).to_numpy().astype(np.int64, copy=False)
        if indices is not None
        else np.arange(len(offsets) - 1)
    )
    starts = offsets[rows_index]
    lengths = offsets[rows_index + 1] - starts
    rows = np.repeat(np.arange(len(rows_index), dtype=np.int64), lengths)
    # Position of every selected entry in `values`: its row's start + its rank inside the row.
    first_entry_of_row = np.repeat(np.cumsum(lengths) - lengths, lengths)
    positions = np.repeat(starts, lengths) + np.arange(len(rows), dtype=np.int64) - first_entry_of_row
    return rows, values[positions]


def label_matrix(split_dataset: Dataset, label_names: Sequence[str]) -> np.ndarray:
    """`int8 [N, C]` label matrix of a canonical split over `label_names` (any subset/order of the dataset's labels).

    1 = positive, -1 = negative, 0 = unannotated. Without a `negative_labels` column the split is fully annotated, so
    every non-positive entry is -1. Built from the Arrow list columns (no image decoding), so it is fast on large sets.
    """
    names = dataset_label_names(split_dataset)
    index_of = {name: index for index, name in enumerate(names)}
    label_names = list(label_names)
    unknown = [name for name in label_names if name not in index_of]
    if unknown:
        raise CanonicalSchemaError(
            f"label(s) not in the dataset's label list: {unknown[:20]}" + (" ..." if len(unknown) > 20 else "")
        )
    # column_of[dataset class id] = output column, or -1 when the label is not requested.
    column_of = np.full(len(names), -1, dtype=np.int64)
    column_of[[index_of[name] for name in label_names]] = np.arange(len(label_names))

    has_negatives = "negative_labels" in split_dataset.features
    fill = LABEL_UNANNOTATED if has_negatives else LABEL_NEGATIVE
    matrix = np.full((len(split_dataset), len(label_names)), fill, dtype=np.int8)
    if has_negatives:
        rows, class_ids = _list_column(split_dataset, "negative_labels")
        columns = column_of[class_ids]
        keep = columns >= 0
        matrix[rows[keep], columns[keep]] = LABEL_NEGATIVE
    rows, class_ids = _list_column(split_dataset, "labels")
    columns = column_of[class_ids]
    keep = columns >= 0
    matrix[rows[keep], columns[keep]] = LABEL_POSITIVE  # a positive wins over a (contradictory) negative
    return matrix


def label_counts(split_dataset: Dataset) -> tuple[np.ndarray, np.ndarray]:
    """Per-label positive and explicit-negative counts `(positives [C], negatives [C])` in ClassLabel order."""
    num_labels = len(dataset_label_names(split_dataset))
    _, positive_ids = _list_column(split_dataset, "labels")
    positives = np.bincount(positive_ids, minlength=num_labels)
    negatives = np.zeros(num_labels, dtype=np.int64)
    if "negative_labels" in split_dataset.features:
        _, negative_ids = _list_column(split_dataset, "negative_labels")
        negatives = np.bincount(negative_ids, minlength=num_labels)
    return positives, negatives
