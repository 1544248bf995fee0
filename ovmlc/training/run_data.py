"""The data of a run: the canonical dataset's splits and label rows, the torch datasets the loaders read (decoded
images, or cached frozen image features) and the DataLoaders."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .errors import TrainingError
from .label_space import LabelSpace, resolve_label_space
from .recipe import Recipe, RecipeError


def check_dataset_path(recipe: Recipe) -> None:
    """Fail fast (before loading anything heavy) when `dataset.path` is a missing local folder."""
    from ..data.storage import looks_like_local_path

    path = Path(recipe.dataset.path).expanduser()
    if not path.exists():
        if looks_like_local_path(recipe.dataset.path):
            raise RecipeError(f"recipe {recipe.source}: dataset.path {recipe.dataset.path!r} does not exist")
        if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes", "on"):
            raise RecipeError(
                f"recipe {recipe.source}: dataset.path {recipe.dataset.path!r} is not a local folder and the Hub is "
                f"offline (HF_HUB_OFFLINE)"
            )
    if path.exists() and not path.is_dir():
        raise RecipeError(f"recipe {recipe.source}: dataset.path {recipe.dataset.path!r} is not a folder")


@dataclass
class RunData:
    """The splits a run uses (`train` only when it trains), their label rows and the label space."""

    labels: LabelSpace
    splits: dict[str, Any]  # "train" | "validation" | "test" -> datasets.Dataset (limited by max_*_samples)
    # int8 [N, C] in {1, 0, -1}: train over `labels.train`, validation/test over `labels.evaluation`.
    label_rows: dict[str, np.ndarray]
    validation_columns: list[int]  # columns of `labels.evaluation` that validation ranks (`labels.validation`)
    trains: bool  # False for `training.epochs: 0` / `max_steps: 0` (evaluation only)
    datasets: dict[str, torch.utils.data.Dataset] = field(default_factory=dict)  # filled by `build_datasets`
    use_feature_cache: bool = False
    feature_cache_seconds: float = 0.0

    @property
    def validation_label_rows(self) -> np.ndarray:
        """`[N_val, C_val]`: the validation rows over `labels.validation`."""
        return self.label_rows["validation"][:, self.validation_columns]


def load_run_data(recipe: Recipe, accelerator, print_fn=print) -> RunData:
    from ..data import label_matrix, load_canonical, read_label_split

    with accelerator.main_process_first():  # one process builds the datasets cache, the others reuse it
        dataset = load_canonical(recipe.dataset.path)
    try:
        card_split = read_label_split(recipe.dataset.path)
    except (OSError, ValueError):
        card_split = ([], [])  # no ovmlc card block (e.g. an in-memory export): every label is seen
    # `training.epochs: 0` (or `max_steps: 0`) only evaluates: no train split needed.
    trains = bool(recipe.training.max_steps if recipe.training.max_steps is not None else recipe.training.epochs)
    needed = [recipe.dataset.validation_split, recipe.dataset.test_split]
    if trains:
        needed.insert(0, recipe.dataset.train_split)
    for split in needed:
        if split not in dataset:
            raise RecipeError(
                f"recipe {recipe.source}: dataset {recipe.dataset.path} has no split {split!r} "
                f"(it has {', '.join(dataset)})"
            )
    labels = resolve_label_space(recipe, dataset, card_split)

    def limited(split: str, limit: int | None):
        data = dataset[split]
        return data if limit is None else data.select(range(min(limit, len(data))))

    splits = {
        "validation": limited(recipe.dataset.validation_split, recipe.dataset.max_eval_samples),
        "test": limited(recipe.dataset.test_split, recipe.dataset.max_eval_samples),
    }
    if trains:
        splits["train"] = limited(recipe.dataset.train_split, recipe.dataset.max_train_samples)
        if recipe.dataset.shots is not None:
            splits["train"] = few_shot_train_split(recipe, splits["train"], labels, print_fn)
    for name, split in splits.items():
        if len(split) == 0:
            raise TrainingError(f"dataset {recipe.dataset.path}: the {name} split is empty")
    # Built from the Arrow label columns (no image decoding).
    label_rows = {
        "validation": label_matrix(splits["validation"], labels.evaluation),
        "test": label_matrix(splits["test"], labels.evaluation),
    }
    if "train" in splits:
        label_rows["train"] = label_matrix(splits["train"], labels.train)
    if recipe.dataset.partial_label is not None:
        mask_partial_labels(recipe, splits, label_rows, labels)
    validation_columns = [labels.evaluation.index(name) for name in labels.validation]
    return RunData(labels, splits, label_rows, validation_columns, trains)


def few_shot_train_split(recipe: Recipe, split, labels: LabelSpace, print_fn=print):
    """`dataset.shots` images per training label (single-label data), drawn with `dataset.shots_seed`."""
    from ..data import CanonicalSchemaError
    from ..data.few_shot import few_shot_subset

    dataset = recipe.dataset
    seed = dataset.shots_seed if dataset.shots_seed is not None else recipe.training.seed
    try:
        subset = few_shot_subset(
            split, labels.train, dataset.shots, seed, where=f"dataset {dataset.path} ({dataset.train_split})"
        )
    except CanonicalSchemaError as error:
        raise TrainingError(f"recipe {recipe.source}: dataset.shots: {error}") from None
    print_fn(
        f"ovmlc train: {dataset.shots}-shot training set (seed {seed}): {len(subset)} images of "
        f"{len(labels.train)} labels"
    )
    return subset


def mask_partial_labels(
    recipe: Recipe, splits: dict[str, Any], label_rows: dict[str, np.ndarray], labels: LabelSpace
) -> None:
    """`dataset.partial_label: P`: keep each annotated training-label entry of train and validation with probability P
    (seeded per image by `dataset.partial_label_seed`, the draws of `ovmlc data prepare --partial-ratio`); the test
    split stays fully annotated. Edits `label_rows` in place."""
    from ..data import dataset_label_names, read_card_metadata
    from ..data.splits import mask_partial_label_rows

    try:
        stored = read_card_metadata(recipe.dataset.path).get("partial_label_proportion")
    except (OSError, ValueError):
        stored = None
    if stored is not None:
        raise RecipeError(
            f"recipe {recipe.source}: dataset {recipe.dataset.path} already keeps only {stored} of its labels "
            f"(prepared with --partial-ratio); dataset.partial_label would mask it twice: set it to null"
        )
    proportion, seed = recipe.dataset.partial_label, recipe.dataset.partial_label_seed
    for name in ("train", "validation"):
        split = splits.get(name)
        if split is None:
            continue
        if "image_id" not in split.column_names:
            raise TrainingError(f"dataset {recipe.dataset.path}: dataset.partial_label needs an image_id column")
        ids_of = {label: index for index, label in enumerate(dataset_label_names(split))}
        names = labels.train if name == "train" else labels.evaluation
        columns = [names.index(label) for label in labels.train]
        rows = label_rows[name]
        rows[:, columns] = mask_partial_label_rows(
            rows[:, columns], split["image_id"], [ids_of[label] for label in labels.train], proportion, seed
        )


def build_datasets(recipe: Recipe, model, accelerator, data: RunData, print_fn=print) -> None:
    """Fill `data.datasets` (torch datasets per split) and decide on the feature cache; moves `model` to the device."""
    from .data import LabeledFeatureDataset, LabeledImageDataset
    from .transforms import build_image_transforms

    training = recipe.training
    uses_frozen = bool(model.uses_frozen_image_features)
    augmenting = training.augment != "none"
    if augmenting and not model.augment_allowed:
        raise RecipeError(
            f"recipe {recipe.source}: method {recipe.method!r} does not allow augmentation; set training.augment: none"
        )
    if training.feature_cache is True and not uses_frozen:
        raise RecipeError(
            f"recipe {recipe.source}: training.feature_cache is true but method {recipe.method!r} does not train "
            f"from frozen image features; use auto or false"
        )
    if training.feature_cache is True and augmenting:
        raise RecipeError(f"recipe {recipe.source}: training.feature_cache true needs training.augment: none")
    # Only training reuses features (evaluation-only runs read every image once anyway).
    data.use_feature_cache = data.trains and uses_frozen and training.feature_cache in (True, "auto") and not augmenting
    if data.use_feature_cache:
        trainable_image_side = [
            name
            for module in model.image_side_modules()
            for name, parameter in module.named_parameters()
            if parameter.requires_grad
        ]
        if trainable_image_side:
            raise TrainingError(
                f"method {recipe.method!r} says its image features are frozen, but image-side parameters "
                f"{trainable_image_side[:3]} are trainable: the feature cache would go stale (set "
                f"training.feature_cache: false or freeze them)"
            )

    model.to(accelerator.device)
    train_transform, eval_transform, transform_description = build_image_transforms(recipe, model)
    objects = object_targets_of(recipe, model, data, train_transform, print_fn if accelerator.is_main_process else None)
    for name, split in data.splits.items():
        rows = data.label_rows[name] if name == "train" else None
        if data.use_feature_cache:
            features = _cached_features(recipe, model, accelerator, data, name, eval_transform, transform_description)
            data.datasets[name] = LabeledFeatureDataset(features, rows, objects if name == "train" else None)
        elif name == "train":
            augment_seed = training.seed if augmenting else None
            data.datasets[name] = LabeledImageDataset(
                split, train_transform, rows, augment_seed=augment_seed, objects=objects
            )
        else:
            data.datasets[name] = LabeledImageDataset(split, eval_transform)
    if accelerator.is_main_process:
        cached = "cached image features" if data.use_feature_cache else "images"
        sizes = ", ".join(f"{name} {len(dataset)}" for name, dataset in data.datasets.items())
        print_fn(f"ovmlc train: {recipe.method} on {recipe.dataset.path} ({sizes}; training from {cached})")


def object_targets_of(recipe: Recipe, model, data: RunData, train_transform, print_fn=None):
    """Box targets of the train split (`ObjectTargets`) for methods that train on boxes (`uses_object_boxes`), when
    the split has an `objects` column; mapped through the train transform's resize/crop (such methods do not allow
    augmentation, so training images go through the evaluation geometry)."""
    from ..core.regions import UnsupportedGeometryError
    from ..data.objects import has_objects, object_targets

    train = data.splits.get("train")
    if train is None or not model.uses_object_boxes or not has_objects(train):
        return None
    try:
        targets = object_targets(train, data.labels.train, train_transform.to_config()["steps"])
    except UnsupportedGeometryError as error:
        raise RecipeError(f"recipe {recipe.source}: box targets: {error}") from None
    if print_fn is not None:
        boxes = int((targets.labels >= 0).sum())
        print_fn(f"ovmlc train: {boxes:,} object boxes of the training labels in {len(targets):,} images")
    return targets


def _cached_features(recipe: Recipe, model, accelerator, data: RunData, split_name: str, eval_transform, description):
    """The split's frozen image features, from the cache (built now, spread over the processes, when missing)."""
    from .data import LabeledImageDataset
    from .feature_cache import (
        CachedFeatures,
        build_feature_cache,
        cache_description,
        cache_path,
        default_feature_cache_dir,
    )

    training = recipe.training
    split = data.splits[split_name]
    dataset_path = Path(recipe.dataset.path)
    dataset_id = str(dataset_path.expanduser().resolve()) if dataset_path.exists() else recipe.dataset.path
    key = cache_description(
        dataset=dataset_id,
        dataset_fingerprint=getattr(split, "_fingerprint", ""),
        split=getattr(recipe.dataset, f"{split_name}_split"),
        num_rows=len(split),
        model=model,
        transform=description,
        mixed_precision=accelerator.mixed_precision,
        dtype=training.feature_cache_dtype,
    )
    # The train split caches what a training step needs (e.g. ViLD's distillation targets), when it differs.
    encode_fn = getattr(model, "encode_training_features", None) if split_name == "train" else None
    if encode_fn is not None:
        key["features"] = "training"
    cache_dir = Path(training.feature_cache_dir) if training.feature_cache_dir else default_feature_cache_dir()
    path = cache_path(cache_dir, key)
    if not path.is_file():
        accelerator.print(f"ovmlc train: caching {split_name} image features ({len(split)} images) → {path}")
        started = time.perf_counter()
        build_feature_cache(
            accelerator,
            model,
            LabeledImageDataset(split, eval_transform),
            path,
            key,
            batch_size=max(1, training.eval_batch_size // accelerator.num_processes),
            num_workers=training.num_workers,
            progress_desc=f"caching {split_name} features",
            encode_fn=encode_fn,
        )
        data.feature_cache_seconds += time.perf_counter() - started
    return CachedFeatures(path)


def make_loader(recipe: Recipe, dataset: torch.utils.data.Dataset, shuffle: bool) -> torch.utils.data.DataLoader:
    """A DataLoader over the global batch size (accelerate's `prepare` splits each batch over the processes)."""
    training = recipe.training
    generator = torch.Generator().manual_seed(training.seed)  # keeps the global RNG out of data loading
    return torch.utils.data.DataLoader(
        dataset,
        batch_size=training.batch_size if shuffle else training.eval_batch_size,
        shuffle=shuffle,
        num_workers=training.num_workers,
        generator=generator,
        drop_last=False,
    )


__all__ = [
    "RunData",
    "build_datasets",
    "few_shot_train_split",
    "mask_partial_labels",
    "check_dataset_path",
    "load_run_data",
    "make_loader",
]
