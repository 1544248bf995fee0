"""What a checkpoint stores to resume a run, without pickle: safetensors for tensors, JSON for everything else.

* `trainable_weights.safetensors`: the trainable parameters and the buffers (what training changes), loaded back
  strictly (a missing or unexpected key is an error naming it);
* `optimizer.safetensors`: the optimizer's state tensors; its param groups and scalars are JSON in the file's metadata;
* `scheduler.json` (LambdaLR or ReduceLROnPlateau) and `scaler.json` (fp16 gradient scaler): plain JSON;
* `rng_state_<rank>.safetensors`: the python / numpy / torch (CPU and CUDA) RNG states of each process.

A state dict is split by `encode_state` into JSON (tuples, non-string keys and non-finite floats tagged) and a flat
`{name: tensor}` mapping, and rebuilt exactly by `decode_state`.

Checkpoints written by earlier ovmlc versions (accelerate's `save_state`: `optimizer.bin`, `scheduler.bin`,
`custom_checkpoint_0.pkl`, `random_states_<rank>.pkl`) are still read, with `torch.load(weights_only=True)` only:
torch's restricted unpickler, which builds tensors and plain containers and refuses every other object (the numpy
RNG state needs numpy's array reconstruction allowed, nothing else).
"""

from __future__ import annotations

import json
import math
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..files import (
    OPTIMIZER_STATE_FILE,
    RNG_STATE_FILE_PATTERN,
    SCALER_STATE_FILE,
    SCHEDULER_STATE_FILE,
    TRAINABLE_WEIGHTS_FILE,
)
from .errors import TrainingError

_STATE_METADATA_KEY = "ovmlc_state"
_LEGACY_RNG_FILE = "random_states_{rank}.pkl"


class CheckpointFileError(TrainingError):
    """A checkpoint file is missing, unreadable or does not fit this run."""


# ---------------------------------------------------------------------------------------------- generic state codec
def encode_state(value: Any, tensors: dict[str, torch.Tensor], path: str = "s") -> Any:
    """JSON-able form of a state dict; its tensors (and numpy arrays) go into `tensors` under unique names."""
    if isinstance(value, torch.Tensor):
        tensors[path] = value.detach().cpu().contiguous().clone()
        return {"__tensor__": path}
    if isinstance(value, np.ndarray):
        tensors[path] = torch.from_numpy(value.astype(np.int64) if value.dtype.kind in "ui" else value.copy())
        return {"__ndarray__": path, "dtype": value.dtype.str}
    if isinstance(value, float) and not math.isfinite(value):
        return {"__float__": repr(value)}
    if isinstance(value, (bool, int, float, str)) or value is None:
        return value
    if isinstance(value, tuple):
        return {"__tuple__": [encode_state(item, tensors, f"{path}.{i}") for i, item in enumerate(value)]}
    if isinstance(value, list):
        return [encode_state(item, tensors, f"{path}.{i}") for i, item in enumerate(value)]
    if isinstance(value, dict):
        if all(isinstance(key, str) for key in value):
            return {key: encode_state(item, tensors, f"{path}.{key}") for key, item in value.items()}
        if not all(isinstance(key, (str, int)) for key in value):
            raise TypeError(f"cannot store a state dict key of type {type(next(iter(value))).__name__}")
        return {"__items__": [[key, encode_state(item, tensors, f"{path}.{key}")] for key, item in value.items()]}
    raise TypeError(f"cannot store a {type(value).__name__} in a checkpoint state ({path})")


