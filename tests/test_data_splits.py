"""Seeded validation hold-out and partial-label masking: deterministic, order independent, right proportions."""

import random
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ovmlc.cli import main
from ovmlc.data import label_matrix, load_canonical, read_card_metadata
from ovmlc.data.splits import (
    is_validation_id,
    partial_keep_mask,
    select_validation_ids,
    validation_count,
)

IDS = [f"image-{i:04d}" for i in range(1000)]


def test_validation_selection_is_exact_seeded_and_order_independent():
    chosen = select_validation_ids(IDS, 0.1, seed=0)
    assert len(chosen) == 100 and chosen <= set(IDS)
    shuffled = IDS[:]
    random.Random(3).shuffle(shuffled)
    assert select_validation_ids(shuffled, 0.1, seed=0) == chosen  # depends on ids, not on reading order
    assert select_validation_ids(IDS, 0.1, seed=1) != chosen
    assert validation_count(1, 0.1) == 0 and validation_count(5, 0.01) == 1 and validation_count(10, 0.0) == 0
    with pytest.raises(ValueError):
        validation_count(10, 1.0)


def test_streamed_validation_decision_matches_the_fraction():
    ids = [f"stream-{i}" for i in range(20_000)]
    fraction = np.mean([is_validation_id(image_id, 0.1, seed=4) for image_id in ids])
    assert abs(fraction - 0.1) < 0.01
    assert [is_validation_id(i, 0.1, 4) for i in ids[:50]] == [is_validation_id(i, 0.1, 4) for i in ids[:50]]


def test_partial_mask_is_deterministic_and_keeps_the_proportion():
    first = partial_keep_mask("img-1", 80, 0.3, seed=0)
    np.testing.assert_array_equal(first, partial_keep_mask("img-1", 80, 0.3, seed=0))
    assert not np.array_equal(first, partial_keep_mask("img-1", 80, 0.3, seed=1))
    kept = np.concatenate([partial_keep_mask(f"img-{i}", 20, 0.3, seed=0) for i in range(2000)])
    assert abs(kept.mean() - 0.3) < 0.01


def build_table(root: Path, count: int = 24, labels=("a", "b", "c", "d", "e")) -> Path:
    (root / "images").mkdir(parents=True)
    lines = ["path,labels"]
    rng = np.random.default_rng(0)
    for index in range(count):
        Image.new("RGB", (6, 6), (index * 10, 0, 0)).save(root / "images" / f"{index}.png")
        positives = [label for label in labels if rng.random() < 0.4]
        lines.append(f"images/{index}.png,{'|'.join(positives)}")
    (root / "table.csv").write_text("\n".join(lines) + "\n")
    return root / "table.csv"


def test_partial_ratio_is_stored_in_the_data_and_reproducible(tmp_path, capsys):
    table = build_table(tmp_path / "raw")
    outs = []
    for name in ("p1", "p2"):
        out = tmp_path / name
        argv = [
            "data",
            "prepare",
            "csv",
            "--root",
            str(table),
            "--out",
            str(out),
            "--no-progress",
            "--partial-ratio",
            "0.5",
            "--seed",
            "11",
            "--test-fraction",
            "0.25",
            "--val-fraction",
            "0.2",
        ]
        assert main(argv) == 0, capsys.readouterr()
        outs.append(load_canonical(out))
    block = read_card_metadata(tmp_path / "p1")
    assert block["annotation"] == "partial" and block["partial_label_proportion"] == 0.5
    assert block["partial_label_seed"] == 11
    assert "not redrawn per run" in (tmp_path / "p1" / "README.md").read_text()
    labels = ["a", "b", "c", "d", "e"]
    for split in ("train", "validation", "test"):
        first, second = (label_matrix(dataset[split], labels) for dataset in outs)
        np.testing.assert_array_equal(first, second)  # same seed -> identical mask
    train = label_matrix(outs[0]["train"], labels)
    assert 0.3 < (train != 0).mean() < 0.7  # about half of the entries stay annotated
    test = label_matrix(outs[0]["test"], labels)
    assert (test != 0).all()  # the test split is never masked

    other = tmp_path / "p3"
    assert (
        main(
            [
                "data",
                "prepare",
                "csv",
                "--root",
                str(table),
                "--out",
                str(other),
                "--no-progress",
                "--partial-ratio",
                "0.5",
                "--seed",
                "12",
                "--test-fraction",
                "0.25",
            ]
        )
        == 0
    )
    assert not np.array_equal(label_matrix(load_canonical(other)["train"], labels), train)


def test_partial_ratio_must_be_a_proportion(tmp_path, capsys):
    table = build_table(tmp_path / "raw", count=3)
    with pytest.raises(SystemExit):
        main(["data", "prepare", "csv", "--root", str(table), "--out", str(tmp_path / "o"), "--partial-ratio", "1.5"])
    assert "--partial-ratio" in capsys.readouterr().err
