"""The label-embedding cache and the embeddings file format (`label_embeddings.safetensors`).

`LabelEmbeddingCache` keeps text embeddings per (text-side fingerprint, templates + pool, label), in memory and
optionally on disk; `write_embeddings_file` / `read_embeddings_file` are the file format (`embeddings [C, D]` float32
with the label names in the safetensors metadata), also used for the embeddings saved next to a model.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Sequence
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file


def default_label_cache_dir() -> Path:
    """Where label embeddings persist between runs: `$OVMLC_CACHE` or `$HF_HOME/ovmlc/label-embeddings`."""
    if os.environ.get("OVMLC_CACHE"):
        return Path(os.environ["OVMLC_CACHE"])
    from huggingface_hub import constants

    return Path(constants.HF_HOME) / "ovmlc" / "label-embeddings"


class LabelEmbeddingCache:
    """Text embeddings per (backbone fingerprint, templates + pool, label), in memory and optionally on disk.

    On disk: one safetensors file per (fingerprint, templates) holding `embeddings [C, D]`, with the label names
    in the metadata. Adding labels to a vocabulary encodes only the labels missing here.
    """

    def __init__(self, directory: str | os.PathLike | None = None, max_labels: int | None = None):
        # directory=None keeps embeddings in memory only; max_labels caps each table (oldest labels dropped first),
        # e.g. for a public demo where anyone can type new labels.
        self.directory = Path(directory) if directory else None
        self.max_labels = max_labels
        self._tables: dict[tuple[str, str], dict[str, torch.Tensor]] = {}

    def _file(self, fingerprint: str, templates_key: str) -> Path | None:
        return self.directory / f"{fingerprint}-{templates_key}.safetensors" if self.directory else None

    def table(self, fingerprint: str, templates_key: str) -> dict[str, torch.Tensor]:
        key = (fingerprint, templates_key)
        if key not in self._tables:
            self._tables[key] = {}
            path = self._file(fingerprint, templates_key)
            if path is not None and path.is_file():
                self._tables[key] = read_embeddings_file(path)
        return self._tables[key]

    def persist(self, fingerprint: str, templates_key: str) -> None:
        """Apply the size cap, then write the table to disk (if this cache has a directory)."""
        table = self._tables.get((fingerprint, templates_key), {})
        if self.max_labels is not None:
            for name in list(table)[: max(0, len(table) - self.max_labels)]:
                del table[name]
        path = self._file(fingerprint, templates_key)
        if path is not None and table:
            write_embeddings_file(path, list(table), torch.stack(list(table.values())))

    def clear(self) -> None:
        self._tables.clear()


def write_embeddings_file(path: str | os.PathLike, labels: Sequence[str], embeddings: torch.Tensor, **metadata) -> None:
    """Save `embeddings [C, D]` with their label names (write-then-rename, so a crash never leaves half a file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")  # unique per writer
    info = {"labels": json.dumps(list(labels)), **{key: str(value) for key, value in metadata.items()}}
    save_file({"embeddings": embeddings.detach().to(torch.float32).cpu().contiguous()}, str(tmp), metadata=info)
    os.replace(tmp, path)


def read_embeddings_file(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Inverse of `write_embeddings_file`: `{label: embedding [D]}`."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        labels = json.loads(handle.metadata()["labels"])
    embeddings = load_file(str(path))["embeddings"]
    return dict(zip(labels, embeddings))


__all__ = ["LabelEmbeddingCache", "default_label_cache_dir", "read_embeddings_file", "write_embeddings_file"]
