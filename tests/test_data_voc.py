"""`ovmlc data prepare voc2007` on a tiny VOCdevkit tree (XML annotations, difficult objects)."""

from pathlib import Path

from PIL import Image

from ovmlc.cli import main
from ovmlc.data import label_matrix, load_canonical, read_card_metadata, read_label_split

IMAGES = {  # image id -> [(xml class name, difficult)]
    "000001": [("dog", 0), ("person", 1)],  # person only difficult -> unannotated
    "000002": [("diningtable", 0), ("chair", 1), ("chair", 0)],  # a non-difficult chair -> positive
    "000003": [("cat", 0)],  # image missing
    "000004": [("car", 0)],  # image corrupt
    "000005": [("tvmonitor", 0)],
    "000006": [("bird", 1)],
    "000007": [("sofa", 0), ("pottedplant", 0)],
}
TRAINVAL = ["000001", "000002", "000003", "000004", "000005"]
TEST = ["000006", "000007"]


def annotation_xml(image_id: str, objects) -> str:
    parts = [f"<annotation><folder>VOC2007</folder><filename>{image_id}.jpg</filename>"]
    parts.append("<size><width>20</width><height>20</height><depth>3</depth></size>")
    for name, difficult in objects:
        parts.append(
            f"<object><name>{name}</name><pose>Unspecified</pose><truncated>0</truncated>"
            f"<difficult>{difficult}</difficult><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>9</xmax><ymax>9</ymax>"
            "</bndbox></object>"
        )
    return "".join(parts) + "</annotation>"


def build_voc(root: Path) -> Path:
    year = root / "VOCdevkit" / "VOC2007"
    for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (year / sub).mkdir(parents=True, exist_ok=True)
    for image_id, objects in IMAGES.items():
        (year / "Annotations" / f"{image_id}.xml").write_text(annotation_xml(image_id, objects))
        image_path = year / "JPEGImages" / f"{image_id}.jpg"
        if image_id == "000003":
            continue
        if image_id == "000004":
            image_path.write_bytes(b"")
            continue
        Image.new("RGB", (20, 20), (int(image_id) * 30, 10, 10)).save(image_path, format="JPEG")
    (year / "ImageSets" / "Main" / "trainval.txt").write_text("\n".join(TRAINVAL) + "\n")
    (year / "ImageSets" / "Main" / "test.txt").write_text("\n".join(TEST) + "\n")
    return root


def test_prepare_voc2007_difficult_objects_are_unannotated(tmp_path, capsys):
    root = build_voc(tmp_path / "raw")
    out = tmp_path / "voc"
    code = main(
        [
            "data",
            "prepare",
            "voc2007",
            "--root",
            str(root / "VOCdevkit"),
            "--out",
            str(out),
            "--no-progress",
            "--val-fraction",
            "0",
        ]
    )
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert "missing image: 1" in printed and "000003.jpg" in printed
    assert "corrupt image: 1" in printed and "000004.jpg" in printed
    assert read_card_metadata(out)["annotation"] == "partial"
    seen, unseen = read_label_split(out)
    assert len(seen) == 20 and unseen == [] and "dining table" in seen and "tv monitor" in seen

    dataset = load_canonical(out)
    assert "negative_labels" in dataset["train"].features
    train = dataset["train"]
    assert sorted(train["image_id"]) == ["000001", "000002", "000005"]
    columns = ["dog", "person", "chair", "dining table", "tv monitor", "cat"]
    matrix = dict(zip(train["image_id"], label_matrix(train, columns).tolist()))
    assert matrix["000001"] == [1, 0, -1, -1, -1, -1]  # difficult-only person: neither positive nor negative
    assert matrix["000002"] == [-1, -1, 1, 1, -1, -1]
    assert matrix["000005"] == [-1, -1, -1, -1, 1, -1]
    test_matrix = dict(
        zip(dataset["test"]["image_id"], label_matrix(dataset["test"], ["bird", "sofa", "potted plant"]).tolist())
    )
    assert test_matrix == {"000006": [0, -1, -1], "000007": [-1, 1, 1]}


def test_voc_unknown_class_is_an_error_listing_it(tmp_path, capsys):
    root = build_voc(tmp_path / "raw")
    xml = root / "VOCdevkit" / "VOC2007" / "Annotations" / "000005.xml"
    xml.write_text(annotation_xml("000005", [("unicorn", 0), ("dog", 0)]))
    assert main(["data", "prepare", "voc2007", "--root", str(root), "--out", str(tmp_path / "o"), "--no-progress"]) == 2
    error = capsys.readouterr().err
    assert "'unicorn'" in error and "000005.xml" in error
    assert not (tmp_path / "o").exists()
