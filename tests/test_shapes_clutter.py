"""The shapes-clutter world (issue 18): generator, per-object boxes, captions, label set, canonical dataset (with its
`objects` boxes), the pretraining-world interface of `ovmlc pretrain-vlp` (world options checked by the one YAML
validator), the `shapes-clutter` backbone alias, and the shapes-clutter recipes kept in step with their synthetic
counterparts."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from ovmlc.data import shapes_clutter as world
from ovmlc.data.pretraining_worlds import WORLDS, get_pretraining_world
from ovmlc.resources import hub_configs_dir, recipe_path
from ovmlc.yaml_schema import SchemaError

TINY_RECIPE = recipe_path("clip-shapes-clutter-tiny.yaml")


@pytest.fixture(scope="module")
def tagging():
    return world.generate_world(96, seed=5, stream="test", config=world.TAGGING, num_workers=1)


@pytest.fixture(scope="module")
def web():
    return world.generate_world(96, seed=5, stream="test", config=world.WEB, num_workers=1)


# ----------------------------------------------------------------------------------------------------------------------
# Generator


def test_generator_is_deterministic_and_seeded(tagging):
    again = world.generate_world(300, seed=5, stream="test", config=world.TAGGING, num_workers=2)  # 2 chunks
    assert tagging.images.dtype == np.uint8 and tagging.images.shape == (96, 64, 64, 3)
    assert again.images[:96].tobytes() == tagging.images.tobytes()  # worker count and length never change bytes
    assert np.array_equal(again.scenes.boxes[:96], tagging.scenes.boxes)
    assert np.array_equal(again.scenes.visible[:96], tagging.scenes.visible)
    other_seed = world.generate_world(8, seed=6, stream="test", num_workers=1)
    other_stream = world.generate_world(8, seed=5, stream="train", num_workers=1)
    web_style = world.generate_world(8, seed=5, stream="test", config=world.world_config("tagging", "web"))
    for other in (other_seed, other_stream, web_style):
        assert other.images.tobytes() != tagging.images[:8].tobytes()


def test_catalogue_and_label_vocabulary():
    assert len(world.SHAPE_NAMES) == 50 and len(set(world.SHAPE_NAMES)) == 50
    assert len(world.COLOUR_NAMES) == 12 and len(world.TEXTURE_LABELS) == 6 and len(world.STUFF_NAMES) == 8
    assert len(world.ALL_LABELS) == len(set(world.ALL_LABELS)) == 76
    assert all(len(name.split()) == 1 for name in world.ALL_LABELS)  # one word, one token: no word shared by shapes
    # Every shape is visibly its own: the coverage masks of any two (13 px, upright) differ in >= 10% of the pixels.
    masks = np.stack([world._downsample(world._object_coverage(name, 13.0, 0.0, 16, (8.0, 8.0)), 16).ravel()
                      for name in world.SHAPE_NAMES])  # fmt: skip
    assert (masks.sum(axis=1) > 20).all()  # nothing degenerate
    difference = np.abs(masks[:, None] - masks[None]).sum(axis=-1) / np.maximum(masks.sum(axis=1), 1.0)[:, None]
    np.fill_diagonal(difference, 1.0)
    assert difference.min() >= 0.1, world.SHAPE_NAMES[int(difference.min(axis=1).argmin())]


def test_tagging_and_web_layouts(tagging, web):
    present = tagging.scenes.shape_ids >= 0
    counts = present.sum(axis=1)
    assert counts.min() >= 4 and counts.max() <= 10
    sizes = tagging.scenes.sizes[present]
    assert sizes.min() >= 6.0 and sizes.max() <= 15.0
    occluded = (tagging.scenes.visible[present] < 0.98).mean()
    assert 0.15 < occluded < 0.5  # "about a third partly occluded"
    salient = web.scenes.salient.sum(axis=1)
    assert set(np.unique(salient)) <= {1, 2} and (web.scenes.sizes[web.scenes.salient] >= 11.0).all()
    assert (web.scenes.sizes[(web.scenes.shape_ids >= 0) & ~web.scenes.salient] <= 9).all()
    assert not tagging.scenes.salient.any()
    # Large objects sit in their own 16-px cell (one ViT patch), small ones inside one cell.
    for scenes in (tagging.scenes, web.scenes):
        for i in range(len(scenes)):
            for slot in np.flatnonzero(scenes.shape_ids[i] >= 0):
                x, y = scenes.centres[i, slot]
                half = scenes.sizes[i, slot] / 2
                cell_x, cell_y = x // 16 * 16, y // 16 * 16
                if scenes.sizes[i, slot] < 10:
                    assert (
                        cell_x <= x - half and x + half <= cell_x + 16 and cell_y <= y - half <= y + half <= cell_y + 16
                    )
                else:
                    assert abs(x - cell_x - 8) <= 1 and abs(y - cell_y - 8) <= 1
    # Different layouts of the same world: the web images hold fewer, larger objects.
    assert (web.scenes.shape_ids >= 0).sum(axis=1).mean() < counts.mean()


def test_labels_follow_visibility_and_boxes_are_consistent(tagging):
    scenes = tagging.scenes
    matrix = scenes.label_matrix(world.ALL_LABELS)  # [N, 76]
    for i in range(len(scenes)):
        assert sorted(scenes.labels(i)) == sorted(np.array(world.ALL_LABELS)[matrix[i] == 1].tolist())
        annotations = scenes.object_annotations(i)
        labelled_shapes = {entry["label"] for entry in annotations}
        assert labelled_shapes == {name for name in scenes.labels(i) if name in world.SHAPE_NAMES}
        for entry in annotations:
            x, y, w, h = entry["bbox"]
            assert entry["visible_fraction"] >= world.LABEL_VISIBILITY and entry["labelled"]
            assert 0 <= x and 0 <= y and w >= 1 and h >= 1 and x + w <= 64 and y + h <= 64
            assert max(w, h) <= entry["size"] * 1.5 + 2  # a box never exceeds its object
            assert entry["colour"] in scenes.labels(i)
            if entry["texture"] != "solid":
                assert entry["texture"] in scenes.labels(i)
        hidden = [e for e in scenes.object_annotations(i, include_hidden=True) if not e["labelled"]]
        assert all(e["visible_fraction"] < world.LABEL_VISIBILITY for e in hidden)
    # The object drawn last is never occluded by another object: only the canvas edge can hide part of it.
    last = (scenes.shape_ids >= 0).sum(axis=1) - 1
    rows = np.arange(len(scenes))
    centres, sizes = scenes.centres[rows, last], scenes.sizes[rows, last]
    inside = (centres - sizes[:, None] * 0.55 > 0).all(axis=1) & (centres + sizes[:, None] * 0.55 < 64).all(axis=1)
    assert inside.any() and (scenes.visible[rows, last][inside] > 0.99).all()


def test_box_covers_the_drawn_object():
    """A lone black object on the web style: its box is where the dark pixels are."""
    config = world.world_config("web", "web")
    sample = world.generate_world(40, seed=3, stream="test", config=config, num_workers=1)
    for i in range(len(sample)):
        for entry in sample.scenes.object_annotations(i):
            x, y, w, h = (int(v) for v in entry["bbox"])
            crop = sample.images[i, y : y + h, x : x + w]
            assert crop.size and w * h <= 64 * 64


def test_split_objects_match_the_dataset_annotation():
    objects = world.split_objects(12, seed=2, split="validation", num_workers=1)
    again = world.generate_world(12, seed=2, stream="validation", num_workers=1)
    assert len(objects) == 12
    for i, entries in enumerate(objects):
        assert {e["label"] for e in entries} == {n for n in again.scenes.labels(i) if n in world.SHAPE_NAMES}
        assert all(set(e) == {"label", "bbox", "visible_fraction", "colour", "texture", "size"} for e in entries)


def test_object_sizes_per_label(tagging):
    names = ["cross", "red", *world.SHAPE_NAMES[:5]]
    sizes = tagging.scenes.largest_visible_size(names)  # [N, 7]
    matrix = tagging.scenes.label_matrix(names)
    assert np.isnan(sizes[:, 1]).all()
    shape_columns = [0, *range(2, 7)]
    assert ((sizes[:, shape_columns] > 0) == (matrix[:, shape_columns] == 1)).all()


# ----------------------------------------------------------------------------------------------------------------------
# Captions and tokenizer


def test_web_captions_name_present_things_in_world_words(web):
    vocabulary = set(world.caption_words())
    sampler = world.CaptionSampler()
    rng = np.random.default_rng(0)
    synonyms = {word: label for label, (_, words) in world.COLOURS.items() for word in words}
    named_first = 0
    for i in range(len(web)):
        labels = set(web.scenes.labels(i))
        for _ in range(5):
            caption = sampler.sample(web.scenes, i, rng)
            words = caption.replace(",", " , ").replace(".", " . ").replace("-", " - ").split()
            assert set(words) <= vocabulary, caption
            shapes = {name for name in world.SHAPE_NAMES if f" {name} " in f" {' '.join(words)} "}
            assert shapes <= labels, (caption, labels)  # never mentions an absent shape
            assert {synonyms[w] for w in words if w in synonyms} <= labels, (caption, labels)
            largest = max(web.scenes.object_annotations(i), key=lambda e: e["size"])["label"]
            named_first += largest in shapes
    assert named_first / (5 * len(web)) > 0.85  # the largest object is named ~95% of the time
    everything = world.CaptionSampler(mention_all=True)
    for i in range(10):
        caption = everything.sample(web.scenes, i, rng)
        for name in web.scenes.labels(i):
            assert name in caption, (name, caption)


def test_world_tokenizer_gives_one_token_per_word():
    from ovmlc.training.pretrain_vlp import train_world_tokenizer

    words = world.caption_words()
    tokenizer = train_world_tokenizer(vocab_size=4000, max_length=32, world_words=words)
    for word in words:
        assert len(tokenizer.tokenize(word)) == 1, word
    for label in world.ALL_LABELS:
        assert len(tokenizer.tokenize(label)) == 1, label
    again = train_world_tokenizer(vocab_size=4000, max_length=32, world_words=words)
    assert again.backend_tokenizer.to_str() == tokenizer.backend_tokenizer.to_str()


# ----------------------------------------------------------------------------------------------------------------------
# Label set and canonical dataset


def test_labelset_file():
    labelset = world.load_labelset()
    assert labelset["name"] == "shapes-clutter" and list(labelset["labels"]) == list(world.ALL_LABELS)
    unseen = labelset["unseen"]
    unseen_shapes = [name for name in unseen if name in world.SHAPE_NAMES]
    assert len(unseen) == 12 and len(unseen_shapes) == 8
    assert len(set(unseen) & set(world.COLOUR_NAMES)) == 2 and len(set(unseen) & set(world.STUFF_NAMES)) == 2
    order = labelset["seen_shape_order"]
    assert sorted(order) == sorted(set(world.SHAPE_NAMES) - set(unseen_shapes))
    restricted = world.restrict_seen_shapes(labelset, 10)
    assert len(restricted["labels"]) == 76 - 32 and set(unseen) <= set(restricted["labels"])
    with pytest.raises(ValueError, match="num_seen_shapes"):
        world.restrict_seen_shapes(labelset, 43)


def test_bad_labelset_is_named(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"name": "bad", "labels": ["triangle", "unicorn"], "unseen": []}))
    with pytest.raises(ValueError, match="unicorn"):
        world.load_labelset(path)


def _prepare(tmp_path, name, *extra):
    from ovmlc.cli import main

    out = tmp_path / name
    argv = ["data", "prepare", "shapes-clutter", "--out", str(out), "--num-train", "24", "--num-val", "8"]
    assert main([*argv, "--num-test", "16", "--seed", "5", "--no-progress", *extra]) == 0
    return out


def test_prepare_canonical_dataset(tmp_path):
    from ovmlc.data import label_matrix, load_canonical, read_label_split
    from ovmlc.data.converters import get_converter
    from ovmlc.data.schema import validate_canonical_features

    assert get_converter("shapes-clutter").name == "shapes-clutter"
    out = _prepare(tmp_path, "main")
    dataset = load_canonical(out)
    assert {split: len(dataset[split]) for split in dataset} == {"train": 24, "validation": 8, "test": 16}
    for split in dataset:
        assert validate_canonical_features(dataset[split].features, split) == list(world.ALL_LABELS)
    assert set(dataset["train"].features) == {"image", "labels", "image_id", "caption", "objects"}
    labelset = world.load_labelset()
    seen, unseen = read_label_split(out)
    assert sorted(unseen) == sorted(labelset["unseen"]) and len(seen) == 64
    test_world = world.generate_world(16, seed=5, stream="test", num_workers=1)
    expected = np.where(test_world.scenes.label_matrix(labelset["labels"]) == 1, 1, -1)
    assert np.array_equal(label_matrix(dataset["test"], labelset["labels"]), expected)
    assert np.array_equal(np.asarray(dataset["test"][3]["image"]), test_world.images[3])
    assert (label_matrix(dataset["train"], labelset["unseen"]) != 1).all()  # unseen stay unlabelled in train
    assert not set(dataset["train"]["image_id"]) & set(dataset["test"]["image_id"])
    # objects: each labelled object's visible box under its shape, colour and texture label (test: all labels;
    # train: the seen positives only, so no unseen label ever gets a box)
    names = dataset["test"].features["labels"].feature.names
    for index in range(len(dataset["test"])):
        boxes = sorted((names[o["label"]], tuple(o["bbox"])) for o in dataset["test"][index]["objects"])
        expected = sorted((o["label"], tuple(o["bbox"])) for o in test_world.scenes.object_boxes(index))
        assert boxes == expected and len(boxes) >= len(test_world.scenes.object_annotations(index))
        assert {name for name, _ in boxes} <= set(test_world.scenes.labels(index))
    for row in dataset["train"]:
        assert {o["label"] for o in row["objects"]} <= set(row["labels"])
        assert not {names[o["label"]] for o in row["objects"]} & set(labelset["unseen"])


def test_prepare_variants_for_the_controls(tmp_path):
    from ovmlc.data import load_canonical, read_label_split

    sweep = _prepare(tmp_path, "sweep", "--num-seen-shapes", "10")
    seen, unseen = read_label_split(sweep)
    assert len(unseen) == 12 and len([name for name in seen if name in world.SHAPE_NAMES]) == 10
    oracle = _prepare(tmp_path, "oracle", "--oracle")
    seen, unseen = read_label_split(oracle)
    assert unseen == [] and len(seen) == 76
    labels = {name for row in load_canonical(oracle, split="train")["labels"] for name in row}
    names = load_canonical(oracle, split="train").features["labels"].feature.names
    assert {names[i] for i in labels} & set(world.load_labelset()["unseen"])  # unseen labels are labelled
    style_off = _prepare(tmp_path, "style-off", "--style", "web")
    web_style = world.generate_world(16, seed=5, stream="test", config=world.world_config("tagging", "web"))
    assert np.array_equal(np.asarray(load_canonical(style_off, split="test")[0]["image"]), web_style.images[0])


def test_prepare_with_only_cell_sized_objects(tmp_path, capsys):
    """`--large-prob 1.0`: no object smaller than a patch; the card records the share, and the world config rebuilt
    from it regenerates the dataset exactly."""
    from ovmlc.cli import main
    from ovmlc.data import load_canonical, read_card_metadata

    cells = _prepare(tmp_path, "cells", "--large-prob", "1.0")
    metadata = read_card_metadata(cells)
    assert metadata["world_large_prob"] == 1.0
    assert read_card_metadata(_prepare(tmp_path, "default"))["world_large_prob"] == world.TAGGING.large_prob
    config = world.dataset_world_config(metadata)
    assert config == world.world_config(large_prob=1.0) and config.large_prob == 1.0
    regenerated = world.generate_world(16, seed=5, stream="test", config=config, num_workers=1)
    assert np.array_equal(np.asarray(load_canonical(cells, split="test")[2]["image"]), regenerated.images[2])
    sizes = regenerated.scenes.sizes[regenerated.scenes.shape_ids >= 0]
    assert sizes.min() >= config.large_size[0] and len(sizes) >= 16 * config.num_objects[0]
    assert world.dataset_world_config({}) == world.TAGGING  # a card from before the share was recorded
    argv = ["data", "prepare", "shapes-clutter", "--num-train", "2", "--num-val", "2", "--num-test", "2"]
    for extra, message in (
        (["--large-prob", "1.5"], "large_prob"),
        (["--large-prob", "1", "--layout", "web"], "tagging layout"),
    ):
        assert main([*argv, "--out", str(tmp_path / "bad"), "--no-progress", *extra]) != 0
        assert message in capsys.readouterr().err
        assert not (tmp_path / "bad").exists()


# ----------------------------------------------------------------------------------------------------------------------
# Pretraining world interface


def test_pretraining_world_interface():
    clutter = get_pretraining_world("shapes-clutter", options={"mention_all": True})
    assert clutter.sampler.mention_all and set(clutter.label_groups) == {"shapes", "colours", "textures", "stuff"}
    corpus = clutter.generate_corpus(8, 0, 1)
    assert corpus.config.layout == "web" and corpus.images.shape == (8, 64, 64, 3)
    sets = clutter.generate_evaluation(8, 0, 1)
    assert list(sets) == ["tagging", "web"] and sets["tagging"].targets.shape == (8, 76)
    shifted = get_pretraining_world("shapes-clutter", options={"corpus_layout": "tagging", "corpus_style": "tagging"})
    assert shifted.generate_corpus(2, 0, 1).config == world.TAGGING  # the "shift off" control's corpus
    with pytest.raises(SchemaError, match=r"world_options: unknown key 'mention_everything'"):
        get_pretraining_world("shapes-clutter", options={"mention_everything": True})
    with pytest.raises(SchemaError, match=r"world_options\.p_first: expected a finite number in \[0, 1\], got 1\.5"):
        get_pretraining_world("shapes-clutter", options={"p_first": 1.5})
    with pytest.raises(SchemaError, match=r"world_options\.corpus_style: expected one of"):
        get_pretraining_world("shapes-clutter", options={"corpus_style": "sepia"})
    with pytest.raises(ValueError, match="unknown world"):
        get_pretraining_world("shapes-65")
    legacy = get_pretraining_world("shapes-64")
    assert legacy.labelset["name"] == "synthetic" and list(legacy.generate_evaluation(4, 0, 1)) == ["test"]
    with pytest.raises(SchemaError, match=r"world_options: unknown key 'mention_all'"):  # shapes-64 takes none
        get_pretraining_world("shapes-64", options={"mention_all": True})


def test_shapes_64_corpus_through_the_world_interface_is_the_old_one():
    """`pretrain-vlp` on shapes-64 reads the same corpus and caption stream as before the world interface."""
    from ovmlc.data import synthetic

    legacy = get_pretraining_world("shapes-64", short_caption_prob=0.3)
    corpus = legacy.generate_corpus(40, 3, 1)
    direct = synthetic.generate_world(40, seed=3, stream="pretrain", num_workers=1)
    assert corpus.images.tobytes() == direct.images.tobytes()
    sampler, rng_a, rng_b = synthetic.CaptionSampler(p_short=0.3), np.random.default_rng(1), np.random.default_rng(1)
    assert [legacy.sampler.sample(corpus.scenes, i, rng_a) for i in range(40)] == [
        sampler.sample(direct.scenes, i, rng_b) for i in range(40)
    ]


@pytest.mark.parametrize(
    "edit, message",
    [
        ({"world_options": {"p_frist": 0.9}}, r"bad\.yaml: world_options: unknown key 'p_frist' \(did you mean"),
        ({"world_options": {"mention_all": "yes"}}, r"bad\.yaml: world_options\.mention_all: expected true or false"),
        ({"world": "shapes-65"}, r"bad\.yaml: world: expected one of 'shapes-64', 'shapes-clutter', got 'shapes-65'"),
    ],
    ids=["unknown-option", "option-type", "unknown-world"],
)
def test_pretraining_recipe_names_a_bad_world_or_option(tmp_path, edit, message):
    from ovmlc.training.pretrain_vlp import PretrainConfigError, VLPPretrainConfig

    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({**yaml.safe_load(TINY_RECIPE.read_text()), **edit}))
    with pytest.raises(PretrainConfigError, match=message):
        VLPPretrainConfig.from_yaml(bad)


def test_world_choices_and_the_full_recipe():
    import typing

    from ovmlc.training.pretrain_vlp import VLPPretrainConfig

    assert typing.get_args(typing.get_type_hints(VLPPretrainConfig)["world"]) == WORLDS
    config = VLPPretrainConfig.from_yaml(recipe_path("clip-shapes-clutter.yaml"))
    assert config.world == "shapes-clutter" and config.output_dir == "ovmlc/assets/clip-shapes-clutter"
    # The size budget (CLIP <= 20 MB of fp32 weights), from the architecture without building the model.
    v, t, p = config.vision_hidden_size, config.text_hidden_size, config.projection_dim
    vision = config.vision_layers * 12 * v * v + 3 * config.patch_size**2 * v + 17 * v
    text = config.text_layers * 12 * t * t + (config.tokenizer_vocab_size + config.max_text_length) * t
    assert 4 * (vision + text + (v + t) * p) < 20e6


@pytest.mark.parametrize(
    "variant, differences",
    [
        ("clip-shapes-clutter-captions-all.yaml", {"world_options"}),
        ("clip-shapes-clutter-p8.yaml", {"patch_size", "mixed_precision", "num_threads"}),
    ],
)
def test_pretraining_variants_change_only_what_they_name(variant, differences):
    """The controls/experiments of docs/synthetic.md compare CLIPs that differ from the shipped one in one respect:
    their recipes may change only that (and where they write: output folder, interim checkpoints)."""
    shipped = yaml.safe_load(recipe_path("clip-shapes-clutter.yaml").read_text())
    other = yaml.safe_load(recipe_path(variant).read_text())
    assert set(other) == set(shipped)
    changed = {key for key in shipped if shipped[key] != other[key]} - {"output_dir", "save_every"}
    assert changed == differences


# ----------------------------------------------------------------------------------------------------------------------
# Backbone alias and recipes


def test_shapes_clutter_backbone_alias_says_how_to_build_it(monkeypatch, tmp_path):
    from ovmlc.core import backbones

    missing = tmp_path / "clip-shapes-clutter"
    monkeypatch.setitem(backbones.BACKBONE_ALIASES, "shapes-clutter", missing)
    with pytest.raises(backbones.BackboneNotFoundError, match=r"pretrain-vlp --config hub_configs/clip-shapes-clutter"):
        backbones.resolve_backbone("shapes-clutter")
    missing.mkdir()
    assert backbones.resolve_backbone("shapes-clutter") == str(missing)


# Keys a shapes-clutter recipe changes from its synthetic counterpart; everything else must be equal.
WORLD_KEYS = ("backbone", "dataset.path", "dataset.source", "output_dir", "init_from")
CLUTTER_TRAINING_RECIPES = sorted(
    path for path in hub_configs_dir().glob("*shapes-clutter*.yaml") if "method" in yaml.safe_load(path.read_text())
)


def test_the_newer_methods_have_shapes_clutter_recipes():
    methods = {yaml.safe_load(path.read_text())["method"] for path in CLUTTER_TRAINING_RECIPES}
    expected = {"clip_zeroshot", "clipft", "coop", "dualcoop", "dualcooppp", "lamm", "linear_probe", "mkt", "qks"}
    assert expected | {"vild"} <= methods


@pytest.mark.parametrize("path", CLUTTER_TRAINING_RECIPES, ids=[path.name for path in CLUTTER_TRAINING_RECIPES])
def test_shapes_clutter_recipe_mirrors_its_synthetic_recipe(path):
    """Loaded through the trainer's validator, a shapes-clutter recipe equals its `*-synthetic` counterpart except for
    the world (dataset, backbone, output folder, MKT stage 2's init_from)."""
    from ovmlc.training.recipe import load_recipe

    recipe = load_recipe(path)
    clutter = recipe.to_dict()
    synthetic = load_recipe(hub_configs_dir() / path.name.replace("shapes-clutter", "synthetic")).to_dict()
    for key in WORLD_KEYS:
        *parents, leaf = key.split(".")
        for where in (clutter, synthetic):
            for parent in parents:
                where = where[parent]
            where.pop(leaf, None)
    assert clutter == synthetic
    assert (recipe.backbone, recipe.dataset.source, recipe.dataset.path) == (
        "shapes-clutter",
        "shapes-clutter",
        "data/shapes-clutter",
    )
    assert recipe.output_dir == f"outputs/{path.stem}"


@pytest.mark.slow  # ~20 s on a quiet 2-core machine, much more on a busy one
def test_pretrain_vlp_tiny_recipe_end_to_end(tmp_path, capsys):
    from transformers import AutoTokenizer, CLIPModel

    from ovmlc.cli import main

    out = tmp_path / "clip-clutter-tiny"
    assert main(["pretrain-vlp", "--config", str(TINY_RECIPE), "--output-dir", str(out), "--no-progress"]) == 0
    results = json.loads((out / "pretraining_results.json").read_text())
    assert set(results["zero_shot"]["eval_sets"]) == {"tagging", "web"}
    assert np.isfinite(results["zero_shot"]["zsl_map"]) and "stuff_map" in results["zero_shot"]
    model, tokenizer = CLIPModel.from_pretrained(out), AutoTokenizer.from_pretrained(out)
    assert model.config.vision_config.patch_size == 8
    assert len(tokenizer.tokenize("pinwheel")) == 1
    card = (out / "README.md").read_text()
    assert "clip-shapes-clutter" in card and "web-style test images" in card and "stuff mAP" in card


def test_benchmark_rows_name_shipped_recipes_and_print_tables(tmp_path, monkeypatch):
    """The results-table script (benchmarks/bench_methods_shapes_clutter.py) names only shipped recipes and dataset
    variants the converter accepts, and renders its two tables; a real run needs the world's pretrained CLIP."""
    import importlib.util
    import sys

    path = hub_configs_dir().parent / "benchmarks" / "bench_methods_shapes_clutter.py"
    sys.path.insert(0, str(path.parent))
    try:
        spec = importlib.util.spec_from_file_location("bench_methods_shapes_clutter", path)
        bench = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = bench  # dataclasses look their module up while the file runs
        spec.loader.exec_module(bench)
    finally:
        sys.path.remove(str(path.parent))
        sys.modules.pop("bench_methods_shapes_clutter", None)
    for _, recipes in bench.METHODS.values():
        for recipe in recipes:
            assert recipe_path(recipe).is_file()
    parser_flags = {"--oracle", "--style", "--layout", "--num-seen-shapes"}
    for _, arguments in bench.VARIANTS.values():
        assert {argument for argument in arguments if argument.startswith("--")} <= parser_flags
    result = bench.RunResult(
        "main/qks", "qks", "main", "shapes-clutter", 0, 12.0, 50.0, 40.0, 30.0, 20.0, 60.0, {"6-10px": 1.0}
    )
    tables = bench.markdown_tables([result, bench.RunResult(**{**result.__dict__, "seed": 1, "zsl_map": 52.0})])
    assert "| QKS | 51.0 ± 1.4 | 40.0 ± 0.0 |" in tables and "| QKS | 1.0 ± 0.0 |" in tables
    # a size bin without positives (the cell-sized layout has no 6-10 px object) is left out, not printed as nan
    empty_bin = {"6-10px": float("nan"), "10-16px": 30.0}
    tables = bench.markdown_tables([bench.RunResult(**{**result.__dict__, "zsl_map_by_size": empty_bin})])
    assert "| row | 10-16px |" in tables and "| QKS | 30.0 |" in tables and "nan" not in tables
    # --backbone: every row but captions-all runs on that CLIP of the world
    args = argparse.Namespace(
        backbone="/clips/clip-p8",
        captions_all_backbone="/clips/all",
        methods=["clip-zs"],
        upper_bound=True,
        upper_bound_methods=["linear-probe"],
        control_methods=["mkt-stage1"],
        controls=["seen10", "captions-all"],
    )
    plans = {(plan.variant, plan.tag): plan.backbone for plan in bench.build_plans(args)}
    assert plans == {
        ("main", ""): "/clips/clip-p8",
        ("oracle", ""): "/clips/clip-p8",
        ("seen10", ""): "/clips/clip-p8",
        ("main", "captions-all"): "/clips/all",
    }
    # --large-prob: every variant is prepared with that share of cell-sized objects, in its own folder
    calls = []
    monkeypatch.setattr("ovmlc.cli.main", lambda argv: calls.append(argv) or 0)
    sizes = bench.QUICK_SIZES
    assert bench.prepare_variant("seen10", tmp_path, sizes, large_prob=1.0) == tmp_path / "seen10-large-prob-1"
    assert bench.prepare_variant("seen10", tmp_path, sizes) == tmp_path / "seen10"
    assert calls[0][-4:] == ["--num-seen-shapes", "10", "--large-prob", "1.0"]
    assert calls[1][-2:] == ["--num-seen-shapes", "10"]


def test_shipped_shapes_clutter_clip_loads_by_alias_and_meets_the_zero_shot_target():
    """The world's CLIP (ovmlc/assets/clip-shapes-clutter, hub_configs/clip-shapes-clutter.yaml) as shipped: Hub
    layout, <= 20 MB, final card, loaded through the `shapes-clutter` alias. Zero-shot on 300 fresh tagging images
    measured 46.1 ZSL / 38.8 GZSL mAP (2,000 images at the end of pretraining: 43.6 / 37.2; random weights 21.0 /
    19.4): inside the issue's 40-70 ZSL target, with room above and below (docs/synthetic.md)."""
    import ovmlc
    from ovmlc.core.backbones import resolve_backbone
    from ovmlc.resources import SHAPES_CLUTTER_CLIP_DIR
    from ovmlc.training.pretrain_vlp import zero_shot_report

    assert resolve_backbone("shapes-clutter") == str(SHAPES_CLUTTER_CLIP_DIR)
    total = sum(path.stat().st_size for path in SHAPES_CLUTTER_CLIP_DIR.rglob("*") if path.is_file())
    assert total <= 20 * 1024 * 1024
    card = (SHAPES_CLUTTER_CLIP_DIR / "README.md").read_text()
    assert "Interim checkpoint" not in card and "output_dir: ovmlc/assets/clip-shapes-clutter" in card
    model = ovmlc.load_model("shapes-clutter")
    labelset = world.load_labelset()
    images = world.generate_world(300, seed=2024, stream="test", config=world.TAGGING, num_workers=1)
    scores = model.predict_scores([images.image(i) for i in range(len(images))], labelset["labels"])
    targets = images.scenes.label_matrix(labelset["labels"])
    report = zero_shot_report(scores, targets, labelset["labels"], labelset["unseen"], groups={})
    assert 40.0 <= report["zsl_map"] <= 70.0 and report["gzsl_map"] >= 33.0, report


def test_space_examples_are_the_worlds_cell_sized_images(tmp_path):
    """spaces/ovmlc-demo/examples (the Space's and the README's images) regenerate exactly from
    `write_examples()`: the quickstart's layout, every label of the world's label set."""
    shipped = Path(__file__).resolve().parents[1] / "spaces" / "ovmlc-demo" / "examples"
    meta = json.loads((shipped / "examples.json").read_text())
    entries = world.write_examples(tmp_path)
    assert meta["label_set"] == "shapes-clutter" and meta["examples"] == entries and len(entries) == 6
    labelset = world.load_labelset()
    for entry in entries:
        raw = np.asarray(Image.open(shipped / entry["file_64px"]).convert("RGB"))
        large = np.asarray(Image.open(shipped / entry["file"]).convert("RGB"))
        assert raw.shape == (64, 64, 3) and large.shape == (256, 256, 3)
        np.testing.assert_array_equal(raw, np.asarray(Image.open(tmp_path / entry["file_64px"]).convert("RGB")))
        np.testing.assert_array_equal(large[::4, ::4], raw)  # nearest-neighbour upscale
        assert entry["labels"] and set(entry["labels"]) <= set(labelset["labels"])
        assert entry["unseen_labels"] == [name for name in entry["labels"] if name in labelset["unseen"]]
