"""Open Images (v4 / v6) human-verified image-level labels -> partially annotated multi-label (LESA protocol).

Raw layout (under `--root`; every file can be given explicitly):

    class-descriptions.csv (v4) | oidv6-class-descriptions.csv (v6)     MID,DisplayName
    classes-trainable.txt                                                 seen label MIDs, one per line
    train/train-annotations-human-imagelabels.csv | oidv6-train-annotations-human-imagelabels.csv
    test/test-annotations-human-imagelabels.csv | test-annotations-human-imagelabels.csv
    train/<ImageID>.jpg, test/<ImageID>.jpg                               images (--train-image-dir/--test-image-dir)
    train/train-annotations-bbox.csv | oidv6-train-annotations-bbox.csv  boxes (optional; --train-boxes)
    test/test-annotations-bbox.csv | test-annotations-bbox.csv           boxes (optional; --test-boxes)

Labels: Confidence 1 -> positive, 0 -> negative, not verified -> unannotated (`annotation: partial`). Seen = the
trainable classes; unseen = the MIDs (or display names) listed in `--unseen-file` (e.g. LESA's top-400). Label names
are display names; a display name shared by several MIDs becomes "name (MID)" (reported).

Boxes (when the bbox CSVs are present, unless `--no-boxes`) fill the `objects` column: XMin/XMax/YMin/YMax are
fractions of the image size, converted to XYWH pixels once the image is read; group-of boxes (IsGroupOf = 1) are left
out; a box makes its label a positive of the image.

The label and box CSVs hold tens of millions of rows: they are streamed row by row, grouped by ImageID (the official
files are sorted by ImageID, and the two streams are merged), so memory stays bounded whatever their size. Only images
present on disk are kept (missing ones are reported), as LESA and QKS do.
"""

from __future__ import annotations

import argparse
import csv
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import TypeVar

from ovmlc.data.converters.base import Converter, SourceFormatError, find_file, read_lines, unique_in_order
from ovmlc.data.prepare import SourcePlan, SourceRecord
from ovmlc.data.schema import ANNOTATION_PARTIAL

_MID_PREFIXES = ("/m/", "/g/")
csv.field_size_limit(1 << 24)


def read_class_descriptions(path: Path) -> dict[str, str]:
    """MID -> display name (header row optional, as in v6)."""
    descriptions: dict[str, str] = {}
    with open(path, newline="", encoding="utf-8") as handle:
        for line_number, row in enumerate(csv.reader(handle), start=1):
            if not row or (line_number == 1 and row[0] == "LabelName"):
                continue
            if len(row) < 2:
                raise SourceFormatError(f"{path}, line {line_number}: expected 'MID,DisplayName', got {row}")
            descriptions[row[0].strip()] = row[1].strip()
    return descriptions


T = TypeVar("T")


def _group_by_image(path: Path, entries: Iterator[tuple[int, str, T]]) -> Iterator[tuple[str, list[T]]]:
    """Consecutive `(line_number, ImageID, entry)` rows -> `(ImageID, [entry, ...])` per image; the CSVs are released
    sorted by ImageID, which lets a 10-GB file stream (an unsorted one is refused, naming the line)."""
    current: str | None = None
    group: list[T] = []
    for line_number, image_id, entry in entries:
        if image_id != current:
            if current is not None:
                if image_id < current:
                    raise SourceFormatError(
                        f"{path}, line {line_number}: rows are not sorted by ImageID ({image_id} after {current}); "
                        f"sort the file first, e.g. (head -n 1 F && tail -n +2 F | sort -t, -k1,1) > F.sorted"
                    )
                yield current, group
            current, group = image_id, []
        group.append(entry)
    if current is not None:
        yield current, group


def iter_image_label_groups(path: Path) -> Iterator[tuple[str, list[tuple[str, str]]]]:
    """(ImageID, [(LabelName, Confidence), ...]) per image of a human-imagelabels CSV, streamed.

    Requires the file to be sorted by ImageID (as released), so one image's rows are consecutive.
    """
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if header is None:
            return
        try:
            id_column, label_column, confidence_column = (
                header.index(c) for c in ("ImageID", "LabelName", "Confidence")
            )
        except ValueError:
            raise SourceFormatError(
                f"{path}: header must have ImageID, LabelName and Confidence columns, got {header}"
            ) from None

        def entries() -> Iterator[tuple[int, str, tuple[str, str]]]:
            for line_number, row in enumerate(reader, start=2):
                if not row:
                    continue
                try:
                    yield line_number, row[id_column], (row[label_column], row[confidence_column])
                except IndexError:
                    raise SourceFormatError(f"{path}, line {line_number}: too few columns ({row})") from None

        yield from _group_by_image(path, entries())


