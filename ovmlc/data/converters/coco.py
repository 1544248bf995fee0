"""MS-COCO 2014 from the official instance annotations -> multi-label (80 classes) or the 48/17 zero-shot split.

Raw layout (under `--root`):

    annotations/instances_train2014.json
    annotations/instances_val2014.json
    train2014/COCO_train2014_000000000009.jpg ...
    val2014/COCO_val2014_000000000042.jpg ...

Labels are image-level: a category is positive when the image has at least one instance of it (crowd instances
included), negative otherwise (`annotation: full`). The instance boxes (`bbox`, XYWH pixels) of the label set fill the
`objects` column (crowd regions excluded, as COCO's box evaluation ignores them); `--no-boxes` leaves it out.

* `--split full`: 80 labels; train = train2014 images with an instance, test = val2014 images with an instance.
* `--split zsl-48-17` (default): the Bansal et al. split used by DualCoOp (label set `coco-48-17`): 65 labels
  (48 seen, 17 unseen; 15 categories excluded). Train = train2014 images with a seen instance and **no** unseen
  instance; test = val2014 images with at least one instance of the 65. The ZSL test set is then the images with a
  positive among the 17 unseen (`has_positive` filter), the GZSL one the whole test split.

Partial labels: `--partial-ratio P` masks every (image, label) entry of train2014 independently (the default
`--partial-label-mode entries`). `--partial-label-mode dualcoop-size-rows` instead splits each image's labels into
three rows by instance area (< 32², < 96², larger; as DualCoOp's COCO loader does), hides each (row, label) entry
independently with probability 1 - P and merges the rows by their maximum (hidden = -1): an entry stays annotated if
any of its three rows does (1 - (1 - P)³, 87.5 % at P = 0.5), and a positive whose own row is hidden while another row
stays becomes a negative. This is the leak analysed in DualCoOp issues #4 / #10, kept as an explicit, off-by-default
option; the released loader (commit 49e71d7) stacks one mask for the three rows, so it keeps exactly P (see
docs/methods.md).
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

import numpy as np

from ovmlc.data.converters.base import Converter, SourceFormatError, find_dir, find_file
from ovmlc.data.prepare import SourcePlan, SourceRecord
from ovmlc.data.schema import ANNOTATION_FULL, ANNOTATION_PARTIAL
from ovmlc.data.splits import partial_keep_grid

COCO_SPLITS = ("zsl-48-17", "full")
PARTIAL_LABEL_MODES = ("entries", "dualcoop-size-rows")
# Instance-area limits of DualCoOp's (and ASL's) per-size target rows: small < 32², medium < 96², large.
SIZE_ROW_LIMITS = (32 * 32, 96 * 96)


def _size_row(area: float) -> int:
    return sum(area >= limit for limit in SIZE_ROW_LIMITS)


def _load_instances(
    path: Path, with_sizes: bool = False
) -> tuple[
    dict[int, str],
    dict[int, str],
    dict[int, set[int]],
    dict[int, set[tuple[int, int]]],
    dict[int, list[tuple[int, list[float]]]],
]:
    """(category id -> name, image id -> file name, image id -> category ids present, image id -> {(size row,
    category id)}, image id -> non-crowd `(category id, [x, y, w, h])` boxes) of an instances json (size rows only
    with `with_sizes`, from each instance's `area`)."""
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except (OSError, json.JSONDecodeError) as error:
        raise SourceFormatError(f"{path}: cannot read COCO instances json ({error})") from error
    for key in ("images", "annotations", "categories"):
        if key not in data:
            raise SourceFormatError(f"{path}: no '{key}' list (is this an instances_*.json file?)")
    categories = {int(category["id"]): str(category["name"]) for category in data["categories"]}
    images = {int(image["id"]): str(image["file_name"]) for image in data["images"]}
    present: dict[int, set[int]] = defaultdict(set)
    sized: dict[int, set[tuple[int, int]]] = defaultdict(set)
    boxes: dict[int, list[tuple[int, list[float]]]] = defaultdict(list)
    unknown_categories: set[int] = set()
    unknown_images: set[int] = set()
    for annotation in data["annotations"]:
        category_id, image_id = int(annotation["category_id"]), int(annotation["image_id"])
        if category_id not in categories:
            unknown_categories.add(category_id)
            continue
        if image_id not in images:
            unknown_images.add(image_id)
            continue
        present[image_id].add(category_id)
        if with_sizes:
            if not isinstance(annotation.get("area"), (int, float)):
                raise SourceFormatError(
                    f"{path}: annotation {annotation.get('id')!r} has no numeric 'area' (needed by "
                    f"--partial-label-mode dualcoop-size-rows)"
                )
            sized[image_id].add((_size_row(float(annotation["area"])), category_id))
        if annotation.get("iscrowd"):
            continue
        bbox = annotation.get("bbox")
        if not isinstance(bbox, list) or len(bbox) != 4:
            raise SourceFormatError(f"{path}: annotation {annotation.get('id')!r} has no [x, y, w, h] bbox: {bbox!r}")
        if bbox[2] > 0 and bbox[3] > 0:  # COCO has a few zero-area boxes: no box, the label stays
            boxes[image_id].append((category_id, [float(value) for value in bbox]))
    if unknown_categories:
        raise SourceFormatError(
            f"{path}: annotations use {len(unknown_categories)} category id(s) missing from 'categories': "
            f"{sorted(unknown_categories)[:20]}"
        )
    if unknown_images:
        raise SourceFormatError(
            f"{path}: annotations reference {len(unknown_images)} image id(s) missing from 'images': "
            f"{sorted(unknown_images)[:20]}"
        )
    return categories, images, present, sized, boxes


def size_row_partial_labels(
    image_id: str, sized: set[tuple[int, int]], label_ids: list[int], proportion: float, seed: int
) -> tuple[list[int], list[int]]:
    """DualCoOp-issue-#4 masking of one image: `(positive ids, negative ids)` among `label_ids` (the rest unannotated).

    Each (size row, label) entry is kept with probability `proportion` (one seeded draw per row and label, in
    `label_ids` order); a kept row contributes 1 when an instance of that size exists, else 0; a hidden one -1; the
    merged label is the maximum over the three rows.
    """
    rows = len(SIZE_ROW_LIMITS) + 1
    keep = partial_keep_grid(image_id, (rows, len(label_ids)), proportion, seed, purpose="partial-size-rows")  # [3, C]
    values = np.zeros((rows, len(label_ids)), dtype=np.int8)
    column = {label: index for index, label in enumerate(label_ids)}
    for row, label in sized:
        if label in column:
            values[row, column[label]] = 1
    merged = np.where(keep, values, -1).max(axis=0)  # [C]
    return (
        [label for label, value in zip(label_ids, merged) if value == 1],
        [label for label, value in zip(label_ids, merged) if value == 0],
    )


class CocoConverter(Converter):
    name = "coco"
    help = "MS-COCO 2014 instances json -> 80-class multi-label or the 48/17 zero-shot split"
    version = "1"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "--split",
            dest="coco_split",
            choices=COCO_SPLITS,
            default="zsl-48-17",
            help="zsl-48-17: 48 seen / 17 unseen (DualCoOp); full: all 80 classes, no unseen labels",
        )
        parser.add_argument("--train-json", help="default: ROOT/annotations/instances_train2014.json")
        parser.add_argument("--val-json", help="default: ROOT/annotations/instances_val2014.json")
        parser.add_argument("--train-image-dir", help="default: ROOT/train2014")
        parser.add_argument("--val-image-dir", help="default: ROOT/val2014")
        parser.add_argument(
            "--partial-label-mode",
            choices=PARTIAL_LABEL_MODES,
            default="entries",
            help="with --partial-ratio: entries (default) hides each (image, label) entry independently; "
            "dualcoop-size-rows reproduces the per-object-size-row masking of DualCoOp issues #4/#10 (keeps "
            "1-(1-P)^3 of the entries, turns some positives into negatives; documented leak, not the protocol)",
        )
        parser.add_argument(
            "--no-boxes", action="store_true", help="leave out the `objects` column (instance boxes, XYWH pixels)"
        )

    def plan(self, args: argparse.Namespace) -> SourcePlan:
        root = Path(args.root).expanduser()
        if not root.is_dir():
            raise SourceFormatError(f"COCO root {root} is not a folder")
        train_json = find_file(
            root, ["annotations/instances_train2014.json"], "COCO train annotations", args.train_json
        )
        val_json = find_file(root, ["annotations/instances_val2014.json"], "COCO val annotations", args.val_json)
        train_dir = find_dir(
            root, ["train2014", "images/train2014"], "COCO train2014 image folder", args.train_image_dir
        )
        val_dir = find_dir(root, ["val2014", "images/val2014"], "COCO val2014 image folder", args.val_image_dir)
        mode = getattr(args, "partial_label_mode", "entries")
        size_rows = mode == "dualcoop-size-rows"
        proportion = getattr(args, "partial_ratio", None)
        if size_rows and proportion is None:
            raise SourceFormatError("--partial-label-mode dualcoop-size-rows needs --partial-ratio P")
        train_categories, train_images, train_present, train_sized, train_boxes = _load_instances(train_json, size_rows)
        val_categories, val_images, val_present, _, val_boxes = _load_instances(val_json)
        with_boxes = not getattr(args, "no_boxes", False)
        if train_categories != val_categories:
            raise SourceFormatError(f"{train_json} and {val_json} define different categories")
        names = [train_categories[category_id] for category_id in sorted(train_categories)]

        from ovmlc.core.vocabulary import load_labelset

        split = getattr(args, "coco_split", "zsl-48-17")
        notes: list[str] = []
        if split == "full":
            label_names, unseen = names, []
            train_allowed = set(names)
        else:
            labelset = load_labelset("coco-48-17")
            label_names, unseen = list(labelset["labels"]), list(labelset["unseen"])
            missing = [name for name in label_names if name not in set(names)]
            if missing:
                raise SourceFormatError(f"{train_json}: categories of the 48/17 split not found: {missing}")
            train_allowed = set(label_names) - set(unseen)
        seen = [name for name in label_names if name not in set(unseen)]
        label_set = set(label_names)
        unseen_set = set(unseen)

        def labels_of(category_ids: set[int]) -> list[str]:
            return [train_categories[c] for c in sorted(category_ids) if train_categories[c] in label_set]

        def objects_of(boxes: list[tuple[int, list[float]]]) -> list[dict] | None:
            if not with_boxes:
                return None
            named = ((train_categories[category], bbox) for category, bbox in boxes)
            return [{"label": name, "bbox": bbox} for name, bbox in named if name in label_set]

        train_records = []
        dropped_unseen = dropped_empty = 0
        label_category_ids = [c for c in sorted(train_categories) if train_categories[c] in label_set]
        for image_id in sorted(train_images):
            labels = labels_of(train_present.get(image_id, set()))
            if unseen_set & set(labels):
                dropped_unseen += 1  # the zero-shot protocol removes every training image showing an unseen object
                continue
            if not any(label in train_allowed for label in labels):
                dropped_empty += 1
                continue
            record = SourceRecord(
                image_id=str(image_id),
                image=train_dir / train_images[image_id],
                labels=labels,
                objects=objects_of(train_boxes.get(image_id, [])),
            )
            if size_rows:
                positives, negatives = size_row_partial_labels(
                    str(image_id), train_sized.get(image_id, set()), label_category_ids, proportion, args.seed
                )
                record.labels = [train_categories[c] for c in positives]
                record.negative_labels = [train_categories[c] for c in negatives]
            train_records.append(record)
        test_records = []
        dropped_test = 0
        for image_id in sorted(val_images):
            labels = labels_of(val_present.get(image_id, set()))
            if not labels:
                dropped_test += 1
                continue
            test_records.append(
                SourceRecord(
                    image_id=str(image_id),
                    image=val_dir / val_images[image_id],
                    labels=labels,
                    objects=objects_of(val_boxes.get(image_id, [])),
                )
            )

        if dropped_unseen:
            notes.append(f"removed {dropped_unseen:,} train2014 image(s) containing an unseen object")
        kind = "a seen" if unseen else "an"
        notes.append(f"removed {dropped_empty:,} train2014 image(s) without {kind} instance of the label set")
        notes.append(f"removed {dropped_test:,} val2014 image(s) without an instance of the {len(label_names)} labels")
        if with_boxes:
            notes.append("objects: instance boxes (XYWH pixels) of the label set, crowd regions excluded")
        if unseen:
            with_unseen = sum(1 for record in test_records if unseen_set & set(record.labels))
            notes.append(
                f"test images with an unseen positive (ZSL test set): {with_unseen:,} of {len(test_records):,}"
            )
            description = (
                "MS-COCO 2014 (Lin et al., ECCV 2014) image-level labels from instance annotations, in the 48 seen / "
                "17 unseen zero-shot split of Bansal et al. (ECCV 2018) used by DualCoOp. Train = train2014 images "
                "with a seen object and no unseen object; test = val2014 images with an object of the 65 labels."
            )
            title = "MS-COCO 2014 48/17 zero-shot split (ovmlc canonical)"
        else:
            description = (
                "MS-COCO 2014 (Lin et al., ECCV 2014) multi-label classification over the 80 categories, labels from "
                "instance annotations. Train = train2014, test = val2014 (images with at least one instance)."
            )
            title = "MS-COCO 2014 multi-label, 80 classes (ovmlc canonical)"
        return SourcePlan(
            source=self.name,
            converter_version=self.version,
            label_names=label_names,
            seen_labels=seen,
            unseen_labels=unseen,
            annotation=ANNOTATION_PARTIAL if size_rows else ANNOTATION_FULL,
            title=title,
            description=description,
            splits={"train": train_records, "test": test_records},
            notes=notes,
            has_objects=with_boxes,
            extra_metadata={"coco_split": split, **({"partial_label_mode": mode} if size_rows else {})},
            partial_labels_applied=size_rows,
            pretty_name=f"MS-COCO 2014 {split}",
            root=root,
            license_name="other",
        )
