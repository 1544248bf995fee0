"""Localisation metrics for models that say where a label is: box AP at an IoU threshold and pointing accuracy.

Definitions (boxes are `(x0, y0, x1, y1)` in pixels of the evaluated images):

* **Box AP@t** of a label (PASCAL VOC 2010+ style): the label's detections over all images are ranked by score
  (stable: ties keep their input order); a detection is a true positive when its IoU with the best-overlapping
  ground-truth box of that label in its image is `>= t` and that box is not matched yet, otherwise a false positive.
  AP is the area under the precision-recall curve with the precision made monotone (each precision replaced by the
  highest precision at any higher recall), summed over the recall steps. Recall counts every ground-truth box of the
  label. A label without a ground-truth box in the evaluated images has no AP (None) and is left out of the means.
* **Pointing accuracy** of a label: over the (image, label) pairs where the image has a box of the label, the share
  whose top-scoring region centre falls inside (borders included) one of those boxes. Means over labels are macro
  averages, like mAP.

Only numpy: scores and boxes come from any model (`ovmlc.evaluation.localization` runs ViLD over a dataset).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np


def box_iou_numpy(boxes_a: np.ndarray, boxes_b: np.ndarray) -> np.ndarray:
    """Pairwise IoU `[N, M]` of `[N, 4]` and `[M, 4]` xyxy boxes (0 where the union is empty)."""
    boxes_a = np.asarray(boxes_a, dtype=np.float64).reshape(-1, 4)
    boxes_b = np.asarray(boxes_b, dtype=np.float64).reshape(-1, 4)
    top_left = np.maximum(boxes_a[:, None, :2], boxes_b[None, :, :2])
    bottom_right = np.minimum(boxes_a[:, None, 2:], boxes_b[None, :, 2:])
    intersection = np.clip(bottom_right - top_left, 0, None).prod(axis=-1)
    area_a = np.clip(boxes_a[:, 2:] - boxes_a[:, :2], 0, None).prod(axis=-1)
    area_b = np.clip(boxes_b[:, 2:] - boxes_b[:, :2], 0, None).prod(axis=-1)
    union = area_a[:, None] + area_b[None, :] - intersection
    return np.divide(intersection, union, out=np.zeros_like(intersection), where=union > 0)


def average_precision_from_matches(is_true_positive: np.ndarray, num_ground_truth: int) -> float | None:
    """All-point interpolated AP of ranked detections (`is_true_positive [M]`, best first) against
    `num_ground_truth` boxes; None without ground truth."""
    if num_ground_truth <= 0:
        return None
    hits = np.asarray(is_true_positive, dtype=np.float64)
    if hits.size == 0:
        return 0.0
    true_positives = np.cumsum(hits)
    precision = true_positives / np.arange(1, len(hits) + 1)
    recall = true_positives / num_ground_truth
    # Monotone precision envelope, then sum precision x recall step.
    envelope = np.maximum.accumulate(precision[::-1])[::-1]
    recall_steps = np.diff(np.concatenate([[0.0], recall]))
    return float((envelope * recall_steps).sum())


def box_average_precision(
    detection_images: np.ndarray,
    detection_scores: np.ndarray,
    detection_boxes: np.ndarray,
    ground_truth: Mapping[int, np.ndarray],
    iou_threshold: float = 0.5,
) -> float | None:
    """Box AP of one label (see the module docstring).

    detection_images `[M]` (image index of each detection), detection_scores `[M]`, detection_boxes `[M, 4]`;
    ground_truth: image index → that label's boxes `[K, 4]` in that image.
    """
    truth = {image: np.asarray(boxes, dtype=np.float64).reshape(-1, 4) for image, boxes in ground_truth.items()}
    num_ground_truth = int(sum(len(boxes) for boxes in truth.values()))
    order = np.argsort(-np.asarray(detection_scores, dtype=np.float64), kind="stable")
    matched = {image: np.zeros(len(boxes), dtype=bool) for image, boxes in truth.items()}
    hits = np.zeros(len(order), dtype=bool)
    for rank, index in enumerate(order):
        image = int(detection_images[index])
        boxes = truth.get(image)
        if boxes is None or len(boxes) == 0:
            continue
        overlaps = box_iou_numpy(np.asarray(detection_boxes[index])[None], boxes)[0]
        best = int(overlaps.argmax())
        if overlaps[best] >= iou_threshold and not matched[image][best]:
            matched[image][best] = True
            hits[rank] = True
    return average_precision_from_matches(hits, num_ground_truth)


def point_in_boxes(point: Sequence[float], boxes: np.ndarray) -> bool:
    """Whether `(x, y)` lies inside (borders included) any of `boxes [K, 4]`."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    x, y = float(point[0]), float(point[1])
    return bool(((boxes[:, 0] <= x) & (x <= boxes[:, 2]) & (boxes[:, 1] <= y) & (y <= boxes[:, 3])).any())


