"""Writing and reading canonical datasets: parquet shards + dataset card in one self-contained folder.

The folder layout is what `push_to_hub` produces, so the same folder loads with `datasets.load_dataset(dir)`, uploads
as-is to the Hub (`ovmlc push-dataset`, which keeps the card), and loads back with `load_dataset(repo_id)`:

    out_dir/
      README.md                          card: configs/data_files, dataset_info, ovmlc block
      data/train-00000-of-00002.parquet  images embedded as bytes
      data/validation-00000-of-00001.parquet
      data/test-00000-of-00001.parquet

Writes go to a hidden temporary folder next to `out_dir` that replaces it only once everything is written, so an
interrupted conversion never leaves a half-written dataset behind.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from datasets import Dataset, DatasetDict, Features, load_dataset
from datasets.table import embed_table_storage

from ovmlc.data.card import (
    CARD_FILENAME,
    DATA_DIR,
    build_card_metadata,
    looks_like_local_path,
    render_card,
    render_card_body,
)
from ovmlc.data.schema import (
    ANNOTATIONS,
    CANONICAL_FORMAT_VERSION,
    SPLITS,
    CanonicalSchemaError,
    validate_canonical_features,
)

DEFAULT_MAX_SHARD_BYTES = 500 * 1024**2  # the Hub's default shard size
ROW_GROUP_BYTES = 64 * 1024**2
ROW_GROUP_MAX_ROWS = 1000


class ShardedParquetWriter:
    """Writes one split as parquet shards of at most `max_shard_bytes`, buffering rows into row groups.

    Memory stays bounded by one row group, whatever the split size.
    """

    def __init__(self, directory: Path, split: str, features: Features, max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES):
        self.directory = directory
        self.split = split
        self.features = features
        self.schema = features.arrow_schema  # carries the `huggingface` metadata, so ClassLabel names round-trip
        self.max_shard_bytes = max_shard_bytes
        self._row_group_bytes = min(ROW_GROUP_BYTES, max_shard_bytes)
        self.num_rows = 0
        self.num_bytes = 0  # Arrow bytes written, as `dataset_info.splits[].num_bytes` reports them
        self.num_positive_labels = 0
        self._shard_paths: list[Path] = []
        self._writer: pq.ParquetWriter | None = None
        self._shard_bytes = 0
        self._buffer: dict[str, list[Any]] = {name: [] for name in self.schema.names}
        self._buffer_rows = 0
        self._buffer_bytes = 0

    def _open_shard(self) -> None:
        path = self.directory / f"{self.split}-{len(self._shard_paths):05d}.parquet.tmp"
        self._shard_paths.append(path)
        self._writer = pq.ParquetWriter(path, self.schema)
        self._shard_bytes = 0

    def _write(self, table: pa.Table) -> None:
        if self._writer is None or self._shard_bytes >= self.max_shard_bytes:
            if self._writer is not None:
                self._writer.close()
            self._open_shard()
        self._writer.write_table(table, row_group_size=max(1, table.num_rows))
        self._shard_bytes += table.nbytes
        self.num_bytes += table.nbytes

    def write_row(self, row: Mapping[str, Any]) -> None:
        """Append one row (a dict with every column of the schema; images as `{"bytes", "path"}`)."""
        for name in self.schema.names:
            self._buffer[name].append(row.get(name))
        image = row.get("image") or {}
        self._buffer_bytes += len(image.get("bytes") or b"") + 64
        self._buffer_rows += 1
        self.num_rows += 1
        self.num_positive_labels += len(row.get("labels") or ())
        if self._buffer_bytes >= self._row_group_bytes or self._buffer_rows >= ROW_GROUP_MAX_ROWS:
            self._flush()

    def write_table(self, table: pa.Table) -> None:
        """Append a table that already has the canonical storage types (e.g. a batch of an in-memory Dataset)."""
        self._flush()
        table = table.select(self.schema.names).cast(self.schema)
        self.num_rows += table.num_rows
        self.num_positive_labels += int(pc.sum(pc.list_value_length(table["labels"])).as_py() or 0)
        # Row groups of about `_row_group_bytes`, so shards split at the requested size.
        bytes_per_row = max(1, table.nbytes // max(1, table.num_rows))
        rows_per_group = max(1, min(ROW_GROUP_MAX_ROWS, self._row_group_bytes // bytes_per_row))
        for start in range(0, table.num_rows, rows_per_group):
            self._write(table.slice(start, rows_per_group))

    def _flush(self) -> None:
        if self._buffer_rows == 0:
            return
        table = pa.Table.from_pydict(self._buffer, schema=self.schema)
        self._write(table)
        self._buffer = {name: [] for name in self.schema.names}
        self._buffer_rows = 0
        self._buffer_bytes = 0

    def close(self) -> list[Path]:
        """Flush, close and rename the shards to `<split>-<i>-of-<n>.parquet`; returns the final paths.

        An empty split writes no shard (`datasets` cannot load a split without rows); the card leaves it out.
        """
        self._flush()
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        final_paths = []
        for index, path in enumerate(self._shard_paths):
            final = self.directory / f"{self.split}-{index:05d}-of-{len(self._shard_paths):05d}.parquet"
            path.rename(final)
            final_paths.append(final)
        return final_paths


def _is_ovmlc_dataset_folder(path: Path) -> bool:
    readme = path / CARD_FILENAME
    return readme.is_file() and "\novmlc:" in readme.read_text(encoding="utf-8", errors="replace")


def check_output_dir(out_dir: str | os.PathLike, overwrite: bool) -> Path:
    """Refuse to clobber a non-empty folder unless `overwrite`, and never one that is not an ovmlc dataset."""
    out_dir = Path(out_dir).expanduser()
    if out_dir.exists() and not out_dir.is_dir():
        raise FileExistsError(f"{out_dir}: exists and is not a folder")
    if out_dir.is_dir() and any(out_dir.iterdir()):
        if not overwrite:
            raise FileExistsError(f"{out_dir}: folder is not empty (pass --overwrite to replace a previous conversion)")
        if not _is_ovmlc_dataset_folder(out_dir):
            raise FileExistsError(
                f"{out_dir}: refusing to overwrite a non-empty folder that is not an ovmlc dataset (no README.md with "
                "an 'ovmlc:' block); choose an empty or new --out folder"
            )
    return out_dir


class CanonicalDatasetWriter:
    """Writes the splits of one canonical dataset into a temporary folder, then moves it into place with its card."""

    def __init__(
        self,
        out_dir: str | os.PathLike,
        features: Features,
        *,
        overwrite: bool = False,
        max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES,
    ):
        self.out_dir = check_output_dir(out_dir, overwrite)
        validate_canonical_features(features)
        self.features = features
        self.max_shard_bytes = max_shard_bytes
        self.out_dir.parent.mkdir(parents=True, exist_ok=True)
        self.tmp_dir = self.out_dir.parent / f".{self.out_dir.name}.ovmlc-tmp-{uuid.uuid4().hex[:8]}"
        (self.tmp_dir / DATA_DIR).mkdir(parents=True)
        self.writers: dict[str, ShardedParquetWriter] = {}

    def split(self, name: str) -> ShardedParquetWriter:
        if name not in self.writers:
            self.writers[name] = ShardedParquetWriter(
                self.tmp_dir / DATA_DIR, name, self.features, max_shard_bytes=self.max_shard_bytes
            )
        return self.writers[name]

    def abort(self) -> None:
        for writer in self.writers.values():
            if writer._writer is not None:
                writer._writer.close()
        shutil.rmtree(self.tmp_dir, ignore_errors=True)

    def finalize(
        self,
        *,
        ovmlc_block: Mapping[str, Any],
        title: str,
        description: str,
        notes: Sequence[str] = (),
        pretty_name: str | None = None,
        license_name: str | None = None,
    ) -> Path:
        for split in SPLITS:
            self.split(split)  # so an empty canonical split is reported, not silently absent
        ordered = list(SPLITS) + [split for split in self.writers if split not in SPLITS]
        for split in ordered:
            self.writers[split].close()
        written = [split for split in ordered if self.writers[split].num_rows > 0]
        if not written:
            raise CanonicalSchemaError("no split has any image; nothing to write")
        split_sizes = {split: self.writers[split].num_rows for split in written}
        notes = list(notes) + [
            f"split {split!r} has no image and is left out" for split in ordered if split not in written
        ]
        positives = {split: self.writers[split].num_positive_labels for split in written}
        metadata = build_card_metadata(
            features=self.features,
            split_sizes=split_sizes,
            split_num_bytes={split: self.writers[split].num_bytes for split in written},
            ovmlc_block=ovmlc_block,
            pretty_name=pretty_name,
            license_name=license_name,
        )
        body = render_card_body(
            title=title,
            description=description,
            ovmlc_block=ovmlc_block,
            split_sizes=split_sizes,
            split_positive_counts=positives,
            notes=notes,
        )
        (self.tmp_dir / CARD_FILENAME).write_text(render_card(metadata, body), encoding="utf-8")
        if self.out_dir.exists():
            shutil.rmtree(self.out_dir)  # checked in check_output_dir: empty, or a previous ovmlc dataset
        os.replace(self.tmp_dir, self.out_dir)
        return self.out_dir

    def __enter__(self) -> CanonicalDatasetWriter:
        return self

    def __exit__(self, exc_type, exc, traceback) -> None:
        if exc_type is not None:
            self.abort()


def build_ovmlc_block(
    *,
    source: str,
    converter_version: str,
    annotation: str,
    label_names: Sequence[str],
    seen_labels: Sequence[str],
    unseen_labels: Sequence[str],
    train_label_set: Sequence[str] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Validate a label split against the dataset's labels and build the card's `ovmlc:` block."""
    if annotation not in ANNOTATIONS:
        raise ValueError(f"annotation must be one of {ANNOTATIONS}, got {annotation!r}")
    label_names, seen, unseen = list(label_names), list(seen_labels), list(unseen_labels)
    known = set(label_names)
    unknown = [name for name in seen + unseen if name not in known]
    if unknown:
        raise CanonicalSchemaError(f"seen/unseen label(s) not in the dataset's labels: {unknown[:20]}")
    both = sorted(set(seen) & set(unseen))
    if both:
        raise CanonicalSchemaError(f"label(s) both seen and unseen: {both[:20]}")
    uncovered = [name for name in label_names if name not in set(seen) | set(unseen)]
    if uncovered:
        raise CanonicalSchemaError(f"label(s) neither seen nor unseen: {uncovered[:20]}")
    train_labels = list(train_label_set) if train_label_set is not None else seen
    outside = [name for name in train_labels if name not in set(seen)]
    if outside:
        raise CanonicalSchemaError(f"train_label_set must be a subset of the seen labels; not seen: {outside[:20]}")
    block: dict[str, Any] = {
        "format_version": CANONICAL_FORMAT_VERSION,
        "source": source,
        "converter_version": str(converter_version),
        "annotation": annotation,
        "seen_labels": seen,
        "unseen_labels": unseen,
        "train_label_set": train_labels,
    }
    block.update(extra or {})
    return block


