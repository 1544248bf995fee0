"""`ovmlc data prepare coco` on a tiny tree in the official COCO 2014 layout (instances json + image folders)."""

import json
from pathlib import Path

import numpy as np
from PIL import Image

from ovmlc.cli import main
from ovmlc.core.vocabulary import load_labelset
from ovmlc.data import label_matrix, load_canonical, read_card_metadata, read_label_split

COCO80 = load_labelset("coco-80")["labels"]
CATEGORY_ID = {name: index + 1 for index, name in enumerate(COCO80)}  # ids need not be contiguous; 1-based here

TRAIN = {  # image id -> object categories
    1: ["person", "car", "person"],
    2: ["person", "dog"],  # dog is unseen -> removed from the zero-shot train set
    3: ["traffic light"],  # only an excluded category -> no seen object -> removed
    4: ["bicycle"],  # file missing
    5: ["bird"],  # file corrupt
    6: [],  # no annotation
    7: ["horse"],
    8: ["sheep", "truck"],
    9: ["bench"],
}
VAL = {
    11: ["cat", "person"],
    12: ["dining table"],  # excluded category only -> not a 48/17 test image
    13: ["bus"],
    14: ["car"],
}


def write_instances(path: Path, images: dict[int, list[str]], prefix: str, extra_annotations=()) -> None:
    annotations = [
        {
            "id": 1000 * image_id + k,
            "image_id": image_id,
            "category_id": CATEGORY_ID[name],
            "iscrowd": 0,
            "bbox": [0, 0, 1, 1],
        }
        for image_id, names in images.items()
        for k, name in enumerate(names)
    ]
    data = {
        "info": {"description": "fixture"},
        "images": [{"id": i, "file_name": f"{prefix}_{i:012d}.jpg", "width": 20, "height": 20} for i in images],
        "annotations": annotations + list(extra_annotations),
        "categories": [{"id": CATEGORY_ID[name], "name": name, "supercategory": "x"} for name in COCO80],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))


def build_coco(root: Path) -> Path:
    write_instances(root / "annotations" / "instances_train2014.json", TRAIN, "COCO_train2014")
    write_instances(root / "annotations" / "instances_val2014.json", VAL, "COCO_val2014")
    for folder, prefix, images in (("train2014", "COCO_train2014", TRAIN), ("val2014", "COCO_val2014", VAL)):
        (root / folder).mkdir(parents=True, exist_ok=True)
        for image_id in images:
            path = root / folder / f"{prefix}_{image_id:012d}.jpg"
            if image_id == 4:
                continue
            if image_id == 5:
                path.write_bytes(b"\x89PNG\r\n\x1a\n truncated")
                continue
            Image.new("RGB", (20, 20), (image_id * 20, 50, 90)).save(path, format="JPEG")
    return root


def by_id(dataset):
    names = dataset.features["labels"].feature.names
    return {
        row["image_id"]: sorted(names[i] for i in row["labels"])
        for row in dataset.select_columns(["image_id", "labels"])
    }


def test_prepare_coco_zero_shot_48_17(tmp_path, capsys):
    root = build_coco(tmp_path / "raw")
    out = tmp_path / "coco"
    code = main(
        ["data", "prepare", "coco", "--root", str(root), "--out", str(out), "--no-progress", "--val-fraction", "0"]
    )
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert "missing image: 1" in printed and "COCO_train2014_000000000004.jpg" in printed
    assert "corrupt image: 1" in printed and "COCO_train2014_000000000005.jpg" in printed

    seen, unseen = read_label_split(out)
    assert len(seen) == 48 and len(unseen) == 17 and "dog" in unseen and "traffic light" not in seen + unseen
    assert read_card_metadata(out)["coco_split"] == "zsl-48-17"
    dataset = load_canonical(out)
    assert "validation" not in dataset  # --val-fraction 0: no hold-out
    assert by_id(dataset["train"]) == {"1": ["car", "person"], "7": ["horse"], "8": ["sheep", "truck"], "9": ["bench"]}
    test = dataset["test"]
    assert by_id(test) == {"11": ["cat", "person"], "13": ["bus"], "14": ["car"]}
    # ZSL test set = images with a positive among the 17 unseen labels.
    unseen_matrix = label_matrix(test, unseen)
    assert (unseen_matrix == 1).any(axis=1).sum() == 2
    assert set(unseen_matrix.ravel().tolist()) == {1, -1}  # fully annotated: no 0 entries


def test_prepare_coco_full_80(tmp_path, capsys):
    root = build_coco(tmp_path / "raw")
    out = tmp_path / "coco80"
    assert (
        main(
            [
                "data",
                "prepare",
                "coco",
                "--split",
                "full",
                "--root",
                str(root),
                "--out",
                str(out),
                "--no-progress",
                "--val-fraction",
                "0.2",
                "--seed",
                "3",
            ]
        )
        == 0
    )
    seen, unseen = read_label_split(out)
    assert seen == COCO80 and unseen == []
    dataset = load_canonical(out)
    train_ids = set(dataset["train"]["image_id"]) | set(dataset["validation"]["image_id"])
    assert train_ids == {"1", "2", "3", "7", "8", "9"}  # every image with an instance, minus unreadable files
    assert len(dataset["validation"]) >= 1
    assert by_id(dataset["test"])["12"] == ["dining table"]


