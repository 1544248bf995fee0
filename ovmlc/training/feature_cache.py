"""On-disk cache of frozen image features, so methods with a frozen image tower train without running it.

`model.encode_image_features(pixel_values)` (e.g. `{"image_embeds": [N, D], "patch_embeds": [N, P, D]}`) is computed
once per dataset split + image-side weights + transform + precision and stored as one safetensors file under
`$OVMLC_CACHE/features/` (or `$HF_HOME/ovmlc/features/`), named by a digest of all of those. The file is read back
memory-mapped (`numpy.memmap` over the safetensors byte layout), so a cache larger than RAM still works and several
processes share the page cache.

Building is spread over the processes of a run: the main process creates the file, every rank fills its rows
(`index % num_processes == rank`) in place, and the main process renames the finished file into place, so a killed
build never leaves a file that looks complete. The cache folder must be shared by the processes (one machine).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import struct
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..core.backbones import module_fingerprint

FEATURE_CACHE_FORMAT = "1"
_SAFETENSORS_DTYPES = {np.dtype("float32"): "F32", np.dtype("float16"): "F16"}
_NUMPY_DTYPES = {code: dtype for dtype, code in _SAFETENSORS_DTYPES.items()}
# Config fields that never influence image features (labels, thresholds, bookkeeping).
_NON_IMAGE_CONFIG_FIELDS = (
    "label_names",
    "seen_labels",
    "unseen_labels",
    "label_thresholds",
    "global_threshold",
    "transformers_version",
    "architectures",
    "auto_map",
    "custom_pipelines",
    "backbone_name_or_path",
    "_name_or_path",
)


def default_feature_cache_dir() -> Path:
    """`$OVMLC_CACHE/features`, else `$HF_HOME/ovmlc/features`."""
    if os.environ.get("OVMLC_CACHE"):
        return Path(os.environ["OVMLC_CACHE"]) / "features"
    from huggingface_hub import constants

    return Path(constants.HF_HOME) / "ovmlc" / "features"


def image_side_fingerprint(model: torch.nn.Module) -> str:
    """Digest of the image-side weights, the method class and its config (minus label bookkeeping; only what
    `model.image_feature_settings()` returns when the method says which settings its image features depend on)."""
    if hasattr(model, "image_feature_settings"):
        config = dict(model.image_feature_settings())
    else:
        config = model.config.to_dict()
        for name in _NON_IMAGE_CONFIG_FIELDS:
            config.pop(name, None)
    extra = type(model).__name__ + json.dumps(config, sort_keys=True, default=str)
    return module_fingerprint(*model.image_side_modules(), extra=extra)


def cache_description(
    *,
    dataset: str,
    dataset_fingerprint: str,
    split: str,
    num_rows: int,
    model: torch.nn.Module,
    transform: Mapping[str, Any] | str,
    mixed_precision: str,
    dtype: str,
) -> dict[str, str]:
    """Everything the cached features depend on (stored in the file's metadata and hashed into its name)."""
    return {
        "format": FEATURE_CACHE_FORMAT,
        "dataset": str(dataset),
        "dataset_fingerprint": str(dataset_fingerprint),
        "split": split,
        "num_rows": str(num_rows),
        "method": type(model).__name__,
        "image_side_fingerprint": image_side_fingerprint(model),
        "transform": transform if isinstance(transform, str) else json.dumps(transform, sort_keys=True, default=str),
        "mixed_precision": mixed_precision,
        "dtype": dtype,
    }


def cache_path(cache_dir: str | os.PathLike, description: Mapping[str, str]) -> Path:
    digest = hashlib.sha256(json.dumps(dict(description), sort_keys=True).encode()).hexdigest()[:24]
    readable = re.sub(r"[^\w.]+", "_", description["split"])  # a safe file-name prefix; the digest identifies it
    return Path(cache_dir) / f"{readable}-{digest}.safetensors"


# ----------------------------------------------------------------------------------------------------------------------
# safetensors layout, written and read through numpy.memmap
# ----------------------------------------------------------------------------------------------------------------------


def create_feature_file(
    path: str | os.PathLike, shapes: Mapping[str, tuple[int, ...]], dtype: str, metadata: Mapping[str, str]
) -> None:
    """Create a zero-filled (sparse) safetensors file holding one `[N, ...]` tensor per key of `shapes`."""
    np_dtype = np.dtype(dtype)
    if np_dtype not in _SAFETENSORS_DTYPES:
        raise ValueError(f"feature cache dtype must be float32 or float16, got {dtype}")
    header: dict[str, Any] = {"__metadata__": {key: str(value) for key, value in metadata.items()}}
    offset = 0
    for name, shape in shapes.items():
        num_bytes = math.prod(shape) * np_dtype.itemsize
        header[name] = {
            "dtype": _SAFETENSORS_DTYPES[np_dtype],
            "shape": list(shape),
            "data_offsets": [offset, offset + num_bytes],
        }
        offset += num_bytes
    blob = json.dumps(header).encode()
    blob += b" " * (-len(blob) % 8)  # keep the data 8-byte aligned
    with open(path, "wb") as handle:
        handle.write(struct.pack("<Q", len(blob)))
        handle.write(blob)
        handle.truncate(8 + len(blob) + offset)


def read_feature_header(path: str | os.PathLike) -> tuple[dict[str, Any], int]:
    with open(path, "rb") as handle:
        (header_size,) = struct.unpack("<Q", handle.read(8))
        header = json.loads(handle.read(header_size))
    return header, 8 + header_size


def open_feature_file(path: str | os.PathLike, mode: str = "r") -> dict[str, np.memmap]:
    """Memory-map every tensor of a safetensors feature file (`mode` "r" to read, "r+" to fill rows)."""
    header, data_start = read_feature_header(path)
    arrays = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        begin, _ = entry["data_offsets"]
        arrays[name] = np.memmap(
            path, dtype=_NUMPY_DTYPES[entry["dtype"]], mode=mode, offset=data_start + begin, shape=tuple(entry["shape"])
        )
    return arrays


class CachedFeatures(torch.utils.data.Dataset):
    """Rows of a feature file as `{"image_features": {name: Tensor}, "index": int}` (memory-mapped, float32)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.arrays = open_feature_file(self.path)
        self.num_rows = len(next(iter(self.arrays.values())))

    def __getstate__(self) -> dict[str, Any]:
        # DataLoader workers started by "spawn" receive a pickled copy: send the path, not the mapped arrays.
        return {"path": self.path, "num_rows": self.num_rows}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.path, self.num_rows = state["path"], state["num_rows"]
        self.arrays = open_feature_file(self.path)

    def __len__(self) -> int:
        return self.num_rows

    def __getitem__(self, index: int) -> dict[str, Any]:
        features = {
            name: torch.from_numpy(np.array(array[index], dtype=np.float32)) for name, array in self.arrays.items()
        }
        return {"image_features": features, "index": index}


# ----------------------------------------------------------------------------------------------------------------------
# Building
# ----------------------------------------------------------------------------------------------------------------------


@torch.inference_mode()
def build_feature_cache(
    accelerator,
    model: torch.nn.Module,
    pixel_dataset: torch.utils.data.Dataset,
    path: Path,
    description: Mapping[str, str],
    batch_size: int,
    num_workers: int = 0,
    collate_fn=None,
    progress_desc: str = "caching features",
    encode_fn=None,
) -> Path:
    """Compute `model.encode_image_features` (or `encode_fn`, e.g. a method's `encode_training_features`) for every
    row of `pixel_dataset` (items with `pixel_values`) into `path`.

    Every process of `accelerator` calls this; rows are split between them. Returns `path` once complete everywhere.
    """
    from accelerate.utils import broadcast_object_list
    from tqdm.auto import tqdm

    if path.is_file():
        return path
    num_rows = len(pixel_dataset)
    if num_rows == 0:
        raise ValueError(f"cannot cache features of an empty split ({description.get('split')})")
    dtype = description["dtype"]
    device = accelerator.device
    was_training = model.training
    model.eval()

    encode_features = encode_fn or model.encode_image_features

    def encode(pixel_values: torch.Tensor) -> dict[str, torch.Tensor]:
        with accelerator.autocast():
            features = encode_features(pixel_values.to(device))
        return {name: value.float().cpu() for name, value in features.items()}

    # Shapes from one example (every rank computes them, so nobody waits for the main process here).
    first = encode(_collate([pixel_dataset[0]], collate_fn)["pixel_values"])
    shapes = {name: (num_rows, *tuple(value.shape[1:])) for name, value in first.items()}

    temporary = [str(path.with_name(f".tmp-{os.getpid()}-{path.name}"))]
    if accelerator.num_processes > 1:
        broadcast_object_list(temporary, from_process=0)
    temporary_path = Path(temporary[0])
    if accelerator.is_main_process:
        path.parent.mkdir(parents=True, exist_ok=True)
        create_feature_file(temporary_path, shapes, dtype, description)
    accelerator.wait_for_everyone()

    arrays = open_feature_file(temporary_path, mode="r+")
    rows = list(range(accelerator.process_index, num_rows, accelerator.num_processes))
    loader = torch.utils.data.DataLoader(
        torch.utils.data.Subset(pixel_dataset, rows),
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        collate_fn=collate_fn or _default_collate,
        generator=torch.Generator(),  # a DataLoader draws a seed when iterated: keep the global RNG untouched
    )
    for batch in tqdm(
        loader, desc=progress_desc, unit="batch", disable=not accelerator.is_local_main_process, leave=False
    ):
        indices = np.asarray(batch["index"])
        for name, value in encode(batch["pixel_values"]).items():
            arrays[name][indices] = value.numpy().astype(dtype, copy=False)
    for array in arrays.values():
        array.flush()
    del arrays
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        os.replace(temporary_path, path)
    accelerator.wait_for_everyone()
    model.train(was_training)
    return path


def _default_collate(items: list[dict[str, Any]]) -> dict[str, Any]:
    return torch.utils.data.default_collate(items)


def _collate(items: list[dict[str, Any]], collate_fn) -> dict[str, Any]:
    return (collate_fn or _default_collate)(items)