BOX_COLUMNS = ("ImageID", "LabelName", "XMin", "XMax", "YMin", "YMax")


def iter_image_box_groups(path: Path) -> Iterator[tuple[str, list[tuple[str, float, float, float, float, bool]]]]:
    """(ImageID, [(LabelName, XMin, XMax, YMin, YMax, IsGroupOf), ...]) per image of a bbox CSV, streamed (sorted by
    ImageID, as released)."""
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if header is None:
            return
        missing = [column for column in BOX_COLUMNS if column not in header]
        if missing:
            raise SourceFormatError(f"{path}: header lacks the box column(s) {missing}, got {header}")
        index = {column: header.index(column) for column in (*BOX_COLUMNS, "IsGroupOf") if column in header}

        def entries() -> Iterator[tuple[int, str, tuple[str, float, float, float, float, bool]]]:
            for line_number, row in enumerate(reader, start=2):
                if not row:
                    continue
                try:
                    image_id = row[index["ImageID"]]
                    x_min, x_max, y_min, y_max = (float(row[index[key]]) for key in ("XMin", "XMax", "YMin", "YMax"))
                    group_of = "IsGroupOf" in index and row[index["IsGroupOf"]].strip() == "1"
                    entry = (row[index["LabelName"]], x_min, x_max, y_min, y_max, group_of)
                except (IndexError, ValueError) as error:
                    raise SourceFormatError(f"{path}, line {line_number}: unreadable box row {row} ({error})") from None
                yield line_number, image_id, entry

        yield from _group_by_image(path, entries())


class _BoxStream:
    """Boxes of one image at a time from a sorted bbox CSV, for image ids asked in increasing order."""

    def __init__(self, path: Path | None):
        self.groups = iter_image_box_groups(path) if path is not None else iter(())
        self.pending = next(self.groups, None)
        self.images_without_labels = 0

    def boxes(self, image_id: str) -> list[tuple[str, float, float, float, float, bool]]:
        while self.pending is not None and self.pending[0] < image_id:
            self.images_without_labels += 1  # boxed image absent from the label CSV
            self.pending = next(self.groups, None)
        if self.pending is not None and self.pending[0] == image_id:
            found, self.pending = self.pending[1], next(self.groups, None)
            return found
        return []


def _optional_file(root: Path, candidates: list[str], override: str | None, what: str) -> Path | None:
    if override:
        return find_file(root, candidates, what, override)
    return next((root / candidate for candidate in candidates if (root / candidate).is_file()), None)


def read_mid_list(path: Path, descriptions: dict[str, str], what: str) -> list[str]:
    """MIDs from a list file: one MID or display name per line (extra CSV columns ignored)."""
    by_name: dict[str, list[str]] = {}
    for mid, name in descriptions.items():
        by_name.setdefault(name, []).append(mid)
    mids, problems = [], []
    for line in read_lines(path):
        entry = line.split(",")[0].strip().strip('"')
        if entry.startswith(_MID_PREFIXES):
            mids.append(entry)
        elif entry in ("LabelName", "MID", "label"):
            continue  # header row
        elif len(by_name.get(entry, [])) == 1:
            mids.append(by_name[entry][0])
        else:
            problems.append(f"{entry!r} ({'ambiguous' if entry in by_name else 'unknown'} display name)")
    if problems:
        raise SourceFormatError(f"{what} {path}: {len(problems)} entr(ies) are not MIDs: {problems[:20]}")
    return unique_in_order(mids)


SHIPPED_UNSEEN_LABELSET = "openimages-400-unseen"


def unseen_label_mids(source: str, descriptions: dict[str, str]) -> list[str]:
    """Unseen MIDs from `--unseen-file`: a list file, or a shipped label set with `mids` (ovmlc/labelsets/)."""
    path = Path(source).expanduser()
    if path.is_file() or source != SHIPPED_UNSEEN_LABELSET:
        return read_mid_list(path, descriptions, "unseen labels")
    from ovmlc.core.vocabulary import load_labelset

    return list(load_labelset(source)["mids"])


def display_names(mids: list[str], descriptions: dict[str, str]) -> tuple[dict[str, str], list[str]]:
    """MID -> unique label name; display names shared by several MIDs become "name (MID)". Also returns the clashes."""
    base = {mid: descriptions.get(mid, mid) for mid in mids}
    counts = Counter(base.values())
    clashes = sorted(name for name, count in counts.items() if count > 1)
    names = {mid: (f"{name} ({mid})" if counts[name] > 1 else name) for mid, name in base.items()}
    return names, clashes


