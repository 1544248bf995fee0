"""Canonical schema: save/load round trip, the card, `label_matrix`, errors, sharding and Hub upload."""

import numpy as np
import pytest
from datasets import ClassLabel, Dataset, DatasetDict, List, Value, load_dataset
from PIL import Image

from ovmlc.data import (
    CanonicalSchemaError,
    canonical_features,
    label_counts,
    label_matrix,
    load_canonical,
    read_card_metadata,
    read_label_split,
    save_canonical,
)
from ovmlc.data.card import split_front_matter

NAMES = ["cat", "dog", "car", "tree"]


def make_split(rows, prefix, negatives=None, image_size=(8, 6)):
    features = canonical_features(NAMES, with_negative_labels=negatives is not None)
    data = {
        "image": [Image.new("RGB", image_size, (i * 30 % 255, 80, 160)) for i in range(len(rows))],
        "labels": [[NAMES.index(n) for n in r] for r in rows],
        "image_id": [f"{prefix}{i}" for i in range(len(rows))],
    }
    if negatives is not None:
        data["negative_labels"] = [[NAMES.index(n) for n in r] for r in negatives]
    return Dataset.from_dict(data, features=features)


def toy_dataset(partial=False):
    train_rows = [["cat"], ["dog", "cat"], [], ["dog"]]
    negatives = (lambda rows: [["dog"]] * len(rows)) if partial else (lambda rows: None)
    return DatasetDict(
        train=make_split(train_rows, "tr", negatives(train_rows)),
        validation=make_split([["cat"]], "va", negatives([1])),
        test=make_split([["car"], ["tree", "cat"]], "te", negatives([1, 2])),
    )


def save(dataset, out, annotation="full", **kwargs):
    return save_canonical(
        dataset,
        out,
        source="toy",
        converter_version="7",
        seen_labels=["cat", "dog"],
        unseen_labels=["car", "tree"],
        annotation=annotation,
        description="A toy dataset.",
        **kwargs,
    )


def test_round_trip_with_plain_datasets_load_dataset(tmp_path):
    out = save(toy_dataset(), tmp_path / "toy")
    loaded = load_dataset(str(out))  # what any Hub user does; no ovmlc needed
    assert {split: len(ds) for split, ds in loaded.items()} == {"train": 4, "validation": 1, "test": 2}
    features = loaded["train"].features
    assert isinstance(features["labels"], List) and isinstance(features["labels"].feature, ClassLabel)
    assert features["labels"].feature.names == NAMES and features["image_id"] == Value("string")
    assert "negative_labels" not in features
    row = loaded["test"][1]
    assert row["image_id"] == "te1" and sorted(row["labels"]) == [0, 3] and row["image"].size == (8, 6)
    assert sorted(p.name for p in (out / "data").iterdir()) == [
        "test-00000-of-00001.parquet",
        "train-00000-of-00001.parquet",
        "validation-00000-of-00001.parquet",
    ]

    metadata, body = split_front_matter((out / "README.md").read_text(), "card")
    assert metadata["configs"][0]["data_files"][0] == {"split": "train", "path": "data/train-*"}
    assert metadata["ovmlc"]["converter_version"] == "7" and metadata["ovmlc"]["annotation"] == "full"
    assert "A toy dataset." in body and "unseen (2): car, tree" in body
    assert read_label_split(out) == (["cat", "dog"], ["car", "tree"])
    assert read_card_metadata(out)["train_label_set"] == ["cat", "dog"]


