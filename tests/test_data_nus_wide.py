"""`ovmlc data prepare nus-wide` on a tiny tree in the official raw NUS-WIDE layout."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ovmlc.cli import main
from ovmlc.data import label_matrix, load_canonical, read_card_metadata, read_label_split
from ovmlc.data.converters.nus_wide import normalize_image_entry, read_binary_matrix
from ovmlc.data.splits import select_validation_ids

TAGS = ["sky", "cat", "nature", "blue", "dog", "sunset"]  # "sky", "cat", "dog", "sunset" are concept names
CONCEPTS = ["cat", "dog", "fire", "sky", "sunset"]  # "fire" is a concept without a tag, as in the real release
TRAIN = [  # (list entry, tag row)
    ("C:\\ImageData\\Flickr\\actor\\0001_100.jpg", [1, 0, 1, 0, 0, 0]),  # absolute Windows path form
    ("actor\\0002_101.jpg", [0, 1, 0, 1, 0, 0]),
    ("animal\\0003_102.jpg", [0, 0, 0, 1, 0, 1]),
    ("animal\\0004_103.jpg", [1, 1, 0, 0, 1, 1]),  # only concept tags -> no seen tag -> dropped
    ("animal\\0005_104.jpg", [0, 0, 1, 1, 0, 0]),  # image file missing
    ("beach\\0006_105.jpg", [0, 0, 1, 0, 0, 0]),  # corrupt image file
    ("beach\\0007_106.jpg", [0, 0, 0, 1, 0, 0]),
    ("beach\\0008_107.jpg", [0, 0, 1, 1, 0, 0]),
]
TEST = [
    ("beach\\0009_200.jpg", [0, 0, 1, 0, 0, 0], {"sky": 1, "fire": 1}),
    ("beach\\0010_201.jpg", [1, 0, 0, 1, 0, 0], {"cat": 1}),
    ("actor\\0011_202.jpg", [0, 0, 0, 0, 0, 0], {}),
]


def write_image(path: Path, color: tuple[int, int, int]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (24, 16), color).save(path, format="JPEG")


def build_nus_wide(root: Path) -> Path:
    (root / "ImageList").mkdir(parents=True)
    (root / "NUS_WID_Tags").mkdir()
    truth_dir = root / "Groundtruth" / "TrainTestLabels"
    truth_dir.mkdir(parents=True)
    (root / "NUS_WID_Tags" / "TagList1k.txt").write_text("\n".join(TAGS) + "\n")
    (root / "Concepts81.txt").write_text("\n".join(CONCEPTS) + "\n")
    (root / "ImageList" / "TrainImagelist.txt").write_text("\r\n".join(entry for entry, _ in TRAIN) + "\r\n")
    (root / "ImageList" / "TestImagelist.txt").write_text("\r\n".join(entry for entry, _, _ in TEST) + "\r\n")
    # The official .dat files are space/tab separated 0/1 rows.
    (root / "NUS_WID_Tags" / "Train_Tags1k.dat").write_text("".join(" ".join(map(str, r)) + " \t\n" for _, r in TRAIN))
    (root / "NUS_WID_Tags" / "Test_Tags1k.dat").write_text("".join("\t".join(map(str, r)) + "\n" for _, r, _ in TEST))
    for concept in CONCEPTS:
        values = [str(truth.get(concept, 0)) for _, _, truth in TEST]
        (truth_dir / f"Labels_{concept}_Test.txt").write_text("\n".join(values) + "\n")
        (truth_dir / f"Labels_{concept}_Train.txt").write_text("\n".join("0" for _ in TRAIN) + "\n")
    for index, (entry, _) in enumerate(TRAIN + [(e, r) for e, r, _ in TEST]):
        relative = normalize_image_entry(entry)
        if relative.endswith("0005_104.jpg"):
            continue  # missing
        path = root / "Flickr" / relative
        if relative.endswith("0006_105.jpg"):
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(b"\xff\xd8\xff\xe0 this is not a jpeg")
            continue
        write_image(path, (10 * index, 100, 200))
    return root


def test_normalize_image_entry_handles_windows_paths():
    assert normalize_image_entry("C:\\ImageData\\Flickr\\actor\\0001_2124494179.jpg") == "actor/0001_2124494179.jpg"
    assert normalize_image_entry("actor\\0001_2124494179.jpg ") == "actor/0001_2124494179.jpg"
    assert normalize_image_entry("actor/0001_2124494179.jpg") == "actor/0001_2124494179.jpg"


def test_read_binary_matrix_fast_path_and_line_errors(tmp_path):
    path = tmp_path / "tags.dat"
    path.write_text("0 1 1\n1 0 0 \t\n\n0 0 1\n")
    np.testing.assert_array_equal(read_binary_matrix(path, 3), [[0, 1, 1], [1, 0, 0], [0, 0, 1]])
    path.write_text("0 1 1\n1 0\n0 0 1 1\n")
    with pytest.raises(ValueError, match="line 2"):
        read_binary_matrix(path, 3)


def test_prepare_nus_wide_end_to_end(tmp_path, capsys):
    root = build_nus_wide(tmp_path / "raw")
    out = tmp_path / "nus"
    code = main(
        [
            "data",
            "prepare",
            "nus-wide",
            "--root",
            str(root),
            "--out",
            str(out),
            "--no-progress",
            "--val-fraction",
            "0.25",
            "--seed",
            "2",
        ]
    )
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert "missing image: 1" in printed and "0005_104.jpg" in printed
    assert "corrupt image: 1" in printed and "0006_105.jpg" in printed

    seen, unseen = read_label_split(out)
    assert seen == ["nature", "blue"]  # TagList order minus concept names
    assert unseen == CONCEPTS
    block = read_card_metadata(out)
    assert block["annotation"] == "full" and block["source"] == "nus-wide"
    assert any("without any positive seen tag" in note for note in (out / "README.md").read_text().splitlines())

    dataset = load_canonical(out)
    assert set(dataset) == {"train", "validation", "test"}
    train_ids = set(dataset["train"]["image_id"]) | set(dataset["validation"]["image_id"])
    # 8 listed: 1 untagged dropped, 1 missing, 1 corrupt -> 5 written. Validation = the seeded 25% of the 7 tagged
    # candidates (chosen before images are read), minus the unreadable ones.
    candidates = [normalize_image_entry(entry) for entry, tags in TRAIN if tags[2] or tags[3]]
    bad = {"animal/0005_104.jpg", "beach/0006_105.jpg"}
    expected_validation = select_validation_ids(candidates, 0.25, 2) - bad
    assert expected_validation  # seed 2 keeps a readable validation image in this fixture
    assert len(train_ids) == 5 and set(dataset["validation"]["image_id"]) == expected_validation
    assert "animal/0004_103.jpg" not in train_ids
    names = dataset["train"].features["labels"].feature.names
    assert names == seen + unseen
    by_id = {r["image_id"]: r for r in dataset["train"]} | {r["image_id"]: r for r in dataset["validation"]}
    assert [names[i] for i in by_id["actor/0001_100.jpg"]["labels"]] == ["nature"]  # "sky" tag is a concept: dropped
    assert [names[i] for i in by_id["animal/0003_102.jpg"]["labels"]] == ["blue"]  # train never has unseen labels
    assert by_id["actor/0001_100.jpg"]["image"].size == (24, 16)

    test = dataset["test"]
    matrix = label_matrix(test, ["nature", "blue", "sky", "fire", "cat"])
    test_ids = test["image_id"]
    expected = {
        "beach/0009_200.jpg": [1, -1, 1, 1, -1],
        "beach/0010_201.jpg": [-1, 1, -1, -1, 1],  # the "sky" tag does not make the concept positive
        "actor/0011_202.jpg": [-1, -1, -1, -1, -1],
    }
    for image_id, row in zip(test_ids, matrix):
        assert row.tolist() == expected[image_id]


def test_nus_wide_missing_groundtruth_is_an_error_listing_the_concept(tmp_path, capsys):
    root = build_nus_wide(tmp_path / "raw")
    (root / "Groundtruth" / "TrainTestLabels" / "Labels_fire_Test.txt").unlink()
    code = main(["data", "prepare", "nus-wide", "--root", str(root), "--out", str(tmp_path / "o"), "--no-progress"])
    assert code == 2
    assert "fire" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_nus_wide_row_count_mismatch_names_the_file(tmp_path, capsys):
    root = build_nus_wide(tmp_path / "raw")
    tags = root / "NUS_WID_Tags" / "Test_Tags1k.dat"
    tags.write_text("\n".join(tags.read_text().splitlines()[:-1]) + "\n")
    assert (
        main(["data", "prepare", "nus-wide", "--root", str(root), "--out", str(tmp_path / "o"), "--no-progress"]) == 2
    )
    assert "Test_Tags1k.dat" in capsys.readouterr().err
