"""The `ovmlc` console script (also `python -m ovmlc`): one subcommand per module of this package.

Parsing is light: the command modules import torch / transformers only inside their `run` functions, so `ovmlc
--help` and `ovmlc <command> --help` return at once. Unless `-v` is given, transformers' progress bars (weights
loading, shard writing) are hidden.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from .._version import __version__

# Each module defines `register(subparsers)`; the parser it adds sets `func(args) -> int`.
COMMANDS = [
    "ovmlc.cli.predict",
    "ovmlc.cli.pretrain_vlp",
    "ovmlc.cli.evaluate",
    "ovmlc.cli.data",
    "ovmlc.cli.train",
    "ovmlc.cli.push",
    "ovmlc.cli.quickstart",
    "ovmlc.cli.export",
]
VERBOSE_HELP = "show transformers' progress bars (weights loading, shard writing)"


def positional_words(argv: list[str] | None) -> list[str] | None:
    """The non-option words of a command line (`ovmlc -v data prepare coco --root x` -> data, prepare, coco, x)."""
    return None if argv is None else [word for word in argv if not word.startswith("-")]


def command_requested(subparsers, *words: str) -> bool:
    """Whether the command line being parsed starts with these words (always True when it is not known): commands
    whose arguments are costly to describe (`data prepare <source>`: every converter) build them only then."""
    positional = getattr(subparsers, "ovmlc_positional", None)
    return positional is None or positional[: len(words)] == list(words)


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The full parser; given the command line about to be parsed, only what it needs is built in detail."""
    parser = argparse.ArgumentParser(
        prog="ovmlc", description="Open-vocabulary multi-label image classification on the Hugging Face stack."
    )
    parser.add_argument("--version", action="version", version=f"ovmlc {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help=VERBOSE_HELP)
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    subparsers.ovmlc_positional = positional_words(argv)
    for module_name in COMMANDS:
        importlib.import_module(module_name).register(subparsers)
    for subparser in subparsers.choices.values():  # `-v` after the command works too
        subparser.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help=VERBOSE_HELP)
    return parser


def configure_transformers_output(verbose: bool) -> None:
    """transformers' tqdm bars ("Loading weights", "Writing model shards"): shown only when `verbose`. Applied as soon
    as transformers loads (the commands import it lazily)."""
    from .. import _registration

    def apply() -> None:
        from transformers.utils import logging

        (logging.enable_progress_bar if verbose else logging.disable_progress_bar)()

    _registration.when_imported("cli-progress-bars", ("transformers.utils.logging",), apply)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser(argv).parse_args(argv)
    configure_transformers_output(args.verbose)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
