"""The ovmlc Gradio demo: tag any image with any vocabulary, with per-label heatmaps.

`TaggingService` holds the logic (input limits, scoring through `ovmlc.core.scoring.Scorer`, heatmaps, batch tables)
and needs no gradio; label embeddings live in each model's own LRU label cache, capped small and kept in memory.
`build_demo(models)` wraps it in a `gr.Blocks` app. `spaces/ovmlc-demo/app.py` adds argparse + launch.

Programmatic API of the app (stable names):
- `/predict(image, vocabulary, top_k=10, threshold=0.0)` -> (label scores, info) on the first (default) model;
- `/predict_batch(images, vocabulary, top_k=10, threshold=0.0)` -> (table, CSV file).
The UI itself calls `/tag` and `/tag_batch` (undocumented: they add the model, calibrated and heatmap controls).
"""

from __future__ import annotations

import csv
import functools
import json
import logging
import os
import tempfile
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..core.images import ImageLoadError, load_image, load_image_file
from ..core.modeling_base import OVMLCPreTrainedModel
from ..core.outputs import rank_labels
from ..core.regions import processor_geometry
from ..core.scoring import Scorer
from ..core.vocabulary import LabelTruncatedWarning, load_labelset, normalize_label
from ..inference.pipeline import split_label_text

if TYPE_CHECKING:
    import gradio as gr

logger = logging.getLogger(__name__)

DEFAULT_MODEL = "shapes-clutter"  # the CLIP of the world the Space examples come from
# Distinct, colour-blind-friendly hues (Okabe-Ito + extras) for the heatmap legend.
HEATMAP_COLORS = ["#E69F00", "#56B4E9", "#009E73", "#F0E442", "#0072B2", "#D55E00", "#CC79A7", "#999999"]
# Masks are the min-max normalised maps to this power: > 1 keeps the peaks and fades the rest, so overlapping
# heatmaps of several labels do not tint the whole image.
HEATMAP_GAMMA = 2.0
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")


class DemoInputError(ValueError):
    """Bad user input (no labels, too many labels, unreadable or oversized image); the message is shown as is."""


class DemoModelError(RuntimeError):
    """A model given to the demo could not be loaded; the message says which and what to do."""


@dataclass
class DemoLimits:
    """Input limits of the demo (a public Space runs on 2 shared CPU cores)."""

    max_pixels: int = 25_000_000  # width * height of one uploaded image
    max_file_size: int = 10 * 1024 * 1024  # bytes per uploaded file (also passed to `launch(max_file_size=...)`)
    max_labels: int = 1000
    max_label_chars: int = 100
    max_batch_images: int = 16
    max_top_k: int = 50
    heatmap_labels: int = 3  # heatmaps drawn for this many top labels
    display_max_side: int = 512  # heatmap canvas size (longest side, pixels)
    # Label embeddings kept per model (its label cache: LRU, memory only, so typed labels never hit disk); at least
    # max_labels, so one request's labels always fit.
    label_cache_size: int = 5000
    concurrency: int = 2  # requests computed at once (`queue(default_concurrency_limit=...)`)
    queue_size: int = 64  # requests waiting at most; more are refused with "queue full"
    batch_chunk: int = 8  # images per forward in batch mode


@dataclass
class Preset:
    """A vocabulary preset shown in the demo, built from a label set file."""

    title: str
    labels: list[str]

    @property
    def text(self) -> str:
        return ", ".join(self.labels)


@dataclass
class TagResult:
    """One image tagged: ranked `(label, score)` pairs, optional heatmap, timings in milliseconds."""

    ranked: list[tuple[str, float]]
    heatmap: tuple[Image.Image, list[tuple[np.ndarray | tuple[int, int, int, int], str]]] | None  # masks or boxes
    timings: dict[str, float]
    model_name: str
    num_labels: int
    note: str = ""
    heatmap_note: str = ""
    warnings: list[str] = field(default_factory=list)  # e.g. labels cut at the text tower's context

    @property
    def scores(self) -> dict[str, float]:
        return dict(self.ranked)

    @property
    def latency_ms(self) -> float:
        return sum(self.timings.values())


@dataclass
class BatchResult:
    """Many images tagged: header + rows for a table, the CSV file written, timings."""

    headers: list[str]
    rows: list[list[Any]]
    csv_path: str
    timings: dict[str, float]
    skipped: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # e.g. labels cut at the text tower's context


