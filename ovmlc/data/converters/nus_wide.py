"""NUS-WIDE from the official raw release -> the 925 seen / 81 unseen zero-shot protocol (LESA/BiAM/MKT/QKS).

Raw layout (under `--root`; the usual alternative folder names are found too):

    Flickr/<concept>/<id>_<flickrid>.jpg              images (or flattened: <concept>_<id>_<flickrid>.jpg)
    ImageList/TrainImagelist.txt, TestImagelist.txt   one image per line, Windows paths such as
                                                      `actor\\0001_2124494179.jpg` or `C:\\ImageData\\Flickr\\...`
    NUS_WID_Tags/TagList1k.txt                        the 1000 Flickr tags
    NUS_WID_Tags/Train_Tags1k.dat, Test_Tags1k.dat    0/1 matrices, one row per listed image, one column per tag
    Concepts81.txt                                    the 81 human-annotated concepts
    Groundtruth/TrainTestLabels/Labels_<c>_Test.txt   0/1 per test image, in TestImagelist order

Seen = TagList1k minus the tags that equal a concept name, in TagList order (925); unseen = the 81 concepts.
Label order = [seen..., unseen...] (as BiAM, MKT and QKS). Train labels are the (noisy) seen tags only; test labels
are seen tags + concept ground truth. Every image is fully annotated (no unknown entries in NUS-WIDE).
"""

from __future__ import annotations

import argparse
from pathlib import Path, PureWindowsPath

import numpy as np

from ovmlc.data.converters.base import (
    Converter,
    SourceFormatError,
    find_dir,
    find_file,
    read_lines,
)
from ovmlc.data.prepare import SourcePlan, SourceRecord
from ovmlc.data.schema import ANNOTATION_FULL

_CHUNK_BYTES = 32 * 1024**2
_ALLOWED_BYTES = np.zeros(256, dtype=bool)
_ALLOWED_BYTES[[ord(c) for c in "01 \t\r\n"]] = True


def _parse_binary_lines(lines: list[bytes], num_columns: int, path: Path, first_line: int) -> np.ndarray:
    rows = np.zeros((len(lines), num_columns), dtype=bool)
    for offset, line in enumerate(lines):
        values = line.split()
        if len(values) != num_columns or any(value not in (b"0", b"1") for value in values):
            raise SourceFormatError(
                f"{path}, line {first_line + offset}: expected {num_columns} values of 0/1, "
                f"got {len(values)} value(s) starting {line[:60]!r}"
            )
        rows[offset] = [value == b"1" for value in values]
    return rows


def read_binary_matrix(path: Path, num_columns: int) -> np.ndarray:
    """A whitespace-separated 0/1 matrix (one row per line) as bool [rows, num_columns], read in bounded chunks.

    The fast path takes the digits of a chunk at once; any irregular chunk is re-read line by line so the error
    names the line.
    """
    blocks: list[np.ndarray] = []
    line_number = 1
    remainder = b""
    with open(path, "rb") as handle:
        while True:
            data = handle.read(_CHUNK_BYTES)
            chunk = remainder + data
            if not data:
                remainder, complete = b"", chunk
            else:
                cut = chunk.rfind(b"\n") + 1
                remainder, complete = chunk[cut:], chunk[:cut]
            lines = [line for line in complete.split(b"\n") if line.strip()]
            if lines:
                buffer = np.frombuffer(b"\n".join(lines), dtype=np.uint8)
                digits = buffer[(buffer == 48) | (buffer == 49)]
                if _ALLOWED_BYTES[buffer].all() and digits.size == len(lines) * num_columns:
                    block = (digits == 49).reshape(len(lines), num_columns)
                    # Equal digit totals can still hide one short and one long line: check every line's count.
                    per_line = np.array([line.count(b"0") + line.count(b"1") for line in lines])
                    if not (per_line == num_columns).all():
                        block = _parse_binary_lines(lines, num_columns, path, line_number)
                else:
                    block = _parse_binary_lines(lines, num_columns, path, line_number)
                blocks.append(block)
                line_number += len(lines)
            if not data:
                break
    return np.concatenate(blocks) if blocks else np.zeros((0, num_columns), dtype=bool)


