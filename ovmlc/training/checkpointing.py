"""Kill-safe training checkpoints in `<output_dir>/checkpoints/`.

Layout:

    checkpoints/
      checkpoint-<step>/       accelerate `save_state` (model, optimizer, scheduler, RNG of every rank, sampler)
                               + trainer_state.json (epoch, position in the epoch, best metric, loss history)
      best-<step>/             trainable parameters + buffers of the best model on the validation split so far
      .tmp-*/                  a write in progress (or one interrupted by a kill): never read, removed on start

A checkpoint is written into a temporary folder and renamed into place once complete (an atomic `rename` on the same
filesystem), so a process killed mid-write never replaces or corrupts the last good checkpoint. Only the newest
`total_limit` checkpoints are kept, together with the `best-*` snapshots they (or the running trainer) refer to.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

import torch

from ..files import BEST_WEIGHTS_FILE, CHECKPOINTS_DIR, TRAINER_STATE_FILE

_CHECKPOINT_NAME = re.compile(r"^checkpoint-(\d+)$")
_BEST_NAME = re.compile(r"^best-(\d+)$")
_TMP_PREFIX = ".tmp-"


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
    """Save, find, prune and resume training checkpoints (one instance per process; only the main one writes)."""

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
            if match and (path / TRAINER_STATE_FILE).is_file():
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
    def save(self, step: int, trainer_state: dict[str, Any], replace: bool = False) -> Path:
        """`accelerator.save_state` into a temporary folder, add trainer_state.json, then rename it into place.

        Every process calls this (each writes its own RNG state); only the main process renames and prunes. A
        checkpoint of the same step is kept as is, unless `replace` (the final one, whose trainer state differs).
        """
        final = self.directory / f"checkpoint-{step}"
        if (final / TRAINER_STATE_FILE).is_file() and not replace:
            return final
        temporary = self.directory / f"{_TMP_PREFIX}checkpoint-{step}"
        if self.accelerator.is_main_process:
            if temporary.exists():
                shutil.rmtree(temporary)
            temporary.mkdir(parents=True)
        self.accelerator.wait_for_everyone()
        self.accelerator.save_state(str(temporary))
        self.accelerator.wait_for_everyone()
        if self.accelerator.is_main_process:
            # trainer_state.json is written last: it marks the folder as complete.
            (temporary / TRAINER_STATE_FILE).write_text(json.dumps(trainer_state, indent=2) + "\n", encoding="utf-8")
            _fsync_tree(temporary)
            if final.exists():
                # Move the old one aside first: a kill in between leaves the previous checkpoints to resume from.
                retired = self.directory / f"{_TMP_PREFIX}retired-checkpoint-{step}"
                shutil.rmtree(retired, ignore_errors=True)
                os.rename(final, retired)
                os.rename(temporary, final)
                shutil.rmtree(retired, ignore_errors=True)
            else:
                os.rename(temporary, final)
            _fsync_directory(self.directory)
            self.prune(keep_best_step=trainer_state.get("best_step"))
        self.accelerator.wait_for_everyone()
        return final

    def save_best(self, step: int, model: torch.nn.Module, trainer_state: dict[str, Any]) -> Path:
        """Snapshot the trainable parameters and buffers of `model` (unwrapped) as the best model so far."""
        from safetensors.torch import save_file

        final = self.best_path(step)
        if self.accelerator.is_main_process:
            temporary = self.directory / f"{_TMP_PREFIX}best-{step}"
            if temporary.exists():
                shutil.rmtree(temporary)
            temporary.mkdir(parents=True)
            save_file(trainable_state_dict(model), str(temporary / BEST_WEIGHTS_FILE))
            (temporary / TRAINER_STATE_FILE).write_text(json.dumps(trainer_state, indent=2) + "\n", encoding="utf-8")
            _fsync_tree(temporary)
            if final.exists():
                shutil.rmtree(final)
            os.rename(temporary, final)
            _fsync_directory(self.directory)
        self.accelerator.wait_for_everyone()
        return final

    def prune(self, keep_best_step: int | None = None) -> None:
        """Keep the newest `total_limit` checkpoints and the best snapshots that any kept state refers to."""
        checkpoints = self.checkpoints()
        for _, path in checkpoints[: max(0, len(checkpoints) - self.total_limit)]:
            shutil.rmtree(path, ignore_errors=True)
        referenced = {keep_best_step} if keep_best_step is not None else set()
        for _, path in self.checkpoints():
            state = json.loads((path / TRAINER_STATE_FILE).read_text(encoding="utf-8"))
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
        if not (path / TRAINER_STATE_FILE).is_file():
            raise FileNotFoundError(f"--resume {path}: not a complete ovmlc checkpoint (no {TRAINER_STATE_FILE})")
        return path

    @staticmethod
    def read_trainer_state(checkpoint: Path) -> dict[str, Any]:
        return json.loads((Path(checkpoint) / TRAINER_STATE_FILE).read_text(encoding="utf-8"))


def trainable_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Trainable parameters and all buffers (the parts of a model that training can change), CPU, contiguous."""
    parameters = dict(model.named_parameters())
    state = {
        name: tensor
        for name, tensor in model.state_dict(keep_vars=True).items()
        if name not in parameters or parameters[name].requires_grad
    }  # persistent buffers (not parameters) + trainable parameters
    return {name: tensor.detach().cpu().contiguous().clone() for name, tensor in state.items()}


def load_trainable_state_dict(model: torch.nn.Module, path: str | os.PathLike) -> None:
    """Load a `trainable_state_dict` snapshot back; every snapshot key must exist in the model."""
    from safetensors.torch import load_file

    state = load_file(str(Path(path) / BEST_WEIGHTS_FILE))
    missing_in_model = [name for name in state if name not in dict(model.state_dict())]
    if missing_in_model:
        raise ValueError(f"best-model snapshot {path} has weights this model lacks: {missing_in_model[:5]}")
    model.load_state_dict(state, strict=False)
