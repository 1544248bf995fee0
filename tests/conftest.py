import os
import tempfile
from pathlib import Path

import pytest

# Offline and quiet before any HF import: these are read once at import time.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("HF_HOME", tempfile.mkdtemp(prefix="ovmlc-hf-home-"))


@pytest.fixture(scope="module")
def train_world(tmp_path_factory) -> dict:
    """A tiny canonical dataset and a tiny CLIP folder for training tests, built once per test module."""
    from test_train_fixtures import make_tiny_backbone, make_tiny_dataset

    root = tmp_path_factory.mktemp("train-world")
    return {"dataset": make_tiny_dataset(root / "data"), "backbone": make_tiny_backbone(root / "clip")}


@pytest.fixture
def one_torch_thread(monkeypatch, tmp_path):
    """Tiny models on a shared 2-core machine: one thread is faster and keeps runs reproducible; a private
    `OVMLC_CACHE` keeps feature caches from leaking between tests."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    monkeypatch.setenv("OVMLC_CACHE", str(tmp_path / "ovmlc-cache"))
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def synthetic_dataset(tmp_path_factory) -> Path:
    """The canonical synthetic dataset (`ovmlc data prepare synthetic`, default sizes) for the quality tests:
    `OVMLC_SYNTHETIC_DATA` names an already prepared one (the world is deterministic), else it is built once."""
    from ovmlc.cli import main as cli_main

    if os.environ.get("OVMLC_SYNTHETIC_DATA"):
        return Path(os.environ["OVMLC_SYNTHETIC_DATA"])
    path = tmp_path_factory.mktemp("synthetic") / "data"
    assert cli_main(["data", "prepare", "synthetic", "--root", "synthetic", "--out", str(path), "--no-progress"]) == 0
    return path
