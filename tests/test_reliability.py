"""Bad inputs, end to end through the Python API and the CLI: each gives an ovmlc error (or a warning) that names the
file, label or key and says what to do, never a raw traceback from PIL, safetensors, json or transformers
(docs/reliability.md, "Guarantees"). Tiny models only: the whole battery runs in well under 2 minutes."""

from __future__ import annotations

import io
import os
import pickle
import re
import shutil
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from helpers import random_images, save_hub_layout_clip
from PIL import ExifTags, Image

import ovmlc
from ovmlc.cli import main as cli_main
from ovmlc.core.checkpoint_files import ModelLoadError, check_safetensors_file
from ovmlc.core.images import MAX_PIXELS_ENV, ImageLoadError, load_image
from ovmlc.core.vocabulary import LabelTruncatedWarning
from ovmlc.data.image_files import encode_image
from ovmlc.inference.factory import load_model


# ---------------------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def model_folder(tmp_path_factory) -> Path:
    clip_dir = save_hub_layout_clip(tmp_path_factory.mktemp("clip") / "tiny-clip")
    folder = tmp_path_factory.mktemp("saved") / "qks"
    model = ovmlc.QKSModel.from_clip(str(clip_dir), num_queries=2, num_query_layers=1)
    model.encode_labels(["cat", "dog"])  # so the folder holds label_embeddings.safetensors
    model.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def image_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("images") / "photo.png"
    random_images(1)[0].save(path)
    return path


def damaged_copy(model_folder: Path, tmp_path: Path, damage) -> Path:
    folder = tmp_path / "model"
    shutil.copytree(model_folder, folder)
    damage(folder)
    return folder