def normalize_image_entry(line: str) -> str:
    """`C:\\ImageData\\Flickr\\actor\\0001_2124494179.jpg` or `actor\\0001_...jpg` -> `actor/0001_2124494179.jpg`.

    The lists use Windows separators (sometimes with an absolute prefix); the image is always `<concept>/<file>`.
    """
    parts = PureWindowsPath(line.strip()).parts  # splits on both "\\" and "/"
    return "/".join(parts[-2:])


class NusWideConverter(Converter):
    name = "nus-wide"
    help = "NUS-WIDE official raw release -> 925 seen / 81 unseen (LESA protocol)"
    version = "1"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "--image-dir", help="folder with the Flickr images (default: ROOT/Flickr, ROOT/images, ROOT)"
        )
        parser.add_argument(
            "--keep-untagged-train",
            action="store_true",
            help="keep training images without any positive seen tag (dropped by default, as BiAM, MKT and QKS do)",
        )

    def _image_dir(self, root: Path, override: str | None) -> Path:
        if override:
            return find_dir(root, [], "NUS-WIDE image folder", override)
        for candidate in ("Flickr", "flickr", "images", "Images"):
            if (root / candidate).is_dir():
                return root / candidate
        return root

    def _resolver(self, image_dir: Path, entries: list[str]):
        """Nested (`<concept>/<file>`) or flattened (`<concept>_<file>`) layout, detected on the first entries."""

        def nested(entry: str) -> Path:
            return image_dir / entry

        def flat(entry: str) -> Path:
            return image_dir / entry.replace("/", "_")

        probe = entries[:200]
        if any(nested(entry).is_file() for entry in probe):
            return nested
        if any(flat(entry).is_file() for entry in probe):
            return flat
        return nested

    def plan(self, args: argparse.Namespace) -> SourcePlan:
        root = Path(args.root).expanduser()
        if not root.is_dir():
            raise SourceFormatError(f"NUS-WIDE root {root} is not a folder")
        list_dirs = ["ImageList", "Imagelist", "imagelist", "."]
        tag_dirs = ["NUS_WID_Tags", "NUS_WIDE_Tags", "Tags", "."]
        train_list = find_file(root, [f"{d}/TrainImagelist.txt" for d in list_dirs], "TrainImagelist.txt")
        test_list = find_file(root, [f"{d}/TestImagelist.txt" for d in list_dirs], "TestImagelist.txt")
        tag_list = find_file(root, [f"{d}/TagList1k.txt" for d in tag_dirs], "TagList1k.txt")
        train_tags_file = find_file(root, [f"{d}/Train_Tags1k.dat" for d in tag_dirs], "Train_Tags1k.dat")
        test_tags_file = find_file(root, [f"{d}/Test_Tags1k.dat" for d in tag_dirs], "Test_Tags1k.dat")
        concepts_file = find_file(
            root,
            [
                "Concepts81.txt",
                "ConceptsList/Concepts81.txt",
                "Groundtruth/Concepts81.txt",
                "NUS_WID_Tags/Concepts81.txt",
            ],
            "Concepts81.txt",
        )
        groundtruth_dir = find_dir(
            root, ["Groundtruth/TrainTestLabels", "TrainTestLabels", "Groundtruth"], "Groundtruth/TrainTestLabels"
        )

        tags = read_lines(tag_list)
        concepts = read_lines(concepts_file)
        if len(set(tags)) != len(tags):
            raise SourceFormatError(f"{tag_list}: duplicated tags")
        concept_set = set(concepts)
        seen = [tag for tag in tags if tag not in concept_set]
        seen_columns = np.array([index for index, tag in enumerate(tags) if tag not in concept_set], dtype=np.int64)
        notes = [
            f"{len(tags)} tags in TagList1k, {len(concepts)} concepts, {len(tags) - len(seen)} tags equal a concept "
            f"name -> {len(seen)} seen + {len(concepts)} unseen labels"
        ]
        from ovmlc.core.vocabulary import load_labelset

        reference = load_labelset("nus-wide-81")["labels"]
        if concepts != reference:
            notes.append(
                f"Concepts81 differs from the shipped nus-wide-81 label set (not in it: "
                f"{sorted(concept_set - set(reference))[:10]}, missing: {sorted(set(reference) - concept_set)[:10]})"
            )

        missing_truth = [c for c in concepts if not (groundtruth_dir / f"Labels_{c}_Test.txt").is_file()]
        if missing_truth:
            raise SourceFormatError(
                f"{groundtruth_dir}: no ground-truth file Labels_<concept>_Test.txt for {len(missing_truth)} "
                f"concept(s) of {concepts_file}: {missing_truth[:20]}"
            )

        train_entries = [normalize_image_entry(line) for line in read_lines(train_list)]
        test_entries = [normalize_image_entry(line) for line in read_lines(test_list)]
        train_tags = read_binary_matrix(train_tags_file, len(tags))
        test_tags = read_binary_matrix(test_tags_file, len(tags))
        for matrix, entries, matrix_file, list_file in (
            (train_tags, train_entries, train_tags_file, train_list),
            (test_tags, test_entries, test_tags_file, test_list),
        ):
            if matrix.shape[0] != len(entries):
                raise SourceFormatError(
                    f"{matrix_file}: {matrix.shape[0]} rows but {list_file} lists {len(entries)} images"
                )
        test_truth = np.zeros((len(test_entries), len(concepts)), dtype=bool)
        for column, concept in enumerate(concepts):
            path = groundtruth_dir / f"Labels_{concept}_Test.txt"
            values = read_binary_matrix(path, 1)[:, 0]
            if values.shape[0] != len(test_entries):
                raise SourceFormatError(
                    f"{path}: {values.shape[0]} rows but {test_list} lists {len(test_entries)} images"
                )
            test_truth[:, column] = values

        image_dir = self._image_dir(root, args.image_dir)
        resolve = self._resolver(image_dir, train_entries + test_entries)
        seen_tags = train_tags[:, seen_columns]  # bool [N_train, 925]
        train_records = []
        untagged = 0
        for entry, row in zip(train_entries, seen_tags):
            positives = [seen[i] for i in np.flatnonzero(row)]
            if not positives and not args.keep_untagged_train:
                untagged += 1
                continue
            train_records.append(SourceRecord(image_id=entry, image=resolve(entry), labels=positives))
        if untagged:
            notes.append(
                f"dropped {untagged:,} training image(s) without any positive seen tag (--keep-untagged-train)"
            )
        test_seen = test_tags[:, seen_columns]
        test_records = []
        for entry, seen_row, truth_row in zip(test_entries, test_seen, test_truth):
            positives = [seen[i] for i in np.flatnonzero(seen_row)] + [concepts[i] for i in np.flatnonzero(truth_row)]
            test_records.append(SourceRecord(image_id=entry, image=resolve(entry), labels=positives))
        notes.append(
            f"official lists: {len(train_entries):,} train / {len(test_entries):,} test images; test images without "
            f"any unseen positive: {int((~test_truth.any(axis=1)).sum()):,} (kept; evaluation presets filter them)"
        )
        return SourcePlan(
            source=self.name,
            converter_version=self.version,
            label_names=seen + concepts,
            seen_labels=seen,
            unseen_labels=concepts,
            annotation=ANNOTATION_FULL,
            title="NUS-WIDE 925 seen / 81 unseen (ovmlc canonical)",
            description=(
                "NUS-WIDE (Chua et al., CIVR 2009) Flickr images in the multi-label zero-shot protocol of LESA "
                "(Huynh & Elhamifar, CVPR 2020): 925 seen labels = the 1k Flickr tags minus those equal to a "
                "concept name (noisy user tags), 81 unseen labels = the human-annotated concepts. Train = the "
                "official TrainImagelist (seen tags only), test = TestImagelist (seen tags + concept ground truth)."
            ),
            splits={"train": train_records, "test": test_records},
            notes=notes,
            pretty_name="NUS-WIDE 925/81",
            root=root,
            license_name="other",
        )
