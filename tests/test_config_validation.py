"""Bad settings in every YAML format stop the command with exit code 2, a message naming the file and the key, and
nothing created (issue 16.7): training recipes (`ovmlc train`, overrides included), protocol files (`ovmlc evaluate`
and a recipe's `protocol`), transform presets (a recipe's `transforms.eval`) and pretraining configs
(`ovmlc pretrain-vlp`). All through the CLI, in-process; the recipe cases fail before any dataset or model is read.
"""

from __future__ import annotations

import dataclasses
import types
import typing

import numpy as np
import pytest
import yaml

from ovmlc.cli import main as cli_main
from ovmlc.training.recipe import Recipe
from ovmlc.yaml_schema import field_types, unwrap

# `ovmlc train` validates the recipe before it reads the dataset: an empty folder stands in for it.
RECIPE = {
    "method": "clip_zeroshot",
    "backbone": "synthetic",
    "protocol": "synthetic",
    "training": {"epochs": 0},
}


@pytest.fixture
def recipe(tmp_path):
    (tmp_path / "data").mkdir()
    path = tmp_path / "recipe.yaml"
    path.write_text(
        yaml.safe_dump({**RECIPE, "dataset": {"path": str(tmp_path / "data")}, "output_dir": str(tmp_path / "out")})
    )
    return path


def run_train(recipe, capsys, *overrides: str, flags: tuple[str, ...] = ()) -> str:
    """`ovmlc train --config recipe overrides...`: must exit 2 and leave no output folder; returns the error text."""
    assert cli_main(["train", "--config", str(recipe), *flags, *overrides]) == 2
    error = capsys.readouterr().err
    assert "Traceback" not in error
    return error


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("optimizer.lr=.nan", "optimizer.lr: expected a finite number > 0, got nan"),
        ("optimizer.lr=.inf", "optimizer.lr: expected a finite number > 0, got inf"),
        ("optimizer.lr=-1e-3", "optimizer.lr: expected a finite number > 0, got '-1e-3'"),  # YAML 1.1: a string
        ("optimizer.lr=1e-4x", "optimizer.lr: expected a finite number > 0, got '1e-4x'"),
        ("optimizer.weight_decay=-0.1", "optimizer.weight_decay: expected a finite number >= 0, got -0.1"),
        ("optimizer.betas=[0.9, 1.0]", "optimizer.betas[1]: expected a finite number in [0, 1), got 1.0"),
        ("optimizer.eps=0", "optimizer.eps: expected a finite number > 0, got 0"),
        ("training.batch_size=-8", "training.batch_size: expected an integer >= 1, got -8"),
        ("training.eval_batch_size=0", "training.eval_batch_size: expected an integer >= 1, got 0"),
        ("training.epochs=-1", "training.epochs: expected an integer >= 0, got -1"),
        ("training.max_grad_norm=0", "training.max_grad_norm: expected a finite number > 0 or null, got 0"),
        ("training.seed=-1", "training.seed: expected an integer in [0, 4294967296), got -1"),
        ("schedule.warmup_ratio=1.5", "schedule.warmup_ratio: expected a finite number in [0, 1], got 1.5"),
        ("schedule.factor=1", "schedule.factor: expected a finite number in (0, 1), got 1"),
        ("layer_decay=0", "layer_decay: expected a finite number in (0, 1] or null, got 0"),
        ("training.epochz=2", "training: unknown key 'epochz' (did you mean 'epochs'?"),
        # What the recipe names, checked before the output folder is touched:
        ("method=clip_zeroshoot", "method: expected one of 'clip_zeroshot', "),
        ("method_config.logit_bias=.nan", "method_config.logit_bias: expected a finite number, got nan"),
        ("method_config.templats=single", "method_config: unknown key 'templats' (method 'clip_zeroshot'; did you"),
        ("method_config.ranking_scores=best", "method_config: CLIPZeroShotConfig.ranking_scores must be"),
        ("protocol=synthetc", "protocol: Unknown evaluation protocol 'synthetc'"),
        ("transforms.eval=clip-evl", "transforms.eval: transform preset 'clip-evl' not found"),
    ],
)
def test_a_bad_recipe_value_exits_2_naming_the_key_and_creates_nothing(recipe, capsys, override, expected):
    error = run_train(recipe, capsys, override)
    assert f"{recipe}: {expected}" in error, error
    assert not (recipe.parent / "out").exists()


def test_every_float_of_the_recipe_schema_refuses_nan(recipe, capsys):
    """New recipe fields are finite by default: walk the schema and try NaN on every float field."""
    float_keys = []

    def walk(schema, prefix):
        for item in dataclasses.fields(schema):
            if item.metadata.get("internal"):
                continue
            annotation = unwrap(field_types(schema)[item.name])[0]
            if dataclasses.is_dataclass(annotation):
                walk(annotation, f"{prefix}{item.name}.")
            elif annotation is float or (
                typing.get_origin(annotation) in (typing.Union, types.UnionType)
                and float in {unwrap(option)[0] for option in typing.get_args(annotation)}
            ):
                float_keys.append(f"{prefix}{item.name}")

    walk(Recipe, "")
    assert {"optimizer.lr", "optimizer.eps", "training.max_grad_norm", "layer_decay"} <= set(float_keys)
    for key in float_keys:
        error = run_train(recipe, capsys, f"{key}=.nan")
        assert f"{recipe}: {key}: expected a finite number" in error and error.rstrip().endswith("got nan"), error
    assert not (recipe.parent / "out").exists()