def load_presets(path: str | os.PathLike | None = None) -> list[Preset]:
    """Presets from a JSON file `{"presets": [{"title", "labelset", "subset"?}, ...]}` (label sets shipped in
    `ovmlc/labelsets/` or JSON paths, relative paths resolved next to the file); entries whose label set is not
    installed are skipped with a log message. Without a file: every shipped label set, titled by its name."""
    from ..resources import LABELSETS_DIR

    if path is None:
        entries = [{"title": p.stem, "labelset": p.stem} for p in sorted(LABELSETS_DIR.glob("*.json"))]
        base = LABELSETS_DIR
    else:
        path = Path(path)
        try:
            entries = json.loads(path.read_text())["presets"]
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise ValueError(f"{path}: not a presets file with a 'presets' list ({error})") from error
        base = path.parent
    presets = []
    for entry in entries:
        name = entry["labelset"]
        candidate = base / name
        try:
            labelset = load_labelset(candidate if candidate.suffix == ".json" and candidate.is_file() else name)
        except FileNotFoundError:
            logger.info("preset %r skipped: label set %r is not installed", entry.get("title"), name)
            continue
        unseen = set(labelset.get("unseen", []))
        subset = entry.get("subset", "all")
        if subset not in ("all", "seen", "unseen"):
            raise ValueError(f"preset {entry.get('title')!r}: subset must be all, seen or unseen, got {subset!r}")
        labels = [label for label in labelset["labels"] if subset == "all" or (label in unseen) == (subset == "unseen")]
        presets.append(Preset(title=entry.get("title") or name, labels=labels))
    return presets


def load_examples(folder: str | os.PathLike) -> list[tuple[str, str]]:
    """Example `(image path, vocabulary text)` pairs from `folder/examples.json` (`{"label_set", "examples":
    [{"file", ...}]}`: the vocabulary is the whole label set) or, without it, every image in the folder."""
    folder = Path(folder)
    meta_file = folder / "examples.json"
    if meta_file.is_file():
        meta = json.loads(meta_file.read_text())
        vocabulary = ""
        if meta.get("label_set"):
            try:
                vocabulary = ", ".join(load_labelset(meta["label_set"])["labels"])
            except FileNotFoundError:
                logger.info("examples: label set %r is not installed", meta["label_set"])
        return [(str(folder / entry["file"]), vocabulary) for entry in meta.get("examples", [])]
    return [(str(path), "") for path in sorted(folder.iterdir()) if path.suffix.lower() in IMAGE_SUFFIXES]


def load_models(names_or_paths: Sequence[str], device: str | None = None) -> dict[str, OVMLCPreTrainedModel]:
    """Load each model with `ovmlc.load_model`; keys are the names as given (shown in the model selector)."""
    from ..core.backbones import BACKBONE_ALIASES
    from ..inference.factory import load_model

    models: dict[str, OVMLCPreTrainedModel] = {}
    for name in names_or_paths:
        if name in models:
            continue
        try:
            models[name] = load_model(name, device=device).eval()
        except (OSError, ValueError) as error:
            hint = ""
            if name in BACKBONE_ALIASES and not Path(BACKBONE_ALIASES[name]).exists():
                hint = (
                    f" The shipped offline model is missing from this install ({BACKBONE_ALIASES[name]}): reinstall "
                    "ovmlc, or pass --model DIR_OR_HUB_ID (a folder written by `ovmlc train` / save_pretrained, a "
                    "CLIP or SigLIP folder, or a Hub id with network access)."
                )
            raise DemoModelError(f"cannot load model {name!r}: {error}.{hint}") from error
    if not models:
        raise DemoModelError("no model given: pass at least one --model")
    return models


def _size_field(size: Any, key: str) -> int | None:
    value = size.get(key) if isinstance(size, Mapping) else getattr(size, key, None)
    return int(value) if value else None


