"""The user's own images with a label table: `csv`, `jsonl`, or a `folder` holding `metadata.csv`/`metadata.jsonl`.

Table columns (names configurable):

* `path` (or `file_name`, `image`, `filepath`, `file`): image path, relative to the table's folder or `--image-dir`,
* `labels`: positive labels, a list (JSON list in a CSV cell) or a `|`-separated string,
* optional `negative_labels` (same forms; its presence makes the dataset partially annotated), `image_id`,
  `split` (train / validation / test), `caption`.

`folder` follows the Hugging Face ImageFolder convention: `ROOT/metadata.csv` (or `.jsonl`) with paths relative to
ROOT, or one such table per split folder (`ROOT/train/`, `ROOT/validation/` or `ROOT/val/`, `ROOT/test/`).

Without a `split` column (or folder) a seeded `--test-fraction` of the images becomes `test`; `validation` is held out
of `train` by the driver unless the table defines it. With `--label-file`, labels outside the list are an error that
lists them (or are appended with `--allow-new-labels`); without one the label list is the sorted set of labels used.
"""

from __future__ import annotations

import argparse
import csv
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ovmlc.data.converters.base import (
    Converter,
    SourceFormatError,
    check_known_labels,
    parse_label_names,
    read_label_list,
    unique_in_order,
)
from ovmlc.data.prepare import SourcePlan, SourceRecord
from ovmlc.data.schema import ANNOTATION_FULL, ANNOTATION_PARTIAL
from ovmlc.data.splits import holdout_ids

PATH_COLUMNS = ("path", "file_name", "image", "filepath", "file")
SPLIT_ALIASES = {
    "train": "train",
    "training": "train",
    "validation": "validation",
    "val": "validation",
    "valid": "validation",
    "dev": "validation",
    "test": "test",
    "testing": "test",
}
csv.field_size_limit(1 << 24)


@dataclass
class TableRow:
    image_id: str
    image: Any
    labels: list[str]
    negative_labels: list[str] | None
    split: str | None
    caption: str | None = None
    where: str = ""


def parse_label_cell(value: Any, where: str) -> list[str]:
    """A labels cell: None/empty -> [], a list, a JSON list string, or a `|`-separated string."""
    if value is None:
        return []
    if isinstance(value, float) and value != value:  # NaN from a spreadsheet export
        return []
    if isinstance(value, (list, tuple)):
        items = value
    elif isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            try:
                items = json.loads(text)
            except json.JSONDecodeError as error:
                raise SourceFormatError(
                    f"{where}: labels {text[:80]!r} look like JSON but do not parse ({error})"
                ) from error
            if not isinstance(items, list):
                raise SourceFormatError(f"{where}: labels must be a list, got {text[:80]!r}")
        else:
            items = text.split("|")
    else:
        raise SourceFormatError(f"{where}: labels must be a list or a '|'-separated string, got {type(value).__name__}")
    return unique_in_order(str(item).strip() for item in items if str(item).strip())


def normalize_split(value: Any, where: str) -> str | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    split = SPLIT_ALIASES.get(str(value).strip().lower())
    if split is None:
        raise SourceFormatError(f"{where}: unknown split {value!r} (use train, validation or test)")
    return split


def resolve_label_space(
    rows: Sequence[TableRow],
    *,
    label_file: str | None,
    allow_new_labels: bool,
    unseen_labels: str | None,
    where: str,
    base_labels: Sequence[str] | None = None,
) -> tuple[list[str], list[str], list[str], list[str]]:
    """(label names, seen, unseen, notes) of a user table; errors list unknown labels before anything is written."""
    used = unique_in_order(label for row in rows for label in list(row.labels) + list(row.negative_labels or ()))
    notes: list[str] = []
    if label_file:
        label_names = unique_in_order(read_label_list(label_file))
        unknown = [label for label in used if label not in set(label_names)]
        if unknown and not allow_new_labels:
            check_known_labels(
                used, label_names, f"{where} (label list {label_file}; pass --allow-new-labels to add them)"
            )
        if unknown:
            label_names += unknown
            notes.append(f"{len(unknown)} label(s) not in {label_file} were appended: {unknown[:20]}")
    elif base_labels is not None:
        label_names = list(base_labels)
        new = [label for label in used if label not in set(label_names)]
        if new and not allow_new_labels:
            check_known_labels(used, label_names, f"{where} (pass --allow-new-labels to add them)")
        label_names += new
    else:
        label_names = sorted(used)
    if not label_names:
        raise SourceFormatError(f"{where}: no labels at all (empty label column?)")
    unseen = unique_in_order(parse_label_names(unseen_labels))
    check_known_labels(unseen, label_names, f"--unseen-labels for {where}")
    seen = [label for label in label_names if label not in set(unseen)]
    return label_names, seen, unseen, notes


