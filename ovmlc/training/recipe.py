"""Training recipes: the YAML schema of `hub_configs/*.yaml`, loading, `key=value` overrides and validation.

A recipe is a nested mapping; every section is a dataclass below, so the schema, its defaults, its types and its
number ranges live in one place, read by the one validator (`ovmlc.yaml_schema`). Unknown keys, missing required keys,
wrong types, NaN/inf and out-of-range numbers raise `RecipeError` naming the recipe file and the dotted key
(`recipe.yaml: optimizer.lr: expected a finite number > 0, got nan`). `validate_recipe` checks what a recipe names
(method and `method_config`, protocol, transform presets) before a run creates anything. `docs/training.md` documents
every field; to add one, add a field (with its constraint) to a section.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

import yaml

from .. import yaml_schema
from ..yaml_schema import (
    INTERNAL,
    Bounds,
    Check,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    SchemaError,
    Seed,
    UnitFloat,
    check_fields,
    did_you_mean,
    from_data,
    read_yaml,
    to_data,
)

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


class RecipeError(SchemaError):
    """A recipe (or an override) is invalid; the message names the recipe file and the key."""


# Value types used by several fields.
Beta = Annotated[float, Bounds(ge=0, lt=1)]
RegularExpression = Annotated[str, Check(re.compile, "a regular expression (Python re)")]
MetricPath = Annotated[
    str, Check(lambda path: path.count("/") >= 1, "a 'view/metric' path of the protocol report (e.g. gzsl/mAP)")
]


@dataclass
class DatasetSection:
    path: str = field(metadata={"help": "canonical dataset folder or Hub dataset id"})
    source: str | None = None
    train_split: str = "train"
    validation_split: str = "validation"
    test_split: str = "test"
    train_labels: str = "seen"
    max_train_samples: PositiveInt | None = None
    max_eval_samples: PositiveInt | None = None


@dataclass
class OptimizerSection:
    name: Literal["adamw", "adam", "sgd"] = "adamw"
    lr: PositiveFloat = 1.0e-4
    weight_decay: NonNegativeFloat = 0.0
    betas: Annotated[list[Beta], Check(lambda betas: len(betas) == 2, "two numbers in [0, 1)")] = field(
        default_factory=lambda: [0.9, 0.999]
    )
    eps: PositiveFloat = 1.0e-8
    momentum: Beta = 0.9
    nesterov: bool = False


@dataclass
class ScheduleSection:
    name: Literal["cosine", "linear", "constant", "step", "plateau"] = "constant"
    warmup_ratio: UnitFloat = 0.0
    warmup_steps: NonNegativeInt | None = None
    min_lr_ratio: UnitFloat = 0.0
    step_size: PositiveInt = 1
    gamma: PositiveFloat = 0.1
    metric: MetricPath | None = None
    mode: Literal["max", "min"] = "max"
    patience: NonNegativeInt = 1
    factor: Annotated[float, Bounds(gt=0, lt=1)] = 0.1

    def __post_init__(self) -> None:
        if self.name == "plateau":
            for name in ("warmup_ratio", "warmup_steps"):
                if getattr(self, name):
                    raise SchemaError(
                        f"must be 0 or null with schedule 'plateau' (it has no warm-up), got {getattr(self, name)}",
                        key=name,
                    )


@dataclass
class TrainingSection:
    epochs: NonNegativeInt = 1
    max_steps: NonNegativeInt | None = None
    batch_size: PositiveInt = 64
    gradient_accumulation_steps: PositiveInt = 1
    max_grad_norm: PositiveFloat | None = 1.0
    mixed_precision: Literal["no", "fp16", "bf16"] = "no"
    seed: Seed = 0
    eval_every: Literal["epoch"] | PositiveInt | None = "epoch"
    checkpoint_every: PositiveInt | None = 200
    checkpoint_total_limit: PositiveInt = 2
    early_stopping_patience: PositiveInt | None = None
    selection_metric: MetricPath = "gzsl/mAP"
    selection_mode: Literal["max", "min"] = "max"
    selection: Literal["best", "last"] = "best"
    validation_labels: Literal["all", "seen"] = "seen"
    feature_cache: Literal["auto", True, False] = "auto"
    feature_cache_dtype: Literal["float32", "float16"] = "float32"
    feature_cache_dir: str | None = None
    augment: str = "none"
    num_workers: NonNegativeInt = 0
    eval_batch_size: PositiveInt = 128
    log_every: PositiveInt = 10
    ddp_find_unused_parameters: bool = False


@dataclass
class TransformsSection:
    eval: str | dict[str, Any] | None = None
    size: PositiveInt | None = None
    normalize: Literal["backbone", "preset"] = "backbone"


@dataclass
class HubSection:
    repo_id: str | None = None
    private: bool | None = None
    license: str | None = None
    tags: list[str] = field(default_factory=list)


@dataclass
class Recipe:
    method: str
    backbone: str
    dataset: DatasetSection
    output_dir: str
    protocol: str
    method_config: dict[str, Any] = field(default_factory=dict)
    init_from: str | None = None
    optimizer: OptimizerSection = field(default_factory=OptimizerSection)
    schedule: ScheduleSection = field(default_factory=ScheduleSection)
    layer_decay: Annotated[float, Bounds(gt=0, le=1)] | None = None
    freeze: list[RegularExpression] = field(default_factory=list)
    training: TrainingSection = field(default_factory=TrainingSection)
    transforms: TransformsSection = field(default_factory=TransformsSection)
    tracker: Literal["none", "tensorboard", "trackio"] = "none"
    hub: HubSection = field(default_factory=HubSection)
    # Where the recipe came from (not a YAML key): used in error messages and provenance.
    source: str = field(default="<recipe>", metadata=INTERNAL)

    def to_dict(self) -> dict[str, Any]:
        """The resolved recipe as plain YAML-ready data (what `recipe.yaml` holds)."""
        return to_data(self)

    def to_yaml(self) -> str:
        header = (
            f"# Resolved ovmlc training recipe (from {self.source}); rerun with `ovmlc train --config <this file>`.\n"
        )
        return header + yaml.safe_dump(self.to_dict(), sort_keys=False, allow_unicode=True)

    def error(self, key: str, problem: str) -> RecipeError:
        """A `RecipeError` naming this recipe's file and `key`: `<file>: <key>: <problem>`."""
        return RecipeError(problem, source=self.source, key=key)


