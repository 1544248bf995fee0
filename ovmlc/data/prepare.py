"""The conversion driver: a converter's `SourcePlan` -> a canonical dataset folder.

A converter only describes its source (labels, label split, and per split an iterable of `SourceRecord`s). This
module does everything that is the same for every source: holding out the seeded validation split, restricting
train/validation to the training label set, partial-label masking, reading and verifying images (missing/corrupt
files are skipped and reported), sharded parquet writing, the dataset card and the summary.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from ovmlc.data.image_files import SkippedImage, encode_image
from ovmlc.data.schema import ANNOTATION_FULL, ANNOTATION_PARTIAL, ANNOTATIONS, SPLITS, canonical_features
from ovmlc.data.splits import check_partial_proportion, is_validation_id, partial_keep_mask, select_validation_ids
from ovmlc.data.storage import DEFAULT_MAX_SHARD_BYTES, CanonicalDatasetWriter, build_ovmlc_block

TRAINING_SPLITS = ("train", "validation")
MAX_EXAMPLES_PER_REASON = 5


@dataclass
class SourceRecord:
    """One source image before conversion.

    `image` is a file path, encoded bytes, a `{"bytes", "path"}` dict or a PIL image. `labels` are positive label
    names. `negative_labels` are explicit negatives; `None` means the record is fully annotated (every label that is
    not positive is negative). `objects` are labelled boxes `{"label": name, "bbox": (x, y, width, height)}` in
    pixels, or as fractions of the image size with `objects_relative=True` (Open Images); a box whose label is not a
    positive of the written row is dropped.
    """

    image_id: str
    image: Any
    labels: Sequence[str]
    negative_labels: Sequence[str] | None = None
    caption: str | None = None
    objects: Sequence[Mapping[str, Any]] | None = None
    objects_relative: bool = False


@dataclass
class SourcePlan:
    """What a converter hands to the driver. `splits` has "train" and "test" (and "validation" only when the source
    defines one explicitly); a split that is a `Sequence` gets an exact-size validation hold-out, a streamed iterable
    a per-image seeded one. `notes` may still grow while the split iterables are consumed (streaming converters)."""

    source: str
    converter_version: str
    label_names: list[str]
    seen_labels: list[str]
    unseen_labels: list[str]
    annotation: str
    title: str
    description: str
    splits: dict[str, Iterable[SourceRecord]]
    split_sizes: dict[str, int | None] = field(default_factory=dict)
    train_label_set: list[str] | None = None
    has_captions: bool = False
    has_objects: bool = False  # records carry `objects` (boxes): the dataset gets an `objects` column
    notes: list[str] = field(default_factory=list)
    extra_metadata: dict[str, Any] = field(default_factory=dict)
    pretty_name: str | None = None
    license_name: str | None = None
    root: str | os.PathLike | None = None  # skipped files are reported relative to it (no local paths in the card)
    # The converter masked the training records itself (COCO dualcoop-size-rows): --partial-ratio is only recorded.
    partial_labels_applied: bool = False


@dataclass
class PrepareOptions:
    val_fraction: float = 0.1
    seed: int = 0
    partial_ratio: float | None = None  # kept proportion of annotated train/validation entries (DualCoOp's setting)
    verify: str = "full"
    exif_orientation: str = "apply"  # "raw": keep tagged images' pixels as encoded (image_files.EXIF_ORIENTATION_MODES)
    num_workers: int = 1
    limit: int | None = None  # at most this many source records per source split (quick trials)
    overwrite: bool = False
    max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES
    progress: bool = True


@dataclass
class SplitStats:
    images: int = 0
    images_without_positive: int = 0
    positives: np.ndarray | None = None


@dataclass
class PrepareSummary:
    out_dir: Path
    source: str
    annotation: str
    label_names: list[str]
    seen_labels: list[str]
    unseen_labels: list[str]
    splits: dict[str, SplitStats]
    skipped: Counter
    skipped_examples: dict[str, list[str]]
    notes: list[str]

    def format(self, top_k: int = 5) -> str:
        """Plain-text summary for the terminal."""
        lines = [
            f"Wrote {self.out_dir} (source {self.source}, annotation {self.annotation}, {len(self.label_names)} labels:"
            f" {len(self.seen_labels)} seen, {len(self.unseen_labels)} unseen)"
        ]
        for split, stats in self.splits.items():
            positives = stats.positives if stats.positives is not None else np.zeros(len(self.label_names), int)
            order = np.argsort(-positives, kind="stable")[:top_k]
            top = ", ".join(f"{self.label_names[i]} {int(positives[i])}" for i in order if positives[i] > 0)
            lines.append(
                f"  {split:<10} {stats.images:>9,} images, {int(positives.sum()):,} positive labels, "
                f"{int((positives > 0).sum())} labels with a positive, {stats.images_without_positive:,} "
                f"without a positive" + (f"; most frequent: {top}" if top else "")
            )
        if self.skipped:
            lines.append(f"  skipped {sum(self.skipped.values()):,} image(s):")
            for reason, count in self.skipped.most_common():
                examples = ", ".join(self.skipped_examples.get(reason, []))
                lines.append(f"    {reason}: {count:,} (first: {examples})")
        else:
            lines.append("  skipped 0 images")
        lines.extend(f"  note: {note}" for note in self.notes)
        return "\n".join(lines)


class _RowBuilder:
    """Turns a `SourceRecord` into a canonical row for one split (label ids, training label set, masking)."""

    def __init__(self, plan: SourcePlan, options: PrepareOptions, annotation: str):
        self.index = {name: i for i, name in enumerate(plan.label_names)}
        self.num_labels = len(plan.label_names)
        train_labels = plan.train_label_set if plan.train_label_set is not None else plan.seen_labels
        self.train_ids = np.array(sorted(self.index[name] for name in train_labels), dtype=np.int64)
        self.train_id_set = set(self.train_ids.tolist())
        self.all_id_set = set(range(self.num_labels))
        self.options = options
        self.annotation = annotation
        self.has_captions = plan.has_captions
        self.has_objects = plan.has_objects
        self.source = plan.source
        self.masks_partial_labels = options.partial_ratio is not None and not plan.partial_labels_applied

    def _ids(self, names: Iterable[str], record: SourceRecord, column: str) -> list[int]:
        ids = []
        for name in names:
            try:
                ids.append(self.index[name])
            except KeyError:
                raise ValueError(
                    f"{self.source}: image {record.image_id!r} has {column} label {name!r} that is not in the label "
                    "list (a converter bug or an inconsistent source)"
                ) from None
        return sorted(set(ids))

    def build(self, record: SourceRecord, split: str) -> dict[str, Any] | None:
        """The row without its image, or None when nothing about the image is annotated for this split."""
        positives = self._ids(record.labels, record, "positive")
        negatives = None if record.negative_labels is None else self._ids(record.negative_labels, record, "negative")
        training = split in TRAINING_SPLITS
        if training:  # train/validation only ever see the training label set (seen labels)
            positives = [i for i in positives if i in self.train_id_set]
            if negatives is not None:
                negatives = [i for i in negatives if i in self.train_id_set]
        if negatives is not None:
            negatives = sorted(set(negatives) - set(positives))  # a positive wins over a contradictory negative
        if training and self.masks_partial_labels:
            annotated = self.train_ids.tolist() if negatives is None else sorted(set(positives) | set(negatives))
            keep = partial_keep_mask(record.image_id, len(annotated), self.options.partial_ratio, self.options.seed)
            kept = {label for label, is_kept in zip(annotated, keep) if is_kept}
            positive_set = set(positives)
            positives = [i for i in positives if i in kept]
            negatives = sorted(kept - positive_set)
        if self.annotation == ANNOTATION_PARTIAL and negatives is None:
            universe = self.train_id_set if training else self.all_id_set
            negatives = sorted(universe - set(positives))
        if self.annotation == ANNOTATION_PARTIAL and not positives and not negatives:
            return None
        row: dict[str, Any] = {"image_id": str(record.image_id), "labels": positives}
        if self.annotation == ANNOTATION_PARTIAL:
            row["negative_labels"] = negatives
        if self.has_captions:
            row["caption"] = record.caption
        if self.has_objects:
            row["objects"] = self._objects(record, set(positives))
        return row

    def _objects(self, record: SourceRecord, positives: set[int]) -> list[dict[str, Any]]:
        """The record's boxes whose label is a positive of this row (unseen labels in training splits, masked
        partial labels and unknown labels never get a box); relative boxes stay relative until the image is read."""
        objects = []
        for entry in record.objects or ():
            label = self._ids([entry["label"]], record, "object")[0]
            bbox = [float(value) for value in entry["bbox"]]
            if len(bbox) != 4 or bbox[2] <= 0 or bbox[3] <= 0:
                raise ValueError(
                    f"{self.source}: image {record.image_id!r} has an object box {entry['bbox']!r} that is not "
                    "(x, y, width, height) with a positive width and height"
                )
            if label in positives:
                objects.append({"label": label, "bbox": bbox})
        return objects


def _encode_all(
    items: Iterable[tuple[str, SourceRecord, dict[str, Any]]], verify: str, num_workers: int, exif_orientation: str
) -> Iterator[tuple[str, SourceRecord, dict[str, Any], dict[str, Any] | SkippedImage]]:
    """Adds the image storage (or a SkippedImage) to each (split, record, row), in input order.

    Images are read and verified in `num_workers` threads (PIL decoding releases the GIL), with a bounded read-ahead.
    """

    def encode(item):
        split, record, row = item
        where = str(record.image) if isinstance(record.image, (str, os.PathLike)) else str(record.image_id)
        try:
            return split, record, row, encode_image(record.image, where, verify, exif_orientation)
        except SkippedImage as skipped:
            return split, record, row, skipped

    if num_workers <= 1:
        yield from map(encode, items)
        return
    iterator = iter(items)
    with ThreadPoolExecutor(max_workers=num_workers) as pool:
        while chunk := list(islice(iterator, 32 * num_workers)):
            yield from pool.map(encode, chunk)


def _route_training_records(
    records: Iterable[SourceRecord], options: PrepareOptions, has_explicit_validation: bool
) -> Iterator[tuple[str, SourceRecord]]:
    if has_explicit_validation:
        for record in records:
            yield "train", record
        return
    if isinstance(records, Sequence):
        validation_ids = select_validation_ids((r.image_id for r in records), options.val_fraction, options.seed)
        for record in records:
            yield ("validation" if record.image_id in validation_ids else "train"), record
        return
    for record in records:  # streamed source: same hash, per-image threshold
        yield (
            ("validation" if is_validation_id(record.image_id, options.val_fraction, options.seed) else "train"),
            record,
        )


def prepare_canonical(
    plan: SourcePlan, out_dir: str | os.PathLike, options: PrepareOptions | None = None
) -> PrepareSummary:
    """Convert `plan` into a canonical dataset folder at `out_dir` and return the summary."""
    options = options or PrepareOptions()
    if plan.annotation not in ANNOTATIONS:
        raise ValueError(f"{plan.source}: annotation must be one of {ANNOTATIONS}, got {plan.annotation!r}")
    for required in ("train", "test"):
        if required not in plan.splits:
            raise ValueError(f"{plan.source}: the converter produced no {required!r} split")
    if options.partial_ratio is not None:
        check_partial_proportion(options.partial_ratio)
    annotation = (
        ANNOTATION_PARTIAL if plan.annotation == ANNOTATION_PARTIAL or options.partial_ratio else ANNOTATION_FULL
    )
    extra = {"validation_fraction": options.val_fraction, "seed": options.seed, "num_labels": len(plan.label_names)}
    if "validation" in plan.splits:
        extra["validation_source"] = "source"
    if options.partial_ratio is not None:
        extra["partial_label_proportion"] = options.partial_ratio
        extra["partial_label_seed"] = options.seed
        extra["partial_label_splits"] = list(TRAINING_SPLITS)
    extra.update(plan.extra_metadata)
    block = build_ovmlc_block(
        source=plan.source,
        converter_version=plan.converter_version,
        annotation=annotation,
        label_names=plan.label_names,
        seen_labels=plan.seen_labels,
        unseen_labels=plan.unseen_labels,
        train_label_set=plan.train_label_set,
        extra=extra,
    )
    features = canonical_features(
        plan.label_names,
        with_negative_labels=annotation == ANNOTATION_PARTIAL,
        with_caption=plan.has_captions,
        with_objects=plan.has_objects,
    )
    builder = _RowBuilder(plan, options, annotation)
    stats = {split: SplitStats(positives=np.zeros(len(plan.label_names), dtype=np.int64)) for split in SPLITS}
    skipped: Counter = Counter()
    skipped_examples: dict[str, list[str]] = {}

    root = Path(plan.root).expanduser().resolve() if plan.root is not None else None

    def skip(reason: str, where: str) -> None:
        if root is not None:
            try:
                where = Path(where).resolve().relative_to(root).as_posix()
            except (ValueError, OSError):
                pass
        skipped[reason] += 1
        examples = skipped_examples.setdefault(reason, [])
        if len(examples) < MAX_EXAMPLES_PER_REASON:
            examples.append(where)

    with CanonicalDatasetWriter(
        out_dir, features, overwrite=options.overwrite, max_shard_bytes=options.max_shard_bytes
    ) as writer:
        source_splits = ["train"] + (["validation"] if "validation" in plan.splits else []) + ["test"]
        for source_split in source_splits:
            records = plan.splits[source_split]
            total = plan.split_sizes.get(source_split)
            if total is None and isinstance(records, Sequence):
                total = len(records)
            if options.limit is not None:
                records = list(islice(records, options.limit))
                total = len(records)
            if source_split == "train":
                routed = _route_training_records(records, options, "validation" in plan.splits)
            else:
                routed = ((source_split, record) for record in records)
            progress = tqdm(
                total=total, desc=f"{plan.source} {source_split}", unit="img", disable=not options.progress, leave=True
            )

            def annotated_rows(routed=routed, progress=progress):
                # Labels first, so images that would carry no annotation are never read.
                for split, record in routed:
                    row = builder.build(record, split)
                    if row is None:
                        skip(f"no annotated label in the {split} label set", str(record.image_id))
                        progress.update(1)
                        continue
                    yield split, record, row

            for split, record, row, image in _encode_all(
                annotated_rows(), options.verify, options.num_workers, options.exif_orientation
            ):
                progress.update(1)
                if isinstance(image, SkippedImage):
                    skip(f"{image.reason} image", str(image.where))
                    continue
                row["image"] = image
                if record.objects_relative and row.get("objects"):
                    _scale_relative_boxes(row["objects"], image)
                writer.split(split).write_row(row)
                split_stats = stats[split]
                split_stats.images += 1
                if row["labels"]:
                    np.add.at(split_stats.positives, row["labels"], 1)
                else:
                    split_stats.images_without_positive += 1
                if skipped:
                    progress.set_postfix(skipped=sum(skipped.values()), refresh=False)
            progress.close()

        notes = list(plan.notes) + [
            f"split {split!r} has no image and is left out" for split in SPLITS if stats[split].images == 0
        ]
        card_notes = list(plan.notes) + [
            f"skipped {count:,} image(s): {reason} (first: {', '.join(skipped_examples[reason])})"
            for reason, count in skipped.most_common()
        ]
        final_dir = writer.finalize(
            ovmlc_block=block,
            title=plan.title,
            description=plan.description,
            notes=card_notes,
            pretty_name=plan.pretty_name,
            license_name=plan.license_name,
        )
    return PrepareSummary(
        out_dir=final_dir,
        source=plan.source,
        annotation=annotation,
        label_names=list(plan.label_names),
        seen_labels=list(plan.seen_labels),
        unseen_labels=list(plan.unseen_labels),
        splits=stats,
        skipped=skipped,
        skipped_examples=skipped_examples,
        notes=notes,
    )


def _scale_relative_boxes(objects: list[dict[str, Any]], image: Mapping[str, Any]) -> None:
    """Relative XYWH boxes → pixels of the encoded image (its size is read from the header)."""
    import io

    from PIL import Image

    with Image.open(io.BytesIO(image["bytes"])) as opened:
        width, height = opened.size
    for entry in objects:
        x, y, w, h = entry["bbox"]
        entry["bbox"] = [x * width, y * height, w * width, h * height]


def summarize_plan_sizes(splits: Mapping[str, Iterable[SourceRecord]]) -> dict[str, int | None]:
    """Known sizes of a plan's splits (None for streamed ones), for progress bars."""
    return {name: (len(records) if isinstance(records, Sequence) else None) for name, records in splits.items()}
