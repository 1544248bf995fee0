"""The training loop: epochs of accumulated optimizer steps over the train split, loss/lr logging, and the points
where the trainer validates and checkpoints (given as callbacks, so the loop knows nothing of either).

Resuming: each epoch's data order depends only on `(seed, epoch)` and augmentation on `(seed, epoch, image index)`,
so skipping the `state.batches_in_epoch` batches already seen continues the interrupted run step for step.

Several processes: each global batch is split over the W processes (`split_batches`) and DDP averages their gradients.
So that this equals one process's step on the whole batch, the losses are reduced over the global batch
(`ovmlc.core.losses.split_batch`: counts such as annotated entries or images with a positive are summed over the
processes), and the samples accelerate repeats to even out an epoch's last, smaller batch get weight 0.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch

from .recipe import Recipe
from .state import TrainerState


class TrainingLoop:
    def __init__(
        self,
        recipe: Recipe,
        accelerator,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        scheduler: Any | None,
        train_loader,
        train_dataset,
        num_epochs: int,
        train_labels: Sequence[str],
        trainable_parameters: Sequence[torch.nn.Parameter],
        encode_labels_every_step: bool,
        label_embeddings: Callable[[Sequence[str]], torch.Tensor],
        validate: Callable[[], bool],
        checkpoint: Callable[[TrainerState, bool], None],
        print_fn: Callable[..., None] = print,
    ):
        self.recipe = recipe
        self.accelerator = accelerator
        self.model = model  # as prepared by accelerate (DDP-wrapped under several processes)
        self.optimizer = optimizer
        self.scheduler = scheduler  # per-step LambdaLR (prepared), or None (plateau: stepped by validation)
        self.train_loader = train_loader
        self.train_dataset = train_dataset
        self.num_epochs = num_epochs
        self.train_labels = list(train_labels)
        self.trainable_parameters = list(trainable_parameters)
        self.encode_labels_every_step = encode_labels_every_step
        self.label_embeddings = label_embeddings  # names -> [C, D] from the current weights
        self.validate = validate  # scores the validation split; True = stop early
        self.checkpoint = checkpoint  # (state, final) -> writes checkpoints/checkpoint-<step>
        self.print = print_fn
        self.side_seconds = 0.0  # validation + checkpoint time (not part of an epoch's training time)

    # ------------------------------------------------------------------ entry point
    def run(self, state: TrainerState) -> None:
        from tqdm.auto import tqdm

        training, accelerator = self.recipe.training, self.accelerator
        unwrapped = accelerator.unwrap_model(self.model)
        vocabulary = unwrapped.vocabulary(self.train_labels)
        label_embeds = None if self.encode_labels_every_step else self.label_embeddings(self.train_labels)
        self.segment_start = time.perf_counter()
        progress = tqdm(
            total=state.total_steps,
            initial=state.global_step,
            desc="training",
            unit="step",
            disable=not accelerator.is_local_main_process,
        )
        stop = False
        for epoch in range(state.epoch, self.num_epochs):
            epoch_start, side_at_start = time.perf_counter(), self.side_seconds
            self.model.train()
            self.train_loader.set_epoch(epoch)
            self.train_dataset.set_epoch(epoch)
            loader = self.train_loader
            if state.batches_in_epoch:  # resuming mid-epoch: same shuffled order, minus the batches already seen
                loader = accelerator.skip_first_batches(self.train_loader, state.batches_in_epoch)
            for batch in loader:
                label_inputs = {"label_names": vocabulary} if label_embeds is None else {"label_embeds": label_embeds}
                loss = self.train_step(batch, label_inputs, batch_index=state.batches_in_epoch)
                state.batches_in_epoch += 1
                batch_loss = accelerator.reduce(loss.detach().float(), reduction="mean").item()
                state.loss_sum += batch_loss
                state.loss_count += 1
                state.epoch_loss_sum += batch_loss
                state.epoch_loss_count += 1
                if not accelerator.sync_gradients:
                    continue
                state.global_step += 1
                progress.update(1)
                if state.global_step % training.log_every == 0:
                    self.log_loss(state)
                    progress.set_postfix(loss=f"{state.loss_history[-1][1]:.4f}")
                if self.validation_due(state):
                    stop = self.timed_validate() or stop
                if stop or state.global_step >= state.total_steps:
                    break
                if training.checkpoint_every and state.global_step % training.checkpoint_every == 0:
                    self.timed_checkpoint(state)
            if state.batches_in_epoch >= len(self.train_loader):  # the epoch is complete
                elapsed = time.perf_counter() - epoch_start - (self.side_seconds - side_at_start)
                state.epoch_seconds.append(round(elapsed, 4))
                state.epoch_losses.append(state.epoch_loss_sum / max(1, state.epoch_loss_count))
                state.epoch_loss_sum, state.epoch_loss_count = 0.0, 0
                state.epoch, state.batches_in_epoch = epoch + 1, 0
                if training.eval_every == "epoch" and not stop:
                    stop = self.timed_validate() or stop
            if stop or state.global_step >= state.total_steps:
                break
            self.timed_checkpoint(state)
        progress.close()
        if state.loss_count:
            self.log_loss(state)
        # The last weights were never validated (e.g. max_steps stopped mid-epoch): validate them too.
        validated_steps = {entry["step"] for entry in state.eval_history}
        if training.eval_every is not None and not state.stopped_early and state.global_step not in validated_steps:
            self.timed_validate()
        state.finished = True
        self.timed_checkpoint(state, final=True)

    # ------------------------------------------------------------------ one batch
    def train_step(self, batch: dict[str, Any], label_inputs: dict[str, Any], batch_index: int) -> torch.Tensor:
        """Forward + backward of one batch (the `batch_index`-th of its epoch); an optimizer step when the
        accumulation window is complete."""
        from .data import model_inputs

        accelerator, training = self.accelerator, self.recipe.training
        with accelerator.accumulate(self.model), self.global_batch_reduction(batch, batch_index):
            outputs = self.model(
                **model_inputs(batch), **label_inputs, labels=batch["labels"], label_mask=batch["label_mask"]
            )
            loss = outputs.loss
            accelerator.backward(loss)
            if accelerator.sync_gradients and training.max_grad_norm:
                accelerator.clip_grad_norm_(self.trainable_parameters, training.max_grad_norm)
            self.optimizer.step()
            if self.scheduler is not None:
                self.scheduler.step()
            self.optimizer.zero_grad(set_to_none=True)
        return loss

    def global_batch_reduction(self, batch: dict[str, Any], batch_index: int):
        """Under several processes, the context in which losses are reduced over the global batch (see the module
        docstring); nothing under one process."""
        from ..core.losses import split_batch

        accelerator = self.accelerator
        if accelerator.num_processes == 1:
            return contextlib.nullcontext()
        local_size = int(batch["labels"].shape[0])
        weight = padding_weight(
            len(self.train_dataset),
            self.recipe.training.batch_size,
            batch_index,
            local_size,
            accelerator.process_index,
        )
        return split_batch(
            accelerator.num_processes,
            lambda count: accelerator.reduce(count.to(accelerator.device), reduction="sum"),
            None if weight is None else weight.to(accelerator.device),
        )

    # ------------------------------------------------------------------ helpers
    def validation_due(self, state: TrainerState) -> bool:
        every = self.recipe.training.eval_every
        return isinstance(every, int) and not isinstance(every, bool) and state.global_step % every == 0

    def timed_validate(self) -> bool:
        started = time.perf_counter()
        stop = self.validate()
        self.model.train()
        self.side_seconds += time.perf_counter() - started
        return stop

    def timed_checkpoint(self, state: TrainerState, final: bool = False) -> None:
        started = time.perf_counter()
        state.train_seconds += started - self.segment_start
        self.checkpoint(state, final)
        self.segment_start = time.perf_counter()
        self.side_seconds += self.segment_start - started

    def log_loss(self, state: TrainerState) -> None:
        mean_loss = state.loss_sum / max(1, state.loss_count)
        learning_rate = self.optimizer.param_groups[0]["lr"]
        state.loss_history.append([state.global_step, mean_loss, learning_rate])
        state.loss_sum, state.loss_count = 0.0, 0
        self.accelerator.log(
            {"train/loss": mean_loss, "train/lr": learning_rate, "train/epoch": state.epoch}, step=state.global_step
        )


def padding_weight(
    num_samples: int, global_batch_size: int, batch_index: int, local_size: int, process_index: int
) -> torch.Tensor | None:
    """`[local_size]` weights of a process's share of global batch `batch_index`: 0 for the samples accelerate
    appended (repeats from the epoch's first batch) to fill the epoch's last, smaller batch; None when all are real.
    With `split_batches`, process p gets positions [p * local_size, (p + 1) * local_size) of the global batch."""
    last_batch = math.ceil(num_samples / global_batch_size) - 1
    real_in_last = num_samples - last_batch * global_batch_size
    if batch_index != last_batch or real_in_last == global_batch_size:
        return None
    start = process_index * local_size
    return (torch.arange(start, start + local_size) < real_in_last).to(torch.float32)


__all__ = ["TrainingLoop", "padding_weight"]
