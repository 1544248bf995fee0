"""The optional `objects` column: schema, the conversion driver, and the COCO / Open Images box annotations."""

import json

import pytest
from datasets import ClassLabel, Dataset, DatasetDict, Features, Image, List, Value
from PIL import Image as PILImage
from test_data_coco import CATEGORY_ID, TRAIN, VAL, build_coco
from test_data_openimages import build_openimages

from ovmlc.cli import main
from ovmlc.data import CanonicalSchemaError, load_canonical, save_canonical, validate_canonical_features
from ovmlc.data.objects import object_rows, objects_feature
from ovmlc.data.prepare import SourcePlan, SourceRecord, prepare_canonical


def objects_by_id(split) -> dict[str, list[tuple[str, tuple[float, ...]]]]:
    names = split.features["labels"].feature.names
    return {
        row["image_id"]: sorted((names[o["label"]], tuple(o["bbox"])) for o in row["objects"])
        for row in split.select_columns(["image_id", "objects"])
    }


def test_objects_feature_is_validated():
    names = ["cat", "dog"]
    features = Features(
        {
            "image": Image(),
            "labels": List(ClassLabel(names=names)),
            "image_id": Value("string"),
            "objects": objects_feature(names),
        }
    )
    assert validate_canonical_features(features) == names
    wrong_names = Features({**features, "objects": objects_feature(["cat", "bird"])})
    with pytest.raises(CanonicalSchemaError, match="objects"):
        validate_canonical_features(wrong_names, "train")
    wrong_box = Features(
        {**features, "objects": List({"label": ClassLabel(names=names), "bbox": List(Value("float32"))})}
    )
    with pytest.raises(CanonicalSchemaError, match="bbox"):
        validate_canonical_features(wrong_box, "train")


def test_save_canonical_round_trips_objects(tmp_path):
    names = ["cat", "dog"]
    features = Features(
        {
            "image": Image(),
            "labels": List(ClassLabel(names=names)),
            "image_id": Value("string"),
            "objects": objects_feature(names),
        }
    )
    rows = {
        "image": [PILImage.new("RGB", (20, 10))] * 2,
        "labels": [[0, 1], [1]],
        "image_id": ["a", "b"],
        "objects": [[{"label": 0, "bbox": [1.0, 2.0, 3.0, 4.0]}], []],
    }
    splits = DatasetDict(
        {split: Dataset.from_dict(rows, features=features) for split in ("train", "validation", "test")}
    )
    out = save_canonical(
        splits,
        tmp_path / "d",
        source="t",
        converter_version="1",
        seen_labels=names,
        unseen_labels=[],
        annotation="full",
        description="boxes",
    )
    test = load_canonical(out, split="test")
    assert objects_by_id(test) == {"a": [("cat", (1.0, 2.0, 3.0, 4.0))], "b": []}
    columns, boxes = object_rows(test, ["dog", "cat"])[0]
    assert columns.tolist() == [1] and boxes.tolist() == [[1.0, 2.0, 3.0, 4.0]]
    assert [len(c) for c, _ in object_rows(test, ["dog"])] == [0, 0]


def _plan(records, annotation="full"):
    return SourcePlan(
        source="t",
        converter_version="1",
        label_names=["cat", "dog", "owl"],
        seen_labels=["cat", "dog"],
        unseen_labels=["owl"],
        annotation=annotation,
        title="t",
        description="t",
        splits={"train": records, "test": list(records)},
        has_objects=True,
    )


def test_driver_keeps_boxes_of_row_positives_and_scales_relative_boxes(tmp_path):
    image = PILImage.new("RGB", (40, 20))
    records = [
        SourceRecord(
            image_id="x",
            image=image,
            labels=["cat", "owl"],
            objects=[{"label": "cat", "bbox": (0.25, 0.5, 0.5, 0.25)}, {"label": "owl", "bbox": (0, 0, 0.1, 0.1)}],
            objects_relative=True,
        ),
        SourceRecord(image_id="y", image=image, labels=["dog"], objects=[{"label": "cat", "bbox": (1, 1, 2, 2)}]),
    ]
    from ovmlc.data.prepare import PrepareOptions

    prepare_canonical(_plan(records), tmp_path / "d", PrepareOptions(val_fraction=0.0, progress=False))
    dataset = load_canonical(tmp_path / "d")
    # train: the unseen owl's box goes with its label; y's cat box is dropped (cat is not a positive of y).
    assert objects_by_id(dataset["train"]) == {"x": [("cat", (10.0, 10.0, 20.0, 5.0))], "y": []}
    assert objects_by_id(dataset["test"])["x"] == [("cat", (10.0, 10.0, 20.0, 5.0)), ("owl", (0.0, 0.0, 4.0, 2.0))]
    bad = [SourceRecord(image_id="z", image=image, labels=["cat"], objects=[{"label": "cat", "bbox": (0, 0, 0, 5)}])]
    with pytest.raises(ValueError, match="positive width and height"):
        prepare_canonical(_plan(bad), tmp_path / "e", PrepareOptions(val_fraction=0.0, progress=False))


