"""The synthetic worlds `ovmlc pretrain-vlp` can pretrain a small CLIP on, behind one small interface.

`get_pretraining_world(name, ...)` returns a `PretrainingWorld`: the words its captions use (the tokenizer's corpus), a
pretraining corpus generator, the caption sampler drawn afresh at every visit, the zero-shot evaluation sets (the
first is the headline one) and the label groups reported per group, plus the few sentences of its model card.

* `shapes-64` (`ovmlc.data.synthetic`): the original world; generated exactly as before (the shipped `clip-synthetic`).
* `shapes-clutter` (`ovmlc.data.shapes_clutter`): pretraining on the clean "web" images with salient-object captions;
  evaluated on the cluttered "tagging" test split (headline) and on web-style test images.

A world's `options_schema` is the dataclass its recipe's `world_options` are checked against by the one YAML validator
(`ovmlc.yaml_schema`): unknown keys, types and ranges are named with the file and the key.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import numpy as np

from ovmlc.data import shapes_clutter
from ovmlc.yaml_schema import SchemaError, from_data


@dataclass
class EvaluationSet:
    """Images and their full annotation over the world's label set."""

    images: np.ndarray  # [N, 64, 64, 3] uint8
    targets: np.ndarray  # [N, C] int8, 1 = present


class CaptionSource(Protocol):
    """Draws a fresh caption of image `index` of a world's scenes (both worlds' `CaptionSampler`)."""

    def sample(self, scenes: Any, index: int, rng: np.random.Generator) -> str: ...


@dataclass
class NoWorldOptions:
    """shapes-64 takes no `world_options`."""


@dataclass
class ShapesClutterOptions(shapes_clutter.CaptionSampler):
    """`world_options` of a shapes-clutter pretraining recipe: the caption knobs (`CaptionSampler`'s fields, e.g.
    `mention_all: true` for the "captions mention everything" control) and the layout / style of the corpus images
    (`tagging` layout or style: the "shift off" controls)."""

    corpus_layout: Literal["web", "tagging"] = "web"
    corpus_style: Literal["web", "tagging"] = "web"

    def sampler(self) -> shapes_clutter.CaptionSampler:
        knobs = {item.name: getattr(self, item.name) for item in dataclasses.fields(shapes_clutter.CaptionSampler)}
        return shapes_clutter.CaptionSampler(**knobs)


def check_world_options(schema: type, options: dict) -> Any:
    """`options` checked against a world's options dataclass; `SchemaError` names the key under `world_options`."""
    return from_data(schema, options, key="world_options", error=SchemaError)


@dataclass
class PretrainingWorld:
    name: str
    labelset: dict
    caption_words: list[str]
    label_groups: dict[str, tuple[str, ...]]
    sampler: CaptionSource
    generate_corpus: Callable[[int, int, int | None], Any]  # (num_images, seed, num_workers) -> .images, .scenes
    generate_evaluation: Callable[[int, int, int | None], dict[str, EvaluationSet]]  # first = headline
    card: dict[str, str] = field(default_factory=dict)  # title, summary, path, recipe, prepare, test_description


def _shapes_64(labelset_path: str | None, options: dict, short_caption_prob: float) -> PretrainingWorld:
    from ovmlc.data import synthetic

    check_world_options(NoWorldOptions, options)
    labelset = synthetic.load_labelset(labelset_path)

    def corpus(num_images: int, seed: int, num_workers: int | None):
        return synthetic.generate_world(num_images, seed=seed, stream="pretrain", num_workers=num_workers)

    def evaluation(num_images: int, seed: int, num_workers: int | None) -> dict[str, EvaluationSet]:
        test = synthetic.generate_world(num_images, seed=seed, stream="test", num_workers=num_workers)
        return {"test": EvaluationSet(test.images, test.scenes.label_matrix(labelset["labels"]))}

    return PretrainingWorld(
        name="shapes-64",
        labelset=labelset,
        caption_words=synthetic.caption_words(),
        label_groups={
            "shapes": synthetic.SHAPE_NAMES,
            "colours": synthetic.COLOUR_NAMES,
            "backgrounds": tuple(synthetic.background_label(b) for b in synthetic.BACKGROUNDS),
        },
        sampler=synthetic.CaptionSampler(p_short=short_caption_prob),
        generate_corpus=corpus,
        generate_evaluation=evaluation,
        card={
            "title": "clip-synthetic: a small CLIP pretrained on the ovmlc shapes-64 world",
            "summary": (
                "A small `CLIPModel` trained from scratch, offline, on ovmlc's procedurally generated image + caption "
                "world (`ovmlc.data.synthetic`, see `docs/synthetic.md`). It is the embedded default backbone of "
                "ovmlc's README command, Space and tests, so that everything runs without downloading weights. It "
                "knows nothing about natural images: it recognises the 24 shapes, 8 colours and 6 background "
                "patterns of its world."
            ),
            "path": "ovmlc/assets/clip-synthetic",
            "recipe": "hub_configs/clip-synthetic.yaml",
            "captions": f"{short_caption_prob:.0%} short (single-object) captions",
            "prepare": "ovmlc data prepare synthetic",
            "test_description": "",
        },
    )


