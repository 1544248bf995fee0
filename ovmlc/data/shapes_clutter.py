"""The "shapes-clutter" world: an offline measuring ground where learning on seen labels can help unseen labels.

Two kinds of images share one catalogue of concepts (50 procedural shapes, 12 colours, 6 object textures, 8 "stuff"
effects):

* **web** (the contrastive pretraining corpus): 1-2 large salient objects (11.5-15 px, each filling one 16-px cell of
  the 64-px canvas, i.e. one ViT patch at `patch_size=16`) and 0-3 small (6-9 px) distractors over a calm background,
  rendered clean. Captions name the largest object almost always, the second sometimes, small objects and stuff
  rarely, and use synonyms for colours and textures ("crimson", "polka-dot").
* **tagging** (the downstream multi-label dataset): 4-10 objects, half large (cell-sized) and half small (6-9 px,
  often on top of a large one), about 30% of them partly occluded, over a cluttered textured background, with blur,
  sensor noise and a colour cast. Every object at least half visible is labelled (shape, colour, texture), plus the
  stuff effects present; label names use one plain word per concept ("red", "striped"), not the caption synonyms.

Layout and rendering style are independent knobs (`WorldConfig`), so controls such as "tagging layout rendered in the
web style" are one argument away. Every object keeps its label, its visible bounding box in pixels and its visible
fraction (`Scenes.object_annotations`), for region-level methods.

Generation is deterministic: every image comes from its own `numpy.random.Generator` seeded with `(seed, stream,
layout/style, image index)`, so image i of a stream is the same bytes whatever the number of images asked for, the
chunking (`CHUNK_SIZE` images per task) or the number of worker processes. docs/synthetic.md ("shapes-clutter") has
the commands that build the world, its CLIP and the result tables, and what has been measured.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np
from PIL import Image, ImageDraw

from ovmlc.data.converters.base import Converter
from ovmlc.data.examples import write_world_examples
from ovmlc.data.prepare import SourcePlan, SourceRecord
from ovmlc.resources import SHAPES_CLUTTER_LABELSET as LABELSET_PATH
from ovmlc.yaml_schema import UnitFloat

WORLD_NAME = "shapes-clutter"
IMAGE_SIZE = 64
CELL_SIZE = 16  # one ViT patch at patch_size=16
GRID = IMAGE_SIZE // CELL_SIZE  # 4 cells per side
CHUNK_SIZE = 256
SUPERSAMPLE = 4  # objects are drawn at 4x and box-downsampled (anti-aliasing)
MAX_OBJECTS = 10
MIN_TEXTURED_SIZE = 12.0  # px; smaller objects are always solid (a texture would not be visible)
LABEL_VISIBILITY = 0.5  # an object is labelled when at least this fraction of it is visible

# Streams keep the worlds of different uses independent for one seed.
STREAMS = {"pretrain": 0, "train": 1, "validation": 2, "test": 3, "examples": 4}
LAYOUTS = ("web", "tagging")
STYLES = ("web", "tagging")

# ----------------------------------------------------------------------------------------------------------------------
# Shape catalogue (50 shapes). Each shape is a list of (polygon in [-1, 1]^2 with y up, fill): fill 1 paints, fill 0
# cuts a hole, applied in order. The generators below are parametric (k points, arms, petals...); the catalogue takes
# one count of each (`SHAPES`).


def _circle(cx: float = 0.0, cy: float = 0.0, r: float = 1.0, rx: float | None = None, n: int = 40) -> np.ndarray:
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return np.stack([cx + (r if rx is None else rx) * np.cos(t), cy + r * np.sin(t)], axis=1)


def _regular(k: int, r: float = 1.0, start_deg: float = 90.0) -> np.ndarray:
    t = np.deg2rad(start_deg) + np.arange(k) * 2 * np.pi / k
    return np.stack([r * np.cos(t), r * np.sin(t)], axis=1)


def _rect(x0: float, y0: float, x1: float, y1: float) -> np.ndarray:
    return np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], dtype=np.float64)


def _rotate(points: np.ndarray, deg: float) -> np.ndarray:
    a = np.deg2rad(deg)
    return points @ np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]]).T


def _star_points(k: int, inner: float, start_deg: float = 90.0) -> np.ndarray:
    t = np.deg2rad(start_deg) + np.arange(2 * k) * np.pi / k
    r = np.where(np.arange(2 * k) % 2 == 0, 1.0, inner)
    return np.stack([r * np.cos(t), r * np.sin(t)], axis=1)


def _sector(r0: float, r1: float, a0: float, a1: float, n: int = 10) -> np.ndarray:
    """Annular sector between radii r0 < r1 and angles a0 < a1 (radians)."""
    t = np.linspace(a0, a1, n)
    outer = np.stack([r1 * np.cos(t), r1 * np.sin(t)], axis=1)
    inner = np.stack([r0 * np.cos(t[::-1]), r0 * np.sin(t[::-1])], axis=1)
    return np.concatenate([outer, inner]) if r0 > 0 else np.concatenate([outer, [[0.0, 0.0]]])


def _polygon(k: int) -> list:
    return [(_regular(k, start_deg=90.0 + (45.0 if k == 4 else 0.0)), 1)]


def _star(k: int) -> list:
    return [(_star_points(k, 0.42), 1)]


def _cross(k: int) -> list:
    parts = [(_circle(r=0.3, n=24), 1)]
    for j in range(k):
        parts.append((_rotate(_rect(0.0, -0.16, 1.0, 0.16), 90.0 + j * 360.0 / k), 1))
    return parts


def _flower(k: int) -> list:
    petal = min(0.42, np.sin(np.pi / k) / (0.85 + np.sin(np.pi / k)))  # neighbouring petals barely touch
    parts = [(_circle(r=0.38, n=24), 1)]
    for j in range(k):
        a = np.pi / 2 + j * 2 * np.pi / k
        parts.append((_circle((1 - petal) * np.cos(a), (1 - petal) * np.sin(a), petal, n=24), 1))
    return parts


def _gear(k: int) -> list:
    parts = [(_circle(r=0.72, n=48), 1), (_circle(r=0.25, n=20), 0)]
    half = 0.55 * np.pi / k
    for j in range(k):
        a = j * 2 * np.pi / k
        parts.insert(1, (_sector(0.6, 1.0, a - half, a + half, n=4), 1))
    return parts


def _frame(k: int) -> list:
    start = 90.0 + (45.0 if k == 4 else 0.0)
    return [(_regular(k, 1.0, start), 1), (_regular(k, 0.55, start), 0)]


def _vane(k: int) -> list:
    parts = []
    for j in range(k):
        a = np.pi / 2 + j * 2 * np.pi / k
        width = np.pi / k * 0.9
        parts.append(
            (np.array([[0.0, 0.0], [np.cos(a), np.sin(a)], [0.55 * np.cos(a + width), 0.55 * np.sin(a + width)]]), 1)
        )
    return parts


def _sun(k: int) -> list:
    parts = [(_circle(r=0.45, n=32), 1)]
    half = 0.45 * np.pi / k
    for j in range(k):
        a = np.pi / 2 + j * 2 * np.pi / k
        parts.append((np.array([[0.58 * np.cos(a - half), 0.58 * np.sin(a - half)], [np.cos(a), np.sin(a)],
                                [0.58 * np.cos(a + half), 0.58 * np.sin(a + half)]]), 1))  # fmt: skip
    return parts


def _comb(k: int) -> list:
    parts = [(_rect(-1.0, -1.0, 1.0, -0.55), 1)]
    width = 2.0 / (2 * k - 1)
    for j in range(k):
        x0 = -1.0 + 2 * j * width
        parts.append((_rect(x0, -0.6, x0 + width, 1.0), 1))
    return parts


def _bar(k: int) -> list:
    height = 2.0 / (2 * k - 1)
    return [(_rect(-0.9, -1.0 + 2 * j * height, 0.9, -1.0 + (2 * j + 1) * height), 1) for j in range(k)]


def _pip(k: int) -> list:
    r = min(0.4, 0.9 * np.sin(np.pi / k) * 0.62)
    return [(_circle((1 - r) * np.cos(a), (1 - r) * np.sin(a), r, n=20), 1)
            for a in np.pi / 2 + np.arange(k) * 2 * np.pi / k]  # fmt: skip


def _step(k: int) -> list:
    size = 2.0 / k
    points = [[-1.0, -1.0], [1.0, -1.0]]
    for j in range(k):
        points += [[1.0 - j * size, -1.0 + (j + 1) * size], [1.0 - (j + 1) * size, -1.0 + (j + 1) * size]]
    return [(np.array(points), 1)]


def _zag(k: int) -> list:
    xs = np.linspace(-1.0, 1.0, 2 * k + 1)
    ys = np.where(np.arange(2 * k + 1) % 2 == 0, -0.45, 0.45)
    thickness = 0.5
    upper = np.stack([xs, ys + thickness / 2], axis=1)
    lower = np.stack([xs[::-1], ys[::-1] - thickness / 2], axis=1)
    return [(np.concatenate([upper, lower]), 1)]


def _chevron(k: int) -> list:
    height = 2.0 / k
    parts = []
    for j in range(k):
        y = -1.0 + j * height
        t = min(0.55 * height, 0.45)
        parts.append((np.array([[-1.0, y], [0.0, y + 0.8 * height], [1.0, y], [1.0, y + t], [0.0, y + 0.8 * height + t],
                                [-1.0, y + t]]), 1))  # fmt: skip
    return parts


def _lobe(k: int) -> list:
    t = np.linspace(0, 2 * np.pi, 72, endpoint=False)
    r = 0.72 + 0.28 * np.cos(k * (t - np.pi / 2))
    return [(np.stack([r * np.cos(t), r * np.sin(t)], axis=1), 1)]


def _fan(k: int) -> list:
    gap = 0.35 * 2 * np.pi / k if k > 1 else 0.0
    starts = np.pi / 2 + np.arange(k) * 2 * np.pi / k + gap / 2
    return [(_sector(0.0, 1.0, a, a + 2 * np.pi / k - gap, 10), 1) for a in starts]


def _ladder(k: int) -> list:
    parts = [(_rect(-0.85, -1.0, -0.5, 1.0), 1), (_rect(0.5, -1.0, 0.85, 1.0), 1)]
    pitch = 2.0 / k
    for j in range(k):
        y = -1.0 + (j + 0.5) * pitch
        parts.append((_rect(-0.5, y - 0.1, 0.5, y + 0.1), 1))
    return parts


def _crown(k: int) -> list:
    points = [[-1.0, -0.8], [1.0, -0.8]]
    xs = np.linspace(1.0, -1.0, k + 1)
    for j in range(k):
        points += [[xs[j], 0.0], [(xs[j] + xs[j + 1]) / 2, 0.95]]
    points += [[-1.0, 0.0]]
    return [(np.array(points), 1)]


def _plate(k: int) -> list:
    parts = [(_rect(-0.9, -0.9, 0.9, 0.9), 1)]
    r = 0.18 if k > 4 else 0.22
    spots = {1: [(0, 0)], 2: [(-0.45, 0.45), (0.45, -0.45)], 3: [(-0.45, 0.45), (0, 0), (0.45, -0.45)],
             4: [(-0.45, -0.45), (-0.45, 0.45), (0.45, -0.45), (0.45, 0.45)],
             5: [(-0.45, -0.45), (-0.45, 0.45), (0.45, -0.45), (0.45, 0.45), (0, 0)],
             6: [(-0.45, -0.5), (-0.45, 0.0), (-0.45, 0.5), (0.45, -0.5), (0.45, 0.0), (0.45, 0.5)]}  # fmt: skip
    parts += [(_circle(x, y, r, n=16), 0) for x, y in spots[k]]
    return parts


def _wheel(k: int) -> list:
    parts = [(_circle(r=1.0, n=48), 1), (_circle(r=0.72, n=48), 0), (_circle(r=0.22, n=16), 1)]
    for j in range(k):
        parts.append((_rotate(_rect(0.0, -0.1, 0.8, 0.1), 90.0 + j * 360.0 / k), 1))
    return parts


def _tower(k: int) -> list:
    height = 2.0 / k
    return [(_rect(-1.0 + j / k * 0.8, -1.0 + j * height, 1.0 - j / k * 0.8, -1.0 + (j + 1) * height - 0.12), 1)
            for j in range(k)]  # fmt: skip


def _heart() -> np.ndarray:
    t = np.linspace(0, 2 * np.pi, 48, endpoint=False)
    x = 16 * np.sin(t) ** 3
    y = 13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t)
    return np.stack([x / 17.0, (y + 2.5) / 15.5], axis=1)


_GLYPHS: dict[str, list] = {
    "circle": [(_circle(), 1)],
    "heart": [(_heart(), 1)],
    "crescent": [(_circle(), 1), (_circle(cx=0.45, cy=0.2, r=0.82), 0)],
    "ellipse": [(_circle(rx=1.0, r=0.55), 1)],
    "semicircle": [
        (np.stack([np.cos(np.linspace(0, np.pi, 25)), 1.1 * np.sin(np.linspace(0, np.pi, 25)) - 0.5], 1), 1)
    ],
    "trapezoid": [(np.array([[-1.0, -0.6], [1.0, -0.6], [0.48, 0.6], [-0.48, 0.6]]), 1)],
    "diamond": [(np.array([[0.0, 1.0], [0.62, 0.0], [0.0, -1.0], [-0.62, 0.0]]), 1)],
    "arrow": [(np.array([[-1, -0.22], [0.1, -0.22], [0.1, -0.62], [1, 0], [0.1, 0.62], [0.1, 0.22], [-1, 0.22]]), 1)],
    "hourglass": [(np.array([[-0.8, 1], [0.8, 1], [0.12, 0], [0.8, -1], [-0.8, -1], [-0.12, 0]]), 1)],
    "bolt": [(np.array([[0.25, 1], [-0.6, -0.08], [-0.05, -0.08], [-0.3, -1], [0.62, 0.22], [0.06, 0.22]]), 1)],
    "cloud": [
        (_circle(-0.5, -0.15, 0.42), 1),
        (_circle(0.05, 0.12, 0.62), 1),
        (_circle(0.55, -0.2, 0.37), 1),
        (_rect(-0.5, -0.57, 0.55, -0.15), 1),
    ],  # fmt: skip
    "drop": [(_circle(0.0, -0.33, 0.64), 1), (np.array([[-0.58, -0.08], [0.0, 1.0], [0.58, -0.08]]), 1)],
    "flag": [(_rect(-0.88, -1.0, -0.68, 1.0), 1), (_rect(-0.68, 0.02, 0.92, 1.0), 1)],
    "house": [
        (np.array([[-0.8, -1.0], [0.8, -1.0], [0.8, 0.2], [0.0, 1.0], [-0.8, 0.2]]), 1),
        (_rect(-0.2, -1.0, 0.2, -0.4), 0),
    ],  # fmt: skip
    "keyhole": [(_circle(0.0, 0.35, 0.55), 1), (np.array([[-0.2, 0.3], [0.2, 0.3], [0.5, -1.0], [-0.5, -1.0]]), 1)],
    "parallelogram": [(np.array([[-1.0, -0.6], [0.45, -0.6], [1.0, 0.6], [-0.45, 0.6]]), 1)],
    "kite": [(np.array([[0.0, 1.0], [0.8, 0.5], [0.0, -1.0], [-0.8, 0.5]]), 1)],
    "bell": [
        (
            np.concatenate([_circle(0.0, 0.15, 0.6, n=40)[:21], np.array([[-0.6, 0.15], [-0.85, -0.7], [0.85, -0.7]])]),
            1,
        ),
        (_circle(0.0, -0.85, 0.18, n=16), 1),
    ],  # fmt: skip
}

# The 50 shapes: 26 from the generators (one count per family, so no two shapes differ only by a count of points or
# arms, which a one-patch object of 11-15 px does not show; docs/synthetic.md "Catalogue v2"), the 18 glyphs above and
# 6 letter-like ones. One word per name, so a label is one token and no two shapes share a word.
SHAPES: dict[str, list] = {
    "triangle": _polygon(3),
    "square": _polygon(4),
    "hexagon": _polygon(6),
    "star": _star(5),
    "tripod": _cross(3),
    "plus": _cross(4),
    "cross": [(_rotate(polygon, 45.0), fill) for polygon, fill in _cross(4)],
    "flower": _flower(5),
    "gear": _gear(8),
    "ring": [(_circle(r=1.0, n=48), 1), (_circle(r=0.55, n=48), 0)],
    "frame": _frame(4),
    "pinwheel": _vane(4),
    "sun": _sun(8),
    "comb": _comb(4),
    "bars": _bar(3),
    "pips": _pip(3),
    "stairs": _step(3),
    "zigzag": _zag(3),
    "chevron": _chevron(2),
    "clover": _lobe(4),
    "fan": _fan(3),
    "ladder": _ladder(3),
    "crown": _crown(3),
    "plate": _plate(4),
    "wheel": _wheel(6),
    "tower": _tower(3),
    **_GLYPHS,
    "tee": [(_rect(-1.0, 0.5, 1.0, 1.0), 1), (_rect(-0.25, -1.0, 0.25, 0.5), 1)],
    "ell": [(_rect(-0.8, -1.0, -0.3, 1.0), 1), (_rect(-0.3, -1.0, 0.8, -0.5), 1)],
    "arch": [
        (_sector(0.45, 1.0, 0.0, np.pi, 20) + np.array([0.0, -0.3]), 1),
        (_rect(-1.0, -1.0, -0.45, -0.3), 1),
        (_rect(0.45, -1.0, 1.0, -0.3), 1),
    ],  # fmt: skip
    "capsule": [(_circle(-0.55, 0.0, 0.45), 1), (_circle(0.55, 0.0, 0.45), 1), (_rect(-0.55, -0.45, 0.55, 0.45), 1)],
    "tick": [(np.array([[-1.0, 0.1], [-0.55, 0.45], [-0.2, -0.05], [0.65, 0.95], [1.0, 0.6], [-0.2, -0.95]]), 1)],
    "spade": [
        (_circle(-0.38, -0.05, 0.45), 1),
        (_circle(0.38, -0.05, 0.45), 1),
        (np.array([[-0.8, 0.1], [0.0, 1.0], [0.8, 0.1]]), 1),
        (np.array([[-0.3, -1.0], [0.3, -1.0], [0.0, -0.3]]), 1),
    ],  # fmt: skip
}
SHAPE_NAMES = tuple(SHAPES)

# Colours: label name -> (RGB, caption synonyms; the label word itself is one of them).
COLOURS: dict[str, tuple[tuple[int, int, int], tuple[str, ...]]] = {
    "red": ((215, 35, 35), ("red", "crimson", "scarlet")),
    "orange": ((245, 135, 25), ("orange", "amber", "tangerine")),
    "yellow": ((235, 215, 40), ("yellow", "golden", "lemon")),
    "lime": ((150, 225, 40), ("lime", "chartreuse")),
    "green": ((30, 140, 50), ("green", "emerald")),
    "cyan": ((40, 210, 220), ("cyan", "turquoise", "aqua")),
    "blue": ((40, 70, 215), ("blue", "azure", "cobalt")),
    "purple": ((130, 50, 180), ("purple", "violet")),
    "pink": ((245, 135, 195), ("pink", "rose")),
    "brown": ((125, 75, 35), ("brown", "chocolate")),
    "white": ((245, 245, 245), ("white", "ivory")),
    "black": ((20, 20, 20), ("black", "ebony")),
}
COLOUR_NAMES = tuple(COLOURS)
_COLOUR_RGB = np.array([rgb for rgb, _ in COLOURS.values()], dtype=np.float32)  # [12, 3]
COLOUR_JITTER = 22

# Object textures: "solid" is the default and is not a label.
TEXTURES: dict[str, tuple[str, ...]] = {
    "solid": ("plain", "solid"),
    "striped": ("striped", "stripy", "banded"),
    "dotted": ("dotted", "spotted", "polka-dot"),
    "checkered": ("checkered", "checked"),
    "hollow": ("hollow", "outlined"),
    "gradient": ("gradient", "shaded"),
    "speckled": ("speckled", "grainy"),
}
TEXTURE_NAMES = tuple(TEXTURES)
TEXTURE_LABELS = TEXTURE_NAMES[1:]

# Stuff: image-level effects. label -> caption phrases; the first one contains the label word (`mention_all` uses it).
STUFF: dict[str, tuple[str, ...]] = {
    "border": ("with a border", "bordered", "with a thick border"),
    "shadow": ("with a shadow", "casting shadows", "with dark shadows"),
    "grid": ("on a grid", "over grid lines", "with grid lines"),
    "noise": ("with heavy noise", "noisy", "with static noise"),
    "vignette": ("with a vignette", "with dark corners", "vignetted"),
    "scribble": ("with a scribble", "with scribbles", "scribbled over"),
    "rain": ("in the rain", "with rain streaks", "rainy"),
    "spotlight": ("under a spotlight", "with a spotlight", "spotlit"),
}
STUFF_NAMES = tuple(STUFF)

ALL_LABELS = (*SHAPE_NAMES, *COLOUR_NAMES, *TEXTURE_LABELS, *STUFF_NAMES)
LABEL_GROUPS = {
    "shapes": SHAPE_NAMES,
    "colours": COLOUR_NAMES,
    "textures": TEXTURE_LABELS,
    "stuff": STUFF_NAMES,
}


# ----------------------------------------------------------------------------------------------------------------------
# World configuration


@dataclass(frozen=True)
class WorldConfig:
    """Layout and rendering style of a batch of images (all sizes in px on the 64-px canvas).

    Objects live on a 4x4 grid of 16-px cells (one ViT patch each at `patch_size=16`): a *large* object (11.5-15 px)
    fills a cell, centred with a little jitter; a *small* one (6-9 px) sits anywhere inside a cell, possibly on top of
    a large object (occluding part of it) or next to other small ones.
    """

    layout: str = "tagging"  # "web": 1-2 salient large objects + small distractors; "tagging": 4-10 objects
    style: str = "tagging"  # "web": clean; "tagging": textured background, blur, noise, colour cast
    large_size: tuple[float, float] = (11.5, 15.0)
    small_size: tuple[float, float] = (6.0, 9.0)
    large_jitter: float = 1.0  # px, large objects' offset from their cell centre
    # web layout
    second_salient_prob: float = 0.4
    distractors: tuple[int, int] = (0, 3)
    # tagging layout
    num_objects: tuple[int, int] = (4, 10)
    large_prob: float = 0.5  # share of large objects among the tagging objects
    overlap_prob: float = 0.6  # a small object lands on a cell holding a large object (occlusion)
    # both
    texture_prob: float = 0.5  # objects >= MIN_TEXTURED_SIZE get a non-solid texture with this probability
    stuff_prob: float = 0.15  # each stuff effect independently
    max_rotation_deg: float = 20.0
    # tagging style
    blur_sigma: tuple[float, float] = (0.3, 0.9)
    noise_sigma: tuple[float, float] = (2.0, 8.0)
    colour_cast: float = 0.15  # per-channel gain in [1 - c, 1 + c]
    background_clutter: tuple[float, float] = (14.0, 34.0)  # contrast of the background texture

    def __post_init__(self) -> None:
        if self.layout not in LAYOUTS:
            raise ValueError(f"Unknown layout {self.layout!r}; known: {LAYOUTS}.")
        if self.style not in STYLES:
            raise ValueError(f"Unknown style {self.style!r}; known: {STYLES}.")
        if not 0.0 <= self.large_prob <= 1.0:
            raise ValueError(f"large_prob (the share of cell-sized objects) must be in [0, 1], got {self.large_prob}.")


WEB = WorldConfig(layout="web", style="web")
TAGGING = WorldConfig(layout="tagging", style="tagging")


# ----------------------------------------------------------------------------------------------------------------------
# Scenes


@dataclass
class Scenes:
    """N scenes; object slot `j` of image `i` is empty where `shape_ids[i, j] == -1`. Slots are in drawing order
    (later slots occlude earlier ones). `boxes`, `visible` are filled in by rendering."""

    shape_ids: np.ndarray  # [N, M] int16, index into SHAPE_NAMES, -1 = empty slot
    colour_ids: np.ndarray  # [N, M] int16, index into COLOUR_NAMES
    texture_ids: np.ndarray  # [N, M] int16, index into TEXTURE_NAMES (0 = solid)
    sizes: np.ndarray  # [N, M] float32, nominal object width in px
    centres: np.ndarray  # [N, M, 2] float32, (x, y) in px
    angles: np.ndarray  # [N, M] float32, degrees
    salient: np.ndarray  # [N, M] bool, a salient object of a web layout (captions name these)
    stuff: np.ndarray  # [N, S] bool, stuff effects present
    visible: np.ndarray = field(default=None)  # [N, M] float32, visible fraction of the object (occlusion, borders)
    boxes: np.ndarray = field(default=None)  # [N, M, 4] float32, visible bounding box (x, y, w, h) in px

    def __post_init__(self) -> None:
        if self.visible is None:
            self.visible = np.zeros(self.shape_ids.shape, dtype=np.float32)
        if self.boxes is None:
            self.boxes = np.zeros((*self.shape_ids.shape, 4), dtype=np.float32)

    def __len__(self) -> int:
        return len(self.shape_ids)

    @property
    def labelled(self) -> np.ndarray:
        """[N, M] bool: objects that carry labels (present and at least `LABEL_VISIBILITY` visible)."""
        return (self.shape_ids >= 0) & (self.visible >= LABEL_VISIBILITY)

    def object_annotations(self, index: int, include_hidden: bool = False) -> list[dict]:
        """Every object of image `index` with its labels and visible bounding box, in drawing order.

        Each entry: `label` (shape), `colour`, `texture`, `bbox` = [x, y, w, h] of the visible part in pixels (the
        canonical `objects` column format), `visible_fraction`, `size` (nominal width, px), `labelled`. Objects less
        than `LABEL_VISIBILITY` visible carry no label in the dataset and are left out unless `include_hidden`.
        """
        entries = []
        for slot in np.flatnonzero(self.shape_ids[index] >= 0):
            labelled = bool(self.visible[index, slot] >= LABEL_VISIBILITY)
            if not labelled and not include_hidden:
                continue
            entries.append(
                {
                    "label": SHAPE_NAMES[self.shape_ids[index, slot]],
                    "colour": COLOUR_NAMES[self.colour_ids[index, slot]],
                    "texture": TEXTURE_NAMES[self.texture_ids[index, slot]],
                    "bbox": [round(float(v), 2) for v in self.boxes[index, slot]],
                    "visible_fraction": round(float(self.visible[index, slot]), 4),
                    "size": round(float(self.sizes[index, slot]), 2),
                    "labelled": labelled,
                }
            )
        return entries

    def object_boxes(self, index: int, label_names: Sequence[str] | None = None) -> list[dict]:
        """Labelled boxes of image `index` for the canonical `objects` column: each labelled object's visible box
        (XYWH pixels) under its shape, its colour and (if not solid) its texture label, those in `label_names`
        (default all). Stuff effects cover the whole image and get no box."""
        allowed = set(ALL_LABELS if label_names is None else label_names)
        boxes = []
        for entry in self.object_annotations(index):
            if entry["bbox"][2] <= 0 or entry["bbox"][3] <= 0:  # no pixel at least 30% visible: nothing to point at
                continue
            names = (entry["label"], entry["colour"], *((entry["texture"],) if entry["texture"] != "solid" else ()))
            boxes += [{"label": name, "bbox": list(entry["bbox"])} for name in names if name in allowed]
        return boxes

    def stuff_names(self, index: int) -> list[str]:
        return [STUFF_NAMES[s] for s in np.flatnonzero(self.stuff[index])]

    def labels(self, index: int) -> list[str]:
        """Every label of the world vocabulary present in image `index`: shapes, colours and textures of the labelled
        objects, and the stuff effects."""
        matrix = self.label_matrix(ALL_LABELS, rows=[index])[0]
        return [ALL_LABELS[c] for c in np.flatnonzero(matrix)]

    def label_matrix(self, label_names: Sequence[str], rows: Sequence[int] | None = None) -> np.ndarray:
        """Full annotation over `label_names`: int8 [N, C] with 1 = present, 0 = absent."""
        unknown = [name for name in label_names if name not in _LABEL_INDEX]
        if unknown:
            raise ValueError(f"Labels {unknown[:10]} are not part of the {WORLD_NAME} world.")
        rows = np.arange(len(self)) if rows is None else np.asarray(rows)
        labelled = self.labelled[rows]  # [n, M]
        matrix = np.zeros((len(rows), len(ALL_LABELS)), dtype=np.int8)
        image_index = np.broadcast_to(np.arange(len(rows))[:, None], labelled.shape)[labelled]
        matrix[image_index, self.shape_ids[rows][labelled]] = 1
        matrix[image_index, _COLOUR_OFFSET + self.colour_ids[rows][labelled]] = 1
        textures = self.texture_ids[rows][labelled]
        textured = textures > 0
        matrix[image_index[textured], _TEXTURE_OFFSET + textures[textured] - 1] = 1
        matrix[:, _STUFF_OFFSET:] = self.stuff[rows]
        return matrix[:, [_LABEL_INDEX[name] for name in label_names]]

    def largest_visible_size(self, label_names: Sequence[str]) -> np.ndarray:
        """float32 [N, C]: per shape label, the nominal size (px) of its largest labelled instance (0 = absent, NaN
        for labels that are not shapes). Used to break AP down by object size."""
        out = np.full((len(self), len(label_names)), np.nan, dtype=np.float32)
        labelled = self.labelled
        for c, name in enumerate(label_names):
            if name not in _SHAPE_INDEX:
                continue
            hits = labelled & (self.shape_ids == _SHAPE_INDEX[name])
            out[:, c] = np.where(hits, self.sizes, 0.0).max(axis=1)
        return out

    @staticmethod
    def concatenate(parts: Sequence[Scenes]) -> Scenes:
        width = max((p.shape_ids.shape[1] for p in parts), default=MAX_OBJECTS)
        parts = [p.padded(width) for p in parts]
        return Scenes(**{name: np.concatenate([getattr(p, name) for p in parts]) for name in _SCENE_FIELDS})

    def padded(self, width: int) -> Scenes:
        extra = width - self.shape_ids.shape[1]
        if extra <= 0:
            return self
        fill = {"shape_ids": -1, "colour_ids": -1, "texture_ids": -1}
        arrays = {}
        for name in _SCENE_FIELDS:
            value = getattr(self, name)
            if name == "stuff":
                arrays[name] = value
                continue
            pad = [(0, 0), (0, extra)] + [(0, 0)] * (value.ndim - 2)
            arrays[name] = np.pad(value, pad, constant_values=fill.get(name, 0))
        return Scenes(**arrays)

    def select(self, indices: np.ndarray | Sequence[int]) -> Scenes:
        return Scenes(**{name: getattr(self, name)[indices] for name in _SCENE_FIELDS})


_SCENE_FIELDS = ("shape_ids", "colour_ids", "texture_ids", "sizes", "centres", "angles", "salient", "stuff", "visible",
                 "boxes")  # fmt: skip
_LABEL_INDEX = {name: i for i, name in enumerate(ALL_LABELS)}
_SHAPE_INDEX = {name: i for i, name in enumerate(SHAPE_NAMES)}
_COLOUR_OFFSET = len(SHAPE_NAMES)
_TEXTURE_OFFSET = _COLOUR_OFFSET + len(COLOUR_NAMES)
_STUFF_OFFSET = _TEXTURE_OFFSET + len(TEXTURE_LABELS)


@dataclass
class ClutterWorld:
    """N rendered images and their scene descriptions."""

    images: np.ndarray  # [N, 64, 64, 3] uint8
    scenes: Scenes
    config: WorldConfig

    def __len__(self) -> int:
        return len(self.scenes)

    def image(self, index: int) -> Image.Image:
        return Image.fromarray(self.images[index])


# ----------------------------------------------------------------------------------------------------------------------
# Layout sampling


def _empty_scenes(n: int, m: int) -> dict:
    return {
        "shape_ids": np.full((n, m), -1, dtype=np.int16),
        "colour_ids": np.full((n, m), -1, dtype=np.int16),
        "texture_ids": np.full((n, m), -1, dtype=np.int16),
        "sizes": np.zeros((n, m), dtype=np.float32),
        "centres": np.zeros((n, m, 2), dtype=np.float32),
        "angles": np.zeros((n, m), dtype=np.float32),
        "salient": np.zeros((n, m), dtype=bool),
        "stuff": np.zeros((n, len(STUFF_NAMES)), dtype=bool),
    }


def _cell_centre(cell: int) -> np.ndarray:
    row, col = divmod(int(cell), GRID)
    return np.array([(col + 0.5) * CELL_SIZE, (row + 0.5) * CELL_SIZE])


def _inside_cell(cell: int, size: float, rng: np.random.Generator) -> np.ndarray:
    """A random centre for an object of `size` px that keeps it inside `cell`."""
    room = max((CELL_SIZE - size) / 2 - 0.3, 0.0)
    return _cell_centre(cell) + rng.uniform(-room, room, size=2)


def sample_scenes(num_images: int, config: WorldConfig, rng: np.random.Generator) -> Scenes:
    """Draw scene layouts (objects, sizes, cells, colours, textures, stuff) for `config.layout`."""
    m = MAX_OBJECTS if config.layout == "tagging" else 2 + config.distractors[1]
    arrays = _empty_scenes(num_images, m)
    for i in range(num_images):
        if config.layout == "tagging":
            count = int(rng.integers(config.num_objects[0], config.num_objects[1] + 1))
            num_large = min(int(rng.binomial(count, config.large_prob)), GRID * GRID)
        else:
            num_large = 2 if rng.random() < config.second_salient_prob else 1
            count = num_large + int(rng.integers(config.distractors[0], config.distractors[1] + 1))
        large = np.arange(count) < num_large  # large objects first: the small ones are drawn on top
        sizes = np.where(
            large, rng.uniform(*config.large_size, size=count), rng.uniform(*config.small_size, size=count)
        )
        if config.layout == "web" and num_large == 2:
            sizes[1] = min(sizes[1], sizes[0] - 0.5)  # the first salient object is the largest
        large_cells = rng.choice(GRID * GRID, size=num_large, replace=False)
        free_cells = np.setdiff1d(np.arange(GRID * GRID), large_cells)
        centres = np.zeros((count, 2))
        for j in range(count):
            if large[j]:
                centres[j] = _cell_centre(large_cells[j]) + rng.uniform(-1, 1, size=2) * config.large_jitter
            elif (
                num_large and config.layout == "tagging" and (rng.random() < config.overlap_prob or not len(free_cells))
            ):
                centres[j] = _inside_cell(rng.choice(large_cells), sizes[j], rng)  # on top of a large object
            else:
                centres[j] = _inside_cell(rng.choice(free_cells), sizes[j], rng)
        arrays["shape_ids"][i, :count] = rng.choice(len(SHAPE_NAMES), size=count, replace=False)
        arrays["colour_ids"][i, :count] = rng.integers(0, len(COLOUR_NAMES), size=count)
        textured = (sizes >= MIN_TEXTURED_SIZE) & (rng.random(count) < config.texture_prob)
        arrays["texture_ids"][i, :count] = np.where(textured, rng.integers(1, len(TEXTURE_NAMES), size=count), 0)
        arrays["sizes"][i, :count] = sizes
        arrays["centres"][i, :count] = centres
        arrays["angles"][i, :count] = rng.uniform(-config.max_rotation_deg, config.max_rotation_deg, size=count)
        arrays["salient"][i, :count] = large if config.layout == "web" else False
    arrays["stuff"] = rng.random((num_images, len(STUFF_NAMES))) < config.stuff_prob
    return Scenes(**arrays)


# ----------------------------------------------------------------------------------------------------------------------
# Rendering

_YY, _XX = np.mgrid[0:IMAGE_SIZE, 0:IMAGE_SIZE].astype(np.float32) + 0.5  # pixel centres, [64, 64] each


def _object_coverage(shape: str, size: float, angle_deg: float, box: int, offset: tuple[float, float]) -> np.ndarray:
    """Supersampled binary mask of one object in a `box`-px square (object centre at `offset` from its top-left):
    uint8 [box * SUPERSAMPLE, box * SUPERSAMPLE] in {0, 255}."""
    side = box * SUPERSAMPLE
    canvas = Image.new("L", (side, side), 0)
    draw = ImageDraw.Draw(canvas)
    angle = np.deg2rad(angle_deg)
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    scale = size / 2 * SUPERSAMPLE
    centre = np.array(offset) * SUPERSAMPLE
    for polygon, fill in SHAPES[shape]:
        points = polygon @ rotation.T * scale
        points[:, 1] *= -1  # y up -> image rows down
        points += centre
        draw.polygon([tuple(p) for p in points.tolist()], fill=255 * fill)
    return canvas


def _downsample(mask: Image.Image, box: int) -> np.ndarray:
    coverage = np.asarray(mask, dtype=np.float32).reshape(box, SUPERSAMPLE, box, SUPERSAMPLE)
    return coverage.mean(axis=(1, 3)) / 255.0


def _erode(alpha: np.ndarray) -> np.ndarray:
    """3x3 minimum filter of float32 [H, W] (outside = 0)."""
    padded = np.pad(alpha, 1)
    h, w = alpha.shape
    return np.min([padded[dy : dy + h, dx : dx + w] for dy in range(3) for dx in range(3)], axis=0)


def _texture_fill(texture: str, colour: np.ndarray, box: int, rng: np.random.Generator) -> np.ndarray:
    """Colour of every pixel of an object's box: float32 [box, box, 3]."""
    fill = np.broadcast_to(colour, (box, box, 3)).astype(np.float32)
    if texture in ("solid", "hollow"):
        return fill
    luminance = float(colour @ np.array([0.299, 0.587, 0.114]))
    second = colour * 0.35 if luminance > 110 else colour * 0.35 + 255 * 0.6
    yy, xx = np.mgrid[0:box, 0:box].astype(np.float32) + 0.5
    if texture == "striped":
        a = rng.uniform(0, np.pi)
        mask = ((xx * np.cos(a) + yy * np.sin(a)) / rng.uniform(3.0, 4.2) + rng.uniform()) % 1.0 < 0.5
    elif texture == "dotted":
        period = rng.uniform(3.2, 4.2)
        dx = (xx / period + rng.uniform()) % 1.0 - 0.5
        dy = (yy / period + rng.uniform()) % 1.0 - 0.5
        mask = np.clip(1.3 - np.sqrt(dx**2 + dy**2) * period * 1.2, 0.0, 1.0)
    elif texture == "checkered":
        cell = rng.uniform(2.0, 3.0)
        mask = (np.floor(xx / cell) + np.floor(yy / cell)) % 2
    elif texture == "gradient":
        a = rng.uniform(0, 2 * np.pi)
        mask = np.clip(((xx - box / 2) * np.cos(a) + (yy - box / 2) * np.sin(a)) / box + 0.5, 0.0, 1.0)
    elif texture == "speckled":
        mask = rng.random((box, box)) < 0.4
    else:
        raise ValueError(f"Unknown texture {texture!r}")
    mask = np.asarray(mask, dtype=np.float32)[..., None]
    return fill * (1.0 - mask) + second * mask


