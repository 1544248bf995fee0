"""`ovmlc data prepare openimages` on tiny CSVs in the official v4 layout (streamed, partially annotated)."""

import types
from pathlib import Path

import pytest
from PIL import Image

from ovmlc.cli import main
from ovmlc.data import label_matrix, load_canonical, read_card_metadata, read_label_split
from ovmlc.data.converters.openimages import OpenImagesConverter, iter_image_label_groups

DESCRIPTIONS = [
    ("/m/a", "Cat"),
    ("/m/b", "Dog"),
    ("/m/c", "Apple"),
    ("/m/d", "Apple"),
    ("/m/e", "Zebra"),
    ("/m/f", "Fork"),
]
TRAIN_ROWS = [
    ("0001", "/m/a", 1),
    ("0001", "/m/b", 0),
    ("0001", "/m/e", 1),  # unseen Zebra is not a training label
    ("0002", "/m/c", 1),
    ("0002", "/m/d", 0),
    ("0003", "/m/a", 1),  # image missing
    ("0004", "/m/b", 1),  # image corrupt
    ("0005", "/m/e", 1),  # only an unseen label -> nothing annotated for training
    ("0006", "/m/zzz", 1),
    ("0006", "/m/a", 0),  # unknown MID
    ("0007", "/m/a", 1),
    ("0007", "/m/a", 0),
    ("0007", "/m/b", 1),  # conflicting Cat entries
]
TEST_ROWS = [
    ("0100", "/m/e", 1),
    ("0100", "/m/a", 0),
    ("0101", "/m/f", 1),  # only a class outside seen/unseen
    ("0102", "/m/d", 1),
]


def write_labels(path: Path, rows) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = ["ImageID,Source,LabelName,Confidence"] + [f"{i},verification,{m},{c}" for i, m, c in rows]
    path.write_text("\n".join(lines) + "\n")


def build_openimages(root: Path) -> Path:
    root.mkdir(parents=True)
    (root / "class-descriptions.csv").write_text("".join(f"{mid},{name}\n" for mid, name in DESCRIPTIONS))
    (root / "classes-trainable.txt").write_text("/m/a\n/m/b\n/m/c\n/m/d\n")
    (root / "unseen.txt").write_text("/m/e\n")
    write_labels(root / "train" / "train-annotations-human-imagelabels.csv", TRAIN_ROWS)
    write_labels(root / "test" / "test-annotations-human-imagelabels.csv", TEST_ROWS)
    for split, rows in (("train", TRAIN_ROWS), ("test", TEST_ROWS)):
        for image_id in {row[0] for row in rows}:
            path = root / split / f"{image_id}.jpg"
            if image_id == "0003":
                continue
            if image_id == "0004":
                path.write_bytes(b"GIF89a broken")
                continue
            Image.new("RGB", (16, 16), (int(image_id) % 255, 0, 0)).save(path, format="JPEG")
    return root


def converter_args(root: Path, unseen_file: str | None = None) -> types.SimpleNamespace:
    """The parsed CLI arguments of `ovmlc data prepare openimages --root ROOT [--unseen-file ...]`."""
    paths = ("class_descriptions", "trainable_file", "train_labels", "test_labels", "train_image_dir", "test_image_dir")
    return types.SimpleNamespace(root=str(root), unseen_file=unseen_file, **dict.fromkeys(paths))


