"""`TrainerState`: what a run has done so far, stored in every checkpoint (`ovmlc_trainer_state.json`) so that a
killed run continues exactly where it stopped."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..files import LEGACY_TRAINER_STATE_FILE, TRAINER_STATE_FILE


@dataclass
class TrainerState:
    global_step: int = 0
    epoch: int = 0  # the epoch in progress (or the next one, at an epoch boundary)
    batches_in_epoch: int = 0  # batches of `epoch` already trained on (the data position to resume from)
    total_steps: int = 0
    num_update_steps_per_epoch: int = 0
    best_metric: float | None = None
    best_step: int | None = None
    evaluations_without_improvement: int = 0
    stopped_early: bool = False
    finished: bool = False
    train_seconds: float = 0.0
    loss_sum: float = 0.0  # running sums since the last logged loss
    loss_count: int = 0
    epoch_loss_sum: float = 0.0
    epoch_loss_count: int = 0
    loss_history: list[list[float]] = field(default_factory=list)  # [[step, mean loss since last log, lr], ...]
    epoch_losses: list[float] = field(default_factory=list)
    epoch_seconds: list[float] = field(default_factory=list)  # training time per epoch (no validation/checkpoints)
    eval_history: list[dict[str, Any]] = field(default_factory=list)
    resumed_from: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainerState:
        known = {name: value for name, value in data.items() if name in cls.__dataclass_fields__}
        return cls(**known)


def state_file(folder: str | Path) -> Path | None:
    """The trainer state file of a checkpoint or output folder: `ovmlc_trainer_state.json`, or the name earlier
    versions wrote (`trainer_state.json`); None when the folder has neither."""
    for name in (TRAINER_STATE_FILE, LEGACY_TRAINER_STATE_FILE):
        path = Path(folder) / name
        if path.is_file():
            return path
    return None


def read_state_file(folder: str | Path) -> dict[str, Any]:
    """The JSON content of `state_file(folder)` (a mapping); FileNotFoundError / ValueError name the file."""
    path = state_file(folder)
    if path is None:
        raise FileNotFoundError(f"{folder}: no {TRAINER_STATE_FILE}")
    try:
        content = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{path}: not a JSON trainer state ({error})") from None
    if not isinstance(content, dict):
        raise ValueError(f"{path}: not a JSON trainer state (a {type(content).__name__}, not a mapping)")
    return content


__all__ = ["TrainerState", "read_state_file", "state_file"]