def png_declaring(path: Path, width: int, height: int) -> Path:
    """A few-byte PNG whose header declares width x height (a decompression bomb)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    data = chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\x00" * 16)) + chunk(b"IEND", b"")
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + data)
    return path


def rotated_jpeg(path: Path) -> Path:
    """A 48x24 JPEG (left half black, right half white) tagged orientation 6: upright it is 24x48, black on top."""
    pixels = np.zeros((24, 48, 3), np.uint8)
    pixels[:, 24:] = 255
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = 6
    Image.fromarray(pixels).save(path, format="JPEG", quality=95, exif=exif.tobytes())
    return path


def run_cli(capsys, *arguments: str) -> tuple[int, str]:
    code = cli_main(list(arguments))
    captured = capsys.readouterr()
    return code, captured.out + captured.err


# ---------------------------------------------------------------------------------------------------- images
def test_decompression_bomb_is_an_image_load_error_naming_file_and_limit(tmp_path):
    bomb = png_declaring(tmp_path / "bomb.png", 100_000, 100_000)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # PIL's DecompressionBombWarning would raise here
        with pytest.raises(ImageLoadError, match=r"bomb\.png: image declares 10,000,000,000 pixels.*limit of") as info:
            load_image(bomb)
    assert MAX_PIXELS_ENV in str(info.value)
    assert not isinstance(info.value, Image.DecompressionBombError)


def test_pixel_limit_is_configurable(tmp_path, monkeypatch, image_file):
    monkeypatch.setenv(MAX_PIXELS_ENV, "1000")
    with pytest.raises(ImageLoadError, match=r"photo\.png: image declares 48x40 = 1,920 pixels, more than the limit"):
        load_image(image_file)
    monkeypatch.setenv(MAX_PIXELS_ENV, "2000")
    assert load_image(image_file).size == (48, 40)
    monkeypatch.setenv(MAX_PIXELS_ENV, "lots")
    with pytest.raises(ImageLoadError, match=MAX_PIXELS_ENV):
        load_image(image_file)


@pytest.mark.parametrize(
    ("content", "pattern"),
    [
        (b"", r"cannot read image"),
        (b"not an image at all", r"cannot read image"),
        ("truncated", r"cannot read image"),
    ],
)
def test_corrupt_images_are_image_load_errors(tmp_path, content, pattern):
    path = tmp_path / "bad.jpg"
    if content == "truncated":
        buffer = io.BytesIO()
        random_images(1, size=64)[0].save(buffer, format="JPEG")
        content = buffer.getvalue()[:-200]
    path.write_bytes(content)
    with pytest.raises(ImageLoadError, match=rf"bad\.jpg: {pattern}"):
        load_image(path)


def test_url_image_says_urls_are_not_fetched():
    with pytest.raises(ImageLoadError, match=r"https://example\.com/a\.jpg: URLs are not fetched"):
        load_image("https://example.com/a.jpg")


def test_exif_orientation_in_load_image_and_converters(tmp_path):
    path = rotated_jpeg(tmp_path / "phone.jpg")
    upright = np.asarray(load_image(path))
    assert upright.shape == (48, 24, 3) and upright[:12].mean() < 40 and upright[36:].mean() > 215  # black on top

    stored = encode_image(path, str(path))  # default: apply, stored upright without the tag
    with Image.open(io.BytesIO(stored["bytes"])) as opened:
        assert opened.getexif().get(ExifTags.Base.Orientation) is None
        raw_pixels = np.asarray(opened.convert("RGB"))  # no EXIF handling: what any reader sees
    assert raw_pixels.shape == (48, 24, 3) and raw_pixels[:12].mean() < 40
    assert np.asarray(load_image(stored)).shape == (48, 24, 3)

    kept = encode_image(path, str(path), exif_orientation="raw")  # pixels as encoded, never turned
    assert np.asarray(load_image(kept)).shape == (24, 48, 3)
    with Image.open(io.BytesIO(kept["bytes"])) as opened:
        assert opened.getexif().get(ExifTags.Base.Orientation) is None

    plain = tmp_path / "plain.png"
    random_images(1)[0].save(plain)
    assert encode_image(plain, str(plain))["bytes"] == plain.read_bytes()  # untagged images: bytes unchanged
    with pytest.raises(ValueError, match="exif_orientation"):
        encode_image(plain, str(plain), exif_orientation="sideways")


def test_data_prepare_has_the_exif_option():
    from ovmlc.cli import build_parser

    args = build_parser().parse_args(["data", "prepare", "synthetic", "--out", "x", "--exif-orientation", "raw"])
    assert args.exif_orientation == "raw"


# ---------------------------------------------------------------------------------------------------- model folders
def _random_bytes(folder: Path) -> None:
    (folder / "model.safetensors").write_bytes(os.urandom(4096))


def _truncated_tail(folder: Path) -> None:
    data = (folder / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(data[: len(data) - 1000])


def _empty_weights(folder: Path) -> None:
    (folder / "model.safetensors").write_bytes(b"")


def _garbled_config(folder: Path) -> None:
    (folder / "config.json").write_text((folder / "config.json").read_text()[:150])


def _no_config(folder: Path) -> None:
    (folder / "config.json").unlink()


BAD_FOLDERS = {
    "random bytes": (_random_bytes, r"model\.safetensors: not a safetensors file"),
    "truncated": (_truncated_tail, r"model\.safetensors: safetensors file truncated"),
    "empty": (_empty_weights, r"model\.safetensors: not a safetensors file \(0 bytes"),
    "garbled config": (_garbled_config, r"config\.json: invalid JSON in this config file \(.*line \d+, column \d+\)"),
    "no config": (_no_config, r"model: not a model folder: config\.json is missing"),
}


@pytest.mark.parametrize("case", sorted(BAD_FOLDERS))
def test_damaged_model_folders_name_the_file(model_folder, tmp_path, case):
    damage, pattern = BAD_FOLDERS[case]
    folder = damaged_copy(model_folder, tmp_path, damage)
    with pytest.raises(ModelLoadError, match=pattern):
        load_model(str(folder))
    with pytest.raises(ModelLoadError, match=pattern):
        ovmlc.QKSModel.from_pretrained(folder)


@pytest.mark.parametrize("case", sorted(BAD_FOLDERS))
def test_damaged_model_folders_through_the_cli(model_folder, tmp_path, image_file, capsys, case):
    damage, pattern = BAD_FOLDERS[case]
    folder = damaged_copy(model_folder, tmp_path, damage)
    code, output = run_cli(capsys, "predict", str(image_file), "--model", str(folder), "--labels", "cat,dog")
    assert code == 2 and "Traceback" not in output
    assert output.startswith("ovmlc predict: error: ") and re.search(pattern, output), output


def test_evaluate_and_space_name_the_damaged_file(model_folder, tmp_path, capsys):
    from ovmlc.space.demo import DemoModelError, load_models

    folder = damaged_copy(model_folder, tmp_path, _random_bytes)
    code, output = run_cli(capsys, "evaluate", "--model", str(folder), "--dataset", str(tmp_path / "nowhere"))
    assert code == 2 and "model.safetensors: not a safetensors file" in output and "Traceback" not in output
    with pytest.raises(DemoModelError, match=r"model\.safetensors: not a safetensors file"):
        load_models([str(folder)])


def test_damaged_label_embeddings_file_is_named(model_folder, tmp_path):
    folder = damaged_copy(
        model_folder, tmp_path, lambda f: (f / "label_embeddings.safetensors").write_bytes(b"\x08" + b"\x00" * 7)
    )
    with pytest.raises(ModelLoadError, match=r"label_embeddings\.safetensors: .*deleting it is safe"):
        load_model(str(folder))


def test_check_safetensors_accepts_a_good_file(model_folder):
    check_safetensors_file(model_folder / "model.safetensors")


def test_urls_for_models_say_what_to_give(capsys, image_file):
    with pytest.raises(ModelLoadError, match=r"give the Hub id openai/clip-vit-base-patch16 instead"):
        load_model("https://huggingface.co/openai/clip-vit-base-patch16")
    with pytest.raises(ModelLoadError, match=r"URLs are not accepted here: give a Hub id"):
        load_model("https://example.com/model")
    code, output = run_cli(capsys, "predict", "https://example.com/a.jpg", "--model", "synthetic", "--labels", "cat")
    assert code == 2 and "URLs are not fetched" in output


def test_pickle_only_folder_is_refused_and_never_unpickled(model_folder, tmp_path):
    marker = tmp_path / "unpickled"

    class Payload:
        def __reduce__(self):
            return (Path.touch, (marker,))

    def pickle_only(folder: Path) -> None:
        (folder / "model.safetensors").unlink()
        (folder / "pytorch_model.bin").write_bytes(pickle.dumps(Payload()))

    folder = damaged_copy(model_folder, tmp_path, pickle_only)
    with pytest.raises((OSError, ValueError)):
        load_model(str(folder))
    assert not marker.exists()


# ---------------------------------------------------------------------------------------------------- labels
def test_long_labels_warn_naming_them_and_the_limit(model_folder):
    model = load_model(str(model_folder))
    long_a, long_b = "red " * 100 + "cat", "red " * 100 + "dog"
    with pytest.warns(LabelTruncatedWarning, match=r"2 label\(s\) .*context of 77 tokens.*'red red") as record:
        scores = model.predict_scores(random_images(1), [long_a, long_b, "cat"])
    assert len(record) == 1
    assert scores[0, 0] == scores[0, 1]  # what the warning is about: cut labels score alike
    with warnings.catch_warnings():
        warnings.simplefilter("error", LabelTruncatedWarning)
        model.predict_scores(random_images(1), ["cat", "dog " * 10])  # short labels: no warning


@pytest.mark.parametrize(
    ("labels", "pattern"),
    [([], "no labels given"), (["cat", " Cat "], "duplicate labels"), (["cat", ""], "empty label names")],
)
def test_bad_label_lists_are_errors(model_folder, labels, pattern):
    model = load_model(str(model_folder))
    with pytest.raises(ValueError, match=pattern):
        model.predict(random_images(1), labels)


def test_unreadable_images_are_skipped_by_the_cli(model_folder, tmp_path, image_file, capsys):
    bomb = png_declaring(tmp_path / "bomb.png", 100_000, 100_000)
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"garbage")
    code, output = run_cli(
        capsys, "predict", str(image_file), str(bomb), str(broken), "--model", str(model_folder), "--labels", "cat"
    )
    assert code == 1 and "Traceback" not in output and "DecompressionBomb" not in output
    assert f"skipped unreadable image: {bomb}: image declares" in output
    assert f"skipped unreadable image: {broken}: cannot read image" in output


# ---------------------------------------------------------------------------------------------------- recipes
@pytest.mark.parametrize(
    ("override", "pattern"),
    [
        ("optimizer.lr=.nan", r"optimizer\.lr"),
        ("optimizer.lrr=0.1", r"optimizer\.lrr"),
        ("training.epochs=-1", "epochs"),
    ],
)
def test_recipe_errors_name_the_key(override, pattern):
    from ovmlc.resources import hub_configs_dir
    from ovmlc.training.recipe import RecipeError, load_recipe

    with pytest.raises(RecipeError, match=pattern):
        load_recipe(hub_configs_dir() / "qks-synthetic.yaml", [override])
