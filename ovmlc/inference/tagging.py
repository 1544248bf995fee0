"""Tagging many images to a results file: input discovery, an overlapped input pipeline, streaming writers, resume,
and sharding across processes (`accelerate launch -m ovmlc.predict ...`).

Inputs (`discover_image_files`): image files, folders (recursive, image extensions), quoted glob patterns, and text
files of paths (`.txt` / `.lst`, one path per line, relative paths relative to the list file); or one split of a
canonical dataset (`dataset_sources`). Every image gets a key (its path as found, or the dataset's `image_id`) that
names its row in the output.

Output (`--output FILE`, format by extension): `.jsonl`, `.csv` or `.parquet`, one row per image with `image` (the
key), `labels` and `scores` (the kept labels, highest first), optionally `all_scores` (every label's sigmoid score, in
the order of `<stem>.run.json`'s `labels`) and `label_maps` (per kept label, the `[h][w]` map). Rows are written as
batches finish; images that cannot be read go to `<stem>.errors.jsonl` and the run goes on. `<stem>.run.json` records
what produced the file (model, labels, top-k, thresholds), so `--resume` refuses to mix two different runs.

Resume: JSONL/CSV rows are appended in one write per batch; after a kill a torn last line is cut off on resume, and
every key already in the file (or in the errors file) is skipped, so no image is written twice. Parquet rows go to
complete part files in `<output>.parts/` (each written under a temporary name and renamed), combined into the output
when the run ends. Survives a killed process, not a power cut (nothing is fsync'ed).

Several processes: each takes a contiguous slice of the inputs and writes `<stem>-0000K-of-0000N.<ext>` (resumed per
shard); at the end the main process appends the shards to the output in input order, skipping keys it already holds,
and removes them.
"""

from __future__ import annotations

import csv
import glob
import io
import json
import os
import re
import shutil
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..core.images import load_image
from ..core.outputs import rank_labels
from ..core.scoring import Scorer

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"})
LIST_FILE_EXTENSIONS = frozenset({".txt", ".lst"})
OUTPUT_FORMATS = {".jsonl": "jsonl", ".csv": "csv", ".parquet": "parquet"}
GLOB_CHARACTERS = frozenset("*?[")
KEY_COLUMN = "image"
PARQUET_ROWS_PER_PART = 1024
# What `--resume` compares between the run that wrote a file and the run that continues it.
RUN_FIELDS = ("model", "labels", "templates", "top_k", "thresholds", "all_scores", "label_maps", "format")


class TaggingError(ValueError):
    """Bad tagging input or output (the message names the file, folder, pattern or key)."""


# ----------------------------------------------------------------------------------------------------------------------
# Inputs
# ----------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ImageSource:
    """One image to tag: `key` names its output row; `item` is what `load_image` reads (a path, or the dataset's
    `{"bytes", "path"}` storage, fetched lazily by row index)."""

    key: str
    item: str | int


def _is_image_file(name: str) -> bool:
    return Path(name).suffix.lower() in IMAGE_EXTENSIONS


def _walk_folder(folder: str) -> list[str]:
    found = []
    for root, directories, files in os.walk(folder):
        directories[:] = sorted(name for name in directories if not name.startswith("."))
        found += [os.path.join(root, name) for name in sorted(files) if _is_image_file(name) and name[0] != "."]
    return found


def _read_list_file(path: str) -> list[str]:
    base = os.path.dirname(path)
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise TaggingError(f"{path}: cannot read the list of image paths ({error})") from None
    entries = [line.strip() for line in lines]
    # Entries are not checked here: a missing file is reported in the errors file, not fatal for a long list.
    return [
        entry if os.path.isabs(entry) else os.path.normpath(os.path.join(base, entry))
        for entry in entries
        if entry and not entry.startswith("#")
    ]


