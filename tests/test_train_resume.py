"""Kill-safety: a run killed with SIGKILL and resumed ends exactly where an uninterrupted run ends."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from test_train_fixtures import make_tiny_backbone, make_tiny_dataset

from ovmlc.cli.train import main as train_main
from ovmlc.files import RUN_LOCK_FILE

TINY_RECIPE = Path(__file__).resolve().parent.parent / "hub_configs" / "tiny-synthetic.yaml"


def _command(dataset, backbone, output_dir, *extra):
    overrides = [
        f"dataset.path={dataset}",
        f"backbone={backbone}",
        f"output_dir={output_dir}",
        "training.epochs=4",
        "training.batch_size=8",
        "training.eval_batch_size=4",
        "training.checkpoint_every=4",
        "training.augment=clip-train",  # random crops + flips: the resumed run must redraw the same ones
    ]
    return [sys.executable, "-m", "ovmlc.train", "--config", str(TINY_RECIPE), *overrides, *extra]


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_matches_an_uninterrupted_run(tmp_path, monkeypatch):
    dataset, backbone = make_tiny_dataset(tmp_path / "data"), make_tiny_backbone(tmp_path / "clip")
    env = dict(os.environ, OMP_NUM_THREADS="1", OVMLC_CACHE=str(tmp_path / "cache"))
    reference, interrupted = tmp_path / "reference", tmp_path / "interrupted"
    # The uninterrupted reference runs in this process (one thread, like the subprocesses).
    monkeypatch.setenv("OVMLC_CACHE", env["OVMLC_CACHE"])
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert train_main(_command(dataset, backbone, reference)[3:]) == 0
    finally:
        torch.set_num_threads(threads)

    process = subprocess.Popen(
        _command(dataset, backbone, interrupted), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    checkpoints = interrupted / "checkpoints"
    # Kill at the first checkpoint (step 4 of 6 in the first epoch): while it is written, or just after.
    while process.poll() is None:
        names = [path.name for path in checkpoints.iterdir()] if checkpoints.is_dir() else []
        if any(name.startswith((".tmp-checkpoint-", "checkpoint-")) for name in names):
            os.kill(process.pid, signal.SIGKILL)
            break
        time.sleep(0.002)
    process.wait()
    assert process.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    assert not (interrupted / "model.safetensors").exists()
    # The killed run's lock file stays behind, naming a process that is gone: it must not block --resume.
    assert json.loads((interrupted / RUN_LOCK_FILE).read_text())["pid"] == process.pid

    resumed = subprocess.run(
        _command(dataset, backbone, interrupted, "--resume"), env=env, capture_output=True, text=True
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert not (interrupted / RUN_LOCK_FILE).exists()
    state = json.loads((interrupted / "ovmlc_trainer_state.json").read_text())
    reference_state = json.loads((reference / "ovmlc_trainer_state.json").read_text())
    assert state["resumed_from"] or "no checkpoint" in resumed.stdout  # killed before the first complete checkpoint

    expected, actual = (
        load_file(str(reference / "model.safetensors")),
        load_file(str(interrupted / "model.safetensors")),
    )
    assert expected.keys() == actual.keys()
    for name, tensor in expected.items():
        torch.testing.assert_close(actual[name], tensor, atol=1e-6, rtol=1e-5)
    history, reference_history = state["loss"]["history"], reference_state["loss"]["history"]
    assert [entry[0] for entry in history] == [entry[0] for entry in reference_history]
    assert [entry[1] for entry in history] == pytest.approx([entry[1] for entry in reference_history], abs=1e-6)
    assert [entry[2] for entry in history] == pytest.approx([entry[2] for entry in reference_history])  # lr
    assert [entry["metric"] for entry in state["validation"]] == pytest.approx(
        [entry["metric"] for entry in reference_state["validation"]], abs=1e-6
    )
    assert state["best_step"] == reference_state["best_step"]
    expected_metrics = json.loads((reference / "eval" / "metrics.json").read_text())
    actual_metrics = json.loads((interrupted / "eval" / "metrics.json").read_text())
    for view in expected_metrics["views"]:
        assert actual_metrics["views"][view]["mAP"] == pytest.approx(expected_metrics["views"][view]["mAP"], abs=1e-6)
    assert not [path for path in checkpoints.iterdir() if path.name.startswith(".tmp-")]