def test_prepare_openimages_streams_and_keeps_partial_labels(tmp_path, capsys):
    root = build_openimages(tmp_path / "raw")
    out = tmp_path / "oi"
    code = main(
        [
            "data",
            "prepare",
            "openimages",
            "--root",
            str(root),
            "--unseen-file",
            str(root / "unseen.txt"),
            "--out",
            str(out),
            "--no-progress",
            "--val-fraction",
            "0",
        ]
    )
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert "missing image: 1" in printed and "0003.jpg" in printed
    assert "corrupt image: 1" in printed and "0004.jpg" in printed
    assert "no annotated label in the train label set: 1" in printed  # image 0005
    assert "disambiguated" in printed and "Apple (/m/c)" in printed
    assert "/m/zzz" in printed  # unknown MID reported

    seen, unseen = read_label_split(out)
    assert seen == ["Cat", "Dog", "Apple (/m/c)", "Apple (/m/d)"] and unseen == ["Zebra"]
    block = read_card_metadata(out)
    assert block["annotation"] == "partial" and block["label_mids"] == ["/m/a", "/m/b", "/m/c", "/m/d", "/m/e"]

    dataset = load_canonical(out)
    columns = seen + unseen
    train = dict(zip(dataset["train"]["image_id"], label_matrix(dataset["train"], columns).tolist()))
    assert train == {
        "0001": [1, -1, 0, 0, 0],  # Zebra is unannotated in train (unseen labels never reach training)
        "0002": [0, 0, 1, -1, 0],
        "0006": [-1, 0, 0, 0, 0],
        "0007": [0, 1, 0, 0, 0],  # the conflicting Cat entries are dropped
    }
    test = dict(zip(dataset["test"]["image_id"], label_matrix(dataset["test"], columns).tolist()))
    assert test == {"0100": [-1, 0, 0, 0, 1], "0102": [0, 0, 0, 1, 0]}


def test_openimages_records_are_streamed_not_loaded(tmp_path):
    root = build_openimages(tmp_path / "raw")
    plan = OpenImagesConverter().plan(converter_args(root))
    assert isinstance(plan.splits["train"], types.GeneratorType)
    first = next(iter(plan.splits["train"]))
    # Without --unseen-file every label is seen and Zebra (not trainable) is outside the label set.
    assert (first.image_id, first.labels, first.negative_labels) == ("0001", ["Cat"], ["Dog"])
    assert plan.unseen_labels == [] and "Zebra" not in plan.label_names


def test_openimages_unsorted_csv_is_reported(tmp_path):
    path = tmp_path / "labels.csv"
    write_labels(path, [("0002", "/m/a", 1), ("0001", "/m/a", 1)])
    with pytest.raises(ValueError, match=r"labels.csv, line 3: rows are not sorted by ImageID"):
        list(iter_image_label_groups(path))


def test_shipped_lesa_400_unseen_labelset_is_consistent():
    from ovmlc.core.vocabulary import load_labelset, validate_labels

    labelset = load_labelset("openimages-400-unseen")
    names, mids = labelset["labels"], labelset["mids"]
    assert len(names) == len(mids) == 400
    assert validate_labels(names) == names  # unique after case/whitespace normalisation, no empty names
    assert len(set(mids)) == 400 and all(mid.startswith(("/m/", "/g/")) for mid in mids)
    assert names[:3] == ["Fauna", "Flora", "Exercise"]  # the order of LESA/BiAM's top_400_unseen.csv


def test_unseen_file_accepts_the_shipped_400_unseen_labelset(tmp_path):
    from ovmlc.core.vocabulary import load_labelset

    labelset = load_labelset("openimages-400-unseen")
    root = build_openimages(tmp_path / "raw")
    # Describe two of the 400 MIDs in the raw release, so they get their display names; the others keep their MIDs.
    with (root / "class-descriptions.csv").open("a") as handle:
        handle.write(f"{labelset['mids'][0]},{labelset['labels'][0]}\n{labelset['mids'][1]},{labelset['labels'][1]}\n")
    plan = OpenImagesConverter().plan(converter_args(root, "openimages-400-unseen"))
    assert len(plan.unseen_labels) == 400 and plan.unseen_labels[:2] == ["Fauna", "Flora"]
    assert plan.unseen_labels[2] == labelset["mids"][2]
    with pytest.raises(ValueError, match=r"unseen labels .*no-such-list.*not MIDs|no-such-list.*cannot read"):
        OpenImagesConverter().plan(converter_args(root, "no-such-list"))
