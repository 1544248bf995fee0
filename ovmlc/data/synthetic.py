"""The "shapes-64" world: a seeded, procedurally generated image + caption world for offline OV-MLC.

Each image is 64x64 RGB on a 4x4 grid of 16-px cells (exactly one ViT patch per cell at `patch_size=16`). It holds
1-4 objects, each in its own cell: one of 24 shapes, one of 8 colours, drawn anti-aliased (4x supersampling) with
jitter and rotation, over one of 6 background patterns. Every image carries a complete annotation (shapes, colours and
background present), so it can be labelled over any label set built from those names, and can be described by captions
in varied phrasing (a fresh caption every time it is visited during contrastive pretraining).

Generation is deterministic: images are produced in chunks of `CHUNK_SIZE`, each chunk from its own
`numpy.random.Generator` seeded with `(seed, stream, chunk_index)`, so the same `(seed, stream)` gives identical
bytes whatever the number of worker processes.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from ovmlc.data.converters.base import Converter
from ovmlc.data.examples import write_world_examples
from ovmlc.data.prepare import SourcePlan, SourceRecord

IMAGE_SIZE = 64
CELL_SIZE = 16
GRID = IMAGE_SIZE // CELL_SIZE  # 4 cells per side
MAX_OBJECTS = 4
CHUNK_SIZE = 256
SUPERSAMPLE = 4  # objects are drawn at 4x and box-downsampled (anti-aliasing)

# P(number of objects = 1, 2, 3, 4)
NUM_OBJECTS_PROBS = np.array([2, 3, 2, 1], dtype=np.float64) / 8.0
OBJECT_WIDTH_RANGE = (11.5, 14.7)  # px at 64x64
MAX_ROTATION_DEG = 15.0
COLOUR_JITTER = 25

# Streams keep the worlds of different uses independent for one seed.
STREAMS = {"pretrain": 0, "train": 1, "validation": 2, "test": 3, "examples": 4}

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (215, 35, 35),
    "green": (40, 165, 55),
    "blue": (40, 75, 220),
    "yellow": (235, 215, 40),
    "purple": (135, 55, 180),
    "orange": (245, 135, 25),
    "pink": (245, 135, 195),
    "cyan": (40, 210, 220),
}
BACKGROUNDS = ("plain", "striped", "dotted", "grid", "checkered", "gradient")


def _circle(cx: float = 0.0, cy: float = 0.0, r: float = 1.0, rx: float | None = None, n: int = 48) -> np.ndarray:
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return np.stack([cx + (r if rx is None else rx) * np.cos(t), cy + r * np.sin(t)], axis=1)


def _regular(n: int, r: float = 1.0, start_deg: float = 90.0) -> np.ndarray:
    t = np.deg2rad(start_deg) + np.arange(n) * 2 * np.pi / n
    return np.stack([r * np.cos(t), r * np.sin(t)], axis=1)


def _rect(x0: float, y0: float, x1: float, y1: float) -> np.ndarray:
    return np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], dtype=np.float64)


def _star() -> np.ndarray:
    t = np.deg2rad(90.0) + np.arange(10) * np.pi / 5
    r = np.where(np.arange(10) % 2 == 0, 1.0, 0.42)
    return np.stack([r * np.cos(t), r * np.sin(t)], axis=1)


def _plus(half_width: float) -> np.ndarray:
    w = half_width
    return np.array(
        [[-w, 1], [w, 1], [w, w], [1, w], [1, -w], [w, -w], [w, -1], [-w, -1], [-w, -w], [-1, -w], [-1, w], [-w, w]]
    )


def _rotate(points: np.ndarray, deg: float) -> np.ndarray:
    a = np.deg2rad(deg)
    rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    return points @ rot.T


def _heart() -> np.ndarray:
    t = np.linspace(0, 2 * np.pi, 64, endpoint=False)
    x = 16 * np.sin(t) ** 3
    y = 13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t)
    return np.stack([x / 17.0, (y + 2.5) / 15.5], axis=1)


def _semicircle() -> np.ndarray:
    t = np.linspace(0, np.pi, 33)
    return np.stack([np.cos(t), 1.1 * np.sin(t) - 0.5], axis=1)


# Each shape is a list of (polygon in [-1, 1]^2 with y up, fill): fill 1 paints, fill 0 cuts a hole (the background
# shows through), applied in order.
SHAPES: dict[str, list[tuple[np.ndarray, int]]] = {
    "circle": [(_circle(), 1)],
    "square": [(_rect(-0.82, -0.82, 0.82, 0.82), 1)],
    "triangle": [(np.array([[0.0, 1.0], [-1.0, -0.78], [1.0, -0.78]]), 1)],
    "star": [(_star(), 1)],
    "cross": [(_rotate(_plus(0.27), 45.0) * 1.25, 1)],
    "plus": [(_plus(0.3), 1)],
    "heart": [(_heart(), 1)],
    "ring": [(_circle(), 1), (_circle(r=0.55), 0)],
    "hexagon": [(_regular(6, start_deg=0.0), 1)],
    "pentagon": [(_regular(5), 1)],
    "diamond": [(np.array([[0.0, 1.0], [0.62, 0.0], [0.0, -1.0], [-0.62, 0.0]]), 1)],
    "arrow": [(np.array([[-1, -0.22], [0.1, -0.22], [0.1, -0.62], [1, 0], [0.1, 0.62], [0.1, 0.22], [-1, 0.22]]), 1)],
    "crescent": [(_circle(), 1), (_circle(cx=0.45, cy=0.2, r=0.82), 0)],
    "ellipse": [(_circle(rx=1.0, r=0.55), 1)],
    "bar": [(_rect(-1.0, -0.28, 1.0, 0.28), 1)],
    "semicircle": [(_semicircle(), 1)],
    "trapezoid": [(np.array([[-1.0, -0.6], [1.0, -0.6], [0.48, 0.6], [-0.48, 0.6]]), 1)],
    "frame": [(_rect(-0.9, -0.9, 0.9, 0.9), 1), (_rect(-0.5, -0.5, 0.5, 0.5), 0)],
    "hourglass": [(np.array([[-0.8, 1], [0.8, 1], [0.12, 0], [0.8, -1], [-0.8, -1], [-0.12, 0]]), 1)],
    "chevron": [(np.array([[-1, -0.2], [0, 0.8], [1, -0.2], [1, -0.78], [0, 0.22], [-1, -0.78]]), 1)],
    "bolt": [(np.array([[0.25, 1], [-0.6, -0.08], [-0.05, -0.08], [-0.3, -1], [0.62, 0.22], [0.06, 0.22]]), 1)],
    "cloud": [
        (_circle(-0.5, -0.15, 0.42), 1),
        (_circle(0.05, 0.12, 0.62), 1),
        (_circle(0.55, -0.2, 0.37), 1),
        (_rect(-0.5, -0.57, 0.55, -0.15), 1),
    ],
    "drop": [(_circle(0.0, -0.33, 0.64), 1), (np.array([[-0.58, -0.08], [0.0, 1.0], [0.58, -0.08]]), 1)],
    "flag": [(_rect(-0.88, -1.0, -0.68, 1.0), 1), (_rect(-0.68, 0.02, 0.92, 1.0), 1)],
}
SHAPE_NAMES = tuple(SHAPES)
COLOUR_NAMES = tuple(COLOURS)
_COLOUR_RGB = np.array(list(COLOURS.values()), dtype=np.float32)  # [8, 3]


def background_label(name: str) -> str:
    """Label name of a background pattern, e.g. "striped" -> "striped background"."""
    return f"{name} background"


ALL_LABELS = (*SHAPE_NAMES, *COLOUR_NAMES, *(background_label(b) for b in BACKGROUNDS))

from ovmlc.resources import SYNTHETIC_LABELSET as LABELSET_PATH  # noqa: E402


@dataclass
class Scenes:
    """Descriptions of N scenes; slot `j` of image `i` is empty where `shape_ids[i, j] == -1`."""

    shape_ids: np.ndarray  # [N, 4] int16, index into SHAPE_NAMES, -1 = empty slot
    colour_ids: np.ndarray  # [N, 4] int16, index into COLOUR_NAMES, -1 = empty slot
    cells: np.ndarray  # [N, 4] int16, cell index 0..15 (row-major), -1 = empty slot
    background_ids: np.ndarray  # [N] int16, index into BACKGROUNDS

    def __len__(self) -> int:
        return len(self.background_ids)

    def objects(self, index: int) -> list[tuple[str, str]]:
        """(colour, shape) of each object of image `index`, in slot order."""
        return [
            (COLOUR_NAMES[c], SHAPE_NAMES[s]) for s, c in zip(self.shape_ids[index], self.colour_ids[index]) if s >= 0
        ]

    def background(self, index: int) -> str:
        return BACKGROUNDS[self.background_ids[index]]

    def labels(self, index: int) -> list[str]:
        """Every label of the full world vocabulary present in image `index` (shapes, colours, background)."""
        objects = self.objects(index)
        shapes = [s for _, s in objects]
        colours = sorted({c for c, _ in objects}, key=COLOUR_NAMES.index)
        return [*shapes, *colours, background_label(self.background(index))]

    def label_matrix(self, label_names: Sequence[str]) -> np.ndarray:
        """Full annotation over `label_names`: int8 [N, C] with 1 = present, 0 = absent."""
        unknown = [name for name in label_names if name not in ALL_LABELS]
        if unknown:
            raise ValueError(f"Labels {unknown} are not part of the synthetic world (known: {list(ALL_LABELS)}).")
        matrix = np.zeros((len(self), len(ALL_LABELS)), dtype=np.int8)
        rows = np.arange(len(self))
        for slot in range(MAX_OBJECTS):
            present = self.shape_ids[:, slot] >= 0
            matrix[rows[present], self.shape_ids[present, slot]] = 1
            matrix[rows[present], len(SHAPE_NAMES) + self.colour_ids[present, slot]] = 1
        matrix[rows, len(SHAPE_NAMES) + len(COLOUR_NAMES) + self.background_ids] = 1
        columns = [ALL_LABELS.index(name) for name in label_names]
        return matrix[:, columns]

    def object_boxes(self, index: int, label_names: Sequence[str] | None = None) -> list[dict]:
        """Labelled boxes of image `index` for the canonical `objects` column: each object's 16-px cell (XYWH
        pixels) once under its shape label and once under its colour label (those in `label_names`, default all).
        The cell is the object's box in this world: objects are drawn 11.5-14.7 px wide, centred in their cell with
        a small jitter; backgrounds cover the whole image and get no box."""
        allowed = set(ALL_LABELS if label_names is None else label_names)
        boxes = []
        for slot in range(MAX_OBJECTS):
            shape_id = int(self.shape_ids[index, slot])
            if shape_id < 0:
                continue
            row, col = divmod(int(self.cells[index, slot]), GRID)
            bbox = [float(col * CELL_SIZE), float(row * CELL_SIZE), float(CELL_SIZE), float(CELL_SIZE)]
            for name in (SHAPE_NAMES[shape_id], COLOUR_NAMES[int(self.colour_ids[index, slot])]):
                if name in allowed:
                    boxes.append({"label": name, "bbox": list(bbox)})
        return boxes

    @staticmethod
    def concatenate(parts: Sequence[Scenes]) -> Scenes:
        return Scenes(
            shape_ids=np.concatenate([p.shape_ids for p in parts]),
            colour_ids=np.concatenate([p.colour_ids for p in parts]),
            cells=np.concatenate([p.cells for p in parts]),
            background_ids=np.concatenate([p.background_ids for p in parts]),
        )

    def select(self, indices: np.ndarray | Sequence[int]) -> Scenes:
        return Scenes(
            self.shape_ids[indices], self.colour_ids[indices], self.cells[indices], self.background_ids[indices]
        )


@dataclass
class SyntheticWorld:
    """N rendered images and their scene descriptions."""

    images: np.ndarray  # [N, 64, 64, 3] uint8
    scenes: Scenes

    def __len__(self) -> int:
        return len(self.scenes)

    def image(self, index: int) -> Image.Image:
        return Image.fromarray(self.images[index])


# ----------------------------------------------------------------------------------------------------------------------
# Rendering


def sample_scenes(num_images: int, rng: np.random.Generator) -> Scenes:
    """Draw scene layouts: object count, distinct shapes, colours, distinct cells and the background."""
    shape_ids = np.full((num_images, MAX_OBJECTS), -1, dtype=np.int16)
    colour_ids = np.full((num_images, MAX_OBJECTS), -1, dtype=np.int16)
    cells = np.full((num_images, MAX_OBJECTS), -1, dtype=np.int16)
    counts = rng.choice(np.arange(1, MAX_OBJECTS + 1), size=num_images, p=NUM_OBJECTS_PROBS)
    for i, n in enumerate(counts):
        shape_ids[i, :n] = rng.choice(len(SHAPE_NAMES), size=n, replace=False)
        colour_ids[i, :n] = rng.integers(0, len(COLOUR_NAMES), size=n)
        cells[i, :n] = rng.choice(GRID * GRID, size=n, replace=False)
    background_ids = rng.integers(0, len(BACKGROUNDS), size=num_images).astype(np.int16)
    return Scenes(shape_ids, colour_ids, cells, background_ids)


_YY, _XX = np.mgrid[0:IMAGE_SIZE, 0:IMAGE_SIZE].astype(np.float32) + 0.5  # pixel centres, [64, 64] each


def render_background(kind: str, rng: np.random.Generator) -> np.ndarray:
    """One muted background of the given pattern: float32 [64, 64, 3] in [0, 255]."""
    grey = rng.uniform(70, 190)
    base = np.clip(grey + rng.uniform(-18, 18, size=3), 0, 255).astype(np.float32)
    delta = rng.uniform(35, 55) * rng.choice([-1.0, 1.0])
    pattern = np.clip(base + delta + rng.uniform(-8, 8, size=3), 0, 255).astype(np.float32)
    if kind == "plain":
        mask = np.zeros((IMAGE_SIZE, IMAGE_SIZE), dtype=np.float32)
    elif kind == "striped":
        period = rng.uniform(6.0, 10.0)
        direction = rng.integers(0, 4)
        coordinate = (_YY, _XX, (_XX + _YY) / np.sqrt(2), (_XX - _YY) / np.sqrt(2))[direction]
        mask = (((coordinate / period + rng.uniform()) % 1.0) < 0.5).astype(np.float32)
    elif kind == "dotted":
        period = rng.uniform(6.0, 8.5)
        radius = rng.uniform(1.3, 2.0)
        dx = (_XX / period + rng.uniform()) % 1.0 - 0.5
        dy = (_YY / period + rng.uniform()) % 1.0 - 0.5
        distance = np.sqrt(dx**2 + dy**2) * period
        mask = np.clip(radius + 0.5 - distance, 0.0, 1.0)
    elif kind == "grid":
        period = rng.uniform(6.0, 9.0)
        line = 1.2 / period
        mask = ((_XX / period + rng.uniform()) % 1.0 < line) | ((_YY / period + rng.uniform()) % 1.0 < line)
        mask = mask.astype(np.float32)
    elif kind == "checkered":
        size = rng.uniform(4.0, 8.0)
        ox, oy = rng.uniform(0, size, size=2)
        mask = ((np.floor((_XX + ox) / size) + np.floor((_YY + oy) / size)) % 2).astype(np.float32)
    elif kind == "gradient":
        angle = rng.uniform(0, 2 * np.pi)
        projection = (_XX - IMAGE_SIZE / 2) * np.cos(angle) + (_YY - IMAGE_SIZE / 2) * np.sin(angle)
        mask = np.clip(projection / IMAGE_SIZE + 0.5, 0.0, 1.0) * 1.6
        mask = np.clip(mask - 0.3, 0.0, 1.0)
    else:
        raise ValueError(f"Unknown background {kind!r}; known: {BACKGROUNDS}.")
    return base + mask[..., None] * (pattern - base)


def render_object_alpha(shape: str, width: float, angle_deg: float, offset: tuple[float, float]) -> np.ndarray:
    """Anti-aliased coverage of one object in its 16x16 cell: float32 [16, 16] in [0, 1]."""
    canvas_size = CELL_SIZE * SUPERSAMPLE
    canvas = Image.new("L", (canvas_size, canvas_size), 0)
    draw = ImageDraw.Draw(canvas)
    scale = width / 2 * SUPERSAMPLE
    angle = np.deg2rad(angle_deg)
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    centre = np.array([canvas_size / 2 + offset[0] * SUPERSAMPLE, canvas_size / 2 + offset[1] * SUPERSAMPLE])
    for polygon, fill in SHAPES[shape]:
        points = polygon @ rotation.T * scale
        points[:, 1] *= -1  # y up -> image rows down
        points += centre
        draw.polygon([tuple(p) for p in points.tolist()], fill=255 * fill)
    coverage = np.asarray(canvas, dtype=np.float32).reshape(CELL_SIZE, SUPERSAMPLE, CELL_SIZE, SUPERSAMPLE)
    return coverage.mean(axis=(1, 3)) / 255.0


def render_scenes(scenes: Scenes, rng: np.random.Generator) -> np.ndarray:
    """Render scene descriptions into uint8 images [N, 64, 64, 3] (rng draws the appearance: jitter, tints)."""
    images = np.empty((len(scenes), IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8)
    for i in range(len(scenes)):
        canvas = render_background(BACKGROUNDS[scenes.background_ids[i]], rng)  # [64, 64, 3] float32
        for slot in range(MAX_OBJECTS):
            shape_id = scenes.shape_ids[i, slot]
            if shape_id < 0:
                continue
            width = rng.uniform(*OBJECT_WIDTH_RANGE)
            max_shift = max((CELL_SIZE - width) / 2 - 0.25, 0.0)
            offset = tuple(rng.uniform(-max_shift, max_shift, size=2))
            angle = rng.uniform(-MAX_ROTATION_DEG, MAX_ROTATION_DEG)
            colour = np.clip(
                _COLOUR_RGB[scenes.colour_ids[i, slot]] + rng.integers(-COLOUR_JITTER, COLOUR_JITTER + 1, size=3),
                0,
                255,
            )
            alpha = render_object_alpha(SHAPE_NAMES[shape_id], width, angle, offset)[..., None]  # [16, 16, 1]
            row, col = divmod(int(scenes.cells[i, slot]), GRID)
            cell = canvas[row * CELL_SIZE : (row + 1) * CELL_SIZE, col * CELL_SIZE : (col + 1) * CELL_SIZE]
            cell[...] = cell * (1.0 - alpha) + colour * alpha
        images[i] = np.clip(np.rint(canvas), 0, 255).astype(np.uint8)
    return images


def _generate_chunk(args: tuple[int, int, int, int]) -> tuple[np.ndarray, Scenes]:
    seed, stream, chunk_index, num_images = args
    rng = np.random.default_rng([seed, stream, chunk_index])
    scenes = sample_scenes(num_images, rng)
    return render_scenes(scenes, rng), scenes


def _resolve_stream(stream: str | int) -> int:
    if isinstance(stream, str):
        if stream not in STREAMS:
            raise ValueError(f"Unknown stream {stream!r}; known: {list(STREAMS)} (or pass an int).")
        return STREAMS[stream]
    return int(stream)


def generate_world(
    num_images: int, seed: int = 0, stream: str | int = "train", num_workers: int | None = None
) -> SyntheticWorld:
    """Generate `num_images` images of the shapes-64 world.

    Args:
        num_images: number of images.
        seed: world seed; with `stream` it fixes every byte of the output.
        stream: which independent stream of that seed ("pretrain", "train", "validation", "test" or an int), so that
            the splits of one seed never share images.
        num_workers: processes used to render (default: up to 2, serial for small worlds); does not change the output.
    """
    if num_images < 0:
        raise ValueError(f"num_images must be >= 0, got {num_images}.")
    stream_id = _resolve_stream(stream)
    tasks = [
        (int(seed), stream_id, chunk, min(CHUNK_SIZE, num_images - chunk * CHUNK_SIZE))
        for chunk in range((num_images + CHUNK_SIZE - 1) // CHUNK_SIZE)
    ]
    if num_workers is None:
        num_workers = min(2, os.cpu_count() or 1)
    if num_workers > 1 and len(tasks) > 2:
        with multiprocessing.get_context("fork").Pool(num_workers) as pool:
            results = pool.map(_generate_chunk, tasks, chunksize=4)
    else:
        results = [_generate_chunk(task) for task in tasks]
    if not results:
        empty = np.zeros((0, MAX_OBJECTS), dtype=np.int16)
        return SyntheticWorld(
            np.zeros((0, IMAGE_SIZE, IMAGE_SIZE, 3), np.uint8), Scenes(empty, empty, empty, np.zeros(0, np.int16))
        )
    return SyntheticWorld(
        images=np.concatenate([images for images, _ in results]),
        scenes=Scenes.concatenate([scenes for _, scenes in results]),
    )


# ----------------------------------------------------------------------------------------------------------------------
# Captions

_PREFIXES = ("a photo of", "a picture of", "an image of", "a drawing of", "a rendering of", "there is", "")
_PLURAL_PREFIXES = ("a photo of", "a picture of", "an image of", "a drawing of", "a rendering of", "there are", "")
_CONNECTORS = (" and ", ", ", " with ", " next to ")
_BACKGROUND_PHRASES = {
    "plain": ("on a plain background", "on a plain background", "with a plain background"),
    "striped": ("on a striped background", "with stripes", "on stripes"),
    "dotted": ("on a dotted background", "with dots", "on dots"),
    "grid": ("on a grid background", "on a grid", "with a grid"),
    "checkered": ("on a checkered background", "on a checkerboard", "with checkers"),
    "gradient": ("on a gradient background", "on a gradient", "with a gradient"),
}
_BACKGROUND_TAGS = {
    "plain": "plain background",
    "striped": "stripes",
    "dotted": "dots",
    "grid": "grid",
    "checkered": "checkers",
    "gradient": "gradient",
}


def _article(phrase: str) -> str:
    return "an" if phrase[0] in "aeiou" else "a"


def _with_article(phrase: str) -> str:
    return f"{_article(phrase)} {phrase}"


def _join(parts: list[str], rng: np.random.Generator) -> str:
    if len(parts) == 1:
        return parts[0]
    style = rng.integers(0, 3)
    if style == 0:  # "a, b and c"
        return ", ".join(parts[:-1]) + " and " + parts[-1]
    if style == 1:  # "a and b and c"
        return " and ".join(parts)
    return parts[0] + "".join(str(rng.choice(_CONNECTORS)) + p for p in parts[1:])


def _finish(text: str, rng: np.random.Generator) -> str:
    if rng.random() < 0.15:
        text += " in the scene"
    return text + ("." if rng.random() < 0.5 else "")


class CaptionSampler:
    """Draws captions of scenes in varied phrasing.

    `full` captions mention every object with its colour and the background (the dataset's `caption` column).
    `sample` captions follow the pretraining recipe: random order, each object mentioned w.p. `p_object` (at least one),
    with its colour w.p. `p_colour`, the background w.p. `p_background`, a share of tag-style captions, and a share
    `p_short` of short captions (one object, or only the background w.p. `p_short_background`).
    """

    def __init__(
        self,
        p_object: float = 0.9,
        p_colour: float = 0.75,
        p_background: float = 0.5,
        p_tags: float = 0.2,
        p_short: float = 0.3,
        p_short_background: float = 0.15,
    ) -> None:
        self.p_object = p_object
        self.p_colour = p_colour
        self.p_background = p_background
        self.p_tags = p_tags
        self.p_short = p_short
        self.p_short_background = p_short_background

    def full(self, scenes: Scenes, index: int, rng: np.random.Generator) -> str:
        objects = scenes.objects(index)
        order = rng.permutation(len(objects))
        phrases = [_with_article(f"{objects[k][0]} {objects[k][1]}") for k in order]
        background = str(rng.choice(_BACKGROUND_PHRASES[scenes.background(index)]))
        prefix = str(rng.choice(_PLURAL_PREFIXES if len(objects) > 1 else _PREFIXES))
        text = " ".join(filter(None, [prefix, _join(phrases, rng), background]))
        return _finish(text, rng)

    def sample(self, scenes: Scenes, index: int, rng: np.random.Generator) -> str:
        objects = scenes.objects(index)
        background = scenes.background(index)
        if rng.random() < self.p_short:
            if rng.random() < self.p_short_background:
                return _finish(f"{rng.choice(_PREFIXES[:5])} {_with_article(background + ' background')}", rng)
            mentioned = [objects[rng.integers(len(objects))]]
        else:
            order = rng.permutation(len(objects))
            keep = rng.random(len(objects)) < self.p_object
            if not keep.any():
                keep[rng.integers(len(objects))] = True
            mentioned = [objects[k] for k in order if keep[k]]
        nouns = [f"{colour} {shape}" if rng.random() < self.p_colour else shape for colour, shape in mentioned]
        with_background = rng.random() < self.p_background
        if rng.random() < self.p_tags:
            tags = nouns + ([_BACKGROUND_TAGS[background]] if with_background else [])
            return ", ".join(tags)
        prefix = str(rng.choice(_PLURAL_PREFIXES if len(nouns) > 1 else _PREFIXES))
        phrases = [_with_article(noun) for noun in nouns]
        parts = [prefix, _join(phrases, rng)]
        if with_background:
            parts.append(str(rng.choice(_BACKGROUND_PHRASES[background])))
        return _finish(" ".join(filter(None, parts)), rng)


def caption_words() -> list[str]:
    """Every word (and punctuation mark) a caption of this world can contain: the tokenizer's training corpus."""
    words = set(SHAPE_NAMES) | set(COLOUR_NAMES) | set(BACKGROUNDS) | {"background", ",", "."}
    for phrase in (*_PREFIXES, *_PLURAL_PREFIXES, *_CONNECTORS, " in the scene", *_BACKGROUND_TAGS.values()):
        words.update(phrase.replace(",", " ").split())
    for phrases in _BACKGROUND_PHRASES.values():
        for phrase in phrases:
            words.update(phrase.split())
    words.update({"a", "an", "and"})
    return sorted(words)


# ----------------------------------------------------------------------------------------------------------------------
# Label set and canonical dataset


def read_world_labelset(path: str | os.PathLike, known_labels: Collection[str], world: str) -> dict:
    """A generated world's label set file, checked against the labels that world can draw: {"name", "labels",
    "unseen", ...}; a clear `ValueError` naming the file otherwise."""
    path = Path(path)
    try:
        labelset = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise ValueError(f"Cannot read label set {path}: {error}") from error
    for field in ("name", "labels", "unseen"):
        if field not in labelset:
            raise ValueError(f"Label set {path} lacks the field {field!r}.")
    unknown = [name for name in labelset["labels"] if name not in known_labels]
    if unknown:
        raise ValueError(f"Label set {path}: labels {unknown[:10]} are not part of the {world} world.")
    stray = [name for name in labelset["unseen"] if name not in labelset["labels"]]
    if stray:
        raise ValueError(f"Label set {path}: unseen labels {stray} are not in its 'labels'.")
    return labelset


def load_labelset(path: str | os.PathLike | None = None) -> dict:
    """The synthetic label set (`ovmlc/labelsets/synthetic.json`): {"name", "labels", "unseen", "source", ...}."""
    return read_world_labelset(path if path is not None else LABELSET_PATH, ALL_LABELS, "synthetic")


def build_dataset_splits(
    num_train: int = 10_000,
    num_validation: int = 1_000,
    num_test: int = 2_000,
    seed: int = 0,
    num_workers: int | None = None,
) -> dict[str, dict]:
    """Generate the splits of the canonical synthetic dataset as plain columns.

    Returns {split: {"image": [PIL], "labels": [[label, ...]], "image_id": [str], "caption": [str], "objects":
    [[{"label", "bbox"}, ...]]}}; each split is its own stream of `seed`, so train, validation and test never share
    images. Labels and boxes are the full annotation over the label set (seen and unseen); training recipes restrict
    themselves to the seen labels.
    """
    labelset = load_labelset()
    label_names = labelset["labels"]
    sampler = CaptionSampler()
    splits = {}
    for split, count in (("train", num_train), ("validation", num_validation), ("test", num_test)):
        world = generate_world(count, seed=seed, stream=split, num_workers=num_workers)
        caption_rng = np.random.default_rng([seed, STREAMS[split], 1_000_003])
        splits[split] = world_split_columns(world, label_names, sampler, caption_rng, f"synthetic-{seed}-{split}")
    return splits


def world_split_columns(world, label_names: Sequence[str], sampler, caption_rng, id_prefix: str) -> dict[str, list]:
    """One generated split as canonical columns (`image`, `labels`, `image_id`, `caption`, `objects`); `world` is
    any generated world (`.image(i)`, `.scenes` with `label_matrix`, `object_boxes`), `sampler` its caption sampler."""
    label_names = list(label_names)
    matrix = world.scenes.label_matrix(label_names)  # [N, C] int8
    return {
        "image": [world.image(i) for i in range(len(world))],
        "labels": [[label_names[c] for c in np.flatnonzero(row)] for row in matrix],
        "image_id": [f"{id_prefix}-{i:06d}" for i in range(len(world))],
        "caption": [sampler.full(world.scenes, i, caption_rng) for i in range(len(world))],
        "objects": [world.scenes.object_boxes(i, label_names) for i in range(len(world))],
    }


CONVERTER_VERSION = "1"
DATASET_DESCRIPTION = (
    "ovmlc's procedurally generated shapes-64 world: 64x64 images on a 4x4 grid of 16-px cells holding 1-4 objects "
    "(24 shapes x 8 colours, anti-aliased, jittered and rotated) over one of 6 background patterns, with a caption "
    "that mentions every object, its colour and the background. Labels: the 38-label set `synthetic` (24 shapes, 8 "
    "colours, 6 '<pattern> background'). The world is fully annotated; as for every ovmlc dataset, `train` and "
    "`validation` carry the seen labels only (unseen shapes, colours and backgrounds still appear in their images, "
    "unlabelled) and `test` carries all 38. Each split is its own seeded stream of the generator, so the splits never "
    "share images and the same seed reproduces every byte (`ovmlc.data.synthetic.generate_world(n, seed, stream)` "
    "regenerates any split with its full annotation)."
)


class SyntheticConverter(Converter):
    """`ovmlc data prepare synthetic`: generate the shapes-64 world as a canonical dataset (no raw files needed)."""

    name = "synthetic"
    help = "generate ovmlc's procedural shapes-64 world (offline; 38 labels, captions)"
    version = CONVERTER_VERSION
    requires_root = False  # nothing to read: the world is generated
    requires_root = False  # generated, no raw files

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--num-train", type=int, default=10_000, help="training images (default 10000)")
        parser.add_argument("--num-val", type=int, default=1_000, help="validation images (default 1000)")
        parser.add_argument("--num-test", type=int, default=2_000, help="test images (default 2000)")
        if "--seed" not in parser._option_string_actions:  # the common flags of `data prepare` may already have it
            parser.add_argument("--seed", type=int, default=0, help="world seed (default 0)")

    def plan(self, args: argparse.Namespace) -> SourcePlan:
        counts = {"train": args.num_train, "validation": args.num_val, "test": args.num_test}
        for split, count in counts.items():
            if count is None or count < 0:
                raise ValueError(f"synthetic: the number of {split} images must be >= 0, got {count}")
        return synthetic_source_plan(counts, seed=int(getattr(args, "seed", 0) or 0))


def _register_converter() -> None:
    # `ovmlc.data.converters` registers `SyntheticConverter` when it imports this module first; when this module is
    # imported first, the registry was built while this module was still half-initialised, so register here.
    import sys

    registry = sys.modules.get("ovmlc.data.converters")
    if registry is not None and hasattr(registry, "register_converter") and "synthetic" not in registry.CONVERTERS:
        registry.register_converter(SyntheticConverter())


def synthetic_source_plan(counts: dict[str, int], seed: int = 0, num_workers: int | None = None) -> SourcePlan:
    """The `SourcePlan` of the synthetic world: splits `train`, `validation`, `test`, each its own stream of `seed`."""
    labelset = load_labelset()
    label_names = list(labelset["labels"])
    unseen = list(labelset["unseen"])
    seen = [name for name in label_names if name not in set(unseen)]
    splits = build_dataset_splits(
        counts["train"], counts["validation"], counts["test"], seed=seed, num_workers=num_workers
    )
    records = {
        split: [
            SourceRecord(image_id=image_id, image=image, labels=labels, caption=caption, objects=objects)
            for image_id, image, labels, caption, objects in zip(
                columns["image_id"], columns["image"], columns["labels"], columns["caption"], columns["objects"]
            )
        ]
        for split, columns in splits.items()
    }
    return SourcePlan(
        source="synthetic",
        converter_version=CONVERTER_VERSION,
        label_names=label_names,
        seen_labels=seen,
        unseen_labels=unseen,
        annotation="full",
        title="synthetic shapes-64 (ovmlc canonical multi-label dataset)",
        description=DATASET_DESCRIPTION,
        splits=records,
        split_sizes=dict(counts),
        has_captions=True,
        has_objects=True,
        notes=[
            f"Generated by ovmlc.data.synthetic with seed {seed} (streams: "
            + ", ".join(f"{split} {STREAMS[split]}" for split in ("train", "validation", "test"))
            + ").",
            f"Unseen labels ({len(unseen)}): {', '.join(unseen)}.",
            "`objects`: one box per object and label (its shape and its colour), the object's 16-px cell in XYWH "
            "pixels; background patterns cover the whole image and have no box.",
        ],
        extra_metadata={"world_seed": seed, "generator": "ovmlc.data.synthetic (shapes-64)"},
        pretty_name="ovmlc synthetic shapes-64",
        license_name="apache-2.0",
    )


def write_examples(out_dir: str | os.PathLike, num_images: int = 6, seed: int = 1, upscale: int = 4) -> list[dict]:
    """Render example images (raw 64 px + nearest-neighbour upscaled copies) and an `examples.json` of their labels."""
    world = generate_world(num_images, seed=seed, stream="examples", num_workers=1)
    caption_rng = np.random.default_rng([seed, STREAMS["examples"], 1_000_003])
    source = f"Images of ovmlc's synthetic shapes-64 world (ovmlc.data.synthetic.write_examples(seed={seed}))."
    return write_world_examples(out_dir, world, CaptionSampler(), caption_rng, load_labelset(), source, upscale)


_register_converter()
