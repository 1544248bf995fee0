"""The one place where images become label scores: `Scorer`.

`model.predict` / `predict_scores`, the pipeline, `ovmlc evaluate`, the trainer's validation/test passes and the Space
all score through a `Scorer`, so these rules hold everywhere:

- **Precision.** The image side (`model.encode_image_features`) runs under `image_dtype` (autocast, e.g. bf16 on a
  GPU); the scoring head (`model.score`) runs outside autocast on float32 features and float32 label embeddings, so
  logits and scores are float32 (a bf16 head rounds a label's scores into a few hundred values: ~90% of MKT's fused
  scores per label tie). A model whose weights are in bf16 runs its head in bf16 (its weights are bf16).
- **Logits alongside scores.** Every result carries float32 logits and their sigmoid: rank by logits (a float32
  sigmoid saturates to exactly 1.0 from a logit of ~17 on: raw QKS logits >= 25 all tie at 1.0), threshold scores.
- **Label embeddings** come from `model.encode_labels` (the model's one `LabelEmbeddingCache`), once per pass.
- **Paper-style ranking scores.** `ranking=True` scores inside `model.ranking_scores()` (CLIP zero-shot's plain cosine);
  `score_for_views` also keeps the predicted scores thresholds apply to, when they differ.
- **ZSL "unseen labels scored alone"**, applied once (`score_for_views`), from the `scores_depend_on_label_set` trait.
- **Several processes.** `gather` (e.g. `accelerator.gather_for_metrics`) collects every batch from all processes;
  batches then carry an `index` (row positions) and every process gets all rows, in order.

Core module: imports only torch, numpy and huggingface_hub (remote code flattens it next to the model files).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from huggingface_hub.utils import tqdm

from .images import ImageInput, load_images
from .outputs import MultiLabelOutput
from .vocabulary import LabelVocabulary

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
DTYPE_ALIASES = {"fp32": "float32", "float": "float32", "bf16": "bfloat16", "fp16": "float16", "half": "float16"}

# A batch: `pixel_values [B, 3, H, W]`, or a mapping with `pixel_values` or `image_features` (a feature cache's
# `{name: [B, ...]}`), optionally `index [B]` (row positions; needed with a gather hook).
Batch = torch.Tensor | Mapping[str, Any]
Labels = Sequence[str] | LabelVocabulary
# gather((index [b], logits [b, C], scores [b, C])) -> the same tuple over every process (accelerate's
# `gather_for_metrics`, which also drops the samples a distributed sampler repeated to even out the last batch).
GatherHook = Callable[[tuple[torch.Tensor, ...]], tuple[torch.Tensor, ...]]


def parse_dtype(dtype: str | torch.dtype | None) -> torch.dtype | None:
    """`"bfloat16"` / `"bf16"` / `torch.bfloat16` / ... -> a torch dtype (None stays None)."""
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    key = str(dtype).lower().removeprefix("torch.")
    key = DTYPE_ALIASES.get(key, key)
    if key not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}: use one of {', '.join(DTYPES)}")
    return DTYPES[key]


def resolve_device(name: str | torch.device | None) -> torch.device:
    """`"auto"` / None -> cuda if available, else mps, else cpu; anything else as `torch.device`, checked to exist."""
    if name is None or str(name) == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError as error:
        raise ValueError(f"unknown device {name!r} ({error})") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} asked for, but torch sees no CUDA device (torch {torch.__version__})")
    return device


def scores_unseen_labels_alone(model: Any) -> bool:
    """Whether the ZSL views score the unseen labels on their own: the model's `zsl_scores_unseen_alone` trait when it
    sets one (True / False: its paper's protocol), else its `scores_depend_on_label_set` trait (a label's score depends
    on the labels scored with it, as MKT's normalisation across labels; its ZSL protocol scores the unseen labels
    alone). ViLD's scores depend on the label set, yet its paper scores novel classes within the whole vocabulary:
    `zsl_scores_unseen_alone = False`. Read here only, so evaluation, localisation and the trainer apply one rule."""
    explicit = getattr(model, "zsl_scores_unseen_alone", None)
    if explicit is not None:
        return bool(explicit)
    return bool(getattr(model, "scores_depend_on_label_set", False))


def ranking_description(model: Any) -> str | None:
    """What `model.ranking_scores()` switches to (recorded in metrics.json), or None when the model ranks its predicted
    scores (every trained method)."""
    with model.ranking_scores() as description:
        return description


@dataclass
class ScoredBatch:
    """One batch scored (tensors on the scoring device)."""

    logits: torch.Tensor  # [B, C] float32
    scores: torch.Tensor  # [B, C] float32, sigmoid(logits)
    label_maps: torch.Tensor | None  # [B, C, h, w] float32, when asked for and the method gives them
    outputs: MultiLabelOutput  # the head's output as returned (method extras: query_index, image_embeds, ...)


@dataclass
class ScoreResult:
    """Images x labels scored (NumPy, float32)."""

    logits: np.ndarray  # [N, C] float32: rank by these
    scores: np.ndarray  # [N, C] float32: sigmoid(logits), what thresholds apply to
    label_names: list[str]  # [C]

    @property
    def num_images(self) -> int:
        return self.logits.shape[0]


@dataclass
class ViewScores:
    """What evaluation needs of one split: the ranking scores, the predicted ones when they differ, and the unseen
    labels scored alone when the model's scores depend on the label set."""

    ranking: ScoreResult  # [N, C] under `model.ranking_scores()`: what paper-style tables rank
    predicted: ScoreResult | None  # [N, C] the predicted scores (thresholds), only when they differ from `ranking`
    unseen_alone: ScoreResult | None  # [N, C_unseen] the unseen labels scored on their own (ranking scores)
    ranking_description: str | None  # what `ranking_scores()` switched to; None = the predicted scores

    @property
    def threshold_scores(self) -> np.ndarray:
        """`[N, C]` the scores thresholds are calibrated on and applied to (the predicted ones)."""
        return (self.predicted or self.ranking).scores

    def scores_file_arrays(self) -> dict[str, np.ndarray | None]:
        """The score keys of a scores file (`ovmlc.evaluation.save_scores(path, labels=..., label_names=...,
        unseen=..., **view_scores.scores_file_arrays())`)."""
        return {
            "scores": self.ranking.scores,
            "logits": self.ranking.logits,
            "unseen_scores": None if self.unseen_alone is None else self.unseen_alone.scores,
            "unseen_logits": None if self.unseen_alone is None else self.unseen_alone.logits,
            "threshold_scores": None if self.predicted is None else self.predicted.scores,
        }


