"""What a converter is, and small helpers for reading raw releases with errors that name the file."""

from __future__ import annotations

import argparse
import json
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from pathlib import Path

from ovmlc.data.prepare import SourcePlan


class SourceFormatError(ValueError):
    """The raw source does not have the expected layout or content; the message names the file."""


class Converter(ABC):
    """Turns one kind of raw source into a `SourcePlan` for `ovmlc.data.prepare.prepare_canonical`.

    Subclasses set `name`, `help` and `version`, add their own flags in `add_arguments` and implement `plan`.
    `plan` must do all validation that can fail (unknown labels, missing annotation files) before returning, so
    a conversion never stops halfway through writing images.
    """

    name: str = ""
    help: str = ""
    version: str = "1"
    requires_root: bool = True  # False for sources that generate their data (no --root needed)

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:  # noqa: B027 - optional hook, no flags by default
        """Source-specific command-line flags (the common ones are added by `ovmlc data prepare`)."""

    @abstractmethod
    def plan(self, args: argparse.Namespace) -> SourcePlan:
        """Read the source's annotations (not its images) and describe the conversion."""


def find_file(root: Path, candidates: Sequence[str], what: str, override: str | Path | None = None) -> Path:
    """The first existing `root / candidate` (or `override` when given); the error lists every path tried."""
    if override:
        path = Path(override).expanduser()
        if not path.is_absolute() and not path.exists():
            path = root / path
        if not path.is_file():
            raise SourceFormatError(f"{what}: {path} does not exist")
        return path
    tried = [root / candidate for candidate in candidates]
    for path in tried:
        if path.is_file():
            return path
    raise SourceFormatError(f"{what} not found under {root}; tried: {', '.join(str(path) for path in tried)}")


def find_dir(root: Path, candidates: Sequence[str], what: str, override: str | Path | None = None) -> Path:
    """Like `find_file` for folders."""
    if override:
        path = Path(override).expanduser()
        if not path.is_dir():
            raise SourceFormatError(f"{what}: {path} is not a folder")
        return path
    tried = [root / candidate for candidate in candidates]
    for path in tried:
        if path.is_dir():
            return path
    raise SourceFormatError(f"{what} not found under {root}; tried: {', '.join(str(path) for path in tried)}")


def read_lines(path: Path) -> list[str]:
    """Stripped, non-empty lines of a text file (UTF-8; undecodable bytes replaced rather than fatal)."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as error:
        raise SourceFormatError(f"{path}: cannot read ({error})") from error
    return [line.strip() for line in text.splitlines() if line.strip()]


def read_label_list(path: str | Path) -> list[str]:
    """A label list file: one name per line, or JSON (a list, or a label set `{"labels": [...]}`)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise SourceFormatError(f"label file {path} does not exist")
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as error:
            raise SourceFormatError(f"{path}: invalid JSON ({error})") from error
        labels = data.get("labels") if isinstance(data, dict) else data
        if not isinstance(labels, list) or not all(isinstance(name, str) for name in labels):
            raise SourceFormatError(f"{path}: expected a JSON list of names or an object with a 'labels' list")
        return [name.strip() for name in labels]
    return read_lines(path)


def parse_label_names(value: str | None) -> list[str]:
    """A `--unseen-labels`-style value: a path to a label file, or a comma-separated list of names."""
    if not value:
        return []
    path = Path(value).expanduser()
    if path.is_file():
        return read_label_list(path)
    return [name.strip() for name in value.split(",") if name.strip()]


def unique_in_order(names: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(names))


def check_known_labels(names: Iterable[str], known: Sequence[str], what: str) -> None:
    """Raise listing every name that is not in `known`."""
    known_set = set(known)
    unknown = unique_in_order(name for name in names if name not in known_set)
    if unknown:
        shown = ", ".join(repr(name) for name in unknown[:30])
        raise SourceFormatError(
            f"{what}: {len(unknown)} unknown label(s): {shown}" + (" ..." if len(unknown) > 30 else "")
        )