def decode_state(value: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """Inverse of `encode_state`."""
    if isinstance(value, list):
        return [decode_state(item, tensors) for item in value]
    if not isinstance(value, dict):
        return value
    if "__tensor__" in value:
        return tensors[value["__tensor__"]]
    if "__ndarray__" in value:
        return tensors[value["__ndarray__"]].numpy().astype(np.dtype(value["dtype"]))
    if "__float__" in value:
        return float(value["__float__"])
    if "__tuple__" in value:
        return tuple(decode_state(item, tensors) for item in value["__tuple__"])
    if "__items__" in value:
        return {key: decode_state(item, tensors) for key, item in value["__items__"]}
    return {key: decode_state(item, tensors) for key, item in value.items()}


def save_state_file(path: Path, state: Any) -> None:
    """`state` as a safetensors file (tensors + JSON metadata), or as JSON when `path` ends in `.json`."""
    from safetensors.torch import save_file

    tensors: dict[str, torch.Tensor] = {}
    encoded = encode_state(state, tensors)
    if path.suffix == ".json":
        if tensors:
            raise TypeError(f"{path.name}: state with tensors {sorted(tensors)[:3]} needs a safetensors file")
        path.write_text(json.dumps(encoded, indent=1) + "\n", encoding="utf-8")
    else:
        save_file(tensors, str(path), metadata={_STATE_METADATA_KEY: json.dumps(encoded)})


def load_state_file(path: Path) -> Any:
    """A state written by `save_state_file`; `CheckpointFileError` naming the file when it is missing or corrupt."""
    from safetensors import SafetensorError, safe_open

    if not path.is_file():
        raise CheckpointFileError(f"checkpoint file {path} is missing")
    try:
        if path.suffix == ".json":
            return decode_state(json.loads(path.read_text(encoding="utf-8")), {})
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
            tensors = {name: handle.get_tensor(name) for name in handle.keys()}  # noqa: SIM118 - not a dict
        return decode_state(json.loads(metadata[_STATE_METADATA_KEY]), tensors)
    except (SafetensorError, OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as error:
        raise CheckpointFileError(f"checkpoint file {path} is corrupt or not an ovmlc state file ({error})") from None


# ---------------------------------------------------------------------------------------------- model weights
def trainable_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Trainable parameters and all buffers (the parts of a model that training can change), CPU, contiguous."""
    parameters = dict(model.named_parameters())
    state = {
        name: tensor
        for name, tensor in model.state_dict(keep_vars=True).items()
        if name not in parameters or parameters[name].requires_grad
    }  # persistent buffers (not parameters) + trainable parameters
    return {name: tensor.detach().cpu().contiguous().clone() for name, tensor in state.items()}


def save_trainable_weights(model: torch.nn.Module, folder: Path) -> None:
    from safetensors.torch import save_file

    save_file(trainable_state_dict(model), str(folder / TRAINABLE_WEIGHTS_FILE))


def load_trainable_state(model: torch.nn.Module, state: dict[str, torch.Tensor], source: str | Path) -> None:
    """Load `state` (trainable parameters + buffers) into `model`, strictly: every trainable tensor of the model must
    be in `state`, and every tensor of `state` in the model."""
    expected = trainable_state_dict_keys(model)
    unexpected = sorted(set(state) - set(model.state_dict()))
    missing = sorted(expected - set(state))
    if unexpected or missing:
        raise CheckpointFileError(
            f"{source} does not fit this model: "
            + "; ".join(
                part
                for part in (
                    f"unexpected weights {unexpected[:5]}" if unexpected else "",
                    f"missing trainable weights {missing[:5]}" if missing else "",
                )
                if part
            )
            + " (was it written by another recipe or method?)"
        )
    model.load_state_dict(state, strict=False)


def trainable_state_dict_keys(model: torch.nn.Module) -> set[str]:
    parameters = dict(model.named_parameters())
    return {name for name in model.state_dict() if name not in parameters or parameters[name].requires_grad}


def load_trainable_weights(model: torch.nn.Module, folder: str | Path) -> None:
    """Load the `trainable_weights.safetensors` of a checkpoint / best-model folder into `model` (strict)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(folder) / TRAINABLE_WEIGHTS_FILE
    if not path.is_file():
        raise CheckpointFileError(f"checkpoint file {path} is missing")
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError) as error:
        raise CheckpointFileError(f"checkpoint file {path} is corrupt ({error})") from None
    load_trainable_state(model, state, path)


# ---------------------------------------------------------------------------------------------- training state
def save_training_state(folder: Path, optimizer, scheduler, scaler, process_index: int, is_main: bool) -> None:
    """Optimizer, LR schedule and gradient scaler (main process) and this process's RNG states into `folder`."""
    if is_main:
        if optimizer is not None:
            save_state_file(folder / OPTIMIZER_STATE_FILE, optimizer.state_dict())
        if scheduler is not None:
            save_state_file(folder / SCHEDULER_STATE_FILE, scheduler.state_dict())
        if scaler is not None:
            save_state_file(folder / SCALER_STATE_FILE, scaler.state_dict())
    save_state_file(folder / RNG_STATE_FILE_PATTERN.format(rank=process_index), rng_states())


def load_training_state(folder: Path, optimizer, scheduler, scaler, process_index: int) -> None:
    """Inverse of `save_training_state` (every process reads the shared files and its own RNG file)."""
    for name, target in ((OPTIMIZER_STATE_FILE, optimizer), (SCHEDULER_STATE_FILE, scheduler)):
        if target is not None:
            _load_into(target, load_state_file(folder / name), folder / name)
    if scaler is not None:
        _load_into(scaler, load_state_file(folder / SCALER_STATE_FILE), folder / SCALER_STATE_FILE)
    path = folder / RNG_STATE_FILE_PATTERN.format(rank=process_index)
    set_rng_states(load_state_file(path), path)


def _load_into(target, state: Any, path: Path) -> None:
    try:
        target.load_state_dict(state)
    except (KeyError, ValueError, TypeError, RuntimeError, IndexError) as error:
        raise CheckpointFileError(f"checkpoint file {path} does not fit this run ({error})") from None


def saved_process_count(folder: Path) -> int:
    """How many processes wrote a checkpoint (one RNG file each; 0 when none is found)."""
    return len(list(folder.glob(RNG_STATE_FILE_PATTERN.format(rank="*")))) or len(
        list(folder.glob(_LEGACY_RNG_FILE.format(rank="*")))
    )


def rng_states() -> dict[str, Any]:
    states: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: Any, source: Path) -> None:
    try:
        random.setstate(states["python"])
        np.random.set_state(states["numpy"])
        torch.set_rng_state(states["torch"])
        if "cuda" in states and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(states["cuda"])
    except (KeyError, TypeError, ValueError, RuntimeError) as error:
        raise CheckpointFileError(f"checkpoint file {source}: not a set of RNG states ({error})") from None


