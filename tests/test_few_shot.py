"""Single-label few-shot support: the seeded sampler, the synthetic single-object dataset, the single-label protocol
(metrics, report files, `ovmlc evaluate`) and few-shot training through the trainer."""

import json

import numpy as np
import pytest
import torch
from datasets import ClassLabel, Dataset, Features, Image, List, Value
from PIL import Image as PILImage
from test_train_fixtures import make_tiny_backbone, write_recipe

from ovmlc.cli import main as cli_main
from ovmlc.data import CanonicalSchemaError, dataset_label_names, label_matrix, load_canonical, save_canonical
from ovmlc.data.few_shot import few_shot_indices, few_shot_subset, single_label_classes
from ovmlc.data.synthetic import SHAPE_NAMES
from ovmlc.data.synthetic_single import generate_single_object_world
from ovmlc.evaluation.metrics import (
    SingleLabelProtocol,
    evaluate_protocol,
    list_protocols,
    load_protocol,
    top_k_correct,
)
from ovmlc.files import TRAINER_STATE_FILE
from ovmlc.training.trainer import build_schedule_lambda, train

CLASSES = ["red", "green", "blue", "white"]


def single_label_split(labels_per_image, seed=0, prefix="img") -> Dataset:
    features = Features({"image": Image(), "labels": List(ClassLabel(names=CLASSES)), "image_id": Value("string")})
    rng = np.random.default_rng(seed)
    images = [PILImage.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)) for _ in labels_per_image]
    ids = [f"{prefix}-{index:03d}" for index in range(len(labels_per_image))]
    return Dataset.from_dict({"image": images, "labels": labels_per_image, "image_id": ids}, features=features)


# ---------------------------------------------------------------------- sampler
def test_few_shot_draw_is_seeded_balanced_nested_and_order_free():
    split = single_label_split([[CLASSES[index % 4]] for index in range(40)])  # 10 images per class
    classes = single_label_classes(split)
    assert classes.tolist() == [index % 4 for index in range(40)]
    two = few_shot_indices(split, ["red", "blue"], 2, seed=0)
    assert len(two) == 4 and sorted(classes[two].tolist()) == [0, 0, 2, 2]
    assert np.array_equal(two, few_shot_indices(split, ["red", "blue"], 2, seed=0))
    assert not np.array_equal(few_shot_indices(split, CLASSES, 4, seed=0), few_shot_indices(split, CLASSES, 4, seed=1))
    # More shots only add images (the k-shot set is inside the 2k-shot set of the same seed).
    ids = np.array(split["image_id"])
    for small, large in ((1, 2), (2, 4), (4, 8)):
        assert set(ids[few_shot_indices(split, CLASSES, small, 5)]) <= set(
            ids[few_shot_indices(split, CLASSES, large, 5)]
        )
    # The draw depends on the image ids, not on the row order.
    shuffled = split.shuffle(seed=3)
    subset = few_shot_subset(shuffled, CLASSES, 3, seed=7)
    assert sorted(subset["image_id"]) == sorted(ids[few_shot_indices(split, CLASSES, 3, seed=7)].tolist())


def test_few_shot_errors_name_the_problem():
    multi = single_label_split([["red"], ["red", "blue"], ["green"]])
    with pytest.raises(CanonicalSchemaError, match=r"exactly one label per image; 1 image.*'img-001' with 2 labels"):
        few_shot_indices(multi, CLASSES, 1, 0)
    few = single_label_split([["red"], ["red"], ["green"]])
    with pytest.raises(CanonicalSchemaError, match=r"2-shot sampling .* 'green' \(1\), 'blue' \(0\)"):
        few_shot_indices(few, ["red", "green", "blue"], 2, 0)
    with pytest.raises(CanonicalSchemaError, match=r"\['cyan'\] are not in the dataset"):
        few_shot_indices(few, ["cyan"], 1, 0)
    with pytest.raises(ValueError, match="shots must be a positive integer"):
        few_shot_indices(few, ["red"], 0, 0)


