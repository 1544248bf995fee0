"""Optimizer and learning-rate schedule of a run: the method's parameter groups (frozen parameters dropped) under
AdamW / Adam / SGD; per-step linear warm-up then constant / cosine / linear / step decay (`LambdaLR`), or a
`ReduceLROnPlateau` stepped on the validation metric."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from .errors import TrainingError
from .recipe import Recipe


@dataclass
class StepPlan:
    steps_per_epoch: int  # optimizer steps per epoch (batches / gradient accumulation, rounded up)
    total_steps: int
    num_epochs: int  # epochs the loop runs (the last one may stop early at total_steps)


def plan_steps(recipe: Recipe, batches_per_epoch: int) -> StepPlan:
    training = recipe.training
    steps_per_epoch = math.ceil(batches_per_epoch / training.gradient_accumulation_steps)
    total_steps = training.max_steps or training.epochs * steps_per_epoch
    num_epochs = math.ceil(total_steps / steps_per_epoch) if training.max_steps else training.epochs
    return StepPlan(steps_per_epoch, total_steps, num_epochs)


def build_optimizer(recipe: Recipe, model: torch.nn.Module) -> torch.optim.Optimizer:
    """The recipe's optimizer over `model.parameter_groups(lr, weight_decay, layer_decay)` (trainable ones only)."""
    groups = model.parameter_groups(recipe.optimizer.lr, recipe.optimizer.weight_decay, recipe.layer_decay)
    groups = [dict(group, params=[p for p in group["params"] if p.requires_grad]) for group in groups]
    groups = [group for group in groups if group["params"]]
    if not groups:
        raise TrainingError(f"method {recipe.method!r}: parameter_groups() returned no trainable parameters")
    config = recipe.optimizer
    if config.name == "sgd":
        return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum, nesterov=config.nesterov)
    optimizer_class = torch.optim.AdamW if config.name == "adamw" else torch.optim.Adam
    return optimizer_class(groups, lr=config.lr, betas=tuple(config.betas), eps=config.eps)


def build_schedule_lambda(
    name: str,
    warmup_steps: int,
    total_steps: int,
    min_lr_ratio: float,
    step_every: int,
    gamma: float,
    warmup_multiplier: float | None = None,
) -> Callable[[int], float]:
    """Learning-rate multiplier per optimizer step: warm-up (linear, or constant at `warmup_multiplier`, Dassl's
    "constant" warm-up used by CoOp/DualCoOp), then cosine / linear / constant / step decay."""

    def multiplier(step: int) -> float:
        if warmup_steps and step < warmup_steps:
            return warmup_multiplier if warmup_multiplier is not None else (step + 1) / warmup_steps
        if name == "constant":
            return 1.0
        if name == "step":
            return gamma ** ((step - warmup_steps) // max(1, step_every))
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        decay = 0.5 * (1.0 + math.cos(math.pi * progress)) if name == "cosine" else 1.0 - progress
        return min_lr_ratio + (1.0 - min_lr_ratio) * decay

    return multiplier


def build_scheduler(
    recipe: Recipe, optimizer: torch.optim.Optimizer, plan: StepPlan
) -> torch.optim.lr_scheduler.LRScheduler | torch.optim.lr_scheduler.ReduceLROnPlateau:
    """A per-step `LambdaLR` (prepare it with accelerate), or a `ReduceLROnPlateau` for `schedule.name: plateau`
    (stepped by validation, see `step_plateau`; no warm-up)."""
    schedule = recipe.schedule
    if schedule.name == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode=schedule.mode, factor=schedule.factor, patience=schedule.patience
        )
    warmup = (
        schedule.warmup_steps if schedule.warmup_steps is not None else round(schedule.warmup_ratio * plan.total_steps)
    )
    multiplier = build_schedule_lambda(
        schedule.name,
        warmup,
        plan.total_steps,
        schedule.min_lr_ratio,
        schedule.step_size * plan.steps_per_epoch,
        schedule.gamma,
        warmup_multiplier=None if schedule.warmup_lr is None else schedule.warmup_lr / recipe.optimizer.lr,
    )
    return torch.optim.lr_scheduler.LambdaLR(optimizer, multiplier)


def plateau_metric_name(recipe: Recipe) -> str:
    """The validation metric a plateau schedule follows (`schedule.metric`, default the selection metric)."""
    return recipe.schedule.metric or recipe.training.selection_metric


__all__ = [
    "StepPlan",
    "build_optimizer",
    "build_schedule_lambda",
    "build_scheduler",
    "plan_steps",
    "plateau_metric_name",
]