class Scorer:
    """Scores images against labels with one model (see the module docstring for the rules).

    `batch_size` images per forward (`score_images`); `image_dtype` (a dtype or a name such as "bfloat16") runs the
    image side under autocast; `device` moves the model there (default: where it is); `gather` collects batches
    across processes; `progress` shows a bar per pass (True, or the bar's description).

    >>> scorer = Scorer(model, image_dtype="bfloat16")
    >>> result = scorer.score_images(["cat.jpg", "street.png"], ["cat", "car", "tree"])
    >>> result.logits.shape, result.scores.dtype
    ((2, 3), dtype('float32'))
    """

    def __init__(
        self,
        model: Any,
        *,
        batch_size: int = 32,
        image_dtype: str | torch.dtype | None = None,
        device: str | torch.device | None = None,
        gather: GatherHook | None = None,
        progress: bool | str = False,
    ):
        if batch_size < 1:
            raise ValueError(f"Scorer: batch_size must be >= 1, got {batch_size}")
        self.model = model
        self.batch_size = int(batch_size)
        self.image_dtype = parse_dtype(image_dtype)
        if device is not None and torch.device(device) != model.device:
            model.to(device)
        self.gather = gather
        self.progress = progress
        weights = model.dtype
        if self.image_dtype not in (None, weights) and self.image_dtype == torch.float32:
            raise ValueError(
                f"Scorer: image_dtype float32 needs a model in float32; this one is in {weights} (load it with "
                "dtype=torch.float32 and pass image_dtype to run the image side in lower precision)"
            )

    @property
    def device(self) -> torch.device:
        return self.model.device

    # ------------------------------------------------------------------ labels
    def label_embeddings(self, labels: Labels) -> torch.Tensor:
        """`[C, D]` (or `[C, S, D]`) float32 label embeddings on the device, through `model.encode_labels` (the model's
        label cache: a vocabulary seen before costs no text forward)."""
        with self._eval_mode(), torch.no_grad():
            embeddings = self.model.encode_labels(labels)
        return embeddings.to(device=self.device, dtype=torch.float32)

    # ------------------------------------------------------------------ one batch
    def image_features(self, batch: Batch) -> dict[str, torch.Tensor]:
        """`model.encode_image_features` of a batch under `image_dtype` (or the batch's cached `image_features`), as
        the head's dtype: float32 for a float32 model."""
        head_dtype = self.model.dtype
        if isinstance(batch, Mapping) and batch.get("image_features") is not None:
            features = batch["image_features"]
        else:
            pixel_values = batch["pixel_values"] if isinstance(batch, Mapping) else batch
            if pixel_values is None:
                raise ValueError("Scorer: a batch needs `pixel_values` or `image_features`")
            pixel_values = torch.as_tensor(pixel_values).to(device=self.device, dtype=head_dtype)
            with self._image_autocast():
                features = self.model.encode_image_features(pixel_values)
        return {
            name: value.to(device=self.device, dtype=head_dtype) if value.is_floating_point() else value.to(self.device)
            for name, value in features.items()
        }

    def score_batch(self, batch: Batch, label_embeds: torch.Tensor, return_label_maps: bool = False) -> ScoredBatch:
        """Float32 logits and sigmoid scores `[B, C]` of one batch against `label_embeds [C, D]` (from
        `label_embeddings`). Runs without gradients in the model's current mode (the pass methods switch to eval)."""
        with torch.no_grad():
            features = self.image_features(batch)
            with torch.autocast(self.device.type, enabled=False):  # also switches off a caller's autocast
                outputs = self.model.score(
                    features, label_embeds.to(device=self.device, dtype=torch.float32), return_label_maps
                )
        logits = outputs.logits.float()
        label_maps = outputs.label_maps
        label_maps = label_maps.float() if return_label_maps and label_maps is not None else None
        return ScoredBatch(logits=logits, scores=torch.sigmoid(logits), label_maps=label_maps, outputs=outputs)

    # ------------------------------------------------------------------ passes
    def score_pixel_batches(
        self,
        batches: Iterable[Batch],
        labels: Labels,
        *,
        ranking: bool = False,
        num_rows: int | None = None,
        description: str | None = None,
    ) -> ScoreResult:
        """Score every batch (`pixel_values [B, 3, H, W]` tensors, or mappings with `pixel_values` / `image_features`
        and optionally `index [B]`) against `labels`, encoded once. Rows go to their `index` when batches carry one
        (required with a gather hook; `num_rows` then checks that every row came exactly once), else in batch order.
        `ranking=True` scores inside `model.ranking_scores()`. The model is in eval mode for the pass (restored)."""
        vocabulary = self.model.vocabulary(labels)
        chunks: list[tuple[np.ndarray | None, np.ndarray, np.ndarray]] = []
        ranking_context = self.model.ranking_scores() if ranking else contextlib.nullcontext()
        with self._eval_mode(), torch.no_grad(), ranking_context:
            label_embeds = self.label_embeddings(vocabulary)  # [C, D]
            for batch in self._progress(batches, description):
                index = batch.get("index") if isinstance(batch, Mapping) else None
                scored = self.score_batch(batch, label_embeds)
                logits, scores = scored.logits, scored.scores  # [b, C]
                if self.gather is not None:
                    if index is None:
                        raise ValueError(
                            "Scorer: with a gather hook every batch needs an `index` (its rows' positions), so that "
                            "rows from several processes land in order"
                        )
                    index, logits, scores = self.gather((torch.as_tensor(index, device=logits.device), logits, scores))
                index = None if index is None else torch.as_tensor(index).cpu().numpy().astype(np.int64)
                chunks.append((index, logits.cpu().numpy(), scores.cpu().numpy()))
        logits, scores = _assemble(chunks, len(vocabulary), num_rows)
        return ScoreResult(logits=logits, scores=scores, label_names=list(vocabulary.names))

    def score_images(
        self, images: ImageInput | Sequence[ImageInput], labels: Labels, *, ranking: bool = False
    ) -> ScoreResult:
        """Score images (paths, PIL images, arrays; one or a list) against `labels`, `batch_size` at a time."""
        image_list = load_images(images)

        def batches() -> Iterator[torch.Tensor]:
            for start in range(0, len(image_list), self.batch_size):
                yield self.model.preprocess(image_list[start : start + self.batch_size])  # [B, 3, H, W]

        return self.score_pixel_batches(batches(), labels, ranking=ranking, num_rows=len(image_list))

    def score_for_views(
        self,
        batches: Callable[[], Iterable[Batch]] | Iterable[Batch],
        label_names: Sequence[str],
        unseen: Sequence[bool] | np.ndarray | None = None,
        *,
        with_predicted: bool = True,
        num_rows: int | None = None,
    ) -> ViewScores:
        """The scores an evaluation report needs, from one split's batches (`batches`: a function returning a fresh
        iterable, or a re-iterable such as a list or a DataLoader: up to three passes).

        1. `ranking`: every label, inside `model.ranking_scores()` (what paper-style tables rank);
        2. `predicted`: every label, the predicted scores, if `with_predicted` and they differ from the ranking ones
           (CLIP zero-shot's reference prompt); thresholds are calibrated on and applied to these;
        3. `unseen_alone`: the unseen labels scored on their own, if the model's `scores_depend_on_label_set` trait
           is set and there are unseen labels (the ZSL rule; ranking scores).
        """
        label_names = list(label_names)
        unseen = np.zeros(len(label_names), dtype=bool) if unseen is None else np.asarray(unseen, dtype=bool)
        if unseen.shape != (len(label_names),):
            raise ValueError(f"Scorer: `unseen` has shape {unseen.shape}; expected ({len(label_names)},)")
        description = ranking_description(self.model)
        unseen_names = [name for name, is_unseen in zip(label_names, unseen) if is_unseen]
        alone = bool(unseen_names) and scores_unseen_labels_alone(self.model)
        passes = 1 + (with_predicted and description is not None) + alone
        fresh = _batch_source(batches, passes)

        ranking = self.score_pixel_batches(
            fresh(), label_names, ranking=True, num_rows=num_rows, description="scoring (ranking scores)"
        )
        predicted = None
        if with_predicted and description is not None:
            predicted = self.score_pixel_batches(
                fresh(), label_names, num_rows=num_rows, description="scoring (predicted scores)"
            )
        unseen_alone = None
        if alone:
            unseen_alone = self.score_pixel_batches(
                fresh(), unseen_names, ranking=True, num_rows=num_rows, description="scoring (unseen labels alone)"
            )
        return ViewScores(ranking, predicted, unseen_alone, description)

    # ------------------------------------------------------------------ internals
    @contextlib.contextmanager
    def _eval_mode(self) -> Iterator[None]:
        """Eval mode for a pass, restored after; a model already in eval mode is left alone (switching resets its
        text fingerprint, which costs a hash of the text tower)."""
        was_training = self.model.training
        if was_training:
            self.model.eval()
        try:
            yield
        finally:
            if was_training:
                self.model.train(True)

    def _image_autocast(self) -> contextlib.AbstractContextManager:
        if self.image_dtype is None or self.image_dtype == self.model.dtype:
            return contextlib.nullcontext()  # as the weights are (a caller's autocast, if any, applies)
        return torch.autocast(self.device.type, dtype=self.image_dtype)

    def _progress(self, batches: Iterable[Batch], description: str | None) -> Iterable[Batch]:
        if not self.progress:
            return batches
        label = self.progress if isinstance(self.progress, str) else (description or "scoring")
        total = len(batches) if hasattr(batches, "__len__") else None
        return tqdm(batches, desc=label, unit="batch", total=total, leave=False)


