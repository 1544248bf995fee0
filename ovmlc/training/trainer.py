"""The ovmlc training engine: `ovmlc train --config hub_configs/<recipe>.yaml [key=value ...]`.

Also runnable under any accelerate launcher: `accelerate launch -m ovmlc.train --config ...`.

One run = one recipe (see `ovmlc.training.recipe` and docs/training.md):

1. build the method around a CLIP backbone (`Model.from_clip`) or a previous output folder (`init_from`);
2. train on the canonical dataset's train split with accelerate (mixed precision, gradient accumulation, DDP with the
   recipe's batch size as the *global* batch size, split over processes, so 1 or N processes follow the same curve);
   methods with a frozen image tower train from a feature cache;
3. validate on the validation split (model selection, plateau schedule, early stopping: never the test split);
4. checkpoint every `checkpoint_every` steps and at epoch ends (kill-safe; `--resume` continues bit-for-bit);
5. finish with the best-on-validation model (or the last weights, `training.selection: last`): thresholds calibrated
   on the validation split, the test-split report of the recipe's protocol (`eval/`), `save_pretrained` +
   `recipe.yaml` + `trainer_state.json` (+ README.md model card).

`training.epochs: 0` evaluates the initial model (e.g. CLIP zero-shot) through the same steps 3 and 5.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import re
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..files import CONFIG_FILE, EVAL_DIR, LOGS_DIR, RECIPE_FILE, TRAINER_STATE_FILE
from . import release_accelerator_state
from .recipe import Recipe, RecipeError, load_recipe, validate_method_config, validate_recipe


class TrainingError(RuntimeError):
    """A run cannot start or continue (bad data/model combination, nothing to train, occupied output folder, ...)."""


# ----------------------------------------------------------------------------------------------------------------------
# State that survives a kill (stored in every checkpoint)
# ----------------------------------------------------------------------------------------------------------------------


@dataclass
class TrainerState:
    global_step: int = 0
    epoch: int = 0  # the epoch in progress (or the next one, at an epoch boundary)
    batches_in_epoch: int = 0  # batches of `epoch` already trained on (the data position to resume from)
    total_steps: int = 0
    num_update_steps_per_epoch: int = 0
    best_metric: float | None = None
    best_step: int | None = None
    evaluations_without_improvement: int = 0
    stopped_early: bool = False
    finished: bool = False
    train_seconds: float = 0.0
    loss_sum: float = 0.0  # running sums since the last logged loss
    loss_count: int = 0
    epoch_loss_sum: float = 0.0
    epoch_loss_count: int = 0
    loss_history: list[list[float]] = field(default_factory=list)  # [[step, mean loss since last log, lr], ...]
    epoch_losses: list[float] = field(default_factory=list)
    epoch_seconds: list[float] = field(default_factory=list)  # training time per epoch (no validation/checkpoints)
    eval_history: list[dict[str, Any]] = field(default_factory=list)
    resumed_from: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainerState:
        known = {name: value for name, value in data.items() if name in cls.__dataclass_fields__}
        return cls(**known)


@dataclass
class LabelSpace:
    """Which labels are trained, validated and evaluated, in column order."""

    train: list[str]
    evaluation: list[str]
    evaluation_unseen: np.ndarray  # [C_eval] bool: not supervised in training
    validation: list[str]
    validation_unseen: np.ndarray  # [C_val] bool

    @property
    def model_labels(self) -> list[str]:
        """`config.label_names`: the training labels, then the evaluation labels not trained on."""
        return self.train + [name for name in self.evaluation if name not in set(self.train)]

    @property
    def unseen(self) -> list[str]:
        return [name for name in self.evaluation if name not in set(self.train)]


# ----------------------------------------------------------------------------------------------------------------------
# Setup helpers
# ----------------------------------------------------------------------------------------------------------------------


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


def resolve_label_space(recipe: Recipe, dataset, card_split: tuple[list[str], list[str]]) -> LabelSpace:
    from ..core.vocabulary import load_labelset
    from ..data import dataset_label_names

    source = recipe.source
    first_split = dataset[recipe.dataset.test_split]
    all_names = dataset_label_names(first_split)
    seen, unseen = card_split
    evaluation = [*seen, *unseen] if (seen or unseen) else list(all_names)
    unknown = [name for name in evaluation if name not in all_names]
    if unknown:
        raise TrainingError(
            f"dataset {recipe.dataset.path}: its card's label split names unknown labels {unknown[:10]}"
        )
    choice = recipe.dataset.train_labels
    if choice == "seen":
        train = list(seen) if seen else list(all_names)
    elif choice == "all":
        train = list(evaluation)
    else:
        try:
            labelset = load_labelset(choice)
        except (OSError, ValueError) as error:
            raise RecipeError(
                f"recipe {source}: dataset.train_labels must be 'seen', 'all' or a label set name; {choice!r}: {error}"
            ) from None
        held_out = set(labelset.get("unseen") or [])
        train = [name for name in labelset["labels"] if name not in held_out]
        missing = [name for name in train if name not in all_names]
        if missing:
            raise RecipeError(
                f"recipe {source}: label set {choice!r} (dataset.train_labels) has labels the dataset "
                f"{recipe.dataset.path} lacks: {missing[:10]}"
            )
    if not train:
        raise TrainingError(f"recipe {source}: no training labels (dataset.train_labels={choice!r})")
    train_set = set(train)
    evaluation_unseen = np.array([name not in train_set for name in evaluation], dtype=bool)
    if recipe.training.validation_labels == "seen":
        validation = [name for name in evaluation if name in train_set]
    else:
        validation = list(evaluation)
    validation_unseen = np.array([name not in train_set for name in validation], dtype=bool)
    return LabelSpace(train, evaluation, evaluation_unseen, validation, validation_unseen)


def metric_at(report: dict[str, Any], path: str) -> float:
    """Look up `view/metric[/...]` (e.g. `gzsl/mAP`, `gzsl/top_k/3/f1`) in an `evaluate_protocol` report."""
    view, *keys = path.split("/")
    views = report.get("views", {})
    if view not in views:
        skipped = report.get("skipped_views", {})
        reason = f" (skipped: {skipped[view]})" if view in skipped else ""
        raise TrainingError(
            f"selection metric {path!r}: no view {view!r} in the report{reason}; views: {', '.join(views)}"
        )
    value: Any = views[view]
    for key in keys:
        if not isinstance(value, dict) or key not in value:
            raise TrainingError(f"selection metric {path!r}: no {key!r} in view {view!r}")
        value = value[key]
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise TrainingError(f"selection metric {path!r} is not a number: {value!r}")
    return float(value)


def summarize_report(report: dict[str, Any]) -> dict[str, float]:
    """Flat `{view/mAP, view/F1@K, ...}` numbers of a report (for logs and trainer_state.json)."""
    summary = {}
    for view, result in report.get("views", {}).items():
        if result.get("mAP") is not None:
            summary[f"{view}/mAP"] = result["mAP"]
        for k, block in result.get("top_k", {}).items():
            if block.get("f1") is not None:
                summary[f"{view}/F1@{k}"] = block["f1"]
    return summary


def flat_config(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested recipe → `{"a/b": scalar}` (trackers only take scalars)."""
    flat = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flat_config(value, f"{name}/"))
        elif isinstance(value, (bool, int, float, str)):
            flat[name] = value
        else:
            flat[name] = str(value)
    return flat


