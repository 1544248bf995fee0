"""The `ovmlc` console script: one subcommand per module in `ovmlc/commands/`."""

from __future__ import annotations

import argparse
import importlib
import sys

# Each module defines `register(subparsers)`; the parser it adds sets `func(args) -> int`.
COMMANDS = [
    "ovmlc.commands.predict",
    "ovmlc.commands.pretrain_vlp",
    "ovmlc.commands.evaluate",
    "ovmlc.commands.data",
    "ovmlc.commands.train",
    "ovmlc.commands.push",
    "ovmlc.commands.quickstart",
    "ovmlc.commands.export",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ovmlc", description="Open-vocabulary multi-label image classification on the Hugging Face stack."
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    for module_name in COMMANDS:
        importlib.import_module(module_name).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
