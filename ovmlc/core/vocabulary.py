"""The label set as a runtime object: validated names, prompt templates and label sets (package data) and cached
text embeddings (through `LabelEmbeddingCache`, in `label_cache.py`)."""

from __future__ import annotations

import hashlib
import json
import os
import re
import warnings
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Literal

import torch
from huggingface_hub.utils import tqdm

from ..resources import LABELSETS_DIR, TEMPLATES_DIR
from .label_cache import LabelEmbeddingCache

PoolMode = Literal["raw", "normalized"]
# Vocabularies with more prompts than this show a progress bar while encoding.
PROGRESS_MIN_PROMPTS = 2048


class LabelTruncatedWarning(UserWarning):
    """Label prompts longer than the text tower's context are cut: labels differing only after the cut score alike."""


def warn_truncated_labels(tokenizer, labels: Sequence[str], templates: Sequence[str], limit: int) -> list[str]:
    """Warn (`LabelTruncatedWarning`, naming them and the limit) about labels whose prompt under the longest template
    has more than `limit` tokens, so the text tower sees only its start; returns those labels."""
    longest = max(templates, key=lambda template: len(tokenizer(template.format(""))["input_ids"]))
    # A token covers at least one character: prompts up to `limit - 2` characters (+ BOS, EOS) cannot be cut, so
    # usual labels cost no tokenizing, and cached labels are checked too.
    labels = [label for label in labels if len(longest.format(label)) > limit - 2]
    if not labels:
        return []
    prompts = [longest.format(label) for label in labels]
    # one token past the limit tells a cut prompt (and keeps transformers' "longer than the maximum" log quiet)
    lengths = [len(ids) for ids in tokenizer(prompts, truncation=True, max_length=limit + 1)["input_ids"]]
    cut = [label for label, length in zip(labels, lengths) if length > limit]
    if cut:
        shown = ", ".join(repr(label[:60] + ("..." if len(label) > 60 else "")) for label in cut[:5])
        more = f" and {len(cut) - 5} more" if len(cut) > 5 else ""
        warnings.warn(
            f"{len(cut)} label(s) are longer than the text tower's context of {limit} tokens (with the prompt "
            f"template) and are cut there: {shown}{more}. Labels that differ only after the cut get identical scores; "
            "shorten them.",
            LabelTruncatedWarning,
            stacklevel=2,
        )
    return cut


def list_templates() -> list[str]:
    """Names of the prompt-template files shipped in `ovmlc/templates/`."""
    return sorted(path.stem for path in TEMPLATES_DIR.glob("*.json"))


def _require_package_data(directory: Path, what: str) -> None:
    """The flat remote-code copy of this module (next to a Hub model) has no package data: say so, not "unknown"."""
    if not directory.is_dir():
        raise FileNotFoundError(
            f"{what} is a name of ovmlc's package data ({directory.name}/), which this copy of the model code does not "
            "carry (Hub remote code holds no data files). Pass the value itself (templates: a list of strings with "
            "'{}'; labels: a list of names), or `pip install ovmlc` and load the model with `ovmlc.load_model`."
        )


def load_templates(spec: str | os.PathLike | Sequence[str]) -> list[str]:
    """Resolve a template spec: a shipped name (`"single"`, `"imagenet80"`, `"scene5"`, `"qks-pool85"`, `"mkt"`),
    a JSON file with a `templates` list, one template string containing `{}`, or a list of such strings."""
    if isinstance(spec, (str, os.PathLike)):
        text = str(spec)
        if (TEMPLATES_DIR / f"{text}.json").is_file():
            templates = json.loads((TEMPLATES_DIR / f"{text}.json").read_text())["templates"]
        elif text.endswith(".json") and Path(text).is_file():
            payload = json.loads(Path(text).read_text())
            templates = payload["templates"] if isinstance(payload, dict) else payload
        elif "{}" in text:
            templates = [text]
        else:
            _require_package_data(TEMPLATES_DIR, f"prompt templates {text!r}")
            raise ValueError(
                f"unknown prompt templates {text!r}: use one of {list_templates()}, a .json file, "
                "or a string with '{}'"
            )
    else:
        templates = list(spec)
    if not templates:
        raise ValueError("prompt templates: the list is empty")
    bad = [template for template in templates if not isinstance(template, str) or template.count("{}") != 1]
    if bad:
        raise ValueError(f"prompt templates must contain exactly one '{{}}' placeholder: {bad[:5]}")
    return list(templates)


