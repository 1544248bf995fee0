"""The ovmlc training engine: `ovmlc train --config hub_configs/<recipe>.yaml [key=value ...]`.

Also runnable under any accelerate launcher: `accelerate launch -m ovmlc.train --config ...`.

One run = one recipe (see `ovmlc.training.recipe` and docs/training.md):

1. build the method around a CLIP backbone (`Model.from_clip`) or a previous output folder (`init_from`);
2. train on the canonical dataset's train split with accelerate (mixed precision, gradient accumulation, DDP with the
   recipe's batch size as the *global* batch size, split over processes, so 1 or N processes follow the same curve);
   methods with a frozen image tower train from a feature cache;
3. validate on the validation split (model selection, plateau schedule, early stopping: never the test split);
4. checkpoint every `checkpoint_every` steps and at epoch ends (kill-safe; `--resume` continues bit-for-bit);
5. finish with the best-on-validation model (or the last weights, `training.selection: last`): thresholds calibrated
   on the validation split, the test-split report of the recipe's protocol (`eval/`), `save_pretrained` +
   `recipe.yaml` + `ovmlc_trainer_state.json` (+ README.md model card).

`training.epochs: 0` evaluates the initial model (e.g. CLIP zero-shot) through the same steps 3 and 5.

This module only orchestrates; each concern has its module in `ovmlc.training`: `launch` (accelerator, launch
checks), `output_folder` (lock, occupied folders, write errors), `run_data`, `label_space`, `model_setup`,
`optimization`, `loop`, `validation`, `checkpointing` + `resume_files`, `finish`, `state`.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from ..files import RECIPE_FILE
from . import release_accelerator_state
from .checkpointing import CheckpointManager, write_model_checkpoint
from .errors import TrainingError
from .label_space import LabelSpace, resolve_label_space
from .launch import environment_info, flat_config
from .optimization import build_schedule_lambda
from .recipe import Recipe, RecipeError, load_recipe, validate_recipe
from .run_data import check_dataset_path
from .state import TrainerState
from .validation import Validator, metric_at, summarize_report


class Trainer:
    """Runs one recipe end to end (see the module docstring). `run()` returns the output folder."""

    def __init__(self, recipe: Recipe, resume: str | bool | None = None, overwrite: bool = False):
        self.recipe = recipe
        self.resume = resume
        self.overwrite = overwrite
        self.output_dir = Path(recipe.output_dir)

    # ------------------------------------------------------------------ entry point
    def run(self) -> Path:
        from .output_folder import RunLock

        check_dataset_path(self.recipe)
        self._setup_accelerator()
        self.lock = RunLock(self.output_dir)
        try:
            self._take_output_folder()
            self._load_data()
            self._build_model()
            self._prepare()
            self._restore()
            self._start_trackers()
            if not self.state.finished:
                self._train()
            self._finish()
        finally:
            self.accelerator.end_training()
            self.lock.release()
            release_accelerator_state()
        return self.output_dir

    # ------------------------------------------------------------------ setup
    def _setup_accelerator(self) -> None:
        from accelerate.utils import set_seed

        from .launch import check_launch, make_accelerator

        training = self.recipe.training
        release_accelerator_state()  # settings left by an earlier run in this process
        self.accelerator = make_accelerator(self.recipe, self.output_dir)
        self.launch_warning = check_launch(self.accelerator)
        for key, size in (
            ("training.batch_size", training.batch_size),
            ("training.eval_batch_size", training.eval_batch_size),
        ):
            if size % self.accelerator.num_processes:
                raise RecipeError(
                    f"recipe {self.recipe.source}: {key}={size} is the global batch size and must be divisible by "
                    f"the {self.accelerator.num_processes} processes"
                )
        set_seed(training.seed)
        self.checkpoints = CheckpointManager(self.output_dir, self.accelerator, training.checkpoint_total_limit)
        self.is_main = self.accelerator.is_main_process

    def print(self, *args) -> None:
        self.accelerator.print(*args)

    def _take_output_folder(self) -> None:
        """Lock the folder for this run, then never silently mix two runs in it: resume it, or overwrite it."""
        from .launch import on_main_process
        from .output_folder import clear_previous_run, holds_a_run

        validate_recipe(self.recipe)  # what the recipe names (method config, protocol, presets): before any file op
        on_main_process(self.accelerator, self.lock.acquire, f"locking output_dir {self.output_dir}")
        self.resume_from = None
        if self.resume:
            self.resume_from = self.checkpoints.resolve_resume(self.resume)
            if self.resume_from is None:
                self.print(f"ovmlc train: no checkpoint in {self.checkpoints.directory}; starting from scratch")
        occupied = holds_a_run(self.output_dir, self.checkpoints.checkpoints())
        if self.resume_from is None and occupied and not self.resume:
            if not self.overwrite:
                raise TrainingError(
                    f"output_dir {self.output_dir} already holds a training run; pass --resume to continue it or "
                    f"--overwrite to start over"
                )
            on_main_process(
                self.accelerator,
                lambda: clear_previous_run(self.output_dir, self.checkpoints.directory),
                "removing the earlier run",
            )
        self.accelerator.wait_for_everyone()
        self.checkpoints.remove_stale_temporaries()

    def _load_data(self) -> None:
        from .run_data import load_run_data
        from .validation import check_metrics

        self.data = load_run_data(self.recipe, self.accelerator, print_fn=self.print)
        self.labels: LabelSpace = self.data.labels
        check_metrics(self.recipe, self.data)

    def _build_model(self) -> None:
        from .model_setup import build_model
        from .run_data import build_datasets

        built = build_model(self.recipe, self.labels, print_fn=self.print, is_main_process=self.is_main)
        self.model = built.model
        self.trainable_parameters = built.trainable_parameters
        self.encode_labels_every_step = built.encode_labels_every_step
        build_datasets(self.recipe, self.model, self.accelerator, self.data, print_fn=self.print)

    def _prepare(self) -> None:
        """accelerate's `prepare` of model and loaders; with training, also the optimizer and the LR schedule."""
        from .launch import seed_random_draws_per_process
        from .optimization import build_optimizer, build_scheduler, plan_steps
        from .run_data import make_loader

        recipe, accelerator, datasets = self.recipe, self.accelerator, self.data.datasets
        self.state = TrainerState()
        eval_loaders = {name: make_loader(recipe, datasets[name], shuffle=False) for name in ("validation", "test")}
        self.optimizer = self.lr_scheduler = self.scheduler = self.plateau = self.train_loader = None
        if not self.data.trains:
            self.model = accelerator.prepare_model(self.model, evaluation_mode=True)
            self.eval_loaders = dict(zip(eval_loaders, accelerator.prepare(*eval_loaders.values())))
            self.state.finished = True
            return
        if not self.trainable_parameters:
            raise TrainingError(
                f"recipe {recipe.source}: every parameter is frozen; nothing to train "
                "(set training.epochs: 0 to only evaluate)"
            )
        optimizer = build_optimizer(recipe, self.model)
        train_loader = make_loader(recipe, datasets["train"], shuffle=True)
        self.model, self.optimizer, self.train_loader, *prepared = accelerator.prepare(
            self.model, optimizer, train_loader, *eval_loaders.values()
        )
        self.eval_loaders = dict(zip(eval_loaders, prepared))
        seed_random_draws_per_process(accelerator, recipe.training.seed)  # dropout: independent draws per process
        self.plan = plan_steps(recipe, len(self.train_loader))
        self.state.total_steps, self.state.num_update_steps_per_epoch = self.plan.total_steps, self.plan.steps_per_epoch
        scheduler = build_scheduler(recipe, self.optimizer, self.plan)
        if recipe.schedule.name == "plateau":
            self.plateau = scheduler  # stepped by validation; saved as JSON in checkpoints
        else:
            self.lr_scheduler = scheduler
            self.scheduler = accelerator.prepare(scheduler)  # steps once per optimizer step, not per micro-batch

    def _unwrapped(self):
        return self.accelerator.unwrap_model(self.model)

    def _restore(self) -> None:
        from .resume_files import (
            load_legacy_checkpoint,
            load_trainable_weights,
            load_training_state,
            saved_process_count,
        )
        from .state import read_state_file

        if self.resume_from is None:
            return
        folder, accelerator = Path(self.resume_from), self.accelerator
        # One RNG file per process: another process count would replay a different data order / RNG streams.
        saved_processes = saved_process_count(folder)
        if saved_processes and saved_processes != accelerator.num_processes:
            raise TrainingError(
                f"checkpoint {folder} was written by {saved_processes} process(es), this run has "
                f"{accelerator.num_processes}: resume with `accelerate launch --num_processes {saved_processes}`"
                f" (the data order and per-process RNG states depend on it)"
            )
        try:
            restored = TrainerState.from_dict(read_state_file(folder))
        except (OSError, ValueError, TypeError) as error:
            raise TrainingError(f"checkpoint {folder}: unreadable trainer state ({error})") from None
        if self.state.total_steps and restored.total_steps and restored.total_steps != self.state.total_steps:
            raise TrainingError(
                f"checkpoint {folder} belongs to a run of {restored.total_steps} steps, this recipe has "
                f"{self.state.total_steps}: resume with the same recipe (see {self.output_dir / RECIPE_FILE})"
            )
        schedule = self.lr_scheduler if self.lr_scheduler is not None else self.plateau
        scaler = getattr(accelerator, "scaler", None)
        if self.data.trains and self._is_legacy_checkpoint(folder):
            load_legacy_checkpoint(
                folder, self._unwrapped(), self.optimizer, schedule, scaler, accelerator.process_index
            )
        elif self.data.trains:
            load_trainable_weights(self._unwrapped(), folder)
            load_training_state(folder, self.optimizer, schedule, scaler, accelerator.process_index)
        restored.resumed_from.append(str(folder))
        self.state = restored
        self.print(f"ovmlc train: resumed from {folder} (step {restored.global_step}, epoch {restored.epoch})")

    @staticmethod
    def _is_legacy_checkpoint(folder: Path) -> bool:
        from ..files import TRAINER_STATE_FILE

        return not (folder / TRAINER_STATE_FILE).is_file()

    def _start_trackers(self) -> None:
        from .launch import on_main_process
        from .output_folder import reporting_write_errors

        def write_recipe() -> None:
            path = self.output_dir / RECIPE_FILE
            with reporting_write_errors(path, "writing the resolved recipe"):
                path.write_text(self.recipe.to_yaml(), encoding="utf-8")

        on_main_process(self.accelerator, write_recipe, f"writing {RECIPE_FILE}")
        if self.recipe.tracker != "none":
            self.accelerator.init_trackers(self.output_dir.name or "ovmlc", config=flat_config(self.recipe.to_dict()))

    # ------------------------------------------------------------------ training
    def _train(self) -> None:
        from .loop import TrainingLoop
        from .validation import label_embeddings

        self.validator = self._validator()
        loop = TrainingLoop(
            self.recipe,
            self.accelerator,
            self.model,
            self.optimizer,
            self.scheduler,
            self.train_loader,
            self.data.datasets["train"],
            self.plan.num_epochs,
            self.labels.train,
            self.trainable_parameters,
            self.encode_labels_every_step,
            label_embeddings=lambda names: label_embeddings(self.accelerator, self._unwrapped(), names),
            validate=lambda: self.validator.validate(self._unwrapped(), self.state, self.plateau),
            checkpoint=self._checkpoint,
            print_fn=self.print,
        )
        loop.run(self.state)

    def _validator(self) -> Validator:
        return Validator(
            self.recipe, self.accelerator, self.data, self.eval_loaders, save_best=self._save_best, print_fn=self.print
        )

    def _checkpoint(self, state: TrainerState, final: bool) -> None:
        schedule = self.lr_scheduler if self.lr_scheduler is not None else self.plateau
        training_state = (self.optimizer, schedule, getattr(self.accelerator, "scaler", None))

        def write(folder: Path) -> None:
            write_model_checkpoint(folder, self.accelerator, self._unwrapped(), self.labels, training_state)

        self.checkpoints.save(state.global_step, state.to_dict(), write, replace=final)

    def _save_best(self, step: int) -> None:
        def write(folder: Path) -> None:
            write_model_checkpoint(folder, self.accelerator, self._unwrapped(), self.labels)

        self.checkpoints.save_best(step, self.state.to_dict(), write)

    # ------------------------------------------------------------------ finish
    def _finish(self) -> None:
        from .finish import finish_run

        state = self.state
        restore_best = self.recipe.training.selection == "best" and state.best_step is not None
        finish_run(
            self.recipe,
            self.accelerator,
            self._unwrapped(),
            self.data,
            getattr(self, "validator", None) or self._validator(),
            state,
            self.output_dir,
            self.checkpoints.best_path(state.best_step) if restore_best else None,
            environment_info(self.accelerator, self.launch_warning),
            print_fn=self.print,
        )


