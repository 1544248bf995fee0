"""Seeded, order-independent split and masking decisions keyed by `image_id`.

Every decision here is a pure function of `(seed, image_id)`, so it does not depend on the order in which a converter
reads its source, on the number of worker threads, or on whether the source is streamed. Re-running a conversion
with the same seed reproduces the same validation images and the same partial-label mask.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence

import numpy as np

_HASH_DENOMINATOR = float(2**64)


def _hash64(*parts: str) -> int:
    digest = hashlib.blake2b("\x00".join(parts).encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "little")


def unit_hash(image_id: str, seed: int, purpose: str) -> float:
    """A uniform number in [0, 1) determined by `(purpose, seed, image_id)`."""
    return _hash64(purpose, str(seed), image_id) / _HASH_DENOMINATOR


def validation_count(num_images: int, fraction: float) -> int:
    """How many of `num_images` training images go to validation (at least one when the fraction is positive)."""
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"validation fraction must be in [0, 1), got {fraction}")
    if fraction == 0.0 or num_images < 2:
        return 0
    return min(num_images - 1, max(1, round(fraction * num_images)))


def select_validation_ids(image_ids: Iterable[str], fraction: float, seed: int) -> set[str]:
    """Exactly `validation_count(N, fraction)` ids: those with the smallest seeded hash (used when N is known)."""
    image_ids = list(image_ids)
    count = validation_count(len(image_ids), fraction)
    if count == 0:
        return set()
    ranked = sorted(image_ids, key=lambda image_id: (unit_hash(image_id, seed, "validation"), image_id))
    return set(ranked[:count])


def is_validation_id(image_id: str, fraction: float, seed: int) -> bool:
    """Per-image decision for streamed sources: in validation with probability `fraction`, same hash as above."""
    return unit_hash(image_id, seed, "validation") < fraction


def holdout_ids(image_ids: Sequence[str], fraction: float, seed: int, purpose: str) -> set[str]:
    """Like `select_validation_ids`, for other held-out sets (e.g. a test split of a user table without one)."""
    count = validation_count(len(image_ids), fraction)
    ranked = sorted(image_ids, key=lambda image_id: (unit_hash(image_id, seed, purpose), image_id))
    return set(ranked[:count])


def check_partial_proportion(proportion: float) -> float:
    if not 0.0 < proportion < 1.0:
        raise ValueError(
            f"--partial-ratio must be in (0, 1) (the kept proportion of annotated entries), got {proportion}"
        )
    return float(proportion)


def partial_keep_mask(image_id: str, num_entries: int, proportion: float, seed: int) -> np.ndarray:
    """Bool [num_entries]: which annotated entries of one image stay annotated (each kept with `proportion`).

    The caller passes the image's annotated label ids in increasing order, so the draw for a given (image, label)
    is fixed by the seed and never redrawn between runs.
    """
    generator = np.random.default_rng(_hash64("partial", str(seed), image_id))
    return generator.random(num_entries) < proportion


def partial_keep_grid(image_id: str, shape: tuple[int, ...], proportion: float, seed: int, purpose: str) -> np.ndarray:
    """Bool `shape`: independent keep decisions (each with `proportion`) for one image, drawn from a generator seeded
    by `(purpose, seed, image_id)` (e.g. per object-size row and label for COCO's `dualcoop-size-rows` mode)."""
    return np.random.default_rng(_hash64(purpose, str(seed), image_id)).random(shape) < proportion


def mask_partial_label_rows(
    rows: np.ndarray, image_ids: Sequence[str], label_ids: Sequence[int], proportion: float, seed: int
) -> np.ndarray:
    """Partial labels applied to a label matrix: each annotated entry (non-zero) of `rows` (`int8 [N, C]` in {1, 0,
    -1}) is kept with probability `proportion`, the others become 0 (unannotated). Returns a new matrix.

    `label_ids [C]` are the columns' ids in the dataset's label list: the draws use `partial_keep_mask` over each
    image's annotated entries in increasing id order, so on a fully annotated split whose columns are its training
    labels this is exactly the mask `ovmlc data prepare --partial-ratio proportion --seed seed` stores.
    """
    check_partial_proportion(proportion)
    if rows.shape != (len(image_ids), len(label_ids)):
        raise ValueError(f"label rows {rows.shape} do not match {len(image_ids)} images x {len(label_ids)} labels")
    order = np.argsort(np.asarray(label_ids), kind="stable")  # columns in dataset label-id order
    masked = rows.copy()
    for row, image_id in enumerate(image_ids):
        columns = order[masked[row, order] != 0]  # annotated entries, increasing label id
        keep = partial_keep_mask(str(image_id), len(columns), proportion, seed)
        masked[row, columns[~keep]] = 0
    return masked