def save_canonical(
    dataset_dict: DatasetDict | Mapping[str, Dataset],
    out_dir: str | os.PathLike,
    *,
    source: str,
    converter_version: str,
    seen_labels: Sequence[str],
    unseen_labels: Sequence[str],
    annotation: str,
    description: str,
    train_label_set: Sequence[str] | None = None,
    extra_metadata: Mapping[str, Any] | None = None,
    notes: Sequence[str] = (),
    title: str | None = None,
    pretty_name: str | None = None,
    license_name: str | None = None,
    overwrite: bool = False,
    max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES,
) -> Path:
    """Write an in-memory canonical `DatasetDict` (train/validation/test) as parquet shards + card into `out_dir`.

    Images given as file paths are embedded as bytes. `annotation` is "full" (no `negative_labels` column: every
    non-positive is negative) or "partial" (a `negative_labels` column; the rest is unannotated). Returns `out_dir`.
    """
    missing = [split for split in SPLITS if split not in dataset_dict]
    if missing:
        raise CanonicalSchemaError(f"dataset_dict needs the splits {list(SPLITS)}; missing {missing}")
    features = dataset_dict["train"].features
    label_names = validate_canonical_features(features, "train")
    for split, dataset in dataset_dict.items():
        validate_canonical_features(dataset.features, split)
        if dataset.features != features:
            raise CanonicalSchemaError(f"split {split!r} has different features than 'train': {dataset.features}")
    has_negatives = "negative_labels" in features
    if annotation == "partial" and not has_negatives:
        raise CanonicalSchemaError("annotation='partial' needs a 'negative_labels' column (explicit negatives)")
    if annotation == "full" and has_negatives:
        raise CanonicalSchemaError("annotation='full' must not have a 'negative_labels' column (use 'partial')")
    block = build_ovmlc_block(
        source=source,
        converter_version=converter_version,
        annotation=annotation,
        label_names=label_names,
        seen_labels=seen_labels,
        unseen_labels=unseen_labels,
        train_label_set=train_label_set,
        extra=extra_metadata,
    )
    with CanonicalDatasetWriter(out_dir, features, overwrite=overwrite, max_shard_bytes=max_shard_bytes) as writer:
        for split, dataset in dataset_dict.items():
            split_writer = writer.split(split)
            for batch in dataset.with_format("arrow").iter(batch_size=256):
                split_writer.write_table(embed_table_storage(batch))  # file paths -> bytes
        return writer.finalize(
            ovmlc_block=block,
            title=title or f"{source} (ovmlc canonical multi-label dataset)",
            description=description,
            notes=notes,
            pretty_name=pretty_name,
            license_name=license_name,
        )


