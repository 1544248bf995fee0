"""The `open-vocabulary-multi-label-classification` pipeline task.

Unlike transformers' `zero-shot-image-classification` (softmax over labels, every label re-encoded for every
image), this task scores labels independently (sigmoid), supports `top_k` / `threshold`, batches images and
encodes each vocabulary once per call (later calls find it in the model's label cache). Scoring goes through
`ovmlc.core.scoring.Scorer` (float32 head, labels ranked by logit).

This file is also copied next to saved models (`custom_pipelines` in config.json, written by the base model's
`save_pretrained`), so it imports only transformers, torch and the installed `ovmlc` package's core.
"""

from __future__ import annotations

import torch
from transformers import Pipeline

from ovmlc.core.images import load_image
from ovmlc.core.outputs import rank_labels
from ovmlc.core.regions import processor_geometry
from ovmlc.core.scoring import Scorer


def split_label_text(text: str) -> list[str]:
    """Comma- or newline-separated labels → list (empty pieces dropped)."""
    return [piece.strip() for piece in text.replace("\n", ",").split(",") if piece.strip()]


class OpenVocabularyMultiLabelPipeline(Pipeline):
    """`pipeline("open-vocabulary-multi-label-classification", model=...)(images, candidate_labels=[...],
    top_k=None, threshold=None, batch_size=1)` → per image `[{"label", "score"}, ...]`, highest score first.

    `return_boxes=True` (models that localise labels, e.g. ViLD) adds `"box": (x0, y0, x1, y1)` to each entry: the
    region that gave the label its score, in the input image's pixels."""

    # ovmlc models carry their tokenizer and image processor (loaded with the weights), so the factory need not.
    _load_processor = False
    _load_image_processor = False
    _load_feature_extractor = False
    _load_tokenizer = False

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.image_processor is not None:
            self.model.image_processor = self.image_processor
        if self.tokenizer is not None:
            self.model.tokenizer = self.tokenizer
        self.image_processor = self.model.processor

    @property
    def scorer(self) -> Scorer:
        """Scores batches with the model (made on first use: `Pipeline.__init__` may already sanitize labels)."""
        if getattr(self, "_scorer", None) is None or self._scorer.model is not self.model:
            self._scorer = Scorer(self.model)
        return self._scorer

    def _sanitize_parameters(self, candidate_labels=None, top_k=None, threshold=None, return_boxes=None, **kwargs):
        forward_params, postprocess_params = {}, {}
        if return_boxes:
            if not getattr(self.model, "produces_boxes", False):
                raise ValueError(
                    f"return_boxes=True needs a model that localises labels (e.g. ViLD); {type(self.model).__name__} "
                    "only scores whole images"
                )
            forward_params["return_boxes"] = True
            postprocess_params["return_boxes"] = True
        if candidate_labels is not None:
            if isinstance(candidate_labels, str):
                candidate_labels = split_label_text(candidate_labels)
            vocabulary = self.model.vocabulary(candidate_labels)  # validates names early, with a clear error
            forward_params["label_embeds"] = self.scorer.label_embeddings(vocabulary)  # [C, D], once per call
            postprocess_params["names"] = vocabulary.names
            postprocess_params["thresholds"] = self.model.resolve_thresholds(vocabulary.names, threshold)
        postprocess_params["top_k"] = top_k
        return {}, forward_params, postprocess_params

    def preprocess(self, image):
        image = load_image(image)
        pixel_values = self.image_processor(images=[image], return_tensors="pt")["pixel_values"]
        return {
            "pixel_values": pixel_values.to(self.dtype) if self.dtype is not None else pixel_values,
            "image_size": torch.tensor([image.size]),  # [1, 2] (width, height), for boxes in input pixels
        }

    def _forward(self, model_inputs, label_embeds=None, return_boxes=False):
        if label_embeds is None:
            raise ValueError("candidate_labels is required, e.g. pipe(image, candidate_labels=['cat', 'dog'])")
        scored = self.scorer.score_batch(model_inputs["pixel_values"], label_embeds)
        result = {"scores": scored.scores, "logits": scored.logits}  # [b, C] float32
        if return_boxes:
            result["label_boxes"] = scored.outputs.label_boxes.float()  # [b, C, 4] normalised model-input boxes
            result["image_size"] = model_inputs["image_size"]
        return result

    def postprocess(self, model_outputs, names=None, thresholds=None, top_k=None, return_boxes=False):
        scores = model_outputs["scores"].reshape(-1, len(names))[:1].cpu().numpy()  # [1, C]
        logits = model_outputs["logits"].reshape(-1, len(names))[:1].cpu().numpy()  # [1, C]
        ranked = rank_labels(scores, names, top_k=top_k, thresholds=thresholds, order_by=logits)[0]
        if not return_boxes:
            return [{"label": label, "score": score} for label, score in ranked]
        width, height = (int(v) for v in model_outputs["image_size"].reshape(-1, 2)[0].tolist())
        geometry = processor_geometry(self.image_processor, width, height)
        boxes = geometry.normalized_to_pixels(model_outputs["label_boxes"].reshape(-1, len(names), 4)[0].cpu())
        index = {name: column for column, name in enumerate(names)}
        return [
            {"label": label, "score": score, "box": tuple(round(float(v), 2) for v in boxes[index[label]])}
            for label, score in ranked
        ]