def test_coco_unknown_category_is_an_error(tmp_path, capsys):
    root = build_coco(tmp_path / "raw")
    bad = [{"id": 1, "image_id": 11, "category_id": 999, "iscrowd": 0, "bbox": [0, 0, 1, 1]}]
    write_instances(root / "annotations" / "instances_val2014.json", VAL, "COCO_val2014", extra_annotations=bad)
    assert main(["data", "prepare", "coco", "--root", str(root), "--out", str(tmp_path / "o"), "--no-progress"]) == 2
    error = capsys.readouterr().err
    assert "999" in error and "instances_val2014.json" in error
    assert not (tmp_path / "o").exists()


# ---------------------------------------------------------------------- partial labels: dualcoop-size-rows
def test_size_row_masking_keeps_more_than_p_and_flips_positives():
    """Hiding (size row, label) entries independently keeps 1 - (1 - P)^3 of the entries and turns a positive whose
    own row is hidden (while another row stays) into a negative."""
    from ovmlc.data.converters.coco import size_row_partial_labels

    labels = list(range(20))
    annotated = flipped = total = 0
    for index in range(3000):
        sized = {(index % 3, 0), (2, 1)}  # label 0 small/medium/large by image, label 1 large
        positives, negatives = size_row_partial_labels(f"img-{index}", sized, labels, 0.5, seed=0)
        assert not set(positives) & set(negatives) and set(positives) <= {0, 1}
        annotated += len(positives) + len(negatives)
        flipped += (0 in negatives) + (1 in negatives)
        total += len(labels)
    assert abs(annotated / total - 0.875) < 0.01
    assert abs(flipped / 6000 - 0.5 * 0.75) < 0.03  # own row hidden (0.5) and another row kept (1 - 0.25)
    again = size_row_partial_labels("img-7", {(0, 0)}, labels, 0.5, seed=0)
    assert again == size_row_partial_labels("img-7", {(0, 0)}, labels, 0.5, seed=0)


def test_prepare_coco_dualcoop_size_rows_mode(tmp_path, capsys):
    root = tmp_path / "raw"
    build_coco(root)
    # Instance areas per image (COCO's `area`): rows small < 32², medium < 96², large.
    sizes = {1: [2000.0, 40.0, 50.0], 2: [10.0, 10.0], 3: [9.0], 4: [10.0], 5: [10.0], 7: [20000.0], 8: [100.0, 5000.0]}
    sizes[9] = [50.0]
    data = json.loads((root / "annotations" / "instances_train2014.json").read_text())
    for annotation in data["annotations"]:
        annotation["area"] = sizes[annotation["image_id"]][annotation["id"] % 1000]
    (root / "annotations" / "instances_train2014.json").write_text(json.dumps(data))
    out = tmp_path / "coco-rows"
    argv = ["data", "prepare", "coco", "--root", str(root), "--out", str(out), "--no-progress", "--val-fraction", "0"]
    assert main([*argv, "--partial-label-mode", "dualcoop-size-rows"]) == 2
    assert "needs --partial-ratio" in capsys.readouterr().err
    code = main([*argv, "--partial-ratio", "0.5", "--partial-label-mode", "dualcoop-size-rows"])
    assert code == 0, capsys.readouterr()
    block = read_card_metadata(out)
    assert block["annotation"] == "partial" and block["partial_label_mode"] == "dualcoop-size-rows"
    assert block["partial_label_proportion"] == 0.5
    seen, unseen = read_label_split(out)
    dataset = load_canonical(out)
    from ovmlc.data.converters.coco import size_row_partial_labels

    train = label_matrix(dataset["train"], seen)
    category = {name: CATEGORY_ID[name] for name in COCO80}
    label_ids = sorted(category[name] for name in seen + unseen)
    rows = {1: {(1, 1), (0, 3), (0, 1)}, 7: {(2, 18)}, 8: {(0, 19), (1, 8)}, 9: {(0, 14)}}  # (size row, category id)
    for row, image_id in enumerate(dataset["train"]["image_id"]):
        positives, negatives = size_row_partial_labels(image_id, rows[int(image_id)], label_ids, 0.5, seed=0)
        names = {cid: name for name, cid in category.items()}
        expected = np.zeros(len(seen), dtype=np.int8)
        for cid in positives:
            expected[seen.index(names[cid])] = 1
        for cid in negatives:
            if names[cid] in seen:
                expected[seen.index(names[cid])] = -1
        np.testing.assert_array_equal(train[row], expected)  # the converter's mask, not re-masked by the driver
    assert (label_matrix(dataset["test"], seen + unseen) != 0).all()  # the test split stays fully annotated
