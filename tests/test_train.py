"""The training engine in-process: a short run, evaluation-only runs, the feature cache, recipes and checkpoints."""

import json
import os
import re

import numpy as np
import pytest
import torch
import yaml
from safetensors import safe_open
from safetensors.torch import load_file
from test_train_fixtures import SEEN, UNSEEN, write_recipe

import ovmlc
from ovmlc import evaluation
from ovmlc.cli import main as cli_main
from ovmlc.training.checkpointing import CheckpointManager
from ovmlc.training.feature_cache import open_feature_file
from ovmlc.training.recipe import RecipeError, load_recipe
from ovmlc.training.trainer import Trainer, TrainingError, build_schedule_lambda, train

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def recipe_file(tmp_path, train_world, name="recipe", **sections):
    return write_recipe(
        tmp_path / f"{name}.yaml", train_world["dataset"], train_world["backbone"], tmp_path / name, **sections
    )


def qks_sections(**training):
    return {
        "method": "qks",
        "method_config": {"num_queries": 4, "num_query_layers": 1, "templates": "single"},
        "freeze": [],
        "optimizer": {"lr": 1.0e-3},
        "training": {"epochs": 2, **training},
    }


# ----------------------------------------------------------------------------------------------------------------------
# End to end
# ----------------------------------------------------------------------------------------------------------------------


def test_short_run_lowers_loss_and_writes_a_loadable_model(tmp_path, train_world):
    output = train(recipe_file(tmp_path, train_world))
    state = json.loads((output / "ovmlc_trainer_state.json").read_text())
    assert state["global_step"] == state["total_steps"] == 3 * 6  # 48 images / batch 8, 3 epochs
    assert state["loss"]["per_epoch"][-1] < state["loss"]["per_epoch"][0]
    assert [entry["step"] for entry in state["validation"]] == [6, 12, 18]
    assert state["best_metric"] == max(entry["metric"] for entry in state["validation"])
    assert state["seed"] == 0 and state["versions"]["torch"] == torch.__version__
    assert state["hardware"]["num_processes"] == 1

    metrics = json.loads((output / "eval" / "metrics.json").read_text())
    assert metrics["provenance"]["split"] == "test" and metrics["num_images"] == 19
    assert {"zsl", "gzsl", "seen"} <= set(metrics["views"])
    assert state["test"]["gzsl/mAP"] == pytest.approx(metrics["views"]["gzsl"]["mAP"])
    for name in ("results.md", "scores.npz", "thresholds.json"):
        assert (output / "eval" / name).is_file()

    config = json.loads((output / "config.json").read_text())
    assert config["label_names"] == SEEN + UNSEEN
    assert config["seen_labels"] == SEEN and config["unseen_labels"] == UNSEEN
    assert set(config["label_thresholds"]) == set(SEEN + UNSEEN) and config["global_threshold"] is not None
    # The saved model is the best-on-validation one, and it loads back as an ovmlc model.
    best = state["best_step"]
    snapshot = load_file(str(output / "checkpoints" / f"best-{best}" / "trainable_weights.safetensors"))
    saved = load_file(str(output / "model.safetensors"))
    for name, tensor in snapshot.items():
        torch.testing.assert_close(saved[name], tensor)
    model = ovmlc.load_model(output)
    predictions = model.predict(np.zeros((32, 32, 3), dtype=np.uint8), SEEN, threshold="calibrated")
    assert all(label in SEEN for label, _ in predictions)

    # The resolved recipe reproduces the run's settings.
    assert load_recipe(output / "recipe.yaml").to_dict() == load_recipe(tmp_path / "recipe.yaml").to_dict()

    # The folder is occupied now: a new run must resume or overwrite explicitly.
    with pytest.raises(TrainingError, match="--resume"):
        train(tmp_path / "recipe.yaml")


def test_evaluation_only_recipe_matches_ovmlc_evaluate(tmp_path, train_world):
    output = train(recipe_file(tmp_path, train_world, training={"epochs": 0}, freeze=[]))
    state = json.loads((output / "ovmlc_trainer_state.json").read_text())
    assert state["global_step"] == 0 and state["validation"] == []
    assert not (output / "checkpoints").exists()
    mine = json.loads((output / "eval" / "metrics.json").read_text())
    reference = evaluation.evaluate_model(
        str(train_world["backbone"]),
        str(train_world["dataset"]),
        "synthetic",
        output_dir=tmp_path / "reference",
        progress=False,
    )
    for view in ("zsl", "gzsl", "seen"):
        assert mine["views"][view]["mAP"] == pytest.approx(reference["views"][view]["mAP"], abs=1e-6)
    assert (output / "model.safetensors").is_file()