def processor_view_box(processor: Any, width: int, height: int) -> tuple[float, float, float, float]:
    """The region `(left, top, right, bottom)` of a `width x height` image that the model actually sees: CLIP
    processors resize the shortest edge and center-crop, so label maps cover that crop, not the whole image."""
    if not getattr(processor, "do_center_crop", False) or getattr(processor, "crop_size", None) is None:
        return 0.0, 0.0, float(width), float(height)
    crop_h = _size_field(processor.crop_size, "height")
    crop_w = _size_field(processor.crop_size, "width")
    shortest = _size_field(processor.size, "shortest_edge") if getattr(processor, "do_resize", True) else None
    if not crop_h or not crop_w:
        return 0.0, 0.0, float(width), float(height)
    scale = shortest / min(width, height) if shortest else 1.0  # original pixels -> resized pixels
    box_w, box_h = min(width, crop_w / scale), min(height, crop_h / scale)
    left, top = (width - box_w) / 2, (height - box_h) / 2
    return left, top, left + box_w, top + box_h


def heatmap_masks(
    label_maps: torch.Tensor,
    canvas_size: tuple[int, int],
    view_box: tuple[float, float, float, float],
    gamma: float = HEATMAP_GAMMA,
) -> np.ndarray:
    """`label_maps [K, h, w]` -> masks `[K, H, W]` in 0..1 on a `canvas_size = (W, H)` canvas: each map is min-max
    normalised (then raised to `gamma`), upsampled (bilinear) to the region the model saw (`view_box`, canvas
    pixels) and zero outside."""
    width, height = canvas_size
    left, top = max(int(round(view_box[0])), 0), max(int(round(view_box[1])), 0)
    right, bottom = min(int(round(view_box[2])), width), min(int(round(view_box[3])), height)
    box_w, box_h = max(right - left, 1), max(bottom - top, 1)
    maps = label_maps.float()
    low = maps.amin(dim=(1, 2), keepdim=True)
    high = maps.amax(dim=(1, 2), keepdim=True)
    maps = ((maps - low) / (high - low).clamp_min(1e-6)) ** gamma  # [K, h, w] in 0..1
    upsampled = F.interpolate(maps[:, None], size=(box_h, box_w), mode="bilinear", align_corners=False)[:, 0]
    masks = np.zeros((maps.shape[0], height, width), dtype=np.float32)
    masks[:, top : top + box_h, left : left + box_w] = upsampled.clamp(0, 1).cpu().numpy()
    return masks


