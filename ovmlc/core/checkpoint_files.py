"""A model folder's files read with errors that name the file and say what to do: `config.json` (JSON, never
pickle) and safetensors files (their headers checked against the file's size, so random bytes, a truncated download
or an empty file fail naming the file instead of as a raw `SafetensorError`)."""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path
from typing import Any

# safetensors: 8-byte little-endian header length, a JSON header, then the tensor data the header's offsets cover.
_HEADER_LENGTH_BYTES = 8
_MAX_HEADER_BYTES = 100_000_000  # safetensors' own limit
URL_PREFIXES = ("http://", "https://")


class ModelLoadError(ValueError):
    """A model folder or one of its files cannot be used; the message names the folder or file and the fix."""


def read_json_file(path: str | os.PathLike, what: str = "file") -> Any:
    """Parse a JSON file; a file that is not JSON raises `ModelLoadError` naming it, the line and the problem."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        problem = f"not UTF-8 text: {error.reason} at byte {error.start}"
        raise ModelLoadError(f"{path}: not a JSON {what} ({problem})") from error
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise ModelLoadError(
            f"{path}: invalid JSON in this {what} ({error.msg}: line {error.lineno}, column {error.colno}). The file "
            "is damaged (an interrupted copy or edit?): restore it from where the model came from, or save the model "
            "again"
        ) from error


def read_config_file(path: str | os.PathLike) -> dict[str, Any]:
    """A model's `config.json` as a dict (`ModelLoadError` naming the file if it is not a JSON object)."""
    config = read_json_file(path, "config file")
    if not isinstance(config, dict):
        raise ModelLoadError(f"{path}: a config file must hold a JSON object, found {type(config).__name__}")
    return config


def check_safetensors_file(path: str | os.PathLike) -> None:
    """Check that `path` is a complete safetensors file (its header only is read); `ModelLoadError` naming it if not."""
    path = Path(path)
    fix = "re-download or re-save the model (its folder must hold the files save_pretrained wrote)"
    try:
        size = path.stat().st_size
        with path.open("rb") as handle:
            prefix = handle.read(_HEADER_LENGTH_BYTES)
            header_size = struct.unpack("<Q", prefix)[0] if len(prefix) == _HEADER_LENGTH_BYTES else None
            fits = header_size is not None and header_size <= min(size - _HEADER_LENGTH_BYTES, _MAX_HEADER_BYTES)
            header_bytes = handle.read(header_size) if fits else b""
    except OSError as error:
        raise ModelLoadError(f"{path}: cannot read ({error})") from error
    if header_size is None:
        raise ModelLoadError(f"{path}: not a safetensors file ({size} bytes: empty or truncated); {fix}")
    if not fits:
        raise ModelLoadError(
            f"{path}: not a safetensors file (its header claims {header_size:,} bytes, the file has {size:,}: random "
            f"bytes or a truncated file); {fix}"
        )
    try:
        header = json.loads(header_bytes)
    except ValueError as error:  # json.JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise ModelLoadError(f"{path}: not a safetensors file (its header is not JSON: {error}); {fix}") from error
    if not isinstance(header, dict):
        raise ModelLoadError(f"{path}: not a safetensors file (its header is not a JSON object); {fix}")
    data_end = 0
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        offsets = entry.get("data_offsets") if isinstance(entry, dict) else None
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(isinstance(x, int) for x in offsets)):
            raise ModelLoadError(f"{path}: not a safetensors file (tensor {name!r} has no valid data_offsets); {fix}")
        data_end = max(data_end, offsets[1])
    data_size = size - _HEADER_LENGTH_BYTES - header_size
    if data_end != data_size:
        state = "truncated" if data_end > data_size else "longer than its header says"
        raise ModelLoadError(
            f"{path}: safetensors file {state} (its tensors need {data_end:,} bytes of data, the file holds "
            f"{data_size:,}); {fix}"
        )


def missing_config_error(folder: str | os.PathLike) -> ModelLoadError:
    """The error for a folder without config.json, saying what a model folder holds."""
    folder = Path(folder)
    present = sorted(entry.name for entry in folder.iterdir())[:8] if folder.is_dir() else []
    holds = f" (it holds {', '.join(present)}{', ...' if len(present) == 8 else ''})" if present else " (it is empty)"
    return ModelLoadError(
        f"{folder}: not a model folder: config.json is missing{holds}. Give the folder save_pretrained or "
        "`ovmlc train` wrote (config.json, model.safetensors, tokenizer and preprocessor files), a Hub id such as "
        "openai/clip-vit-base-patch16, or 'synthetic'"
    )


def url_error(text: str) -> ModelLoadError:
    """The error for a URL given where a local folder or a Hub id is expected."""
    for prefix in ("https://huggingface.co/", "http://huggingface.co/", "https://hf.co/"):
        parts = text[len(prefix) :].split("/") if text.startswith(prefix) else []
        if len(parts) >= 2 and parts[0] and parts[1]:
            return ModelLoadError(f"{text}: URLs are not accepted here: give the Hub id {parts[0]}/{parts[1]} instead")
    return ModelLoadError(
        f"{text}: URLs are not accepted here: give a Hub id such as openai/clip-vit-base-patch16, a local model "
        "folder, or 'synthetic'"
    )


def is_url(text: str) -> bool:
    return str(text).strip().lower().startswith(URL_PREFIXES)


__all__ = [
    "ModelLoadError",
    "check_safetensors_file",
    "is_url",
    "missing_config_error",
    "read_config_file",
    "read_json_file",
    "url_error",
]
