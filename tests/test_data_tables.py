"""`ovmlc data prepare csv | jsonl | folder | parquet`: the user's own images and label tables."""

import json
from pathlib import Path

import pytest
from datasets import ClassLabel, Dataset, Features, List, Value
from datasets import Image as ImageFeature
from PIL import Image

from ovmlc.cli import main
from ovmlc.data import label_matrix, load_canonical, read_card_metadata, read_label_split
from ovmlc.data.splits import holdout_ids, select_validation_ids


def write_images(folder: Path, names, bad=("missing.jpg", "corrupt.jpg")) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for index, name in enumerate(names):
        if name == "missing.jpg":
            continue
        if name == "corrupt.jpg":
            (folder / name).write_bytes(b"\xff\xd8\xff not really")
            continue
        Image.new("RGB", (12, 12), (index * 25, 200, 0)).save(
            folder / name, format="PNG" if name.endswith("png") else "JPEG"
        )


def prepare(*argv) -> int:
    return main(["data", "prepare", *argv, "--no-progress"])


CSV_ROWS = [
    ("img0.jpg", "cat|dog"),
    ("img1.jpg", "dog"),
    ("img2.png", '["bird", "cat"]'),  # a JSON list in a CSV cell
    ("img3.jpg", ""),  # no positive
    ("img4.jpg", "bird"),
    ("img5.jpg", "cat"),
    ("img6.jpg", "dog|bird"),
    ("img7.jpg", "cat"),
    ("missing.jpg", "cat"),
    ("corrupt.jpg", "dog"),
]


def write_csv(root: Path, rows=CSV_ROWS) -> Path:
    write_images(root / "images", [path for path, _ in rows])
    table = root / "labels.csv"
    lines = ["path,labels"] + [f'images/{path},"{labels.replace(chr(34), chr(34) * 2)}"' for path, labels in rows]
    table.write_text("\n".join(lines) + "\n")
    return table


def test_csv_without_splits_gets_seeded_test_and_validation(tmp_path, capsys):
    table = write_csv(tmp_path)
    out = tmp_path / "out"
    code = prepare("csv", "--root", str(table), "--out", str(out), "--test-fraction", "0.2", "--val-fraction", "0.2")
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert "missing image: 1" in printed and "missing.jpg" in printed
    assert "corrupt image: 1" in printed and "corrupt.jpg" in printed
    dataset = load_canonical(out)
    ids = [f"images/{path}" for path, _ in CSV_ROWS]
    bad = {"images/missing.jpg", "images/corrupt.jpg"}
    test_ids = holdout_ids(ids, 0.2, 0, "test")  # 2 of 10, seeded
    validation_ids = select_validation_ids([i for i in ids if i not in test_ids], 0.2, 0)  # 2 of the other 8
    assert set(dataset["test"]["image_id"]) == test_ids - bad
    assert set(dataset["validation"]["image_id"]) == validation_ids - bad
    assert sum(len(split) for split in dataset.values()) == 8
    names = dataset["train"].features["labels"].feature.names
    assert names == ["bird", "cat", "dog"]  # no label file: sorted labels
    assert read_card_metadata(out)["annotation"] == "full"
    rows = {r["image_id"]: sorted(names[i] for i in r["labels"]) for split in dataset.values() for r in split}
    assert rows["images/img2.png"] == ["bird", "cat"] and rows["images/img3.jpg"] == []


def test_csv_unknown_labels_error_lists_them_unless_allowed(tmp_path, capsys):
    table = write_csv(tmp_path)
    label_file = tmp_path / "labels.txt"
    label_file.write_text("cat\ndog\n")
    assert prepare("csv", "--root", str(table), "--out", str(tmp_path / "o"), "--label-file", str(label_file)) == 2
    error = capsys.readouterr().err
    assert "'bird'" in error and "--allow-new-labels" in error
    assert not (tmp_path / "o").exists()

    out = tmp_path / "ok"
    assert (
        prepare(
            "csv",
            "--root",
            str(table),
            "--out",
            str(out),
            "--label-file",
            str(label_file),
            "--allow-new-labels",
            "--unseen-labels",
            "bird",
        )
        == 0
    )
    seen, unseen = read_label_split(out)
    assert seen == ["cat", "dog"] and unseen == ["bird"]  # label-file order, new labels appended
    dataset = load_canonical(out)
    for split in ("train", "validation"):
        assert (label_matrix(dataset[split], ["bird"]) != 1).all()  # unseen labels never reach training rows


