"""Scoring a split, and validation: the selection metric on the validation split, the best-model snapshot, the
plateau schedule's step and early stopping. The test split is never seen here.

Scores come from the one `ovmlc.core.scoring.Scorer` (`split_scorer`: batches gathered across processes).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from ..core.scoring import Scorer, ViewScores
from .errors import TrainingError
from .optimization import plateau_metric_name
from .recipe import Recipe, RecipeError
from .run_data import RunData
from .state import TrainerState


def metric_at(report: dict[str, Any], path: str) -> float:
    """Look up `view/metric[/...]` (e.g. `gzsl/mAP`, `gzsl/top_k/3/f1`) in an `evaluate_protocol` report."""
    view, *keys = path.split("/")
    views = report.get("views", {})
    if view not in views:
        skipped = report.get("skipped_views", {})
        reason = f" (skipped: {skipped[view]})" if view in skipped else ""
        raise TrainingError(
            f"selection metric {path!r}: no view {view!r} in the report{reason}; views: {', '.join(views)}"
        )
    value: Any = views[view]
    for key in keys:
        if not isinstance(value, dict) or key not in value:
            raise TrainingError(f"selection metric {path!r}: no {key!r} in view {view!r}")
        value = value[key]
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise TrainingError(f"selection metric {path!r} is not a number: {value!r}")
    return float(value)


def summarize_report(report: dict[str, Any]) -> dict[str, float]:
    """Flat `{view/mAP, view/F1@K, ...}` numbers of a report (for logs and the trainer state file)."""
    summary = {}
    for view, result in report.get("views", {}).items():
        if result.get("mAP") is not None:
            summary[f"{view}/mAP"] = result["mAP"]
        for key in ("top1", "top5"):  # single-label protocols: accuracy
            if result.get(key) is not None:
                summary[f"{view}/{key}"] = result[key]
        for k, block in result.get("top_k", {}).items():
            if block.get("f1") is not None:
                summary[f"{view}/F1@{k}"] = block["f1"]
    return summary


def check_metrics(recipe: Recipe, data: RunData) -> None:
    """Fail before training when the protocol or a validation metric the recipe names does not exist."""
    from ..evaluation.metrics import evaluate_protocol, load_protocol

    try:
        load_protocol(recipe.protocol)
    except ValueError as error:
        raise RecipeError(f"recipe {recipe.source}: protocol: {error}") from None
    if not data.trains or recipe.training.eval_every is None:
        return
    labels = data.validation_label_rows
    scores = np.zeros(labels.shape, dtype=np.float32)  # only the report's structure matters here
    report = evaluate_protocol(scores, labels, data.labels.validation, data.labels.validation_unseen, recipe.protocol)
    keys = {"training.selection_metric": recipe.training.selection_metric}
    if recipe.schedule.name == "plateau" and recipe.schedule.metric:
        keys["schedule.metric"] = recipe.schedule.metric
    for key, path in keys.items():
        try:
            metric_at(report, path)
        except TrainingError as error:
            raise RecipeError(f"recipe {recipe.source}: {key}: {error}") from None


def label_embeddings(accelerator, model: torch.nn.Module, names: Sequence[str]) -> torch.Tensor:
    """`[C, D]` label embeddings from the current weights of `model` (unwrapped); the main process goes first, as it
    fills the shared disk cache."""
    was_training = model.training
    model.eval()
    with accelerator.main_process_first(), torch.no_grad():
        embeddings = model.encode_labels(list(names))
    model.train(was_training)
    return embeddings.to(accelerator.device)


def split_scorer(accelerator, model: torch.nn.Module, description: str = "") -> Scorer:
    """The `Scorer` of a split on several processes: every batch gathered (`gather_for_metrics` drops the samples the
    distributed sampler repeated), rows placed by the batches' `index`, so every process gets all rows, in order."""
    progress = description if accelerator.is_local_main_process and description else False
    return Scorer(model, gather=accelerator.gather_for_metrics, progress=progress)