def split_rows(
    rows: Sequence[TableRow], *, test_fraction: float, seed: int, where: str
) -> tuple[dict[str, list[SourceRecord]], list[str]]:
    """Records per split: the table's own split column where given, else a seeded test hold-out."""
    duplicates = [image_id for image_id, count in _counts(row.image_id for row in rows).items() if count > 1]
    if duplicates:
        raise SourceFormatError(f"{where}: {len(duplicates)} duplicated image_id(s): {duplicates[:10]}")
    notes: list[str] = []
    has_test = any(row.split == "test" for row in rows)
    unsplit = [row.image_id for row in rows if row.split is None]
    test_ids: set[str] = set()
    if not has_test and unsplit:
        if not 0.0 < test_fraction < 1.0:
            raise SourceFormatError(
                f"{where}: no test split in the table and --test-fraction {test_fraction} is not in (0, 1)"
            )
        test_ids = holdout_ids(unsplit, test_fraction, seed, "test")
        notes.append(f"no test split given: held out {len(test_ids)} of {len(unsplit)} image(s) as test (seed {seed})")
    splits: dict[str, list[SourceRecord]] = {"train": [], "test": []}
    for row in rows:
        split = row.split or ("test" if row.image_id in test_ids else "train")
        record = SourceRecord(
            image_id=row.image_id,
            image=row.image,
            labels=row.labels,
            negative_labels=row.negative_labels,
            caption=row.caption,
        )
        splits.setdefault(split, []).append(record)
    return splits, notes