def test_jsonl_with_splits_and_negative_labels_is_partial(tmp_path, capsys):
    names = ["a.jpg", "b.jpg", "c.jpg", "d.jpg", "e.jpg"]
    write_images(tmp_path, names)
    rows = [
        {"path": "a.jpg", "labels": ["cat"], "negative_labels": ["dog"], "split": "train"},
        {"path": "b.jpg", "labels": ["dog"], "negative_labels": [], "split": "train"},
        {"path": "c.jpg", "labels": [], "negative_labels": ["cat"], "split": "val", "caption": "an empty room"},
        {"path": "d.jpg", "labels": "cat|dog", "split": "test"},
        {"path": "e.jpg", "labels": ["dog"], "negative_labels": ["cat"], "split": "test", "image_id": "custom-e"},
    ]
    table = tmp_path / "table.jsonl"
    table.write_text("\n".join(json.dumps(row) for row in rows) + "\n")
    out = tmp_path / "out"
    assert prepare("jsonl", "--root", str(table), "--out", str(out)) == 0, capsys.readouterr()
    block = read_card_metadata(out)
    assert block["annotation"] == "partial" and block["validation_source"] == "source"
    dataset = load_canonical(out)
    assert {name: len(split) for name, split in dataset.items()} == {"train": 2, "validation": 1, "test": 2}
    assert dataset["validation"][0]["caption"] == "an empty room"
    test = dict(zip(dataset["test"]["image_id"], label_matrix(dataset["test"], ["cat", "dog"]).tolist()))
    assert test == {"d.jpg": [1, 1], "custom-e": [-1, 1]}
    train = dict(zip(dataset["train"]["image_id"], label_matrix(dataset["train"], ["cat", "dog"]).tolist()))
    assert train == {"a.jpg": [1, -1], "b.jpg": [0, 1]}


def test_folder_with_split_subfolders(tmp_path, capsys):
    for split, files in (("train", ["t0.jpg", "t1.jpg", "t2.jpg"]), ("test", ["s0.jpg"])):
        write_images(tmp_path / split, files)
        lines = ["file_name,labels"] + [f"{name},{'sky|sea' if i % 2 else 'sky'}" for i, name in enumerate(files)]
        (tmp_path / split / "metadata.csv").write_text("\n".join(lines) + "\n")
    out = tmp_path / "out"
    assert prepare("folder", "--root", str(tmp_path), "--out", str(out), "--val-fraction", "0.34") == 0, (
        capsys.readouterr()
    )
    dataset = load_canonical(out)
    assert {name: len(split) for name, split in dataset.items()} == {"train": 2, "validation": 1, "test": 1}
    assert dataset["test"][0]["image"].size == (12, 12)


def test_folder_without_metadata_is_a_clear_error(tmp_path, capsys):
    (tmp_path / "imgs").mkdir()
    assert prepare("folder", "--root", str(tmp_path / "imgs"), "--out", str(tmp_path / "o")) == 2
    assert "metadata.csv" in capsys.readouterr().err


def test_output_folder_is_never_clobbered(tmp_path, capsys):
    table = write_csv(tmp_path)
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "notes.txt").write_text("keep me")
    assert prepare("csv", "--root", str(table), "--out", str(precious)) == 2
    assert prepare("csv", "--root", str(table), "--out", str(precious), "--overwrite") == 2
    assert (precious / "notes.txt").read_text() == "keep me"
    out = tmp_path / "out"
    assert prepare("csv", "--root", str(table), "--out", str(out)) == 0
    assert prepare("csv", "--root", str(table), "--out", str(out), "--overwrite", "--seed", "5") == 0
    assert read_card_metadata(out)["seed"] == 5
    assert not [p for p in tmp_path.iterdir() if "ovmlc-tmp" in p.name]  # no temporary folder left behind
    capsys.readouterr()


@pytest.mark.parametrize("label_kind", ["classlabel", "strings"])
def test_parquet_dataset_with_label_column(tmp_path, capsys, label_kind):
    images = [Image.new("RGB", (10, 10), (i * 40, 0, 0)) for i in range(6)]
    if label_kind == "classlabel":
        features = Features(
            {"img": ImageFeature(), "tags": List(ClassLabel(names=["x", "y", "z"])), "key": Value("string")}
        )
        tags = [[0], [1, 2], [2], [0, 1], [], [1]]
    else:
        features = Features({"img": ImageFeature(), "tags": Value("string"), "key": Value("string")})
        tags = ["x", "y|z", "z", "x|y", "", "y"]
    data = {"img": images, "tags": tags, "key": [f"k{i}" for i in range(6)]}
    folder = tmp_path / "src"
    folder.mkdir()
    Dataset.from_dict({k: v[:4] for k, v in data.items()}, features=features).to_parquet(folder / "train.parquet")
    Dataset.from_dict({k: v[4:] for k, v in data.items()}, features=features).to_parquet(folder / "test.parquet")
    out = tmp_path / "out"
    code = prepare(
        "parquet",
        "--root",
        str(folder),
        "--out",
        str(out),
        "--label-column",
        "tags",
        "--image-column",
        "img",
        "--image-id-column",
        "key",
        "--val-fraction",
        "0.25",
        "--unseen-labels",
        "z",
    )
    assert code == 0, capsys.readouterr()
    seen, unseen = read_label_split(out)
    assert seen == ["x", "y"] and unseen == ["z"]
    dataset = load_canonical(out)
    assert len(dataset["train"]) == 3 and len(dataset["validation"]) == 1
    test = dict(zip(dataset["test"]["image_id"], label_matrix(dataset["test"], ["x", "y", "z"]).tolist()))
    assert test == {"k4": [-1, -1, -1], "k5": [-1, 1, -1]}

    missing_column = prepare(
        "parquet",
        "--root",
        str(folder / "train.parquet"),
        "--out",
        str(tmp_path / "o"),
        "--label-column",
        "nope",
        "--image-column",
        "img",
    )
    assert missing_column == 2 and "'nope'" in capsys.readouterr().err