class TaggingService:
    """Everything the demo computes, without gradio: input checks, cached label embeddings, tagging, heatmaps,
    batch tables. Thread-safe for concurrent requests."""

    def __init__(self, models: Mapping[str, OVMLCPreTrainedModel], limits: DemoLimits | None = None):
        if not models:
            raise DemoModelError("the demo needs at least one model")
        self.models = dict(models)
        self.limits = limits or DemoLimits()
        if self.limits.label_cache_size < self.limits.max_labels:
            raise ValueError(
                f"DemoLimits: label_cache_size ({self.limits.label_cache_size}) must be at least max_labels "
                f"({self.limits.max_labels}), so that one request's labels fit in the cache"
            )
        for model in self.models.values():
            # The model's one label cache (thread-safe, one text forward at a time), small and memory only.
            model.set_label_cache(None, max_labels=self.limits.label_cache_size)
        self.scorers = {name: Scorer(model, batch_size=self.limits.batch_chunk) for name, model in self.models.items()}
        self._csv_dir = Path(tempfile.mkdtemp(prefix="ovmlc-demo-"))

    @property
    def default_model(self) -> str:
        return next(iter(self.models))

    def model(self, name: str | None) -> tuple[str, OVMLCPreTrainedModel]:
        name = name or self.default_model
        if name not in self.models:
            raise DemoInputError(f"unknown model {name!r}; loaded models: {', '.join(self.models)}")
        return name, self.models[name]

    def has_thresholds(self, name: str | None) -> bool:
        _, model = self.model(name)
        return bool(model.config.label_thresholds) or model.config.global_threshold is not None

    # ------------------------------------------------------------------ input checks
    def parse_vocabulary(self, text: str | Sequence[str] | None) -> list[str]:
        """Comma/newline-separated labels -> unique names (case-insensitive duplicates dropped), within limits."""
        labels = split_label_text(text or "") if isinstance(text, str) or text is None else [str(t) for t in text]
        labels = [" ".join(label.split()) for label in labels if label.strip()]
        if not labels:
            raise DemoInputError("No labels: type some labels (comma- or newline-separated) or pick a preset.")
        unique: dict[str, str] = {}
        for label in labels:
            unique.setdefault(normalize_label(label), label)
        labels = list(unique.values())
        if len(labels) > self.limits.max_labels:
            raise DemoInputError(f"Too many labels: {len(labels)} given, at most {self.limits.max_labels} per request.")
        too_long = [label for label in labels if len(label) > self.limits.max_label_chars]
        if too_long:
            raise DemoInputError(
                f"Label too long ({len(too_long[0])} characters, at most {self.limits.max_label_chars}): "
                f"{too_long[0][:40]!r}..."
            )
        return labels

    def check_top_k(self, top_k: float | None) -> int | None:
        if top_k is None or top_k == "":
            return None
        try:
            value = int(top_k)
        except (TypeError, ValueError):
            raise DemoInputError(f"top_k must be a whole number, got {top_k!r}") from None
        if not 1 <= value <= self.limits.max_top_k:
            raise DemoInputError(f"top_k must be between 1 and {self.limits.max_top_k}, got {value}")
        return value

    @staticmethod
    def check_threshold(threshold: float | None) -> float | None:
        if threshold is None or threshold == "":
            return None
        try:
            value = float(threshold)
        except (TypeError, ValueError):
            raise DemoInputError(f"threshold must be a number between 0 and 1, got {threshold!r}") from None
        if not 0.0 <= value <= 1.0:
            raise DemoInputError(f"threshold must be between 0 and 1, got {value}")
        return value

    def open_image(self, source: Any, name: str | None = None) -> Image.Image:
        """An uploaded image (file path, gradio file payload dict or PIL image) as RGB, after the size checks."""
        if isinstance(source, Image.Image):
            self._check_pixels(source.size, name or "image")
            return load_image(source)
        if isinstance(source, Mapping):  # gradio FileData payload (events run with preprocess=False)
            name = name or source.get("orig_name") or (Path(source["path"]).name if source.get("path") else None)
            source = source.get("path")
        if not source:
            raise DemoInputError("No image: upload an image (or pick an example) first.")
        path = Path(source)
        name = name or path.name
        if not path.is_file():
            raise DemoInputError(f"{name}: the uploaded file is gone; upload it again.")
        size = path.stat().st_size
        if size > self.limits.max_file_size:
            raise DemoInputError(
                f"{name}: file too large ({size / 2**20:.1f} MB; at most {self.limits.max_file_size / 2**20:.0f} MB)."
            )
        try:
            with Image.open(path) as probe:  # reads the header only: reject huge images before decoding them
                dimensions = probe.size
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
            raise DemoInputError(f"{name}: not an image this demo can read ({type(error).__name__}).") from error
        self._check_pixels(dimensions, name)
        try:
            return load_image_file(path, name)
        except ImageLoadError as error:
            raise DemoInputError(str(error)) from error

    def _check_pixels(self, dimensions: tuple[int, int], name: str) -> None:
        width, height = dimensions
        if width * height > self.limits.max_pixels:
            raise DemoInputError(
                f"{name}: image too large ({width}x{height} = {width * height / 1e6:.1f} MP; at most "
                f"{self.limits.max_pixels / 1e6:.0f} MP). Downscale it and try again."
            )

    # ------------------------------------------------------------------ label embeddings
    def label_embeddings(self, model_name: str, labels: Sequence[str]) -> tuple[torch.Tensor, bool]:
        """`[C, D]` embeddings of `labels` for a model, from the model's label cache; returns `(embeddings,
        was_cached)` (cached: no label had to be encoded)."""
        embeddings, cached, _ = self._label_embeddings_with_warnings(model_name, labels)
        return embeddings, cached

    def _label_embeddings_with_warnings(
        self, model_name: str, labels: Sequence[str]
    ) -> tuple[torch.Tensor, bool, list[str]]:
        """`label_embeddings` plus the text of any `LabelTruncatedWarning`, which a browser user would never see in
        the server's log."""
        model_name, model = self.model(model_name)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", LabelTruncatedWarning)
            embeddings = self.scorers[model_name].label_embeddings(list(labels))
        messages = []
        for warning in caught:
            if issubclass(warning.category, LabelTruncatedWarning):
                messages.append(str(warning.message))
            else:  # not ours to swallow
                warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)
        return embeddings, model.label_cache.last_lookup_encoded == 0, messages

    def thresholds(
        self, model: OVMLCPreTrainedModel, labels: Sequence[str], threshold: float | None, calibrated: bool
    ) -> np.ndarray | None:
        try:
            return model.resolve_thresholds(labels, "calibrated" if calibrated else threshold)
        except ValueError as error:
            raise DemoInputError(f"Calibrated thresholds: {error}") from error

    # ------------------------------------------------------------------ tagging
    def tag(
        self,
        image: Any,
        vocabulary: str | Sequence[str] | None,
        top_k: float | None = 10,
        threshold: float | None = 0.0,
        model_name: str | None = None,
        calibrated: bool = False,
        heatmaps: bool = True,
    ) -> TagResult:
        """Tag one image: ranked labels (sigmoid scores) and, if the model gives label maps, heatmaps of the top
        labels on a display-sized copy of the image."""
        timings: dict[str, float] = {}
        start = time.perf_counter()
        labels = self.parse_vocabulary(vocabulary)
        top_k, threshold = self.check_top_k(top_k), self.check_threshold(threshold)
        model_name, model = self.model(model_name)
        thresholds = self.thresholds(model, labels, threshold, calibrated)
        pil_image = self.open_image(image)
        timings["input"] = _ms(start)

        start = time.perf_counter()
        label_embeds, cached, label_warnings = self._label_embeddings_with_warnings(model_name, labels)
        timings["labels (cached)" if cached else "labels"] = _ms(start)

        start = time.perf_counter()
        pixel_values = model.preprocess([pil_image])  # [1, 3, H, W]
        scored = self.scorers[model_name].score_batch(pixel_values, label_embeds, return_label_maps=heatmaps)
        scores = scored.scores[0].cpu().numpy()  # [C]
        ranked = rank_labels(scores[None], labels, top_k, thresholds, order_by=scored.logits[:1].cpu().numpy())[0]
        timings["model"] = _ms(start)

        note = ""
        if not ranked:
            cut = "the calibrated thresholds" if calibrated else f"threshold {threshold:g}"
            note = f"No label reaches {cut}; best: {labels[int(scores.argmax())]} ({float(scores.max()):.3f})."
        heatmap, heatmap_note = None, ""
        if heatmaps:
            start = time.perf_counter()
            label_boxes = getattr(scored.outputs, "label_boxes", None)
            if label_boxes is not None:  # models that localise labels (ViLD): boxes
                heatmap, heatmap_note = self._boxes(model, pil_image, label_boxes, labels, scores, ranked)
            else:
                heatmap, heatmap_note = self._heatmap(model, pil_image, scored.label_maps, labels, scores, ranked)
            timings["heatmap"] = _ms(start)
        return TagResult(ranked, heatmap, timings, model_name, len(labels), note, heatmap_note, label_warnings)

    def _heatmap(self, model, image, label_maps, labels, scores, ranked):
        """(display image, [(mask [H, W] in 0..1, label), ...]) for the top labels, or None and why not."""
        display = image.copy()
        display.thumbnail((self.limits.display_max_side, self.limits.display_max_side), Image.Resampling.LANCZOS)
        if label_maps is None:
            return (display, []), f"{type(model).__name__} gives no per-label maps: no heatmap."
        # The top ranked labels; if none passes the threshold, the best-scoring ones still get a map.
        names = [label for label, _ in ranked] or [labels[i] for i in np.argsort(-scores, kind="stable")]
        names = names[: self.limits.heatmap_labels]
        indices = [labels.index(name) for name in names]
        left, top, right, bottom = processor_view_box(model.processor, *image.size)
        sx, sy = display.width / image.width, display.height / image.height
        masks = heatmap_masks(label_maps[0, indices], display.size, (left * sx, top * sy, right * sx, bottom * sy))
        return (display, [(mask, name) for mask, name in zip(masks, names)]), ""

    def _boxes(self, model, image, label_boxes, labels, scores, ranked):
        """(display image, [((x0, y0, x1, y1), label), ...]): the best region of each top label, in display pixels."""
        display = image.copy()
        display.thumbnail((self.limits.display_max_side, self.limits.display_max_side), Image.Resampling.LANCZOS)
        names = [label for label, _ in ranked] or [labels[i] for i in np.argsort(-scores, kind="stable")]
        names = names[: self.limits.heatmap_labels]
        geometry = processor_geometry(model.processor, *image.size)
        pixels = geometry.normalized_to_pixels(label_boxes[0].float().cpu())  # [C, 4] in original pixels
        sx, sy = display.width / image.width, display.height / image.height
        annotations = []
        for name in names:
            x0, y0, x1, y1 = pixels[labels.index(name)].tolist()
            annotations.append(((round(x0 * sx), round(y0 * sy), round(x1 * sx), round(y1 * sy)), name))
        return (display, annotations), ""

    def tag_batch(
        self,
        images: Sequence[Any] | None,
        vocabulary: str | Sequence[str] | None,
        top_k: float | None = 10,
        threshold: float | None = 0.0,
        model_name: str | None = None,
        calibrated: bool = False,
    ) -> BatchResult:
        """Tag several images: a table (image, tags, one score column per label) and the same as a CSV file.
        Unreadable files are skipped and listed in `skipped`."""
        timings: dict[str, float] = {}
        start = time.perf_counter()
        labels = self.parse_vocabulary(vocabulary)
        top_k, threshold = self.check_top_k(top_k), self.check_threshold(threshold)
        model_name, model = self.model(model_name)
        thresholds = self.thresholds(model, labels, threshold, calibrated)
        images = [images] if isinstance(images, (str, Mapping)) else list(images or [])
        if not images:
            raise DemoInputError("No images: upload one or more image files.")
        if len(images) > self.limits.max_batch_images:
            raise DemoInputError(f"Too many images: {len(images)}, at most {self.limits.max_batch_images} per batch.")
        names, pil_images, skipped = [], [], []
        for index, source in enumerate(images):
            name = _display_name(source, index)
            try:
                pil_images.append(self.open_image(source, name))
                names.append(name)
            except DemoInputError as error:
                skipped.append(str(error))
        if not pil_images:
            raise DemoInputError("None of the files could be read: " + " ".join(skipped))
        timings["input"] = _ms(start)

        start = time.perf_counter()
        _, cached, label_warnings = self._label_embeddings_with_warnings(model_name, labels)
        timings["labels (cached)" if cached else "labels"] = _ms(start)

        start = time.perf_counter()
        with warnings.catch_warnings():  # a cut label was reported above; the cache lookup here would repeat it
            warnings.simplefilter("ignore", LabelTruncatedWarning)
            result = self.scorers[model_name].score_images(pil_images, labels)  # labels: from the cache just filled
        scores = result.scores  # [N, C]
        ranked = rank_labels(scores, labels, top_k=top_k, thresholds=thresholds, order_by=result.logits)
        timings["model"] = _ms(start)

        headers = ["image", "tags", *labels]
        rows = [
            [
                name,
                "; ".join(f"{label} ({score:.3f})" for label, score in row),
                *(round(float(s), 4) for s in scores_row),
            ]
            for name, row, scores_row in zip(names, ranked, scores)
        ]
        return BatchResult(headers, rows, self._write_csv(headers, rows), timings, skipped, label_warnings)

    def _write_csv(self, headers: list[str], rows: list[list[Any]]) -> str:
        self._prune_csv_files()
        handle = tempfile.NamedTemporaryFile(
            "w", dir=self._csv_dir, prefix="ovmlc-tags-", suffix=".csv", delete=False, newline=""
        )
        with handle:
            writer = csv.writer(handle)
            writer.writerow(headers)
            writer.writerows(rows)
        return handle.name

    def _prune_csv_files(self, max_age_s: float = 3600.0) -> None:
        now = time.time()
        for path in self._csv_dir.glob("*.csv"):
            try:
                if now - path.stat().st_mtime > max_age_s:
                    path.unlink()
            except OSError:
                pass  # another request removed it first


