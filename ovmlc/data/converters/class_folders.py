"""`ovmlc data prepare class-folders`: single-label images sorted into one folder per class (the ImageNet / torchvision
`ImageFolder` layout), the data of few-shot prompt learning (CoOp, LAMM)::

    ROOT/train/<class>/<image>          one folder per class; the folder name (or its --class-names entry) is the label
    ROOT/val/<class>/<image>            (or validation/): the test split when ROOT has no test/ (ImageNet's convention:
    ROOT/test/<class>/<image>           papers report ImageNet's val set), else the validation split

`--class-names FILE` maps folder names to label names, one `folder name words...` per line (CoOp's `classnames.txt`:
`n01440764 tench`) or a JSON object; a class folder missing from it is an error that lists it. Every label is seen;
a held-out split of the classes is a recipe choice (`dataset.train_labels: <label set>`). Validation is held out of
train by the driver (`--val-fraction`) unless ROOT has both val/ and test/.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ovmlc.data.converters.base import Converter, SourceFormatError, read_lines
from ovmlc.data.converters.tables import TableRow, add_label_arguments, plan_from_rows
from ovmlc.data.prepare import SourcePlan

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
SPLIT_FOLDERS = {"train": "train", "val": "validation", "validation": "validation", "test": "test"}


def read_class_names(path: str | Path) -> dict[str, str]:
    """Folder name -> label name from `folder name words...` lines or a JSON object."""
    path = Path(path).expanduser()
    if path.suffix == ".json":
        try:
            mapping = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as error:
            raise SourceFormatError(f"{path}: cannot read the class-name mapping ({error})") from None
        if not isinstance(mapping, dict) or not all(isinstance(v, str) for v in mapping.values()):
            raise SourceFormatError(f"{path}: the class-name mapping must be a JSON object of folder -> name")
        return {str(key): value.strip() for key, value in mapping.items()}
    mapping = {}
    for number, line in enumerate(read_lines(path), start=1):
        folder, _, name = line.partition(" ")
        if not name.strip():
            raise SourceFormatError(f"{path}:{number}: expected 'folder class name', got {line!r}")
        mapping[folder] = name.strip()
    return mapping


class ClassFoldersConverter(Converter):
    name = "class-folders"
    help = "single-label images in one folder per class (ImageNet layout: train/<class>/, val/<class>/)"
    version = "1"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        add_label_arguments(parser)
        parser.add_argument(
            "--class-names", help="folder -> label name: 'folder name words' lines (CoOp's classnames.txt) or JSON"
        )

    def plan(self, args: argparse.Namespace) -> SourcePlan:
        root = Path(args.root).expanduser()
        if not root.is_dir():
            raise SourceFormatError(f"{root} is not a folder")
        folders = {split: root / name for name, split in SPLIT_FOLDERS.items() if (root / name).is_dir()}
        if "train" not in folders:
            raise SourceFormatError(f"{root}: no train/ folder (expected train/<class>/<image>)")
        if "test" not in folders and "validation" in folders:  # ImageNet: the val set is the reported test set
            folders["test"] = folders.pop("validation")
        mapping = read_class_names(args.class_names) if args.class_names else None
        rows, unmapped = [], set()
        for split, folder in folders.items():
            for class_dir in sorted(path for path in folder.iterdir() if path.is_dir()):
                if mapping is not None and class_dir.name not in mapping:
                    unmapped.add(class_dir.name)
                    continue
                label = mapping[class_dir.name] if mapping is not None else class_dir.name
                for image in sorted(class_dir.rglob("*")):
                    if image.suffix.lower() in IMAGE_SUFFIXES and image.is_file():
                        relative = image.relative_to(root).as_posix()
                        rows.append(TableRow(relative, image, [label], None, split, where=relative))
        if unmapped:
            raise SourceFormatError(
                f"{args.class_names}: no class name for the folder(s) {sorted(unmapped)[:10]}"
                + (f" ... ({len(unmapped)} in all)" if len(unmapped) > 10 else "")
            )
        if not rows:
            raise SourceFormatError(
                f"{root}: no images under {', '.join(f'{p.name}/<class>/' for p in folders.values())}"
            )
        return plan_from_rows(
            self,
            rows,
            args,
            where=str(root),
            description=f"Single-label images in one folder per class, from {root.name}.",
            root=root,
        )


__all__ = ["ClassFoldersConverter", "read_class_names"]
