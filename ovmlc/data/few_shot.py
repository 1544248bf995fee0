"""Few-shot subsets of single-label canonical datasets (CoOp/LAMM's k images per class, k in {1, 2, 4, 8, 16}).

Which images a k-shot draw keeps is a pure function of `(seed, image_id)`, like every split decision in
`ovmlc.data.splits`: the images of each class are ranked by a seeded hash of their id and the first k are kept. So a
draw does not depend on the row order or on the other classes, and for one seed the k-shot set is contained in the
2k-shot set (more shots only add images).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ovmlc.data.schema import CanonicalSchemaError, _list_column, dataset_label_names
from ovmlc.data.splits import unit_hash

# The shot counts of the CoOp / LAMM few-shot protocol.
STANDARD_SHOTS = (1, 2, 4, 8, 16)
_PURPOSE = "few-shot"


def single_label_classes(split, where: str = "split") -> np.ndarray:
    """The class index `[N]` (into the dataset's label list) of every image of a single-label canonical split.

    Raises `CanonicalSchemaError` naming the first offending image when an image has no positive or several (the
    few-shot protocol and the single-label task need exactly one label per image).
    """
    names = dataset_label_names(split)
    # From the Arrow list column (no [N, C] matrix: ImageNet has 1.28M images x 1000 labels).
    rows, class_ids = _list_column(split, "labels")
    counts = np.bincount(rows, minlength=len(split))
    bad = np.flatnonzero(counts != 1)
    if bad.size:
        row = int(bad[0])
        image_id = split[row]["image_id"] if "image_id" in split.column_names else str(row)
        labels = [names[c] for c in class_ids[rows == row]]
        raise CanonicalSchemaError(
            f"{where}: few-shot sampling needs exactly one label per image; {bad.size} image(s) have another number "
            f"(first: {image_id!r} with {int(counts[row])} labels: {labels[:5]})"
        )
    classes = np.empty(len(split), dtype=np.int64)
    classes[rows] = class_ids
    return classes


def few_shot_indices(split, label_names: Sequence[str], shots: int, seed: int, where: str = "split") -> np.ndarray:
    """Sorted row indices `[len(label_names) * shots]` of a `shots`-per-class draw over `label_names`.

    `split` is a canonical split whose images each have exactly one label (see `single_label_classes`); images of
    labels outside `label_names` are never drawn (e.g. the new classes of a base-to-new split). A label with fewer
    than `shots` images is an error naming it.
    """
    if isinstance(shots, bool) or int(shots) < 1:
        raise ValueError(f"shots must be a positive integer, got {shots!r}")
    shots = int(shots)
    names = dataset_label_names(split)
    index_of = {name: index for index, name in enumerate(names)}
    unknown = [name for name in label_names if name not in index_of]
    if unknown:
        raise CanonicalSchemaError(f"{where}: labels {unknown[:10]} are not in the dataset's label list")
    classes = single_label_classes(split, where)
    image_ids = list(split["image_id"])
    chosen, short = [], []
    for name in label_names:
        rows = np.flatnonzero(classes == index_of[name])
        if rows.size < shots:
            short.append(f"{name!r} ({rows.size})")
            continue
        ranked = sorted(rows.tolist(), key=lambda row: (unit_hash(str(image_ids[row]), seed, _PURPOSE), row))
        chosen.extend(ranked[:shots])
    if short:
        raise CanonicalSchemaError(
            f"{where}: {shots}-shot sampling needs {shots} images per label; these labels have fewer: "
            f"{', '.join(short[:10])}"
        )
    return np.array(sorted(chosen), dtype=np.int64)


def few_shot_subset(split, label_names: Sequence[str], shots: int, seed: int, where: str = "split"):
    """`split.select(few_shot_indices(...))`: the `shots`-per-class training subset (a `datasets.Dataset`)."""
    return split.select(few_shot_indices(split, label_names, shots, seed, where).tolist())


__all__ = ["STANDARD_SHOTS", "few_shot_indices", "few_shot_subset", "single_label_classes"]
