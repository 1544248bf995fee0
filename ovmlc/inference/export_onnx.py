"""ONNX export (`ovmlc export onnx`) through PyTorch's maintained exporter (`torch.onnx.export(..., dynamo=True)`, which
needs `onnxscript`), and a small onnxruntime runner (`OnnxTagger`) that reproduces the model's logits.

Two layouts:

- fixed vocabulary (`labels` given): `model.onnx` maps `pixel_values [B, 3, H, W]` → `logits`, `scores` `[B, C]`.
  The label bank is a constant of the graph. When the method's head is affine in the (L2-normalised or raw) global
  image embedding — CLIP zero-shot (its reference prompt included) and CLIP-FT — label bank, logit scale, reference
  and bias are folded into one matrix `W [C, D]` and one bias `[C]` (found by probing `model.score` and verified on
  random embeddings), so the head is one matmul. Other heads (QKS's query transformer, MKT's two streams normalised
  across labels) keep the method's own `score` with the label bank as a constant.
- open vocabulary (no labels): `image_encoder.onnx` (`pixel_values` → the method's image features),
  `text_encoder.onnx` (`input_ids`, `attention_mask` → CLIP text features `[N, D]`) and `head.onnx` (image features +
  `label_embeds [C, D]` → `logits`); `OnnxTagger` tokenizes the prompts, pools them over templates as the model
  does, then runs the head. Only for methods whose text side is CLIP's frozen text tower (not MKT stage 2 nor the
  learned-prompt family, whose label embeddings need their prompt learner: export those with labels).

Every export writes `export.json` (layout, labels, templates, pooling, the parity check's max |logit difference|
against PyTorch) and the image processor (and, open-vocabulary, the tokenizer) files next to the graphs.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

EXPORT_FILE = "export.json"
FIXED_VOCABULARY_GRAPH = "model.onnx"
QUANTIZED_GRAPH = "model.int8.onnx"
IMAGE_GRAPH, TEXT_GRAPH, HEAD_GRAPH = "image_encoder.onnx", "text_encoder.onnx", "head.onnx"
PARITY_TOLERANCE = 1e-4


class ExportError(ValueError):
    """The model or the request cannot be exported (the message says why and what to do)."""


def _require_onnx() -> None:
    missing = []
    for module in ("onnx", "onnxscript", "onnxruntime"):
        try:
            __import__(module)
        except ImportError:
            missing.append(module)
    if missing:
        raise ExportError(f"ONNX export needs {', '.join(missing)}: pip install 'ovmlc[onnx]'")


# ----------------------------------------------------------------------------------------------------------------------
# Wrappers the exporter traces
# ----------------------------------------------------------------------------------------------------------------------


@dataclass
class AffineHead:
    """`logits = f(image_embeds) @ weight.T + bias`, f = L2 normalisation (`normalized`) or identity."""

    weight: torch.Tensor  # [C, D]
    bias: torch.Tensor  # [C]
    normalized: bool


@torch.no_grad()
def fold_affine_head(model: Any, label_embeds: torch.Tensor, dim: int, atol: float = 1e-5) -> AffineHead | None:
    """Probe `model.score` for a head affine in the global image embedding `[B, D]` and fold it into one matrix.

    Probes with the zero vector (bias) and the unit vectors (columns of W, identical normalised or not), then checks
    the fold on random embeddings under both hypotheses; None when the head needs other features or is not affine.
    """
    try:
        bias = model.score({"image_embeds": torch.zeros(1, dim)}, label_embeds).logits[0].float()  # [C]
        weight = (model.score({"image_embeds": torch.eye(dim)}, label_embeds).logits.float() - bias).T  # [C, D]
    except (KeyError, ValueError, TypeError, RuntimeError, IndexError):
        return None  # the head reads more than image_embeds (QKS: vision tokens; MKT: patch embeddings too)
    generator = torch.Generator().manual_seed(0)
    probe = torch.randn(8, dim, generator=generator) * 3.0
    expected = model.score({"image_embeds": probe}, label_embeds).logits.float()  # [8, C]
    scale = max(1.0, float(expected.abs().max()))
    for normalized in (True, False):
        inputs = F.normalize(probe, dim=-1) if normalized else probe
        if torch.allclose(inputs @ weight.T + bias, expected, atol=atol * scale, rtol=0):
            return AffineHead(weight.contiguous(), bias.contiguous(), normalized)
    return None


class FixedVocabularyGraph(nn.Module):
    """pixels → (logits, scores) `[B, C]` for one vocabulary: image side + folded or constant-label-bank head."""

    def __init__(self, model: Any, label_embeds: torch.Tensor, head: AffineHead | None):
        super().__init__()
        self.model = model
        self.head = head
        if head is not None:
            self.register_buffer("weight", head.weight)  # [C, D]: label bank, scale, reference, bias folded
            self.register_buffer("bias", head.bias)  # [C]
        else:
            self.register_buffer("label_embeds", label_embeds.float())  # [C, D]

    def forward(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.model.encode_image_features(pixel_values)
        if self.head is not None:
            embeds = features["image_embeds"].float()  # [B, D]
            embeds = F.normalize(embeds, dim=-1) if self.head.normalized else embeds
            logits = embeds @ self.weight.T + self.bias  # [B, C]
        else:
            features = {key: value.float() for key, value in features.items()}
            logits = self.model.score(features, self.label_embeds).logits.float()  # [B, C]
        return logits, torch.sigmoid(logits)


class ImageFeaturesGraph(nn.Module):
    def __init__(self, model: Any, names: Sequence[str]):
        super().__init__()
        self.model, self.names = model, list(names)

    def forward(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, ...]:
        features = self.model.encode_image_features(pixel_values)
        return tuple(features[name].float() for name in self.names)


class TextFeaturesGraph(nn.Module):
    def __init__(self, clip: Any):
        super().__init__()
        self.clip = clip

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.clip.get_text_features(input_ids=input_ids, attention_mask=attention_mask).pooler_output.float()


class HeadGraph(nn.Module):
    def __init__(self, model: Any, names: Sequence[str]):
        super().__init__()
        self.model, self.names = model, list(names)

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        *features, label_embeds = inputs
        return self.model.score(dict(zip(self.names, features)), label_embeds).logits.float()  # [B, C]


# ----------------------------------------------------------------------------------------------------------------------
# Export
# ----------------------------------------------------------------------------------------------------------------------


def _export(module: nn.Module, inputs: tuple, path: Path, input_names, output_names, dynamic: Any) -> None:
    """`torch.onnx.export` through torch.export (dynamo), dynamic dimensions by name, weights inside the file."""
    import logging
    import warnings

    logging.getLogger("torch.onnx").setLevel(logging.ERROR)  # e.g. "torchvision is not installed" per export
    module.eval()
    for submodule in module.modules():  # eval() resets the text fingerprint; tracing cannot hash fake weights
        if hasattr(submodule, "text_fingerprint"):
            submodule.text_fingerprint()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            module,
            inputs,
            dynamo=True,
            input_names=list(input_names),
            output_names=list(output_names),
            dynamic_shapes=dynamic,
            external_data=False,
            verbose=False,
        )
    program.save(str(path))


def text_side_is_clip(model: Any) -> bool:
    """Label embeddings come from CLIP's own text tower (no learned prompt): an exportable, label-free text side."""
    from ..core.backbones import text_tower_modules

    return {id(module) for module in model.text_side_modules()} == {
        id(module) for module in text_tower_modules(model.clip)
    }


