"""The one YAML -> dataclass validator (`ovmlc.yaml_schema`): types, constraints, keys, overrides, one message."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

import pytest

from ovmlc.yaml_schema import (
    INTERNAL,
    Bounds,
    Check,
    KeyedBy,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    SchemaError,
    Tagged,
    UnitFloat,
    apply_overrides,
    check_fields,
    describe,
    from_data,
    load,
    parse_yaml,
    read_yaml,
    to_data,
)


class MyError(SchemaError):
    """A caller's own error class (as RecipeError, TransformConfigError, ProtocolError)."""


@dataclass
class Optimizer:
    name: Literal["adamw", "sgd"] = "adamw"
    lr: PositiveFloat = 1e-3
    betas: Annotated[
        list[Annotated[float, Bounds(ge=0, lt=1)]], Check(lambda values: len(values) == 2, "two numbers")
    ] = field(default_factory=lambda: [0.9, 0.999])
    clip: Annotated[float, Bounds(gt=0, finite=False)] = math.inf


@dataclass
class Schedule:
    name: Literal["constant", "plateau"] = "constant"
    warmup_ratio: UnitFloat = 0.0

    def __post_init__(self) -> None:
        if self.name == "plateau" and self.warmup_ratio:
            raise SchemaError("must be 0 with the plateau schedule", key="warmup_ratio")


@dataclass
class View:
    name: str
    labels: Literal["seen", "unseen", "all"]
    k: PositiveInt = 1


@dataclass
class Flip:
    op: Literal["flip"]
    p: UnitFloat = 0.5


@dataclass
class Crop:
    op: Literal["crop"]
    size: PositiveInt


@dataclass
class Config:
    path: str
    epochs: NonNegativeInt = 1
    eval_every: Literal["epoch"] | PositiveInt | None = "epoch"
    optimizer: Optimizer = field(default_factory=Optimizer)
    schedule: Schedule = field(default_factory=Schedule)
    extra: dict[str, Any] = field(default_factory=dict)
    weights: dict[str, PositiveFloat] = field(default_factory=dict)
    views: Annotated[tuple[View, ...], KeyedBy("name")] = ()
    steps: list[Annotated[Flip | Crop, Tagged("op")]] = field(default_factory=list)
    size: tuple[PositiveInt, PositiveInt] = (1, 1)
    patterns: list[Annotated[str, Check(re.compile, "a regular expression")]] = field(default_factory=list)
    flag: Literal["auto", True, False] = "auto"
    source: str = field(default="", metadata=INTERNAL)


def message(data: Any, overrides: tuple[str, ...] = ()) -> str:
    with pytest.raises(MyError) as error:
        from_data(Config, apply_overrides(data, overrides, Config, source="c.yaml", error=MyError), source="c.yaml",
                  error=MyError)  # fmt: skip
    assert isinstance(error.value, ValueError) and error.value.source == "c.yaml"
    return str(error.value)


