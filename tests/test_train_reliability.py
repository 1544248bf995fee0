"""Reliability of `ovmlc train` (issue 16 items 1, 2, 6; issue 15 item 4): nothing from a checkpoint is unpickled on
resume, one run per output folder, write failures named with the path and what to do, checkpoints that are model
folders.

One reference run (QKS, plateau schedule, 2 epochs of 6 steps, checkpoints at steps 4, 6, 8, 12) is shared; each test
works on a copy of it (or a fresh run into its own folder) and checks the outcome against it.
"""

import errno
import json
import os
import platform
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from test_train_fixtures import make_tiny_backbone, make_tiny_dataset, write_recipe

from ovmlc.cli import main as cli_main
from ovmlc.files import LEGACY_TRAINER_STATE_FILE, RUN_LOCK_FILE, SCHEDULER_STATE_FILE, TRAINER_STATE_FILE
from ovmlc.training.errors import OutputFolderLockedError, OutputWriteError, TrainingError
from ovmlc.training.resume_files import load_state_file
from ovmlc.training.trainer import train

SECTIONS = {
    "method": "qks",
    "method_config": {"num_queries": 4, "num_query_layers": 1, "templates": "single"},
    "freeze": [],
    "optimizer": {"lr": 1.0e-3},
    # Registered with accelerate's checkpointing before (a pickle on resume): its state is now JSON.
    "schedule": {"name": "plateau", "mode": "max", "patience": 0, "factor": 0.5},
    "training": {"epochs": 2, "eval_every": 2, "checkpoint_every": 4},
}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The world (tiny dataset + backbone) and one uninterrupted run of `SECTIONS`."""
    root = tmp_path_factory.mktemp("reliability")
    world = {"dataset": make_tiny_dataset(root / "data"), "backbone": make_tiny_backbone(root / "clip")}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        output = train(_recipe(root, world, "reference"))
    finally:
        torch.set_num_threads(threads)
    return {**world, "root": root, "output": output, "weights": load_file(str(output / "model.safetensors"))}


def _recipe(directory, world, name, **overrides):
    sections = {key: ({**value, **overrides[key]} if key in overrides else value) for key, value in SECTIONS.items()}
    return write_recipe(directory / f"{name}.yaml", world["dataset"], world["backbone"], directory / name, **sections)


def _copy_of_reference(reference, tmp_path, name="copy"):
    """The reference run's folder copied to `tmp_path / name`, with its recipe pointing there."""
    shutil.copytree(reference["output"], tmp_path / name)
    return _recipe(tmp_path, reference, name), tmp_path / name


def _assert_same_weights(output, reference):
    weights = load_file(str(output / "model.safetensors"))
    assert weights.keys() == reference["weights"].keys()
    for name, tensor in reference["weights"].items():
        torch.testing.assert_close(weights[name], tensor, rtol=0, atol=0, msg=name)


def _snapshot(folder):
    return {str(path.relative_to(folder)): path.read_bytes() for path in sorted(folder.rglob("*")) if path.is_file()}


# ----------------------------------------------------------------------------------------------------------------------
# Issue 16.1: no pickle on resume
# ----------------------------------------------------------------------------------------------------------------------