def test_gradient_accumulation_matches_a_larger_batch(tmp_path, train_world):
    plain_sgd = {"name": "sgd", "lr": 0.1, "momentum": 0.0}
    big = train(
        recipe_file(tmp_path, train_world, "big", optimizer=plain_sgd, training={"epochs": 1, "batch_size": 16})
    )
    accumulated = train(
        recipe_file(
            tmp_path,
            train_world,
            "accumulated",
            optimizer=plain_sgd,
            training={"epochs": 1, "batch_size": 8, "gradient_accumulation_steps": 2},
        )
    )
    big_weights, accumulated_weights = (
        load_file(str(big / "model.safetensors")),
        load_file(str(accumulated / "model.safetensors")),
    )
    assert json.loads((accumulated / "ovmlc_trainer_state.json").read_text())["global_step"] == 3
    for name, tensor in big_weights.items():
        torch.testing.assert_close(accumulated_weights[name], tensor, atol=1e-6, rtol=1e-5)


def test_feature_cache_trains_like_the_image_path_and_is_reused(tmp_path, train_world):
    cached = train(recipe_file(tmp_path, train_world, "cached", **qks_sections()))
    uncached = train(recipe_file(tmp_path, train_world, "uncached", **qks_sections(feature_cache=False)))
    assert json.loads((cached / "ovmlc_trainer_state.json").read_text())["feature_cache"] is True
    assert json.loads((uncached / "ovmlc_trainer_state.json").read_text())["feature_cache"] is False
    cached_weights, uncached_weights = (
        load_file(str(cached / "model.safetensors")),
        load_file(str(uncached / "model.safetensors")),
    )
    for name, tensor in cached_weights.items():
        torch.testing.assert_close(uncached_weights[name], tensor, atol=1e-5, rtol=1e-4)

    files = sorted((tmp_path / "ovmlc-cache" / "features").glob("*.safetensors"))
    assert [path.name.split("-")[0] for path in files] == ["test", "train", "validation"]
    train_file = next(path for path in files if path.name.startswith("train"))
    with safe_open(str(train_file), framework="pt") as handle:  # a valid safetensors file for other tools too
        assert handle.metadata()["split"].startswith("train")
        # QKS caches the vision tokens: [N, 1 + 16 patches, vision width 32]
        assert tuple(handle.get_tensor("vision_tokens").shape) == (48, 17, 32)
    assert open_feature_file(train_file)["vision_tokens"].shape == (48, 17, 32)
    modified = {path: path.stat().st_mtime_ns for path in files}
    train(recipe_file(tmp_path, train_world, "again", **qks_sections()))
    assert {path: path.stat().st_mtime_ns for path in files} == modified  # reused, not rebuilt


def test_plateau_schedule_and_early_stopping_follow_the_validation_metric(tmp_path, train_world):
    # A selection metric that never improves after the first evaluation: the image count of the gzsl view.
    output = train(
        recipe_file(
            tmp_path,
            train_world,
            schedule={"name": "plateau", "mode": "max", "patience": 0, "factor": 0.5},
            training={
                "epochs": 3,
                "eval_every": 2,
                "selection_metric": "gzsl/num_images",
                "early_stopping_patience": 2,
            },
        )
    )
    state = json.loads((output / "ovmlc_trainer_state.json").read_text())
    assert state["stopped_early"] is True
    assert [entry["step"] for entry in state["validation"]] == [2, 4, 6]
    assert state["best_step"] == 2 and state["global_step"] == 6
    learning_rates = [entry[2] for entry in state["loss"]["history"]]  # logged every 2 steps, before validating
    assert learning_rates == pytest.approx([3.0e-3, 3.0e-3, 1.5e-3])  # halved after each evaluation without gain


def test_selection_last_keeps_the_final_weights(tmp_path, train_world):
    # The gzsl image count never improves after the first validation: `best` would restore step 2.
    validated = {"epochs": 2, "eval_every": 2, "selection_metric": "gzsl/num_images", "selection": "last"}
    last = train(recipe_file(tmp_path, train_world, "last", training=validated))
    unvalidated = train(recipe_file(tmp_path, train_world, "unvalidated", training={"epochs": 2, "eval_every": None}))
    state = json.loads((last / "ovmlc_trainer_state.json").read_text())
    assert state["selection"] == "last" and state["best_step"] == 2 and state["global_step"] == 12
    assert [entry["step"] for entry in state["validation"]] == [2, 4, 6, 8, 10, 12]
    assert not list((last / "checkpoints").glob("best-*"))  # nothing to restore, so no snapshot
    last_weights, final_weights = (
        load_file(str(last / "model.safetensors")),
        load_file(str(unvalidated / "model.safetensors")),
    )
    for name, tensor in final_weights.items():
        torch.testing.assert_close(last_weights[name], tensor)
    assert json.loads((last / "eval" / "metrics.json").read_text())["provenance"]["selection"] == "last"


