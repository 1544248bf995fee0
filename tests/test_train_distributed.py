"""Two CPU processes (`accelerate launch`, gloo) train like one and evaluate every example exactly once."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from test_train_fixtures import SPLIT_SIZES, make_tiny_backbone, make_tiny_dataset

from ovmlc import evaluation
from ovmlc.cli.train import main as train_main

TINY_RECIPE = Path(__file__).resolve().parent.parent / "hub_configs" / "tiny-synthetic.yaml"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _overrides(dataset, backbone, output_dir):
    return [
        f"dataset.path={dataset}",
        f"backbone={backbone}",
        f"output_dir={output_dir}",
        # Global batch 10, 5 images per process: the epoch's last batch (48 = 4 x 10 + 8) is padded by accelerate
        # with 2 repeats, which must not count; ASL divides by the number of images, so each process's share must be
        # reduced over the global batch (ovmlc.core.losses.split_batch), not over its own 5 images.
        "training.batch_size=10",
        "method_config.loss=asl",
        "training.eval_batch_size=4",  # 21 validation / 19 test images: uneven last batches are padded, then dropped
        # No dropout, so one process and two draw the same (no) random masks and must reach the same weights.
        "method_config.query_dropout=0.0",
        "method_config.query_attention_dropout=0.0",
    ]


@pytest.mark.slow
def test_two_processes_train_like_one_and_evaluate_each_example_once(tmp_path, monkeypatch):
    dataset, backbone = make_tiny_dataset(tmp_path / "data"), make_tiny_backbone(tmp_path / "clip")
    env = dict(os.environ, OMP_NUM_THREADS="1", OVMLC_CACHE=str(tmp_path / "cache"))
    single, double = tmp_path / "single", tmp_path / "double"
    # The single-process reference runs in this process, with its own feature cache folder.
    monkeypatch.setenv("OVMLC_CACHE", str(tmp_path / "single-cache"))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert train_main(["--config", str(TINY_RECIPE), *_overrides(dataset, backbone, single)]) == 0
    finally:
        torch.set_num_threads(threads)
    # See feasibility.md §6: without ACCELERATE_USE_CPU, `--multi_gpu` on a CPU machine runs unsynchronised copies.
    launch = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--multi_gpu",
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "--main_process_port",
        str(_free_port()),  # not the default 29500: other jobs on the machine may hold it
        "-m",
        "ovmlc.train",
        "--config",
        str(TINY_RECIPE),
        *_overrides(dataset, backbone, double),
    ]
    result = subprocess.run(launch, env=dict(env, ACCELERATE_USE_CPU="true"), capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]

    state = json.loads((double / "ovmlc_trainer_state.json").read_text())
    assert state["hardware"]["num_processes"] == 2 and "MULTI_CPU" in state["hardware"]["distributed_type"]
    assert state["feature_cache"] is True  # the cache was built by both ranks, each filling its own rows

    # Same training curve and weights as one process (the batch size is global; DDP averages the two halves).
    single_state = json.loads((single / "ovmlc_trainer_state.json").read_text())
    assert state["global_step"] == single_state["global_step"]
    assert state["loss"]["per_epoch"] == pytest.approx(single_state["loss"]["per_epoch"], rel=1e-5, abs=1e-6)
    single_weights, double_weights = (
        load_file(str(single / "model.safetensors")),
        load_file(str(double / "model.safetensors")),
    )
    for name, tensor in single_weights.items():
        torch.testing.assert_close(double_weights[name], tensor, atol=1e-5, rtol=1e-4)

    # Distributed evaluation saw every test image exactly once, in dataset order ...
    scores = evaluation.load_scores(double / "eval" / "scores.npz")
    assert scores.num_images == SPLIT_SIZES["test"]
    assert list(scores.image_ids) == [f"test-{index:03d}" for index in range(SPLIT_SIZES["test"])]
    # ... and reports exactly what a single process reports for the same weights.
    reference = evaluation.evaluate_model(
        str(double), str(dataset), "synthetic", output_dir=tmp_path / "reference", progress=False
    )
    reference_scores = evaluation.load_scores(tmp_path / "reference" / "scores.npz")
    np.testing.assert_allclose(scores.scores, reference_scores.scores, atol=1e-5)
    metrics = json.loads((double / "eval" / "metrics.json").read_text())
    for view, result in reference["views"].items():
        assert metrics["views"][view]["mAP"] == pytest.approx(result["mAP"], abs=1e-6)

    # Only the main process writes: the same files as a single-process run, plus rank 1's RNG state in checkpoints.
    def files(root):
        return {str(path.relative_to(root)) for path in root.rglob("*") if path.is_file()}

    extra = files(double) - files(single)
    assert extra and all(path.endswith("rng_state_1.safetensors") for path in extra)


class _LaunchedAccelerator:
    """What `check_launch` reads of an `Accelerator`."""

    def __init__(self, num_processes, distributed_type="NO"):
        from types import SimpleNamespace

        self.num_processes = num_processes
        self.distributed_type = SimpleNamespace(name=distributed_type)


def test_launch_checks_refuse_unjoined_copies_and_warn_when_several_processes_became_one(capsys):
    from ovmlc.training.errors import TrainingError
    from ovmlc.training.launch import CPU_LAUNCH, check_launch

    # `accelerate launch --multi_gpu --num_processes 2` on CPU without ACCELERATE_USE_CPU: two unsynchronised copies.
    with pytest.raises(TrainingError, match=r"started 2 processes \(WORLD_SIZE=2\) but accelerate joined 1") as error:
        check_launch(_LaunchedAccelerator(1), {"WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1"})
    assert "ACCELERATE_USE_CPU=true" in str(error.value) and CPU_LAUNCH in str(error.value)
    # `accelerate launch --num_processes 2` without --multi_gpu on CPU: one process, loudly.
    asked = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29500", "ACCELERATE_MIXED_PRECISION": "no"}
    warning = check_launch(_LaunchedAccelerator(1), asked)
    assert warning is not None and "asked for several processes but started ONE" in warning
    printed = capsys.readouterr().err
    assert "!" * 100 in printed and "ovmlc train: WARNING: " in printed and CPU_LAUNCH in printed
    # A plain single-process run and a joined multi-process run: nothing to say.
    assert check_launch(_LaunchedAccelerator(1), {}) is None
    assert check_launch(_LaunchedAccelerator(2, "MULTI_CPU"), {"WORLD_SIZE": "2", **asked}) is None
    assert capsys.readouterr().err == ""
    with pytest.raises(TrainingError, match="with DDP .*launch without DeepSpeed / FSDP"):
        check_launch(_LaunchedAccelerator(2, "DEEPSPEED"), {"WORLD_SIZE": "2"})