def test_a_valid_mapping_builds_nested_sections_with_converted_values():
    config = from_data(
        Config,
        {
            "path": "x",
            "optimizer": {"lr": 1, "betas": [0, 0.5]},  # an int where a float is expected
            "views": {"zsl": {"labels": "unseen"}, "gzsl": {"labels": "all", "k": 3}},
            "steps": [{"op": "flip"}, {"op": "crop", "size": 8}],
            "size": [2, 3],
            "flag": False,
            "schedule": None,  # an empty section keeps the defaults
        },
    )
    assert config.optimizer.lr == 1.0 and isinstance(config.optimizer.lr, float)
    assert config.views == (View("zsl", "unseen"), View("gzsl", "all", 3))
    assert config.steps == [Flip("flip"), Crop("crop", 8)] and config.size == (2, 3) and config.flag is False
    assert config.schedule == Schedule() and config.optimizer.clip == math.inf
    # to_data gives the YAML shape back (tuples as lists, keyed views as a mapping, internal fields left out)
    data = to_data(config)
    assert data["views"] == {"zsl": {"labels": "unseen", "k": 1}, "gzsl": {"labels": "all", "k": 3}}
    assert data["size"] == [2, 3] and "source" not in data
    assert from_data(Config, data) == config


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"path": "x", "optimizer": {"lr": math.nan}}, "c.yaml: optimizer.lr: expected a finite number > 0, got nan"),
        ({"path": "x", "optimizer": {"lr": -math.inf}}, "c.yaml: optimizer.lr: expected a finite number > 0, got -inf"),
        ({"path": "x", "optimizer": {"lr": 0}}, "c.yaml: optimizer.lr: expected a finite number > 0, got 0"),
        ({"path": "x", "optimizer": {"lr": True}}, "c.yaml: optimizer.lr: expected a finite number > 0, got true"),
        ({"path": "x", "optimizer": {"clip": math.nan}}, "c.yaml: optimizer.clip: expected a number > 0, got nan"),
        ({"path": "x", "optimizer": {"betas": [0.9]}}, "c.yaml: optimizer.betas: expected two numbers, got [0.9]"),
        (
            {"path": "x", "optimizer": {"betas": [0.9, 1]}},
            "c.yaml: optimizer.betas[1]: expected a finite number in [0, 1), got 1",
        ),
        ({"path": "x", "epochs": -1}, "c.yaml: epochs: expected an integer >= 0, got -1"),
        ({"path": "x", "epochs": 1.5}, "c.yaml: epochs: expected an integer >= 0, got 1.5"),
        ({"path": "x", "epochs": False}, "c.yaml: epochs: expected an integer >= 0, got false"),
        ({"path": "x", "eval_every": 0}, "c.yaml: eval_every: expected 'epoch', an integer >= 1 or null, got 0"),
        ({"path": "x", "eval_every": "epochs"}, "c.yaml: eval_every: expected 'epoch', an integer >= 1 or null"),
        (
            {"path": "x", "optimizer": {"name": "adamW"}},
            "c.yaml: optimizer.name: expected one of 'adamw', 'sgd', got 'adamW' (did you mean 'adamw'?)",
        ),
        ({"path": "x", "flag": 1}, "c.yaml: flag: expected one of 'auto', true, false, got 1"),
        ({"path": 3}, "c.yaml: path: expected a string, got 3"),
        ({"path": "x", "weights": {"a": -1}}, "c.yaml: weights.a: expected a finite number > 0, got -1"),
        ({"path": "x", "views": {"zsl": {"labels": "novel"}}}, "c.yaml: views.zsl.labels: expected one of"),
        ({"path": "x", "views": {"zsl": {"labels": "all", "name": "y"}}}, "c.yaml: views.zsl: unknown key 'name'"),
        ({"path": "x", "steps": [{"op": "blur"}]}, "c.yaml: steps[0].op: expected one of 'flip', 'crop', got 'blur'"),
        ({"path": "x", "steps": [{"p": 1}]}, "c.yaml: steps[0]: missing required key 'op'"),
        ({"path": "x", "steps": [{"op": "flip", "p": 2}]}, "c.yaml: steps[0].p: expected a finite number in [0, 1]"),
        ({"path": "x", "steps": [{"op": "crop"}]}, "c.yaml: steps[0]: missing required key 'size'"),
        ({"path": "x", "size": [1]}, "c.yaml: size: expected a list of 2 items, got [1]"),
        ({"path": "x", "patterns": ["(a"]}, "c.yaml: patterns[0]: expected a regular expression, got '(a' (missing )"),
        ({"path": "x", "optimizer": 3}, "c.yaml: optimizer: expected a mapping of keys (valid keys: betas, clip, lr, "),
        ({"epochs": 1}, "c.yaml: missing required key 'path'"),
        ({"path": "x", "source": "y"}, "c.yaml: unknown key 'source' (valid keys: epochs, eval_every, extra, flag"),
        (
            {"path": "x", "optimizer": {"lrr": 1, "bet": 2}},
            "c.yaml: optimizer: unknown key 'lrr' (also unknown: 'bet') (did you mean 'lr'? "
            "valid keys: betas, clip, lr, name)",
        ),
        (
            {"path": "x", "schedule": {"name": "plateau", "warmup_ratio": 0.1}},
            "c.yaml: schedule.warmup_ratio: must be 0 with the plateau schedule",
        ),
    ],
)
def test_every_problem_names_the_file_the_key_and_what_was_expected(data, expected):
    assert message(data).startswith(expected)


def test_numbers_written_as_yaml_1_1_strings_count_as_numbers_only_where_numbers_are_expected():
    config = from_data(Config, {"path": "1e3", "optimizer": {"lr": "1e-4"}})
    assert config.optimizer.lr == 1e-4 and config.path == "1e3"
    assert "expected a finite number > 0, got 'fast'" in message({"path": "x", "optimizer": {"lr": "fast"}})
    # A quoted "nan" is a string, not YAML's `.nan`: refused either way.
    assert message({"path": "x", "optimizer": {"lr": "nan"}}).endswith("expected a finite number > 0, got 'nan'")