def load_labelset(name_or_path: str | os.PathLike) -> dict:
    """A label set shipped in `ovmlc/labelsets/` (or a JSON path): `{"name", "labels", "unseen"?, "source"?}`."""
    path = LABELSETS_DIR / f"{name_or_path}.json"
    if not path.is_file():
        path = Path(name_or_path)
    if not path.is_file():
        _require_package_data(LABELSETS_DIR, f"label set {str(name_or_path)!r}")
        available = sorted(p.stem for p in LABELSETS_DIR.glob("*.json"))
        raise FileNotFoundError(f"label set {name_or_path!r} not found; shipped label sets: {available}")
    return json.loads(path.read_text())


def normalize_label(name: str) -> str:
    """The key under which two label names count as the same label (case and whitespace insensitive)."""
    return re.sub(r"\s+", " ", name).strip().casefold()


def validate_labels(labels: Iterable) -> list[str]:
    """Check label names and return them stripped; raise `ValueError` naming every offender."""
    if isinstance(labels, str):
        raise ValueError(f"labels must be a list of names, got the single string {labels!r} (split it first)")
    labels = list(labels)
    if not labels:
        raise ValueError("no labels given: pass at least one label name")
    not_strings = [(index, label) for index, label in enumerate(labels) if not isinstance(label, str)]
    if not_strings:
        raise ValueError(f"label names must be strings; offenders (index, value): {not_strings[:10]}")
    cleaned = [re.sub(r"\s+", " ", label).strip() for label in labels]
    empty = [index for index, label in enumerate(cleaned) if not label]
    if empty:
        raise ValueError(f"empty label names at positions {empty[:10]}")
    seen: dict[str, str] = {}
    duplicates: list[str] = []
    for label in cleaned:
        key = normalize_label(label)
        if key in seen:
            duplicates.append(f"{label!r} (same as {seen[key]!r})")
        else:
            seen[key] = label
    if duplicates:
        raise ValueError(f"duplicate labels after whitespace/case normalisation: {', '.join(duplicates[:10])}")
    return cleaned


def _templates_key(templates: Sequence[str], pool: str) -> str:
    return hashlib.sha256(json.dumps([list(templates), pool]).encode()).hexdigest()[:16]