def _background(config: WorldConfig, stuff: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """float32 [64, 64, 3] in [0, 255]."""
    grey = rng.uniform(85, 185)
    base = np.clip(grey + rng.uniform(-22, 22, size=3), 0, 255).astype(np.float32)
    canvas = np.broadcast_to(base, (IMAGE_SIZE, IMAGE_SIZE, 3)).astype(np.float32).copy()
    if config.style == "web":
        if rng.random() < 0.5:  # a gentle gradient
            a = rng.uniform(0, 2 * np.pi)
            ramp = ((_XX - 32) * np.cos(a) + (_YY - 32) * np.sin(a)) / IMAGE_SIZE  # [-0.7, 0.7]
            canvas += ramp[..., None] * rng.uniform(15, 35)
    else:  # cluttered texture at low contrast
        contrast = rng.uniform(*config.background_clutter) * rng.choice([-1.0, 1.0])
        kind = rng.integers(0, 5)
        if kind == 0:  # blobs: smooth random field
            coarse = rng.normal(size=(6, 6)).astype(np.float32)
            field_ = np.asarray(Image.fromarray(coarse).resize((IMAGE_SIZE, IMAGE_SIZE), Image.BICUBIC))
            mask = np.clip(field_ * 0.6 + 0.5, 0.0, 1.0)
        elif kind == 1:  # hatching
            a = rng.uniform(0, np.pi)
            mask = ((_XX * np.cos(a) + _YY * np.sin(a)) / rng.uniform(2.5, 6.0) + rng.uniform()) % 1.0 < 0.4
        elif kind == 2:  # large checks
            cell = rng.uniform(5.0, 12.0)
            mask = (np.floor((_XX + rng.uniform(0, cell)) / cell) + np.floor((_YY + rng.uniform(0, cell)) / cell)) % 2
        elif kind == 3:  # fine random texture
            mask = (
                np.asarray(
                    Image.fromarray((rng.random((16, 16)) * 255).astype(np.uint8)).resize(
                        (IMAGE_SIZE,) * 2, Image.BILINEAR
                    )
                )
                / 255.0
            )
        else:  # dots
            period = rng.uniform(4.0, 8.0)
            dx = (_XX / period + rng.uniform()) % 1.0 - 0.5
            dy = (_YY / period + rng.uniform()) % 1.0 - 0.5
            mask = np.clip(1.5 - np.sqrt(dx**2 + dy**2) * period, 0.0, 1.0)
        tint = rng.uniform(0.6, 1.4, size=3).astype(np.float32)
        canvas += np.asarray(mask, dtype=np.float32)[..., None] * contrast * tint
    if stuff[STUFF_NAMES.index("grid")]:
        period = rng.uniform(7.0, 11.0)
        line = 1.0 / period
        mask = ((_XX / period + rng.uniform()) % 1.0 < line) | ((_YY / period + rng.uniform()) % 1.0 < line)
        colour = rng.choice([20.0, 235.0])
        canvas[mask] = canvas[mask] * 0.35 + colour * 0.65
    return canvas


def _post_effects(canvas: np.ndarray, config: WorldConfig, stuff: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Stuff effects drawn over the objects, then the tagging style's camera effects."""
    named = dict(zip(STUFF_NAMES, stuff))
    if named["border"]:
        width = int(rng.integers(2, 4))
        colour = _COLOUR_RGB[rng.integers(len(COLOUR_NAMES))] * 0.5 + rng.choice([0.0, 110.0])
        canvas[:width], canvas[-width:], canvas[:, :width], canvas[:, -width:] = colour, colour, colour, colour
    if named["scribble"]:
        layer = Image.new("L", (IMAGE_SIZE * 2,) * 2, 0)
        draw = ImageDraw.Draw(layer)
        for _ in range(int(rng.integers(2, 4))):
            points = np.cumsum(rng.normal(0, 9, size=(7, 2)), axis=0) + rng.uniform(20, 108, size=2)
            draw.line([tuple(p) for p in points.tolist()], fill=255, width=2)
        mask = np.asarray(layer.resize((IMAGE_SIZE,) * 2, Image.BOX), dtype=np.float32)[..., None] / 255.0
        canvas[...] = canvas * (1 - mask) + rng.choice([15.0, 240.0]) * mask
    if named["rain"]:
        layer = Image.new("L", (IMAGE_SIZE * 2,) * 2, 0)
        draw = ImageDraw.Draw(layer)
        direction = np.array([rng.uniform(-0.5, 0.5), 1.0]) * 9
        for x, y in rng.uniform(-10, IMAGE_SIZE * 2, size=(int(rng.integers(25, 45)), 2)).tolist():
            draw.line([(x, y), (x + direction[0], y + direction[1])], fill=255, width=1)
        mask = np.asarray(layer.resize((IMAGE_SIZE,) * 2, Image.BOX), dtype=np.float32)[..., None] / 255.0
        canvas[...] = canvas * (1 - 0.8 * mask) + 230.0 * 0.8 * mask
    if named["spotlight"]:
        cx, cy = rng.uniform(16, 48, size=2)
        radius = rng.uniform(12, 20)
        light = np.exp(-((_XX - cx) ** 2 + (_YY - cy) ** 2) / (2 * radius**2))
        canvas += light[..., None] * rng.uniform(70, 100)
    if named["vignette"]:
        distance = np.sqrt((_XX - 32) ** 2 + (_YY - 32) ** 2) / 45.0
        canvas *= np.clip(1.25 - distance**2 * rng.uniform(0.9, 1.2), 0.15, 1.0)[..., None]
    if named["noise"]:
        canvas += rng.normal(0, rng.uniform(22, 30), size=canvas.shape)
    if config.style == "tagging":
        canvas *= rng.uniform(1 - config.colour_cast, 1 + config.colour_cast, size=3)
        canvas[...] = _gaussian_blur(canvas, rng.uniform(*config.blur_sigma))
        canvas += rng.normal(0, rng.uniform(*config.noise_sigma), size=canvas.shape)
    return canvas


def _gaussian_blur(image: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur of float32 [H, W, 3] (edges replicated)."""
    radius = max(1, int(np.ceil(2.5 * sigma)))
    taps = np.exp(-(np.arange(-radius, radius + 1) ** 2) / (2 * sigma**2))
    taps /= taps.sum()
    padded = np.pad(image, ((radius, radius), (0, 0), (0, 0)), mode="edge")
    out = sum(w * padded[k : k + image.shape[0]] for k, w in enumerate(taps))
    padded = np.pad(out, ((0, 0), (radius, radius), (0, 0)), mode="edge")
    return sum(w * padded[:, k : k + image.shape[1]] for k, w in enumerate(taps))


def render_scenes(scenes: Scenes, config: WorldConfig, rng: np.random.Generator) -> np.ndarray:
    """Render scenes into uint8 images [N, 64, 64, 3]; fills `scenes.visible` and `scenes.boxes` (occlusion by later
    objects and the canvas edge)."""
    images = np.empty((len(scenes), IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8)
    shadow_on = STUFF_NAMES.index("shadow")
    for i in range(len(scenes)):
        canvas = _background(config, scenes.stuff[i], rng)
        slots = np.flatnonzero(scenes.shape_ids[i] >= 0)
        alphas, places = [], []
        for slot in slots:
            size = float(scenes.sizes[i, slot])
            colour = np.clip(
                _COLOUR_RGB[scenes.colour_ids[i, slot]] + rng.integers(-COLOUR_JITTER, COLOUR_JITTER + 1, size=3),
                0,
                255,
            ).astype(np.float32)
            box = int(np.ceil(size * 1.05)) + 3
            cx, cy = (float(v) for v in scenes.centres[i, slot])
            x0, y0 = int(np.floor(cx - box / 2)), int(np.floor(cy - box / 2))
            mask = _object_coverage(
                SHAPE_NAMES[scenes.shape_ids[i, slot]], size, float(scenes.angles[i, slot]), box, (cx - x0, cy - y0)
            )
            texture = TEXTURE_NAMES[scenes.texture_ids[i, slot]]
            alpha = _downsample(mask, box)  # [box, box]
            if texture == "hollow":  # keep a ~1-px outline of the silhouette (minus its 3x3 erosion)
                alpha = np.clip(alpha - _erode(alpha), 0.0, 1.0)
            fill = _texture_fill(texture, colour, box, rng)
            # Crop the object box to the canvas.
            ys, xs = slice(max(y0, 0), min(y0 + box, IMAGE_SIZE)), slice(max(x0, 0), min(x0 + box, IMAGE_SIZE))
            local = (slice(ys.start - y0, ys.stop - y0), slice(xs.start - x0, xs.stop - x0))
            if scenes.stuff[i, shadow_on]:
                sy = slice(min(ys.start + 2, IMAGE_SIZE), min(ys.stop + 2, IMAGE_SIZE))
                sx = slice(min(xs.start + 2, IMAGE_SIZE), min(xs.stop + 2, IMAGE_SIZE))
                shade = alpha[local][: sy.stop - sy.start, : sx.stop - sx.start, None]
                canvas[sy, sx] *= 1.0 - 0.5 * shade
            a = alpha[local][..., None]
            canvas[ys, xs] = canvas[ys, xs] * (1.0 - a) + fill[local] * a
            alphas.append((alpha, float(alpha.sum())))
            places.append((ys, xs, local))
        # Visibility: walk the objects from the top of the stack down with the light still passing through.
        transmittance = np.ones((IMAGE_SIZE, IMAGE_SIZE), dtype=np.float32)
        for slot, (alpha, total), (ys, xs, local) in reversed(list(zip(slots, alphas, places))):
            seen = alpha[local] * transmittance[ys, xs]
            scenes.visible[i, slot] = float(seen.sum()) / max(total, 1e-6)
            rows, cols = np.nonzero(seen >= 0.3)
            if len(rows):
                scenes.boxes[i, slot] = (xs.start + cols.min(), ys.start + rows.min(), cols.max() - cols.min() + 1,
                                         rows.max() - rows.min() + 1)  # fmt: skip
            transmittance[ys, xs] *= 1.0 - alpha[local]
        canvas = _post_effects(canvas, config, scenes.stuff[i], rng)
        images[i] = np.clip(np.rint(canvas), 0, 255).astype(np.uint8)
    return images


def _config_key(config: WorldConfig) -> int:
    return LAYOUTS.index(config.layout) * 2 + STYLES.index(config.style)


def _generate_chunk(args: tuple[int, int, int, int, WorldConfig]) -> tuple[np.ndarray, Scenes]:
    seed, stream, chunk_index, num_images, config = args
    images, parts = [], []
    for index in range(chunk_index * CHUNK_SIZE, chunk_index * CHUNK_SIZE + num_images):
        # One generator per image: image i is the same whatever the world's length, chunking or worker count.
        rng = np.random.default_rng([seed, stream, 7919 + _config_key(config), index])
        scenes = sample_scenes(1, config, rng)
        images.append(render_scenes(scenes, config, rng))
        parts.append(scenes)
    return np.concatenate(images), Scenes.concatenate(parts)


def _resolve_stream(stream: str | int) -> int:
    if isinstance(stream, str):
        if stream not in STREAMS:
            raise ValueError(f"Unknown stream {stream!r}; known: {list(STREAMS)} (or pass an int).")
        return STREAMS[stream]
    return int(stream)


def generate_world(
    num_images: int,
    seed: int = 0,
    stream: str | int = "train",
    config: WorldConfig = TAGGING,
    num_workers: int | None = None,
) -> ClutterWorld:
    """Generate `num_images` images of the shapes-clutter world.

    Args:
        num_images: number of images.
        seed: world seed; with `stream` and the config's layout/style it fixes every byte of the output.
        stream: which independent stream of that seed ("pretrain", "train", "validation", "test", "examples" or an
            int), so that the splits of one seed never share images.
        config: layout and rendering style (`TAGGING`, `WEB` or any `WorldConfig`).
        num_workers: processes used to render (default: up to 2, serial for small worlds); does not change the output.
    """
    if num_images < 0:
        raise ValueError(f"num_images must be >= 0, got {num_images}.")
    stream_id = _resolve_stream(stream)
    tasks = [
        (int(seed), stream_id, chunk, min(CHUNK_SIZE, num_images - chunk * CHUNK_SIZE), config)
        for chunk in range((num_images + CHUNK_SIZE - 1) // CHUNK_SIZE)
    ]
    if num_workers is None:
        num_workers = min(2, os.cpu_count() or 1)
    if num_workers > 1 and len(tasks) > 1:
        with multiprocessing.get_context("fork").Pool(num_workers) as pool:
            results = pool.map(_generate_chunk, tasks, chunksize=1)
    else:
        results = [_generate_chunk(task) for task in tasks]
    if not results:
        return ClutterWorld(
            np.zeros((0, IMAGE_SIZE, IMAGE_SIZE, 3), np.uint8),
            Scenes(**_empty_scenes(0, MAX_OBJECTS)),
            config,
        )
    return ClutterWorld(
        images=np.concatenate([images for images, _ in results]),
        scenes=Scenes.concatenate([scenes for _, scenes in results]),
        config=config,
    )


# ----------------------------------------------------------------------------------------------------------------------
# Captions

_CAPTION_PREFIXES = ("a photo of", "a picture of", "an image of", "a drawing of", "a rendering of", "there is", "")
_PLURAL_PREFIXES = ("a photo of", "a picture of", "an image of", "a drawing of", "a rendering of", "there are", "")
_CONNECTORS = (" and ", ", ", " with ", " next to ")
_VAGUE_CAPTIONS = ("a picture of some shapes", "an image of some objects", "a photo of a few things", "some shapes")


def _article(phrase: str) -> str:
    return "an" if phrase[0] in "aeiou" else "a"


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
    return text + ("." if rng.random() < 0.5 else "")


@dataclass
class CaptionSampler:
    """Draws "web" captions of scenes, the pretraining text (a fresh caption at every visit of an image).

    The largest labelled object is named w.p. `p_first`, the second salient object w.p. `p_second`, every other
    (small) object w.p. `p_small`, every stuff effect w.p. `p_stuff`. A named object carries its colour w.p.
    `p_colour` and its texture (if not solid) w.p. `p_texture`; colour and texture words are the label word w.p.
    `p_label_word`, else one of its synonyms ("crimson", "polka-dot"). A share `p_tags` are tag-style ("crimson
    hexastar, grid"). `mention_all=True` is the "captions mention everything" control: every labelled object with its
    colour and texture label words, and every stuff effect.

    The fields are the `world_options` of a shapes-clutter pretraining recipe (typed for the one YAML validator).
    """

    p_first: UnitFloat = 0.95
    p_second: UnitFloat = 0.3
    p_small: UnitFloat = 0.02
    p_stuff: UnitFloat = 0.3
    p_colour: UnitFloat = 0.6
    p_texture: UnitFloat = 0.5
    p_label_word: UnitFloat = 0.4
    p_tags: UnitFloat = 0.2
    mention_all: bool = False

    def _word(self, label: str, synonyms: tuple[str, ...], rng: np.random.Generator) -> str:
        if self.mention_all or rng.random() < self.p_label_word or len(synonyms) == 1:
            return label
        return str(rng.choice([word for word in synonyms if word != label]))

    def _noun(self, scenes: Scenes, index: int, slot: int, rng: np.random.Generator) -> str:
        colour = COLOUR_NAMES[scenes.colour_ids[index, slot]]
        texture = TEXTURE_NAMES[scenes.texture_ids[index, slot]]
        words = []
        if self.mention_all or rng.random() < self.p_colour:
            words.append(self._word(colour, COLOURS[colour][1], rng))
        if texture != "solid" and (self.mention_all or rng.random() < self.p_texture):
            words.append(self._word(texture, TEXTURES[texture], rng))
        words.append(SHAPE_NAMES[scenes.shape_ids[index, slot]])
        return " ".join(words)

    def mentioned(self, scenes: Scenes, index: int, rng: np.random.Generator) -> tuple[list[int], list[str]]:
        """Object slots (largest first) and stuff labels a caption of image `index` names."""
        slots = np.flatnonzero(scenes.labelled[index])
        slots = slots[np.argsort(-scenes.sizes[index, slots], kind="stable")]
        stuff = scenes.stuff_names(index)
        if self.mention_all:
            return slots.tolist(), stuff
        chosen = []
        for rank, slot in enumerate(slots):
            if rank == 0:
                p = self.p_first
            elif rank == 1 and scenes.salient[index, slot]:
                p = self.p_second
            else:
                p = self.p_small
            if rng.random() < p:
                chosen.append(int(slot))
        return chosen, [name for name in stuff if rng.random() < self.p_stuff]

    def sample(self, scenes: Scenes, index: int, rng: np.random.Generator) -> str:
        slots, stuff = self.mentioned(scenes, index, rng)
        if self.mention_all:
            slots = [slots[k] for k in rng.permutation(len(slots))]
        nouns = [self._noun(scenes, index, slot, rng) for slot in slots]
        if not nouns and not stuff:
            return str(rng.choice(_VAGUE_CAPTIONS))
        if rng.random() < self.p_tags or not nouns:
            tags = nouns + [name if self.mention_all else str(rng.choice(STUFF[name][:1] + (name,))) for name in stuff]
            if not nouns:  # stuff only: a phrase reads better than a bare tag
                return _finish(f"{rng.choice(_CAPTION_PREFIXES[:5])} something " + " ".join(
                    str(rng.choice(STUFF[name])) for name in stuff), rng)  # fmt: skip
            return ", ".join(tags)
        prefix = str(rng.choice(_PLURAL_PREFIXES if len(nouns) > 1 else _CAPTION_PREFIXES))
        phrases = [f"{_article(noun)} {noun}" for noun in nouns]
        stuff_phrases = [STUFF[name][0] if self.mention_all else str(rng.choice(STUFF[name])) for name in stuff]
        parts = [prefix, _join(phrases, rng), *stuff_phrases]
        return _finish(" ".join(filter(None, parts)), rng)

    def full(self, scenes: Scenes, index: int, rng: np.random.Generator) -> str:
        """A caption naming every labelled object (colour, texture, shape label words) and every stuff effect."""
        mention_all, self.mention_all = self.mention_all, True
        p_tags, self.p_tags = self.p_tags, 0.0
        try:
            return self.sample(scenes, index, rng)
        finally:
            self.mention_all, self.p_tags = mention_all, p_tags


def caption_words() -> list[str]:
    """Every word (and punctuation mark) a caption of this world can contain: the tokenizer's training corpus."""
    words = {word for name in SHAPE_NAMES for word in name.split()} | set(STUFF_NAMES) | {",", ".", "-", "something"}
    for _, synonyms in COLOURS.values():
        words.update(synonyms)
    for synonyms in TEXTURES.values():
        for synonym in synonyms:
            words.update(synonym.replace("-", " ").split())
    phrases = (*_CAPTION_PREFIXES, *_PLURAL_PREFIXES, *_CONNECTORS, *_VAGUE_CAPTIONS)
    for phrase in (*phrases, *(p for ps in STUFF.values() for p in ps)):
        words.update(phrase.replace(",", " ").split())
    words.update({"a", "an", "and"})
    return sorted(words)


# ----------------------------------------------------------------------------------------------------------------------
# Label set and canonical dataset


def load_labelset(path: str | os.PathLike | None = None) -> dict:
    """The label set `ovmlc/labelsets/shapes-clutter.json`: {"name", "labels", "unseen", "seen_shape_order", ...}."""
    from ovmlc.data.synthetic import read_world_labelset  # in the call: the converter registry imports both worlds

    return read_world_labelset(path if path is not None else LABELSET_PATH, _LABEL_INDEX, WORLD_NAME)


def restrict_seen_shapes(labelset: dict, num_seen_shapes: int | None) -> dict:
    """The label set with only the first `num_seen_shapes` of `seen_shape_order` as seen shapes (the seen-count
    sweep); unseen labels, colours, textures and stuff are kept. `None` keeps every shape."""
    if num_seen_shapes is None:
        return labelset
    order = labelset.get("seen_shape_order") or []
    if not 0 <= num_seen_shapes <= len(order):
        raise ValueError(f"num_seen_shapes must be in [0, {len(order)}] for label set {labelset['name']!r}, got "
                         f"{num_seen_shapes}.")  # fmt: skip
    dropped = set(order[num_seen_shapes:])
    restricted = dict(labelset)
    restricted["labels"] = [name for name in labelset["labels"] if name not in dropped]
    restricted["name"] = f"{labelset['name']}-seen{num_seen_shapes}"
    return restricted


def world_config(layout: str = "tagging", style: str = "tagging", large_prob: float | None = None) -> WorldConfig:
    """The default `WorldConfig` of a layout and a rendering style; `large_prob` (tagging layout) replaces the share
    of cell-sized objects (1.0: no object smaller than a patch)."""
    config = replace(TAGGING, layout=layout, style=style)
    return config if large_prob is None else replace(config, large_prob=float(large_prob))


def dataset_world_config(metadata: dict) -> WorldConfig:
    """The `WorldConfig` a prepared dataset was generated with, from its card's `ovmlc:` metadata (datasets prepared
    before `world_large_prob` was recorded used the default share)."""
    return world_config(
        metadata.get("world_layout", "tagging"),
        metadata.get("world_style", "tagging"),
        metadata.get("world_large_prob"),
    )


def split_objects(
    num_images: int, seed: int = 0, split: str = "test", config: WorldConfig = TAGGING, num_workers: int | None = None
) -> list[list[dict]]:
    """Per image of a dataset split, its labelled objects as `{"label", "bbox": [x, y, w, h] (px), "visible_fraction",
    "colour", "texture", "size"}` (regenerated exactly from the seed; the `objects` data of region-level methods)."""
    world = generate_world(num_images, seed=seed, stream=split, config=config, num_workers=num_workers)
    return [
        [
            {key: entry[key] for key in ("label", "bbox", "visible_fraction", "colour", "texture", "size")}
            for entry in world.scenes.object_annotations(i)
        ]  # fmt: skip
        for i in range(len(world))
    ]


def build_dataset_splits(
    counts: dict[str, int],
    seed: int = 0,
    config: WorldConfig = TAGGING,
    label_names: Sequence[str] | None = None,
    num_workers: int | None = None,
) -> dict[str, dict]:
    """Generate the splits of the canonical shapes-clutter dataset as plain columns.

    Returns {split: {"image": [PIL], "labels": [[label, ...]], "image_id": [str], "caption": [str], "objects":
    [[{"label", "bbox"}, ...]]}}; each split is its own stream of `seed`, so train, validation and test never share
    images. Labels and boxes are the full annotation over `label_names` (default: the whole label set); training
    recipes restrict themselves to the seen labels.
    """
    from ovmlc.data.synthetic import world_split_columns  # in the call: the converter registry imports both worlds

    label_names = list(label_names or load_labelset()["labels"])
    sampler = CaptionSampler()
    splits = {}
    for split, count in counts.items():
        world = generate_world(count, seed=seed, stream=split, config=config, num_workers=num_workers)
        caption_rng = np.random.default_rng([seed, STREAMS[split], 1_000_003])
        splits[split] = world_split_columns(world, label_names, sampler, caption_rng, f"{WORLD_NAME}-{seed}-{split}")
    return splits


CONVERTER_VERSION = "1"
DATASET_DESCRIPTION = (
    "ovmlc's procedurally generated shapes-clutter world: 64x64 images holding 4-10 objects of 6-15 px (50 shapes "
    "with one-word names, 12 colours, 6 textures), about a third partly occluded, over "
    "cluttered textured backgrounds with blur, noise and a colour cast, plus 8 image-level stuff effects. Every object "
    "at least half visible is labelled (shape, colour, texture). The shipped CLIP `clip-shapes-clutter` was "
    "pretrained on the world's other half, clean 'web' images with 1-2 salient objects and captions that name mostly "
    "the largest one. As for every ovmlc dataset, `train` and `validation` carry the seen labels only (unseen shapes, "
    "colours and stuff still appear in their images, unlabelled) and `test` carries all labels. Each split is its own "
    "seeded stream of the generator (`ovmlc.data.shapes_clutter.generate_world(n, seed, stream)` regenerates any "
    "split with its full annotation and per-object boxes)."
)


def source_plan(
    counts: dict[str, int],
    seed: int = 0,
    layout: str = "tagging",
    style: str = "tagging",
    num_seen_shapes: int | None = None,
    oracle: bool = False,
    num_workers: int | None = None,
    large_prob: float | None = None,
) -> SourcePlan:
    """The `SourcePlan` of the world: splits `train`, `validation`, `test`, each its own stream of `seed`.

    `large_prob` replaces the tagging layout's share of cell-sized objects (1.0: only cell-sized objects).
    `num_seen_shapes` keeps only the first N shapes of `seen_shape_order` in the label set (seen-count sweep);
    `oracle` labels every label in train/validation too (the supervised upper bound: the card then lists no unseen
    label, and the label set's unseen list is what to evaluate).
    """
    if large_prob is not None and layout != "tagging":
        raise ValueError(f"{WORLD_NAME}: the share of cell-sized objects (--large-prob) applies to the tagging layout "
                         f"only, not to {layout!r}.")  # fmt: skip
    labelset = restrict_seen_shapes(load_labelset(), num_seen_shapes)
    label_names = list(labelset["labels"])
    unseen = [] if oracle else list(labelset["unseen"])
    seen = [name for name in label_names if name not in set(unseen)]
    config = world_config(layout, style, large_prob)
    splits = build_dataset_splits(counts, seed=seed, config=config, label_names=label_names, num_workers=num_workers)
    records = {
        split: [
            SourceRecord(image_id=image_id, image=image, labels=labels, caption=caption, objects=objects)
            for image_id, image, labels, caption, objects in zip(
                columns["image_id"], columns["image"], columns["labels"], columns["caption"], columns["objects"]
            )
        ]
        for split, columns in splits.items()
    }
    variant = [f"layout {layout}", f"style {style}"]
    if large_prob is not None:
        variant.append(f"share of cell-sized objects {config.large_prob:g}")
    if num_seen_shapes is not None:
        variant.append(f"{num_seen_shapes} seen shapes")
    if oracle:
        variant.append("oracle: the unseen labels of the label set are labelled in train/validation too")
    return SourcePlan(
        source=WORLD_NAME,
        converter_version=CONVERTER_VERSION,
        label_names=label_names,
        seen_labels=seen,
        unseen_labels=unseen,
        annotation="full",
        title="synthetic shapes-clutter (ovmlc canonical multi-label dataset)",
        description=DATASET_DESCRIPTION,
        splits=records,
        split_sizes=dict(counts),
        has_captions=True,
        has_objects=True,
        notes=[
            f"Generated by ovmlc.data.shapes_clutter with seed {seed} (streams: "
            + ", ".join(f"{split} {STREAMS[split]}" for split in counts)
            + "); "
            + ", ".join(variant)
            + ".",
            f"Unseen labels ({len(unseen)}): {', '.join(unseen) or 'none (oracle)'}.",
            "`objects`: one box per labelled object and label (its shape, colour and texture), the visible part of the "
            "object in XYWH pixels; stuff effects cover the whole image and have no box.",
        ],
        extra_metadata={
            "world_seed": seed,
            "generator": f"ovmlc.data.shapes_clutter ({WORLD_NAME})",
            "world_layout": layout,
            "world_style": style,
            "world_large_prob": config.large_prob,
            "num_seen_shapes": num_seen_shapes,
            "oracle": oracle,
        },
        pretty_name=f"ovmlc synthetic {WORLD_NAME}",
        license_name="apache-2.0",
    )


class ShapesClutterConverter(Converter):
    """`ovmlc data prepare shapes-clutter`: generate the shapes-clutter world as a canonical dataset."""

    name = WORLD_NAME
    help = "generate ovmlc's procedural shapes-clutter world (offline; 76 labels, 12 unseen, captions)"
    version = CONVERTER_VERSION
    requires_root = False  # generated, no raw files

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--num-train", type=int, default=20_000, help="training images (default 20000)")
        parser.add_argument("--num-val", type=int, default=2_000, help="validation images (default 2000)")
        parser.add_argument("--num-test", type=int, default=5_000, help="test images (default 5000)")
        if "--seed" not in parser._option_string_actions:  # the common flags of `data prepare` may already have it
            parser.add_argument("--seed", type=int, default=0, help="world seed (default 0)")
        parser.add_argument(
            "--layout",
            choices=LAYOUTS,
            default="tagging",
            help="scene layout: 'tagging' (4-10 cluttered objects, default) or 'web' (1-2 salient)",
        )
        parser.add_argument(
            "--style",
            choices=STYLES,
            default="tagging",
            help="rendering: 'tagging' (textured background, blur, noise, cast; default) or 'web'",
        )
        parser.add_argument(
            "--large-prob",
            type=float,
            default=None,
            help="tagging layout: share of cell-sized objects, 11.5-15 px, the rest 6-9 px (default "
            f"{TAGGING.large_prob}; 1.0: no object smaller than a patch)",
        )
        parser.add_argument(
            "--num-seen-shapes",
            type=int,
            default=None,
            help="keep only the first N seen shapes of the label set's seen_shape_order (sweep)",
        )
        parser.add_argument(
            "--oracle", action="store_true", help="label the unseen labels in train/validation too (upper bound)"
        )

    def plan(self, args: argparse.Namespace) -> SourcePlan:
        counts = {"train": args.num_train, "validation": args.num_val, "test": args.num_test}
        for split, count in counts.items():
            if count is None or count < 0:
                raise ValueError(f"{WORLD_NAME}: the number of {split} images must be >= 0, got {count}")
        return source_plan(
            counts,
            seed=int(getattr(args, "seed", 0) or 0),
            layout=args.layout,
            style=args.style,
            num_seen_shapes=args.num_seen_shapes,
            oracle=args.oracle,
            large_prob=args.large_prob,
        )


def write_examples(
    out_dir: str | os.PathLike, num_images: int = 6, seed: int = 1, upscale: int = 4, large_prob: float = 1.0
) -> list[dict]:
    """Render example tagging images (raw 64 px + nearest-neighbour upscaled copies) and an `examples.json` of their
    labels: the Space's and the README's examples. `large_prob` is the share of cell-sized objects (default 1.0,
    the quickstart's layout)."""
    world = generate_world(num_images, seed=seed, stream="examples", config=world_config(large_prob=large_prob),
                           num_workers=1)  # fmt: skip
    caption_rng = np.random.default_rng([seed, STREAMS["examples"], 1_000_003])
    source = (f"Tagging images of ovmlc's shapes-clutter world (ovmlc.data.shapes_clutter.write_examples(seed={seed}, "
              f"large_prob={large_prob})).")  # fmt: skip
    return write_world_examples(out_dir, world, CaptionSampler(), caption_rng, load_labelset(), source, upscale)


def _register_converter() -> None:
    # `ovmlc.data.converters` registers the converter when it imports this module first; when this module is imported
    # first, the registry was built while this module was still half-initialised, so register here.
    import sys

    registry = sys.modules.get("ovmlc.data.converters")
    if registry is not None and hasattr(registry, "register_converter") and WORLD_NAME not in registry.CONVERTERS:
        registry.register_converter(ShapesClutterConverter())


_register_converter()
