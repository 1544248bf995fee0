"""Pushing ovmlc models and canonical datasets to the Hugging Face Hub (engine of `ovmlc push` / `ovmlc push-dataset`).

A model folder (written by `save_pretrained` or `ovmlc train`) is validated, then uploaded in one commit with a model
card generated from its contents (`ovmlc.model_card`). What goes up:

* `model.safetensors` (or its shards + index): weights in safetensors only; pickle files (`.bin`, `.pt`, `.pth`,
  `.pkl`, `.ckpt`, ...) anywhere in the folder are refused, since loading them can execute code;
* `config.json` with `auto_map` (the flat, self-contained method code, so `AutoModel.from_pretrained(repo,
  trust_remote_code=True)` works without ovmlc installed) and `custom_pipelines` (`pipeline.py`), calibrated
  thresholds included; an adapter-only folder (`weights_layout`) must name a base model on the Hub at a commit;
* `backbone_adapter/` (CLIP-FT LoRA: a peft adapter of the CLIP);
* the tokenizer and image-processor files, `label_embeddings.safetensors` (cached text embeddings of the label set);
* for training runs: `recipe.yaml`, `ovmlc_trainer_state.json` and the evaluation report (`eval/`: `metrics.json`,
  `results.md`, `per_label_ap.csv`, `thresholds.json`, plots);
* `README.md`: the generated card (any README.md in the folder is replaced by a fresh one naming the target repo).

Never uploaded: `checkpoints/` (resumable training state, large), tracker logs (`logs/`, `runs/`),
`scores.npz` files (large, re-created by `ovmlc evaluate`), hidden files and `__pycache__`.

A dataset folder (written by `ovmlc data prepare`) is uploaded as-is, after checking its card (README.md with
`configs` and an `ovmlc:` block) and its parquet shards: `datasets.DatasetDict.push_to_hub` would rewrite the card and
drop the seen/unseen split.

The token and endpoint come from `HF_TOKEN` / `HF_ENDPOINT` (or `hf auth login`), as everywhere in huggingface_hub.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import struct
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..files import (
    CARD_FILE,
    CHECKPOINTS_DIR,
    CONFIG_FILE,
    LOGS_DIR,
    PREPROCESSOR_FILE,
    RECIPE_FILE,
    SCORES_FILE_NAME,
    TOKENIZER_FILES,
)
from ..files import WEIGHTS_FILE as SAFETENSORS_WEIGHTS
from ..files import WEIGHTS_INDEX_FILE as SAFETENSORS_INDEX

# Serialisation formats built on pickle (torch.save, pickle, joblib): loading them can run arbitrary code.
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".joblib")
# Never uploaded from a model folder: top-level folders of training state and tracker logs, and score matrices
# (large; `ovmlc evaluate` re-creates them) wherever they are, e.g. `eval/scores.npz` of `ovmlc train`.
MODEL_EXCLUDED_DIRS = (CHECKPOINTS_DIR, "runs", LOGS_DIR, "tensorboard", "trackio", "wandb")
MODEL_EXCLUDED_FILES = (SCORES_FILE_NAME,)
MODEL_DEFAULT_COMMIT_MESSAGE = "Upload ovmlc model"
DATASET_DEFAULT_COMMIT_MESSAGE = "Upload ovmlc canonical dataset"


class HubFolderError(ValueError):
    """A folder cannot be pushed as it is; the message names the file and what to do."""


@dataclass
class UploadPlan:
    """What one push will commit: files of `folder` (relative POSIX paths), plus generated files (path -> bytes)."""

    folder: Path
    repo_id: str
    repo_type: str
    files: list[str]
    generated: dict[str, bytes] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)
    private: bool | None = None

    @property
    def paths_in_repo(self) -> list[str]:
        return sorted({*self.files, *self.generated})


def _is_hidden_or_cache(relative: Path) -> bool:
    return any(part.startswith(".") or part == "__pycache__" for part in relative.parts)


def _walk_files(folder: Path) -> list[Path]:
    return sorted(path for path in folder.rglob("*") if path.is_file())


def _refuse_pickles(paths: list[Path], folder: Path) -> None:
    pickles = [path for path in paths if path.suffix.lower() in PICKLE_SUFFIXES]
    if pickles:
        listed = ", ".join(str(path) for path in pickles[:5]) + (" ..." if len(pickles) > 5 else "")
        raise HubFolderError(
            f"{listed}: pickle-based files are refused (loading them can execute arbitrary code). ovmlc models save "
            f"safetensors only; move these files out of {folder} before pushing."
        )


def _check_safetensors_header(path: Path) -> None:
    """Read the header of a safetensors file, so a truncated or mislabelled file fails here, naming it."""
    try:
        with path.open("rb") as handle:
            (header_size,) = struct.unpack("<Q", handle.read(8))
            if header_size > path.stat().st_size:
                raise ValueError("header longer than the file")
            json.loads(handle.read(header_size))
    except (OSError, ValueError, struct.error) as error:
        raise HubFolderError(f"{path}: not a readable safetensors file ({error})") from error


def _load_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise HubFolderError(f"{path}: cannot read JSON ({error})") from error


def validate_model_folder(folder: str | os.PathLike) -> tuple[list[str], list[str]]:
    """Check that `folder` is a complete, safe ovmlc model folder.

    Returns `(files to upload, skipped files)` as relative POSIX paths. Raises `HubFolderError` naming the missing or
    offending file: no `config.json`, not an ovmlc `model_type`, no safetensors weights (or a missing shard), pickle
    files, no `auto_map` / method code, no `pipeline.py`, no image-processor or tokenizer files.
    """
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise HubFolderError(f"{folder}: no such model folder")
    config_file = folder / CONFIG_FILE
    if not config_file.is_file():
        raise HubFolderError(
            f"{config_file} is missing: push a folder written by `model.save_pretrained(...)` or `ovmlc train`"
        )
    config = _load_json(config_file)
    model_type = config.get("model_type") if isinstance(config, dict) else None
    if not str(model_type or "").startswith("ovmlc"):
        raise HubFolderError(f"{config_file}: model_type {model_type!r} is not an ovmlc model (expected 'ovmlc_*')")

    uploaded, skipped = [], []
    for path in _walk_files(folder):
        relative = path.relative_to(folder)
        excluded = (
            relative.parts[0] in MODEL_EXCLUDED_DIRS
            or relative.name in MODEL_EXCLUDED_FILES
            or _is_hidden_or_cache(relative)
        )
        (skipped if excluded or relative.as_posix() == CARD_FILE else uploaded).append(relative.as_posix())
    _refuse_pickles([folder / name for name in uploaded], folder)

    if (folder / SAFETENSORS_INDEX).is_file():
        weight_map = _load_json(folder / SAFETENSORS_INDEX).get("weight_map") or {}
        shards = sorted(set(weight_map.values()))
        if not shards:
            raise HubFolderError(f"{folder / SAFETENSORS_INDEX}: empty weight_map")
        for shard in shards:
            if not (folder / shard).is_file():
                raise HubFolderError(f"{folder / shard} is missing (listed in {SAFETENSORS_INDEX})")
            _check_safetensors_header(folder / shard)
    elif (folder / SAFETENSORS_WEIGHTS).is_file():
        _check_safetensors_header(folder / SAFETENSORS_WEIGHTS)
    else:
        raise HubFolderError(f"{folder / SAFETENSORS_WEIGHTS} is missing: no safetensors weights in {folder}")

    auto_map = config.get("auto_map") or {}
    if "AutoModel" not in auto_map or "AutoConfig" not in auto_map:
        raise HubFolderError(
            f"{config_file}: no auto_map for AutoConfig/AutoModel, so `trust_remote_code=True` could not find the "
            "model code; re-save the model with `model.save_pretrained(...)`"
        )
    code_modules = {reference.split("--")[-1].rsplit(".", 1)[0] for reference in auto_map.values()}
    for pipeline in (config.get("custom_pipelines") or {}).values():
        code_modules.add(str(pipeline.get("impl", "")).rsplit(".", 1)[0])
    for module in sorted(code_modules):
        if module and not (folder / f"{module}.py").is_file():
            raise HubFolderError(f"{folder / (module + '.py')} is missing (referenced by {config_file})")

    if config.get("weights_layout") == "adapter_only":
        _check_adapter_only_base(config, config_file)

    if not (folder / PREPROCESSOR_FILE).is_file():
        raise HubFolderError(
            f"{folder / PREPROCESSOR_FILE} is missing: the Hub model could not preprocess images. Save a model whose "
            "`image_processor` is set (from_clip/from_pretrained attach it)."
        )
    if not any((folder / name).is_file() for name in TOKENIZER_FILES):
        raise HubFolderError(
            f"{folder}: no tokenizer files ({', '.join(TOKENIZER_FILES)}): the Hub model could not encode labels. "
            "Save a model whose `tokenizer` is set (from_clip/from_pretrained attach it)."
        )
    return uploaded, skipped


def _check_adapter_only_base(config: dict, config_file: Path) -> None:
    """An adapter-only folder loads its base model from a reference: a Hub user can follow only a Hub id at a commit."""
    from ..core.backbones import BACKBONE_ALIASES
    from ..core.weights_layout import is_hub_id

    base = config.get("base_model_name_or_path")
    revision = config.get("base_model_revision")
    modules = ", ".join(config.get("base_model_modules") or []) or "the base modules"
    fix = (
        "Save the model with `save_pretrained(..., save_backbone=True)` (the whole model), or push the base model to "
        "the Hub first and build this model from its Hub id."
    )
    if not is_hub_id(base, aliases=BACKBONE_ALIASES):
        raise HubFolderError(
            f"{config_file}: this adapter-only folder takes {modules} from the base model {base!r}, a local path (or "
            f"ovmlc's offline alias) that a Hub user cannot reach. {fix}"
        )
    if not revision or not re.fullmatch(r"[0-9a-f]{40}", str(revision)):
        raise HubFolderError(
            f"{config_file}: the base model {base!r} of this adapter-only folder is not pinned to a commit "
            f"(base_model_revision={revision!r}), so later pushes to it would change this model. {fix}"
        )


def plan_model_upload(
    folder: str | os.PathLike,
    repo_id: str,
    revision: str | None = None,
    license: str | None = None,  # noqa: A002 - the Hub metadata key
    tags: list[str] | None = None,
) -> UploadPlan:
    """Validate a model folder and render its card for `repo_id` (snippets pinned to `revision`, default `main`;
    `license` and `tags` add to the recipe's `hub.license` / `hub.tags`)."""
    from .model_card import build_model_card

    folder = Path(folder).expanduser()
    files, skipped = validate_model_folder(folder)
    card = build_model_card(folder, repo_id=repo_id, revision=revision or "main", license=license, tags=tags)
    private = None
    if (folder / RECIPE_FILE).is_file():
        import yaml

        recipe = yaml.safe_load((folder / RECIPE_FILE).read_text(encoding="utf-8")) or {}
        private = ((recipe.get("hub") or {}) if isinstance(recipe, dict) else {}).get("private")
    return UploadPlan(
        folder=folder,
        repo_id=repo_id,
        repo_type="model",
        files=files,
        generated={CARD_FILE: str(card).encode("utf-8")},
        skipped=skipped,
        private=private,
    )


def validate_dataset_folder(folder: str | os.PathLike) -> tuple[list[str], list[str]]:
    """Check a canonical dataset folder: README.md whose YAML has `configs` (with `data_files` that match parquet
    files of the folder) and an `ovmlc:` block, parquet shards present, no pickle files.

    Returns `(files to upload, skipped files)`; raises `HubFolderError` naming the file.
    """
    from ..data.card import CardError, read_card_metadata, split_front_matter

    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise HubFolderError(f"{folder}: no such dataset folder")
    readme = folder / CARD_FILE
    if not readme.is_file():
        raise HubFolderError(f"{readme} is missing: push a folder written by `ovmlc data prepare` (it writes the card)")
    try:
        metadata, _ = split_front_matter(readme.read_text(encoding="utf-8"), str(readme))
        read_card_metadata(folder)
    except CardError as error:
        raise HubFolderError(str(error)) from error
    configs = metadata.get("configs")
    if not isinstance(configs, list) or not configs:
        raise HubFolderError(f"{readme}: no 'configs' in the YAML header, so the Hub could not find the data files")

    uploaded, skipped = [], []
    for path in _walk_files(folder):
        relative = path.relative_to(folder)
        (skipped if _is_hidden_or_cache(relative) else uploaded).append(relative.as_posix())
    _refuse_pickles([folder / name for name in uploaded], folder)
    parquet_files = [name for name in uploaded if name.endswith(".parquet")]
    if not parquet_files:
        raise HubFolderError(f"{folder}: no parquet files (expected data/<split>-*.parquet next to README.md)")
    for config in configs:
        data_files = config.get("data_files") if isinstance(config, dict) else None
        if not isinstance(data_files, list) or not data_files:
            raise HubFolderError(f"{readme}: config {config!r} has no data_files list")
        for entry in data_files:
            patterns = entry.get("path") if isinstance(entry, dict) else entry
            for pattern in [patterns] if isinstance(patterns, str) else list(patterns or []):
                if not any(fnmatch.fnmatch(name, pattern) for name in parquet_files):
                    split = entry.get("split") if isinstance(entry, dict) else None
                    raise HubFolderError(
                        f"{readme}: data_files pattern {pattern!r} (split {split!r}) matches no parquet file of "
                        f"{folder}"
                    )
    return uploaded, skipped


def plan_dataset_upload(folder: str | os.PathLike, repo_id: str) -> UploadPlan:
    folder = Path(folder).expanduser()
    files, skipped = validate_dataset_folder(folder)
    return UploadPlan(folder=folder, repo_id=repo_id, repo_type="dataset", files=files, skipped=skipped)


def upload(
    plan: UploadPlan,
    *,
    private: bool | None = None,
    revision: str | None = None,
    commit_message: str | None = None,
    commit_description: str | None = None,
    create_pr: bool = False,
    token: str | None = None,
):
    """Create the repo (if needed) and the branch `revision` (if not `main`), then commit every planned file.

    Returns huggingface_hub's `CommitInfo` (`commit_url`, `oid`, `pr_url`).
    """
    from huggingface_hub import CommitOperationAdd, HfApi

    api = HfApi(token=token)
    private = plan.private if private is None else private
    api.create_repo(plan.repo_id, repo_type=plan.repo_type, private=private, exist_ok=True)
    if revision and revision != "main" and not revision.startswith("refs/pr/"):
        api.create_branch(plan.repo_id, branch=revision, repo_type=plan.repo_type, exist_ok=True)
    operations = [
        CommitOperationAdd(path_in_repo=name, path_or_fileobj=str(plan.folder / name))
        for name in plan.files
        if name not in plan.generated
    ]
    operations += [CommitOperationAdd(path_in_repo=name, path_or_fileobj=data) for name, data in plan.generated.items()]
    default_message = MODEL_DEFAULT_COMMIT_MESSAGE if plan.repo_type == "model" else DATASET_DEFAULT_COMMIT_MESSAGE
    return api.create_commit(
        plan.repo_id,
        operations=operations,
        commit_message=commit_message or default_message,
        commit_description=commit_description,
        repo_type=plan.repo_type,
        revision=revision,
        create_pr=create_pr,
    )


def push_model(
    folder: str | os.PathLike,
    repo_id: str,
    *,
    private: bool | None = None,
    revision: str | None = None,
    commit_message: str | None = None,
    commit_description: str | None = None,
    create_pr: bool = False,
    license: str | None = None,  # noqa: A002 - the Hub metadata key
    tags: list[str] | None = None,
    token: str | None = None,
):
    """Validate a model folder and push it with a generated model card; returns the `CommitInfo`.

    `private=None` keeps the recipe's `hub.private` (or the Hub default for a new repo); `revision` is a branch,
    created from `main` if it does not exist; `tags` are added to the card's tags.
    """
    plan = plan_model_upload(folder, repo_id, revision=revision, license=license, tags=tags)
    return upload(
        plan,
        private=private,
        revision=revision,
        commit_message=commit_message,
        commit_description=commit_description,
        create_pr=create_pr,
        token=token,
    )


def push_dataset(
    folder: str | os.PathLike,
    repo_id: str,
    *,
    private: bool | None = None,
    revision: str | None = None,
    commit_message: str | None = None,
    token: str | None = None,
):
    """Validate a canonical dataset folder and push it as-is (card included) to a dataset repo."""
    return upload(
        plan_dataset_upload(folder, repo_id),
        private=private,
        revision=revision,
        commit_message=commit_message,
        token=token,
    )


def push_pretrained_model(
    model,
    repo_id: str,
    *,
    commit_message: str | None = None,
    commit_description: str | None = None,
    private: bool | None = None,
    token: str | bool | None = None,
    revision: str | None = None,
    create_pr: bool = False,
    max_shard_size: int | str | None = "50GB",
    tags: list[str] | None = None,
):
    """What `OVMLCPreTrainedModel.push_to_hub` does: `save_pretrained` into a temporary folder, then `push_model`,
    so the README it uploads is the generated ovmlc card (transformers' own push_to_hub would upload a generic one).
    `tags` are added to the card's tags."""
    with tempfile.TemporaryDirectory(prefix="ovmlc-push-") as directory:
        model.save_pretrained(directory, max_shard_size=max_shard_size)
        return push_model(
            directory,
            repo_id,
            private=private,
            revision=revision,
            commit_message=commit_message,
            commit_description=commit_description,
            create_pr=create_pr,
            tags=tags,
            token=token if isinstance(token, str) else None,
        )


__all__ = [
    "HubFolderError",
    "UploadPlan",
    "plan_dataset_upload",
    "plan_model_upload",
    "push_dataset",
    "push_model",
    "push_pretrained_model",
    "upload",
    "validate_dataset_folder",
    "validate_model_folder",
]
