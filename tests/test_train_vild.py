"""ViLD through the real trainer on a tiny synthetic world (with boxes) and a tiny CLIP: box targets, the teacher
cache, the localisation report, `ovmlc evaluate`, and the shipped ViLD recipes."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from test_train_fixtures import make_tiny_backbone, write_recipe

import ovmlc
from ovmlc.cli import main as cli_main
from ovmlc.data import load_canonical
from ovmlc.data.objects import object_targets
from ovmlc.files import TRAINER_STATE_FILE
from ovmlc.training.recipe import RecipeError, load_recipe, validate_method_config, validate_recipe
from ovmlc.training.trainer import train

HUB_CONFIGS = Path(__file__).resolve().parent.parent / "hub_configs"
VILD = {"templates": "single", "head_hidden_size": 16, "head_num_layers": 1, "crop_mode": "mask"}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("vild-world")
    data = root / "data"
    argv = ["data", "prepare", "synthetic", "--out", str(data), "--num-train", "48", "--num-val", "16"]
    assert cli_main([*argv, "--num-test", "24", "--seed", "3", "--no-progress"]) == 0
    return {"dataset": data, "backbone": make_tiny_backbone(root / "clip"), "cache": root / "cache"}


@pytest.fixture(autouse=True)
def one_thread(monkeypatch, world):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    monkeypatch.setenv("OVMLC_CACHE", str(world["cache"]))  # shared by the runs of this module
    yield
    torch.set_num_threads(threads)


def vild_recipe(tmp_path, world, name, epochs=2, seed=0, **method_config):
    return write_recipe(
        tmp_path / f"{name}.yaml",
        world["dataset"],
        world["backbone"],
        tmp_path / name,
        method="vild",
        method_config={**VILD, **method_config},
        dataset={"source": "synthetic"},
        freeze=[],
        optimizer={"lr": 3.0e-3},
        training={"epochs": epochs, "batch_size": 16, "eval_batch_size": 8, "augment": "none", "seed": seed},
    )


def test_box_targets_follow_the_evaluation_transform(world):
    """The tiny CLIP sees 32 px: the world's 16-px cells become quarter-size boxes of the model input."""
    train_split = load_canonical(world["dataset"], split="train")
    targets = object_targets(train_split, ["circle", "red"], [{"op": "resize_shortest_edge", "size": 32}])
    rows = [(i, objects) for i, objects in enumerate(train_split["objects"]) if objects]
    names = train_split.features["labels"].feature.names
    for index, objects in rows[:5]:
        wanted = [o for o in objects if names[o["label"]] in ("circle", "red")]
        kept = targets.labels[index] >= 0
        assert int(kept.sum()) == len(wanted)
        for box, column in zip(targets.boxes[index][kept], targets.labels[index][kept]):
            assert ["circle", "red"][column] in {names[o["label"]] for o in wanted}
            assert np.allclose(box[2:] - box[:2], 0.25) and np.allclose(box * 4, np.round(box * 4))