def _example_pixels(model: Any, batch: int = 2) -> torch.Tensor:
    size = model.clip.config.vision_config.image_size
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(0))


@torch.no_grad()
def export_onnx(
    model: Any,
    output_dir: str | os.PathLike,
    labels: Sequence[str] | None = None,
    quantize: bool = False,
    check: bool = True,
) -> dict[str, Any]:
    """Export `model` (float32, eval) to `output_dir`; see the module docstring. With `check`, the graphs are run
    with onnxruntime on random pixels and their logits compared with PyTorch's (`max_abs_logit_difference` in
    `export.json`; `ExportError` above `PARITY_TOLERANCE`). `quantize` adds `model.int8.onnx` (dynamic int8 weights,
    fixed vocabulary only). Returns the content of `export.json`."""
    from ..core.backbones import CLIP_FAMILY, backbone_family

    family = backbone_family(model.clip)
    if family is not CLIP_FAMILY:  # the text graph and the tagger's tokenization follow CLIP's rules
        raise ExportError(
            f"ONNX export supports CLIP backbones only; this {type(model).__name__} has a {family.name} backbone "
            "(SigLIP's 64-token text rules and pooling head are not exported yet: docs/siglip.md)"
        )
    _require_onnx()
    model = model.float().eval()
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    pixels = _example_pixels(model)
    features = model.encode_image_features(pixels)
    model.score(features, model.encode_labels(["a", "b"]))  # fills lazy caches (e.g. a reference prompt) before tracing
    batch = torch.export.Dim("batch")
    info: dict[str, Any] = {
        "format": "ovmlc-onnx",
        "method": type(model).__name__,
        "model": str(getattr(model, "name_or_path", "")),
        "image_size": int(model.clip.config.vision_config.image_size),
        "templates": list(model.vocabulary(["x"]).templates),
        "pool": model.config.prompt_pool,
        "torch": torch.__version__,
    }
    if model.processor is not None:
        model.processor.save_pretrained(output_dir)

    if labels is not None:
        vocabulary = model.vocabulary(list(labels))
        label_embeds = model.encode_labels(vocabulary).float().cpu()  # [C, D]
        head = None
        if "image_embeds" in features:
            head = fold_affine_head(model, label_embeds, features["image_embeds"].shape[-1])
        graph = FixedVocabularyGraph(model, label_embeds, head)
        _export(
            graph,
            (pixels,),
            output_dir / FIXED_VOCABULARY_GRAPH,
            ["pixel_values"],
            ["logits", "scores"],
            {"pixel_values": {0: batch}},
        )
        info.update(
            layout="fixed-vocabulary",
            labels=list(vocabulary.names),
            head="folded-matrix" if head is not None else "label-bank-constant",
            graphs=[FIXED_VOCABULARY_GRAPH],
        )
        if quantize:
            from onnxruntime.quantization import QuantType, quantize_dynamic

            quantize_dynamic(
                str(output_dir / FIXED_VOCABULARY_GRAPH), str(output_dir / QUANTIZED_GRAPH), weight_type=QuantType.QInt8
            )
            info["graphs"].append(QUANTIZED_GRAPH)
    else:
        if quantize:
            raise ExportError("--quantize needs --labels (the fixed-vocabulary graph)")
        if not text_side_is_clip(model):
            raise ExportError(
                f"{type(model).__name__} computes label embeddings with learned weights (prompts or per-label "
                "rows), not CLIP's text tower alone: "
                "export it with --labels (a fixed vocabulary)"
            )
        names = sorted(features)
        example_labels = model.encode_labels(["a", "b", "c"]).float().cpu()  # [3, D]
        _export(
            ImageFeaturesGraph(model, names),
            (pixels,),
            output_dir / IMAGE_GRAPH,
            ["pixel_values"],
            names,
            {"pixel_values": {0: batch}},
        )
        tokens = model.text_tokenizer(["a photo of a cat.", "a dog"], padding="longest", return_tensors="pt")
        sequence = torch.export.Dim("sequence", min=2, max=model.clip.config.text_config.max_position_embeddings)
        prompts = torch.export.Dim("prompts", min=2)
        _export(
            TextFeaturesGraph(model.clip),
            (tokens["input_ids"], tokens["attention_mask"]),
            output_dir / TEXT_GRAPH,
            ["input_ids", "attention_mask"],
            ["text_embeds"],
            {"input_ids": {0: prompts, 1: sequence}, "attention_mask": {0: prompts, 1: sequence}},
        )
        num_labels = torch.export.Dim("labels", min=2)
        feature_shapes = {name: {0: batch} for name in names}
        _export(
            HeadGraph(model, names),
            (*(features[name].float() for name in names), example_labels),
            output_dir / HEAD_GRAPH,
            names + ["label_embeds"],
            ["logits"],
            ((*feature_shapes.values(), {0: num_labels}),),  # one entry: the *inputs of forward
        )
        model.text_tokenizer.save_pretrained(output_dir)
        info.update(layout="open-vocabulary", feature_names=names, graphs=[IMAGE_GRAPH, TEXT_GRAPH, HEAD_GRAPH])

    if check:
        info["max_abs_logit_difference"] = parity_difference(model, output_dir, info)
        if info["max_abs_logit_difference"] > PARITY_TOLERANCE:
            raise ExportError(
                f"{output_dir}: onnxruntime logits differ from PyTorch by {info['max_abs_logit_difference']:.2e} "
                f"(> {PARITY_TOLERANCE})"
            )
    (output_dir / EXPORT_FILE).write_text(json.dumps(info, indent=1) + "\n", encoding="utf-8")
    return info


