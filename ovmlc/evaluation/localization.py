"""Run a box-producing model (`produces_boxes`, e.g. ViLD) over a canonical split with an `objects` column and
compute the localisation metrics of `ovmlc.evaluation.box_metrics` (box AP@0.5 per label, pointing accuracy; seen /
unseen / all), for `ovmlc evaluate` and the trainer's test report. Scoring goes through `ovmlc.core.scoring.Scorer`
(image side once per batch, float32 head); the unseen-alone rule is `scores_unseen_labels_alone`."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..core.scoring import Scorer, scores_unseen_labels_alone
from .box_metrics import LocalizationAccumulator


def supports_localization(model: Any, split: Any) -> bool:
    """A model that returns regions (`produces_boxes`) and a split with boxes."""
    from ..data.objects import has_objects

    return bool(getattr(model, "produces_boxes", False)) and has_objects(split)


def evaluate_localization(
    model: Any,
    split: Any,
    label_names: Sequence[str],
    unseen: Sequence[bool] | np.ndarray,
    batch_size: int = 32,
    limit: int | None = None,
    iou_threshold: float = 0.5,
    progress: bool = True,
    scored_alone: bool | None = None,
    image_dtype: Any = None,
) -> dict[str, Any]:
    """Localisation metrics of `model` on the first `limit` images of `split` over `label_names`.

    Detections are the model's regions after per-label NMS (`config.nms_iou`, at most `config.max_detections` per
    image, no score threshold), ranked by their log-odds; the pointing box of a label is its best region. Boxes are
    compared in the pixels of the stored images. The unseen labels are scored on their own when the ZSL views of the
    tags are (`scored_alone`, default: `ovmlc.core.scoring.scores_unseen_labels_alone(model)`), else within all
    labels. `image_dtype` runs the image side under autocast (the Scorer's rule).
    """
    import torch
    from tqdm.auto import tqdm

    from ..core.images import load_image
    from ..core.regions import per_label_nms, processor_geometry
    from ..data.objects import object_rows

    label_names = list(label_names)
    unseen = np.asarray(unseen, dtype=bool)
    if scored_alone is None:
        scored_alone = scores_unseen_labels_alone(model) and bool(unseen.any())
    count = len(split) if limit is None else min(int(limit), len(split))
    split = split.select(range(count)) if count < len(split) else split
    objects = object_rows(split, label_names)
    accumulator = LocalizationAccumulator(label_names)
    config = model.config
    was_training = model.training
    model.eval()
    unseen_columns = np.flatnonzero(unseen)
    scorer = Scorer(model, batch_size=batch_size, image_dtype=image_dtype)
    try:
        with torch.no_grad():
            all_embeds = scorer.label_embeddings(label_names)  # [C, D]
            unseen_embeds = scorer.label_embeddings([label_names[i] for i in unseen_columns]) if scored_alone else None
            for start in tqdm(
                range(0, count, batch_size), desc="localising", unit="batch", disable=not progress, leave=False
            ):
                rows = split[start : start + batch_size]["image"]
                images = [load_image(image) for image in rows]
                features = {"image_features": scorer.image_features(model.preprocess(images))}  # once for both sets
                outputs = scorer.score_batch(features, all_embeds).outputs
                log_odds = outputs.region_log_odds.float()  # [B, R, C]
                if unseen_embeds is not None:
                    alone = scorer.score_batch(features, unseen_embeds).outputs.region_log_odds.float()
                    log_odds[..., torch.as_tensor(unseen_columns)] = alone
                log_odds = log_odds.masked_fill(~outputs.region_valid[..., None], -math.inf)
                for offset, image in enumerate(images):
                    geometry = processor_geometry(model.processor, *image.size)
                    boxes = outputs.region_boxes[offset].float()  # [R, 4] normalised
                    pixels = geometry.normalized_to_pixels(boxes.cpu()).numpy()  # [R, 4]
                    kept = per_label_nms(boxes, log_odds[offset], config.nms_iou, config.max_detections)
                    detections = [(label, score, pixels[region]) for label, region, score in kept]
                    top_boxes = pixels[log_odds[offset].argmax(dim=0).cpu().numpy()]  # [C, 4]
                    columns, xywh = objects[start + offset]
                    truth: dict[int, list] = {}
                    for column, box in zip(columns.tolist(), xywh):
                        truth.setdefault(column, []).append([box[0], box[1], box[0] + box[2], box[1] + box[3]])
                    accumulator.add_image(
                        detections, top_boxes, {label: np.asarray(value) for label, value in truth.items()}
                    )
    finally:
        model.train(was_training)
    report = accumulator.compute(unseen, iou_threshold)
    report["unseen_scored_alone"] = bool(scored_alone)
    return report


__all__ = ["evaluate_localization", "supports_localization"]