def test_label_matrix_full_and_partial(tmp_path):
    full = load_canonical(save(toy_dataset(), tmp_path / "full"))
    matrix = label_matrix(full["train"], ["dog", "cat", "tree"])
    assert matrix.dtype == np.int8
    np.testing.assert_array_equal(matrix, [[-1, 1, -1], [1, 1, -1], [-1, -1, -1], [1, -1, -1]])

    partial = load_canonical(save(toy_dataset(partial=True), tmp_path / "partial", annotation="partial"))
    matrix = label_matrix(partial["train"], ["cat", "dog", "car"])
    # dog is an explicit negative everywhere except where it is positive (a positive wins); car is unannotated.
    np.testing.assert_array_equal(matrix, [[1, -1, 0], [1, 1, 0], [0, -1, 0], [0, 1, 0]])

    shuffled = full["train"].select([3, 0])  # indices mapping: still read from Arrow correctly
    np.testing.assert_array_equal(label_matrix(shuffled, ["cat", "dog"]), [[-1, 1], [1, -1]])
    positives, negatives = label_counts(partial["train"])
    assert positives.tolist() == [2, 2, 0, 0] and negatives.tolist() == [0, 4, 0, 0]
    with pytest.raises(CanonicalSchemaError, match="unicorn"):
        label_matrix(full["test"], ["cat", "unicorn"])


def test_label_matrix_reads_arrow_columns_of_large_and_shuffled_splits():
    rows = 20_000
    positive = np.random.default_rng(0).random((rows, len(NAMES))) < 0.3  # bool [N, C]
    labels = [np.flatnonzero(row).tolist() for row in positive]
    dataset = Dataset.from_dict(
        {"image": [None] * rows, "labels": labels, "image_id": [str(i) for i in range(rows)]},
        features=canonical_features(NAMES),
    )
    expected = np.where(positive, 1, -1).astype(np.int8)
    np.testing.assert_array_equal(label_matrix(dataset, NAMES), expected)
    shuffled = dataset.shuffle(seed=0)  # an indices mapping over the same Arrow table
    order = np.array(shuffled.with_format("arrow")["image_id"].to_pylist(), dtype=np.int64)
    np.testing.assert_array_equal(label_matrix(shuffled, NAMES[::-1]), expected[order][:, ::-1])


def test_save_canonical_rejects_inconsistent_input(tmp_path):
    dataset = toy_dataset()
    with pytest.raises(CanonicalSchemaError, match="missing"):
        save(DatasetDict(train=dataset["train"], test=dataset["test"]), tmp_path / "a")
    with pytest.raises(CanonicalSchemaError, match="negative_labels"):
        save(dataset, tmp_path / "b", annotation="partial")
    with pytest.raises(CanonicalSchemaError, match="neither seen nor unseen"):
        save_canonical(
            dataset,
            tmp_path / "c",
            source="toy",
            converter_version="1",
            seen_labels=["cat"],
            unseen_labels=["car"],
            annotation="full",
            description="",
        )
    with pytest.raises(CanonicalSchemaError, match="both seen and unseen"):
        save_canonical(
            dataset,
            tmp_path / "d",
            source="toy",
            converter_version="1",
            seen_labels=["cat", "dog", "car"],
            unseen_labels=["car", "tree"],
            annotation="full",
            description="",
        )
    bad = DatasetDict({**dataset, "test": dataset["test"].rename_column("image_id", "id")})
    with pytest.raises(CanonicalSchemaError, match="image_id"):
        save(bad, tmp_path / "e")
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())  # no temporary folders left


def test_missing_paths_give_clear_errors(tmp_path):
    missing = tmp_path / "does" / "not" / "exist"
    with pytest.raises(FileNotFoundError, match=str(missing)):
        load_canonical(missing)
    with pytest.raises(FileNotFoundError, match=str(missing)):
        read_label_split(missing)
    (tmp_path / "empty").mkdir()
    with pytest.raises((FileNotFoundError, ValueError), match="empty"):
        read_label_split(tmp_path / "empty")


def test_large_splits_are_sharded(tmp_path):
    rows = [["cat"]] * 40
    dataset = DatasetDict(
        train=make_split(rows, "tr", image_size=(64, 64)),
        validation=make_split([["dog"]], "va"),
        test=make_split([["car"]], "te"),
    )
    out = save(dataset, tmp_path / "sharded", max_shard_bytes=2_000)
    shards = sorted(p.name for p in (out / "data").glob("train-*"))
    assert len(shards) > 1 and shards[0].endswith(f"-of-{len(shards):05d}.parquet")
    assert len(load_canonical(out, split="train")) == 40
