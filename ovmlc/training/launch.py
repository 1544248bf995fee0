"""The accelerate side of a run: the `Accelerator` for the recipe, checks that the launch gave the processes it asked
for, per-process seeding, trackers, and the hardware / library record of the trainer state file.

On a machine without GPUs, `accelerate launch --num_processes N` (without `--multi_gpu`) starts ONE process, and
`--multi_gpu` without `ACCELERATE_USE_CPU=true` starts N processes that never join one process group, each training
the whole recipe alone into the same folder. The first gets a loud warning, the second an error.
"""

from __future__ import annotations

import os
import platform
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import torch

from .errors import TrainingError
from .recipe import Recipe, RecipeError

T = TypeVar("T")

CPU_LAUNCH = (
    "ACCELERATE_USE_CPU=true accelerate launch --multi_gpu --num_processes N --num_machines 1 --mixed_precision no "
    "--dynamo_backend no -m ovmlc.train --config RECIPE.yaml"
)


def make_accelerator(recipe: Recipe, output_dir):
    from accelerate import Accelerator, DataLoaderConfiguration, DistributedDataParallelKwargs
    from accelerate.utils import ProjectConfiguration

    from ..files import LOGS_DIR

    training = recipe.training
    log_with = None if recipe.tracker == "none" else recipe.tracker
    if log_with == "trackio":
        try:
            import trackio  # noqa: F401
        except ImportError:
            raise RecipeError(f"recipe {recipe.source}: tracker 'trackio' needs `pip install trackio`") from None
    return Accelerator(
        mixed_precision=training.mixed_precision,
        gradient_accumulation_steps=training.gradient_accumulation_steps,
        log_with=log_with,
        project_config=ProjectConfiguration(project_dir=str(output_dir), logging_dir=str(output_dir / LOGS_DIR)),
        # The recipe's batch size is global: each batch is split over the processes (same run on 1 or N devices).
        dataloader_config=DataLoaderConfiguration(
            split_batches=True, use_seedable_sampler=True, data_seed=training.seed
        ),
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=training.ddp_find_unused_parameters)],
    )


def check_launch(accelerator, environ: dict[str, str] | None = None) -> str | None:
    """Compare what the launcher asked for with the processes accelerate joined. Raises `TrainingError` when several
    unsynchronised copies were started; returns a warning (also printed) when a multi-process launch runs one
    process; None when all is well."""
    environ = os.environ if environ is None else environ
    world_size = int(environ.get("WORLD_SIZE", "1") or 1)
    if world_size > 1 and accelerator.num_processes != world_size:
        raise TrainingError(
            f"the launcher started {world_size} processes (WORLD_SIZE={world_size}) but accelerate joined "
            f"{accelerator.num_processes} of them into this run ({accelerator.distributed_type}): each would train "
            f"the whole recipe alone into the same folder. On a machine without GPUs, multi-process training needs "
            f"ACCELERATE_USE_CPU=true: {CPU_LAUNCH}"
        )
    # Sharded or wrapped engines: the trainer's checkpoints hold whole, unsharded states written by one process.
    unsupported = {"DEEPSPEED", "FSDP", "MEGATRON_LM", "XLA"}
    if getattr(accelerator.distributed_type, "name", "") in unsupported:
        raise TrainingError(
            f"ovmlc train runs on one device or with DDP (several CPU processes or GPUs), not "
            f"{accelerator.distributed_type}: launch without DeepSpeed / FSDP / Megatron-LM / XLA settings"
        )
    # accelerate's simple launcher sets MASTER_ADDR/MASTER_PORT exactly when asked for several processes, but then
    # runs a single one (no WORLD_SIZE): `accelerate launch --num_processes 2` (or --cpu) on a machine without GPUs.
    asked_for_several = (
        "MASTER_ADDR" in environ and "WORLD_SIZE" not in environ and "ACCELERATE_MIXED_PRECISION" in environ
    )
    if asked_for_several and accelerator.num_processes == 1:
        warning = (
            "accelerate launch asked for several processes but started ONE (without GPUs, accelerate runs one "
            f"process unless --multi_gpu is given with ACCELERATE_USE_CPU=true); this run uses 1 process. For N CPU "
            f"processes: {CPU_LAUNCH}"
        )
        banner = "!" * 100
        print(f"{banner}\novmlc train: WARNING: {warning}\n{banner}", file=sys.stderr, flush=True)
        return warning
    return None


def all_processes_succeeded(accelerator, succeeded: bool) -> bool:
    """True when `succeeded` holds on every process (a collective call: every process must make it)."""
    if accelerator.num_processes == 1:
        return succeeded
    failures = torch.tensor([0 if succeeded else 1], device=accelerator.device)
    return int(accelerator.reduce(failures, reduction="sum").item()) == 0


def on_main_process(accelerator, action: Callable[[], T], doing: str) -> T | None:
    """Run `action` on the main process only; when it fails there, every process raises (none is left waiting at a
    barrier for a process that is gone): the main process its error, the others a `TrainingError` pointing to it."""
    result, error = None, None
    if accelerator.is_main_process:
        try:
            result = action()
        except Exception as caught:
            error = caught
    if not all_processes_succeeded(accelerator, error is None):
        raise error if error is not None else TrainingError(f"the main process failed while {doing} (see its error)")
    return result


def seed_random_draws_per_process(accelerator, seed: int) -> None:
    """After the model is built: under several processes, give each process its own stream of random draws
    (dropout), as one process drawing for the whole batch would; the process of a single-process run keeps its
    stream (same numbers as before)."""
    if accelerator.num_processes > 1 and accelerator.process_index > 0:
        torch.manual_seed(seed + 1_000_003 * accelerator.process_index)


def environment_info(accelerator, launch_warning: str | None = None) -> dict[str, Any]:
    import accelerate
    import datasets
    import transformers

    from .._version import __version__

    hardware = {
        "device": str(accelerator.device),
        "distributed_type": str(accelerator.distributed_type),
        "num_processes": accelerator.num_processes,
        "mixed_precision": accelerator.mixed_precision,
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
    }
    if launch_warning:
        hardware["launch_warning"] = launch_warning
    if torch.cuda.is_available():
        hardware["gpus"] = [torch.cuda.get_device_name(index) for index in range(torch.cuda.device_count())]
    versions = {
        "ovmlc": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "accelerate": accelerate.__version__,
        "datasets": datasets.__version__,
    }
    return {"hardware": hardware, "versions": versions}


def flat_config(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested recipe → `{"a/b": scalar}` (trackers only take scalars)."""
    flat = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flat_config(value, f"{name}/"))
        elif isinstance(value, (bool, int, float, str)):
            flat[name] = value
        else:
            flat[name] = str(value)
    return flat


__all__ = [
    "check_launch",
    "environment_info",
    "flat_config",
    "make_accelerator",
    "on_main_process",
    "all_processes_succeeded",
    "seed_random_draws_per_process",
]
