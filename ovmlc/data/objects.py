"""The optional `objects` column of canonical datasets: labelled boxes, for localisation (ViLD) and box metrics.

Feature: `objects: List({"label": ClassLabel(names=ALL_LABELS), "bbox": List(Value("float32"), length=4)})`, one
entry per (box, label) of an image, `bbox = [x, y, width, height]` in pixels of the stored image (COCO convention,
origin at the top-left corner). An object with several labels (a red star: `star` and `red`) appears once per label
with the same box. A box's label is always a positive label of its image (the conversion driver drops the others, so
`train`/`validation` never carry boxes of unseen labels). Datasets without the column stay valid: it is optional.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from datasets import Dataset, Image

# The column's feature and its validation belong to the canonical schema (one direction of import).
from ovmlc.data.schema import (
    OBJECTS_COLUMN,
    CanonicalSchemaError,
    dataset_label_names,
    objects_feature,
    validate_objects_feature,
)


def has_objects(split: Dataset) -> bool:
    return OBJECTS_COLUMN in split.features


def object_rows(split: Dataset, label_names: Sequence[str]) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per row of a split: `(columns [K] int64, boxes [K, 4] float32 XYWH pixels)` of its objects whose label is in
    `label_names` (columns index `label_names`); rows without such objects get empty arrays."""
    if not has_objects(split):
        raise CanonicalSchemaError(f"the split has no '{OBJECTS_COLUMN}' column (columns: {list(split.features)})")
    dataset_names = dataset_label_names(split)
    index_of = {name: index for index, name in enumerate(label_names)}
    unknown = [name for name in label_names if name not in set(dataset_names)]
    if unknown:
        raise CanonicalSchemaError(f"label(s) not in the dataset's label list: {unknown[:20]}")
    column_of = np.array([index_of.get(name, -1) for name in dataset_names], dtype=np.int64)
    rows = []
    for objects in split.select_columns([OBJECTS_COLUMN])[OBJECTS_COLUMN]:
        objects = objects or []
        ids = np.array([entry["label"] for entry in objects], dtype=np.int64)
        boxes = np.array([entry["bbox"] for entry in objects], dtype=np.float32).reshape(-1, 4)
        columns = column_of[ids] if len(ids) else ids
        keep = columns >= 0
        rows.append((columns[keep], boxes[keep]))
    return rows


def image_sizes(split: Dataset) -> np.ndarray:
    """`[N, 2]` (width, height) of a split's images, read from the encoded headers (no decoding)."""
    from PIL import Image as PILImage

    undecoded = split.select_columns(["image"]).cast_column("image", Image(decode=False))
    sizes = np.zeros((len(undecoded), 2), dtype=np.int64)
    for row, storage in enumerate(undecoded["image"]):
        source = io.BytesIO(storage["bytes"]) if storage.get("bytes") else storage["path"]
        with PILImage.open(source) as opened:
            sizes[row] = opened.size
    return sizes


@dataclass
class ObjectTargets:
    """Padded per-image box targets in the model input frame.

    boxes: `[N, K, 4]` float32 normalised `(x0, y0, x1, y1)` (after the transform's resize/crop, clipped to [0, 1]);
    labels: `[N, K]` int64 label columns, -1 = padding (K = the most objects of an image, at least 1).
    """

    boxes: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)


def object_targets(
    split: Dataset, label_names: Sequence[str], transform_steps: Sequence[Mapping[str, Any]]
) -> ObjectTargets:
    """Box targets of a split over `label_names`, mapped through a deterministic transform's geometric steps (e.g.
    the trainer's evaluation transform: `transform.to_config()["steps"]`). Boxes left with no area inside the model
    input (cropped away) are dropped."""
    import torch

    from ovmlc.core.regions import steps_geometry

    rows = object_rows(split, label_names)
    sizes = image_sizes(split)
    longest = max(1, max((len(columns) for columns, _ in rows), default=0))
    boxes = np.zeros((len(rows), longest, 4), dtype=np.float32)
    labels = np.full((len(rows), longest), -1, dtype=np.int64)
    for row, ((columns, xywh), (width, height)) in enumerate(zip(rows, sizes)):
        if not len(columns):
            continue
        geometry = steps_geometry(transform_steps, int(width), int(height))
        xyxy = torch.from_numpy(np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1))
        normalised = geometry.pixels_to_normalized(xyxy).clamp(0.0, 1.0).numpy()
        keep = (normalised[:, 2] > normalised[:, 0]) & (normalised[:, 3] > normalised[:, 1])
        count = int(keep.sum())
        boxes[row, :count] = normalised[keep]
        labels[row, :count] = columns[keep]
    return ObjectTargets(boxes, labels)


__all__ = [
    "OBJECTS_COLUMN",
    "ObjectTargets",
    "has_objects",
    "image_sizes",
    "object_rows",
    "object_targets",
    "objects_feature",
    "validate_objects_feature",
]