def discover_image_files(inputs: Sequence[str | os.PathLike]) -> list[str]:
    """Expand files, folders (recursive, image extensions, hidden entries skipped), glob patterns (`**` recurses) and
    list files (`.txt`/`.lst`) into image paths, in a stable order, each once. Raises `TaggingError` for an input
    that does not exist or a pattern / folder that finds no image."""
    paths: list[str] = []
    for raw in inputs:
        text = os.fspath(raw)
        if os.path.isdir(text):
            found = _walk_folder(text)
            if not found:
                raise TaggingError(f"{text}: folder holds no image file ({', '.join(sorted(IMAGE_EXTENSIONS))})")
        elif os.path.isfile(text):
            found = _read_list_file(text) if Path(text).suffix.lower() in LIST_FILE_EXTENSIONS else [text]
        elif GLOB_CHARACTERS & set(text):
            found = sorted(path for path in glob.glob(text, recursive=True) if os.path.isfile(path))
            found = [path for path in found if _is_image_file(path)]
            if not found:
                raise TaggingError(f"{text}: the pattern matches no image file")
        else:
            raise TaggingError(f"{text}: no such file or folder")
        paths += found
    return list(dict.fromkeys(paths))  # each image once, first occurrence wins


def file_sources(paths: Sequence[str]) -> list[ImageSource]:
    return [ImageSource(key=path, item=path) for path in paths]


def dataset_sources(dataset_split: Any) -> tuple[list[ImageSource], Any]:
    """Sources for every row of a canonical split (keys = `image_id`) and the split with undecoded images, whose
    rows the input pipeline reads by index."""
    from datasets import Image as ImageFeature

    if "image" not in dataset_split.column_names:
        raise TaggingError(f"the dataset split has no `image` column (columns: {dataset_split.column_names})")
    keys = (
        [str(key) for key in dataset_split["image_id"]]
        if "image_id" in dataset_split.column_names
        else [str(index) for index in range(len(dataset_split))]
    )
    duplicates = len(keys) - len(set(keys))
    if duplicates:
        raise TaggingError(f"the dataset split has {duplicates} duplicate image_id value(s); keys must be unique")
    undecoded = dataset_split.select_columns(["image"]).cast_column("image", ImageFeature(decode=False))
    return [ImageSource(key=key, item=index) for index, key in enumerate(keys)], undecoded


# ----------------------------------------------------------------------------------------------------------------------
# Input pipeline: decode + EXIF + resize + normalise in DataLoader workers
# ----------------------------------------------------------------------------------------------------------------------


def decode_min_size(processor: Any) -> int | None:
    """The shorter side the processor resizes to (what a reduced-scale JPEG decode must keep), if it says."""
    size = getattr(processor, "size", None) or {}
    if isinstance(size, Mapping) and size.get("shortest_edge"):
        return int(size["shortest_edge"])
    if isinstance(size, Mapping) and size.get("height") and size.get("width"):
        return int(max(size["height"], size["width"]))
    return None


class PreprocessedImages(torch.utils.data.Dataset):
    """`sources[i]` → `{"position": i, "pixel_values": [3, H, W] | None, "error": str | None}`; never raises, so one
    unreadable image cannot stop a run."""

    def __init__(self, sources: Sequence[ImageSource], processor: Any, rows: Any = None, fast_decode: bool = False):
        self.sources = list(sources)
        self.processor = processor
        self.rows = rows  # the undecoded dataset split, for sources whose item is a row index
        self.min_size = decode_min_size(processor) if fast_decode else None

    def __len__(self) -> int:
        return len(self.sources)

    def __getitem__(self, position: int) -> dict[str, Any]:
        source = self.sources[position]
        try:
            item = self.rows[source.item]["image"] if isinstance(source.item, int) else source.item
            image = load_image(item, name=source.key, min_size=self.min_size)
            pixel_values = self.processor(images=[image], return_tensors="pt")["pixel_values"][0]  # [3, H, W]
            return {"position": position, "pixel_values": pixel_values, "error": None}
        except Exception as error:  # noqa: BLE001 - reported in the errors file, whatever PIL or the processor raise
            message = str(error) if source.key in str(error) else f"{source.key}: {error}"
            return {"position": position, "pixel_values": None, "error": message}


