"""Entry point of `accelerate launch -m ovmlc.train --config RECIPE.yaml [key=value ...]` (same as `ovmlc train`).

The training engine lives in `ovmlc.training.trainer`; its public names are re-exported here for one release.
"""

from __future__ import annotations

import sys

from .cli.train import add_train_arguments, main
from .training.trainer import (
    LabelSpace,
    Trainer,
    TrainerState,
    TrainingError,
    build_schedule_lambda,
    run_from_args,
    train,
)

__all__ = [
    "LabelSpace",
    "Trainer",
    "TrainerState",
    "TrainingError",
    "add_train_arguments",
    "build_schedule_lambda",
    "main",
    "run_from_args",
    "train",
]

if __name__ == "__main__":
    sys.exit(main())
