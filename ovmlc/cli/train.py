"""`ovmlc train --config hub_configs/<recipe>.yaml [key=value ...]`: train (or evaluate) a method from a recipe.

The engine is `ovmlc.training.trainer`; under a multi-process launcher run `accelerate launch -m ovmlc.train
--config ...` (`ovmlc/train.py` calls `main` below).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence


def add_train_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--config", required=True, metavar="RECIPE.yaml", help="training recipe (see hub_configs/)")
    parser.add_argument(
        "overrides", nargs="*", metavar="KEY=VALUE", help="recipe overrides with dotted keys, e.g. training.epochs=2"
    )
    parser.add_argument(
        "--resume",
        nargs="?",
        const="latest",
        default=None,
        metavar="CHECKPOINT",
        help="continue from the newest checkpoint in output_dir/checkpoints (or the one given); starts fresh if none",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an earlier run in output_dir")
    return parser


def register(subparsers) -> None:
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
    from ..training.trainer import run_from_args

    return run_from_args(args)


def main(argv: Sequence[str] | None = None) -> int:
    """`accelerate launch -m ovmlc.train --config ...` (the same arguments as `ovmlc train`)."""
    from . import VERBOSE_HELP, configure_transformers_output

    parser = argparse.ArgumentParser(
        prog="ovmlc train", description="Train (or evaluate) an ovmlc method from a recipe."
    )
    add_train_arguments(parser)
    parser.add_argument("-v", "--verbose", action="store_true", help=VERBOSE_HELP)
    args = parser.parse_args(argv)
    configure_transformers_output(args.verbose)
    return run(args)