def collate_images(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack the readable images `[b, 3, H, W]`; keep the unreadable ones aside as `(position, message)`."""
    good = [item for item in items if item["pixel_values"] is not None]
    return {
        "positions": [item["position"] for item in good],
        "pixel_values": torch.stack([item["pixel_values"] for item in good]) if good else None,
        "failed": [(item["position"], item["error"]) for item in items if item["pixel_values"] is None],
    }


def default_num_workers(num_processes: int = 1) -> int:
    """Input workers per process: the cores left after one for the model, shared among processes (at most 8)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(0, min(8, cores // max(1, num_processes) - 1))


def image_batches(
    dataset: PreprocessedImages, batch_size: int, num_workers: int, pin_memory: bool
) -> torch.utils.data.DataLoader:
    return torch.utils.data.DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=False,  # output rows follow input order
        num_workers=num_workers,
        collate_fn=collate_images,
        pin_memory=pin_memory,
        prefetch_factor=4 if num_workers > 0 else None,
    )


@dataclass
class TaggedBatch:
    keys: list[str]  # the readable images of the batch, in input order
    scores: np.ndarray  # [b, C] float32 sigmoid scores
    label_maps: np.ndarray | None  # [b, C, h, w] float32, when asked for
    failed: list[tuple[str, str]]  # (key, message) of the unreadable images


def tag_batches(
    model: Any,
    sources: Sequence[ImageSource],
    label_embeds: torch.Tensor,
    *,
    batch_size: int = 32,
    num_workers: int = 0,
    image_dtype: torch.dtype | None = None,
    label_maps: bool = False,
    fast_decode: bool = False,
    rows: Any = None,
) -> Iterator[TaggedBatch]:
    """Score `sources` against `label_embeds [C, D]` batch by batch, decoding in `num_workers` DataLoader workers
    (pinned memory when the model is on a GPU), so the model never waits for JPEG decoding."""
    if batch_size < 1:
        raise TaggingError(f"batch size must be >= 1, got {batch_size}")
    dataset = PreprocessedImages(sources, model.processor, rows=rows, fast_decode=fast_decode)
    scorer = Scorer(model, image_dtype=image_dtype)
    for batch in image_batches(dataset, batch_size, num_workers, pin_memory=model.device.type == "cuda"):
        failed = [(sources[position].key, message) for position, message in batch["failed"]]
        if batch["pixel_values"] is None:
            yield TaggedBatch([], np.zeros((0, label_embeds.shape[0]), dtype=np.float32), None, failed)
            continue
        scored = scorer.score_batch(batch["pixel_values"], label_embeds, return_label_maps=label_maps)
        if label_maps and scored.label_maps is None:
            raise TaggingError(f"{type(model).__name__} gives no label maps; drop --label-maps")
        yield TaggedBatch(
            keys=[sources[position].key for position in batch["positions"]],
            scores=scored.scores.cpu().numpy(),
            label_maps=scored.label_maps.cpu().numpy() if scored.label_maps is not None else None,
            failed=failed,
        )


# ----------------------------------------------------------------------------------------------------------------------
# Output files
# ----------------------------------------------------------------------------------------------------------------------


def output_format(path: str | os.PathLike) -> str:
    suffix = Path(path).suffix.lower()
    if suffix not in OUTPUT_FORMATS:
        raise TaggingError(f"{path}: output format from the extension: one of {', '.join(OUTPUT_FORMATS)}")
    return OUTPUT_FORMATS[suffix]


def side_file(output: Path, kind: str) -> Path:
    """`tags.jsonl` → `tags.errors.jsonl` (kind "errors") / `tags.run.json` (kind "run")."""
    return output.with_name(f"{output.stem}.{kind}.{'jsonl' if kind == 'errors' else 'json'}")


def shard_path(output: Path, index: int, count: int) -> Path:
    """`tags.jsonl` → `tags-00001-of-00004.jsonl`."""
    return output.with_name(f"{output.stem}-{index:05d}-of-{count:05d}{output.suffix}")


def _complete_lines(path: Path) -> bytes:
    """The file's bytes up to its last newline; a torn last line (a killed writer) is cut off the file itself."""
    data = path.read_bytes()
    end = data.rfind(b"\n") + 1
    if end != len(data):
        with path.open("r+b") as handle:
            handle.truncate(end)
    return data[:end]


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


class JsonlRecords:
    """One JSON object per line."""

    def __init__(self, path: Path):
        self.path = path

    def keys(self) -> list[str]:
        if not self.path.is_file():
            return []
        keys = []
        for number, line in enumerate(_complete_lines(self.path).decode("utf-8").splitlines(), start=1):
            try:
                keys.append(str(json.loads(line)[KEY_COLUMN]))
            except (ValueError, KeyError, TypeError) as error:
                raise TaggingError(f"{self.path}, line {number}: not a result row ({error})") from None
        return keys

    def append(self, records: Sequence[Mapping[str, Any]]) -> None:
        if not records:
            return
        text = "".join(json.dumps(record, default=_json_default, ensure_ascii=False) + "\n" for record in records)
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(text)  # one write per batch

    def close(self) -> None:
        if not self.path.exists():
            self.path.touch()

    def read_rows(self) -> Iterator[tuple[str, str]]:
        """`(key, line)` for merging."""
        for line in _complete_lines(self.path).decode("utf-8").splitlines(keepends=True):
            yield str(json.loads(line)[KEY_COLUMN]), line

    @staticmethod
    def concatenate(target: Path, parts: Sequence[Path]) -> None:
        _concatenate_text(target, parts, JsonlRecords, header=False)


class CsvRecords:
    """A header row, then one row per image; list cells (labels, scores, all_scores) hold JSON arrays."""

    def __init__(self, path: Path, columns: Sequence[str]):
        self.path = path
        self.columns = list(columns)

    def keys(self) -> list[str]:
        if not self.path.is_file():
            return []
        rows = list(csv.reader(io.StringIO(_complete_lines(self.path).decode("utf-8"))))
        if not rows:
            return []
        if rows[0] != self.columns:
            raise TaggingError(f"{self.path}: columns {rows[0]} differ from this run's {self.columns}")
        return [row[0] for row in rows[1:]]

    def append(self, records: Sequence[Mapping[str, Any]]) -> None:
        if not records:
            return
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        if not self.path.is_file() or self.path.stat().st_size == 0:
            writer.writerow(self.columns)
        for record in records:
            writer.writerow(
                [
                    value if isinstance(value, str) else json.dumps(value, default=_json_default, ensure_ascii=False)
                    for value in (record[column] for column in self.columns)
                ]
            )
        with self.path.open("a", encoding="utf-8", newline="") as handle:
            handle.write(buffer.getvalue())

    def close(self) -> None:
        if not self.path.is_file() or self.path.stat().st_size == 0:
            self.path.write_text(",".join(self.columns) + "\n", encoding="utf-8")

    def read_rows(self) -> Iterator[tuple[str, str]]:
        text = _complete_lines(self.path).decode("utf-8")
        lines = text.splitlines(keepends=True)
        for line in lines[1:]:
            yield next(csv.reader([line]))[0], line

    def header(self) -> str:
        return ",".join(self.columns) + "\n"


def _concatenate_text(target: Path, parts: Sequence[Path], records_class: Any, header: bool, columns=None) -> None:
    """`target` + the rows of `parts` whose key it does not hold yet, written to a temporary file then renamed (a
    kill during the merge leaves the old target and the parts, and a rerun merges again without duplicates)."""
    make = (lambda path: records_class(path, columns)) if header else records_class
    seen: set[str] = set()
    tmp = target.with_name(f".{target.name}.merge.tmp")
    with tmp.open("w", encoding="utf-8", newline="") as out:
        wrote_header = False
        for source in ([target] if target.is_file() else []) + [part for part in parts if part.is_file()]:
            records = make(source)
            if header and not wrote_header:
                out.write(records.header())
                wrote_header = True
            for key, line in records.read_rows():
                if key not in seen:
                    seen.add(key)
                    out.write(line)
        if header and not wrote_header:
            out.write(make(target).header())
    os.replace(tmp, target)


class ParquetRecords:
    """Complete part files in `<output>.parts/` while running, combined into one Parquet file by `close`."""

    def __init__(self, path: Path, schema: Any, rows_per_part: int = PARQUET_ROWS_PER_PART):
        self.path = path
        self.schema = schema
        self.rows_per_part = rows_per_part
        self.parts = path.with_name(path.name + ".parts")
        self._buffer: list[Mapping[str, Any]] = []

    def _part_files(self) -> list[Path]:
        return sorted(self.parts.glob("part-*.parquet")) if self.parts.is_dir() else []

    def keys(self) -> list[str]:
        import pyarrow.parquet as pq

        keys = []
        for path in ([self.path] if self.path.is_file() else []) + self._part_files():
            try:
                keys += [str(key) for key in pq.read_table(path, columns=[KEY_COLUMN])[KEY_COLUMN].to_pylist()]
            except Exception as error:  # noqa: BLE001 - name the file whatever pyarrow raises
                raise TaggingError(f"{path}: not a readable Parquet result file ({error})") from None
        return keys

    def append(self, records: Sequence[Mapping[str, Any]]) -> None:
        self._buffer += records
        if len(self._buffer) >= self.rows_per_part:
            self._flush()

    def _flush(self) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        if not self._buffer:
            return
        self.parts.mkdir(parents=True, exist_ok=True)
        existing = self._part_files()
        number = int(existing[-1].stem.split("-")[1]) + 1 if existing else 0
        table = pa.Table.from_pylist(list(self._buffer), schema=self.schema)
        final = self.parts / f"part-{number:06d}.parquet"
        tmp = self.parts / f".part-{number:06d}.parquet.tmp"
        pq.write_table(table, tmp)
        os.replace(tmp, final)  # a part is complete or absent
        self._buffer = []

    def close(self) -> None:
        self._flush()
        ParquetRecords.concatenate(self.path, self._part_files(), schema=self.schema)
        shutil.rmtree(self.parts, ignore_errors=True)

    @staticmethod
    def concatenate(target: Path, parts: Sequence[Path], schema: Any) -> None:
        import pyarrow.parquet as pq

        seen: set[str] = set()
        tmp = target.with_name(f".{target.name}.merge.tmp")
        writer = pq.ParquetWriter(tmp, schema)
        try:
            for source in ([target] if target.is_file() else []) + [part for part in parts if part.is_file()]:
                table = pq.read_table(source).cast(schema)
                keys = table[KEY_COLUMN].to_pylist()
                keep = [index for index, key in enumerate(keys) if key not in seen]
                seen.update(keys)
                if keep:
                    writer.write_table(table.take(keep))
        finally:
            writer.close()
        os.replace(tmp, target)


@dataclass
class OutputLayout:
    """Which columns a run writes, in which format."""

    format: str
    label_names: list[str]
    all_scores: bool = False
    label_maps: bool = False

    @property
    def columns(self) -> list[str]:
        return (
            [KEY_COLUMN, "labels", "scores"]
            + (["all_scores"] if self.all_scores else [])
            + (["label_maps"] if self.label_maps else [])
        )

    def parquet_schema(self) -> Any:
        import pyarrow as pa

        fields = [
            pa.field(KEY_COLUMN, pa.string()),
            pa.field("labels", pa.list_(pa.string())),
            pa.field("scores", pa.list_(pa.float32())),
        ]
        if self.all_scores:
            fields.append(pa.field("all_scores", pa.list_(pa.float32(), len(self.label_names))))
        if self.label_maps:
            fields.append(pa.field("label_maps", pa.list_(pa.list_(pa.list_(pa.float32())))))
        return pa.schema(fields, metadata={"ovmlc.labels": json.dumps(self.label_names)})

    def records(
        self, path: Path, rows_per_part: int = PARQUET_ROWS_PER_PART
    ) -> JsonlRecords | CsvRecords | ParquetRecords:
        if self.format == "jsonl":
            return JsonlRecords(path)
        if self.format == "csv":
            if self.label_maps:
                raise TaggingError(f"{path}: label maps need a .jsonl or .parquet output, not CSV")
            return CsvRecords(path, self.columns)
        return ParquetRecords(path, self.parquet_schema(), rows_per_part=rows_per_part)

    def concatenate(self, target: Path, parts: Sequence[Path]) -> None:
        if self.format == "jsonl":
            JsonlRecords.concatenate(target, parts)
        elif self.format == "csv":
            _concatenate_text(target, parts, CsvRecords, header=True, columns=self.columns)
        else:
            ParquetRecords.concatenate(target, parts, self.parquet_schema())


def build_records(
    keys: Sequence[str],
    scores: np.ndarray,
    layout: OutputLayout,
    top_k: int | None,
    thresholds: np.ndarray | None,
    label_maps: np.ndarray | None = None,
) -> list[dict[str, Any]]:
    """Result rows for `scores [b, C]` (sigmoid) and optional `label_maps [b, C, h, w]`."""
    ranked = rank_labels(scores, layout.label_names, top_k=top_k, thresholds=thresholds)
    index_of = {name: index for index, name in enumerate(layout.label_names)}
    rows = []
    for row, (key, kept) in enumerate(zip(keys, ranked)):
        record: dict[str, Any] = {
            KEY_COLUMN: key,
            "labels": [label for label, _ in kept],
            "scores": [round(score, 6) if layout.format != "parquet" else score for _, score in kept],
        }
        if layout.all_scores:
            values = scores[row].astype(np.float64)  # float64 first: float32 -> JSON prints 17 digits
            record["all_scores"] = values.tolist() if layout.format == "parquet" else np.round(values, 6).tolist()
        if layout.label_maps and label_maps is not None:
            maps = label_maps[row, [index_of[label] for label, _ in kept]].astype(np.float64)  # [k, h, w]
            record["label_maps"] = maps.tolist() if layout.format == "parquet" else np.round(maps, 5).tolist()
        rows.append(record)
    return rows


# ----------------------------------------------------------------------------------------------------------------------
# Processes
# ----------------------------------------------------------------------------------------------------------------------


@dataclass
class ProcessGroup:
    """This process's place among the processes of a run (one, or an `accelerate launch`)."""

    index: int = 0
    count: int = 1
    device: torch.device | None = None
    barrier: Callable[[], None] = field(default=lambda: None)

    @property
    def is_main(self) -> bool:
        return self.index == 0

    def take(self, sources: Sequence[ImageSource]) -> list[ImageSource]:
        """This process's contiguous slice (so the merged output keeps input order)."""
        start, stop = self.index * len(sources) // self.count, (self.index + 1) * len(sources) // self.count
        return list(sources[start:stop])


def current_process_group() -> ProcessGroup:
    """One process, or the `accelerate launch` (or torchrun) group this process belongs to."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return ProcessGroup()
    from accelerate import PartialState
    from accelerate.utils import parse_flag_from_env

    # PartialState (unlike Accelerator) does not read ACCELERATE_USE_CPU; without a GPU, CPU processes talk over gloo.
    state = PartialState(cpu=parse_flag_from_env("ACCELERATE_USE_CPU") or not torch.cuda.is_available())
    return ProcessGroup(state.process_index, state.num_processes, state.device, state.wait_for_everyone)


# ----------------------------------------------------------------------------------------------------------------------
# The run
# ----------------------------------------------------------------------------------------------------------------------


@dataclass
class TaggingSummary:
    output: Path
    errors_file: Path
    tagged: int  # images scored by this run (this process)
    failed: int  # unreadable images reported by this run (this process)
    skipped: int  # images the output already held (resume)
    seconds: float
    rows: int | None = None  # rows the output holds at the end (known on the main process)

    @property
    def images_per_second(self) -> float:
        return self.tagged / self.seconds if self.seconds > 0 else 0.0


def _check_run_info(path: Path, info: Mapping[str, Any], resume: bool) -> None:
    if not (resume and path.is_file()):
        return
    previous = json.loads(path.read_text(encoding="utf-8"))
    differing = [name for name in RUN_FIELDS if previous.get(name) != info.get(name)]
    if differing:
        raise TaggingError(
            f"{path}: the output was written by another run configuration (differs in {', '.join(differing)}); "
            "resume with the same arguments, or write to a new --output"
        )


def shard_files(output: Path) -> list[Path]:
    """Shard outputs, their errors files and Parquet part folders of any process count, next to `output`."""
    pattern = re.compile(rf"^{re.escape(output.stem)}-\d{{5}}-of-(\d{{5}})\.")
    return sorted(path for path in output.parent.glob(f"{output.stem}-*-of-*") if pattern.match(path.name))


def _remove_outputs(output: Path) -> None:
    for path in [output, side_file(output, "errors"), side_file(output, "run"), *shard_files(output)]:
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    shutil.rmtree(output.with_name(output.name + ".parts"), ignore_errors=True)


def tag_to_file(
    model: Any,
    sources: Sequence[ImageSource],
    label_names: Sequence[str],
    output: str | os.PathLike,
    *,
    top_k: int | None = 5,
    threshold: float | str | Mapping[str, Any] | None = None,
    batch_size: int = 32,
    num_workers: int | None = None,
    image_dtype: torch.dtype | None = None,
    all_scores: bool = False,
    label_maps: bool = False,
    resume: bool = False,
    overwrite: bool = False,
    fast_decode: bool = False,
    rows: Any = None,
    rows_per_part: int = PARQUET_ROWS_PER_PART,
    progress: bool = True,
    group: ProcessGroup | None = None,
    model_id: str | None = None,
    threshold_id: Any = None,
) -> TaggingSummary:
    """Tag `sources` with `label_names` into `output` (see the module docstring); returns this process's counts.

    `model` sits on its device already; `rows` is the undecoded dataset split for dataset sources; `rows_per_part`
    how many Parquet rows a kill can lose at most; `group` the process group (default: detected). `model_id` /
    `threshold_id` are what `<stem>.run.json` records for `--resume` checks.
    """
    from tqdm.auto import tqdm

    group = group or current_process_group()
    output = Path(output)
    layout = OutputLayout(output_format(output), [], all_scores=all_scores, label_maps=label_maps)
    vocabulary = model.vocabulary(list(label_names))
    layout.label_names = list(vocabulary.names)
    thresholds = model.resolve_thresholds(vocabulary.names, threshold)
    run_info = {
        "model": model_id or getattr(model, "name_or_path", "") or type(model).__name__,
        "labels": layout.label_names,
        "templates": list(vocabulary.templates),
        "top_k": top_k,
        "thresholds": threshold_id if threshold_id is not None else threshold,
        "all_scores": all_scores,
        "label_maps": label_maps,
        "format": layout.format,
    }
    run_file, errors_output = side_file(output, "run"), side_file(output, "errors")
    if group.is_main:
        output.parent.mkdir(parents=True, exist_ok=True)
        if overwrite:
            _remove_outputs(output)
        elif not resume and (output.exists() or output.with_name(output.name + ".parts").exists()):
            raise TaggingError(f"{output} exists: pass --resume to continue it or --overwrite to replace it")
        _check_run_info(run_file, run_info, resume)
        run_file.write_text(json.dumps(run_info, indent=1, default=_json_default) + "\n", encoding="utf-8")
    group.barrier()

    sharded = group.count > 1
    my_output = shard_path(output, group.index, group.count) if sharded else output
    my_errors = side_file(my_output, "errors")
    if group.is_main:
        stale = [path for path in shard_files(output) if not sharded or f"-of-{group.count:05d}." not in path.name]
        if stale:
            raise TaggingError(
                f"shard files of a run with another number of processes exist ({stale[0].name}): finish that run "
                "with its process count, or pass --overwrite"
            )
    if rows_per_part < 1:
        raise TaggingError(f"rows per Parquet part must be >= 1, got {rows_per_part}")
    results = layout.records(my_output, rows_per_part)
    errors = JsonlRecords(my_errors)
    done = set(results.keys()) | set(errors.keys())
    if sharded:  # rows an earlier run already merged into the output
        done |= set(layout.records(output).keys()) | set(JsonlRecords(errors_output).keys())
    mine = group.take(sources)
    pending = [source for source in mine if source.key not in done]

    start = time.perf_counter()
    tagged = failed = 0
    # The main process fills the label cache first; the others then read it from disk instead of all encoding.
    if sharded and not group.is_main:
        group.barrier()
    with torch.no_grad():
        label_embeds = model.encode_labels(vocabulary).float()  # [C, D]
    if sharded and group.is_main:
        group.barrier()
    if pending:
        bar = tqdm(
            total=len(pending),
            unit="img",
            desc="tagging" if not sharded else f"tagging (process {group.index + 1}/{group.count})",
            disable=not (progress and group.is_main),
            dynamic_ncols=True,
        )
        batches = tag_batches(
            model,
            pending,
            label_embeds,
            batch_size=batch_size,
            num_workers=default_num_workers(group.count) if num_workers is None else num_workers,
            image_dtype=image_dtype,
            label_maps=label_maps,
            fast_decode=fast_decode,
            rows=rows,
        )
        with bar:
            for batch in batches:
                errors.append([{KEY_COLUMN: key, "error": message} for key, message in batch.failed])
                results.append(build_records(batch.keys, batch.scores, layout, top_k, thresholds, batch.label_maps))
                tagged, failed = tagged + len(batch.keys), failed + len(batch.failed)
                bar.update(len(batch.keys) + len(batch.failed))
    results.close()
    errors.close()
    seconds = time.perf_counter() - start

    total_rows = len(results.keys()) if not sharded else None
    if sharded:
        group.barrier()
        if group.is_main:
            shards = [shard_path(output, index, group.count) for index in range(group.count)]
            layout.concatenate(output, shards)
            JsonlRecords.concatenate(errors_output, [side_file(shard, "errors") for shard in shards])
            for shard in shards:
                shard.unlink(missing_ok=True)
                side_file(shard, "errors").unlink(missing_ok=True)
            total_rows = len(layout.records(output).keys())
        group.barrier()
    return TaggingSummary(
        output=output,
        errors_file=errors_output,
        tagged=tagged,
        failed=failed,
        skipped=len(mine) - len(pending),
        seconds=seconds,
        rows=total_rows,
    )


def iter_keys(path: str | os.PathLike) -> list[str]:
    """The image keys a result file holds, in order (any of the three formats)."""
    path = Path(path)
    layout = OutputLayout(output_format(path), [])
    if layout.format == "csv":
        with path.open(encoding="utf-8", newline="") as handle:
            return [row[0] for row in list(csv.reader(handle))[1:]]
    if layout.format == "parquet":
        import pyarrow.parquet as pq

        return [str(key) for key in pq.read_table(path, columns=[KEY_COLUMN])[KEY_COLUMN].to_pylist()]
    return JsonlRecords(path).keys()


def read_results(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Every row of a result file as a dict (list cells decoded), for tests and small outputs."""
    path = Path(path)
    kind = output_format(path)
    if kind == "parquet":
        import pyarrow.parquet as pq

        return pq.read_table(path).to_pylist()
    if kind == "csv":
        with path.open(encoding="utf-8", newline="") as handle:
            rows = list(csv.DictReader(handle))
        return [{key: value if key == KEY_COLUMN else json.loads(value) for key, value in row.items()} for row in rows]
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]
