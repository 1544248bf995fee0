"""Training recipes: the YAML schema of `hub_configs/*.yaml`, loading, `key=value` overrides and validation.

A recipe is a nested mapping; every section is a dataclass below, so the schema, its defaults and its types live in
one place. Unknown keys, missing required keys, wrong types and bad choices raise `RecipeError` naming the key and the
recipe file. `docs/training.md` documents every field.
"""

from __future__ import annotations

import dataclasses
import os
import re
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

# Config fields the trainer fills itself (or that belong to transformers): not settable through `method_config`.
TRAINER_MANAGED_CONFIG_FIELDS = frozenset(
    {
        "clip_config",
        "backbone_name_or_path",
        "label_names",
        "seen_labels",
        "unseen_labels",
        "label_thresholds",
        "global_threshold",
    }
)
REQUIRED = dataclasses.MISSING


class RecipeError(ValueError):
    """A recipe (or an override) is invalid; the message names the key and the recipe file."""


@dataclass
class DatasetSection:
    path: str = field(default=REQUIRED, metadata={"help": "canonical dataset folder or Hub dataset id"})
    source: str | None = None
    train_split: str = "train"
    validation_split: str = "validation"
    test_split: str = "test"
    train_labels: str = "seen"
    max_train_samples: int | None = None
    max_eval_samples: int | None = None
    partial_label: float | None = None
    partial_label_seed: int = 0


@dataclass
class OptimizerSection:
    name: Literal["adamw", "adam", "sgd"] = "adamw"
    lr: float = 1.0e-4
    weight_decay: float = 0.0
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1.0e-8
    momentum: float = 0.9
    nesterov: bool = False


@dataclass
class ScheduleSection:
    name: Literal["cosine", "linear", "constant", "step", "plateau"] = "constant"
    warmup_ratio: float = 0.0
    warmup_steps: int | None = None
    warmup_lr: float | None = None
    min_lr_ratio: float = 0.0
    step_size: int = 1
    gamma: float = 0.1
    metric: str | None = None
    mode: Literal["max", "min"] = "max"
    patience: int = 1
    factor: float = 0.1


@dataclass
class TrainingSection:
    epochs: int = 1
    max_steps: int | None = None
    batch_size: int = 64
    gradient_accumulation_steps: int = 1
    max_grad_norm: float | None = 1.0
    mixed_precision: Literal["no", "fp16", "bf16"] = "no"
    seed: int = 0
    eval_every: str | int | None = "epoch"
    checkpoint_every: int | None = 200
    checkpoint_total_limit: int = 2
    early_stopping_patience: int | None = None
    selection_metric: str = "gzsl/mAP"
    selection_mode: Literal["max", "min"] = "max"
    validation_labels: Literal["all", "seen"] = "seen"
    feature_cache: Literal["auto", True, False] = "auto"
    feature_cache_dtype: Literal["float32", "float16"] = "float32"
    feature_cache_dir: str | None = None
    augment: str = "none"
    num_workers: int = 0
    eval_batch_size: int = 128
    log_every: int = 10
    ddp_find_unused_parameters: bool = False


@dataclass
class TransformsSection:
    eval: str | dict[str, Any] | None = None
    size: int | None = None
    normalize: Literal["backbone", "preset"] = "backbone"


@dataclass
class HubSection:
    repo_id: str | None = None
    private: bool | None = None
    license: str | None = None
    tags: list[str] = field(default_factory=list)


@dataclass
class Recipe:
    method: str = field(default=REQUIRED)
    backbone: str = field(default=REQUIRED)
    dataset: DatasetSection = field(default=REQUIRED)
    output_dir: str = field(default=REQUIRED)
    protocol: str = field(default=REQUIRED)
    method_config: dict[str, Any] = field(default_factory=dict)
    init_from: str | None = None
    optimizer: OptimizerSection = field(default_factory=OptimizerSection)
    schedule: ScheduleSection = field(default_factory=ScheduleSection)
    layer_decay: float | None = None
    freeze: list[str] = field(default_factory=list)
    training: TrainingSection = field(default_factory=TrainingSection)
    transforms: TransformsSection = field(default_factory=TransformsSection)
    tracker: Literal["none", "tensorboard", "trackio"] = "none"
    hub: HubSection = field(default_factory=HubSection)
    # Where the recipe came from (not a YAML key): used in error messages and provenance.
    source: str = field(default="<recipe>", metadata={"internal": True})

    def to_dict(self) -> dict[str, Any]:
        """The resolved recipe as plain YAML-ready data (what `recipe.yaml` holds)."""
        return _section_to_dict(self)

    def to_yaml(self) -> str:
        header = (
            f"# Resolved ovmlc training recipe (from {self.source}); rerun with `ovmlc train --config <this file>`.\n"
        )
        return header + yaml.safe_dump(self.to_dict(), sort_keys=False, allow_unicode=True)