def test_overrides_are_yaml_typed_and_unknown_paths_are_errors():
    data = apply_overrides(
        {"path": "x", "optimizer": {"name": "sgd"}},
        ["optimizer.lr=2e-1", "optimizer.betas=[0.8, 0.9]", "eval_every=null", "extra.deep.key=[1]", "weights.a=2"],
        Config,
    )
    config = from_data(Config, data)
    assert config.optimizer == Optimizer(name="sgd", lr=0.2, betas=[0.8, 0.9])  # the rest of the section stays
    assert config.eval_every is None and config.extra == {"deep": {"key": [1]}} and config.weights == {"a": 2.0}
    assert config.views == () and from_data(Config, apply_overrides(data, ["views.zsl.labels=all"], Config)).views

    assert (
        message({"path": "x"}, ("optimizer.lr=.nan",)) == "c.yaml: optimizer.lr: expected a finite number > 0, got nan"
    )
    assert message({"path": "x"}, ("optimizer.lrr=1",)).startswith(
        "c.yaml: optimizer: unknown key 'lrr' (did you mean 'lr'?"
    )
    assert "(override 'optimizer.lrr=1')" in message({"path": "x"}, ("optimizer.lrr=1",))
    assert message({"path": "x"}, ("pth=1",)).startswith("c.yaml: unknown key 'pth' (did you mean 'path'?")
    assert message({"path": "x"}, ("epochs.x=1",)).startswith("c.yaml: epochs: is a value, not a section")
    assert message({"path": "x"}, ("epochs",)).startswith("c.yaml: override 'epochs' must look like key=value")
    assert message({"path": "x"}, ("optimizer..lr=1",)).startswith("c.yaml: override 'optimizer..lr=1': empty key")
    assert "the value is not valid YAML" in message({"path": "x"}, ("optimizer.betas=[1,",))
    # A free-form mapping takes any key, but not below a value already set to a scalar.
    assert message({"path": "x", "extra": {"a": 1}}, ("extra.a.b=2",)).startswith("c.yaml: extra.a: is a value (1)")


def test_yaml_files_duplicate_keys_and_top_level(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("path: x\noptimizer:\n  lr: 0.1\n  lr: 0.2\n")
    with pytest.raises(MyError, match=r"c\.yaml: line 4: duplicate key 'lr' \(first at line 3\)"):
        load(Config, path, error=MyError)
    path.write_text("path: x\nbase: &b {lr: 1}\n")
    assert parse_yaml("a: &b {x: 1, y: 2}\nc:\n  <<: *b\n  x: 3\n")["c"] == {"x": 3, "y": 2}  # merge keys still work
    path.write_text("- a\n- b\n")
    with pytest.raises(MyError, match=r"c\.yaml: expected a mapping of keys at the top level, got \['a', 'b'\]"):
        read_yaml(path, error=MyError)
    path.write_text("path: [x\n")
    with pytest.raises(MyError, match=r"c\.yaml: not valid YAML at line 2"):
        read_yaml(path, error=MyError)
    with pytest.raises(MyError, match=r"nowhere\.yaml: no such file"):
        read_yaml(tmp_path / "nowhere.yaml", error=MyError)
    path.write_text("")
    assert read_yaml(path) == {}
    path.write_text("path: x\noptimizer: {lr: 0.5}\n")
    assert load(Config, path, ["epochs=3"]).optimizer.lr == 0.5 and load(Config, path, ["epochs=3"]).epochs == 3


def test_check_fields_validates_part_of_a_class_without_building_it():
    checked = check_fields(Optimizer, {"lr": 2}, fields={"lr", "name"}, source="r.yaml", key="method_config")
    assert checked == {"lr": 2.0}
    with pytest.raises(SchemaError) as error:
        check_fields(Optimizer, {"betas": [0.1, 0.2]}, fields={"lr", "name"}, source="r.yaml", key="method_config",
                     note="method 'x'", hints={"betas": "betas is set elsewhere"})  # fmt: skip
    assert str(error.value) == (
        "r.yaml: method_config: unknown key 'betas' (method 'x'; betas is set elsewhere; valid keys: lr, name)"
    )
    with pytest.raises(SchemaError, match=r"r\.yaml: method_config\.lr: expected a finite number > 0, got nan"):
        check_fields(Optimizer, {"lr": math.nan}, source="r.yaml", key="method_config")


def test_error_class_location_and_descriptions():
    plain = SchemaError("something is off")
    assert str(plain) == "something is off" and plain.key is None and plain.source is None
    located = SchemaError("bad", key="lr").located("r.yaml", prefix="optimizer", error=MyError)
    assert isinstance(located, MyError) and str(located) == "r.yaml: optimizer.lr: bad"
    assert describe(Annotated[float, Bounds(ge=0, le=1)]) == "a finite number in [0, 1]"
    assert describe(PositiveInt | None) == "an integer >= 1 or null"
    assert describe(Literal["a", "b"]) == "one of 'a', 'b'"
