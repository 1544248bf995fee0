"""`ovmlc predict` over many images: input kinds, output formats, unreadable images, thresholds files, resume after a
real SIGKILL, datasets, precision, and two accelerate processes merging into what one process writes."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import random_images, save_hub_layout_clip
from PIL import Image
from test_train_fixtures import make_tiny_dataset

import ovmlc
from ovmlc.cli import main as cli_main
from ovmlc.core.images import load_image
from ovmlc.core.scoring import Scorer, parse_dtype, resolve_device
from ovmlc.evaluation import write_thresholds
from ovmlc.inference import tagging

LABELS = ["cat", "dog", "red car", "tree", "boat"]


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    return save_hub_layout_clip(tmp_path_factory.mktemp("clip"))


@pytest.fixture(scope="module")
def model(clip_dir):
    model = ovmlc.load_model(str(clip_dir))
    model.set_label_cache(None)
    return model


@pytest.fixture(scope="module")
def photo_dir(tmp_path_factory):
    """Nested folders of images in several formats, a hidden file, a non-image and an unreadable .jpg."""
    root = tmp_path_factory.mktemp("photos")
    (root / "trip" / "day2").mkdir(parents=True)
    images = random_images(6, size=40)
    names = ["a.jpg", "b.png", "trip/c.jpeg", "trip/day2/d.JPG", "trip/day2/e.webp", ".hidden.jpg"]
    for image, name in zip(images, names):
        image.save(root / name)
    (root / "notes.txt").write_text("not a list of images\n")
    (root / "trip" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not a JPEG")
    return root


def _predict(*arguments: str) -> int:
    return cli_main(["predict", *arguments])


def _cli_env(tmp_path: Path) -> dict[str, str]:
    repo = str(Path(__file__).resolve().parents[1])
    return dict(
        os.environ,
        OMP_NUM_THREADS="1",
        OVMLC_CACHE=str(tmp_path / "cache"),
        PYTHONPATH=os.pathsep.join([repo, os.environ.get("PYTHONPATH", "")]),
    )


# ---------------------------------------------------------------------------------------------------------- inputs


def test_discover_expands_folders_globs_and_list_files(photo_dir, tmp_path):
    found = tagging.discover_image_files([photo_dir])
    relative = [str(Path(path).relative_to(photo_dir)) for path in found]
    # Recursive, image extensions only (any case), hidden files skipped, stable sorted order.
    assert relative == ["a.jpg", "b.png", "trip/broken.jpg", "trip/c.jpeg", "trip/day2/d.JPG", "trip/day2/e.webp"]

    pattern = str(photo_dir / "**" / "*.jpg")
    assert [Path(path).name for path in tagging.discover_image_files([pattern])] == ["a.jpg", "broken.jpg"]

    listing = tmp_path / "lists" / "paths.txt"
    listing.parent.mkdir()
    listing.write_text(f"# my photos\n{photo_dir / 'a.jpg'}\n\n../missing.jpg\n{photo_dir / 'b.png'}\n")
    from_list = tagging.discover_image_files([listing])
    # Relative entries resolve against the list file's folder; missing ones are not fatal here (errors file later).
    assert from_list == [str(photo_dir / "a.jpg"), str(tmp_path / "missing.jpg"), str(photo_dir / "b.png")]

    # A file given twice (directly and through its folder) is tagged once; explicit files keep any extension.
    both = tagging.discover_image_files([photo_dir / "a.jpg", photo_dir, photo_dir / "notes.txt"])
    assert both.count(str(photo_dir / "a.jpg")) == 1


@pytest.mark.parametrize(
    "argument, message",
    [("does/not/exist.jpg", "no such file or folder"), ("nothing-*.jpg", "matches no image")],
)
def test_discover_names_bad_inputs(argument, message, tmp_path):
    with pytest.raises(tagging.TaggingError, match=message):
        tagging.discover_image_files([str(tmp_path / argument)])
    (tmp_path / "empty").mkdir()
    with pytest.raises(tagging.TaggingError, match="holds no image"):
        tagging.discover_image_files([tmp_path / "empty"])


def test_load_image_applies_exif_orientation_and_reduced_scale_decode(tmp_path):
    pixels = np.zeros((40, 80, 3), dtype=np.uint8)
    pixels[:, :40] = 255  # left half white
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    Image.fromarray(pixels).save(tmp_path / "rotated.jpg", exif=exif.tobytes())
    upright = load_image(tmp_path / "rotated.jpg")
    assert upright.size == (40, 80)  # displayed portrait, as datasets and transformers decode it
    assert np.asarray(upright)[:20].mean() > 200 and np.asarray(upright)[-20:].mean() < 50  # white half on top

    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (900, 1200, 3), dtype=np.uint8)).save(tmp_path / "big.jpg")
    reduced = load_image(tmp_path / "big.jpg", min_size=224)
    assert reduced.size == (300, 225)  # 1/4 scale: the smallest DCT scale keeping the shorter side >= 224
    assert load_image(tmp_path / "big.jpg").size == (1200, 900)


# ---------------------------------------------------------------------------------------------------------- outputs


@pytest.mark.parametrize("extension", [".jsonl", ".csv", ".parquet"])
def test_output_formats_hold_the_same_results_as_predict(extension, photo_dir, clip_dir, model, tmp_path):
    output = tmp_path / f"tags{extension}"
    inputs = [str(photo_dir)]
    arguments = [*inputs, "--labels", ", ".join(LABELS), "--model", str(clip_dir), "--top-k", "3"]
    assert _predict(*arguments, "--output", str(output), "--all-scores", "--num-workers", "2", "--no-progress") == 0

    rows = tagging.read_results(output)
    good = [path for path in tagging.discover_image_files(inputs) if "broken" not in path]
    assert [row["image"] for row in rows] == good
    expected = model.predict_scores(good, LABELS)  # [N, C]
    for row, scores in zip(rows, expected):
        np.testing.assert_allclose(row["all_scores"], scores, atol=2e-6)
        order = np.argsort(-scores, kind="stable")[:3]
        assert row["labels"] == [LABELS[index] for index in order]
        np.testing.assert_allclose(row["scores"], scores[order], atol=2e-6)
    errors = tagging.read_results(tmp_path / "tags.errors.jsonl")
    assert [entry["image"] for entry in errors] == [str(photo_dir / "trip" / "broken.jpg")]
    assert "broken.jpg: cannot read image" in errors[0]["error"]
    run = json.loads((tmp_path / "tags.run.json").read_text())
    assert run["labels"] == LABELS and run["top_k"] == 3 and run["all_scores"] is True
    if extension == ".parquet":
        import pyarrow.parquet as pq

        schema = pq.read_schema(output)
        assert json.loads(schema.metadata[b"ovmlc.labels"]) == LABELS
        assert not output.with_name(output.name + ".parts").exists()


def test_label_maps_column_and_csv_refusal(photo_dir, clip_dir, tmp_path, capsys):
    image = str(photo_dir / "a.jpg")
    common = [image, "--labels", "cat, dog", "--model", str(clip_dir), "--num-workers", "0", "--no-progress"]
    assert _predict(*common, "--label-maps", "--top-k", "1", "--output", str(tmp_path / "maps.jsonl")) == 0
    (row,) = tagging.read_results(tmp_path / "maps.jsonl")
    assert np.asarray(row["label_maps"]).shape == (1, 4, 4)  # kept labels x the 32 px / patch 8 grid
    assert _predict(*common, "--label-maps", "--output", str(tmp_path / "maps.csv")) == 2
    assert "label maps need a .jsonl or .parquet output" in capsys.readouterr().err


def test_existing_output_needs_resume_or_overwrite_and_resume_checks_the_run(photo_dir, clip_dir, tmp_path, capsys):
    output = tmp_path / "tags.jsonl"
    common = [str(photo_dir / "a.jpg"), "--model", str(clip_dir), "--output", str(output), "--no-progress"]
    assert _predict(*common, "--labels", "cat, dog", "--num-workers", "0") == 0
    assert _predict(*common, "--labels", "cat, dog") == 2
    assert "exists: pass --resume" in capsys.readouterr().err
    assert _predict(*common, "--labels", "cat, bird", "--resume") == 2
    assert "another run configuration (differs in labels)" in capsys.readouterr().err
    assert _predict(*common, "--labels", "cat, bird", "--overwrite", "--num-workers", "0") == 0
    assert tagging.read_results(output)[0]["labels"][0] in {"cat", "bird"}


def test_resume_cuts_a_torn_last_line_and_skips_done_images(photo_dir, clip_dir, tmp_path):
    output = tmp_path / "tags.jsonl"
    common = [str(photo_dir), "--labels", "cat, dog", "--model", str(clip_dir), "--num-workers", "0", "--no-progress"]
    assert _predict(*common, "--output", str(output)) == 0
    complete = output.read_text()
    lines = complete.splitlines(keepends=True)
    output.write_text("".join(lines[:2]) + lines[2][:17])  # as if killed while writing the third row
    assert _predict(*common, "--output", str(output), "--resume") == 0
    resumed = [json.loads(line) for line in output.read_text().splitlines()]
    assert [row["image"] for row in resumed] == [json.loads(line)["image"] for line in lines]
    for row, line in zip(resumed, lines):  # other batch compositions: equal up to float rounding
        np.testing.assert_allclose(row["scores"], json.loads(line)["scores"], atol=1e-5)
    again = output.read_text(), (tmp_path / "tags.errors.jsonl").read_text()
    assert _predict(*common, "--output", str(output), "--resume") == 0  # nothing left to do: nothing added
    assert (output.read_text(), (tmp_path / "tags.errors.jsonl").read_text()) == again


@pytest.mark.slow
@pytest.mark.parametrize("extension", [".jsonl", ".parquet"])
def test_resume_after_sigkill_writes_every_image_exactly_once(extension, clip_dir, tmp_path):
    folder = tmp_path / "many"
    folder.mkdir()
    for index, image in enumerate(random_images(300, size=40, seed=1)):
        image.save(folder / f"{index:04d}.png")
    output = tmp_path / f"tags{extension}"
    command = [sys.executable, "-m", "ovmlc.predict", str(folder), "--labels", "cat, dog, tree"]
    command += ["--model", str(clip_dir), "--output", str(output), "--batch-size", "1", "--num-workers", "1"]
    command += ["--rows-per-part", "16"]
    env = _cli_env(tmp_path)
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    progress = output if extension == ".jsonl" else output.with_name(output.name + ".parts")

    def written() -> int:
        if extension == ".jsonl":
            return output.read_bytes().count(b"\n") if output.exists() else 0
        return 16 * len(list(progress.glob("part-*.parquet"))) if progress.exists() else 0

    deadline = time.monotonic() + 240
    while written() < 20:
        assert process.poll() is None, process.stderr.read().decode()[-2000:]
        assert time.monotonic() < deadline, "the tagging run never started writing"
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)  # mid-run: no clean-up code runs
    process.wait()
    records = tagging.JsonlRecords(output) if extension == ".jsonl" else tagging.ParquetRecords(output, None)
    before = len(set(records.keys()))
    assert 0 < before < 300, before

    resumed = subprocess.run([*command, "--resume", "--no-progress"], env=env, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    keys = tagging.iter_keys(output)
    expected = [str(folder / f"{index:04d}.png") for index in range(300)]
    assert keys == expected  # every image once, none twice, in input order
    assert f"{before} already there" in resumed.stderr


# ---------------------------------------------------------------------------------------------------------- thresholds


def test_thresholds_json_from_calibration_drives_predict(photo_dir, clip_dir, model, tmp_path):
    images = [str(photo_dir / "a.jpg"), str(photo_dir / "b.png")]
    scores = model.predict_scores(images, LABELS)  # [2, C]
    per_label = {name: float(scores[:, index].mean()) for index, name in enumerate(LABELS[:3])}
    calibration = {"label_thresholds": per_label, "global_threshold": 0.5}
    labels = np.zeros((2, len(LABELS)), dtype=np.int8)
    labels[:, :3] = 1  # the last two labels have no positive: they fall back to the global threshold
    thresholds_file = write_thresholds(calibration, labels, LABELS, tmp_path / "eval")

    expected_thresholds = np.array([*per_label.values(), 0.5, 0.5], dtype=np.float32)
    expected = [
        [LABELS[i] for i in np.argsort(-row, kind="stable") if row[i] >= expected_thresholds[i]] for row in scores
    ]
    output = tmp_path / "tags.jsonl"
    arguments = [*images, "--labels", ", ".join(LABELS), "--model", str(clip_dir), "--num-workers", "0"]
    assert _predict(*arguments, "--threshold", str(thresholds_file), "--output", str(output), "--no-progress") == 0
    assert [row["labels"] for row in tagging.read_results(output)] == expected
    assert [[label for label, _ in ranked] for ranked in model.predict(images, LABELS, threshold=calibration)] == (
        expected
    )
    # A plain {label: threshold} dict must name every label (case/whitespace-insensitive).
    plain = {name.upper(): 0.0 for name in LABELS}
    assert all(len(ranked) == len(LABELS) for ranked in model.predict(images, LABELS, threshold=plain))
    with pytest.raises(ValueError, match=r"no threshold for labels \['boat'\]"):
        model.predict(images, LABELS, threshold={name: 0.5 for name in LABELS[:4]})


def test_threshold_argument_names_a_missing_file(clip_dir, photo_dir, capsys):
    with pytest.raises(SystemExit):
        _predict(str(photo_dir / "a.jpg"), "--labels", "cat", "--threshold", "thresholds-typo.json")
    assert "a thresholds.json file; got 'thresholds-typo.json'" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------------------- datasets


def test_dataset_split_is_tagged_by_image_id(clip_dir, tmp_path):
    dataset = make_tiny_dataset(tmp_path / "data")
    output = tmp_path / "tags.csv"
    arguments = ["--dataset", str(dataset), "--split", "validation", "--labels", "red, green, blue"]
    assert _predict(*arguments, "--model", str(clip_dir), "--output", str(output), "--no-progress") == 0
    rows = tagging.read_results(output)
    assert [row["image"] for row in rows] == [f"validation-{index:03d}" for index in range(21)]

    from ovmlc.data import load_canonical

    split = load_canonical(dataset, split="validation")
    reference = ovmlc.load_model(str(clip_dir)).predict_scores(list(split["image"]), ["red", "green", "blue"])
    for row, scores in zip(rows, reference):
        np.testing.assert_allclose(row["scores"], np.sort(scores)[::-1], atol=2e-6)


# ---------------------------------------------------------------------------------------------------------- precision


def test_bfloat16_image_side_keeps_a_float32_head(model):
    pixel_values = model.preprocess(random_images(3, size=40))
    label_embeds = model.encode_labels(LABELS)
    full = Scorer(model).score_batch(pixel_values, label_embeds)
    half = Scorer(model, image_dtype=torch.bfloat16).score_batch(pixel_values, label_embeds)
    assert half.logits.dtype == torch.float32 and half.scores.dtype == torch.float32
    torch.testing.assert_close(half.logits, full.logits, atol=0.15, rtol=0.05)  # bf16 image tower, same ranking head
    reference = model(pixel_values=pixel_values, label_embeds=label_embeds).logits
    torch.testing.assert_close(full.logits, reference, atol=1e-6, rtol=1e-6)


def test_device_and_dtype_arguments(capsys, photo_dir):
    assert parse_dtype("bf16") is torch.bfloat16 and parse_dtype("float32") is torch.float32
    with pytest.raises(ValueError, match="unknown dtype 'int8'"):
        parse_dtype("int8")
    assert resolve_device("cpu") == torch.device("cpu")
    if not torch.cuda.is_available():
        assert resolve_device("auto") == torch.device("cpu")
        with pytest.raises(ValueError, match="no CUDA device"):
            resolve_device("cuda:1")
        assert _predict(str(photo_dir / "a.jpg"), "--labels", "cat", "--device", "cuda") == 2
        assert "no CUDA device" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------------------- processes


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.slow
def test_two_accelerate_processes_merge_into_the_single_process_output(photo_dir, clip_dir, tmp_path):
    arguments = [str(photo_dir), "--labels", ", ".join(LABELS), "--model", str(clip_dir), "--all-scores"]
    arguments += ["--batch-size", "2", "--num-workers", "0", "--no-progress"]
    single = tmp_path / "single.jsonl"
    assert _predict(*arguments, "--output", str(single)) == 0

    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2"]
    launch += ["--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    launch += ["--main_process_port", str(_free_port()), "-m", "ovmlc.predict"]
    double = tmp_path / "double.jsonl"
    env = dict(_cli_env(tmp_path), ACCELERATE_USE_CPU="true")
    result = subprocess.run([*launch, *arguments, "--output", str(double)], env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]

    single_rows, double_rows = tagging.read_results(single), tagging.read_results(double)
    assert [row["image"] for row in double_rows] == [row["image"] for row in single_rows]
    for one, two in zip(single_rows, double_rows):
        assert one["labels"] == two["labels"]
        np.testing.assert_allclose(one["all_scores"], two["all_scores"], atol=1e-5)
    assert tagging.read_results(tmp_path / "double.errors.jsonl") == tagging.read_results(
        tmp_path / "single.errors.jsonl"
    )
    assert sorted(path.name for path in tmp_path.glob("double*")) == [
        "double.errors.jsonl",
        "double.jsonl",
        "double.run.json",
    ]  # shards merged and removed

    # Resume per shard: a run killed after rank 1 finished leaves its shard; the rerun only tags rank 0's half.
    double.unlink()
    (tmp_path / "double.errors.jsonl").unlink()
    shard = tagging.shard_path(double, 1, 2)
    rank_one = {
        source.key
        for source in tagging.ProcessGroup(1, 2).take(tagging.file_sources(tagging.discover_image_files([photo_dir])))
    }
    second_half = [row for row in single_rows if row["image"] in rank_one]
    assert 0 < len(second_half) < len(single_rows)
    with shard.open("w") as handle:
        handle.writelines(json.dumps(row) + "\n" for row in second_half)
    result = subprocess.run(
        [*launch, *arguments, "--output", str(double), "--resume"], env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert [row["image"] for row in tagging.read_results(double)] == [row["image"] for row in single_rows]


def test_evaluate_takes_device_and_dtype(clip_dir, tmp_path):
    from ovmlc.evaluation import load_scores

    dataset = make_tiny_dataset(tmp_path / "data")
    common = ["evaluate", "--model", str(clip_dir), "--dataset", str(dataset), "--protocol", "synthetic"]
    common += ["--limit", "8", "--no-plots", "--device", "cpu"]
    assert cli_main([*common, "--output", str(tmp_path / "fp32")]) == 0
    assert cli_main([*common, "--dtype", "bfloat16", "--output", str(tmp_path / "bf16")]) == 0
    full, half = load_scores(tmp_path / "fp32" / "scores.npz"), load_scores(tmp_path / "bf16" / "scores.npz")
    assert half.scores.dtype == np.float32 and not np.array_equal(full.scores, half.scores)  # bf16 really ran
    np.testing.assert_allclose(half.scores, full.scores, atol=0.03)
    metrics = json.loads((tmp_path / "bf16" / "metrics.json").read_text())
    assert metrics["provenance"]["model"] == str(clip_dir)


def test_shards_of_another_process_count_block_a_run(photo_dir, clip_dir, tmp_path, capsys):
    output = tmp_path / "tags.jsonl"
    (tmp_path / "tags-00001-of-00004.jsonl").write_text("")
    (tmp_path / "tags-2023-of-summer.jsonl").write_text("")  # not a shard: ignored
    common = [str(photo_dir / "a.jpg"), "--labels", "cat", "--model", str(clip_dir), "--output", str(output)]
    assert _predict(*common, "--no-progress", "--num-workers", "0") == 2
    assert "shard files of a run with another number of processes exist (tags-00001-of-00004.jsonl)" in (
        capsys.readouterr().err
    )
    assert _predict(*common, "--no-progress", "--num-workers", "0", "--overwrite") == 0
    assert sorted(path.name for path in tmp_path.iterdir()) == [
        "tags-2023-of-summer.jsonl",
        "tags.errors.jsonl",
        "tags.jsonl",
        "tags.run.json",
    ]
