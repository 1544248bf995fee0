"""`ovmlc quickstart --tiny` end to end, from a non-editable install: the package is built and installed into a
temporary folder (no dependencies: the venv has them), then run from another directory, so every recipe, template,
label set, protocol and transform preset it needs must come from the installed package data, not the checkout."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import save_hub_layout_clip

ROOT = Path(__file__).resolve().parents[1]
SOURCE_FILES = ("pyproject.toml", "setup.py", "README.md")
SOURCE_DIRS = ("ovmlc", "hub_configs")


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """`pip install --no-deps --no-build-isolation --target SITE` of a copy of the sources (the build writes its
    `build/` folder into the copy, not into the checkout)."""
    source = tmp_path_factory.mktemp("source")
    for name in SOURCE_FILES:
        shutil.copy(ROOT / name, source / name)
    for name in SOURCE_DIRS:
        shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    site = tmp_path_factory.mktemp("site")
    pip = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--target", str(site)]
    result = subprocess.run([*pip, str(source)], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return site


@pytest.mark.slow
@pytest.mark.parametrize(
    ("world", "method_row", "method_dir", "recipe"),
    [
        (None, "CLIP-FT", "clipft", "clipft-shapes-clutter.yaml"),  # the default world and method
        ("synthetic", "MKT (stage 1)", "mkt", "mkt-synthetic-stage1.yaml"),
    ],
)
def test_quickstart_tiny_from_a_non_editable_install(installed, tmp_path, world, method_row, method_dir, recipe):
    package = installed / "ovmlc"
    assert (package / "hub_configs" / recipe).is_file()
    for asset in ("clip-synthetic", "clip-shapes-clutter"):
        assert (package / "assets" / asset / "model.safetensors").is_file()
    assert not (installed / "hub_configs").exists()
    backbone = save_hub_layout_clip(tmp_path / "clip")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**os.environ, "PYTHONPATH": str(installed)}
    env.pop("HF_HUB_DISABLE_PROGRESS_BARS", None)  # the CLI itself keeps transformers' bars quiet
    command = [sys.executable, str(installed / "bin" / "ovmlc"), "quickstart", "--tiny", "--output", "run"]
    command += ["--world", world] if world else []
    result = subprocess.run(
        [*command, "--backbone", str(backbone)], cwd=elsewhere, env=env, capture_output=True, text=True, timeout=1200
    )
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    assert "| method | ZSL mAP | ZSL F1@3 | GZSL mAP | GZSL F1@3 | seen mAP |" in out, out
    for name in ("CLIP zero-shot", method_row):
        row = re.search(rf"^\| {re.escape(name)} \|((?: +[\d.]+ \|){{5}})$", out, flags=re.MULTILINE)
        assert row, out
        assert all(0 <= float(cell) <= 100 for cell in row.group(1).split("|") if cell.strip())
    assert re.search(rf"Training {re.escape(method_row)} on the seen labels moved their mAP by [+-]\d", out), out
    for folder in ("clip-zeroshot", method_dir):
        assert (elsewhere / "run" / folder / "eval" / "metrics.json").is_file()
        assert (elsewhere / "run" / folder / "config.json").is_file()
    if world is None:  # the quickstart's shapes-clutter has only cell-sized objects
        from ovmlc.data import read_card_metadata

        assert read_card_metadata(elsewhere / "run" / "data" / "shapes-clutter")["world_large_prob"] == 1.0
    assert "spaces/ovmlc-demo/app.py --model" in out
    # quiet: no transformers load report or weights-loading bar (the modules MKT builds are expected to be new)
    assert "LOAD REPORT" not in result.stderr and "Loading weights" not in result.stderr, result.stderr[-3000:]
    # the installed copy ran, not the checkout
    check = subprocess.run(
        [sys.executable, "-c", "import ovmlc.resources as r; print(r.package_dir()); print(r.hub_configs_dir())"],
        cwd=elsewhere,
        env=env,
        capture_output=True,
        text=True,
    )
    assert check.stdout.split() == [str(package), str(package / "hub_configs")], check.stderr