def test_coco_converter_writes_instance_boxes(tmp_path):
    root = build_coco(tmp_path / "raw")
    instances = root / "annotations" / "instances_val2014.json"
    data = json.loads(instances.read_text())
    for annotation in data["annotations"]:  # distinct boxes per instance
        annotation["bbox"] = [annotation["id"] % 7, 1.0, 5.0, 3.0 + annotation["image_id"] % 3]
    data["annotations"].append(
        {"id": 99, "image_id": 11, "category_id": CATEGORY_ID["cat"], "iscrowd": 1, "bbox": [0, 0, 20, 20]}
    )
    instances.write_text(json.dumps(data))
    # A folder name no other test uses: `datasets` caches local folders by name and file mtimes.
    out = tmp_path / "coco-with-boxes"
    assert main(["data", "prepare", "coco", "--root", str(root), "--out", str(out), "--no-progress"]) == 0
    test = objects_by_id(load_canonical(out, split="test"))
    expected_11 = sorted(
        (name, (float((11000 + k) % 7), 1.0, 5.0, float(3 + 11 % 3))) for k, name in enumerate(VAL[11])
    )
    assert test["11"] == expected_11  # the crowd region is not a box (the cat label stays from its instance)
    train = objects_by_id(load_canonical(out, split="train"))
    assert {name for boxes in train.values() for name, _ in boxes} <= {n for names in TRAIN.values() for n in names}
    without = tmp_path / "coco-no-boxes"
    assert (
        main(["data", "prepare", "coco", "--root", str(root), "--out", str(without), "--no-progress", "--no-boxes"])
        == 0
    )
    assert "objects" not in load_canonical(without, split="test").features


def test_openimages_converter_merges_the_sorted_box_stream(tmp_path):
    root = build_openimages(tmp_path / "raw")
    header = (
        "ImageID,Source,LabelName,Confidence,XMin,XMax,YMin,YMax,IsOccluded,IsTruncated,IsGroupOf,IsDepiction,IsInside"
    )
    rows = [
        "0000,human,/m/a,1,0.1,0.2,0.1,0.2,0,0,0,0,0",  # image without labels: skipped
        "0001,human,/m/a,1,0.0,0.5,0.25,0.75,0,0,0,0,0",
        "0001,human,/m/b,1,0.5,1.0,0.0,1.0,0,0,0,0,0",  # Dog was verified absent: the box makes it positive
        "0001,human,/m/e,1,0.0,0.25,0.0,0.25,0,0,1,0,0",  # group-of: left out
        "0002,human,/m/zzz,1,0.0,0.5,0.0,0.5,0,0,0,0,0",  # unknown MID: ignored
    ]
    (root / "train" / "train-annotations-bbox.csv").write_text("\n".join([header, *rows]) + "\n")
    (root / "test" / "test-annotations-bbox.csv").write_text(header + "\n0100,human,/m/e,1,0.5,1.0,0.5,1.0,0,0,0,0,0\n")
    out = tmp_path / "oi-with-boxes"
    argv = ["data", "prepare", "openimages", "--root", str(root), "--unseen-file", str(root / "unseen.txt")]
    assert main([*argv, "--out", str(out), "--no-progress", "--val-fraction", "0"]) == 0
    dataset = load_canonical(out)
    train = objects_by_id(dataset["train"])
    assert train["0001"] == [("Cat", (0.0, 4.0, 8.0, 8.0)), ("Dog", (8.0, 0.0, 8.0, 16.0))]  # 16 x 16 images
    names = dataset["train"].features["labels"].feature.names
    row = next(r for r in dataset["train"] if r["image_id"] == "0001")
    assert {names[i] for i in row["labels"]} == {"Cat", "Dog"} and not {names[i] for i in row["negative_labels"]}
    assert objects_by_id(dataset["test"])["0100"] == [("Zebra", (8.0, 8.0, 8.0, 8.0))]
    card = (out / "README.md").read_text()
    assert "group-of boxes left out" in card and "boxed images without image labels" in card


def test_openimages_unsorted_box_file_is_an_error(tmp_path, capsys):
    root = build_openimages(tmp_path / "raw")
    header = "ImageID,Source,LabelName,Confidence,XMin,XMax,YMin,YMax"
    rows = ["0002,h,/m/c,1,0,1,0,1", "0001,h,/m/a,1,0,1,0,1"]
    (root / "train" / "train-annotations-bbox.csv").write_text("\n".join([header, *rows]) + "\n")
    argv = ["data", "prepare", "openimages", "--root", str(root), "--out", str(tmp_path / "o"), "--no-progress"]
    assert main(argv) == 2
    assert "not sorted by ImageID" in capsys.readouterr().err


def test_synthetic_object_boxes_are_the_cells():
    from ovmlc.data.synthetic import generate_world

    world = generate_world(5, seed=0, stream="test", num_workers=1)
    scenes = world.scenes
    for index in range(5):
        boxes = scenes.object_boxes(index)
        for (colour, shape), slot in zip(scenes.objects(index), range(4)):
            row, col = divmod(int(scenes.cells[index, slot]), 4)
            cell = [col * 16.0, row * 16.0, 16.0, 16.0]
            assert {"label": shape, "bbox": cell} in boxes and {"label": colour, "bbox": cell} in boxes
        assert len(boxes) == 2 * len(scenes.objects(index))
    assert scenes.object_boxes(0, ["circle"]) == [b for b in scenes.object_boxes(0) if b["label"] == "circle"]
