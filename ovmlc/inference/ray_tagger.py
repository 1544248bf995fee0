"""`OVMLCTagger`: a callable class for Ray Data, for images that live in a cluster (`pip install 'ovmlc[ray]'`).

    import ray
    from ovmlc.inference.ray_tagger import OVMLCTagger

    tags = ray.data.read_images("s3://bucket/photos/", include_paths=True, mode="RGB").map_batches(
        OVMLCTagger,
        fn_constructor_kwargs={"model": "org/qks-nuswide", "labels": ["cat", "dog"], "top_k": 5},
        batch_size=64,
        compute=ray.data.ActorPoolStrategy(size=4),  # actors, each holding one model
        num_gpus=1,  # per actor; drop on CPU clusters
    )
    tags.write_parquet("s3://bucket/tags/")

Each actor loads the model once and encodes the vocabulary once; a batch's images (Ray decodes them) are resized and
normalised by the model's processor and scored through the same function as `ovmlc predict`. Output columns: `path`
(when read with `include_paths=True`), `labels` and `scores` (kept labels, highest first), and `all_scores` with
`all_scores=True`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from ..core.images import load_image
from ..core.outputs import rank_labels
from ..core.scoring import Scorer, parse_dtype, resolve_device


class OVMLCTagger:
    """`batch {"image": [B] HWC arrays, "path"?: [B]}` → `{"path"?, "labels", "scores", "all_scores"?}` (numpy)."""

    def __init__(
        self,
        model: str | Any,
        labels: Sequence[str],
        top_k: int | None = 5,
        threshold: float | str | Mapping[str, Any] | None = None,
        device: str = "auto",
        dtype: str = "float32",
        all_scores: bool = False,
    ):
        from .factory import load_model

        self.device = resolve_device(device)
        self.model = load_model(model, device=self.device) if isinstance(model, str) else model.to(self.device)
        self.model.eval()
        self.scorer = Scorer(self.model, image_dtype=parse_dtype(dtype))
        vocabulary = self.model.vocabulary(list(labels))
        self.names = list(vocabulary.names)
        self.thresholds = self.model.resolve_thresholds(self.names, threshold)
        self.top_k = top_k if top_k is not None or threshold is not None else 5
        self.all_scores = all_scores
        with torch.no_grad():
            self.label_embeds = self.model.encode_labels(vocabulary).float()  # [C, D]

    def __call__(self, batch: Mapping[str, Any]) -> dict[str, np.ndarray]:
        images = [load_image(np.asarray(image), name=f"image #{index}") for index, image in enumerate(batch["image"])]
        pixel_values = self.model.processor(images=images, return_tensors="pt")["pixel_values"]  # [B, 3, H, W]
        scores = self.scorer.score_batch(pixel_values, self.label_embeds).scores.cpu().numpy()  # [B, C]
        ranked = rank_labels(scores, self.names, top_k=self.top_k, thresholds=self.thresholds)
        output: dict[str, np.ndarray] = {}
        if "path" in batch:
            output["path"] = np.asarray(batch["path"])
        output["labels"] = _object_array([[label for label, _ in row] for row in ranked])
        output["scores"] = _object_array([np.asarray([score for _, score in row], dtype=np.float32) for row in ranked])
        if self.all_scores:
            output["all_scores"] = scores
        return output


def _object_array(rows: list[Any]) -> np.ndarray:
    """A `[B]` array of variable-length rows (Ray stores it as a list column)."""
    array = np.empty(len(rows), dtype=object)
    array[:] = [list(row) if not isinstance(row, np.ndarray) else row for row in rows]
    return array
