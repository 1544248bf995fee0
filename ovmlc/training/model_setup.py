"""The model a run trains: the recipe's method around a CLIP (`Model.from_clip`) or a previous output folder
(`init_from`), with the recipe's `freeze` patterns applied."""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from ..files import CONFIG_FILE
from .label_space import LabelSpace
from .recipe import Recipe, RecipeError, validate_method_config


@dataclass
class BuiltModel:
    model: torch.nn.Module
    trainable_parameters: list[torch.nn.Parameter]
    # The method trains its text side: label embeddings are recomputed (with gradients) every step.
    encode_labels_every_step: bool


def build_model(recipe: Recipe, labels: LabelSpace, print_fn=print, is_main_process: bool = True) -> BuiltModel:
    """The recipe's model: from its backbone (sized for the training labels `labels.train`: class-specific prompts, a
    linear probe) or from `init_from`; `freeze` patterns applied; the label split recorded in its config."""
    from .. import methods  # noqa: F401 - registers the built-in methods
    from ..core.registry import get_method, list_methods

    available = list_methods()
    if recipe.method not in available:
        raise RecipeError(
            f"recipe {recipe.source}: unknown method {recipe.method!r}; available: {', '.join(sorted(available))}"
        )
    spec = get_method(recipe.method)
    config_class, model_class = spec.config_class, spec.model_class
    method_kwargs = validate_method_config(recipe, config_class)
    config_fields = {field.name for field in dataclasses.fields(config_class)}
    if recipe.dataset.shots is not None and "shots" in config_fields and "shots" not in method_kwargs:
        method_kwargs["shots"] = recipe.dataset.shots  # e.g. LAMM's 1/shots loss weight
    if recipe.init_from:
        init_config = Path(recipe.init_from) / CONFIG_FILE
        if not init_config.is_file():
            raise RecipeError(f"recipe {recipe.source}: init_from {recipe.init_from!r} is not an ovmlc output folder")
        model_type = json.loads(init_config.read_text()).get("model_type")
        if model_type != config_class.model_type:
            raise RecipeError(
                f"recipe {recipe.source}: init_from {recipe.init_from!r} holds a {model_type!r} model, "
                f"not a {config_class.model_type!r} ({recipe.method})"
            )
        model = model_class.from_pretrained(recipe.init_from, dtype=torch.float32, **method_kwargs)
    else:
        model = model_class.from_clip(
            recipe.backbone, dtype=torch.float32, seen_labels=list(labels.train), **method_kwargs
        )
    for pattern in recipe.freeze:
        matched = [parameter for name, parameter in model.named_parameters() if re.search(pattern, name)]
        if not matched:
            raise RecipeError(f"recipe {recipe.source}: freeze pattern {pattern!r} matches no parameter")
        for parameter in matched:
            parameter.requires_grad_(False)
    # The label split is part of the model from the start (ViLD weights seen and unseen labels differently and masks
    # the unseen rows while training); the finish step writes the same values.
    model.config.seen_labels = list(labels.train)
    model.config.unseen_labels = labels.unseen
    trainable_parameters = [parameter for parameter in model.parameters() if parameter.requires_grad]
    if is_main_process:
        model.print_trainable_parameters(print_fn=print_fn)
    # Labels: encoded once unless the method trains its text side (then every step, with gradients).
    text_trainable = any(p.requires_grad for module in model.text_side_modules() for p in module.parameters())
    return BuiltModel(model, trainable_parameters, text_trainable and bool(model.trains_text_side))


__all__ = ["BuiltModel", "build_model"]