def _counts(values: Iterable[str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for value in values:
        counts[value] = counts.get(value, 0) + 1
    return counts


def _read_table(path: Path) -> list[tuple[str, dict[str, Any]]]:
    """(where, row dict) for each row of a CSV or JSONL table."""
    if not path.is_file():
        raise SourceFormatError(f"label table {path} does not exist")
    rows = []
    if path.suffix.lower() in (".jsonl", ".json", ".ndjson"):
        for line_number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as error:
                raise SourceFormatError(f"{path}, line {line_number}: invalid JSON ({error})") from error
            if not isinstance(row, dict):
                raise SourceFormatError(f"{path}, line {line_number}: each line must be a JSON object")
            rows.append((f"{path}, line {line_number}", row))
    else:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            if not reader.fieldnames:
                raise SourceFormatError(f"{path}: empty CSV (no header row)")
            for line_number, row in enumerate(reader, start=2):
                rows.append((f"{path}, line {line_number}", row))
    return rows


class TableConverter(Converter):
    """`csv` / `jsonl` (ROOT is the table file) and `folder` (ROOT holds `metadata.csv|jsonl`, maybe per split)."""

    version = "1"

    def __init__(self, name: str, help: str):
        self.name = name
        self.help = help

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        add_label_arguments(parser)
        parser.add_argument("--image-dir", help="folder image paths are relative to (default: the table's folder)")
        parser.add_argument("--path-column", help=f"image path column (default: the first of {list(PATH_COLUMNS)})")
        parser.add_argument("--label-column", default="labels", help="positive labels column (default: labels)")
        parser.add_argument(
            "--negative-label-column",
            default="negative_labels",
            help="explicit negatives column, if present (default: negative_labels); makes the data partial",
        )

    def _tables(self, root: Path) -> list[tuple[Path, str | None]]:
        """(table file, split it defines or None) for this source kind."""
        if self.name != "folder":
            return [(root, None)]
        if not root.is_dir():
            raise SourceFormatError(f"folder source {root} is not a folder")

        def table_in(folder: Path) -> Path | None:
            for name in ("metadata.csv", "metadata.jsonl"):
                if (folder / name).is_file():
                    return folder / name
            return None

        top = table_in(root)
        if top is not None:
            return [(top, None)]
        tables = []
        for folder_name, split in SPLIT_ALIASES.items():
            table = table_in(root / folder_name)
            if table is not None and (root / folder_name).is_dir():
                tables.append((table, split))
        if not tables:
            raise SourceFormatError(
                f"{root}: no metadata.csv or metadata.jsonl, neither in the folder nor in train/, validation/, test/"
            )
        return tables

    def plan(self, args: argparse.Namespace) -> SourcePlan:
        root = Path(args.root).expanduser()
        rows: list[TableRow] = []
        for table_path, table_split in self._tables(root):
            image_dir = Path(args.image_dir).expanduser() if args.image_dir else table_path.parent
            for where, raw in _read_table(table_path):
                path_column = args.path_column or next((c for c in PATH_COLUMNS if c in raw), None)
                if path_column is None or not raw.get(path_column):
                    raise SourceFormatError(f"{where}: no image path (columns: {sorted(raw)}; use --path-column)")
                if args.label_column not in raw:
                    raise SourceFormatError(f"{where}: no {args.label_column!r} column (columns: {sorted(raw)})")
                relative = str(raw[path_column]).strip()
                negatives = None
                if args.negative_label_column in raw:
                    negatives = parse_label_cell(raw[args.negative_label_column], where)
                split = normalize_split(raw.get("split"), where) or table_split
                rows.append(
                    TableRow(
                        image_id=str(raw.get("image_id") or relative),
                        image=image_dir / relative,
                        labels=parse_label_cell(raw[args.label_column], where),
                        negative_labels=negatives,
                        split=split,
                        caption=raw.get("caption"),
                        where=where,
                    )
                )
        if not rows:
            raise SourceFormatError(f"{root}: the label table has no rows")
        return plan_from_rows(
            self,
            rows,
            args,
            where=str(root),
            description=f"User images with labels from {root.name}.",
            root=root if root.is_dir() else root.parent,
        )


def add_label_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags shared by the user-data sources (tables, Hub/parquet)."""
    parser.add_argument(
        "--label-file", help="label list (one per line, or JSON): fixes the label order and checks names"
    )
    parser.add_argument("--allow-new-labels", action="store_true", help="append labels missing from --label-file")
    parser.add_argument("--unseen-labels", help="unseen labels: comma-separated names or a label file")
    parser.add_argument(
        "--test-fraction", type=float, default=0.2, help="seeded test hold-out when the data has no test split (0.2)"
    )


def plan_from_rows(
    converter: Converter,
    rows: Sequence[TableRow],
    args: argparse.Namespace,
    *,
    where: str,
    description: str,
    base_labels: Sequence[str] | None = None,
    root: str | Path | None = None,
) -> SourcePlan:
    """Label space + splits of user rows -> `SourcePlan` (shared by the table and Hub/parquet sources)."""
    label_names, seen, unseen, notes = resolve_label_space(
        rows,
        label_file=args.label_file,
        allow_new_labels=args.allow_new_labels,
        unseen_labels=args.unseen_labels,
        where=where,
        base_labels=base_labels,
    )
    splits, split_notes = split_rows(rows, test_fraction=args.test_fraction, seed=args.seed, where=where)
    partial = any(row.negative_labels is not None for row in rows)
    if partial:
        for split_records in splits.values():
            for record in split_records:
                if record.negative_labels is None:
                    record.negative_labels = []
    unseen_in_train = sum(1 for record in splits["train"] if set(record.labels) & set(unseen))
    if unseen_in_train:
        notes.append(f"{unseen_in_train} training image(s) have unseen positives; train keeps only their seen labels")
    return SourcePlan(
        source=converter.name,
        converter_version=converter.version,
        label_names=label_names,
        seen_labels=seen,
        unseen_labels=unseen,
        annotation=ANNOTATION_PARTIAL if partial else ANNOTATION_FULL,
        title=f"{Path(where).name or where} (ovmlc canonical)",
        description=description,
        splits=splits,
        has_captions=any(row.caption for row in rows),
        notes=notes + split_notes,
        root=root,
    )
