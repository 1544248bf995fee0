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
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

from ovmlc.data.converters.base import Converter, SourceFormatError, find_dir, find_file
from ovmlc.data.prepare import SourcePlan, SourceRecord
from ovmlc.data.schema import ANNOTATION_FULL

COCO_SPLITS = ("zsl-48-17", "full")


def _load_instances(
    path: Path,
) -> tuple[dict[int, str], dict[int, str], dict[int, set[int]], dict[int, list[tuple[int, list[float]]]]]:
    """(category id -> name, image id -> file name, image id -> category ids present, image id -> non-crowd
    `(category id, [x, y, w, h])` boxes) of an instances json."""
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
    return categories, images, present, boxes


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
        train_categories, train_images, train_present, train_boxes = _load_instances(train_json)
        val_categories, val_images, val_present, val_boxes = _load_instances(val_json)
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
        for image_id in sorted(train_images):
            labels = labels_of(train_present.get(image_id, set()))
            if unseen_set & set(labels):
                dropped_unseen += 1  # the zero-shot protocol removes every training image showing an unseen object
                continue
            if not any(label in train_allowed for label in labels):
                dropped_empty += 1
                continue
            train_records.append(
                SourceRecord(
                    image_id=str(image_id),
                    image=train_dir / train_images[image_id],
                    labels=labels,
                    objects=objects_of(train_boxes.get(image_id, [])),
                )
            )
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
            annotation=ANNOTATION_FULL,
            title=title,
            description=description,
            splits={"train": train_records, "test": test_records},
            notes=notes,
            has_objects=with_boxes,
            extra_metadata={"coco_split": split},
            pretty_name=f"MS-COCO 2014 {split}",
            root=root,
            license_name="other",
        )
