"""The end of a run: restore the selected weights, calibrate per-label thresholds on the validation split (unseen
labels fall back to the global threshold), score the test split and write the protocol's report (`eval/`), save the
model (`save_pretrained`), the run record (`ovmlc_trainer_state.json`) and the model card."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ..core.scoring import ViewScores
from ..files import EVAL_DIR, RECIPE_FILE, TRAINER_STATE_FILE
from .label_space import LabelSpace
from .recipe import Recipe
from .run_data import RunData
from .state import TrainerState
from .validation import Validator, summarize_report


def finish_run(
    recipe: Recipe,
    accelerator,
    model,
    data: RunData,
    validator: Validator,
    state: TrainerState,
    output_dir: Path,
    best_weights: Path | None,
    environment: dict[str, Any],
    print_fn: Callable[..., None] = print,
) -> None:
    """`model` is the unwrapped model; `best_weights` the best-model folder to restore (None: keep the weights)."""
    from .output_folder import reporting_write_errors
    from .resume_files import load_trainable_weights

    if best_weights is not None:
        load_trainable_weights(model, best_weights)
    labels = data.labels
    names, unseen = labels.evaluation, labels.evaluation_unseen
    validation_scores = validator.predict(model, "validation", names)  # predicted scores: thresholds are fitted on them
    # Ranking scores (what the report's tables rank), the predicted ones when they differ (CLIP zero-shot) and the
    # unseen labels alone (MKT), with their logits.
    test_views = validator.score_views(model, "test", names, unseen)
    then = (
        ", then rerun the same command with --resume: training is complete, so it only redoes the final "
        "evaluation and save"
        if state.global_step
        else ", then rerun the same command with --overwrite"
    )
    test_report = None
    if accelerator.is_main_process:
        with reporting_write_errors(output_dir, "writing the final model and test report", then):
            thresholds = _calibrate(recipe, data, validation_scores, output_dir / EVAL_DIR, print_fn)
            localization = _localization(recipe, accelerator, model, data)
            test_report = _test_report(recipe, data, output_dir, test_views, thresholds, localization)
            labels.apply_to_config(model.config, thresholds)
            model.save_pretrained(output_dir)
            _write_final_state(recipe, data, state, output_dir, test_report, environment)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        from ..core.hooks import refresh_saved_folder

        with reporting_write_errors(output_dir, "writing the model card", then):
            refresh_saved_folder(model, output_dir)  # the card, now with recipe, state and report
        summary = summarize_report(test_report)
        shown = ", ".join(
            f"{key} {100 * value:.2f}" for key, value in summary.items() if key.endswith(("mAP", "/top1"))
        )
        print_fn(f"ovmlc train: test ({recipe.protocol}): {shown}; model and report written to {output_dir}")
    accelerator.wait_for_everyone()


def _calibrate(recipe: Recipe, data: RunData, validation_scores, eval_dir: Path, print_fn) -> dict[str, Any] | None:
    """Per-label thresholds fitted on the validation split (never on unseen labels' annotations), written to eval/."""
    from ..evaluation import engine as evaluation

    names, unseen = data.labels.evaluation, data.labels.evaluation_unseen
    calibration_labels = data.label_rows["validation"].copy()
    calibration_labels[:, unseen] = 0  # unseen labels are never tuned on their annotations
    try:
        thresholds = evaluation.calibrate_thresholds(validation_scores, calibration_labels, names)
    except ValueError as error:
        print_fn(f"ovmlc train: no calibrated thresholds ({error})")
        return None
    evaluation.write_thresholds(
        thresholds,
        calibration_labels,
        names,
        eval_dir,
        split=recipe.dataset.validation_split,
        dataset=recipe.dataset.path,
    )
    return thresholds


def _test_report(
    recipe: Recipe,
    data: RunData,
    output_dir: Path,
    test_views: ViewScores,
    thresholds: dict[str, Any] | None,
    localization: dict[str, Any] | None = None,
) -> dict[str, Any]:
    from ..evaluation import engine as evaluation

    names, unseen = data.labels.evaluation, data.labels.evaluation_unseen
    eval_dir = output_dir / EVAL_DIR
    test_split = data.splits["test"]
    image_ids = test_split["image_id"] if "image_id" in test_split.column_names else None
    test_rows = data.label_rows["test"]
    arrays = test_views.scores_file_arrays()
    ranking_description = test_views.ranking_description
    scores_file = evaluation.ScoresFile(
        labels=test_rows, label_names=list(names), unseen=np.asarray(unseen), image_ids=image_ids, **arrays
    )
    evaluation.save_scores(
        eval_dir / evaluation.SCORES_FILE_NAME,
        labels=test_rows,
        label_names=names,
        unseen=unseen,
        image_ids=image_ids,
        **arrays,
    )
    return evaluation.evaluate_scores(
        scores_file,
        recipe.protocol,
        output_dir=eval_dir,
        thresholds=thresholds,
        provenance={
            "model": str(output_dir),
            "dataset": recipe.dataset.path,
            "split": recipe.dataset.test_split,
            "calibrate_split": recipe.dataset.validation_split if thresholds else None,
            "recipe": str(output_dir / RECIPE_FILE),
            "selection": recipe.training.selection,
            **({"ranking_scores": ranking_description} if ranking_description is not None else {}),
        },
        localization=localization,
    )


def _localization(recipe: Recipe, accelerator, model, data: RunData) -> dict[str, Any] | None:
    """Box AP / pointing accuracy on the test split for models that return boxes, when it has an `objects` column
    (main process only)."""
    from ..evaluation.localization import evaluate_localization, supports_localization

    split = data.splits["test"]
    if not supports_localization(model, split):
        return None
    return evaluate_localization(
        model,
        split,
        data.labels.evaluation,
        data.labels.evaluation_unseen,
        batch_size=recipe.training.eval_batch_size,
        progress=accelerator.is_local_main_process,
    )


def _write_final_state(
    recipe: Recipe,
    data: RunData,
    state: TrainerState,
    output_dir: Path,
    test_report: dict[str, Any],
    environment: dict[str, Any],
) -> None:
    """The run record `ovmlc_trainer_state.json` of the output folder (the model card reads it)."""
    from .checkpointing import write_json_atomic

    labels: LabelSpace = data.labels
    losses = [entry[1] for entry in state.loss_history]
    content = {
        "method": recipe.method,
        "backbone": recipe.backbone,
        "dataset": recipe.dataset.path,
        "protocol": recipe.protocol,
        "seed": recipe.training.seed,
        "global_step": state.global_step,
        "total_steps": state.total_steps,
        "epochs_completed": state.epoch,
        "stopped_early": state.stopped_early,
        "train_seconds": round(state.train_seconds, 3),
        "epoch_seconds": state.epoch_seconds,
        "feature_cache_build_seconds": round(data.feature_cache_seconds, 3),
        "selection_metric": recipe.training.selection_metric,
        "selection": recipe.training.selection,
        "best_step": state.best_step,
        "best_metric": state.best_metric,
        "loss": {
            "first": losses[0] if losses else None,
            "last": losses[-1] if losses else None,
            "min": min(losses) if losses else None,
            "per_epoch": state.epoch_losses,
            "history": state.loss_history,
        },
        "validation": state.eval_history,
        "test": summarize_report(test_report),
        **(
            {"localization": {key: test_report["localization"][key] for key in ("box_ap", "pointing")}}
            if test_report.get("localization")
            else {}
        ),
        "feature_cache": data.use_feature_cache,
        "labels": {"train": len(labels.train), "evaluation": len(labels.evaluation), "unseen": len(labels.unseen)},
        "resumed_from": state.resumed_from,
        **environment,
    }
    write_json_atomic(output_dir / TRAINER_STATE_FILE, content)


__all__ = ["finish_run"]
