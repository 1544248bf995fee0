"""Any Hub dataset id or local parquet dataset with an image column and a label column -> canonical.

`--root` is a Hub id (`owner/name`, with `--config` / `--revision`), a local folder that `datasets.load_dataset` reads
(parquet shards, with or without a README), or a single `.parquet` file (taken as the train split).

The label column (`--label-column`, default `labels`) may be `List(ClassLabel)`, a single `ClassLabel`, a list of
strings, a string (`|`-separated allowed), or integers together with `--label-file` (index -> name). Splits named
train / validation (val, valid, dev) / test are used; without a test split a seeded `--test-fraction` is held out.
"""

from __future__ import annotations

import argparse
from functools import partial
from pathlib import Path
from typing import Any

from ovmlc.data.converters.base import Converter, SourceFormatError, read_label_list
from ovmlc.data.converters.tables import SPLIT_ALIASES, TableRow, add_label_arguments, parse_label_cell, plan_from_rows
from ovmlc.data.prepare import SourcePlan


def _load(root: str, config: str | None, revision: str | None):
    from datasets import DatasetDict, load_dataset

    path = Path(root).expanduser()
    try:
        if path.is_file():
            if path.suffix != ".parquet":
                raise SourceFormatError(f"{path}: a single file source must be a .parquet file")
            loaded = load_dataset("parquet", data_files={"train": str(path)})
        elif path.is_dir():
            loaded = load_dataset(str(path), name=config)
        else:
            loaded = load_dataset(root, name=config, revision=revision)
    except SourceFormatError:
        raise
    except Exception as error:  # noqa: BLE001 - hub/offline/format errors: name the source
        raise SourceFormatError(f"{root}: could not load the dataset ({type(error).__name__}: {error})") from error
    if not isinstance(loaded, DatasetDict):
        raise SourceFormatError(f"{root}: expected a dataset with named splits")
    return loaded, (path if path.is_dir() else path.parent if path.is_file() else None)


def _label_decoder(feature: Any, label_file_names: list[str] | None, column: str, where: str):
    """A function cell -> list of label names, and the feature's own label order (if it has one)."""
    from datasets import ClassLabel, List, Sequence, Value

    inner = feature.feature if isinstance(feature, (List, Sequence)) else feature
    if isinstance(inner, ClassLabel):
        names = list(inner.names)

        def decode(value: Any, row_where: str) -> list[str]:
            values = value if isinstance(value, (list, tuple)) else [value]
            return [names[int(v)] for v in values if v is not None and int(v) >= 0]

        return decode, names
    if isinstance(inner, Value) and inner.dtype.startswith(("int", "uint")):
        if not label_file_names:
            raise SourceFormatError(
                f"{where}: column {column!r} holds integers without ClassLabel names; pass --label-file (index -> name)"
            )

        def decode_ints(value: Any, row_where: str) -> list[str]:
            values = value if isinstance(value, (list, tuple)) else [value]
            try:
                return [label_file_names[int(v)] for v in values if v is not None]
            except IndexError:
                raise SourceFormatError(
                    f"{row_where}: label index out of range of the {len(label_file_names)}-name --label-file"
                ) from None

        return decode_ints, None
    if isinstance(inner, Value) and inner.dtype in ("string", "large_string"):
        return parse_label_cell, None
    raise SourceFormatError(f"{where}: unsupported label column {column!r} of type {feature!r}")


def _column_values(dataset: Any, column: str) -> list[Any]:
    """One column as Python values (ClassLabel ids stay ints), without touching the image column."""
    return dataset.select_columns([column]).to_dict()[column]


def _fetch_image(dataset: Any, index: int, column: str, base_dir: Path | None) -> Any:
    value = dataset[index][column]
    if isinstance(value, str):
        path = Path(value)
        return path if path.is_absolute() or base_dir is None else base_dir / path
    return value


class HubConverter(Converter):
    version = "1"

    def __init__(self, name: str, help: str):
        self.name = name
        self.help = help

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        add_label_arguments(parser)
        parser.add_argument("--label-column", default="labels", help="label column (default: labels)")
        parser.add_argument("--negative-label-column", help="explicit negatives column (makes the data partial)")
        parser.add_argument("--image-column", default="image", help="image column (Image feature or path strings)")
        parser.add_argument("--image-id-column", help="image id column (default: <split>/<row index>)")
        parser.add_argument("--caption-column", help="optional caption column")
        parser.add_argument("--config", help="dataset config name (Hub)")
        parser.add_argument("--revision", help="dataset revision (Hub)")

    def plan(self, args: argparse.Namespace) -> SourcePlan:
        from datasets import Image

        loaded, base_dir = _load(str(args.root), args.config, args.revision)
        where = str(args.root)
        splits = {}
        ignored = []
        for split_name, dataset in loaded.items():
            canonical = SPLIT_ALIASES.get(split_name.lower())
            if canonical is None or canonical in splits:
                ignored.append(split_name)
                continue
            splits[canonical] = dataset
        if "train" not in splits:
            raise SourceFormatError(f"{where}: no train split (splits: {list(loaded)})")
        label_file_names = read_label_list(args.label_file) if args.label_file else None
        rows: list[TableRow] = []
        base_labels = None
        for split, dataset in splits.items():
            split_where = f"{where} [{split}]"
            for column in [args.label_column, args.image_column] + [
                c for c in (args.negative_label_column, args.image_id_column, args.caption_column) if c
            ]:
                if column not in dataset.features:
                    raise SourceFormatError(f"{split_where}: no column {column!r} (columns: {list(dataset.features)})")
            decode, feature_names = _label_decoder(
                dataset.features[args.label_column], label_file_names, args.label_column, split_where
            )
            if feature_names is not None and base_labels is None and not args.label_file:
                base_labels = feature_names
            decode_negative = None
            if args.negative_label_column:
                decode_negative, _ = _label_decoder(
                    dataset.features[args.negative_label_column],
                    label_file_names,
                    args.negative_label_column,
                    split_where,
                )
            if isinstance(dataset.features[args.image_column], Image):
                dataset = dataset.cast_column(args.image_column, Image(decode=False))
            image_source = dataset.select_columns([args.image_column])
            labels = _column_values(dataset, args.label_column)
            negatives = _column_values(dataset, args.negative_label_column) if args.negative_label_column else None
            image_ids = _column_values(dataset, args.image_id_column) if args.image_id_column else None
            captions = _column_values(dataset, args.caption_column) if args.caption_column else None
            for index in range(len(dataset)):
                row_where = f"{split_where}, row {index}"
                rows.append(
                    TableRow(
                        image_id=str(image_ids[index]) if image_ids is not None else f"{split}/{index}",
                        image=partial(_fetch_image, image_source, index, args.image_column, base_dir),
                        labels=decode(labels[index], row_where),
                        negative_labels=decode_negative(negatives[index], row_where) if negatives is not None else None,
                        split=split,
                        caption=captions[index] if captions is not None else None,
                        where=row_where,
                    )
                )
        plan = plan_from_rows(
            self,
            rows,
            args,
            where=where,
            description=f"Converted from the dataset {Path(where).name if base_dir is not None else where}.",
            base_labels=base_labels,
            root=base_dir,
        )
        if ignored:
            plan.notes.append(f"ignored split(s) {ignored} (only train / validation / test are used)")
        return plan