class LabelVocabulary:
    """Label names plus the prompt templates that turn them into text embeddings.

    >>> vocab = LabelVocabulary(["cat", "dog"], templates="single")
    >>> vocab.prompts("cat")
    ['a photo of a cat.']
    >>> len(vocab.add(["bird"]))
    3

    With several templates (a "prompt pool"), a label's embedding is the mean over templates of the raw text
    embeddings (`pool="raw"`, as QKS) or of the L2-normalised ones (`pool="normalized"`, as CLIP/ViLD).
    """

    def __init__(
        self,
        labels: Iterable[str],
        templates: str | os.PathLike | Sequence[str] = "single",
        pool: PoolMode = "raw",
    ):
        if pool not in ("raw", "normalized"):
            raise ValueError(f"pool must be 'raw' or 'normalized', got {pool!r}")
        self.names = validate_labels(labels)
        self.templates = load_templates(templates)
        self.pool = pool
        self._index = {normalize_label(name): index for index, name in enumerate(self.names)}

    @classmethod
    def from_labelset(cls, name_or_path: str | os.PathLike, subset: str = "all", **kwargs) -> LabelVocabulary:
        """Build from a shipped label set; `subset` is "all", "seen" or "unseen"."""
        labelset = load_labelset(name_or_path)
        unseen = set(labelset.get("unseen", []))
        names = {
            "all": labelset["labels"],
            "seen": [label for label in labelset["labels"] if label not in unseen],
            "unseen": [label for label in labelset["labels"] if label in unseen],
        }[subset]
        return cls(names, **kwargs)

    def __len__(self) -> int:
        return len(self.names)

    def __iter__(self) -> Iterator[str]:
        return iter(self.names)

    def __getitem__(self, index: int) -> str:
        return self.names[index]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and normalize_label(name) in self._index

    def __eq__(self, other: object) -> bool:
        return isinstance(other, LabelVocabulary) and (self.names, self.templates, self.pool) == (
            other.names,
            other.templates,
            other.pool,
        )

    def __hash__(self) -> int:
        return hash((tuple(self.names), tuple(self.templates), self.pool))

    def __repr__(self) -> str:
        preview = ", ".join(self.names[:5]) + (", ..." if len(self.names) > 5 else "")
        return (
            f"LabelVocabulary({len(self)} labels: [{preview}], {len(self.templates)} template(s), pool={self.pool!r})"
        )

    def index(self, name: str) -> int:
        try:
            return self._index[normalize_label(name)]
        except KeyError:
            raise KeyError(f"label {name!r} is not in this vocabulary") from None

    def add(self, labels: Iterable[str]) -> LabelVocabulary:
        """A new vocabulary with `labels` appended (cached embeddings of the existing labels are reused)."""
        return LabelVocabulary([*self.names, *validate_labels(labels)], self.templates, self.pool)

    def with_templates(self, templates: str | Sequence[str], pool: PoolMode | None = None) -> LabelVocabulary:
        return LabelVocabulary(self.names, templates, pool or self.pool)

    def prompts(self, label: str) -> list[str]:
        return [template.format(label) for template in self.templates]

    @property
    def templates_key(self) -> str:
        return _templates_key(self.templates, self.pool)

    @torch.no_grad()
    def encode(
        self,
        clip,
        tokenizer,
        cache: LabelEmbeddingCache | None = None,
        fingerprint: str | None = None,
        batch_size: int = 256,
        dtype: torch.dtype | None = None,
        progress: bool | None = None,
    ) -> torch.Tensor:
        """Text embeddings `[C, D]` (float32, not normalised unless `pool="normalized"`) in label order.

        Only labels missing from `cache` are encoded. `dtype=torch.bfloat16` runs the text tower under autocast
        (~2x faster on CPU). The tokens a template puts before every label are encoded once (`prefix_sharing`), the
        rest sorted by length and padded to the longest in each batch, not to 77. Labels whose prompts exceed the
        text tower's context are cut there: `LabelTruncatedWarning` names them.
        """
        from .backbones import module_fingerprint, text_context_length, text_fingerprint_extra, text_tower_modules

        limit = min(int(getattr(tokenizer, "model_max_length", 77) or 77), text_context_length(clip))
        warn_truncated_labels(tokenizer, self.names, self.templates, limit)
        if cache is None:
            cache = LabelEmbeddingCache(max_labels=None)  # this call only
        if fingerprint is None:
            fingerprint = module_fingerprint(*text_tower_modules(clip), extra=text_fingerprint_extra(clip))

        def encode_missing(missing: list[str]) -> torch.Tensor:
            encoded = self._encode_labels(clip, tokenizer, missing, batch_size, dtype, progress)
            return torch.stack([encoded[name] for name in missing])  # [M, D]

        return cache.lookup(fingerprint, self.templates_key, self.names, encode_missing)

    def _encode_labels(self, clip, tokenizer, labels, batch_size, dtype, progress) -> dict[str, torch.Tensor]:
        from .backbones import encode_prompts_plain, encode_prompts_sharing_prefix, supports_prefix_sharing

        device = next(clip.parameters()).device
        total = len(labels) * len(self.templates)
        show = progress if progress is not None else total > PROGRESS_MIN_PROMPTS
        autocast = torch.autocast(device.type, dtype=dtype, enabled=dtype not in (None, torch.float32))
        with tqdm(total=total, desc="Encoding label prompts", unit="prompt", disable=not show) as bar, autocast:
            if supports_prefix_sharing(clip):  # one template at a time: its shared start is encoded once
                per_template = [
                    encode_prompts_sharing_prefix(
                        clip, tokenizer, [template.format(label) for label in labels], batch_size, bar.update
                    )
                    for template in self.templates
                ]
                embeddings = torch.stack(per_template, dim=1)  # [C, T, D]
            else:
                prompts = [prompt for label in labels for prompt in self.prompts(label)]
                embeddings = encode_prompts_plain(clip, tokenizer, prompts, batch_size, bar.update)  # [C * T, D]
        embeddings = embeddings.view(len(labels), len(self.templates), -1)  # [C, T, D]
        if self.pool == "normalized":
            embeddings = torch.nn.functional.normalize(embeddings, dim=-1)
        pooled = embeddings.mean(dim=1)  # [C, D]
        if self.pool == "normalized":
            pooled = torch.nn.functional.normalize(pooled, dim=-1)
        return dict(zip(labels, pooled))
