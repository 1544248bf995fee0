"""PASCAL VOC 2007 from the VOCdevkit XML annotations -> 20-class multi-label (partial: `difficult` objects).

Raw layout (`--root` is the VOCdevkit folder, the VOC2007 folder inside it, or their parent):

    VOCdevkit/VOC2007/Annotations/<id>.xml
    VOCdevkit/VOC2007/JPEGImages/<id>.jpg
    VOCdevkit/VOC2007/ImageSets/Main/trainval.txt, test.txt

Per image and class: positive when it has a non-difficult object of the class; **unannotated** when its only objects
of the class are marked `difficult` (VOC's own evaluation ignores them: neither positive nor negative); negative
otherwise. The card therefore says `annotation: partial` and negatives are explicit in `negative_labels`.
Train = `trainval` (a seeded validation split is held out of it), test = `test`. XML class names such as
`diningtable` map to the label names of the `voc2007` label set (`dining table`).
"""

from __future__ import annotations

import argparse
import xml.etree.ElementTree as ElementTree
from pathlib import Path

from ovmlc.data.converters.base import Converter, SourceFormatError, read_lines
from ovmlc.data.prepare import SourcePlan, SourceRecord
from ovmlc.data.schema import ANNOTATION_PARTIAL


def find_voc_year_dir(root: Path, year: str = "2007") -> Path:
    for candidate in (root, root / f"VOC{year}", root / "VOCdevkit" / f"VOC{year}"):
        if (candidate / "Annotations").is_dir() and (candidate / "ImageSets").is_dir():
            return candidate
    raise SourceFormatError(
        f"no VOC{year} folder (with Annotations/ and ImageSets/) at {root}, {root / f'VOC{year}'} or "
        f"{root / 'VOCdevkit' / f'VOC{year}'}"
    )


def parse_voc_objects(path: Path) -> list[tuple[str, bool]]:
    """(class name, difficult) of every object in one annotation XML."""
    try:
        tree = ElementTree.parse(path)
    except (OSError, ElementTree.ParseError) as error:
        raise SourceFormatError(f"{path}: cannot parse VOC annotation ({error})") from error
    objects = []
    for element in tree.getroot().iter("object"):
        name = (element.findtext("name") or "").strip()
        difficult = (element.findtext("difficult") or "0").strip() == "1"
        if not name:
            raise SourceFormatError(f"{path}: an <object> has no <name>")
        objects.append((name, difficult))
    return objects


class Voc2007Converter(Converter):
    name = "voc2007"
    help = "PASCAL VOC 2007 VOCdevkit XML -> 20-class multi-label (difficult-only classes unannotated)"
    version = "1"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--train-set", default="trainval", help="ImageSets/Main list used for training")
        parser.add_argument("--test-set", default="test", help="ImageSets/Main list used for testing")

    def plan(self, args: argparse.Namespace) -> SourcePlan:
        from ovmlc.core.vocabulary import load_labelset

        root = Path(args.root).expanduser()
        year_dir = find_voc_year_dir(root)
        labelset = load_labelset("voc2007")
        label_names = list(labelset["labels"])
        to_label = {name: name for name in label_names} | dict(labelset.get("aliases", {}))

        unknown: dict[str, list[str]] = {}
        splits: dict[str, list[SourceRecord]] = {}
        difficult_only = 0
        for split, set_name in (("train", args.train_set), ("test", args.test_set)):
            list_file = year_dir / "ImageSets" / "Main" / f"{set_name}.txt"
            if not list_file.is_file():
                raise SourceFormatError(f"VOC image list {list_file} does not exist")
            records = []
            for image_id in read_lines(list_file):
                image_id = image_id.split()[0]
                xml_path = year_dir / "Annotations" / f"{image_id}.xml"
                if not xml_path.is_file():
                    raise SourceFormatError(
                        f"{xml_path}: annotation of image {image_id} (listed in {list_file}) is missing"
                    )
                positives, difficult = set(), set()
                for name, is_difficult in parse_voc_objects(xml_path):
                    if name not in to_label:
                        unknown.setdefault(name, []).append(xml_path.name)
                        continue
                    (difficult if is_difficult else positives).add(to_label[name])
                ignored = difficult - positives
                difficult_only += len(ignored)
                negatives = [label for label in label_names if label not in positives and label not in ignored]
                records.append(
                    SourceRecord(
                        image_id=image_id,
                        image=year_dir / "JPEGImages" / f"{image_id}.jpg",
                        labels=[label for label in label_names if label in positives],
                        negative_labels=negatives,
                    )
                )
            splits[split] = records
        if unknown:
            listing = "; ".join(f"{name!r} in {files[:3]}" for name, files in sorted(unknown.items()))
            raise SourceFormatError(
                f"{year_dir / 'Annotations'}: {len(unknown)} object class(es) not in the VOC 2007 label set: {listing}"
            )
        return SourcePlan(
            source=self.name,
            converter_version=self.version,
            label_names=label_names,
            seen_labels=label_names,
            unseen_labels=[],
            annotation=ANNOTATION_PARTIAL,
            title="PASCAL VOC 2007 multi-label (ovmlc canonical)",
            description=(
                "PASCAL VOC 2007 (Everingham et al.) image-level labels over the 20 object classes, from the "
                "VOCdevkit XML annotations. A class whose only objects in an image are marked 'difficult' is "
                "unannotated for that image (neither positive nor negative), as in VOC's own evaluation."
            ),
            splits=splits,
            notes=[f"{difficult_only:,} (image, class) entries left unannotated: only 'difficult' objects"],
            pretty_name="PASCAL VOC 2007",
            root=year_dir,
            license_name="other",
        )
