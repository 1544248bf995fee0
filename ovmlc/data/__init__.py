"""Canonical multi-label datasets: schema, card, converters, splits, transforms and the training collator.

See docs/data.md. The public helpers other parts of ovmlc code against:

* `load_canonical(path_or_id, split=None)`: a canonical `DatasetDict` (or one split) from a folder or the Hub,
* `label_matrix(split_dataset, label_names) -> int8 [N, C]` in {1, 0, -1},
* `save_canonical(dataset_dict, out_dir, *, source, converter_version, seen_labels, unseen_labels, annotation,
  description)`,
* `read_label_split(path_or_id) -> (seen, unseen)` and `read_card_metadata(path_or_id)` (the card's `ovmlc:` block).
"""

from __future__ import annotations

from typing import Any

from ovmlc.data.card import CardError, read_card_metadata, read_label_split  # noqa: E402
from ovmlc.data.schema import (  # noqa: E402
    ANNOTATION_FULL,
    ANNOTATION_PARTIAL,
    CANONICAL_FORMAT_VERSION,
    LABEL_NEGATIVE,
    LABEL_POSITIVE,
    LABEL_UNANNOTATED,
    SPLITS,
    CanonicalSchemaError,
    canonical_features,
    dataset_label_names,
    label_counts,
    label_matrix,
    validate_canonical_features,
)
from ovmlc.data.storage import load_canonical, save_canonical  # noqa: E402

_LAZY = {
    # torch / transform code is only imported when used, so `import ovmlc.data` stays light for metrics and the CLI.
    "MultiLabelCollator": "ovmlc.data.collator",
    "ImageTransform": "ovmlc.data.transforms",
    "load_transform": "ovmlc.data.transforms",
    "list_transform_presets": "ovmlc.data.transforms",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'ovmlc.data' has no attribute {name!r}")


__all__ = [
    "ANNOTATION_FULL",
    "ANNOTATION_PARTIAL",
    "CANONICAL_FORMAT_VERSION",
    "LABEL_NEGATIVE",
    "LABEL_POSITIVE",
    "LABEL_UNANNOTATED",
    "SPLITS",
    "CanonicalSchemaError",
    "CardError",
    "ImageTransform",
    "MultiLabelCollator",
    "canonical_features",
    "dataset_label_names",
    "label_counts",
    "label_matrix",
    "list_transform_presets",
    "load_canonical",
    "load_transform",
    "read_card_metadata",
    "read_label_split",
    "save_canonical",
    "validate_canonical_features",
]