def _shapes_clutter(labelset_path: str | None, options: dict, short_caption_prob: float) -> PretrainingWorld:
    world = shapes_clutter
    checked = check_world_options(ShapesClutterOptions, options)
    labelset = world.load_labelset(labelset_path)
    corpus_config = world.world_config(checked.corpus_layout, checked.corpus_style)
    sampler = checked.sampler()

    def corpus(num_images: int, seed: int, num_workers: int | None):
        return world.generate_world(
            num_images, seed=seed, stream="pretrain", config=corpus_config, num_workers=num_workers
        )

    def evaluation(num_images: int, seed: int, num_workers: int | None) -> dict[str, EvaluationSet]:
        sets = {}
        for name, config in (("tagging", world.TAGGING), ("web", world.WEB)):
            test = world.generate_world(num_images, seed=seed, stream="test", config=config, num_workers=num_workers)
            sets[name] = EvaluationSet(test.images, test.scenes.label_matrix(labelset["labels"]))
        return sets

    return PretrainingWorld(
        name="shapes-clutter",
        labelset=labelset,
        caption_words=world.caption_words(),
        label_groups=dict(world.LABEL_GROUPS),
        sampler=sampler,
        generate_corpus=corpus,
        generate_evaluation=evaluation,
        card={
            "title": "clip-shapes-clutter: a small CLIP pretrained on the web half of the ovmlc shapes-clutter world",
            "summary": (
                "A small `CLIPModel` trained from scratch, offline, on the clean 'web' images of ovmlc's procedural "
                "shapes-clutter world (`ovmlc.data.shapes_clutter`, see `docs/synthetic.md`): 1-2 large salient "
                "objects per image, captions that name mostly the largest one and use synonyms for colours and "
                "textures. Its downstream task, the world's 'tagging' data, differs on purpose: 4-10 objects, half "
                "of them small (6-9 px) and often occluding others, a cluttered background, blur, noise and a colour "
                "cast, every object at least half visible labelled. "
                "It knows nothing about natural images: it knows the world's 50 shapes, 12 colours, 6 textures and "
                "8 stuff effects."
            ),
            "path": "ovmlc/assets/clip-shapes-clutter",
            "recipe": "hub_configs/clip-shapes-clutter.yaml",
            "captions": (
                f"{checked.corpus_layout} layout in the {checked.corpus_style} style; the largest object named w.p. "
                f"{checked.p_first:g}, the second salient one {checked.p_second:g}, small ones {checked.p_small:g}, "
                f"stuff {checked.p_stuff:g}; colour/texture words are synonyms w.p. {1 - checked.p_label_word:g}"
                + ("; captions mention everything (control)" if checked.mention_all else "")
            ),
            "prepare": "ovmlc data prepare shapes-clutter",
            "test_description": (
                "Headline numbers on the `tagging` test images (the downstream domain); the `web` rows repeat them on "
                "test images in the pretraining style."
            ),
        },
    )


_BUILDERS = {"shapes-64": _shapes_64, "shapes-clutter": _shapes_clutter}
WORLDS = tuple(_BUILDERS)  # also the choices of `VLPPretrainConfig.world`


def get_pretraining_world(
    name: str, labelset_path: str | None = None, options: dict | None = None, short_caption_prob: float = 0.3
) -> PretrainingWorld:
    """The pretraining world `name` ("shapes-64" or "shapes-clutter"); `options` are world-specific knobs
    (shapes-clutter: `ShapesClutterOptions`). A bad option raises `SchemaError` naming `world_options.<key>`."""
    if name not in _BUILDERS:
        raise ValueError(f"unknown world {name!r}; known: {list(_BUILDERS)}")
    return _BUILDERS[name](labelset_path, dict(options or {}), short_caption_prob)


__all__ = [
    "WORLDS",
    "CaptionSource",
    "EvaluationSet",
    "NoWorldOptions",
    "PretrainingWorld",
    "ShapesClutterOptions",
    "check_world_options",
    "get_pretraining_world",
]