def load_canonical(path_or_id: str | os.PathLike, split: str | None = None) -> DatasetDict | Dataset:
    """Load a canonical dataset from a local folder or a Hub dataset id (all splits, or one with `split=`)."""
    path = Path(path_or_id).expanduser()
    if path.exists():
        if not path.is_dir():
            raise NotADirectoryError(f"{path}: a canonical dataset is a folder (with README.md and data/)")
        if not (path / CARD_FILENAME).is_file() and not (path / DATA_DIR).is_dir():
            raise FileNotFoundError(f"{path}: not a canonical dataset folder (no {CARD_FILENAME} and no {DATA_DIR}/)")
        source = str(path)
    elif looks_like_local_path(str(path_or_id)):
        raise FileNotFoundError(f"{path}: no such canonical dataset folder")
    else:
        source = str(path_or_id)
    try:
        loaded = load_dataset(source, split=split)
    except Exception as error:  # noqa: BLE001 - surface hub/offline/parse errors with the dataset named
        if path.exists():
            raise ValueError(f"{path}: could not load the canonical dataset ({error})") from error
        raise FileNotFoundError(
            f"{source}: not a local folder, and it could not be loaded as a Hub dataset id ({error})"
        ) from error
    for name, dataset in [(split, loaded)] if split is not None else loaded.items():
        validate_canonical_features(dataset.features, f"{source} [{name}]")
    return loaded