class _Payload:
    """Unpickling this object calls `open(marker, "w")`: the marker file exists iff the pickle was loaded."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


# What accelerate's `save_state` wrote (and `load_state` unpickled), plus other pickle-format names.
PICKLE_NAMES = (
    "custom_checkpoint_0.pkl",
    "random_states_0.pkl",
    "optimizer.bin",
    "scheduler.bin",
    "scaler.pt",
    "pytorch_model.bin",
    "training_args.bin",
)


def _plant(folder, name, markers):
    marker = markers / f"ran-{name}"
    torch.save({"state": _Payload(marker)}, folder / name)
    return marker


def test_planted_pickle_payloads_never_run_on_resume_with_the_plateau_schedule(reference, tmp_path):
    recipe, output = _copy_of_reference(reference, tmp_path)
    checkpoint = output / "checkpoints" / "checkpoint-8"
    shutil.rmtree(output / "checkpoints" / "checkpoint-12")
    # The plateau scheduler's state is plain JSON (it was reduced at least once: lr halved after no gain).
    plateau = json.loads((checkpoint / SCHEDULER_STATE_FILE).read_text())
    assert {"best", "num_bad_epochs", "mode", "factor"} <= set(plateau) and plateau["factor"] == 0.5
    assert not [path.name for path in checkpoint.iterdir() if path.suffix in (".pkl", ".bin", ".pt", ".pth")]

    markers = tmp_path / "markers"
    markers.mkdir()
    planted = [_plant(checkpoint, name, markers) for name in PICKLE_NAMES]
    assert cli_main(["train", "--config", str(recipe), "--resume", str(checkpoint)]) == 0
    assert not [marker.name for marker in planted if marker.exists()]
    state = json.loads((output / TRAINER_STATE_FILE).read_text())
    assert state["resumed_from"] == [str(checkpoint)] and state["global_step"] == 12
    _assert_same_weights(output, reference)  # the plateau state, optimizer and RNG came back from JSON/safetensors


def _make_legacy(checkpoint, payload_markers=None):
    """Rewrite a checkpoint into the layout of earlier ovmlc versions (accelerate's `save_state` files + the old
    trainer state name); with `payload_markers`, the plateau state file carries a payload instead of its state."""
    (checkpoint / TRAINER_STATE_FILE).rename(checkpoint / LEGACY_TRAINER_STATE_FILE)
    torch.save(load_state_file(checkpoint / "optimizer.safetensors"), checkpoint / "optimizer.bin")
    rng = load_state_file(checkpoint / "rng_state_0.safetensors")
    legacy_rng = {"random_state": rng["python"], "numpy_random_seed": rng["numpy"], "torch_manual_seed": rng["torch"]}
    torch.save(legacy_rng, checkpoint / "random_states_0.pkl")
    if payload_markers is None:
        torch.save(json.loads((checkpoint / SCHEDULER_STATE_FILE).read_text()), checkpoint / "custom_checkpoint_0.pkl")
        marker = None
    else:
        marker = _plant(checkpoint, "custom_checkpoint_0.pkl", payload_markers)
    for name in (
        "optimizer.safetensors",
        "rng_state_0.safetensors",
        SCHEDULER_STATE_FILE,
        "trainable_weights.safetensors",
    ):
        (checkpoint / name).unlink()
    return marker


def test_a_legacy_checkpoint_resumes_without_pickle_and_its_payload_is_refused(reference, tmp_path):
    recipe, output = _copy_of_reference(reference, tmp_path)
    shutil.rmtree(output / "checkpoints" / "checkpoint-12")
    legacy = output / "checkpoints" / "checkpoint-8"
    pristine = tmp_path / "pristine-checkpoint-8"
    shutil.copytree(legacy, pristine)
    markers = tmp_path / "markers"
    markers.mkdir()

    marker = _make_legacy(legacy, payload_markers=markers)
    with pytest.raises(TrainingError, match=r"custom_checkpoint_0\.pkl was refused: it is not plain tensors") as error:
        train(recipe, resume=str(legacy))
    assert not marker.exists(), "the planted payload ran"
    assert "could run code" in str(error.value)

    # The same layout with genuine states (plain containers, numpy's RNG array) resumes to the same weights.
    shutil.rmtree(legacy)
    shutil.copytree(pristine, legacy)
    _make_legacy(legacy)
    train(recipe, resume=str(legacy))
    _assert_same_weights(output, reference)


# ----------------------------------------------------------------------------------------------------------------------
# Issue 16.2: one run per output folder
# ----------------------------------------------------------------------------------------------------------------------

HOLD_LOCK = """
import sys, time
from ovmlc.training.output_folder import RunLock
RunLock(sys.argv[1]).acquire()
print("locked", flush=True)
time.sleep(600)
"""


def test_a_second_run_into_a_locked_folder_fails_clearly_and_a_dead_holder_does_not_block_resume(
    reference, tmp_path, capsys
):
    recipe, output = _copy_of_reference(reference, tmp_path)
    assert not (output / RUN_LOCK_FILE).exists()  # a finished run releases (and removes) its lock
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(output)], stdout=subprocess.PIPE, text=True, env=dict(os.environ)
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        before = _snapshot(output)
        recorded = json.loads((output / RUN_LOCK_FILE).read_text())
        assert recorded["pid"] == holder.pid and recorded["host"] == platform.node()
        # --overwrite would delete the first run's checkpoints and state, --resume would write into its folder.
        for flag in ("--overwrite", "--resume"):
            assert cli_main(["train", "--config", str(recipe), flag]) == 2
            message = capsys.readouterr().err
            assert f"output_dir {output} is in use by another ovmlc run (PID {holder.pid} on host" in message
            assert "one run per output folder" in message and "choose another output_dir" in message
            assert _snapshot(output) == before  # the first run's files untouched, its lock record too
        with pytest.raises(OutputFolderLockedError):
            train(recipe, overwrite=True)
    finally:
        holder.kill()  # SIGKILL: no cleanup, the lock file stays behind with a dead PID
        holder.wait()
    assert json.loads((output / RUN_LOCK_FILE).read_text())["pid"] == holder.pid
    assert cli_main(["train", "--config", str(recipe), "--resume"]) == 0
    assert not (output / RUN_LOCK_FILE).exists()
    _assert_same_weights(output, reference)


# ----------------------------------------------------------------------------------------------------------------------
# Issue 16.6: write failures name the path and what to do; nothing is lost
# ----------------------------------------------------------------------------------------------------------------------


def test_a_full_disk_during_a_checkpoint_keeps_the_earlier_ones_and_resume_reproduces_the_run(
    reference, tmp_path, monkeypatch
):
    import safetensors.torch

    recipe, output = _recipe(tmp_path, reference, "full-disk"), tmp_path / "full-disk"
    save_file = safetensors.torch.save_file

    def disk_full_at_step_8(tensors, filename, metadata=None):
        if ".tmp-checkpoint-8" in str(filename):
            # What safetensors raises when the disk fills up mid-write.
            raise SafetensorError(
                "Error while serializing: IoError(Os { code: 28, kind: StorageFull, "
                'message: "No space left on device" })'
            )
        return save_file(tensors, filename, metadata=metadata)

    monkeypatch.setattr(safetensors.torch, "save_file", disk_full_at_step_8)
    with pytest.raises(OutputWriteError) as error:
        train(recipe)
    message = str(error.value)
    checkpoints = output / "checkpoints"
    assert f"cannot write {checkpoints / '.tmp-checkpoint-8'} while writing checkpoint checkpoint-8" in message
    assert "the disk is full" in message and "free disk space" in message
    assert "rerun the same command with --resume: it continues from the last complete checkpoint, " in message
    assert f"{checkpoints / 'checkpoint-6'}" in message
    assert sorted(path.name for path in checkpoints.iterdir() if not path.name.startswith("best-")) == [
        "checkpoint-4",
        "checkpoint-6",
    ]  # the failed write left nothing behind, and the earlier checkpoints are whole
    assert json.loads((checkpoints / "checkpoint-6" / TRAINER_STATE_FILE).read_text())["global_step"] == 6
    assert not (output / RUN_LOCK_FILE).exists()  # released on the way out

    monkeypatch.setattr(safetensors.torch, "save_file", save_file)  # space freed
    train(recipe, resume=True)
    _assert_same_weights(output, reference)


def test_a_read_only_output_folder_is_named_with_what_to_do(reference, tmp_path, monkeypatch, capsys):
    """Tests run as root here, which writes into a read-only folder anyway: the refusal is simulated at the two
    writes a read-only folder fails first (the run lock, and `recipe.yaml` when the lock file is still writable)."""
    recipe, output = _recipe(tmp_path, reference, "read-only"), tmp_path / "read-only"
    output.mkdir()
    real_open = os.open

    def refuse_lock(path, flags, *args, **kwargs):
        if str(path).endswith(RUN_LOCK_FILE):
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", refuse_lock)
    assert cli_main(["train", "--config", str(recipe)]) == 2
    message = capsys.readouterr().err
    assert f"cannot write {output} while creating the output folder and its run lock: the folder is not writable" in (
        message
    )
    assert "make it writable, or set output_dir to a writable folder (e.g. the override output_dir=...)" in message
    monkeypatch.setattr(os, "open", real_open)

    from pathlib import Path

    real_write_text = Path.write_text

    def refuse_recipe(self, *args, **kwargs):
        if self.name == "recipe.yaml" and self.parent == output:
            raise PermissionError(errno.EACCES, "Permission denied", str(self))
        return real_write_text(self, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", refuse_recipe)
    assert cli_main(["train", "--config", str(recipe)]) == 2
    message = capsys.readouterr().err
    assert f"cannot write {output / 'recipe.yaml'} while writing the resolved recipe: the folder is not writable" in (
        message
    )
    assert "Traceback" not in message
    assert not (output / RUN_LOCK_FILE).exists()


# ----------------------------------------------------------------------------------------------------------------------
# Issue 15.4: checkpoints are model folders
# ----------------------------------------------------------------------------------------------------------------------


def test_a_mid_run_checkpoint_is_a_model_folder(reference, tmp_path):
    from transformers import AutoModel

    import ovmlc
    from ovmlc import evaluation

    checkpoint = reference["output"] / "checkpoints" / "checkpoint-8"
    state = json.loads((checkpoint / TRAINER_STATE_FILE).read_text())
    assert state["global_step"] == 8 and not state["finished"]
    assert not (checkpoint / LEGACY_TRAINER_STATE_FILE).exists()  # transformers' name is not used for another layout
    assert not (reference["output"] / LEGACY_TRAINER_STATE_FILE).exists()

    auto = AutoModel.from_pretrained(checkpoint)
    direct = ovmlc.QKSModel.from_pretrained(checkpoint)
    loaded = ovmlc.load_model(checkpoint)
    assert type(auto) is type(direct) is type(loaded) is ovmlc.QKSModel
    # The model folder holds the step-8 weights: the same tensors as the checkpoint's resume weights.
    resume_weights = load_file(str(checkpoint / "trainable_weights.safetensors"))
    for model in (auto, direct, loaded):
        model_state = model.state_dict()
        for name, tensor in resume_weights.items():
            torch.testing.assert_close(model_state[name], tensor, rtol=0, atol=0, msg=name)
    final = load_file(str(reference["output"] / "model.safetensors"))
    assert any(not torch.equal(final[name], tensor) for name, tensor in resume_weights.items() if name in final)

    images = [np.full((32, 32, 3), value, dtype=np.uint8) for value in (30, 200)]
    labels = list(auto.config.label_names)
    scores = [model.predict_scores(images, labels) for model in (auto, direct, loaded)]
    np.testing.assert_allclose(scores[0], scores[1], atol=1e-6)
    np.testing.assert_allclose(scores[0], scores[2], atol=1e-6)
    # `ovmlc evaluate --model checkpoints/checkpoint-<step>` works on it.
    report = evaluation.evaluate_model(
        str(checkpoint), str(reference["dataset"]), "synthetic", output_dir=tmp_path / "eval", progress=False
    )
    assert report["views"]["gzsl"]["num_images"] > 0


def test_the_run_lock_is_released_after_a_failed_start(reference, tmp_path):
    """A run that fails after taking the lock (here: an occupied folder without --resume/--overwrite) releases it."""
    recipe, output = _copy_of_reference(reference, tmp_path)
    with pytest.raises(TrainingError, match="already holds a training run; pass --resume"):
        train(recipe)
    assert not (output / RUN_LOCK_FILE).exists()