def _display_name(source: Any, index: int) -> str:
    if isinstance(source, Mapping):
        return source.get("orig_name") or Path(source.get("path") or f"image-{index}").name
    if isinstance(source, (str, os.PathLike)):
        return Path(source).name
    return f"image-{index}"


def _ms(start: float) -> float:
    return (time.perf_counter() - start) * 1000.0


def format_latency(timings: Mapping[str, float], extra: str = "") -> str:
    parts = " · ".join(f"{name} {value:.0f} ms" for name, value in timings.items())
    return f"**{sum(timings.values()):.0f} ms** ({parts}){extra}"


# ---------------------------------------------------------------------------------------------------- gradio app
INTRO = """# ovmlc: tag any image with any vocabulary
Open-vocabulary **multi-label** classification: every label is scored on its own (sigmoid), so an image can have
many tags. Type labels (comma- or newline-separated) or pick a preset, upload an image (or click an example) and
press **Tag**. Heatmaps show where the model sees each of the top labels."""


def build_demo(
    models: Mapping[str, OVMLCPreTrainedModel],
    presets: Sequence[Preset] | None = None,
    examples: Sequence[tuple[str, str]] | None = None,
    limits: DemoLimits | None = None,
    title: str = "ovmlc demo",
    default_vocabulary: str | None = None,
) -> gr.Blocks:
    """The demo as a `gr.Blocks` (queue configured; call `.launch(max_file_size=limits.max_file_size, ...)`).

    `models`: name -> loaded model (the first is the default, also used by the `/predict` API); `presets`:
    vocabulary presets (`load_presets`); `examples`: `(image path, vocabulary text)` pairs (`load_examples`).
    """
    import gradio as gr

    service = TaggingService(models, limits)
    limits = service.limits
    presets = list(presets if presets is not None else load_presets())
    preset_by_title = {preset.title: preset for preset in presets}
    if default_vocabulary is None:
        default_vocabulary = (examples[0][1] if examples and examples[0][1] else None) or (
            presets[0].text if presets else ""
        )

    def friendly(function):
        """Turn every failure into a `gr.Error` with a readable message (never a traceback in the page)."""

        @functools.wraps(function)  # keeps the signature: the API documents parameter names from it
        def wrapper(*args):
            try:
                return function(*args)
            except gr.Error:
                raise
            except (DemoInputError, ImageLoadError) as error:
                raise gr.Error(str(error), print_exception=False) from None
            except Exception as error:  # unexpected: log it, tell the user something short
                logger.exception("demo request failed")
                raise gr.Error(
                    f"Something went wrong ({type(error).__name__}: {error})", print_exception=False
                ) from None

        return wrapper

    @friendly
    def predict(image, vocabulary, top_k=10, threshold=0.0):
        """Tag one image with the default model: label scores and info (model, latency, number of labels)."""
        result = service.tag(image, vocabulary, top_k, threshold, heatmaps=False)
        info = {
            "model": result.model_name,
            "num_labels": result.num_labels,
            "latency_ms": round(result.latency_ms, 1),
            "timings_ms": {name: round(value, 1) for name, value in result.timings.items()},
        }
        return result.scores, info

    @friendly
    def tag_ui(image, vocabulary, top_k, threshold, model_name, calibrated, show_heatmaps):
        result = service.tag(image, vocabulary, top_k, threshold, model_name, calibrated, heatmaps=show_heatmaps)
        if result.note:
            gr.Info(result.note)
        for message in result.warnings:
            gr.Warning(message)
        notes = "".join(f" · {note}" for note in (result.heatmap_note,) if note)
        latency = format_latency(result.timings, f" · model `{result.model_name}` · {result.num_labels} labels{notes}")
        heatmap = None
        if result.heatmap is not None:
            colors = {name: HEATMAP_COLORS[i % len(HEATMAP_COLORS)] for i, (_, name) in enumerate(result.heatmap[1])}
            heatmap = gr.AnnotatedImage(value=result.heatmap, color_map=colors)
        return result.scores, heatmap, latency

    def batch_outputs(result: BatchResult):
        if result.skipped:
            gr.Warning("Skipped: " + " ".join(result.skipped))
        for message in result.warnings:
            gr.Warning(message)
        table = {"headers": result.headers, "data": result.rows}
        return table, result.csv_path

    @friendly
    def predict_batch(images, vocabulary, top_k=10, threshold=0.0):
        """Tag several images with the default model: a table (image, tags, one score column per label) and a CSV."""
        return batch_outputs(service.tag_batch(images, vocabulary, top_k, threshold))

    @friendly
    def tag_batch_ui(images, vocabulary, top_k, threshold, model_name, calibrated):
        result = service.tag_batch(images, vocabulary, top_k, threshold, model_name, calibrated)
        table, csv_path = batch_outputs(result)
        latency = format_latency(result.timings, f" · {len(result.rows)} images · model `{model_name}`")
        return table, csv_path, latency

    def on_preset(title):
        preset = preset_by_title.get(title)
        return gr.update() if preset is None else preset.text

    def on_model(model_name):
        has = model_name in service.models and service.has_thresholds(model_name)
        return gr.update(visible=has, value=False)

    with gr.Blocks(title=title, delete_cache=(3600, 3600)) as demo:
        gr.Markdown(INTRO)
        with gr.Row():
            with gr.Column(scale=1, min_width=280):
                vocabulary = gr.Textbox(
                    value=default_vocabulary,
                    label="vocabulary",
                    info=f"Labels, comma- or newline-separated (at most {limits.max_labels}).",
                    lines=4,
                    max_lines=12,
                    elem_id="vocabulary",
                )
                preset = gr.Dropdown(
                    choices=[p.title for p in presets],
                    value=None,
                    label="vocabulary preset",
                    info="Replaces the labels above.",
                    elem_id="preset",
                )
                model_choice = gr.Dropdown(
                    choices=list(service.models),
                    value=service.default_model,
                    label="model",
                    interactive=len(service.models) > 1,
                    elem_id="model",
                )
                top_k = gr.Slider(1, limits.max_top_k, value=10, step=1, label="top_k", info="Show at most k labels.")
                threshold = gr.Slider(
                    0.0, 1.0, value=0.0, step=0.01, label="threshold", info="Show labels with score ≥ threshold."
                )
                calibrated = gr.Checkbox(
                    value=False,
                    label="calibrated thresholds",
                    info="Use the model's per-label thresholds instead of the slider.",
                    visible=service.has_thresholds(service.default_model),
                )
            with gr.Column(scale=2):
                with gr.Tabs():
                    with gr.Tab("Image", id="image-tab"):
                        with gr.Row():
                            with gr.Column():
                                image = gr.Image(
                                    type="filepath",
                                    image_mode=None,
                                    sources=["upload", "clipboard"],
                                    label="image",
                                    height=320,
                                    elem_id="image",
                                )
                                show_heatmaps = gr.Checkbox(value=True, label="heatmaps")
                                tag_button = gr.Button("Tag", variant="primary", elem_id="tag-button")
                            with gr.Column():
                                scores = gr.Label(label="labels", show_heading=False, elem_id="scores")
                                latency = gr.Markdown(elem_id="latency")
                        heatmap = gr.AnnotatedImage(
                            label=f"heatmaps (top {limits.heatmap_labels} labels)", height=400, elem_id="heatmap"
                        )
                        if examples:
                            gr.Examples(
                                examples=[list(e) for e in examples], inputs=[image, vocabulary], label="examples"
                            )
                    with gr.Tab("Batch", id="batch-tab"):
                        batch_files = gr.File(
                            file_count="multiple",
                            file_types=["image"],
                            label=f"images (at most {limits.max_batch_images})",
                            elem_id="batch-files",
                        )
                        batch_button = gr.Button("Tag all", variant="primary", elem_id="batch-button")
                        batch_latency = gr.Markdown()
                        batch_table = gr.Dataframe(label="tags and scores", interactive=False, wrap=True)
                        batch_csv = gr.File(label="CSV download", interactive=False)

        # Hidden triggers give the stable programmatic API its exact signature (4 inputs, default model).
        api_predict = gr.Button(visible=False)
        api_batch = gr.Button(visible=False)
        api_info = gr.JSON(visible=False, label="info")

        preset.change(on_preset, preset, vocabulary, api_visibility="private", queue=False)
        model_choice.change(on_model, model_choice, calibrated, api_visibility="private", queue=False)
        ui_inputs = [image, vocabulary, top_k, threshold, model_choice, calibrated, show_heatmaps]
        tag_button.click(
            tag_ui,
            ui_inputs,
            [scores, heatmap, latency],
            api_name="tag",
            api_visibility="undocumented",
            preprocess=False,
        )
        batch_button.click(
            tag_batch_ui,
            [batch_files, vocabulary, top_k, threshold, model_choice, calibrated],
            [batch_table, batch_csv, batch_latency],
            api_name="tag_batch",
            api_visibility="undocumented",
            preprocess=False,
        )
        api_predict.click(
            predict, [image, vocabulary, top_k, threshold], [scores, api_info], api_name="predict", preprocess=False
        )
        api_batch.click(
            predict_batch,
            [batch_files, vocabulary, top_k, threshold],
            [batch_table, batch_csv],
            api_name="predict_batch",
            preprocess=False,
        )
    demo.queue(default_concurrency_limit=limits.concurrency, max_size=limits.queue_size)
    return demo