class OpenImagesConverter(Converter):
    name = "openimages"
    help = "Open Images v4/v6 human-verified image labels (streamed CSVs) -> trainable seen + given unseen labels"
    version = "1"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "--unseen-file",
            help="unseen labels: a file with one MID (or display name) per line, or a shipped label set with MIDs: "
            f"{SHIPPED_UNSEEN_LABELSET} (the 400 unseen labels of LESA/BiAM)",
        )
        parser.add_argument("--class-descriptions", help="MID,DisplayName CSV (default: found under ROOT)")
        parser.add_argument("--trainable-file", help="seen label MIDs (default: ROOT/classes-trainable.txt)")
        parser.add_argument("--train-labels", help="train human image-labels CSV (default: found under ROOT)")
        parser.add_argument("--test-labels", help="test human image-labels CSV (default: found under ROOT)")
        parser.add_argument("--train-image-dir", help="default: ROOT/train")
        parser.add_argument("--test-image-dir", help="default: ROOT/test")
        parser.add_argument("--train-boxes", help="train bbox CSV (default: found under ROOT when present)")
        parser.add_argument("--test-boxes", help="test bbox CSV (default: found under ROOT when present)")
        parser.add_argument("--no-boxes", action="store_true", help="leave out the `objects` column (boxes)")

    def plan(self, args: argparse.Namespace) -> SourcePlan:
        root = Path(args.root).expanduser()
        if not root.is_dir():
            raise SourceFormatError(f"Open Images root {root} is not a folder")
        meta_dirs = [".", "metadata", "2018_04"]
        descriptions_file = find_file(
            root,
            [f"{d}/{n}" for d in meta_dirs for n in ("class-descriptions.csv", "oidv6-class-descriptions.csv")],
            "Open Images class descriptions",
            args.class_descriptions,
        )
        trainable_file = find_file(
            root,
            [f"{d}/{n}" for d in meta_dirs for n in ("classes-trainable.txt", "oidv6-classes-trainable.txt")],
            "Open Images trainable classes",
            args.trainable_file,
        )
        train_csv = find_file(
            root,
            [
                "train/train-annotations-human-imagelabels.csv",
                "train-annotations-human-imagelabels.csv",
                "oidv6-train-annotations-human-imagelabels.csv",
                "annotations/oidv6-train-annotations-human-imagelabels.csv",
            ],
            "Open Images train human image labels",
            args.train_labels,
        )
        test_csv = find_file(
            root,
            [
                "test/test-annotations-human-imagelabels.csv",
                "test-annotations-human-imagelabels.csv",
                "annotations/test-annotations-human-imagelabels.csv",
            ],
            "Open Images test human image labels",
            args.test_labels,
        )
        train_boxes_csv = test_boxes_csv = None
        if not getattr(args, "no_boxes", False):
            train_boxes_csv = _optional_file(
                root,
                ["train/train-annotations-bbox.csv", "train-annotations-bbox.csv", "oidv6-train-annotations-bbox.csv"],
                getattr(args, "train_boxes", None),
                "Open Images train boxes",
            )
            test_boxes_csv = _optional_file(
                root,
                ["test/test-annotations-bbox.csv", "test-annotations-bbox.csv"],
                getattr(args, "test_boxes", None),
                "Open Images test boxes",
            )
        with_boxes = train_boxes_csv is not None or test_boxes_csv is not None
        train_image_dir = Path(args.train_image_dir).expanduser() if args.train_image_dir else root / "train"
        test_image_dir = Path(args.test_image_dir).expanduser() if args.test_image_dir else root / "test"

        descriptions = read_class_descriptions(descriptions_file)
        seen_mids = read_mid_list(trainable_file, descriptions, "trainable classes")
        unseen_mids = unseen_label_mids(args.unseen_file, descriptions) if args.unseen_file else []
        notes: list[str] = []
        overlap = set(seen_mids) & set(unseen_mids)
        if overlap:
            seen_mids = [mid for mid in seen_mids if mid not in overlap]
            notes.append(
                f"{len(overlap)} unseen MID(s) were also trainable; they are unseen only: {sorted(overlap)[:10]}"
            )
        if not unseen_mids:
            notes.append("no --unseen-file: every label is seen")
        undescribed = [mid for mid in seen_mids + unseen_mids if mid not in descriptions]
        if undescribed:
            notes.append(f"{len(undescribed)} MID(s) have no display name and keep the MID as name: {undescribed[:10]}")
        names, clashes = display_names(seen_mids + unseen_mids, descriptions)
        if clashes:
            notes.append(
                f"{len(clashes)} display name(s) shared by several MIDs were disambiguated as 'name (MID)': "
                f"{clashes[:20]}"
            )
        seen = [names[mid] for mid in seen_mids]
        unseen = [names[mid] for mid in unseen_mids]
        counters: Counter = Counter()
        unknown_examples: list[str] = []

        def records(csv_path: Path, image_dir: Path, split: str, boxes_csv: Path | None) -> Iterator[SourceRecord]:
            box_stream = _BoxStream(boxes_csv)
            for image_id, rows in iter_image_label_groups(csv_path):
                positives: set[str] = set()
                negatives: set[str] = set()
                for mid, confidence in rows:
                    name = names.get(mid)
                    if name is None:
                        if mid not in descriptions:
                            counters["unknown MID"] += 1
                            if len(unknown_examples) < 5 and mid not in unknown_examples:
                                unknown_examples.append(mid)
                        else:
                            counters["outside label set"] += 1
                        continue
                    if confidence.strip() in ("1", "1.0"):
                        positives.add(name)
                    elif confidence.strip() in ("0", "0.0"):
                        negatives.add(name)
                    else:
                        counters["unreadable confidence"] += 1
                conflicting = positives & negatives
                if conflicting:  # verified both ways: trust neither
                    counters[f"{split} conflicting (image, label) entries made unannotated"] += len(conflicting)
                    positives -= conflicting
                    negatives -= conflicting
                objects = []
                for mid, x_min, x_max, y_min, y_max, group_of in box_stream.boxes(image_id):
                    name = names.get(mid)
                    if name is None or x_max <= x_min or y_max <= y_min:
                        continue
                    if group_of:
                        counters[f"{split} group-of boxes left out"] += 1
                        continue
                    if name in negatives:
                        counters[f"{split} labels verified absent but boxed, made positive"] += 1
                        negatives.discard(name)
                    positives.add(name)  # a drawn box is a positive
                    objects.append({"label": name, "bbox": (x_min, y_min, x_max - x_min, y_max - y_min)})
                yield SourceRecord(
                    image_id=image_id,
                    image=image_dir / f"{image_id}.jpg",
                    labels=sorted(positives),
                    negative_labels=sorted(negatives),
                    objects=objects if with_boxes else None,
                    objects_relative=True,
                )
            if box_stream.images_without_labels:
                counters[f"{split} boxed images without image labels (skipped)"] += box_stream.images_without_labels
            if split == "test":  # both CSVs are consumed: report what was left out
                if counters["unknown MID"]:
                    notes.append(
                        f"{counters['unknown MID']:,} label row(s) with a MID missing from {descriptions_file.name} "
                        f"were skipped (first: {unknown_examples})"
                    )
                if counters["outside label set"]:
                    notes.append(
                        f"{counters['outside label set']:,} label row(s) of classes outside seen/unseen ignored"
                    )
                for key, count in counters.items():
                    if "conflicting" in key or "box" in key or key == "unreadable confidence":
                        notes.append(f"{count:,} {key}")
                if with_boxes:
                    notes.append(
                        "objects: human-drawn boxes (XYWH pixels) from "
                        + ", ".join(path.name for path in (train_boxes_csv, test_boxes_csv) if path is not None)
                    )

        unseen_source = Path(args.unseen_file).name if args.unseen_file else "(no --unseen-file)"
        return SourcePlan(
            source=self.name,
            converter_version=self.version,
            label_names=seen + unseen,
            seen_labels=seen,
            unseen_labels=unseen,
            annotation=ANNOTATION_PARTIAL,
            title="Open Images human-verified image labels (ovmlc canonical)",
            description=(
                "Open Images (Kuznetsova et al., IJCV 2020) human-verified image-level labels: confidence 1 is "
                "positive, 0 negative, anything not verified is unannotated. Seen labels = the trainable classes; "
                f"unseen labels = {len(unseen)} classes from {unseen_source} "
                "(the LESA zero-shot protocol uses its top-400 list)."
            ),
            splits={
                "train": records(train_csv, train_image_dir, "train", train_boxes_csv),
                "test": records(test_csv, test_image_dir, "test", test_boxes_csv),
            },
            notes=notes,
            has_objects=with_boxes,
            extra_metadata={"label_mids": seen_mids + unseen_mids},
            pretty_name="Open Images (human-verified labels)",
            root=root,
            license_name="other",
        )