# ----------------------------------------------------------------------------------------------------------------------
# Loading
# ----------------------------------------------------------------------------------------------------------------------


def load_recipe(path: str | os.PathLike, overrides: Sequence[str] = ()) -> Recipe:
    """Read a recipe YAML file, apply `key=value` overrides (dotted paths, YAML values) and validate it."""
    data = apply_overrides(read_yaml(path, error=RecipeError), overrides, source=str(path))
    return recipe_from_dict(data, source=str(path))


def apply_overrides(data: dict[str, Any], overrides: Sequence[str], source: str = "<recipe>") -> dict[str, Any]:
    """Set `a.b.c=value` entries in a nested dict; the value is parsed as YAML (`2`, `null`, `[0.9, 0.99]`).

    Paths must name recipe keys (checked against the schema, so a typo fails here rather than being ignored); inside the
    free-form `method_config` any key may be set (checked later against the method's config class).
    """
    return yaml_schema.apply_overrides(data, overrides, Recipe, source=source, error=RecipeError)


def recipe_from_dict(data: Mapping[str, Any], source: str = "<recipe>") -> Recipe:
    """Validate a nested mapping against the schema and build a `Recipe` (errors name the key and `source`)."""
    recipe = from_data(Recipe, data, source=source, error=RecipeError)
    recipe.source = source
    return recipe


def validate_method_config(recipe: Recipe, config_class: type) -> dict[str, Any]:
    """Check `method_config` against the method's config class (keys, value types, the class's own checks); returns
    the kwargs for it."""
    from transformers import PreTrainedConfig

    base_fields = {item.name for item in dataclasses.fields(PreTrainedConfig)}
    allowed = {item.name for item in dataclasses.fields(config_class)} - base_fields - TRAINER_MANAGED_CONFIG_FIELDS
    kwargs = check_fields(
        config_class,
        recipe.method_config,
        fields=allowed,
        source=recipe.source,
        key="method_config",
        error=RecipeError,
        note=f"method {recipe.method!r}",
        hints={name: f"{name} is set by the trainer" for name in TRAINER_MANAGED_CONFIG_FIELDS},
    )
    try:
        config_class(**kwargs)  # the config's own checks (ranges, choices, nested settings such as prompt learning)
    except (ValueError, TypeError) as problem:
        raise recipe.error("method_config", f"{problem} (method {recipe.method!r})") from None
    return kwargs


def validate_recipe(recipe: Recipe) -> dict[str, Any]:
    """Check everything a recipe names before a run creates anything: the method and its `method_config`, the
    protocol and the transform presets. Returns the method config kwargs. Raises `RecipeError`."""
    from .. import methods  # noqa: F401 - registers the built-in methods
    from ..core.registry import get_method, list_methods
    from ..evaluation.metrics import load_protocol

    available = sorted(list_methods())
    if recipe.method not in available:
        suggestion = did_you_mean(recipe.method, available)
        raise recipe.error(
            "method",
            f"expected one of {', '.join(map(repr, available))}, got {recipe.method!r}"
            + (f" (did you mean {suggestion!r}?)" if suggestion else ""),
        )
    kwargs = validate_method_config(recipe, get_method(recipe.method).config_class)
    try:
        load_protocol(recipe.protocol)
    except ValueError as problem:
        raise recipe.error("protocol", str(problem)) from None
    check_recipe_transforms(recipe)
    return kwargs


def preset_config(spec: Any, normalize: dict[str, Any] | None) -> dict[str, Any]:
    """The transform preset a recipe names (a shipped name, a YAML file or a mapping), with the backbone's
    normalisation (`normalize`) in place of its own when the recipe says `transforms.normalize: backbone`."""
    from ..data.transforms import load_transform_config

    config = dict(spec) if isinstance(spec, Mapping) else load_transform_config(spec)
    if normalize is not None:
        config["normalize"] = normalize
    return config


def recipe_presets(recipe: Recipe) -> list[tuple[str, Any]]:
    """(recipe key, preset spec) of the transform presets a recipe names."""
    presets = [("transforms.eval", recipe.transforms.eval)] if recipe.transforms.eval is not None else []
    if recipe.training.augment != "none":
        presets.append(("training.augment", recipe.training.augment))
    return presets


def check_recipe_transforms(recipe: Recipe) -> None:
    """Check the presets a recipe names before anything is built (no backbone needed); `RecipeError` names the key."""
    from ..data.transforms import ImageTransform, TransformConfigError

    # The backbone's mean/std are not known yet: a neutral stand-in takes their place, as the backbone's replace the
    # preset's at build time, so that a preset without its own `normalize` passes.
    stand_in = {"mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0]} if recipe.transforms.normalize == "backbone" else None
    for key, spec in recipe_presets(recipe):
        try:
            ImageTransform.from_config(preset_config(spec, stand_in), size=recipe.transforms.size)
        except (TransformConfigError, FileNotFoundError) as error:
            raise recipe.error(key, str(error)) from None