def test_tensorboard_tracker_and_cli(tmp_path, train_world):
    recipe = recipe_file(tmp_path, train_world, training={"epochs": 1}, tracker="tensorboard")
    assert cli_main(["train", "--config", str(recipe), "training.checkpoint_every=null"]) == 0
    output = tmp_path / "recipe"
    assert list((output / "logs").rglob("events.out.tfevents.*"))
    assert sorted(path.name for path in (output / "checkpoints").iterdir() if path.name.startswith("checkpoint")) == [
        "checkpoint-6"
    ]
    # A checkpoint written by another number of processes: a clear error, not accelerate's missing-file trace.
    checkpoint = output / "checkpoints" / "checkpoint-6"
    (checkpoint / "rng_state_1.safetensors").write_bytes((checkpoint / "rng_state_0.safetensors").read_bytes())
    with pytest.raises(TrainingError, match=r"written by 2 process\(es\), this run has 1.*--num_processes 2"):
        train(recipe, resume=str(checkpoint))
    # --overwrite starts over in the same folder.
    assert cli_main(["train", "--config", str(recipe), "training.epochs=0", "--overwrite"]) == 0
    assert json.loads((output / "ovmlc_trainer_state.json").read_text())["global_step"] == 0


# ----------------------------------------------------------------------------------------------------------------------
# Recipes
# ----------------------------------------------------------------------------------------------------------------------


def test_shipped_recipes_are_valid():
    from pathlib import Path

    hub_configs = Path(__file__).resolve().parent.parent / "hub_configs"
    for name in ("tiny-synthetic", "clip-zeroshot-eval-synthetic", "clip-zeroshot-nuswide"):
        recipe = load_recipe(hub_configs / f"{name}.yaml")
        assert recipe.method in ovmlc.METHODS
    assert load_recipe(hub_configs / "clip-zeroshot-nuswide.yaml").training.epochs == 0


def test_overrides_set_nested_keys_with_yaml_values(tmp_path, train_world):
    recipe = load_recipe(
        recipe_file(tmp_path, train_world),
        ["training.epochs=5", "optimizer.betas=[0.8, 0.9]", "training.max_steps=null", "method_config.logit_bias=-1"],
    )
    assert recipe.training.epochs == 5 and recipe.optimizer.betas == [0.8, 0.9]
    assert recipe.method_config == {"logit_bias": -1}


@pytest.mark.parametrize(
    ("sections", "overrides", "message"),
    [
        ({"learning_rate": 0.1}, [], "unknown key 'learning_rate'"),
        ({"training": {"epochs": 1, "epoch": 2}}, [], "training: unknown key 'epoch' (did you mean 'epochs'?"),
        ({}, ["training.epochz=2"], "training: unknown key 'epochz' (did you mean 'epochs'?"),
        ({}, ["training.epochs"], "must look like key=value"),
        ({}, ["training.epochs=two"], "training.epochs: expected an integer >= 0, got 'two'"),
        ({}, ["training.epochs.deep=1"], "training.epochs: is a value, not a section"),
        (
            {"training": {"mixed_precision": "fp8"}},
            [],
            "training.mixed_precision: expected one of 'no', 'fp16', 'bf16', got 'fp8'",
        ),
        ({"training": {"batch_size": 0}}, [], "training.batch_size: expected an integer >= 1, got 0"),
        ({"freeze": ["(unclosed"]}, [], "freeze[0]: expected a regular expression"),
    ],
)
def test_bad_recipes_name_the_key_and_the_file(tmp_path, train_world, sections, overrides, message):
    path = recipe_file(tmp_path, train_world, **sections)
    with pytest.raises(RecipeError) as error:
        load_recipe(path, overrides)
    assert message in str(error.value) and str(path) in str(error.value)


