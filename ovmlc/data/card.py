"""The dataset card (README.md) of a canonical dataset: `configs:` for `datasets`, an `ovmlc:` block for ovmlc.

The YAML front matter carries

* `configs`: one `default` config whose `data_files` list the parquet shards of each split (what
  `datasets.load_dataset(dir)` and the Hub read),
* `dataset_info`: features and split sizes, as `push_to_hub` writes them,
* `ovmlc`: `{source, converter_version, annotation, seen_labels, unseen_labels, train_label_set, ...}`: the label
  split and provenance that ovmlc reads back with `read_card_metadata` / `read_label_split`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml
from datasets import DatasetInfo, Features

from ovmlc.files import CARD_FILE as CARD_FILENAME
from ovmlc.files import DATASET_DATA_DIR as DATA_DIR

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


def looks_like_local_path(path_or_id: str) -> bool:
    """True when the string cannot be a Hub repo id ("name" or "owner/name"), so it must be a local path."""
    return path_or_id.startswith(("/", ".", "~")) or "\\" in path_or_id or not _HUB_ID.match(path_or_id)


class CardError(ValueError):
    """A dataset card is missing or has no valid `ovmlc:` block; the message names the file."""


def split_front_matter(text: str, where: str) -> tuple[dict[str, Any], str]:
    """Split a README into its YAML front matter (as a dict) and the Markdown body."""
    if not text.startswith("---"):
        return {}, text
    parts = text.split("\n---", 1)
    if len(parts) != 2:
        raise CardError(f"{where}: YAML front matter is not closed by a '---' line")
    header = parts[0][3:]
    body = parts[1].split("\n", 1)[1] if "\n" in parts[1] else ""
    try:
        metadata = yaml.safe_load(header) or {}
    except yaml.YAMLError as error:
        raise CardError(f"{where}: invalid YAML front matter ({error})") from error
    if not isinstance(metadata, dict):
        raise CardError(f"{where}: YAML front matter must be a mapping")
    return metadata, body


def build_card_metadata(
    *,
    features: Features,
    split_sizes: Mapping[str, int],
    split_num_bytes: Mapping[str, int],
    ovmlc_block: Mapping[str, Any],
    pretty_name: str | None = None,
    license_name: str | None = None,
) -> dict[str, Any]:
    """The YAML front matter as a dict (key order is kept when dumped)."""
    metadata: dict[str, Any] = {}
    if pretty_name:
        metadata["pretty_name"] = pretty_name
    if license_name:
        metadata["license"] = license_name
    metadata["task_categories"] = ["image-classification", "zero-shot-image-classification"]
    metadata["tags"] = ["multi-label", "open-vocabulary", "ovmlc"]
    metadata["configs"] = [
        {
            "config_name": "default",
            "data_files": [{"split": split, "path": f"{DATA_DIR}/{split}-*"} for split in split_sizes],
        }
    ]
    dataset_info = DatasetInfo(features=features)._to_yaml_dict()
    dataset_info["splits"] = [
        {"name": split, "num_bytes": int(split_num_bytes.get(split, 0)), "num_examples": int(size)}
        for split, size in split_sizes.items()
    ]
    metadata["dataset_info"] = dataset_info
    metadata["ovmlc"] = dict(ovmlc_block)
    return metadata


class _NoAliasDumper(yaml.SafeDumper):
    """Writes repeated lists in full (no `&id001` anchors), so the card stays readable and tool-friendly."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def render_card(metadata: Mapping[str, Any], body: str) -> str:
    header = yaml.dump(dict(metadata), Dumper=_NoAliasDumper, sort_keys=False, allow_unicode=True, width=1000)
    return f"---\n{header}---\n\n{body.strip()}\n"


def _summary_table(split_sizes: Mapping[str, int], split_positive_counts: Mapping[str, int]) -> str:
    lines = ["| split | images | positive labels |", "| --- | ---: | ---: |"]
    for split, size in split_sizes.items():
        lines.append(f"| {split} | {size:,} | {split_positive_counts.get(split, 0):,} |")
    return "\n".join(lines)


def _label_preview(names: Sequence[str], limit: int = 40) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f", ... ({len(names) - limit} more)" if len(names) > limit else "")


