"""`ovmlc train --config hub_configs/<recipe>.yaml [key=value ...]`: train (or evaluate) a method from a recipe.

The engine is `ovmlc.train`; under a multi-process launcher run it as `accelerate launch -m ovmlc.train --config ...`.
"""

from __future__ import annotations

import argparse


def register(subparsers) -> None:
    from ..train import add_train_arguments

    parser = subparsers.add_parser(
        "train",
        help="train (or, with training.epochs: 0, only evaluate) a method from a recipe in hub_configs/",
        description=(
            "Run a training recipe (YAML, see docs/training.md): train on the dataset's train split, select on the "
            "validation split, calibrate thresholds, report on the test split and save the model. Override any "
            "recipe key with dotted KEY=VALUE arguments, e.g. training.epochs=2 optimizer.lr=3e-4. Multi-GPU: "
            "accelerate launch -m ovmlc.train --config RECIPE.yaml."
        ),
    )
    add_train_arguments(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..train import run_from_args

    return run_from_args(args)