def test_missing_keys_and_missing_dataset_fail_fast(tmp_path, train_world, capsys):
    path = recipe_file(tmp_path, train_world)
    data = yaml.safe_load(path.read_text())
    del data["output_dir"]
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(RecipeError, match=f"^{re.escape(str(path))}: missing required key 'output_dir'"):
        load_recipe(path)

    missing = tmp_path / "no-such-dataset"
    path = recipe_file(tmp_path, train_world, dataset={"path": str(missing)})
    assert cli_main(["train", "--config", str(path)]) == 2
    error = capsys.readouterr().err
    assert str(missing) in error and "dataset.path" in error and "Traceback" not in error


@pytest.mark.parametrize(
    ("sections", "message"),
    [
        ({"method": "nope"}, r"recipe\.yaml: method: expected one of 'clip_zeroshot', .*got 'nope'"),
        (
            {"method_config": {"num_queries": 3}},
            r"recipe\.yaml: method_config: unknown key 'num_queries' \(method 'clip_zeroshot'",
        ),
        ({"method_config": {"label_names": ["x"]}}, "label_names is set by the trainer"),
        ({"freeze": ["^nothing$"]}, re.escape("freeze pattern '^nothing$' matches no parameter")),
        ({"dataset": {"train_labels": "no-such-labelset"}}, re.escape("dataset.train_labels")),
        ({"training": {"feature_cache": True}}, "does not train from frozen image features"),
        (
            {"training": {"selection_metric": "gzsl/mAPP"}},
            re.escape("training.selection_metric: selection metric 'gzsl/mAPP'"),
        ),
        ({"protocol": "no-such-protocol"}, r"recipe\.yaml: protocol: Unknown evaluation protocol 'no-such-protocol'"),
    ],
)
def test_bad_method_settings_fail_before_training(tmp_path, train_world, sections, message):
    with pytest.raises(RecipeError, match=message):
        Trainer(load_recipe(recipe_file(tmp_path, train_world, **sections))).run()


# ----------------------------------------------------------------------------------------------------------------------
# Pieces
# ----------------------------------------------------------------------------------------------------------------------


def test_schedules():
    cosine = build_schedule_lambda("cosine", 2, 12, 0.1, 1, 0.1)
    assert [round(cosine(step), 3) for step in (0, 1, 2, 7, 12)] == [0.5, 1.0, 1.0, 0.55, 0.1]
    linear = build_schedule_lambda("linear", 0, 10, 0.0, 1, 0.1)
    assert linear(5) == pytest.approx(0.5)
    step = build_schedule_lambda("step", 0, 100, 0.0, 10, 0.5)
    assert [step(s) for s in (0, 9, 10, 25)] == [1.0, 1.0, 0.5, 0.25]
    assert build_schedule_lambda("constant", 0, 10, 0.0, 1, 0.1)(7) == 1.0


class _Accelerator:
    """Just enough of `accelerate.Accelerator` for CheckpointManager on one process."""

    is_main_process = True
    num_processes = 1

    def wait_for_everyone(self):
        pass


def _writer(fail_after_files=None):
    """Writes three files into a checkpoint folder; `fail_after_files` simulates a kill in the middle."""

    def write(directory):
        for index in range(3):
            if fail_after_files == index:
                raise KeyboardInterrupt("killed while writing")
            with open(os.path.join(directory, f"part-{index}.bin"), "wb") as handle:
                handle.write(b"x" * 10)

    return write


def test_a_checkpoint_interrupted_while_written_never_replaces_the_last_good_one(tmp_path):
    manager = CheckpointManager(tmp_path, _Accelerator(), total_limit=2)
    for step in (2, 4, 6):
        manager.save(step, {"global_step": step, "best_step": 2}, _writer())
    assert [step for step, _ in manager.checkpoints()] == [4, 6]  # total_limit

    with pytest.raises(KeyboardInterrupt):
        manager.save(8, {"global_step": 8}, _writer(fail_after_files=1))
    assert manager.latest().name == "checkpoint-6"
    assert manager.read_trainer_state(manager.latest())["global_step"] == 6
    assert (manager.directory / ".tmp-checkpoint-8").is_dir()
    manager.remove_stale_temporaries()
    assert sorted(path.name for path in manager.directory.iterdir()) == ["checkpoint-4", "checkpoint-6"]

    # Replacing a checkpoint (the final one) goes through the same temporary folder.
    manager.save(6, {"global_step": 6, "finished": True}, _writer(), replace=True)
    assert manager.read_trainer_state(manager.latest())["finished"] is True
    with pytest.raises(FileNotFoundError, match="not a complete ovmlc checkpoint"):
        manager.resolve_resume(tmp_path / "nowhere")