def render_card_body(
    *,
    title: str,
    description: str,
    ovmlc_block: Mapping[str, Any],
    split_sizes: Mapping[str, int],
    split_positive_counts: Mapping[str, int],
    notes: Sequence[str] = (),
) -> str:
    """Human-readable card text: what the data is, how labels are encoded, the label split and the counts."""
    seen = list(ovmlc_block.get("seen_labels") or [])
    unseen = list(ovmlc_block.get("unseen_labels") or [])
    annotation = ovmlc_block.get("annotation")
    if annotation == "full":
        encoding = "Every image is fully annotated: `labels` holds the positives and every other label is negative."
    else:
        encoding = (
            "Annotation is partial: `labels` holds the positives, `negative_labels` the explicit negatives, and a "
            "label in neither column is unannotated (it must not count as positive or negative)."
        )
    partial = ovmlc_block.get("partial_label_proportion")
    sections = [
        f"# {title}",
        description.strip(),
        "## Format",
        "Canonical ovmlc multi-label dataset (parquet, images embedded as bytes): `image` (Image), `labels` "
        "(list of ClassLabel, positives), `image_id` (string)"
        + (", `negative_labels` (list of ClassLabel)" if annotation == "partial" else "")
        + ". "
        + encoding,
        '```python\nfrom datasets import load_dataset\n\ndataset = load_dataset("<this folder or repo id>")\n```',
        "```python\nfrom ovmlc.data import load_canonical, label_matrix, read_label_split\n\n"
        'dataset = load_canonical("<this folder or repo id>")\n'
        'seen, unseen = read_label_split("<this folder or repo id>")\n'
        'labels = label_matrix(dataset["test"], unseen)  # int8 [N, C]: 1 positive, -1 negative, 0 unannotated\n```',
        "## Label split",
        "\n".join(
            [
                f"- seen ({len(seen)}): {_label_preview(seen)}",
                f"- unseen ({len(unseen)}): {_label_preview(unseen) if unseen else '(none)'}",
                "- `train` and `validation` are annotated only over `train_label_set` (the seen labels); `test` over "
                "all labels. Model selection uses `validation` and never touches `test`."
                + (
                    f" `validation` was held out from the training images (fraction "
                    f"{ovmlc_block['validation_fraction']}, seed {ovmlc_block.get('seed')})."
                    if "validation_fraction" in ovmlc_block and "validation_source" not in ovmlc_block
                    else ""
                ),
            ]
        ),
    ]
    if partial is not None:
        sections.append(
            f"Partial labels: in `train` and `validation` each annotated entry was kept with probability "
            f"{partial} (seed {ovmlc_block.get('partial_label_seed')}), the rest are unannotated. The mask is stored "
            "in the data and is not redrawn per run."
        )
    sections += ["## Counts", _summary_table(split_sizes, split_positive_counts)]
    if notes:
        sections += ["## Conversion notes", "\n".join(f"- {note}" for note in notes)]
    sections += [
        "## Provenance",
        f"Converted by `ovmlc` (source `{ovmlc_block.get('source')}`, converter version "
        f"`{ovmlc_block.get('converter_version')}`). The images and annotations keep the license of the original "
        "release; check it before redistributing.",
    ]
    return "\n\n".join(section for section in sections if section)


def _card_text(path_or_id: str | os.PathLike) -> tuple[str, str]:
    """(README text, where) for a local folder or a Hub dataset id."""
    path = Path(path_or_id).expanduser()
    if path.is_dir():
        readme = path / CARD_FILENAME
        if not readme.is_file():
            raise CardError(f"{readme}: no dataset card in this folder (is it a canonical ovmlc dataset?)")
        return readme.read_text(encoding="utf-8"), str(readme)
    if path.is_file() and path.name == CARD_FILENAME:
        return path.read_text(encoding="utf-8"), str(path)
    if looks_like_local_path(str(path_or_id)):
        raise FileNotFoundError(f"{path}: no such canonical dataset folder")
    from huggingface_hub import hf_hub_download

    try:
        readme = hf_hub_download(repo_id=str(path_or_id), filename=CARD_FILENAME, repo_type="dataset")
    except Exception as error:  # noqa: BLE001 - hub errors vary (offline, missing repo, auth); report them plainly
        raise CardError(
            f"{path_or_id}: not a local folder, and its dataset card could not be fetched from the Hub ({error})"
        ) from error
    return Path(readme).read_text(encoding="utf-8"), f"{path_or_id}/{CARD_FILENAME}"


def read_card_metadata(path_or_id: str | os.PathLike) -> dict[str, Any]:
    """The `ovmlc:` block of a canonical dataset's card (local folder or Hub id)."""
    text, where = _card_text(path_or_id)
    metadata, _ = split_front_matter(text, where)
    block = metadata.get("ovmlc")
    if not isinstance(block, dict):
        raise CardError(f"{where}: the card has no 'ovmlc:' block (not written by ovmlc, or pushed without its card)")
    for key in ("seen_labels", "unseen_labels", "annotation", "source"):
        if key not in block:
            raise CardError(f"{where}: the 'ovmlc:' block has no '{key}'")
    block["seen_labels"] = [str(name) for name in block["seen_labels"] or []]
    block["unseen_labels"] = [str(name) for name in block["unseen_labels"] or []]
    block["train_label_set"] = [str(name) for name in block.get("train_label_set") or block["seen_labels"]]
    return block


def read_label_split(path_or_id: str | os.PathLike) -> tuple[list[str], list[str]]:
    """(seen labels, unseen labels) recorded in a canonical dataset's card."""
    block = read_card_metadata(path_or_id)
    return block["seen_labels"], block["unseen_labels"]