def test_overwrite_with_a_bad_recipe_keeps_the_earlier_run(recipe, capsys):
    """Validation comes before `--overwrite` clears the folder: a typo never costs the previous run."""
    checkpoint = recipe.parent / "out" / "checkpoints" / "checkpoint-4"
    checkpoint.mkdir(parents=True)
    (recipe.parent / "out" / "trainer_state.json").write_text("{}")
    error = run_train(recipe, capsys, "method_config.num_queries=3", flags=("--overwrite",))
    assert f"{recipe}: method_config: unknown key 'num_queries'" in error
    assert checkpoint.is_dir() and (recipe.parent / "out" / "trainer_state.json").is_file()


PROTOCOL = """\
name: mine
description: d
citation: c
top_k: [1, 3]
views:
  gzsl: {labels: all, image_filter: has_positive}
"""


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (("top_k: [1, 3]", "top_K: [1, 3]"), "mine.yaml: unknown key 'top_K' (did you mean 'top_k'?"),
        (("top_k: [1, 3]", "top_k: [1, -3]"), "mine.yaml: top_k[1]: expected an integer >= 1, got -3"),
        (("citation: c", "citation: c\nthreshold: .nan"), "mine.yaml: threshold: expected a finite number or null"),
        (("image_filter: has_positive", "image_filter: has_positives"), "mine.yaml: views.gzsl.image_filter: expected"),
    ],
)
def test_a_bad_protocol_file_exits_2_and_creates_nothing(tmp_path, recipe, capsys, edit, expected):
    protocol = tmp_path / "mine.yaml"
    protocol.write_text(PROTOCOL.replace(*edit))
    # `ovmlc evaluate --protocol FILE`: the report folder is not created.
    scores = tmp_path / "scores.npz"
    np.savez(scores, scores=np.zeros((2, 2), np.float32), labels=np.array([[1, -1], [-1, 1]], np.int8),
             label_names=np.array(["a", "b"]), unseen=np.array([False, True]))  # fmt: skip
    report = tmp_path / "report"
    assert cli_main(["evaluate", "--scores", str(scores), "--protocol", str(protocol), "--output", str(report)]) == 2
    error = capsys.readouterr().err
    assert expected in error and "Traceback" not in error, error
    assert not report.exists()
    # The same file as a recipe's protocol: the recipe key and the protocol file's key are both named.
    error = run_train(recipe, capsys, f"protocol={protocol}")
    assert f"{recipe}: protocol: {tmp_path / expected}" in error, error
    assert not (recipe.parent / "out").exists()


PRESET = """\
size: 32
steps:
  - {op: squash, interpolation: bicubic}
  - {op: horizontal_flip, p: 0.5}
normalize: {mean: [0.5, 0.5, 0.5], std: [0.25, 0.25, 0.25]}
"""


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (("steps:", "step:"), "mine.yaml: unknown key 'step' (did you mean 'steps'?"),
        (("op: squash", "op: squish"), "mine.yaml: steps[0].op: expected one of 'resize_shortest_edge', "),
        (("interpolation: bicubic", "interpolation: cubic"), "mine.yaml: steps[0].interpolation: expected one of"),
        (("p: 0.5", "p: 1.5"), "mine.yaml: steps[1].p: expected a finite number in [0, 1], got 1.5"),
        (("std: [0.25, 0.25, 0.25]", "std: [0.25, 0, 0.25]"), "mine.yaml: normalize.std[1]: expected a finite number"),
        (("size: 32", "size: -32"), "mine.yaml: size: expected an integer >= 1, got -32"),
    ],
)
def test_a_bad_transform_preset_exits_2_and_creates_nothing(tmp_path, recipe, capsys, edit, expected):
    preset = tmp_path / "mine.yaml"
    preset.write_text(PRESET.replace(*edit))
    for key in ("transforms.eval", "training.augment"):
        error = run_train(recipe, capsys, f"{key}={preset}")
        assert f"{recipe}: {key}: {tmp_path / expected}" in error, error
    assert not (recipe.parent / "out").exists()


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        ({"learning_rat": 0.1}, "bad.yaml: unknown key 'learning_rat' (did you mean 'learning_rate'?"),
        ({"learning_rate": float("nan")}, "bad.yaml: learning_rate: expected a finite number > 0, got nan"),
        ({"batch_size": 0}, "bad.yaml: batch_size: expected an integer >= 1, got 0"),
        ({"adam_beta2": 1.0}, "bad.yaml: adam_beta2: expected a finite number in [0, 1), got 1.0"),
        ({"vision_heads": 3}, "bad.yaml: vision_heads: expected a divisor of vision_hidden_size 32, got 3"),
        ({"patch_size": 10}, "bad.yaml: patch_size: expected a divisor of the 64-px image size, got 10"),
        ({"mixed_precision": "fp16"}, "bad.yaml: mixed_precision: expected one of 'bf16', 'no', got 'fp16'"),
    ],
)
def test_a_bad_pretraining_config_exits_2_and_creates_nothing(tmp_path, capsys, edit, expected):
    from test_synthetic import TINY_RECIPE

    out = tmp_path / "clip"
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({**yaml.safe_load(TINY_RECIPE.read_text()), "output_dir": str(out), **edit}))
    assert cli_main(["pretrain-vlp", "--config", str(bad)]) == 2
    assert cli_main(["pretrain-vlp", "--config", str(bad), "--output-dir", str(tmp_path / "other")]) == 2
    error = capsys.readouterr().err
    assert f"{tmp_path / expected}" in error and "Traceback" not in error, error
    assert not out.exists() and not (tmp_path / "other").exists()
