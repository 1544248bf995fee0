"""The label-embedding cache (the one every model, the pipeline, evaluation and the Space go through) and the embeddings
file format (`label_embeddings.safetensors`).

`LabelEmbeddingCache` keeps text embeddings per (text-side fingerprint, templates + pool, label) in memory, least
recently used first out once it holds `max_labels` embeddings, and optionally on disk; `write_embeddings_file` /
`read_embeddings_file` are the file format (`embeddings [C, D]` float32 with the label names in the safetensors
metadata), also used for the embeddings saved next to a model.
"""

from __future__ import annotations

import json
import os
import threading
import warnings
from collections import Counter, OrderedDict
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

# Embeddings kept in memory per cache (per model) by default: ~200 MB at D = 512 / float32 (2 KB per label), enough for
# every shipped label set and ImageNet-21k at once, while a long-running service fed new labels stays bounded.
DEFAULT_MAX_LABELS = 100_000

# (fingerprint, templates_key): one table, one file on disk.
TableKey = tuple[str, str]


def default_label_cache_dir() -> Path:
    """Where label embeddings persist between runs: `$OVMLC_CACHE` or `$HF_HOME/ovmlc/label-embeddings`."""
    if os.environ.get("OVMLC_CACHE"):
        return Path(os.environ["OVMLC_CACHE"])
    from huggingface_hub import constants

    return Path(constants.HF_HOME) / "ovmlc" / "label-embeddings"


