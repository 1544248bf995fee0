"""Kill-safe training checkpoints in `<output_dir>/checkpoints/`, each one also a model folder.

Layout:

    checkpoints/
      checkpoint-<step>/       a loadable model folder (`save_pretrained`: config.json, weights, code, tokenizer, ...:
                               `ovmlc evaluate --model checkpoints/checkpoint-<step>`), plus what resuming needs
                               (`ovmlc.training.resume_files`): trainable_weights.safetensors, optimizer.safetensors,
                               scheduler.json, rng_state_<rank>.safetensors (one per process), and
                               ovmlc_trainer_state.json (epoch, position in the epoch, best metric, loss history)
      best-<step>/             the best model on the validation split so far: a model folder +
                               trainable_weights.safetensors + ovmlc_trainer_state.json
      .tmp-*/                  a write in progress (or one interrupted by a kill): never read, removed on start

Nothing in a checkpoint is a pickle. A checkpoint is written into a temporary folder and renamed into place once
complete (an atomic `rename` on the same filesystem), so a process killed mid-write, or a write that fails (full
disk), never replaces or corrupts the last good checkpoint. Only the newest `total_limit` checkpoints are kept,
together with the `best-*` snapshots they (or the running trainer) refer to. Checkpoints of earlier ovmlc versions
(accelerate's `save_state` layout with `trainer_state.json`) are still found and resumed.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from ..files import CHECKPOINTS_DIR, TRAINER_STATE_FILE
from .launch import all_processes_succeeded
from .output_folder import reporting_write_errors, write_error
from .resume_files import save_trainable_weights, save_training_state
from .state import read_state_file, state_file

_CHECKPOINT_NAME = re.compile(r"^checkpoint-(\d+)$")
_BEST_NAME = re.compile(r"^best-(\d+)$")
_TMP_PREFIX = ".tmp-"

# Writes the contents of a checkpoint into the (temporary) folder; called on every process.
ContentWriter = Callable[[Path], None]


def _fsync_directory(path: Path) -> None:
    try:
        descriptor = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)


def _fsync_tree(path: Path) -> None:
    """Flush every file of a freshly written folder to disk before it is renamed into place."""
    for file in path.rglob("*"):
        if file.is_file():
            with open(file, "rb") as handle:
                os.fsync(handle.fileno())
    _fsync_directory(path)


def write_json_atomic(path: Path, content: Any) -> None:
    """Write JSON next to `path` and rename it over `path` (readers never see half a file)."""
    path = Path(path)
    temporary = path.with_name(f"{_TMP_PREFIX}{path.name}")
    temporary.write_text(json.dumps(content, indent=2) + "\n", encoding="utf-8")
    with open(temporary, "rb") as handle:
        os.fsync(handle.fileno())
    os.replace(temporary, path)


class CheckpointManager:
    """Save, find, prune and resume training checkpoints (one instance per process; only the main one renames)."""

    def __init__(self, output_dir: str | os.PathLike, accelerator, total_limit: int = 2):
        self.directory = Path(output_dir) / CHECKPOINTS_DIR
        self.accelerator = accelerator
        self.total_limit = total_limit

    # ------------------------------------------------------------------ discovery
    def checkpoints(self) -> list[tuple[int, Path]]:
        """Complete checkpoints as `(step, path)`, oldest first (a folder only exists once fully written)."""
        if not self.directory.is_dir():
            return []
        found = []
        for path in self.directory.iterdir():
            match = _CHECKPOINT_NAME.match(path.name)
            if match and state_file(path) is not None:
                found.append((int(match.group(1)), path))
        return sorted(found)

    def latest(self) -> Path | None:
        checkpoints = self.checkpoints()
        return checkpoints[-1][1] if checkpoints else None

    def best_path(self, step: int) -> Path:
        return self.directory / f"best-{step}"

    def remove_stale_temporaries(self) -> None:
        """Delete leftovers of writes interrupted by a kill (main process, at start)."""
        if self.accelerator.is_main_process and self.directory.is_dir():
            for path in self.directory.iterdir():
                if path.name.startswith(_TMP_PREFIX):
                    shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)
        self.accelerator.wait_for_everyone()

    # ------------------------------------------------------------------ writing
    def save(self, step: int, trainer_state: dict[str, Any], write: ContentWriter, replace: bool = False) -> Path:
        """Write a checkpoint: `write(folder)` on every process into a temporary folder, then the trainer state,
        then rename it into place. A checkpoint of the same step is kept as is, unless `replace` (the final one,
        whose trainer state differs). A failed write (full disk, ...) raises `OutputWriteError` on every process and
        leaves the earlier checkpoints as they were."""
        final = self.directory / f"checkpoint-{step}"
        if (final / TRAINER_STATE_FILE).is_file() and not replace:
            return final
        return self._write_folder(final, trainer_state, write, prune=True)

    def save_best(self, step: int, trainer_state: dict[str, Any], write: ContentWriter) -> Path:
        """Snapshot the best model so far (`write` puts the model folder and its trainable weights)."""
        return self._write_folder(self.best_path(step), trainer_state, write, prune=False)

    def _write_folder(self, final: Path, trainer_state: dict[str, Any], write: ContentWriter, prune: bool) -> Path:
        accelerator = self.accelerator
        temporary = self.directory / f"{_TMP_PREFIX}{final.name}"
        resume_hint = self._resume_hint()
        error: BaseException | None = None
        try:
            if accelerator.is_main_process:
                with reporting_write_errors(temporary, f"writing checkpoint {final.name}", resume_hint):
                    if temporary.exists():
                        shutil.rmtree(temporary)
                    temporary.mkdir(parents=True)
        except Exception as caught:  # every process must reach the agreement below
            error = caught
        if all_processes_succeeded(accelerator, error is None):
            try:
                with reporting_write_errors(temporary, f"writing checkpoint {final.name}", resume_hint):
                    write(temporary)
            except Exception as caught:
                error = caught
        if all_processes_succeeded(accelerator, error is None) and accelerator.is_main_process:
            try:
                with reporting_write_errors(temporary, f"writing checkpoint {final.name}", resume_hint):
                    # The trainer state is written last: it marks the folder as complete.
                    (temporary / TRAINER_STATE_FILE).write_text(
                        json.dumps(trainer_state, indent=2) + "\n", encoding="utf-8"
                    )
                    _fsync_tree(temporary)
                    self._move_into_place(temporary, final)
                    if prune:
                        self.prune(keep_best_step=trainer_state.get("best_step"))
            except Exception as caught:
                error = caught
        if not all_processes_succeeded(accelerator, error is None):
            if accelerator.is_main_process:
                shutil.rmtree(temporary, ignore_errors=True)  # frees the space a full disk needs back
            if error is None:
                error = write_error(
                    RuntimeError("another process failed to write its part (see its error)"),
                    temporary,
                    f"writing checkpoint {final.name}",
                    resume_hint,
                )
            raise error
        accelerator.wait_for_everyone()
        return final

    def _move_into_place(self, temporary: Path, final: Path) -> None:
        if final.exists():
            # Move the old one aside first: a kill in between leaves the previous checkpoints to resume from.
            retired = self.directory / f"{_TMP_PREFIX}retired-{final.name}"
            shutil.rmtree(retired, ignore_errors=True)
            os.rename(final, retired)
            os.rename(temporary, final)
            shutil.rmtree(retired, ignore_errors=True)
        else:
            os.rename(temporary, final)
        _fsync_directory(self.directory)

    def _resume_hint(self) -> str:
        latest = self.latest()
        where = f"the last complete checkpoint, {latest}," if latest else "the start (no checkpoint is complete yet)"
        return f", then rerun the same command with --resume: it continues from {where} and reproduces the run"

    def prune(self, keep_best_step: int | None = None) -> None:
        """Keep the newest `total_limit` checkpoints and the best snapshots that any kept state refers to."""
        checkpoints = self.checkpoints()
        for _, path in checkpoints[: max(0, len(checkpoints) - self.total_limit)]:
            shutil.rmtree(path, ignore_errors=True)
        referenced = {keep_best_step} if keep_best_step is not None else set()
        for _, path in self.checkpoints():
            state = read_state_file(path)
            if state.get("best_step") is not None:
                referenced.add(state["best_step"])
        for path in self.directory.iterdir():
            match = _BEST_NAME.match(path.name)
            if match and int(match.group(1)) not in referenced:
                shutil.rmtree(path, ignore_errors=True)

    # ------------------------------------------------------------------ reading
    def resolve_resume(self, resume: str | os.PathLike | bool | None) -> Path | None:
        """`True`/`"latest"` → the newest complete checkpoint (None if there is none); a path → that checkpoint."""
        if resume in (None, False):
            return None
        if resume is True or resume == "latest":
            return self.latest()
        path = Path(resume)
        if state_file(path) is None:
            raise FileNotFoundError(f"--resume {path}: not a complete ovmlc checkpoint (no {TRAINER_STATE_FILE})")
        return path

    @staticmethod
    def read_trainer_state(checkpoint: Path) -> dict[str, Any]:
        return read_state_file(checkpoint)


def write_model_checkpoint(
    folder: Path,
    accelerator,
    model: torch.nn.Module,
    label_space,
    training_state: tuple[Any, Any, Any] | None = None,
) -> None:
    """The contents of a checkpoint folder (every process calls it): on the main process the model folder
    (`save_pretrained`, with the run's label split and no thresholds: they are calibrated at the end) and the
    trainable weights; with `training_state = (optimizer, scheduler, scaler)` (None where absent) also what resuming
    needs, including every process's RNG states."""
    if accelerator.is_main_process:
        config = model.config
        saved_thresholds = config.label_thresholds, config.global_threshold
        was_training = model.training
        label_space.apply_to_config(config)
        config.label_thresholds, config.global_threshold = None, None
        model.eval()  # label embeddings saved with the folder come from the eval-mode text side
        try:
            model.save_pretrained(folder)
        finally:
            model.train(was_training)
            config.label_thresholds, config.global_threshold = saved_thresholds
        save_trainable_weights(model, folder)
    if training_state is not None:
        optimizer, scheduler, scaler = training_state
        save_training_state(
            folder, optimizer, scheduler, scaler, accelerator.process_index, accelerator.is_main_process
        )


__all__ = [
    "CheckpointManager",
    "write_json_atomic",
    "write_model_checkpoint",
]