def environment_info(accelerator) -> dict[str, Any]:
    import accelerate
    import datasets
    import transformers

    from .._version import __version__

    hardware = {
        "device": str(accelerator.device),
        "distributed_type": str(accelerator.distributed_type),
        "num_processes": accelerator.num_processes,
        "mixed_precision": accelerator.mixed_precision,
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
    }
    if torch.cuda.is_available():
        hardware["gpus"] = [torch.cuda.get_device_name(index) for index in range(torch.cuda.device_count())]
    versions = {
        "ovmlc": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "accelerate": accelerate.__version__,
        "datasets": datasets.__version__,
    }
    return {"hardware": hardware, "versions": versions}


def build_schedule_lambda(
    name: str, warmup_steps: int, total_steps: int, min_lr_ratio: float, step_every: int, gamma: float
):
    """Learning-rate multiplier per optimizer step: linear warm-up, then cosine / linear / constant / step decay."""

    def multiplier(step: int) -> float:
        if warmup_steps and step < warmup_steps:
            return (step + 1) / warmup_steps
        if name == "constant":
            return 1.0
        if name == "step":
            return gamma ** ((step - warmup_steps) // max(1, step_every))
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        decay = 0.5 * (1.0 + math.cos(math.pi * progress)) if name == "cosine" else 1.0 - progress
        return min_lr_ratio + (1.0 - min_lr_ratio) * decay

    return multiplier


# ----------------------------------------------------------------------------------------------------------------------
# The trainer
# ----------------------------------------------------------------------------------------------------------------------


class Trainer:
    """Runs one recipe end to end (see the module docstring). `run()` returns the output folder."""

    def __init__(self, recipe: Recipe, resume: str | bool | None = None, overwrite: bool = False):
        self.recipe = recipe
        self.resume = resume
        self.overwrite = overwrite
        self.output_dir = Path(recipe.output_dir)

    # ------------------------------------------------------------------ entry point
    def run(self) -> Path:
        check_dataset_path(self.recipe)
        self._setup_accelerator()
        try:
            self._check_output_dir()
            self._load_data()
            self._build_model()
            self._build_loaders()
            self._build_optimization()
            self._restore()
            self._start_trackers()
            if not self.state.finished:
                self._train()
            self._finish()
        finally:
            self.accelerator.end_training()
            release_accelerator_state()
        return self.output_dir

    # ------------------------------------------------------------------ setup
    def _setup_accelerator(self) -> None:
        from accelerate import Accelerator, DataLoaderConfiguration, DistributedDataParallelKwargs
        from accelerate.utils import ProjectConfiguration, set_seed

        from .checkpointing import CheckpointManager

        training = self.recipe.training
        log_with = None if self.recipe.tracker == "none" else self.recipe.tracker
        if log_with == "trackio":
            try:
                import trackio  # noqa: F401
            except ImportError:
                raise RecipeError(
                    f"recipe {self.recipe.source}: tracker 'trackio' needs `pip install trackio`"
                ) from None
        release_accelerator_state()  # settings left by an earlier run in this process
        self.accelerator = Accelerator(
            mixed_precision=training.mixed_precision,
            gradient_accumulation_steps=training.gradient_accumulation_steps,
            log_with=log_with,
            project_config=ProjectConfiguration(
                project_dir=str(self.output_dir), logging_dir=str(self.output_dir / LOGS_DIR)
            ),
            # The recipe's batch size is global: each batch is split over the processes (same run on 1 or N devices).
            dataloader_config=DataLoaderConfiguration(
                split_batches=True, use_seedable_sampler=True, data_seed=training.seed
            ),
            kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=training.ddp_find_unused_parameters)],
        )
        for key, size in (
            ("training.batch_size", training.batch_size),
            ("training.eval_batch_size", training.eval_batch_size),
        ):
            if size % self.accelerator.num_processes:
                raise RecipeError(
                    f"recipe {self.recipe.source}: {key}={size} is the global batch size and must be divisible by "
                    f"the {self.accelerator.num_processes} processes"
                )
        set_seed(training.seed)
        self.checkpoints = CheckpointManager(self.output_dir, self.accelerator, training.checkpoint_total_limit)
        self.is_main = self.accelerator.is_main_process

    def print(self, *args) -> None:
        self.accelerator.print(*args)

    def _check_output_dir(self) -> None:
        """Never silently mix two runs in one folder: resume it, or overwrite it explicitly."""
        validate_recipe(self.recipe)  # what the recipe names (method config, protocol, presets): before any file op
        self.resume_from = None
        if self.resume:
            self.resume_from = self.checkpoints.resolve_resume(self.resume)
            if self.resume_from is None:
                self.print(f"ovmlc train: no checkpoint in {self.checkpoints.directory}; starting from scratch")
        occupied = self.checkpoints.checkpoints() or (self.output_dir / TRAINER_STATE_FILE).is_file()
        if self.resume_from is None and occupied and not self.resume:
            if not self.overwrite:
                raise TrainingError(
                    f"output_dir {self.output_dir} already holds a training run; pass --resume to continue it or "
                    f"--overwrite to start over"
                )
            if self.is_main:
                shutil.rmtree(self.checkpoints.directory, ignore_errors=True)
                (self.output_dir / TRAINER_STATE_FILE).unlink(missing_ok=True)
            self.accelerator.wait_for_everyone()
        if self.is_main:
            self.output_dir.mkdir(parents=True, exist_ok=True)
        self.accelerator.wait_for_everyone()
        self.checkpoints.remove_stale_temporaries()

    def _load_data(self) -> None:
        from ..data import label_matrix, load_canonical, read_label_split

        recipe = self.recipe
        with self.accelerator.main_process_first():  # one process builds the datasets cache, the others reuse it
            dataset = load_canonical(recipe.dataset.path)
        try:
            card_split = read_label_split(recipe.dataset.path)
        except (OSError, ValueError):
            card_split = ([], [])  # no ovmlc card block (e.g. an in-memory export): every label is seen
        # `training.epochs: 0` (or `max_steps: 0`) only evaluates: no train split needed.
        self.trains = bool(
            recipe.training.max_steps if recipe.training.max_steps is not None else recipe.training.epochs
        )
        needed = [recipe.dataset.validation_split, recipe.dataset.test_split]
        if self.trains:
            needed.insert(0, recipe.dataset.train_split)
        for split in needed:
            if split not in dataset:
                raise RecipeError(
                    f"recipe {recipe.source}: dataset {recipe.dataset.path} has no split {split!r} "
                    f"(it has {', '.join(dataset)})"
                )
        self.labels = resolve_label_space(recipe, dataset, card_split)

        def limited(split: str, limit: int | None):
            data = dataset[split]
            return data if limit is None else data.select(range(min(limit, len(data))))

        self.splits = {
            "validation": limited(recipe.dataset.validation_split, recipe.dataset.max_eval_samples),
            "test": limited(recipe.dataset.test_split, recipe.dataset.max_eval_samples),
        }
        if self.trains:
            self.splits["train"] = limited(recipe.dataset.train_split, recipe.dataset.max_train_samples)
        for name, split in self.splits.items():
            if len(split) == 0:
                raise TrainingError(f"dataset {recipe.dataset.path}: the {name} split is empty")
        # int8 [N, C] in {1, 0, -1}, built from the Arrow label columns (no image decoding).
        self.label_rows = {
            "validation": label_matrix(self.splits["validation"], self.labels.evaluation),
            "test": label_matrix(self.splits["test"], self.labels.evaluation),
        }
        if "train" in self.splits:
            self.label_rows["train"] = label_matrix(self.splits["train"], self.labels.train)
        self.validation_columns = [self.labels.evaluation.index(name) for name in self.labels.validation]
        self._check_metrics()

    def _check_metrics(self) -> None:
        """Fail before training when the protocol or a validation metric the recipe names does not exist."""
        from ..evaluation.metrics import evaluate_protocol, load_protocol

        recipe = self.recipe
        try:
            load_protocol(recipe.protocol)
        except ValueError as error:
            raise RecipeError(f"recipe {recipe.source}: protocol: {error}") from None
        if not self.trains or recipe.training.eval_every is None:
            return
        labels = self.label_rows["validation"][:, self.validation_columns]
        scores = np.zeros(labels.shape, dtype=np.float32)  # only the report's structure matters here
        report = evaluate_protocol(
            scores, labels, self.labels.validation, self.labels.validation_unseen, recipe.protocol
        )
        keys = {"training.selection_metric": recipe.training.selection_metric}
        if recipe.schedule.name == "plateau" and recipe.schedule.metric:
            keys["schedule.metric"] = recipe.schedule.metric
        for key, path in keys.items():
            try:
                metric_at(report, path)
            except TrainingError as error:
                raise RecipeError(f"recipe {recipe.source}: {key}: {error}") from None

    def _build_model(self) -> None:
        from .. import methods  # noqa: F401 - registers the built-in methods
        from ..core.registry import get_method, list_methods

        recipe = self.recipe
        available = list_methods()
        if recipe.method not in available:
            raise RecipeError(
                f"recipe {recipe.source}: unknown method {recipe.method!r}; available: {', '.join(sorted(available))}"
            )
        spec = get_method(recipe.method)
        config_class, model_class = spec.config_class, spec.model_class
        method_kwargs = validate_method_config(recipe, config_class)
        if recipe.init_from:
            init_config = Path(recipe.init_from) / CONFIG_FILE
            if not init_config.is_file():
                raise RecipeError(
                    f"recipe {recipe.source}: init_from {recipe.init_from!r} is not an ovmlc output folder"
                )
            model_type = json.loads(init_config.read_text()).get("model_type")
            if model_type != config_class.model_type:
                raise RecipeError(
                    f"recipe {recipe.source}: init_from {recipe.init_from!r} holds a {model_type!r} model, "
                    f"not a {config_class.model_type!r} ({recipe.method})"
                )
            model = model_class.from_pretrained(recipe.init_from, dtype=torch.float32, **method_kwargs)
        else:
            model = model_class.from_clip(recipe.backbone, dtype=torch.float32, **method_kwargs)
        for pattern in recipe.freeze:
            matched = [parameter for name, parameter in model.named_parameters() if re.search(pattern, name)]
            if not matched:
                raise RecipeError(f"recipe {recipe.source}: freeze pattern {pattern!r} matches no parameter")
            for parameter in matched:
                parameter.requires_grad_(False)
        # The label split is part of the model from the start (ViLD weights seen and unseen labels differently and
        # masks the unseen rows while training); `_finish` writes the same values.
        model.config.seen_labels = list(self.labels.train)
        model.config.unseen_labels = self.labels.unseen
        self.model = model
        self.trainable_parameters = [parameter for parameter in model.parameters() if parameter.requires_grad]
        if self.is_main:
            model.print_trainable_parameters(print_fn=self.print)

        # Labels: encoded once unless the method trains its text side (then every step, with gradients).
        text_trainable = any(p.requires_grad for module in model.text_side_modules() for p in module.parameters())
        self.encode_labels_every_step = text_trainable and bool(model.trains_text_side)

    def _build_transforms(self):
        from .transforms import build_image_transforms

        return build_image_transforms(self.recipe, self.model)

    def _build_loaders(self) -> None:
        from .data import LabeledFeatureDataset, LabeledImageDataset

        recipe, training = self.recipe, self.recipe.training
        uses_frozen = bool(self.model.uses_frozen_image_features)
        augment_allowed = bool(self.model.augment_allowed)
        augmenting = training.augment != "none"
        if augmenting and not augment_allowed:
            raise RecipeError(
                f"recipe {recipe.source}: method {recipe.method!r} does not allow augmentation; "
                "set training.augment: none"
            )
        if training.feature_cache is True and not uses_frozen:
            raise RecipeError(
                f"recipe {recipe.source}: training.feature_cache is true but method {recipe.method!r} does not train "
                f"from frozen image features; use auto or false"
            )
        if training.feature_cache is True and augmenting:
            raise RecipeError(f"recipe {recipe.source}: training.feature_cache true needs training.augment: none")
        # Only training reuses features (evaluation-only runs read every image once anyway).
        self.use_feature_cache = (
            self.trains and uses_frozen and training.feature_cache in (True, "auto") and not augmenting
        )
        if self.use_feature_cache:
            trainable_image_side = [
                name
                for module in self.model.image_side_modules()
                for name, parameter in module.named_parameters()
                if parameter.requires_grad
            ]
            if trainable_image_side:
                raise TrainingError(
                    f"method {recipe.method!r} says its image features are frozen, but image-side parameters "
                    f"{trainable_image_side[:3]} are trainable: the feature cache would go stale (set "
                    f"training.feature_cache: false or freeze them)"
                )

        self.model.to(self.accelerator.device)
        self.feature_cache_seconds = 0.0
        self.train_transform, self.eval_transform, self.transform_description = self._build_transforms()
        objects = self._object_targets()
        self.datasets = {}
        for name in self.splits:
            rows = self.label_rows[name] if name == "train" else None
            if self.use_feature_cache:
                features = self._feature_cache(name)
                self.datasets[name] = LabeledFeatureDataset(features, rows, objects if name == "train" else None)
            elif name == "train":
                self.datasets[name] = LabeledImageDataset(
                    self.splits[name],
                    self.train_transform,
                    rows,
                    augment_seed=training.seed if augmenting else None,
                    objects=objects,
                )
            else:
                self.datasets[name] = LabeledImageDataset(self.splits[name], self.eval_transform)
        if self.is_main:
            cached = "cached image features" if self.use_feature_cache else "images"
            sizes = ", ".join(f"{name} {len(data)}" for name, data in self.datasets.items())
            self.print(f"ovmlc train: {recipe.method} on {recipe.dataset.path} ({sizes}; training from {cached})")

    def _object_targets(self):
        """Box targets of the train split (`ObjectTargets`) for methods that train on boxes (`uses_object_boxes`),
        when the split has an `objects` column; mapped through the evaluation transform's resize/crop (such methods
        do not allow augmentation, so training images go through the same geometry)."""
        from ..core.regions import UnsupportedGeometryError
        from ..data.objects import has_objects, object_targets

        train = self.splits.get("train")
        if train is None or not self.model.uses_object_boxes or not has_objects(train):
            return None
        try:
            targets = object_targets(train, self.labels.train, self.train_transform.to_config()["steps"])
        except UnsupportedGeometryError as error:
            raise RecipeError(f"recipe {self.recipe.source}: box targets: {error}") from None
        if self.is_main:
            boxes = int((targets.labels >= 0).sum())
            self.print(f"ovmlc train: {boxes:,} object boxes of the training labels in {len(targets):,} images")
        return targets

    def _feature_cache(self, split_name: str):
        from .data import LabeledImageDataset
        from .feature_cache import (
            CachedFeatures,
            build_feature_cache,
            cache_description,
            cache_path,
            default_feature_cache_dir,
        )

        training = self.recipe.training
        split = self.splits[split_name]
        dataset_id = (
            str(Path(self.recipe.dataset.path).expanduser().resolve())
            if Path(self.recipe.dataset.path).exists()
            else self.recipe.dataset.path
        )
        description = cache_description(
            dataset=dataset_id,
            dataset_fingerprint=getattr(split, "_fingerprint", ""),
            split=getattr(self.recipe.dataset, f"{split_name}_split"),
            num_rows=len(split),
            model=self.model,
            transform=self.transform_description,
            mixed_precision=self.accelerator.mixed_precision,
            dtype=training.feature_cache_dtype,
        )
        # The train split caches what a training step needs (e.g. ViLD's distillation targets), when it differs.
        encode_fn = getattr(self.model, "encode_training_features", None) if split_name == "train" else None
        if encode_fn is not None:
            description["features"] = "training"
        cache_dir = Path(training.feature_cache_dir) if training.feature_cache_dir else default_feature_cache_dir()
        path = cache_path(cache_dir, description)
        if not path.is_file():
            self.print(f"ovmlc train: caching {split_name} image features ({len(split)} images) → {path}")
            started = time.perf_counter()
            build_feature_cache(
                self.accelerator,
                self.model,
                LabeledImageDataset(split, self.eval_transform),
                path,
                description,
                batch_size=max(1, training.eval_batch_size // self.accelerator.num_processes),
                num_workers=training.num_workers,
                progress_desc=f"caching {split_name} features",
                encode_fn=encode_fn,
            )
            self.feature_cache_seconds += time.perf_counter() - started
        return CachedFeatures(path)

    def _loader(self, name: str, shuffle: bool):
        training = self.recipe.training
        generator = torch.Generator().manual_seed(training.seed)  # keeps the global RNG out of data loading
        return torch.utils.data.DataLoader(
            self.datasets[name],
            batch_size=training.batch_size if shuffle else training.eval_batch_size,
            shuffle=shuffle,
            num_workers=training.num_workers,
            generator=generator,
            drop_last=False,
        )

    def _build_optimization(self) -> None:
        recipe, training = self.recipe, self.recipe.training
        self.state = TrainerState()
        self.eval_loaders = {name: self._loader(name, shuffle=False) for name in ("validation", "test")}
        self.optimizer = self.scheduler = self.plateau = self.train_loader = None
        if not self.trains:
            self.model = self.accelerator.prepare_model(self.model, evaluation_mode=True)
            loaders = self.accelerator.prepare(*self.eval_loaders.values())
            self.eval_loaders = dict(zip(self.eval_loaders, loaders))
            self.state.finished = True
            return
        if not self.trainable_parameters:
            raise TrainingError(
                f"recipe {recipe.source}: every parameter is frozen; nothing to train "
                "(set training.epochs: 0 to only evaluate)"
            )

        groups = self.model.parameter_groups(recipe.optimizer.lr, recipe.optimizer.weight_decay, recipe.layer_decay)
        groups = [dict(group, params=[p for p in group["params"] if p.requires_grad]) for group in groups]
        groups = [group for group in groups if group["params"]]
        if not groups:
            raise TrainingError(f"method {recipe.method!r}: parameter_groups() returned no trainable parameters")
        optimizer_config = recipe.optimizer
        if optimizer_config.name == "sgd":
            self.optimizer = torch.optim.SGD(
                groups, lr=optimizer_config.lr, momentum=optimizer_config.momentum, nesterov=optimizer_config.nesterov
            )
        else:
            optimizer_class = torch.optim.AdamW if optimizer_config.name == "adamw" else torch.optim.Adam
            self.optimizer = optimizer_class(
                groups, lr=optimizer_config.lr, betas=tuple(optimizer_config.betas), eps=optimizer_config.eps
            )

        train_loader = self._loader("train", shuffle=True)
        self.model, self.optimizer, self.train_loader, *eval_loaders = self.accelerator.prepare(
            self.model, self.optimizer, train_loader, *self.eval_loaders.values()
        )
        self.eval_loaders = dict(zip(self.eval_loaders, eval_loaders))

        steps_per_epoch = math.ceil(len(self.train_loader) / training.gradient_accumulation_steps)
        total_steps = training.max_steps or training.epochs * steps_per_epoch
        self.num_epochs = math.ceil(total_steps / steps_per_epoch) if training.max_steps else training.epochs
        self.state.total_steps, self.state.num_update_steps_per_epoch = total_steps, steps_per_epoch

        schedule = recipe.schedule
        if schedule.name == "plateau":
            self.plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(
                self.optimizer, mode=schedule.mode, factor=schedule.factor, patience=schedule.patience
            )
            self.accelerator.register_for_checkpointing(self.plateau)
        else:
            warmup = (
                schedule.warmup_steps
                if schedule.warmup_steps is not None
                else round(schedule.warmup_ratio * total_steps)
            )
            multiplier = build_schedule_lambda(
                schedule.name,
                warmup,
                total_steps,
                schedule.min_lr_ratio,
                schedule.step_size * steps_per_epoch,
                schedule.gamma,
            )
            scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, multiplier)
            self.scheduler = self.accelerator.prepare(scheduler)

    def _restore(self) -> None:
        if self.resume_from is None:
            return
        # accelerate writes one RNG file per process; with another process count its load_state fails deep inside
        # (missing file) or silently replays a different data order.
        saved_processes = len(list(Path(self.resume_from).glob("random_states_*.pkl")))
        if saved_processes and saved_processes != self.accelerator.num_processes:
            raise TrainingError(
                f"checkpoint {self.resume_from} was written by {saved_processes} process(es), this run has "
                f"{self.accelerator.num_processes}: resume with `accelerate launch --num_processes {saved_processes}`"
                f" (the data order and per-process RNG states depend on it)"
            )
        self.accelerator.load_state(str(self.resume_from))
        restored = TrainerState.from_dict(self.checkpoints.read_trainer_state(self.resume_from))
        if self.state.total_steps and restored.total_steps and restored.total_steps != self.state.total_steps:
            raise TrainingError(
                f"checkpoint {self.resume_from} belongs to a run of {restored.total_steps} steps, this recipe has "
                f"{self.state.total_steps}: resume with the same recipe (see {self.output_dir / RECIPE_FILE})"
            )
        restored.resumed_from.append(str(self.resume_from))
        self.state = restored
        self.print(
            f"ovmlc train: resumed from {self.resume_from} (step {restored.global_step}, epoch {restored.epoch})"
        )

    def _start_trackers(self) -> None:
        if self.is_main:
            (self.output_dir / RECIPE_FILE).write_text(self.recipe.to_yaml(), encoding="utf-8")
        if self.recipe.tracker != "none":
            self.accelerator.init_trackers(self.output_dir.name or "ovmlc", config=flat_config(self.recipe.to_dict()))

    # ------------------------------------------------------------------ training
    def _unwrapped(self):
        return self.accelerator.unwrap_model(self.model)

    def _label_embeds(self, names: Sequence[str]) -> torch.Tensor:
        """`[C, D]` label embeddings from the current weights (main process first: it fills the shared disk cache)."""
        model = self._unwrapped()
        was_training = model.training
        model.eval()
        with self.accelerator.main_process_first(), torch.no_grad():
            embeddings = model.encode_labels(list(names))
        model.train(was_training)
        return embeddings.to(self.accelerator.device)

    def _train(self) -> None:
        from tqdm.auto import tqdm

        from .data import model_inputs

        training, state = self.recipe.training, self.state
        accelerator = self.accelerator
        train_labels = self.labels.train
        vocabulary = self._unwrapped().vocabulary(train_labels)
        label_embeds = None if self.encode_labels_every_step else self._label_embeds(train_labels)
        started = time.perf_counter()
        self._segment_start = started
        progress = tqdm(
            total=state.total_steps,
            initial=state.global_step,
            desc="training",
            unit="step",
            disable=not accelerator.is_local_main_process,
        )
        stop = False
        self._side_seconds = 0.0  # time spent validating and checkpointing (not part of an epoch's training time)
        for epoch in range(state.epoch, self.num_epochs):
            epoch_start, side_at_start = time.perf_counter(), self._side_seconds
            self.model.train()
            self.train_loader.set_epoch(epoch)
            self.datasets["train"].set_epoch(epoch)
            loader = self.train_loader
            if state.batches_in_epoch:  # resuming mid-epoch: same shuffled order, minus the batches already seen
                loader = accelerator.skip_first_batches(self.train_loader, state.batches_in_epoch)
            for batch in loader:
                with accelerator.accumulate(self.model):
                    label_inputs = (
                        {"label_names": vocabulary} if label_embeds is None else {"label_embeds": label_embeds}
                    )
                    outputs = self.model(
                        **model_inputs(batch), **label_inputs, labels=batch["labels"], label_mask=batch["label_mask"]
                    )
                    loss = outputs.loss
                    accelerator.backward(loss)
                    if accelerator.sync_gradients and training.max_grad_norm:
                        accelerator.clip_grad_norm_(self.trainable_parameters, training.max_grad_norm)
                    self.optimizer.step()
                    if self.scheduler is not None:
                        self.scheduler.step()
                    self.optimizer.zero_grad(set_to_none=True)
                state.batches_in_epoch += 1
                batch_loss = accelerator.reduce(loss.detach().float(), reduction="mean").item()
                state.loss_sum += batch_loss
                state.loss_count += 1
                state.epoch_loss_sum += batch_loss
                state.epoch_loss_count += 1
                if not accelerator.sync_gradients:
                    continue
                state.global_step += 1
                progress.update(1)
                if state.global_step % training.log_every == 0:
                    self._log_loss()
                    progress.set_postfix(loss=f"{state.loss_history[-1][1]:.4f}")
                if self._validation_due():
                    stop = self._validate() or stop
                if stop or state.global_step >= state.total_steps:
                    break
                if training.checkpoint_every and state.global_step % training.checkpoint_every == 0:
                    self._checkpoint()
            if state.batches_in_epoch >= len(self.train_loader):  # the epoch is complete
                elapsed = time.perf_counter() - epoch_start - (self._side_seconds - side_at_start)
                state.epoch_seconds.append(round(elapsed, 4))
                state.epoch_losses.append(state.epoch_loss_sum / max(1, state.epoch_loss_count))
                state.epoch_loss_sum, state.epoch_loss_count = 0.0, 0
                state.epoch, state.batches_in_epoch = epoch + 1, 0
                if training.eval_every == "epoch" and not stop:
                    stop = self._validate() or stop
            if stop or state.global_step >= state.total_steps:
                break
            self._checkpoint()
        progress.close()
        if state.loss_count:
            self._log_loss()
        # The last weights were never validated (e.g. max_steps stopped mid-epoch): validate them too.
        validated_steps = {entry["step"] for entry in state.eval_history}
        if training.eval_every is not None and not state.stopped_early and state.global_step not in validated_steps:
            self._validate()
        state.finished = True
        self._checkpoint(final=True)

    def _validation_due(self) -> bool:
        every = self.recipe.training.eval_every
        return isinstance(every, int) and not isinstance(every, bool) and self.state.global_step % every == 0

    def _log_loss(self) -> None:
        state = self.state
        mean_loss = state.loss_sum / max(1, state.loss_count)
        learning_rate = self.optimizer.param_groups[0]["lr"]
        state.loss_history.append([state.global_step, mean_loss, learning_rate])
        state.loss_sum, state.loss_count = 0.0, 0
        self.accelerator.log(
            {"train/loss": mean_loss, "train/lr": learning_rate, "train/epoch": state.epoch}, step=state.global_step
        )

    def _checkpoint(self, final: bool = False) -> None:
        started = time.perf_counter()
        self.state.train_seconds += started - self._segment_start
        self.checkpoints.save(self.state.global_step, self.state.to_dict(), replace=final)
        self._segment_start = time.perf_counter()
        self._side_seconds += self._segment_start - started

    def _validate(self) -> bool:
        """Score the validation split, track the best model; returns True when early stopping triggers."""
        from ..evaluation import engine as evaluation
        from ..evaluation.metrics import evaluate_protocol

        started = time.perf_counter()
        training, state = self.recipe.training, self.state
        names, unseen = self.labels.validation, self.labels.validation_unseen
        scores = self._predict("validation", names, ranking=True)
        unseen_scores = evaluation.unseen_labels_scored_alone(
            self._unwrapped(), names, unseen, lambda unseen_names: self._predict("validation", unseen_names)
        )
        labels = self.label_rows["validation"][:, self.validation_columns]
        report = evaluate_protocol(scores, labels, names, unseen, self.recipe.protocol, unseen_scores=unseen_scores)
        metric = metric_at(report, training.selection_metric)
        summary = summarize_report(report)
        epochs = round(state.global_step / max(1, state.num_update_steps_per_epoch), 3)
        state.eval_history.append({"step": state.global_step, "epoch": epochs, "metric": metric, **summary})
        self.accelerator.log({f"validation/{key}": value for key, value in summary.items()}, step=state.global_step)
        better = state.best_metric is None or (
            metric > state.best_metric if training.selection_mode == "max" else metric < state.best_metric
        )
        if better:
            state.best_metric, state.best_step = metric, state.global_step
            state.evaluations_without_improvement = 0
            if training.selection == "best":  # `last` keeps the final weights: no snapshot to restore
                self.checkpoints.save_best(state.global_step, self._unwrapped(), state.to_dict())
        else:
            state.evaluations_without_improvement += 1
        self.print(
            f"step {state.global_step} (epoch {epochs:g}): validation {training.selection_metric} = {metric:.4f}"
            + (" (best)" if better else f" (best {state.best_metric:.4f} at step {state.best_step})")
        )
        if self.plateau is not None:
            plateau_metric = self.recipe.schedule.metric or training.selection_metric
            self.plateau.step(
                metric if plateau_metric == training.selection_metric else metric_at(report, plateau_metric)
            )
        self.model.train()
        self._side_seconds += time.perf_counter() - started
        patience = training.early_stopping_patience
        if patience is not None and state.evaluations_without_improvement >= patience:
            state.stopped_early = True
            self.print(f"ovmlc train: early stopping after {patience} evaluations without improvement")
            return True
        return False

    @torch.no_grad()
    def _predict(self, split: str, names: Sequence[str], ranking: bool = False) -> np.ndarray:
        """Sigmoid scores `[N, C]` of a split, computed across processes; every process gets all rows, in order.
        `ranking=True` scores under `model.ranking_scores()` (what paper-style tables rank; see evaluation)."""
        from tqdm.auto import tqdm

        from .data import model_inputs

        model = self._unwrapped()
        model.eval()
        label_embeds = self._label_embeds(names)
        num_rows = len(self.datasets[split])
        scores = np.zeros((num_rows, len(names)), dtype=np.float32)
        seen = np.zeros(num_rows, dtype=np.int64)
        loader = self.eval_loaders[split]
        with model.ranking_scores() if ranking else contextlib.nullcontext():
            for batch in tqdm(
                loader,
                desc=f"scoring {split}",
                unit="batch",
                leave=False,
                disable=not self.accelerator.is_local_main_process,
            ):
                logits = model(**model_inputs(batch), label_embeds=label_embeds).logits  # [b, C]
                indices, batch_scores = self.accelerator.gather_for_metrics(
                    (batch["index"], torch.sigmoid(logits.float()))
                )
                indices = indices.cpu().numpy()
                scores[indices] = batch_scores.cpu().numpy()
                np.add.at(seen, indices, 1)
        if not (seen == 1).all():
            raise RuntimeError(
                f"{split} evaluation saw {int((seen == 0).sum())} rows never and {int((seen > 1).sum())} rows twice"
            )
        return scores

    # ------------------------------------------------------------------ finish
    def _finish(self) -> None:
        from ..evaluation import engine as evaluation
        from .checkpointing import load_trainable_state_dict

        recipe, state = self.recipe, self.state
        model = self._unwrapped()
        if recipe.training.selection == "best" and state.best_step is not None:
            load_trainable_state_dict(model, self.checkpoints.best_path(state.best_step))
        names, unseen = self.labels.evaluation, self.labels.evaluation_unseen
        validation_scores = self._predict("validation", names)  # predicted scores: thresholds are fitted on them
        test_scores = self._predict("test", names, ranking=True)  # what the report's tables rank
        ranking_description = evaluation.ranking_score_description(model)
        # The predicted test scores, for the threshold metrics, when the ranking scores differ (CLIP zero-shot).
        test_threshold_scores = self._predict("test", names) if ranking_description is not None else None
        test_unseen_scores = evaluation.unseen_labels_scored_alone(
            model, names, unseen, lambda unseen_names: self._predict("test", unseen_names)
        )
        eval_dir = self.output_dir / EVAL_DIR
        thresholds = None
        test_report = None
        if self.is_main:
            calibration_labels = self.label_rows["validation"].copy()
            calibration_labels[:, unseen] = 0  # unseen labels are never tuned on their annotations
            try:
                thresholds = evaluation.calibrate_thresholds(validation_scores, calibration_labels, names)
            except ValueError as error:
                self.print(f"ovmlc train: no calibrated thresholds ({error})")
            if thresholds is not None:
                evaluation.write_thresholds(
                    thresholds,
                    calibration_labels,
                    names,
                    eval_dir,
                    split=recipe.dataset.validation_split,
                    dataset=recipe.dataset.path,
                )
            test_split = self.splits["test"]
            image_ids = test_split["image_id"] if "image_id" in test_split.column_names else None
            localization = self._localization(model, test_split, names, unseen)
            scores_file = evaluation.ScoresFile(
                test_scores,
                self.label_rows["test"],
                list(names),
                unseen,
                image_ids,
                test_unseen_scores,
                test_threshold_scores,
            )
            evaluation.save_scores(
                eval_dir / evaluation.SCORES_FILE_NAME,
                test_scores,
                self.label_rows["test"],
                names,
                unseen,
                image_ids=image_ids,
                unseen_scores=test_unseen_scores,
                threshold_scores=test_threshold_scores,
            )
            test_report = evaluation.evaluate_scores(
                scores_file,
                recipe.protocol,
                output_dir=eval_dir,
                thresholds=thresholds,
                provenance={
                    "model": str(self.output_dir),
                    "dataset": recipe.dataset.path,
                    "split": recipe.dataset.test_split,
                    "calibrate_split": recipe.dataset.validation_split if thresholds else None,
                    "recipe": str(self.output_dir / RECIPE_FILE),
                    "selection": recipe.training.selection,
                    **({"ranking_scores": ranking_description} if ranking_description is not None else {}),
                },
                localization=localization,
            )
            config = model.config
            config.label_names = self.labels.model_labels
            config.seen_labels = list(self.labels.train)
            config.unseen_labels = self.labels.unseen
            if thresholds is not None:
                config.label_thresholds = dict(thresholds["label_thresholds"])
                config.global_threshold = float(thresholds["global_threshold"])
            model.save_pretrained(self.output_dir)
            self._write_final_state(test_report)
        self.accelerator.wait_for_everyone()
        if self.is_main:
            self._write_model_card()
            summary = summarize_report(test_report)
            shown = ", ".join(f"{key} {100 * value:.2f}" for key, value in summary.items() if key.endswith("mAP"))
            self.print(f"ovmlc train: test ({recipe.protocol}): {shown}; model and report written to {self.output_dir}")
        self.accelerator.wait_for_everyone()

    def _localization(self, model, split, names: Sequence[str], unseen: np.ndarray) -> dict[str, Any] | None:
        """Box AP / pointing accuracy on the test split for models that return boxes, when it has an `objects`
        column (main process only)."""
        from ..evaluation.localization import evaluate_localization, supports_localization

        if not supports_localization(model, split):
            return None
        return evaluate_localization(
            model,
            split,
            names,
            unseen,
            batch_size=self.recipe.training.eval_batch_size,
            progress=self.accelerator.is_local_main_process,
        )

    def _write_final_state(self, test_report: dict[str, Any]) -> None:
        from .checkpointing import write_json_atomic

        state = self.state
        losses = [entry[1] for entry in state.loss_history]
        content = {
            "method": self.recipe.method,
            "backbone": self.recipe.backbone,
            "dataset": self.recipe.dataset.path,
            "protocol": self.recipe.protocol,
            "seed": self.recipe.training.seed,
            "global_step": state.global_step,
            "total_steps": state.total_steps,
            "epochs_completed": state.epoch,
            "stopped_early": state.stopped_early,
            "train_seconds": round(state.train_seconds, 3),
            "epoch_seconds": state.epoch_seconds,
            "feature_cache_build_seconds": round(self.feature_cache_seconds, 3),
            "selection_metric": self.recipe.training.selection_metric,
            "selection": self.recipe.training.selection,
            "best_step": state.best_step,
            "best_metric": state.best_metric,
            "loss": {
                "first": losses[0] if losses else None,
                "last": losses[-1] if losses else None,
                "min": min(losses) if losses else None,
                "per_epoch": state.epoch_losses,
                "history": state.loss_history,
            },
            "validation": state.eval_history,
            "test": summarize_report(test_report),
            **(
                {"localization": {key: test_report["localization"][key] for key in ("box_ap", "pointing")}}
                if test_report.get("localization")
                else {}
            ),
            "feature_cache": self.use_feature_cache,
            "labels": {
                "train": len(self.labels.train),
                "evaluation": len(self.labels.evaluation),
                "unseen": len(self.labels.unseen),
            },
            "resumed_from": state.resumed_from,
            **environment_info(self.accelerator),
        }
        write_json_atomic(self.output_dir / TRAINER_STATE_FILE, content)

    def _write_model_card(self) -> None:
        from ..core.hooks import refresh_saved_folder

        refresh_saved_folder(self._unwrapped(), self.output_dir)  # the card, now with recipe, state and report


# ----------------------------------------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------------------------------------


def train(
    recipe: Recipe | str | os.PathLike,
    overrides: Sequence[str] = (),
    resume: str | bool | None = None,
    overwrite: bool = False,
) -> Path:
    """Python entry point: run a recipe (object or YAML path) and return the output folder."""
    if not isinstance(recipe, Recipe):
        recipe = load_recipe(recipe, overrides)
    return Trainer(recipe, resume=resume, overwrite=overwrite).run()


def run_from_args(args: argparse.Namespace) -> int:
    from ..core.backbones import BackboneNotFoundError
    from ..data import CanonicalSchemaError

    overrides, resume = list(args.overrides), args.resume
    if resume not in (None, "latest") and "=" in resume and not Path(resume).exists():
        # `--resume key=value`: argparse took an override for the optional checkpoint path.
        overrides, resume = [resume, *overrides], "latest"
    try:
        train(args.config, overrides, resume=resume, overwrite=args.overwrite)
    except (RecipeError, TrainingError, BackboneNotFoundError, CanonicalSchemaError, FileNotFoundError) as error:
        print(f"ovmlc train: error: {error}", file=sys.stderr)
        return 2
    return 0
