"""Builders shared by the training tests: a tiny canonical dataset, a tiny CLIP folder and recipe files.

(No tests here; the `test_` prefix only keeps the file among the training tests.)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import yaml
from datasets import ClassLabel, Dataset, DatasetDict, Features, Image, List, Value
from helpers import save_hub_layout_clip
from PIL import Image as PILImage

COLOURS = {
    "red": (220, 30, 30),
    "green": (30, 200, 40),
    "blue": (30, 50, 220),
    "yellow": (230, 220, 40),
    "white": (245, 245, 245),
    "black": (10, 10, 10),
}
SEEN = ["red", "green", "blue", "yellow"]
UNSEEN = ["white", "black"]
SPLIT_SIZES = {"train": 48, "validation": 21, "test": 19}  # odd eval sizes: uneven last batches across processes


def _images_and_labels(count: int, rng: np.random.Generator) -> tuple[list[PILImage.Image], list[list[str]]]:
    names = list(COLOURS)
    images, labels = [], []
    for _ in range(count):
        pixels = rng.integers(90, 160, (32, 32, 3), dtype=np.uint8)  # grey noise background
        present = sorted(rng.choice(len(names), size=rng.integers(1, 3), replace=False).tolist())
        for slot, index in enumerate(present):
            top = 2 + 15 * slot
            pixels[top : top + 13, 4:28] = COLOURS[names[index]]
        images.append(PILImage.fromarray(pixels))
        labels.append([names[index] for index in present])
    return images, labels


def make_tiny_dataset(directory: Path, seed: int = 0) -> Path:
    """A canonical dataset of colour blocks: 4 seen + 2 unseen labels, full annotation."""
    from ovmlc.data import save_canonical

    rng = np.random.default_rng(seed)
    features = Features(
        {"image": Image(), "labels": List(ClassLabel(names=list(COLOURS))), "image_id": Value("string")}
    )
    splits = {}
    for split, size in SPLIT_SIZES.items():
        images, labels = _images_and_labels(size, rng)
        ids = [f"{split}-{index:03d}" for index in range(size)]
        splits[split] = Dataset.from_dict({"image": images, "labels": labels, "image_id": ids}, features=features)
    return save_canonical(
        DatasetDict(splits),
        directory,
        source="test-colours",
        converter_version="1",
        seen_labels=SEEN,
        unseen_labels=UNSEEN,
        annotation="full",
        description="Colour blocks on grey noise (training tests).",
    )


def make_tiny_backbone(directory: Path) -> Path:
    return save_hub_layout_clip(directory)


def write_recipe(path: Path, dataset_path: Path, backbone_path: Path, output_dir: Path, **sections) -> Path:
    """A tiny-synthetic-like recipe pointing at the test dataset and backbone; `sections` replace/extend keys."""
    recipe = {
        "method": "clip_zeroshot",
        "backbone": str(backbone_path),
        "dataset": {"path": str(dataset_path), "source": "test-colours"},
        "protocol": "synthetic",
        "optimizer": {"name": "adamw", "lr": 3.0e-3, "weight_decay": 0.0},
        "schedule": {"name": "constant"},
        "freeze": ["^clip\\.text_model\\.", "^clip\\.text_projection\\."],
        "training": {
            "epochs": 3,
            "batch_size": 8,
            "eval_batch_size": 4,
            "checkpoint_every": 4,
            "log_every": 2,
            "seed": 0,
        },
        "output_dir": str(output_dir),
    }
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(recipe.get(key), dict):
            recipe[key] = {**recipe[key], **value}
        else:
            recipe[key] = value
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return path