# ---------------------------------------------------------------------------------------------- legacy checkpoints
def load_legacy_checkpoint(folder: Path, model: torch.nn.Module, optimizer, scheduler, scaler, process_index: int):
    """Resume from a checkpoint of an earlier ovmlc (accelerate `save_state` layout), reading every file with
    `torch.load(weights_only=True)` or safetensors."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    weights = folder / "model.safetensors"
    try:
        state = load_file(str(weights))
    except (SafetensorError, OSError) as error:
        raise CheckpointFileError(f"checkpoint file {weights} is missing or corrupt ({error})") from None
    state = {name.removeprefix("module."): tensor for name, tensor in state.items()}  # saved from the DDP wrapper
    trainable = trainable_state_dict_keys(model)
    load_trainable_state(model, {name: tensor for name, tensor in state.items() if name in trainable}, weights)
    if optimizer is not None:
        _load_into(optimizer, _legacy_load(folder / "optimizer.bin"), folder / "optimizer.bin")
    if scheduler is not None:
        # LambdaLR was prepared by accelerate (scheduler.bin); the plateau schedule was a registered custom object.
        is_lambda = isinstance(scheduler, torch.optim.lr_scheduler.LambdaLR)
        name = "scheduler.bin" if is_lambda else "custom_checkpoint_0.pkl"
        _load_into(scheduler, _legacy_load(folder / name), folder / name)
    if scaler is not None:
        _load_into(scaler, _legacy_load(folder / "scaler.pt"), folder / "scaler.pt")
    rng_file = folder / _LEGACY_RNG_FILE.format(rank=process_index)
    states = _legacy_load(rng_file, numpy_arrays=True)
    try:
        converted = {
            "python": states["random_state"],
            "numpy": states["numpy_random_seed"],
            "torch": states["torch_manual_seed"],
        }
        if "torch_cuda_manual_seed" in states:
            converted["cuda"] = states["torch_cuda_manual_seed"]
    except (KeyError, TypeError) as error:
        raise CheckpointFileError(f"checkpoint file {rng_file}: not a set of RNG states ({error})") from None
    set_rng_states(converted, rng_file)


def _legacy_load(path: Path, numpy_arrays: bool = False) -> Any:
    """`torch.load(path, weights_only=True)`; with `numpy_arrays`, numpy's array reconstruction is allowed too (the
    numpy RNG state is an array): still no arbitrary object, hence no code, can be unpickled."""
    import pickle

    if not path.is_file():
        raise CheckpointFileError(f"checkpoint file {path} is missing")
    allowed: list[Any] = []
    if numpy_arrays:
        import codecs

        multiarray = np._core.multiarray if hasattr(np, "_core") else np.core.multiarray
        allowed = [multiarray._reconstruct, np.ndarray, np.dtype, type(np.dtype(np.uint32)), codecs.encode]
    try:
        with torch.serialization.safe_globals(allowed):
            return torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, OSError, EOFError, ValueError) as error:
        raise CheckpointFileError(
            f"checkpoint file {path} was refused: it is not plain tensors and containers (loading it could run "
            f"code), or it is corrupt ({str(error).splitlines()[0]})"
        ) from None


__all__ = [
    "CheckpointFileError",
    "decode_state",
    "encode_state",
    "load_legacy_checkpoint",
    "load_trainable_state",
    "load_trainable_weights",
    "load_training_state",
    "load_state_file",
    "save_trainable_weights",
    "save_training_state",
    "saved_process_count",
    "trainable_state_dict",
    "save_state_file",
]
