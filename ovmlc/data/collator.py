"""`MultiLabelCollator`: canonical rows -> `pixel_values`, multi-hot `labels` and `label_mask` for a label set.

    transform = load_transform("clip-train")
    collator = MultiLabelCollator.from_dataset(dataset["train"], label_names=seen, transform=transform)
    loader = DataLoader(dataset["train"], batch_size=32, collate_fn=collator, shuffle=True)
    batch = next(iter(loader))  # pixel_values [B, 3, H, W], labels [B, C], label_mask [B, C]

The columns are exactly `label_names` (e.g. the seen labels for zero-shot training: unseen columns are absent).
`label_mask` is 1 where the entry is annotated: everywhere for fully annotated rows, and only for the labels in
`labels` or `negative_labels` when a row carries explicit negatives (partial annotation). Losses must ignore 0 entries.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch

from ovmlc.core.images import load_image
from ovmlc.data.schema import dataset_label_names


class MultiLabelCollator:
    """Collate canonical dataset rows for one training label set.

    Args:
        label_names: the output columns, in order (a subset of the dataset's labels).
        dataset_label_names: the dataset's ClassLabel names (how the integer ids in `labels` are read); rows may also
            carry label names as strings.
        transform: an `ovmlc.data.transforms.ImageTransform`, any callable `PIL -> array/tensor [3, H, W]`, or a
            transformers image processor (called on the whole batch). Default: the `clip-eval` preset.
        return_image_ids: also return `image_ids` (list of str), e.g. to key a feature cache.
    """

    def __init__(
        self,
        label_names: Sequence[str],
        dataset_label_names: Sequence[str] | None = None,
        transform: Callable[..., Any] | None = None,
        *,
        image_column: str = "image",
        return_image_ids: bool = False,
    ):
        self.label_names = list(label_names)
        if not self.label_names:
            raise ValueError("MultiLabelCollator needs at least one label name")
        self.column_of_name = {name: column for column, name in enumerate(self.label_names)}
        if len(self.column_of_name) != len(self.label_names):
            raise ValueError("MultiLabelCollator: label_names must be unique")
        self.dataset_label_names = list(dataset_label_names) if dataset_label_names is not None else None
        self.column_of_id: np.ndarray | None = None
        if self.dataset_label_names is not None:
            unknown = [name for name in self.label_names if name not in set(self.dataset_label_names)]
            if unknown:
                raise ValueError(f"MultiLabelCollator: label(s) not in the dataset's labels: {unknown[:20]}")
            # column_of_id[dataset class id] = output column or -1 (label not trained on, e.g. unseen).
            self.column_of_id = np.array([self.column_of_name.get(name, -1) for name in self.dataset_label_names])
        if transform is None:
            from ovmlc.data.transforms import load_transform

            transform = load_transform("clip-eval")
        self.transform = transform
        self.image_column = image_column
        self.return_image_ids = return_image_ids

    @classmethod
    def from_dataset(
        cls,
        dataset: Any,
        label_names: Sequence[str] | None = None,
        transform: Callable[..., Any] | None = None,
        **kwargs: Any,
    ) -> MultiLabelCollator:
        """A collator reading a canonical split; `label_names` defaults to all of its labels."""
        names = dataset_label_names(dataset)
        return cls(label_names if label_names is not None else names, names, transform, **kwargs)

    def _columns(self, values: Sequence[Any] | None) -> np.ndarray:
        """Output columns of a row's label ids/names, labels outside the training set dropped."""
        if not values:
            return np.zeros(0, dtype=np.int64)
        if isinstance(values[0], str):
            columns = [self.column_of_name.get(name, -1) for name in values]
        else:
            if self.column_of_id is None:
                raise ValueError("rows carry integer label ids: pass dataset_label_names (or use from_dataset)")
            columns = self.column_of_id[np.asarray(values, dtype=np.int64)].tolist()
        columns = np.asarray(columns, dtype=np.int64)
        return columns[columns >= 0]

    def _pixel_values(self, images: list[Any]) -> torch.Tensor:
        if hasattr(self.transform, "preprocess"):  # a transformers image processor: one call for the batch
            return self.transform(images=images, return_tensors="pt")["pixel_values"].float()
        arrays = [self.transform(image) for image in images]
        return torch.stack([torch.as_tensor(np.asarray(array), dtype=torch.float32) for array in arrays])

    def __call__(self, rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        batch_size, num_labels = len(rows), len(self.label_names)
        labels = np.zeros((batch_size, num_labels), dtype=np.float32)  # [B, C] multi-hot positives
        label_mask = np.ones((batch_size, num_labels), dtype=np.float32)  # [B, C] 1 = annotated
        images = []
        for index, row in enumerate(rows):
            name = str(row.get("image_id", f"row {index}"))
            images.append(load_image(row[self.image_column], name=name))
            positives = self._columns(row.get("labels"))
            labels[index, positives] = 1.0
            if "negative_labels" in row:  # explicit negatives: everything else is unannotated
                label_mask[index] = 0.0
                label_mask[index, positives] = 1.0
                label_mask[index, self._columns(row.get("negative_labels"))] = 1.0
        batch: dict[str, Any] = {
            "pixel_values": self._pixel_values(images),  # [B, 3, H, W]
            "labels": torch.from_numpy(labels),
            "label_mask": torch.from_numpy(label_mask),
        }
        if self.return_image_ids:
            batch["image_ids"] = [str(row.get("image_id", "")) for row in rows]
        return batch
