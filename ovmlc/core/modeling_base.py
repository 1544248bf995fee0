"""Base config and base model shared by every ovmlc method.

A method (in `ovmlc/methods/<m>/`) subclasses `OVMLCConfig` and `OVMLCPreTrainedModel` and fills the hooks
`encode_image_features`, `score`, and optionally `encode_label_embeddings`, `compute_loss`, `parameter_groups`,
`image_side_modules`, `text_side_modules`, `post_load`, and declares its traits (class attributes read by the
trainer, evaluation and model cards; see docs/architecture.md). Everything users call (`forward`, `encode_labels`,
`predict`, `predict_scores`, `from_clip`, `save_pretrained`, `push_to_hub`) lives here once.

Core imports no layer above it: the model card that `save_pretrained` writes and the upload `push_to_hub` does are
registered by `ovmlc.hub` through `core/hooks.py`; the pipeline file copied next to the weights is read as a file.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from transformers import AutoTokenizer, CLIPConfig, CLIPModel, PreTrainedConfig, PreTrainedModel

from ..files import LABEL_EMBEDDINGS_FILE, PIPELINE_FILE, PIPELINE_IMPL, PIPELINE_TASK
from ..resources import PIPELINE_SOURCE
from . import hooks
from .backbones import (
    image_features,
    load_image_processor,
    module_fingerprint,
    resolve_backbone,
    text_tower_modules,
)
from .images import ImageInput, load_images
from .label_cache import (
    DEFAULT_MAX_LABELS,
    LabelEmbeddingCache,
    default_label_cache_dir,
    read_embeddings_file,
    write_embeddings_file,
)
from .losses import masked_bce_with_logits
from .outputs import MultiLabelOutput, rank_labels, thresholds_from_mapping
from .scoring import Scorer
from .vocabulary import LabelVocabulary


def register_custom_pipeline_in_config(config: PreTrainedConfig) -> None:
    """Record the task in `config.custom_pipelines` so `pipeline(model=repo, trust_remote_code=True)` finds the
    pipeline class in the `pipeline.py` saved next to the weights."""
    config.custom_pipelines = {
        PIPELINE_TASK: {"impl": PIPELINE_IMPL, "pt": ["AutoModel"], "tf": [], "type": "multimodal"}
    }


class OVMLCConfig(PreTrainedConfig):
    r"""
    Fields shared by every ovmlc method.

    clip_config (`CLIPConfig` or `dict`): the wrapped CLIP.
    backbone_name_or_path (`str`): where the CLIP came from (Hub id or folder); used to find its processor files.
    templates (`str` or `list[str]`): prompt templates (a name in `ovmlc/templates/` or a list with `{}`).
    prompt_pool (`"raw"` | `"normalized"`): how several templates are averaged.
    logit_scale, logit_bias (`float`): logits = scale * similarity + bias (scale `None` = CLIP's learned scale).
    label_names (`list[str]`): the label set the model was trained/evaluated on (training + evaluation labels).
    seen_labels, unseen_labels (`list[str]`): the open-vocabulary split used in training.
    label_thresholds (`dict[str, float]`), global_threshold (`float`): calibrated sigmoid-score thresholds.
    """

    model_type = "ovmlc"
    sub_configs_defaults = {"clip_config": CLIPConfig}

    clip_config: dict | CLIPConfig | None = None
    backbone_name_or_path: str | None = None
    templates: str | list[str] | None = "single"
    prompt_pool: str = "raw"
    logit_scale: float | None = None
    logit_bias: float = 0.0
    label_names: list[str] | None = None
    seen_labels: list[str] | None = None
    unseen_labels: list[str] | None = None
    label_thresholds: dict[str, float] | None = None
    global_threshold: float | None = None

    def __post_init__(self, **kwargs):
        if self.prompt_pool not in ("raw", "normalized"):
            raise ValueError(f"prompt_pool must be 'raw' or 'normalized', got {self.prompt_pool!r}")
        super().__post_init__(**kwargs)


class OVMLCPreTrainedModel(PreTrainedModel):
    """Base class: wraps `CLIPModel` as `self.clip` and provides the shared inference API."""

    config: OVMLCConfig
    base_model_prefix = "clip"
    main_input_name = "pixel_values"
    input_modalities = ("image", "text")
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_flex_attn = True
    _supports_attention_backend = True
    # Method traits, read (never guessed) by the trainer, evaluation and model cards (docs/architecture.md):
    # - uses_frozen_image_features: `encode_image_features` depends on frozen weights only (its outputs are cacheable);
    # - augment_allowed: training-time image augmentation is allowed;
    # - scores_depend_on_label_set: a label's score depends on the other labels scored with it (ZSL views then score
    #   the unseen labels alone);
    # - trains_text_side: `encode_label_embeddings` is differentiable in training and its parameters train, so the
    #   trainer encodes the labels every step (a method whose text side trains only in some configurations makes it
    #   a property of the config, as MKT's stage 2).
    uses_frozen_image_features = False
    augment_allowed = True
    scores_depend_on_label_set = False
    trains_text_side = False
    # Top-level modules the method builds itself when a checkpoint lacks them entirely (a CLIP checkpoint has none
    # of them; MKT's prompt learner is new when stage 2 starts from a stage-1 folder): they are initialised by design
    # (`_init_weights`, `post_load`), so transformers' load report does not list them as missing. A checkpoint that
    # holds only part of such a module is still reported.
    modules_created_on_load: tuple[str, ...] = ()

    def __init__(self, config: OVMLCConfig):
        super().__init__(config)
        self.clip = CLIPModel(config.clip_config)
        self.tokenizer = None
        self.image_processor = None
        self._label_cache: LabelEmbeddingCache | None = None
        self._text_fingerprint: str | None = None

    # ------------------------------------------------------------------ hooks (override per method)
    def encode_image_features(self, pixel_values: torch.Tensor) -> dict[str, torch.Tensor]:
        """Image side: `{"image_embeds": [B, D], "patch_embeds": [B, N, D]}` in the joint space by default."""
        return image_features(self.clip, pixel_values)

    def encode_label_embeddings(self, vocabulary: LabelVocabulary) -> torch.Tensor:
        """Text side: `[C, D]` label embeddings (cached; the text tower is frozen in the default)."""
        embeddings = vocabulary.encode(
            self.clip, self.text_tokenizer, cache=self.label_cache, fingerprint=self.text_fingerprint()
        )
        return embeddings.to(self.device)

    def score(
        self, image_features: dict[str, torch.Tensor], label_embeds: torch.Tensor, return_label_maps: bool = False
    ) -> MultiLabelOutput:
        """Logits `[B, C]` (and optionally `label_maps [B, C, h, w]`) from image features and `label_embeds [C, D]`."""
        raise TypeError(f"{type(self).__name__} must implement score()")

    def compute_loss(
        self,
        outputs: MultiLabelOutput,
        labels: torch.Tensor,
        label_mask: torch.Tensor | None,
        image_features: dict[str, torch.Tensor],
    ) -> torch.Tensor:
        """Training loss; `labels`/`label_mask` `[B, C]` in {0, 1}, entries with `label_mask == 0` never count."""
        return masked_bce_with_logits(outputs.logits, labels, label_mask)

    def parameter_groups(
        self, learning_rate: float, weight_decay: float = 0.0, layer_decay: float | None = None
    ) -> list[dict[str, Any]]:
        """Optimizer parameter groups over trainable parameters (no weight decay on biases, norms, 1-d params)."""
        decay, no_decay = [], []
        for name, parameter in self.named_parameters():
            if not parameter.requires_grad:
                continue
            (no_decay if parameter.ndim <= 1 or name.endswith(".bias") else decay).append(parameter)
        groups = [
            {"params": decay, "lr": learning_rate, "weight_decay": weight_decay},
            {"params": no_decay, "lr": learning_rate, "weight_decay": 0.0},
        ]
        return [group for group in groups if group["params"]]

    def post_load(self) -> None:
        """Called after weights are loaded by `from_pretrained`/`from_clip` (e.g. to copy a frozen teacher)."""

    def image_side_modules(self) -> tuple[nn.Module, ...]:
        """Modules whose weights determine `encode_image_features` (keys the trainer's feature cache; the trainer
        refuses the cache when one of their parameters is trainable). Default: CLIP's vision tower + projection."""
        return self.clip.vision_model, self.clip.visual_projection

    def ranking_scores(self) -> contextlib.AbstractContextManager[str | None]:
        """Context in which `forward` gives the scores that paper-style tables rank (mAP, P/R/F1@K), for methods whose
        predicted scores carry something papers do not rank by (CLIP zero-shot's reference prompt). Yields a short
        description of those scores (recorded in metrics.json), or None when they are the predicted scores (the
        default, every trained method)."""
        return contextlib.nullcontext()

    # ------------------------------------------------------------------ forward
    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        image_features: dict[str, torch.Tensor] | None = None,
        label_embeds: torch.Tensor | None = None,
        label_names: Sequence[str] | LabelVocabulary | None = None,
        labels: torch.Tensor | None = None,
        label_mask: torch.Tensor | None = None,
        return_label_maps: bool = False,
        **kwargs,
    ) -> MultiLabelOutput:
        r"""
        pixel_values (`[B, 3, H, W]`): images from `model.image_processor`; or
        image_features (`dict`): precomputed `encode_image_features` outputs (feature cache).
        label_embeds (`[C, D]`): from `encode_labels`; or label_names (encoded here, with gradients if the method
            trains its text side).
        labels, label_mask (`[B, C]`): multi-hot targets and annotation mask (1 = annotated) for the loss.
        """
        if image_features is None:
            if pixel_values is None:
                raise ValueError("forward() needs pixel_values or image_features")
            image_features = self.encode_image_features(pixel_values)
        if label_embeds is None:
            if label_names is None:
                raise ValueError("forward() needs label_embeds (model.encode_labels(names)) or label_names")
            label_embeds = self.encode_labels(label_names)
        outputs = self.score(image_features, label_embeds, return_label_maps=return_label_maps)
        if labels is not None:
            if labels.shape != outputs.logits.shape:
                raise ValueError(f"labels shape {tuple(labels.shape)} != logits shape {tuple(outputs.logits.shape)}")
            outputs.loss = self.compute_loss(outputs, labels, label_mask, image_features)
        return outputs

    # ------------------------------------------------------------------ text side
    @property
    def text_tokenizer(self):
        if self.tokenizer is None:
            source = self.config.backbone_name_or_path or self.name_or_path
            if not source:
                raise ValueError("this model has no tokenizer attached; load it with from_pretrained/from_clip")
            self.tokenizer = AutoTokenizer.from_pretrained(resolve_backbone(source))
        return self.tokenizer

    @property
    def label_cache(self) -> LabelEmbeddingCache:
        """The model's one label-embedding cache (every encode path, the pipeline, evaluation and the Space use it):
        LRU-capped at `DEFAULT_MAX_LABELS` embeddings, persisted under `default_label_cache_dir()`."""
        if self._label_cache is None:
            self._label_cache = LabelEmbeddingCache(default_label_cache_dir())
        return self._label_cache

    def set_label_cache(
        self, directory: str | os.PathLike | None = None, max_labels: int | None = DEFAULT_MAX_LABELS
    ) -> None:
        """Where label embeddings are kept: `directory=None` = memory only; `max_labels` caps how many (least recently
        used dropped first; None = no cap). Embeddings already in memory (e.g. the saved
        `label_embeddings.safetensors`) are kept."""
        previous, self._label_cache = self._label_cache, LabelEmbeddingCache(directory, max_labels=max_labels)
        if previous is not None:
            self._label_cache.merge_from(previous)

    def text_fingerprint(self) -> str:
        """Digest of everything that determines label embeddings (recomputed after training)."""
        if self._text_fingerprint is None or self.training:
            self._text_fingerprint = module_fingerprint(*self.text_side_modules(), extra=type(self).__name__)
        return self._text_fingerprint

    def text_side_modules(self) -> tuple[nn.Module, ...]:
        """Modules whose weights determine label embeddings (methods with prompt vectors add theirs)."""
        return text_tower_modules(self.clip)

    def train(self, mode: bool = True):
        self._text_fingerprint = None  # weights may change while training
        return super().train(mode)

    def vocabulary(self, labels: Sequence[str] | LabelVocabulary) -> LabelVocabulary:
        """`labels` as a `LabelVocabulary` with this model's templates and pooling."""
        if isinstance(labels, LabelVocabulary):
            return labels
        return LabelVocabulary(labels, templates=self.config.templates or "single", pool=self.config.prompt_pool)

    def encode_labels(self, labels: Sequence[str] | LabelVocabulary) -> torch.Tensor:
        """Label embeddings `[C, D]` for a list of names or a `LabelVocabulary` (cached per vocabulary)."""
        return self.encode_label_embeddings(self.vocabulary(labels))

    # ------------------------------------------------------------------ inference API
    @property
    def processor(self):
        if self.image_processor is None:
            source = self.config.backbone_name_or_path or self.name_or_path
            if not source:
                raise ValueError("this model has no image processor attached; load it with from_pretrained/from_clip")
            self.image_processor = load_image_processor(source)
        return self.image_processor

    def preprocess(self, images: ImageInput | Sequence[ImageInput]) -> torch.Tensor:
        """Images (paths, PIL, arrays) → `pixel_values [B, 3, H, W]` on the model's device and dtype."""
        pixel_values = self.processor(images=load_images(images), return_tensors="pt")["pixel_values"]
        return pixel_values.to(device=self.device, dtype=self.dtype)

    def predict_scores(
        self,
        images: ImageInput | Sequence[ImageInput],
        labels: Sequence[str] | LabelVocabulary,
        batch_size: int = 32,
        image_dtype: torch.dtype | str | None = None,
    ) -> np.ndarray:
        """Sigmoid scores `[N, C]` (float32) for images × labels, through `ovmlc.core.scoring.Scorer`: label embeddings
        encoded once, the head in float32; `image_dtype` (e.g. `torch.bfloat16`) runs the image side under autocast.
        For logits too (ranking without sigmoid saturation), use `Scorer(model).score_images(images, labels)`."""
        return Scorer(self, batch_size=batch_size, image_dtype=image_dtype).score_images(images, labels).scores

    def resolve_thresholds(
        self, names: Sequence[str], threshold: float | str | Mapping[str, Any] | None
    ) -> np.ndarray | None:
        """Per-label thresholds `[C]` for `threshold`: a float, `"calibrated"`, None, a dict `{label: threshold}`
        (every label), or a calibration dict `{"label_thresholds": {...}, "global_threshold": t}` as in
        `thresholds.json` (labels it lacks use the global threshold)."""
        if threshold is None:
            return None
        if isinstance(threshold, Mapping):
            return thresholds_from_mapping(names, threshold)
        if isinstance(threshold, str):
            if threshold != "calibrated":
                raise ValueError(f"threshold must be a number, None or 'calibrated', got {threshold!r}")
            calibrated = self.config.label_thresholds or {}
            fallback = self.config.global_threshold
            if not calibrated and fallback is None:
                raise ValueError("this model has no calibrated thresholds (run `ovmlc evaluate --calibrate-split`)")
            missing = [name for name in names if name not in calibrated and fallback is None]
            if missing:
                raise ValueError(f"no calibrated threshold for labels {missing[:10]} and no global threshold")
            return np.array([calibrated.get(name, fallback) for name in names], dtype=np.float32)
        return np.full(len(names), float(threshold), dtype=np.float32)

    def predict(
        self,
        images: ImageInput | Sequence[ImageInput],
        labels: Sequence[str] | LabelVocabulary,
        top_k: int | None = None,
        threshold: float | str | Mapping[str, Any] | None = None,
        batch_size: int = 32,
        image_dtype: torch.dtype | str | None = None,
    ) -> list[list[tuple[str, float]]] | list[tuple[str, float]]:
        """Tag images with any labels.

        Returns, per image, `[(label, score), ...]` sorted by score (highest first; equal scores by logit), keeping
        labels with `score >= threshold` (a float, `"calibrated"` for the stored per-label thresholds, a dict
        `{label: t}`, or the content of a `thresholds.json`) and at most `top_k`. A single image (not in a list) gives a
        single list. `image_dtype` as in `predict_scores`.
        """
        single = not isinstance(images, (list, tuple)) and not (isinstance(images, np.ndarray) and images.ndim == 4)
        vocabulary = self.vocabulary(labels)
        thresholds = self.resolve_thresholds(vocabulary.names, threshold)
        result = Scorer(self, batch_size=batch_size, image_dtype=image_dtype).score_images(images, vocabulary)
        results = rank_labels(result.scores, vocabulary.names, top_k, thresholds, order_by=result.logits)
        return results[0] if single else results

    # ------------------------------------------------------------------ construction and saving
    @classmethod
    def from_clip(
        cls,
        backbone: str | os.PathLike = "synthetic",
        dtype: torch.dtype | str | None = torch.float32,
        revision: str | None = None,
        **config_kwargs,
    ):
        """Build the method around a CLIP checkpoint: a Hub id (`openai/clip-vit-base-patch16`), a local folder laid
        out like one, or `"synthetic"` (the shipped offline CLIP). Extra kwargs set config fields."""
        from .backbones import BackboneNotFoundError

        resolved = resolve_backbone(backbone)
        kwargs = {"revision": revision} if revision else {}
        try:
            clip_config = CLIPConfig.from_pretrained(resolved, **kwargs)
        except OSError as error:
            raise BackboneNotFoundError(f"could not load CLIP backbone {str(backbone)!r}: {error}") from error
        config = cls.config_class(clip_config=clip_config, backbone_name_or_path=str(backbone), **config_kwargs)
        # The checkpoint's un-prefixed CLIP keys load into `self.clip` (base_model_prefix); new modules initialise.
        return cls.from_pretrained(resolved, config=config, dtype=dtype, **kwargs)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *model_args, **kwargs):
        model = super().from_pretrained(pretrained_model_name_or_path, *model_args, **kwargs)
        model.post_load()
        source = resolve_backbone(pretrained_model_name_or_path)
        hub_kwargs = {key: kwargs[key] for key in ("revision", "token", "cache_dir") if kwargs.get(key)}
        try:
            model.tokenizer = AutoTokenizer.from_pretrained(source, **hub_kwargs)
            model.image_processor = load_image_processor(source, **hub_kwargs)
        except (OSError, ValueError):
            pass  # no processor files next to the weights: fall back to config.backbone_name_or_path lazily
        from transformers.utils import cached_file

        embeddings_file = cached_file(
            source, LABEL_EMBEDDINGS_FILE, _raise_exceptions_for_missing_entries=False, **hub_kwargs
        )
        if embeddings_file is not None:
            model.load_label_embeddings(embeddings_file)
        return model.eval()

    def load_label_embeddings(self, path: str | os.PathLike) -> None:
        """Prefill the label cache from a saved `label_embeddings.safetensors` (if it matches this model)."""
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
        if metadata.get("fingerprint") != self.text_fingerprint() or "templates_key" not in metadata:
            return  # embeddings of other weights or templates: recompute instead of trusting them
        self.label_cache.put(metadata["fingerprint"], metadata["templates_key"], read_embeddings_file(path))

    def _adjust_missing_and_unexpected_keys(self, loading_info) -> None:
        """transformers' load report, minus the modules of `modules_created_on_load` missing as a whole."""
        super()._adjust_missing_and_unexpected_keys(loading_info)
        missing = set(loading_info.missing_keys)
        state_keys = list(self.state_dict())
        for module_name in self.modules_created_on_load:
            pattern = re.compile(rf"^{re.escape(module_name)}\.")
            keys = {key for key in state_keys if pattern.match(key)}
            if keys and keys <= missing:
                missing -= keys
        loading_info.missing_keys = missing

    def save_pretrained(self, save_directory: str | os.PathLike, *args, **kwargs):
        """Save weights + config (with `auto_map` and `custom_pipelines`), method code, processor files, the
        pipeline file and the label embeddings of `config.label_names`; then the registered save hooks run (the
        model card of `ovmlc.hub`)."""
        is_main_process = kwargs.get("is_main_process", True)
        register_custom_pipeline_in_config(self.config)
        super().save_pretrained(save_directory, *args, **kwargs)
        if not is_main_process:
            return
        save_directory = Path(save_directory)
        shutil.copy(PIPELINE_SOURCE, save_directory / PIPELINE_FILE)
        if self.tokenizer is not None:
            self.tokenizer.save_pretrained(save_directory)
        if self.image_processor is not None:
            self.image_processor.save_pretrained(save_directory)
        if self.config.label_names:
            vocabulary = self.vocabulary(self.config.label_names)
            with torch.no_grad():
                embeddings = self.encode_labels(vocabulary)
            write_embeddings_file(
                save_directory / LABEL_EMBEDDINGS_FILE,
                vocabulary.names,
                embeddings,
                fingerprint=self.text_fingerprint(),
                templates_key=vocabulary.templates_key,
            )
        hooks.run_save_hooks(self, save_directory)  # e.g. the model card (the trainer refreshes it later)

    def push_to_hub(
        self,
        repo_id: str,
        *,
        commit_message: str | None = None,
        commit_description: str | None = None,
        private: bool | None = None,
        token: bool | str | None = None,
        revision: str | None = None,
        create_pr: bool = False,
        max_shard_size: int | str | None = "50GB",
        tags: list[str] | None = None,
    ):
        """transformers' `push_to_hub`, except that the README it uploads is the generated ovmlc model card (the
        upload is the push function `ovmlc.hub` registers in `core/hooks.py`)."""
        return hooks.push_function()(
            self,
            repo_id,
            commit_message=commit_message,
            commit_description=commit_description,
            private=private,
            token=token,
            revision=revision,
            create_pr=create_pr,
            max_shard_size=max_shard_size,
            tags=tags,
        )

    def print_trainable_parameters(self, print_fn=print) -> dict[str, tuple[int, int]]:
        """A table of trainable vs frozen parameter counts per top-level module; returns the counts."""
        counts: dict[str, list[int]] = {}
        for name, parameter in self.named_parameters():
            top = name.split(".")[0] if not name.startswith("clip.") else ".".join(name.split(".")[:2])
            entry = counts.setdefault(top, [0, 0])
            entry[0 if parameter.requires_grad else 1] += parameter.numel()
        width = max(len(name) for name in counts) if counts else 10
        print_fn(f"{'module':<{width}}  {'trainable':>12}  {'frozen':>12}")
        for name, (trainable, frozen) in counts.items():
            print_fn(f"{name:<{width}}  {trainable:>12,}  {frozen:>12,}")
        total_trainable = sum(value[0] for value in counts.values())
        total_frozen = sum(value[1] for value in counts.values())
        print_fn(f"{'total':<{width}}  {total_trainable:>12,}  {total_frozen:>12,}")
        return {name: (value[0], value[1]) for name, value in counts.items()}