class Validator:
    """Scores the validation / test split and runs the validation step of the training loop."""

    def __init__(
        self,
        recipe: Recipe,
        accelerator,
        data: RunData,
        eval_loaders: dict[str, Any],
        save_best: Callable[[int], None],
        print_fn: Callable[..., None] = print,
    ):
        self.recipe = recipe
        self.accelerator = accelerator
        self.data = data
        self.eval_loaders = eval_loaders
        self.save_best = save_best  # snapshot the current weights as the best model (called with the step)
        self.print = print_fn

    def score_views(
        self, model: torch.nn.Module, split: str, names: Sequence[str], unseen, with_predicted: bool = True
    ) -> ViewScores:
        """What a report of `split` ("validation" | "test") by `model` (unwrapped) needs, through the one `Scorer`:
        ranking scores, the predicted ones when they differ, the unseen labels alone when the trait says so."""
        label_embeddings(self.accelerator, model, names)  # fills the label cache, main process first
        scorer = split_scorer(self.accelerator, model, f"scoring {split}")
        loader = self.eval_loaders[split]
        num_rows = len(self.data.datasets[split])
        return scorer.score_for_views(loader, names, unseen, with_predicted=with_predicted, num_rows=num_rows)

    def predict(self, model: torch.nn.Module, split: str, names: Sequence[str]) -> np.ndarray:
        """`[N, C]` predicted sigmoid scores of `split` by `model` (unwrapped): what thresholds are fitted on."""
        label_embeddings(self.accelerator, model, names)
        scorer = split_scorer(self.accelerator, model, f"scoring {split}")
        return scorer.score_pixel_batches(
            self.eval_loaders[split], names, num_rows=len(self.data.datasets[split])
        ).scores

    def validate(self, model: torch.nn.Module, state: TrainerState, plateau=None) -> bool:
        """Score the validation split with `model` (unwrapped), record the metric in `state`, snapshot a new best,
        step the plateau schedule; True when early stopping triggers. Leaves `model` in eval mode."""
        from ..evaluation.metrics import evaluate_protocol

        training = self.recipe.training
        names, unseen = self.data.labels.validation, self.data.labels.validation_unseen
        views = self.score_views(model, "validation", names, unseen, with_predicted=False)
        labels = self.data.validation_label_rows
        arrays = views.scores_file_arrays()  # scores and logits: AP ranks the logits (sigmoids saturate at 1.0)
        report = evaluate_protocol(
            arrays["scores"],
            labels,
            names,
            unseen,
            self.recipe.protocol,
            unseen_scores=arrays["unseen_scores"],
            logits=arrays["logits"],
            unseen_logits=arrays["unseen_logits"],
        )
        metric = metric_at(report, training.selection_metric)
        summary = summarize_report(report)
        epochs = round(state.global_step / max(1, state.num_update_steps_per_epoch), 3)
        state.eval_history.append({"step": state.global_step, "epoch": epochs, "metric": metric, **summary})
        self.accelerator.log({f"validation/{key}": value for key, value in summary.items()}, step=state.global_step)
        better = state.best_metric is None or (
            metric > state.best_metric if training.selection_mode == "max" else metric < state.best_metric
        )
        if better:
            state.best_metric, state.best_step = metric, state.global_step
            state.evaluations_without_improvement = 0
            if training.selection == "best":  # `last` keeps the final weights: no snapshot to restore
                self.save_best(state.global_step)
        else:
            state.evaluations_without_improvement += 1
        self.print(
            f"step {state.global_step} (epoch {epochs:g}): validation {training.selection_metric} = {metric:.4f}"
            + (" (best)" if better else f" (best {state.best_metric:.4f} at step {state.best_step})")
        )
        if plateau is not None:
            plateau_metric = plateau_metric_name(self.recipe)
            plateau.step(metric if plateau_metric == training.selection_metric else metric_at(report, plateau_metric))
        patience = training.early_stopping_patience
        if patience is not None and state.evaluations_without_improvement >= patience:
            state.stopped_early = True
            self.print(f"ovmlc train: early stopping after {patience} evaluations without improvement")
            return True
        return False


__all__ = [
    "Validator",
    "check_metrics",
    "label_embeddings",
    "metric_at",
    "split_scorer",
    "summarize_report",
]