# ---------------------------------------------------------------------- synthetic single-object dataset
def test_single_object_world_is_deterministic_balanced_and_has_one_object():
    world = generate_single_object_world(60, seed=2, split="test", num_workers=1)
    assert world.images.shape == (60, 64, 64, 3)
    assert (world.scenes.shape_ids[:, 1:] == -1).all() and (world.scenes.shape_ids[:, 0] >= 0).all()
    counts = np.bincount(world.scenes.shape_ids[:, 0], minlength=len(SHAPE_NAMES))
    assert counts.max() - counts.min() <= 1  # balanced
    again = generate_single_object_world(60, seed=2, split="test", num_workers=2)
    assert world.images.tobytes() == again.images.tobytes()
    assert (
        generate_single_object_world(60, seed=2, split="train", num_workers=1).images.tobytes()
        != world.images.tobytes()
    )
    small = generate_single_object_world(60, seed=2, split="test", num_workers=1, style="small")
    assert (
        np.array_equal(small.scenes.shape_ids, world.scenes.shape_ids)
        and small.images.tobytes() != world.images.tobytes()
    )
    with pytest.raises(ValueError, match="Unknown style 'tiny'"):
        generate_single_object_world(1, style="tiny")


def test_prepare_synthetic_single(tmp_path):
    out = tmp_path / "single"
    sizes = ["--num-train", "48", "--num-val", "24", "--num-test", "24", "--style", "small"]
    assert (
        cli_main(["data", "prepare", "synthetic-single", "--root", "x", "--out", str(out), "--no-progress", *sizes])
        == 0
    )
    dataset = load_canonical(out)
    assert dataset_label_names(dataset["train"]) == list(SHAPE_NAMES)
    for split, size in (("train", 48), ("validation", 24), ("test", 24)):
        matrix = label_matrix(dataset[split], list(SHAPE_NAMES))
        assert matrix.shape == (size, 24) and ((matrix == 1).sum(axis=1) == 1).all()
    assert len(few_shot_subset(dataset["train"], list(SHAPE_NAMES), 2, seed=0)) == 48
    card = (out / "README.md").read_text()
    assert "style 'small'" in card and "synthetic-shapes" in card


# ---------------------------------------------------------------------- single-label protocol
def single_label_case():
    targets = np.array([0, 1, 2, 3, 0, 1, 2, 3])
    labels = -np.ones((8, 4), dtype=np.int8)
    labels[np.arange(8), targets] = 1
    scores = np.array(
        [
            [0.9, 0.1, 0.0, 0.0],  # right
            [0.5, 0.4, 0.3, 0.0],  # 2nd
            [0.0, 0.0, 0.8, 0.1],  # right
            [0.1, 0.2, 0.3, 0.05],  # 4th
            [0.2, 0.2, 0.0, 0.0],  # tie with class 1: the earlier class (0, the target) wins
            [0.3, 0.3, 0.0, 0.0],  # tie: class 0 wins, the target (1) is 2nd
            [0.0, 0.0, 0.1, 0.0],  # right
            [0.4, 0.0, 0.0, 0.2],  # 2nd
        ],
        dtype=np.float32,
    )
    return scores, labels, targets


def test_top_k_accuracy_per_class_and_harmonic_mean():
    scores, labels, targets = single_label_case()
    assert top_k_correct(scores, targets, 1).tolist() == [True, False, True, False, True, False, True, False]
    assert top_k_correct(scores, targets, 2).tolist() == [True, True, True, False, True, True, True, True]
    unseen = np.array([False, False, True, True])
    report = evaluate_protocol(scores, labels, CLASSES, unseen, "single-label")
    views = report["views"]
    assert report["task"] == "single-label" and views["all"]["top1"] == 0.5
    assert views["all"]["top_k"]["5"]["accuracy"] is None  # K > 4 classes
    assert [row["accuracy"] for row in views["all"]["per_label"]] == [1.0, 0.0, 1.0, 0.0]
    assert views["all"]["mean_per_class_accuracy"] == 0.5
    # base: classes 0-1 on their 4 images, ranked among themselves only.
    assert views["base"]["num_images"] == 4 and views["base"]["num_labels"] == 2
    assert views["base"]["top1"] == 0.5  # images 0, 4 right; 1 (0.5 > 0.4) and 5 (tie: class 0 first) wrong
    # new: classes 2-3 on their images, among themselves: images 2, 6, 7 (0.2 > 0.0) right, 3 (0.05 < 0.3) wrong.
    assert views["new"]["top1"] == 0.75
    assert views["base_new"]["top1"] == pytest.approx(2 * 0.5 * 0.75 / 1.25)
    assert views["base_new"]["base_view"] == "base" and views["base_new"]["new_view"] == "new"


