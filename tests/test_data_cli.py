"""`ovmlc data` command group: help, info, worker threads, trial limits, Hub upload check and Hub-id errors."""

import pytest
from PIL import Image

from ovmlc.cli import main
from ovmlc.data import load_canonical
from ovmlc.data.converters import CONVERTERS, Converter, register_converter


def write_table(root, count=12):
    (root / "images").mkdir(parents=True)
    lines = ["path,labels"]
    for index in range(count):
        Image.new("RGB", (16, 12), (index * 20, 0, 0)).save(root / "images" / f"{index}.jpg")
        lines.append(f"images/{index}.jpg,{'red' if index % 2 else 'red|dark'}")
    (root / "t.csv").write_text("\n".join(lines) + "\n")
    return root / "t.csv"


def test_every_registered_source_has_a_prepare_subcommand(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["data", "prepare", "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for name in ("nus-wide", "coco", "voc2007", "openimages", "folder", "csv", "jsonl", "hub", "parquet"):
        assert name in CONVERTERS and name in text


def test_register_converter_refuses_silent_replacement():
    class Dummy(Converter):
        name = "csv"

        def plan(self, args):
            raise AssertionError("never called")

    with pytest.raises(ValueError, match="already registered"):
        register_converter(Dummy())


def test_threads_limit_info_and_upload_check(tmp_path, capsys):
    table = write_table(tmp_path / "raw")
    out = tmp_path / "out"
    argv = ["data", "prepare", "csv", "--root", str(table), "--out", str(out), "--no-progress", "--num-workers", "2"]
    assert main(argv) == 0
    threaded = load_canonical(out)
    assert sum(len(split) for split in threaded.values()) == 12

    limited = tmp_path / "limited"
    assert main(argv[:6] + [str(limited), "--no-progress", "--limit", "3", "--test-fraction", "0.4"]) == 0
    assert sum(len(split) for split in load_canonical(limited).values()) == 6  # 3 per source split (train, test)
    capsys.readouterr()

    assert main(["data", "info", str(out)]) == 0
    info = capsys.readouterr().out
    assert "source csv" in info and "2 seen, 0 unseen" in info and "train:" in info

    from ovmlc.hub import validate_dataset_folder  # what `ovmlc push-dataset` checks before uploading as-is

    uploaded, _ = validate_dataset_folder(out)
    assert "README.md" in uploaded and any(name.startswith("data/train-") for name in uploaded)

    assert main(["data", "info", str(tmp_path / "nowhere")]) == 2
    assert "nowhere" in capsys.readouterr().err


def test_unknown_hub_id_offline_is_a_clear_error():
    with pytest.raises(FileNotFoundError, match="not a local folder"):
        load_canonical("ovmlc-test-user/definitely-not-a-dataset")