def _section_to_dict(section: Any) -> dict[str, Any]:
    result = {}
    for section_field in dataclasses.fields(section):
        if section_field.metadata.get("internal"):
            continue
        value = getattr(section, section_field.name)
        result[section_field.name] = _section_to_dict(value) if dataclasses.is_dataclass(value) else value
    return result


# ----------------------------------------------------------------------------------------------------------------------
# Loading
# ----------------------------------------------------------------------------------------------------------------------


def load_recipe(path: str | os.PathLike, overrides: Sequence[str] = ()) -> Recipe:
    """Read a recipe YAML file, apply `key=value` overrides (dotted paths, YAML values) and validate it."""
    path = Path(path)
    if not path.is_file():
        raise RecipeError(f"recipe file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        raise RecipeError(f"recipe {path} is not valid YAML: {error}") from None
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise RecipeError(f"recipe {path}: the top level must be a mapping of keys, got {type(data).__name__}")
    data = apply_overrides(dict(data), overrides, source=str(path))
    return recipe_from_dict(data, source=str(path))


def apply_overrides(data: dict[str, Any], overrides: Sequence[str], source: str = "<recipe>") -> dict[str, Any]:
    """Set `a.b.c=value` entries in a nested dict; the value is parsed as YAML (`2`, `null`, `[0.9, 0.99]`).

    Paths must name recipe keys (checked against the schema, so a typo fails here rather than being ignored); inside the
    free-form `method_config` any key may be set (checked later against the method's config class).
    """
    for override in overrides:
        if "=" not in override:
            raise RecipeError(
                f"override {override!r} for recipe {source} must look like key=value (e.g. training.epochs=2)"
            )
        dotted, raw_value = override.split("=", 1)
        keys = dotted.strip().split(".")
        if not all(keys):
            raise RecipeError(f"override {override!r} for recipe {source}: empty key in {dotted!r}")
        try:
            value = yaml.safe_load(raw_value) if raw_value.strip() else None
        except yaml.YAMLError as error:
            raise RecipeError(f"override {override!r} for recipe {source}: value is not valid YAML ({error})") from None
        _check_override_path(keys, override, source)
        target = data
        for depth, key in enumerate(keys[:-1]):
            child = target.get(key)
            if child is None:
                child = target[key] = {}
            elif not isinstance(child, dict):
                where = ".".join(keys[: depth + 1])
                raise RecipeError(f"override {override!r} for recipe {source}: {where} is not a mapping")
            else:
                child = target[key] = dict(child)
            target = child
        target[keys[-1]] = value
    return data


def _check_override_path(keys: list[str], override: str, source: str) -> None:
    schema: Any = Recipe
    for depth, key in enumerate(keys):
        if schema is None:  # inside a free-form mapping
            return
        known = {f.name: f for f in dataclasses.fields(schema) if not f.metadata.get("internal")}
        if key not in known:
            where = ".".join(keys[: depth + 1])
            raise RecipeError(
                f"override {override!r}: unknown recipe key {where!r} (recipe {source}); "
                f"valid keys here: {', '.join(sorted(known))}"
            )
        field_type = _field_types(schema)[key]
        if dataclasses.is_dataclass(field_type):
            schema = field_type
        elif _is_mapping_type(field_type):
            schema = None
        elif depth < len(keys) - 1:
            where = ".".join(keys[: depth + 1])
            raise RecipeError(f"override {override!r} (recipe {source}): {where} is a value, not a section")


def recipe_from_dict(data: Mapping[str, Any], source: str = "<recipe>") -> Recipe:
    """Validate a nested mapping against the schema and build a `Recipe` (errors name the key and `source`)."""
    recipe = _build_section(Recipe, data, prefix="", source=source)
    recipe.source = source
    _check_semantics(recipe)
    return recipe


def _field_types(section_class: type) -> dict[str, Any]:
    return typing.get_type_hints(section_class)


def _is_mapping_type(field_type: Any) -> bool:
    return typing.get_origin(field_type) is dict or field_type is dict


def _build_section(section_class: type, data: Any, prefix: str, source: str) -> Any:
    where = prefix.rstrip(".") or "the top level"
    if not isinstance(data, Mapping):
        raise RecipeError(f"recipe {source}: {where} must be a mapping, got {type(data).__name__} ({data!r})")
    fields = {f.name: f for f in dataclasses.fields(section_class) if not f.metadata.get("internal")}
    unknown = [key for key in data if key not in fields]
    if unknown:
        raise RecipeError(
            f"recipe {source}: unknown key {prefix}{unknown[0]!r}"
            + (f" (and {', '.join(map(str, unknown[1:]))})" if len(unknown) > 1 else "")
            + f"; valid keys in {where}: {', '.join(sorted(fields))}"
        )
    types_by_name = _field_types(section_class)
    values = {}
    for name, section_field in fields.items():
        key = f"{prefix}{name}"
        if name not in data:
            if section_field.default is REQUIRED and section_field.default_factory is REQUIRED:
                raise RecipeError(f"recipe {source}: missing required key {key!r}")
            continue
        field_type = types_by_name[name]
        if dataclasses.is_dataclass(field_type):
            values[name] = _build_section(field_type, data[name] if data[name] is not None else {}, f"{key}.", source)
        else:
            values[name] = _coerce(data[name], field_type, key, source)
    return section_class(**values)


def _coerce(value: Any, field_type: Any, key: str, source: str) -> Any:
    """Check `value` against a field annotation (int, float, str, bool, None, Literal, list[...], dict)."""

    def fail(expected: str) -> RecipeError:
        return RecipeError(f"recipe {source}: {key} must be {expected}, got {value!r}")

    origin = typing.get_origin(field_type)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(field_type)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _coerce(value, option, key, source)
            except RecipeError as error:
                errors.append(error)
        names = " or ".join(_type_name(option) for option in options)
        raise fail(names)
    if origin is Literal:
        choices = typing.get_args(field_type)
        # `true`/`false` choices must match booleans only (1 == True in Python).
        for choice in choices:
            if value == choice and isinstance(value, bool) == isinstance(choice, bool):
                return choice
        raise fail("one of " + ", ".join(repr(choice) for choice in choices))
    if field_type is Any:
        return value
    if field_type is bool:
        if not isinstance(value, bool):
            raise fail("true or false")
        return value
    if field_type is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise fail("an integer")
        return value
    if field_type is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise fail("a number")
        return float(value)
    if field_type is str:
        if not isinstance(value, str):
            raise fail("a string")
        return value
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise fail(f"a list of {_type_name(typing.get_args(field_type)[0])}")
        (item_type,) = typing.get_args(field_type)
        return [_coerce(item, item_type, f"{key}[{index}]", source) for index, item in enumerate(value)]
    if _is_mapping_type(field_type):
        if not isinstance(value, Mapping):
            raise fail("a mapping")
        return dict(value)
    raise TypeError(f"unsupported recipe field type {field_type!r} for {key}")


def _type_name(field_type: Any) -> str:
    if typing.get_origin(field_type) is Literal:
        return "one of " + ", ".join(repr(choice) for choice in typing.get_args(field_type))
    if typing.get_origin(field_type) is list:
        return "a list"
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false"}.get(
        field_type, getattr(field_type, "__name__", str(field_type))
    )