@torch.no_grad()
def parity_difference(model: Any, output_dir: Path, info: dict[str, Any], batch: int = 3) -> float:
    """Max |logit difference| between onnxruntime and PyTorch on random pixels (another batch size than traced)."""
    from ..core.scoring import Scorer

    tagger = OnnxTagger(output_dir, info=info)
    pixels = _example_pixels(model, batch) * 0.5 + 0.1
    labels = info.get("labels") or ["cat", "red car", "tree", "a photo"]
    reference = Scorer(model).score_batch(pixels, model.encode_labels(labels)).logits.numpy()  # [B, C]
    return float(np.abs(tagger.logits(pixels.numpy(), labels) - reference).max())


# ----------------------------------------------------------------------------------------------------------------------
# Runtime
# ----------------------------------------------------------------------------------------------------------------------


class OnnxTagger:
    """Runs an exported folder with onnxruntime: `logits(pixel_values, labels=None)`, `predict(images, labels=None,
    top_k=5)`. `quantized=True` uses `model.int8.onnx`."""

    def __init__(self, directory: str | os.PathLike, info: dict[str, Any] | None = None, quantized: bool = False):
        import onnxruntime

        self.directory = Path(directory)
        self.info = info or json.loads((self.directory / EXPORT_FILE).read_text(encoding="utf-8"))
        options = onnxruntime.SessionOptions()

        def session(name: str):
            return onnxruntime.InferenceSession(str(self.directory / name), options, providers=["CPUExecutionProvider"])

        self.fixed = self.info["layout"] == "fixed-vocabulary"
        if self.fixed:
            self.model = session(QUANTIZED_GRAPH if quantized else FIXED_VOCABULARY_GRAPH)
        else:
            if quantized:
                raise ExportError("the int8 graph exists for fixed-vocabulary exports only")
            self.image, self.text, self.head = session(IMAGE_GRAPH), session(TEXT_GRAPH), session(HEAD_GRAPH)
            self._tokenizer = None
            self._label_cache: dict[tuple[str, ...], np.ndarray] = {}
        self._processor = None

    @property
    def processor(self):
        if self._processor is None:
            from ..core.backbones import load_image_processor

            self._processor = load_image_processor(self.directory)
        return self._processor

    def label_embeddings(self, labels: Sequence[str]) -> np.ndarray:
        """`[C, D]` from the exported text encoder: every template's prompt, pooled as the model pools."""
        key = tuple(labels)
        if key not in self._label_cache:
            if self._tokenizer is None:
                from transformers import AutoTokenizer

                self._tokenizer = AutoTokenizer.from_pretrained(self.directory)
            templates = self.info["templates"]
            prompts = [template.format(label) for label in labels for template in templates]
            tokens = self._tokenizer(prompts, padding="longest", truncation=True, max_length=77, return_tensors="np")
            embeds = self.text.run(
                None,
                {"input_ids": tokens["input_ids"].astype(np.int64), "attention_mask": tokens["attention_mask"]},
            )[0].reshape(len(labels), len(templates), -1)  # [C, T, D]
            if self.info["pool"] == "normalized":
                embeds = embeds / np.linalg.norm(embeds, axis=-1, keepdims=True)
                pooled = embeds.mean(axis=1)
                pooled = pooled / np.linalg.norm(pooled, axis=-1, keepdims=True)
            else:
                pooled = embeds.mean(axis=1)
            self._label_cache[key] = pooled.astype(np.float32)
        return self._label_cache[key]

    def logits(self, pixel_values: np.ndarray, labels: Sequence[str] | None = None) -> np.ndarray:
        """`[B, C]` float32 logits of `pixel_values [B, 3, H, W]` (labels: required for open-vocabulary exports)."""
        pixel_values = np.ascontiguousarray(pixel_values, dtype=np.float32)
        if self.fixed:
            if labels is not None and list(labels) != self.info["labels"]:
                raise ExportError("this export has a fixed vocabulary (export.json `labels`); re-export for others")
            return self.model.run(["logits"], {"pixel_values": pixel_values})[0]
        if labels is None:
            raise ExportError("an open-vocabulary export needs labels")
        features = self.image.run(None, {"pixel_values": pixel_values})
        inputs = dict(zip(self.info["feature_names"], features))
        inputs["label_embeds"] = self.label_embeddings(labels)
        return self.head.run(None, inputs)[0]

    def predict(self, images: Sequence[Any], labels: Sequence[str] | None = None, top_k: int | None = 5):
        """Per image `[(label, score), ...]`, highest first, like `model.predict`."""
        from ..core.images import load_images
        from ..core.outputs import rank_labels

        pixel_values = self.processor(images=load_images(images), return_tensors="np")["pixel_values"]
        logits = self.logits(pixel_values, labels)
        names = self.info["labels"] if self.fixed else list(labels)
        return rank_labels(1.0 / (1.0 + np.exp(-logits)), names, top_k=top_k)
