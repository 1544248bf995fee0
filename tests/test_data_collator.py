"""`MultiLabelCollator`: shapes, multi-hot labels and annotation masks for a training label set."""

import numpy as np
import pytest
import torch
from datasets import Dataset
from PIL import Image

from ovmlc.data import MultiLabelCollator, canonical_features
from ovmlc.data.transforms import load_transform

NAMES = ["cat", "dog", "car", "tree"]  # seen: cat, dog, tree; unseen: car


def split(rows, negatives=None):
    features = canonical_features(NAMES, with_negative_labels=negatives is not None)
    data = {
        "image": [Image.new("RGB", (30 + 5 * i, 20), (40 * i, 90, 10)) for i in range(len(rows))],
        "labels": [[NAMES.index(n) for n in row] for row in rows],
        "image_id": [f"img{i}" for i in range(len(rows))],
    }
    if negatives is not None:
        data["negative_labels"] = [[NAMES.index(n) for n in row] for row in negatives]
    return Dataset.from_dict(data, features=features)


def test_full_annotation_gives_all_ones_mask_and_only_training_columns():
    dataset = split([["cat", "car"], ["dog"], []])
    collator = MultiLabelCollator.from_dataset(
        dataset, label_names=["tree", "cat", "dog"], transform=load_transform("clip-eval", size=32)
    )
    batch = collator([dataset[i] for i in range(3)])
    assert batch["pixel_values"].shape == (3, 3, 32, 32) and batch["pixel_values"].dtype == torch.float32
    assert batch["labels"].tolist() == [[0, 1, 0], [0, 0, 1], [0, 0, 0]]  # the unseen "car" column is absent
    assert batch["label_mask"].tolist() == [[1, 1, 1]] * 3
    assert batch["labels"].dtype == torch.float32 and batch["label_mask"].dtype == torch.float32


def test_partial_annotation_masks_unannotated_entries():
    dataset = split([["cat"], ["dog"]], negatives=[["dog"], []])
    collator = MultiLabelCollator.from_dataset(
        dataset, label_names=["cat", "dog", "tree"], transform=load_transform("clip-eval", size=16)
    )
    batch = collator([dataset[0], dataset[1]])
    assert batch["labels"].tolist() == [[1, 0, 0], [0, 1, 0]]
    assert batch["label_mask"].tolist() == [[1, 1, 0], [0, 1, 0]]


def test_works_as_a_dataloader_collate_fn_with_undecoded_images_and_seeded_augmentation():
    from datasets import Image as ImageFeature
    from torch.utils.data import DataLoader

    dataset = split([["cat"], ["dog"], ["tree"], ["cat", "dog"]]).cast_column("image", ImageFeature(decode=False))
    batches = []
    for _ in range(2):
        collator = MultiLabelCollator.from_dataset(
            dataset,
            label_names=["cat", "dog", "tree"],
            transform=load_transform("dualcoop-train", size=24, seed=5),
            return_image_ids=True,
        )
        batches.append(next(iter(DataLoader(dataset, batch_size=4, collate_fn=collator))))
    assert batches[0]["pixel_values"].shape == (4, 3, 24, 24)
    assert batches[0]["image_ids"] == ["img0", "img1", "img2", "img3"]
    torch.testing.assert_close(batches[0]["pixel_values"], batches[1]["pixel_values"])  # same seed, same batch
    assert batches[0]["labels"][3].tolist() == [1, 1, 0]


def test_string_labels_and_hf_image_processors():
    from transformers import CLIPImageProcessorPil

    rows = [{"image": Image.new("RGB", (50, 40)), "labels": ["dog", "unicorn"], "image_id": "a"}]
    collator = MultiLabelCollator(["cat", "dog"], transform=CLIPImageProcessorPil())
    batch = collator(rows)
    assert batch["pixel_values"].shape == (1, 3, 224, 224)
    assert batch["labels"].tolist() == [[0, 1]]  # labels outside the training set are ignored
    np.testing.assert_allclose(
        batch["pixel_values"][0].numpy(), load_transform("clip-eval")(rows[0]["image"]), atol=1e-6
    )


def test_errors_are_explicit():
    dataset = split([["cat"]])
    with pytest.raises(ValueError, match="unicorn"):
        MultiLabelCollator.from_dataset(dataset, label_names=["cat", "unicorn"])
    with pytest.raises(ValueError, match="dataset_label_names"):
        MultiLabelCollator(["cat"])([dataset[0]])