def test_vild_ensemble_trains_caches_teachers_and_reports_localisation(tmp_path, world):
    output = train(vild_recipe(tmp_path, world, "ensemble", double_branch=True))
    state = json.loads((output / TRAINER_STATE_FILE).read_text())
    assert state["feature_cache"] and state["loss"]["per_epoch"][-1] < state["loss"]["per_epoch"][0]
    assert set(state["localization"]) == {"box_ap", "pointing"}
    metrics = json.loads((output / "eval" / "metrics.json").read_text())
    localization = metrics["localization"]
    # ViLD's protocol: unseen labels are scored within the whole vocabulary (no separate unseen-only pass).
    assert localization["num_images"] == 24 and not localization["unseen_scored_alone"]
    assert "unseen_scores" not in np.load(output / "eval" / "scores.npz")
    test_split = load_canonical(world["dataset"], split="test")
    names = test_split.features["labels"].feature.names
    boxed = {names[o["label"]] for objects in test_split["objects"] for o in objects}
    unseen = set(json.loads((output / "config.json").read_text())["unseen_labels"])
    assert localization["labels_with_boxes"]["unseen"] == len(boxed & unseen) > 0  # backgrounds have no box
    assert set(localization["per_label"]) == set(names)
    assert all(0 <= localization[key]["all"] <= 1 for key in ("box_ap", "pointing"))
    assert "## Localisation" in (output / "eval" / "results.md").read_text()
    config = json.loads((output / "config.json").read_text())
    assert config["model_type"] == "ovmlc_vild" and len(config["unseen_labels"]) == 10
    # The train split's cache holds the distillation targets of the 26 windows; evaluation caches only tokens.
    files = sorted(world["cache"].glob("features/*.safetensors"))
    contents = {}
    for path in files:
        with safe_open(str(path), framework="np") as handle:
            contents[path.name.split("-")[0]] = {key: handle.get_slice(key).get_shape() for key in handle.keys()}
    assert contents["train"] == {"patch_tokens": [48, 16, 32], "teacher_embeds": [48, 26, 16]}
    assert contents["validation"] == {"patch_tokens": [16, 16, 32]}
    # ViLD-image with another training seed reuses the same teacher cache (a different head and seed, the same image
    # features): the cache is keyed by data + frozen weights + windows and crops, never by the seed.
    train(vild_recipe(tmp_path, world, "image", epochs=1, seed=1, text_weight=0.0))
    assert sorted(world["cache"].glob("features/train-*.safetensors")) == [
        p for p in files if p.name.startswith("train")
    ]
    model = ovmlc.load_model(str(output))
    detections = model.detect(load_canonical(world["dataset"], split="test")[0]["image"], ["circle", "square"])
    assert all(0 <= v <= 64 for d in detections for v in d["box"])  # boxes in the 64-px image's pixels


def test_ovmlc_evaluate_reports_localisation(tmp_path, world, capsys):
    output = train(vild_recipe(tmp_path, world, "text", epochs=1, distillation_weight=0.0, text_supervision="image"))
    report_dir = tmp_path / "report"
    argv = ["evaluate", "--model", str(output), "--dataset", str(world["dataset"]), "--protocol", "synthetic"]
    assert cli_main([*argv, "--output", str(report_dir), "--no-plots"]) == 0
    assert "Box AP" in capsys.readouterr().out
    metrics = json.loads((report_dir / "metrics.json").read_text())
    trained = json.loads((output / "eval" / "metrics.json").read_text())
    assert metrics["localization"]["box_ap"] == pytest.approx(trained["localization"]["box_ap"])


def test_shipped_vild_recipes_are_valid():
    for name in ("vild-synthetic", "vild-coco-48-17", "vild-nuswide"):
        recipe = load_recipe(HUB_CONFIGS / f"{name}.yaml")
        config = ovmlc.ViLDConfig(**validate_method_config(recipe, ovmlc.ViLDConfig))
        assert recipe.method == "vild" and recipe.training.augment == "none"
        assert config.region_scoring in ("softmax", "sigmoid")
    nuswide = ovmlc.ViLDConfig(**load_recipe(HUB_CONFIGS / "vild-nuswide.yaml").method_config)
    assert nuswide.text_supervision == "image"  # NUS-WIDE has no boxes
    synthetic = load_recipe(HUB_CONFIGS / "vild-synthetic.yaml").method_config
    assert synthetic["double_branch"] and synthetic["crop_mode"] == "mask"


@pytest.mark.parametrize(
    "override, untrained_key",
    [("method_config.distillation_weight=0", "distillation_weight"), ("method_config.text_weight=0", "text_weight")],
)
def test_ensemble_recipe_with_an_untrained_head_is_refused(override, untrained_key):
    """`ovmlc train` stops before building anything: the ensemble would combine a random-init head's noise."""
    recipe = load_recipe(HUB_CONFIGS / "vild-synthetic.yaml", [override])
    with pytest.raises(RecipeError, match=f"double_branch=True with {untrained_key}=0") as caught:
        validate_recipe(recipe)
    assert "vild-synthetic.yaml" in str(caught.value) and "method_config" in str(caught.value)
    # The benchmark's single-head variants (the same override with double_branch: false) stay valid.
    validate_recipe(load_recipe(HUB_CONFIGS / "vild-synthetic.yaml", [override, "method_config.double_branch=false"]))