# ----------------------------------------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------------------------------------


def train(
    recipe: Recipe | str | os.PathLike,
    overrides: Sequence[str] = (),
    resume: str | bool | None = None,
    overwrite: bool = False,
) -> Path:
    """Python entry point: run a recipe (object or YAML path) and return the output folder."""
    if not isinstance(recipe, Recipe):
        recipe = load_recipe(recipe, overrides)
    return Trainer(recipe, resume=resume, overwrite=overwrite).run()


def run_from_args(args: argparse.Namespace) -> int:
    from ..core.backbones import BackboneNotFoundError, UnsupportedBackboneError
    from ..data import CanonicalSchemaError

    overrides, resume = list(args.overrides), args.resume
    if resume not in (None, "latest") and "=" in resume and not Path(resume).exists():
        # `--resume key=value`: argparse took an override for the optional checkpoint path.
        overrides, resume = [resume, *overrides], "latest"
    try:
        train(args.config, overrides, resume=resume, overwrite=args.overwrite)
    except (
        RecipeError,
        TrainingError,
        BackboneNotFoundError,
        UnsupportedBackboneError,
        CanonicalSchemaError,
        FileNotFoundError,
    ) as error:
        print(f"ovmlc train: error: {error}", file=sys.stderr)
        return 2
    return 0


__all__ = [
    "LabelSpace",
    "Trainer",
    "TrainerState",
    "TrainingError",
    "build_schedule_lambda",
    "metric_at",
    "resolve_label_space",
    "run_from_args",
    "summarize_report",
    "train",
]