def _check_semantics(recipe: Recipe) -> None:
    """Cross-field checks that types alone cannot express."""
    source = recipe.source

    def fail(message: str) -> RecipeError:
        return RecipeError(f"recipe {source}: {message}")

    training = recipe.training
    positive = {
        "training.batch_size": training.batch_size,
        "training.eval_batch_size": training.eval_batch_size,
        "training.gradient_accumulation_steps": training.gradient_accumulation_steps,
        "training.checkpoint_total_limit": training.checkpoint_total_limit,
        "training.log_every": training.log_every,
    }
    for key, value in positive.items():
        if value < 1:
            raise fail(f"{key} must be >= 1, got {value}")
    non_negative = {
        "training.epochs": training.epochs,
        "training.max_steps": training.max_steps,
        "training.num_workers": training.num_workers,
        "optimizer.lr": recipe.optimizer.lr,
        "optimizer.weight_decay": recipe.optimizer.weight_decay,
        "schedule.warmup_ratio": recipe.schedule.warmup_ratio,
        "schedule.warmup_steps": recipe.schedule.warmup_steps,
    }
    for key, value in non_negative.items():
        if value is not None and value < 0:
            raise fail(f"{key} must be >= 0, got {value}")
    for key, value in {
        "training.checkpoint_every": training.checkpoint_every,
        "training.early_stopping_patience": training.early_stopping_patience,
        "dataset.max_train_samples": recipe.dataset.max_train_samples,
        "dataset.max_eval_samples": recipe.dataset.max_eval_samples,
    }.items():
        if value is not None and value < 1:
            raise fail(f"{key} must be >= 1 or null, got {value}")
    if isinstance(training.eval_every, str) and training.eval_every != "epoch":
        raise fail(f"training.eval_every must be 'epoch', a number of steps or null, got {training.eval_every!r}")
    if isinstance(training.eval_every, int) and training.eval_every < 1:
        raise fail(f"training.eval_every must be >= 1 steps, got {training.eval_every}")
    if len(recipe.optimizer.betas) != 2:
        raise fail(f"optimizer.betas must be two numbers, got {recipe.optimizer.betas}")
    if recipe.schedule.name == "plateau" and (recipe.schedule.warmup_ratio or recipe.schedule.warmup_steps):
        raise fail("schedule.name 'plateau' does not support warm-up; set schedule.warmup_ratio: 0")
    if recipe.schedule.warmup_lr is not None:
        if not recipe.schedule.warmup_lr > 0:
            raise fail(f"schedule.warmup_lr must be > 0 or null, got {recipe.schedule.warmup_lr}")
        if not (recipe.schedule.warmup_ratio or recipe.schedule.warmup_steps):
            raise fail("schedule.warmup_lr sets the learning rate of the warm-up: give warmup_ratio or warmup_steps")
    partial = recipe.dataset.partial_label
    if partial is not None and not 0.0 < partial < 1.0:
        raise fail(f"dataset.partial_label must be in (0, 1) (the kept share of annotated labels) or null: {partial}")
    if recipe.layer_decay is not None and not 0 < recipe.layer_decay <= 1:
        raise fail(f"layer_decay must be in (0, 1] or null, got {recipe.layer_decay}")
    if training.selection_metric.count("/") < 1:
        raise fail(
            f"training.selection_metric must look like 'view/metric' (e.g. gzsl/mAP), got {training.selection_metric!r}"
        )
    for pattern in recipe.freeze:
        try:
            re.compile(pattern)
        except re.error as error:
            raise fail(f"freeze pattern {pattern!r} is not a valid regular expression ({error})") from None


def validate_method_config(recipe: Recipe, config_class: type) -> dict[str, Any]:
    """Check `method_config` keys against the method's config class; returns the kwargs for it."""
    from transformers import PreTrainedConfig

    base_fields = {f.name for f in dataclasses.fields(PreTrainedConfig)}
    allowed = {f.name for f in dataclasses.fields(config_class)} - base_fields - TRAINER_MANAGED_CONFIG_FIELDS
    unknown = [key for key in recipe.method_config if key not in allowed]
    if unknown:
        managed = [key for key in unknown if key in TRAINER_MANAGED_CONFIG_FIELDS]
        hint = f" ({', '.join(managed)} is set by the trainer)" if managed else ""
        raise RecipeError(
            f"recipe {recipe.source}: unknown key method_config.{unknown[0]} for method {recipe.method!r}{hint}; "
            f"valid keys: {', '.join(sorted(allowed))}"
        )
    return dict(recipe.method_config)