class LabelEmbeddingCache:
    """Text embeddings per (text-side fingerprint, templates + pool, label): an LRU in memory, optionally on disk.

    - `lookup(fingerprint, templates_key, names, encode)` returns the embeddings of `names` in order, calling
      `encode(missing_names)` once for the labels it does not hold (adding labels to a vocabulary encodes only the new
      ones), and marks every label asked for as most recently used.
    - At most `max_labels` embeddings are kept in memory (`None`: no cap); the least recently used go first. The cap
      counts every table together, so the tables of weights that changed (a prompt learner after training) age out.
    - With a `directory`, each (fingerprint, templates) table is one safetensors file, read when the table is first
      used and rewritten (write-then-rename) after labels were encoded; it holds what memory holds of that table.
    - Thread-safe: one lock per cache, held while missing labels are encoded (one text forward at a time per model).
    - `hits` / `encoded` / `evicted` count labels served from memory, labels encoded, labels dropped by the cap;
      `last_lookup_encoded` is what the calling thread's last lookup encoded.
    """

    def __init__(self, directory: str | os.PathLike | None = None, max_labels: int | None = DEFAULT_MAX_LABELS):
        if max_labels is not None and max_labels < 1:
            raise ValueError(f"LabelEmbeddingCache: max_labels must be >= 1 or None (no cap), got {max_labels}")
        self.directory = Path(directory) if directory else None
        self.max_labels = max_labels
        # (fingerprint, templates_key, label) -> embedding, least recently used first.
        self._entries: OrderedDict[tuple[str, str, str], torch.Tensor] = OrderedDict()
        self._table_sizes: Counter[TableKey] = Counter()
        self._read_from_disk: set[TableKey] = set()  # tables whose file was read (forgotten when they empty out)
        self._lock = threading.RLock()
        self._warned_over_cap = False
        self._thread = threading.local()  # per thread: labels the last lookup encoded
        self.hits = 0
        self.encoded = 0
        self.evicted = 0

    def __deepcopy__(self, memo: dict) -> LabelEmbeddingCache:
        # A copied model (e.g. to merge an adapter) gets an empty cache with the same settings: a lock cannot be
        # copied, and entries are keyed by the text tower's fingerprint, so they are re-encoded or re-read on demand.
        return type(self)(self.directory, self.max_labels)

    # ------------------------------------------------------------------ public API
    def lookup(
        self,
        fingerprint: str,
        templates_key: str,
        names: Sequence[str],
        encode: Callable[[list[str]], torch.Tensor],
    ) -> torch.Tensor:
        """Embeddings of `names` stacked in order (`[C, ...]`, CPU). `encode(missing)` must return one row per missing
        name (`[M, ...]`); it is called at most once, with the names in first-seen order and no repeats."""
        names = list(names)
        key = (fingerprint, templates_key)
        with self._lock:
            self._load_table(key)
            missing = list(dict.fromkeys(name for name in names if (*key, name) not in self._entries))
            new_rows: dict[str, torch.Tensor] = {}
            if missing:
                encoded = encode(missing)
                if len(encoded) != len(missing):
                    raise ValueError(f"label cache: encode() returned {len(encoded)} rows for {len(missing)} labels")
                new_rows = dict(zip(missing, (_storable(row) for row in encoded)))
            rows = [new_rows[name] if name in new_rows else self._entries[(*key, name)] for name in names]
            self.hits += len(names) - sum(name in new_rows for name in names)
            self.encoded += len(new_rows)
            self._thread.last_encoded = len(new_rows)
            for name in names:  # most recently used last, in the order asked for
                self._touch(key, name, new_rows.get(name))
            self._apply_cap(len(set(names)))
            if new_rows:
                self._write_table(key)
            return torch.stack(rows)

    def put(self, fingerprint: str, templates_key: str, embeddings: Mapping[str, torch.Tensor]) -> None:
        """Add embeddings computed elsewhere (the `label_embeddings.safetensors` saved with a model); not written to
        disk until the table is next written."""
        key = (fingerprint, templates_key)
        with self._lock:
            self._load_table(key)
            for name, embedding in embeddings.items():
                self._touch(key, name, _storable(embedding))
            self._apply_cap(0)

    @property
    def last_lookup_encoded(self) -> int:
        """How many labels this thread's last `lookup` encoded (0: every label came from the cache)."""
        return getattr(self._thread, "last_encoded", 0)

    def labels(self, fingerprint: str, templates_key: str) -> list[str]:
        """The labels held in memory for one table, least recently used first."""
        with self._lock:
            return [name for (fp, tk, name) in self._entries if (fp, tk) == (fingerprint, templates_key)]

    def merge_from(self, other: LabelEmbeddingCache) -> None:
        """Take over `other`'s in-memory embeddings (oldest first, so its recency order is kept; the cap applies)."""
        with other._lock:
            entries = list(other._entries.items())
        with self._lock:
            for (fingerprint, templates_key, name), embedding in entries:
                self._touch((fingerprint, templates_key), name, embedding)
            self._apply_cap(0)

    def __len__(self) -> int:
        return len(self._entries)

    def clear(self) -> None:
        """Forget everything in memory (files on disk stay)."""
        with self._lock:
            self._entries.clear()
            self._table_sizes.clear()
            self._read_from_disk.clear()

    # ------------------------------------------------------------------ internals (call with the lock held)
    def _file(self, key: TableKey) -> Path | None:
        return self.directory / f"{key[0]}-{key[1]}.safetensors" if self.directory else None

    def _touch(self, key: TableKey, name: str, embedding: torch.Tensor | None) -> None:
        entry = (*key, name)
        if embedding is None:
            self._entries.move_to_end(entry)
            return
        if entry not in self._entries:
            self._table_sizes[key] += 1
        self._entries[entry] = embedding
        self._entries.move_to_end(entry)

    def _load_table(self, key: TableKey) -> None:
        if key in self._read_from_disk:
            return
        self._read_from_disk.add(key)
        path = self._file(key)
        if path is None or not path.is_file():
            return
        # Older than anything in memory: a file's labels are the first to go when the cap is reached.
        loaded = [((*key, name), _storable(row)) for name, row in read_embeddings_file(path).items()]
        fresh = [(entry, row) for entry, row in loaded if entry not in self._entries]
        self._entries = OrderedDict([*fresh, *self._entries.items()])
        self._table_sizes[key] += len(fresh)  # the caller applies the cap once the labels it asks for are marked used

    def _apply_cap(self, in_use: int) -> None:
        """Drop least recently used embeddings beyond `max_labels`; `in_use` = labels of the current request."""
        if self.max_labels is None:
            return
        if in_use > self.max_labels and not self._warned_over_cap:
            self._warned_over_cap = True
            warnings.warn(
                f"label cache: one vocabulary of {in_use} labels exceeds the cache's cap of {self.max_labels}; its "
                "labels are re-encoded every time. Raise the cap: model.set_label_cache(max_labels=...)",
                stacklevel=4,
            )
        while len(self._entries) > self.max_labels:
            (fingerprint, templates_key, _), _ = self._entries.popitem(last=False)
            key = (fingerprint, templates_key)
            self.evicted += 1
            self._table_sizes[key] -= 1
            if self._table_sizes[key] <= 0:
                del self._table_sizes[key]
                self._read_from_disk.discard(key)  # read the file again if the table is used again

    def _write_table(self, key: TableKey) -> None:
        path = self._file(key)
        if path is None:
            return
        table = [(name, row) for (fp, tk, name), row in self._entries.items() if (fp, tk) == key]
        if table:
            write_embeddings_file(path, [name for name, _ in table], torch.stack([row for _, row in table]))


def _storable(embedding: torch.Tensor) -> torch.Tensor:
    """A float32 CPU copy that autograd may use: an embedding computed under `torch.inference_mode` (a pipeline call)
    must not poison a training step that later reads it from the cache."""
    embedding = embedding.detach().to(device="cpu", dtype=torch.float32)
    if embedding.is_inference():
        with torch.inference_mode(False):
            embedding = embedding.clone()
    return embedding


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


__all__ = [
    "DEFAULT_MAX_LABELS",
    "LabelEmbeddingCache",
    "default_label_cache_dir",
    "read_embeddings_file",
    "write_embeddings_file",
]