def test_single_label_protocol_edge_cases(tmp_path):
    scores, labels, _ = single_label_case()
    no_split = evaluate_protocol(scores, labels, CLASSES, np.zeros(4, bool), "single-label")
    assert set(no_split["views"]) == {"all"} and set(no_split["skipped_views"]) == {"base", "new"}
    # Images whose label is not among the scored columns are left out (e.g. only base labels scored).
    partial = evaluate_protocol(scores[:, :2], labels[:, :2], CLASSES[:2], np.zeros(2, bool), "single-label")
    assert partial["num_images_without_label"] == 4 and partial["views"]["all"]["num_images"] == 4
    doubled = labels.copy()
    doubled[0, 1] = 1
    with pytest.raises(ValueError, match="exactly one positive label per image; 1 image"):
        evaluate_protocol(scores, doubled, CLASSES, np.zeros(4, bool), "single-label")
    assert "single-label" in list_protocols() and isinstance(load_protocol("single-label"), SingleLabelProtocol)
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "name: bad\ntask: single-label\ndescription: x\ncitation: y\ntop_k: [1]\n"
        "views: {all: {labels: all, image_filter: all}}\n"
    )
    with pytest.raises(ValueError, match="bad.yaml: views.all: unknown key 'image_filter' \\(valid keys: labels\\)"):
        load_protocol(bad)
    bad.write_text(
        "name: bad\ntask: single-label\ndescription: x\ncitation: y\ntop_k: [1]\nviews: {base_new: {labels: all}}\n"
    )
    with pytest.raises(ValueError, match="bad.yaml: views.base_new: 'base_new' is computed from the seen and unseen"):
        load_protocol(bad)