@dataclass
class LocalizationAccumulator:
    """Collects, image by image, detections, top-region boxes and ground-truth boxes over `label_names`, then
    computes the metrics."""

    label_names: list[str]
    detections: list[list[tuple[int, float, np.ndarray]]] = field(default_factory=list)  # per label: (image, s, box)
    ground_truth: list[dict[int, np.ndarray]] = field(default_factory=list)  # per label: image -> boxes [K, 4]
    pointing_hits: np.ndarray | None = None  # [C] pairs whose top region points into a box
    pointing_pairs: np.ndarray | None = None  # [C] (image, label) pairs with a box
    num_images: int = 0

    def __post_init__(self) -> None:
        count = len(self.label_names)
        self.detections = [[] for _ in range(count)]
        self.ground_truth = [{} for _ in range(count)]
        self.pointing_hits = np.zeros(count, dtype=np.int64)
        self.pointing_pairs = np.zeros(count, dtype=np.int64)

    def add_image(
        self,
        detections: Sequence[tuple[int, float, Sequence[float]]],
        top_boxes: np.ndarray,
        ground_truth: Mapping[int, np.ndarray],
    ) -> None:
        """One image: `detections` `[(label column, score, box)]`, `top_boxes [C, 4]` the best region of each label,
        `ground_truth` label column → boxes `[K, 4]`."""
        image = self.num_images
        self.num_images += 1
        for label, score, box in detections:
            self.detections[label].append((image, float(score), np.asarray(box, dtype=np.float64)))
        for label, boxes in ground_truth.items():
            boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
            if not len(boxes):
                continue
            self.ground_truth[label][image] = boxes
            top = np.asarray(top_boxes[label], dtype=np.float64)
            centre = ((top[0] + top[2]) / 2, (top[1] + top[3]) / 2)
            self.pointing_pairs[label] += 1
            self.pointing_hits[label] += point_in_boxes(centre, boxes)

    def compute(self, unseen: Sequence[bool] | np.ndarray | None = None, iou_threshold: float = 0.5) -> dict[str, Any]:
        """`{"box_ap": {"all", "seen", "unseen"}, "pointing": {...}, "per_label": {name: {...}}, ...}`; means are
        over labels with at least one ground-truth box (None when a group has none)."""
        unseen = np.zeros(len(self.label_names), bool) if unseen is None else np.asarray(unseen, dtype=bool)
        per_label: dict[str, dict[str, Any]] = {}
        ap = np.full(len(self.label_names), np.nan)
        pointing = np.full(len(self.label_names), np.nan)
        for column, name in enumerate(self.label_names):
            entries = self.detections[column]
            images = np.array([entry[0] for entry in entries], dtype=np.int64)
            scores = np.array([entry[1] for entry in entries], dtype=np.float64)
            boxes = np.array([entry[2] for entry in entries], dtype=np.float64).reshape(-1, 4)
            value = box_average_precision(images, scores, boxes, self.ground_truth[column], iou_threshold)
            num_boxes = int(sum(len(b) for b in self.ground_truth[column].values()))
            pairs = int(self.pointing_pairs[column])
            if value is not None:
                ap[column] = value
            if pairs:
                pointing[column] = self.pointing_hits[column] / pairs
            per_label[name] = {
                "box_ap": value,
                "pointing": None if not pairs else float(pointing[column]),
                "num_boxes": num_boxes,
                "num_images": pairs,
                "unseen": bool(unseen[column]),
            }

        def mean(values: np.ndarray, mask: np.ndarray) -> float | None:
            selected = values[mask & ~np.isnan(values)]
            return float(selected.mean()) if selected.size else None

        groups = {"all": np.ones_like(unseen), "seen": ~unseen, "unseen": unseen}
        return {
            "iou_threshold": iou_threshold,
            "num_images": self.num_images,
            "box_ap": {group: mean(ap, mask) for group, mask in groups.items()},
            "pointing": {group: mean(pointing, mask) for group, mask in groups.items()},
            "labels_with_boxes": {group: int((mask & ~np.isnan(ap)).sum()) for group, mask in groups.items()},
            "per_label": per_label,
        }


__all__ = [
    "LocalizationAccumulator",
    "average_precision_from_matches",
    "box_average_precision",
    "box_iou_numpy",
    "point_in_boxes",
]
