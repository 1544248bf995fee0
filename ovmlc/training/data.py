"""Torch datasets the trainer feeds to its DataLoaders: canonical split rows (or cached features) + label targets."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch


def object_items(objects: Any, index: int) -> dict[str, torch.Tensor]:
    """`object_boxes [K, 4]` / `object_labels [K]` of one row of an `ovmlc.data.objects.ObjectTargets` (or nothing)."""
    if objects is None:
        return {}
    return {
        "object_boxes": torch.from_numpy(objects.boxes[index]),
        "object_labels": torch.from_numpy(objects.labels[index]),
    }


def label_targets(label_rows: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """`int8 [N, C]` in {1, 0, -1} → `labels [N, C]` (1 = positive) and `label_mask [N, C]` (1 = annotated), float32."""
    rows = torch.from_numpy(np.ascontiguousarray(label_rows))
    return (rows == 1).float(), (rows != 0).float()


class LabeledImageDataset(torch.utils.data.Dataset):
    """Rows of a canonical split as `{"pixel_values": [3, H, W], "labels": [C], "label_mask": [C], "index": int}`.

    `transform` (an `ovmlc.data.ImageTransform`) maps an image to a float32 `[3, H, W]` array. With `augment_seed`,
    its random draws come from a generator seeded by `(augment_seed, epoch, index)`: augmentation is then a function
    of the item and epoch alone, independent of worker count, batch order and of where a resumed run restarted (call
    `set_epoch` before each epoch). With `objects` (`ObjectTargets`, for methods that train on boxes), items also carry
    `object_boxes [K, 4]` and `object_labels [K]`.
    """

    def __init__(
        self,
        split,
        transform: Callable[[Any], torch.Tensor],
        label_rows: np.ndarray | None = None,
        augment_seed: int | None = None,
        objects: Any = None,
    ):
        self.images = split.select_columns(["image"])  # decode only the image column per row
        self.transform = transform
        self.labels, self.label_mask = label_targets(label_rows) if label_rows is not None else (None, None)
        if self.labels is not None and len(self.labels) != len(self.images):
            raise ValueError(f"{len(self.labels)} label rows for {len(self.images)} images")
        self.augment_seed = augment_seed
        self.objects = objects
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> dict[str, Any]:
        image = self.images[index]["image"]
        if self.augment_seed is None:
            pixel_values = self.transform(image)
        else:
            pixel_values = self.transform(image, rng=np.random.default_rng([self.augment_seed, self.epoch, index]))
        item = {"pixel_values": torch.as_tensor(pixel_values), "index": index, **object_items(self.objects, index)}
        if self.labels is not None:
            item["labels"] = self.labels[index]
            item["label_mask"] = self.label_mask[index]
        return item


class LabeledFeatureDataset(torch.utils.data.Dataset):
    """Rows of a feature cache (`CachedFeatures`) with the same label targets as `LabeledImageDataset`."""

    def __init__(self, features: torch.utils.data.Dataset, label_rows: np.ndarray | None = None, objects: Any = None):
        self.features = features
        self.objects = objects
        self.labels, self.label_mask = label_targets(label_rows) if label_rows is not None else (None, None)
        if self.labels is not None and len(self.labels) != len(features):
            raise ValueError(f"{len(self.labels)} label rows for {len(features)} cached feature rows")

    def set_epoch(self, epoch: int) -> None:
        """Cached features are never augmented: nothing depends on the epoch."""

    def __len__(self) -> int:
        return len(self.features)

    def __getitem__(self, index: int) -> dict[str, Any]:
        item = {**self.features[index], **object_items(self.objects, index)}
        if self.labels is not None:
            item["labels"] = self.labels[index]
            item["label_mask"] = self.label_mask[index]
        return item


def model_inputs(batch: dict[str, Any]) -> dict[str, Any]:
    """The image part of a batch as forward() kwargs: cached `image_features` or `pixel_values`, plus the object box
    targets when the batch has them."""
    inputs = {key: batch[key] for key in ("object_boxes", "object_labels") if key in batch}
    if "image_features" in batch:
        return {"image_features": batch["image_features"], **inputs}
    return {"pixel_values": batch["pixel_values"], **inputs}