def test_ovmlc_evaluate_writes_a_single_label_report(tmp_path, capsys):
    from ovmlc.evaluation import save_scores

    scores, labels, _ = single_label_case()
    scores_file = save_scores(tmp_path / "scores.npz", scores, labels, CLASSES, [False, False, True, True])
    out = tmp_path / "report"
    assert cli_main(["evaluate", "--scores", str(scores_file), "--protocol", "single-label", "--output", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "| All classes | 4 | 8 | 50.00 |" in printed and "top-1 H = 60.00" in printed
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["views"]["all"]["top1"] == 0.5
    rows = (out / "per_label_ap.csv").read_text().splitlines()
    assert rows[0] == "protocol,view,label,unseen,accuracy,num_images,ap" and len(rows) == 1 + 4 + 2 + 2


# ---------------------------------------------------------------------- training
def test_constant_warm_up_schedule():
    schedule = build_schedule_lambda("cosine", 2, 12, 0.0, 1, 0.1, warmup_multiplier=0.005)
    assert [schedule(step) for step in (0, 1)] == [0.005, 0.005] and schedule(2) == 1.0
    assert schedule(12) == pytest.approx(0.0)


@pytest.fixture(scope="module")
def single_label_dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("single-label")
    splits = {}
    from datasets import DatasetDict

    for split, count, seed in (("train", 24, 0), ("validation", 8, 1), ("test", 12, 2)):
        splits[split] = single_label_split([[CLASSES[index % 4]] for index in range(count)], seed, split)
    save_canonical(
        DatasetDict(splits), root / "data", source="test-single", converter_version="1", seen_labels=CLASSES,
        unseen_labels=[], annotation="full", description="single-label noise images",
    )  # fmt: skip
    return {"dataset": root / "data", "backbone": make_tiny_backbone(root / "clip")}


def test_trainer_runs_single_label_few_shot_lamm(tmp_path, single_label_dataset, monkeypatch):
    monkeypatch.setenv("OVMLC_CACHE", str(tmp_path / "cache"))
    torch.set_num_threads(1)
    recipe = write_recipe(
        tmp_path / "lamm.yaml", single_label_dataset["dataset"], single_label_dataset["backbone"], tmp_path / "out",
        method="lamm",
        method_config={"task": "single_label", "prompt_learning": {"ctx_init": "a photo of a"}},
        dataset={"path": str(single_label_dataset["dataset"]), "source": "test-single", "shots": 2,
                 "train_labels": "all"},
        protocol="single-label", freeze=[],
        optimizer={"name": "sgd", "lr": 0.5, "momentum": 0.9, "weight_decay": 5.0e-4},
        schedule={"name": "cosine", "warmup_steps": 2, "warmup_lr": 1.0e-5},
        training={"epochs": 3, "batch_size": 4, "eval_every": None, "selection_metric": "all/top1", "log_every": 1},
    )  # fmt: skip
    output = train(recipe)
    state = json.loads((output / TRAINER_STATE_FILE).read_text())
    assert state["global_step"] == 3 * 2  # 4 classes x 2 shots = 8 images, batches of 4
    learning_rates = [entry[2] for entry in state["loss"]["history"]]  # after each step
    assert learning_rates[0] == pytest.approx(1.0e-5) and learning_rates[1] == pytest.approx(0.5)  # held, then cosine
    assert "all/top1" in state["test"] and "all/mAP" in state["test"]
    metrics = json.loads((output / "eval" / "metrics.json").read_text())
    assert metrics["protocol"] == "single-label" and metrics["views"]["all"]["num_images"] == 12
    config = json.loads((output / "config.json").read_text())
    assert config["shots"] == 2  # filled from dataset.shots: lambda_1 = 1/2
    assert config["prompt_learning"]["class_names"] == CLASSES  # label tokens sized from the training labels
    assert "| All classes | 4 | 12 |" in (output / "eval" / "results.md").read_text()
    card = (output / "README.md").read_text()
    assert "type: accuracy" in card and "top-1 accuracy (single-label)" in card  # model-index entry


def test_few_shot_recipe_errors(tmp_path, single_label_dataset):
    from test_train_fixtures import make_tiny_dataset

    from ovmlc.training.recipe import RecipeError, load_recipe
    from ovmlc.training.trainer import TrainingError

    def recipe(dataset_path, **sections):
        return write_recipe(
            tmp_path / "r.yaml", dataset_path, single_label_dataset["backbone"], tmp_path / "out", **sections
        )

    base = {"path": str(single_label_dataset["dataset"]), "source": "test-single"}
    for sections, message in (
        ({"dataset": {**base, "shots": 0}}, "r.yaml: dataset.shots: expected an integer >= 1 or null, got 0"),
        ({"dataset": {**base, "shots_seed": 3}}, "r.yaml: dataset.shots_seed: is set but dataset.shots is not"),
        (
            {"schedule": {"name": "cosine", "warmup_ratio": 0.1, "warmup_lr": 0.0}},
            "r.yaml: schedule.warmup_lr: expected a finite number > 0 or null, got 0.0",
        ),
        (
            {"schedule": {"name": "cosine", "warmup_lr": 1e-5}},
            "r.yaml: schedule.warmup_lr: sets the learning rate of the warm-up: give warmup_ratio or warmup_steps",
        ),
    ):
        with pytest.raises(RecipeError, match=message):
            load_recipe(recipe(single_label_dataset["dataset"], **sections))
    multi_label = make_tiny_dataset(tmp_path / "multi")
    path = recipe(multi_label, dataset={"path": str(multi_label), "source": "test-colours", "shots": 1})
    with pytest.raises(TrainingError, match=r"dataset.shots: .*exactly one label per image"):
        train(path)


def test_class_folders_converter(tmp_path, capsys):
    """ImageNet layout: train/<wnid>/ and val/<wnid>/ (val becomes test), CoOp's classnames.txt for the names."""
    rng = np.random.default_rng(0)
    raw = tmp_path / "raw"
    for split, count in (("train", 4), ("val", 2)):
        for wnid in ("n01", "n02"):
            folder = raw / split / wnid
            folder.mkdir(parents=True)
            for index in range(count):
                PILImage.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(folder / f"{index}.JPEG")
    names = tmp_path / "classnames.txt"
    names.write_text("n01 tench\nn02 great white shark\n")
    out = tmp_path / "out"
    common = ["data", "prepare", "class-folders", "--root", str(raw), "--no-progress", "--val-fraction", "0.25"]
    assert cli_main([*common, "--out", str(out), "--class-names", str(names)]) == 0
    dataset = load_canonical(out)
    assert dataset_label_names(dataset["test"]) == ["great white shark", "tench"]
    assert (len(dataset["train"]), len(dataset["validation"]), len(dataset["test"])) == (6, 2, 4)
    assert len(few_shot_subset(dataset["train"], ["tench", "great white shark"], 2, seed=1)) == 4
    names.write_text("n01 tench\n")
    assert cli_main([*common, "--out", str(tmp_path / "bad"), "--class-names", str(names)]) == 2
    assert "no class name for the folder(s) ['n02']" in capsys.readouterr().err
