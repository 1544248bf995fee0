"""Which labels a run trains, validates and evaluates, in column order, and how they are recorded in the model config.

Training labels are `dataset.train_labels` (the card's seen labels by default); evaluation labels are the card's
seen + unseen labels (every label of the dataset without a card split); a label is *unseen* exactly when it was not
supervised. Validation uses the training labels only unless `training.validation_labels: all`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import TrainingError
from .recipe import Recipe, RecipeError


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

    def apply_to_config(self, config: Any, thresholds: dict[str, Any] | None = None) -> None:
        """Record the label split (and calibrated thresholds, when given) in a model config before saving it."""
        config.label_names = self.model_labels
        config.seen_labels = list(self.train)
        config.unseen_labels = self.unseen
        if thresholds is not None:
            config.label_thresholds = dict(thresholds["label_thresholds"])
            config.global_threshold = float(thresholds["global_threshold"])


def resolve_label_space(recipe: Recipe, dataset, card_split: tuple[list[str], list[str]]) -> LabelSpace:
    """The label space of `recipe` on `dataset` (a DatasetDict) whose card names the `(seen, unseen)` split."""
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


__all__ = ["LabelSpace", "resolve_label_space"]