def _batch_source(
    batches: Callable[[], Iterable[Batch]] | Iterable[Batch], passes: int
) -> Callable[[], Iterable[Batch]]:
    if callable(batches) and not hasattr(batches, "__iter__"):
        return batches
    if passes > 1 and iter(batches) is batches:
        raise ValueError(
            f"Scorer.score_for_views needs {passes} passes over the batches: pass a function that returns them (or a "
            "list / DataLoader), not a one-shot iterator"
        )
    return lambda: batches


def _assemble(
    chunks: list[tuple[np.ndarray | None, np.ndarray, np.ndarray]], num_labels: int, num_rows: int | None
) -> tuple[np.ndarray, np.ndarray]:
    """Stack per-batch `(index, logits, scores)` into `[N, C]` matrices, placing rows by index when there is one."""
    empty = np.zeros((0, num_labels), dtype=np.float32)
    if not chunks:
        return empty.copy(), empty.copy()
    with_index = [index is not None for index, _, _ in chunks]
    if not any(with_index):
        logits = np.concatenate([chunk[1] for chunk in chunks]).astype(np.float32, copy=False)
        scores = np.concatenate([chunk[2] for chunk in chunks]).astype(np.float32, copy=False)
        if num_rows is not None and logits.shape[0] != num_rows:
            raise RuntimeError(f"Scorer: scored {logits.shape[0]} rows, expected {num_rows}")
        return logits, scores
    if not all(with_index):
        raise ValueError("Scorer: some batches carry an `index` and others do not")
    indices = np.concatenate([chunk[0] for chunk in chunks])
    total = int(num_rows) if num_rows is not None else (int(indices.max()) + 1 if indices.size else 0)
    if indices.size and (indices.min() < 0 or indices.max() >= total):
        raise ValueError(f"Scorer: batch indices range over [{indices.min()}, {indices.max()}], expected [0, {total})")
    counts = np.bincount(indices, minlength=total)
    if not (counts == 1).all():
        raise RuntimeError(
            f"Scorer: {int((counts == 0).sum())} rows were never scored and {int((counts > 1).sum())} more than once"
        )
    logits = np.empty((total, num_labels), dtype=np.float32)
    scores = np.empty((total, num_labels), dtype=np.float32)
    logits[indices] = np.concatenate([chunk[1] for chunk in chunks])
    scores[indices] = np.concatenate([chunk[2] for chunk in chunks])
    return logits, scores


__all__ = [
    "DTYPES",
    "GatherHook",
    "ScoreResult",
    "ScoredBatch",
    "Scorer",
    "ViewScores",
    "parse_dtype",
    "ranking_description",
    "resolve_device",
    "scores_unseen_labels_alone",
]
