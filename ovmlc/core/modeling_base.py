"""Base config and base model shared by every ovmlc method.

A method (in `ovmlc/methods/<m>/`) subclasses `OVMLCConfig` and `OVMLCPreTrainedModel` and fills the hooks
`encode_image_features`, `score`, and optionally `encode_label_embeddings`, `compute_loss`, `parameter_groups`,
`image_side_modules`, `text_side_modules`, `post_load`, and declares its traits (class attributes read by the
trainer, evaluation and model cards; see docs/architecture.md). Everything users call (`forward`, `encode_labels`,
`predict`, `predict_scores`, `from_clip`, `save_pretrained`, `push_to_hub`) lives here once.

Core imports no layer above it: the model card that `save_pretrained` writes and the upload `push_to_hub` does are
registered by `ovmlc.hub` through `core/hooks.py`. The code saved next to the weights (Hub remote code) is a flat,
self-contained copy of the model's modules and the pipeline, exported by `code_export.py`; the weights are saved in
one of the layouts of `weights_layout.py` (the whole model, or adapter-only: the method's own weights plus a pinned
reference to the base model they were built from).
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Mapping, Sequence
from contextvars import ContextVar
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from transformers import AutoTokenizer, CLIPConfig, PreTrainedConfig, PreTrainedModel, SiglipConfig

from .._version import __version__
from ..files import (
    CONFIG_FILE,
    LABEL_EMBEDDINGS_FILE,
    PIPELINE_FILE,
    PIPELINE_IMPL,
    PIPELINE_MODULE,
    PIPELINE_TASK,
    WEIGHTS_FILE,
    WEIGHTS_INDEX_FILE,
)
from .backbones import (
    BACKBONE_ALIASES,
    BackboneNotFoundError,
    UnsupportedBackboneError,
    backbone_config_from_dict,
    backbone_family,
    image_features,
    image_side_modules,
    load_backbone_config,
    load_image_processor,
    load_tokenizer,
    module_fingerprint,
    resolve_backbone,
    text_fingerprint_extra,
    text_tower_modules,
)
from .checkpoint_files import check_safetensors_file, missing_config_error, read_config_file
from .code_export import ExportedCode, export_model_code
from .hooks import registered_push_function, run_save_hooks
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
from .vocabulary import LabelVocabulary, load_templates
from .weights_layout import (
    ADAPTER_ONLY,
    WEIGHTS_LAYOUTS,
    WHOLE_MODEL,
    CheckpointRef,
    LayoutPlan,
    WeightsLayoutError,
    WeightsProvenance,
    keys_under,
    plan_layout,
    read_weight_keys,
    record_versions,
    shard_names,
)

# Hub arguments of `from_pretrained` that locate the folder itself (the base model of an adapter-only folder is
# fetched at the revision the folder pins, with the same token / cache / offline settings).
FOLDER_HUB_KWARGS = ("revision", "token", "cache_dir", "local_files_only", "force_download", "proxies", "subfolder")
BASE_HUB_KWARGS = ("token", "cache_dir", "local_files_only", "force_download", "proxies")
# `from_pretrained` arguments about how weights load (everything else is a config field override).
MODEL_LOADING_KWARGS = frozenset(
    {
        "dtype",
        "torch_dtype",
        "device_map",
        "attn_implementation",
        "use_safetensors",
        "trust_remote_code",
        "code_revision",
        "_from_auto",
        "_from_pipeline",
        "max_memory",
        "offload_folder",
        "offload_buffers",
        "quantization_config",
        "key_mapping",
        "variant",
        "ignore_mismatched_sizes",
    }
)
# Keys the load of an adapter-only folder's base does not report as missing: the folder's own file provides them.
_KEYS_LOADED_LATER: ContextVar[frozenset[str]] = ContextVar("ovmlc_keys_loaded_later", default=frozenset())


def register_custom_pipeline_in_config(config: PreTrainedConfig) -> None:
    """Record the task in `config.custom_pipelines` so `pipeline(model=repo, trust_remote_code=True)` finds the
    pipeline class in the `pipeline.py` saved next to the weights."""
    config.custom_pipelines = {
        PIPELINE_TASK: {"impl": PIPELINE_IMPL, "pt": ["AutoModel"], "tf": [], "type": "multimodal"}
    }


class OVMLCConfig(PreTrainedConfig):
    r"""
    Fields shared by every ovmlc method.

    clip_config (`CLIPConfig`, `SiglipConfig` or `dict`): the wrapped vision-language backbone (CLIP or SigLIP; the
        family follows the config's `model_type`, see `core/backbones.py`).
    backbone_name_or_path (`str`): where the backbone came from (Hub id or folder); used to find its processor files.
    backbone_revision (`str`): the commit of `backbone_name_or_path` on the Hub (recorded by `from_clip`).
    templates (`str` or `list[str]`): prompt templates (a name in `ovmlc/templates/` or a list with `{}`).
    prompt_pool (`"raw"` | `"normalized"`): how several templates are averaged.
    logit_scale, logit_bias (`float`): logits = scale * similarity + bias (scale `None` = CLIP's learned scale).
    label_names (`list[str]`): the label set the model was trained/evaluated on (training + evaluation labels).
    seen_labels, unseen_labels (`list[str]`): the open-vocabulary split used in training.
    label_thresholds (`dict[str, float]`), global_threshold (`float`): calibrated sigmoid-score thresholds.
    weights_layout (`"whole_model"` | `"adapter_only"`): what `model.safetensors` holds (written by `save_pretrained`,
        see `weights_layout.py`): every weight, or only the method's own, the modules `base_model_modules` coming
        from `base_model_name_or_path` at commit `base_model_revision` (the CLIP backbone, or an earlier ovmlc model).
    ovmlc_version (`str`): the ovmlc version that saved the folder.
    """

    model_type = "ovmlc"
    sub_configs_defaults = {"clip_config": CLIPConfig}

    clip_config: dict | CLIPConfig | SiglipConfig | None = None
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
    backbone_revision: str | None = None
    weights_layout: str = WHOLE_MODEL
    base_model_name_or_path: str | None = None
    base_model_revision: str | None = None
    base_model_modules: list[str] | None = None
    ovmlc_version: str | None = None

    def __post_init__(self, **kwargs):
        if self.prompt_pool not in ("raw", "normalized"):
            raise ValueError(f"prompt_pool must be 'raw' or 'normalized', got {self.prompt_pool!r}")
        if self.weights_layout not in WEIGHTS_LAYOUTS:
            raise ValueError(f"weights_layout must be one of {WEIGHTS_LAYOUTS}, got {self.weights_layout!r}")
        if isinstance(self.clip_config, dict):  # a saved folder: the backbone family follows its model_type
            self.clip_config = backbone_config_from_dict(self.clip_config)
        super().__post_init__(**kwargs)


def with_own_lr_group(
    groups: list[dict[str, Any]], parameters: list[nn.Parameter], learning_rate: float, multiplier: float
) -> list[dict[str, Any]]:
    """`groups` without `parameters`, plus one group of them at `learning_rate * multiplier` without weight decay (a
    logit scale and bias that need a larger step than the rest)."""
    own = {id(parameter) for parameter in parameters}
    groups = [dict(group, params=[p for p in group["params"] if id(p) not in own]) for group in groups]
    groups = [group for group in groups if group["params"]]
    if parameters:
        groups.append(
            {"params": parameters, "lr": learning_rate * multiplier, "lr_scale": multiplier, "weight_decay": 0.0}
        )
    return groups


class OVMLCPreTrainedModel(PreTrainedModel):
    """Base class: wraps the vision-language backbone (`CLIPModel` or `SiglipModel`) as `self.clip` and provides the
    shared inference API."""

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
    # - zsl_scores_unseen_alone: None = follow `scores_depend_on_label_set`; True / False = the method's ZSL protocol
    #   scores the unseen labels alone / within all labels (ViLD: False); read by
    #   `core.scoring.scores_unseen_labels_alone` only;
    # - uses_object_boxes: the trainer passes the train split's `objects` as `object_boxes [B, K, 4]` / `object_labels
    #   [B, K]` to `forward` (ViLD); produces_boxes: outputs carry regions (`region_boxes`, `region_log_odds`,
    #   `label_boxes`), so evaluation reports box AP / pointing accuracy, the pipeline takes `return_boxes=True` and
    #   the Space draws boxes.
    uses_frozen_image_features = False
    augment_allowed = True
    scores_depend_on_label_set = False
    zsl_scores_unseen_alone: bool | None = None
    uses_object_boxes = False
    produces_boxes = False
    trains_text_side = False
    # Top-level modules the method builds itself when a checkpoint lacks them entirely (a CLIP checkpoint has none
    # of them; MKT's prompt learner is new when stage 2 starts from a stage-1 folder): they are initialised by design
    # (`_init_weights`, `post_load`), so transformers' load report does not list them as missing. A checkpoint that
    # holds only part of such a module is still reported.
    modules_created_on_load: tuple[str, ...] = ()
    # Modules (dotted paths, top-level in practice) that the method takes unchanged from the checkpoint it is built
    # from: the frozen CLIP backbone, and for a later training stage what the earlier stage trained (MKT stage 2: the
    # student). The adapter-only layout leaves them out of `model.safetensors` when they are unchanged since loading
    # (see `weights_layout.py`); may be a property of the config.
    inherited_modules: tuple[str, ...] = ("clip",)
    # Backbone families (`core/backbones.py`) the method works with; building it on another is an error naming the
    # method and the backbone. A method opts in once it is tested on the family (docs/siglip.md).
    supported_backbone_families: tuple[str, ...] = ("clip",)
    # Why a family is not supported (shown in that error), per family name.
    unsupported_backbone_reasons: dict[str, str] = {}

    def __init__(self, config: OVMLCConfig):
        super().__init__(config)
        family = backbone_family(config.clip_config)
        if family.name not in self.supported_backbone_families:
            raise UnsupportedBackboneError(self._unsupported_backbone_message(family.name, config))
        self.clip = family.model_class(config.clip_config)
        self.tokenizer = None
        self.image_processor = None
        self._label_cache: LabelEmbeddingCache | None = None
        self._text_fingerprint: str | None = None
        self._weights_provenance: WeightsProvenance | None = None

    @classmethod
    def _unsupported_backbone_message(cls, family_name: str, config: OVMLCConfig) -> str:
        where = f" ({config.backbone_name_or_path})" if config.backbone_name_or_path else ""
        reason = cls.unsupported_backbone_reasons.get(family_name)
        return (
            f"{cls.__name__} cannot use a {family_name} backbone{where}"
            + (f": {reason}" if reason else "")
            + f". Backbone families this method supports: {list(cls.supported_backbone_families)}"
        )

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
        refuses the cache when one of their parameters is trainable). Default: the backbone's vision tower (+ CLIP's
        projection)."""
        return image_side_modules(self.clip)

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
            self.tokenizer = load_tokenizer(source, backbone_family(self.clip))
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
            extra = text_fingerprint_extra(self.clip, type(self).__name__)  # CLIP / SigLIP tables never mix
            self._text_fingerprint = module_fingerprint(*self.text_side_modules(), extra=extra)
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
        """Build the method around a CLIP or SigLIP checkpoint: a Hub id (`openai/clip-vit-base-patch16`,
        `google/siglip2-base-patch16-224`), a local folder laid out like one, or `"synthetic"` (the shipped offline
        CLIP). Extra kwargs set config fields. A method that cannot use the backbone's family says so."""
        resolved = resolve_backbone(backbone)
        kwargs = {"revision": revision} if revision else {}
        clip_config = load_backbone_config(backbone, **kwargs)
        config = cls.config_class(clip_config=clip_config, backbone_name_or_path=str(backbone), **config_kwargs)
        # The checkpoint's un-prefixed CLIP keys load into `self.clip` (base_model_prefix); new modules initialise.
        model = cls.from_pretrained(resolved, config=config, dtype=dtype, **kwargs)
        backbone_ref = model._weights_provenance.chain[0]
        model.config.backbone_revision = backbone_ref.revision
        # the name users gave (a Hub id, or the alias), not the resolved folder, is what a saved folder refers to
        model._weights_provenance.chain[0] = CheckpointRef(str(backbone), backbone_ref.revision, "backbone")
        return model

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *model_args, **kwargs):
        """transformers' `from_pretrained`, plus: folders in the adapter-only layout (the base model is loaded from
        the reference the folder pins, then the folder's own weights, strictly), peft adapters of the backbone
        (`load_peft_adapters`), the processor files and label embeddings next to the weights, and a record of where
        each weight came from (what lets `save_pretrained` leave unchanged inherited modules out)."""
        reference_load = kwargs.pop("_ovmlc_reference_load", False)
        kwargs.pop("adapter_kwargs", None)  # peft adapters are loaded by `load_peft_adapters`, never by transformers
        output_loading_info = kwargs.pop("output_loading_info", False)
        name = str(pretrained_model_name_or_path)
        source = resolve_backbone(name)
        hub_kwargs = {key: kwargs[key] for key in FOLDER_HUB_KWARGS if kwargs.get(key) is not None}
        folder_config, commit = read_folder_config(source, hub_kwargs)
        if not folder_config and kwargs.get("config") is None and Path(source).is_dir():
            raise missing_config_error(source)  # not transformers' "Should have a `model_type` key"
        loading_info = {"missing_keys": [], "unexpected_keys": [], "mismatched_keys": [], "error_msgs": []}
        if folder_config.get("weights_layout") == ADAPTER_ONLY:
            model = cls._from_adapter_only_folder(name, source, folder_config, commit, model_args, kwargs, hub_kwargs)
        else:
            try:
                model, loading_info = super().from_pretrained(source, *model_args, output_loading_info=True, **kwargs)
            except Exception:
                _check_weight_files(source, hub_kwargs)  # a damaged file: an error naming it, not safetensors' own
                raise
            stored = model._stored_keys(source, hub_kwargs)  # before post_load may attach adapters
            model.post_load()
            model.load_peft_adapters(source, hub_kwargs)
            kind = "ovmlc" if str(folder_config.get("model_type", "")).startswith("ovmlc") else "backbone"
            model._weights_provenance = WeightsProvenance([CheckpointRef(name, commit, kind)], [stored])
        model._weights_provenance.versions = record_versions(model.weights_for_saving())
        if not reference_load:
            model._attach_files_from(source, hub_kwargs)
        model.eval()
        return (model, loading_info) if output_loading_info else model

    @classmethod
    def _from_adapter_only_folder(cls, name, source, folder_config, commit, model_args, kwargs, hub_kwargs):
        """Load the base model the folder pins (recursively: it may itself be adapter-only), then the folder's own
        weights; a key missing from either, or one the folder should not hold, is an error naming it."""
        config = kwargs.pop("config", None)
        loading = {key: kwargs.pop(key) for key in list(kwargs) if key in MODEL_LOADING_KWARGS}
        for key in FOLDER_HUB_KWARGS:
            kwargs.pop(key, None)
        if config is None:
            config, kwargs = cls.config_class.from_pretrained(source, return_unused_kwargs=True, **hub_kwargs, **kwargs)
        if kwargs:
            raise TypeError(f"{cls.__name__}.from_pretrained({name!r}): unexpected arguments {sorted(kwargs)}")
        base_name = folder_config.get("base_model_name_or_path")
        base_revision = folder_config.get("base_model_revision")
        base_modules = list(folder_config.get("base_model_modules") or [])
        if not base_name or not base_modules:
            raise WeightsLayoutError(
                f"{name}/{CONFIG_FILE}: weights_layout is 'adapter_only' but base_model_name_or_path / "
                "base_model_modules are missing: the folder does not say where the rest of the model comes from"
            )
        own = _load_weight_files(_weight_files(source, hub_kwargs, name))
        base_kwargs = {key: hub_kwargs[key] for key in BASE_HUB_KWARGS if key in hub_kwargs}
        if base_revision:
            base_kwargs["revision"] = base_revision
        token = _KEYS_LOADED_LATER.set(frozenset(own))
        try:
            model = cls.from_pretrained(
                base_name, *model_args, config=config, _ovmlc_reference_load=True, **base_kwargs, **loading
            )
        except (OSError, ValueError) as error:
            if isinstance(error, WeightsLayoutError):
                raise
            message = _base_not_found_message(name, base_name, base_revision, base_modules, error)
            raise BackboneNotFoundError(message) from error
        finally:
            _KEYS_LOADED_LATER.reset(token)
        state_keys = set(model.weights_for_saving())
        inherited = set().union(*(keys_under(state_keys, module) for module in base_modules))
        problems = []
        unexpected = sorted((set(own) - state_keys) | (set(own) & inherited))
        if unexpected:
            problems.append(f"unexpected keys {unexpected[:8]} (not weights of this model, or of its base modules)")
        not_in_base = sorted(inherited - model._weights_provenance.provided_by(0))
        if not_in_base:
            problems.append(f"the base model {base_name} does not hold {not_in_base[:8]}")
        built = {
            key
            for module in model.modules_created_on_load
            if not keys_under(own, module)
            for key in keys_under(state_keys, module)
        }  # modules the method builds itself when absent
        missing = sorted(state_keys - inherited - set(own) - built)
        if missing:
            problems.append(f"missing keys {missing[:8]}")
        if problems:
            raise WeightsLayoutError(f"{name}: adapter-only weights do not fit {cls.__name__}: " + "; ".join(problems))
        with torch.no_grad():
            model.load_state_dict(own, strict=False)
        model.load_peft_adapters(source, hub_kwargs)
        model._weights_provenance = model._weights_provenance.nest(CheckpointRef(name, commit, "ovmlc"), set(own))
        model.config._name_or_path = name
        model.name_or_path = name
        return model

    def _stored_keys(self, source: str, hub_kwargs: dict) -> set[str]:
        """The model keys a checkpoint folder holds (its safetensors headers; a CLIP checkpoint's keys map under
        `base_model_prefix`)."""
        try:
            files = _weight_files(source, hub_kwargs, source)
        except WeightsLayoutError:
            return set()
        state_keys = set(self.state_dict())
        stored = set()
        for key in read_weight_keys(files):
            for candidate in (key, f"{self.base_model_prefix}.{key}"):
                if candidate in state_keys:
                    stored.add(candidate)
                    break
        return stored

    def _attach_files_from(self, source: str, hub_kwargs: dict) -> None:
        """Tokenizer, image processor and saved label embeddings of the folder (else the backbone's, lazily)."""
        hub_kwargs = {key: hub_kwargs[key] for key in ("revision", "token", "cache_dir") if key in hub_kwargs}
        try:
            # `config=`: AutoTokenizer would otherwise load the folder's config, whose auto_map (remote code) makes it
            # ask for trust_remote_code (a 15 s prompt) when ovmlc's classes are not registered.
            tokenizer = AutoTokenizer.from_pretrained(source, config=self.config, **hub_kwargs)
            self.tokenizer = backbone_family(self.clip).prepare_tokenizer(tokenizer)
            self.image_processor = load_image_processor(source, **hub_kwargs)
        except (OSError, ValueError):
            pass  # no processor files next to the weights: fall back to config.backbone_name_or_path lazily
        from transformers.utils import cached_file

        embeddings_file = cached_file(
            source,
            LABEL_EMBEDDINGS_FILE,
            _raise_exceptions_for_missing_entries=False,
            _raise_exceptions_for_connection_errors=False,
            **hub_kwargs,
        )
        if embeddings_file is not None:
            self.load_label_embeddings(embeddings_file)

    def load_label_embeddings(self, path: str | os.PathLike) -> None:
        """Prefill the label cache from a saved `label_embeddings.safetensors` (if it matches this model)."""
        from safetensors import safe_open

        try:
            check_safetensors_file(path)
        except ValueError as error:
            raise type(error)(f"{error}. It only caches label embeddings: deleting it is safe") from None
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
        if metadata.get("fingerprint") != self.text_fingerprint() or "templates_key" not in metadata:
            return  # embeddings of other weights or templates: recompute instead of trusting them
        self.label_cache.put(metadata["fingerprint"], metadata["templates_key"], read_embeddings_file(path))

    def _adjust_missing_and_unexpected_keys(self, loading_info) -> None:
        """transformers' load report, minus the modules of `modules_created_on_load` missing as a whole and the keys
        an adapter-only folder loads after its base."""
        super()._adjust_missing_and_unexpected_keys(loading_info)
        missing = set(loading_info.missing_keys) - _KEYS_LOADED_LATER.get()
        state_keys = list(self.state_dict())
        for module_name in self.modules_created_on_load:
            pattern = re.compile(rf"^{re.escape(module_name)}\.")
            keys = {key for key in state_keys if pattern.match(key)}
            if keys and keys <= missing:
                missing -= keys
        loading_info.missing_keys = missing

    # ------------------------------------------------------------------ peft adapters of the backbone (hooks)
    def state_dict_for_saving(self, state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The weights `model.safetensors` holds, by the names it holds them under: a method with peft adapters drops
        the adapters' weights (saved by `save_peft_adapters`) and gives the adapted layers' base weights their
        original names back. Keeps the tensors themselves (their version counters matter)."""
        return state_dict

    def weights_for_saving(self) -> dict[str, torch.Tensor]:
        """`state_dict_for_saving` of the live parameters and buffers: what layouts, provenance and strict loading
        compare."""
        return self.state_dict_for_saving(self.state_dict(keep_vars=True))

    def save_peft_adapters(self, directory: Path, plan: LayoutPlan) -> None:
        """Write peft adapters of the backbone next to the weights (CLIP-FT LoRA)."""

    def load_peft_adapters(self, source: str, hub_kwargs: dict) -> None:
        """Load peft adapters saved by `save_peft_adapters` (after the weights)."""

    # ------------------------------------------------------------------ saving
    def weights_layout_plan(self, save_backbone: bool | None = None) -> LayoutPlan:
        """The layout `save_pretrained(save_backbone=...)` would write, and why (`plan.reason`)."""
        return plan_layout(self.weights_for_saving(), self.inherited_modules, self._weights_provenance, save_backbone)

    def export_code(self) -> ExportedCode:
        """The flat, self-contained Hub code of this model (see `code_export.py`)."""
        return export_model_code(
            type(self),
            type(self.config),
            PIPELINE_MODULE,
            fetch_pipeline=self._fetch_pipeline_file,
            pipeline_file=PIPELINE_FILE,
        )

    def _fetch_pipeline_file(self) -> Path | None:
        """The pipeline file of the folder or Hub repo this model was loaded from (re-saving remote code)."""
        from transformers.utils import cached_file

        source = self.name_or_path
        if not source:
            return None
        provenance = self._weights_provenance
        revision = provenance.chain[0].revision if provenance is not None else None
        path = cached_file(
            source,
            PIPELINE_FILE,
            revision=revision,
            _raise_exceptions_for_missing_entries=False,
            _raise_exceptions_for_connection_errors=False,
        )
        return Path(path) if path else None

    def save_pretrained(self, save_directory: str | os.PathLike, *args, save_backbone: bool | None = None, **kwargs):
        """Save weights + config (with `auto_map` and `custom_pipelines`), the flat method code, processor files,
        the label embeddings of `config.label_names`; then the registered save hooks run (the model card of
        `ovmlc.hub`).

        `save_backbone`: `None` (default) writes the adapter-only layout when the inherited modules are unchanged
        since they were loaded from a Hub id at a known commit, else the whole model; `True` always the whole model;
        `False` adapter-only wherever possible (an error if nothing can be left out). See `weights_layout.py`."""
        is_main_process = kwargs.get("is_main_process", True)
        # Before anything is written: code a Hub user could not run fails here. A class never registered for remote
        # code (`register_for_auto_class`, every method does) gets no code and no auto_map, as in transformers.
        code = self.export_code() if self.is_remote_code() else None
        plan = self.weights_layout_plan(save_backbone)
        self._record_saved_config(plan)
        state_dict = kwargs.pop("state_dict", None)
        state_dict = self.state_dict_for_saving(self.state_dict() if state_dict is None else dict(state_dict))
        if plan.layout == ADAPTER_ONLY:
            inherited = set().union(*(keys_under(state_dict, module) for module in plan.base_modules))
            state_dict = {key: value for key, value in state_dict.items() if key not in inherited}
        super().save_pretrained(save_directory, *args, state_dict=state_dict, **kwargs)
        if not is_main_process:
            return
        save_directory = Path(save_directory)
        if not state_dict:  # nothing of its own (e.g. CLIP zero-shot): still one weights file, empty
            from safetensors.torch import save_file

            save_file({}, str(save_directory / WEIGHTS_FILE), metadata={"format": "pt"})
        if code is not None:
            code.write(save_directory)
        self.save_peft_adapters(save_directory, plan)
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
        run_save_hooks(self, save_directory)  # e.g. the model card (the trainer refreshes it later)

    def _record_saved_config(self, plan: LayoutPlan) -> None:
        """What config.json records about the saved folder: the layout and its base, the ovmlc version, the pipeline
        task, and the prompt templates as a list (a Hub user has no template files)."""
        config = self.config
        register_custom_pipeline_in_config(config)
        config.ovmlc_version = __version__
        config.weights_layout = plan.layout
        adapter_only = plan.layout == ADAPTER_ONLY
        config.base_model_name_or_path = plan.base.name_or_path if adapter_only else None
        config.base_model_revision = plan.base.revision if adapter_only else None
        config.base_model_modules = list(plan.base_modules) if adapter_only else None
        if isinstance(config.templates, (str, os.PathLike)):
            config.templates = load_templates(config.templates)

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
        upload is the push function `ovmlc.hub` registers in `core/hooks.py`; the flat remote-code copy of a model,
        where ovmlc is absent, uses transformers' own)."""
        push = registered_push_function()
        if push is None:
            push = PreTrainedModel.push_to_hub
        return push(
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


def read_folder_config(source: str, hub_kwargs: dict) -> tuple[dict[str, Any], str | None]:
    """The folder's config.json (empty if there is none; damaged: `ModelLoadError` naming it) and its Hub
    commit (None for a local folder)."""
    from transformers.utils import cached_file, extract_commit_hash

    path = cached_file(
        source,
        CONFIG_FILE,
        _raise_exceptions_for_missing_entries=False,
        _raise_exceptions_for_connection_errors=False,
        **hub_kwargs,
    )
    if path is None:
        return {}, None
    try:
        config = read_config_file(path)  # damaged JSON: an error naming the file, the line and the problem
    except OSError:
        return {}, None
    return config, extract_commit_hash(path, None)


def _weight_files(source: str, hub_kwargs: dict, name: str) -> list[str]:
    """Local paths of the folder's `model.safetensors` (or of the shards its index lists)."""
    from transformers.utils import cached_file

    lookup = {"_raise_exceptions_for_missing_entries": False, **hub_kwargs}
    single = cached_file(source, WEIGHTS_FILE, **lookup)
    if single is not None:
        return [single]
    index = cached_file(source, WEIGHTS_INDEX_FILE, **lookup)
    if index is None:
        raise WeightsLayoutError(f"{name}: no {WEIGHTS_FILE} (nor {WEIGHTS_INDEX_FILE})")
    return [cached_file(source, shard, **hub_kwargs) for shard in shard_names(index)]


def _check_weight_files(source: str, hub_kwargs: dict) -> None:
    """Raise `ModelLoadError` naming the first damaged safetensors file of the folder, if any."""
    try:
        files = _weight_files(source, hub_kwargs, source)
    except (WeightsLayoutError, OSError):
        return
    for path in files:
        check_safetensors_file(path)


def _load_weight_files(files: list[str]) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    weights: dict[str, torch.Tensor] = {}
    for path in files:
        check_safetensors_file(path)
        weights.update(load_file(path))
    return weights


def _base_not_found_message(name: str, base: str, revision: str | None, modules: list[str], error: Exception) -> str:
    from huggingface_hub import constants

    where = f"{base!r}" + (f" at revision {revision}" if revision else "")
    offline = " (it is set now)" if constants.HF_HUB_OFFLINE else ""
    aliases = ", ".join(BACKBONE_ALIASES)
    return (
        f"{name}: this folder is in the adapter-only layout: it stores only the method's own weights, and "
        f"{', '.join(modules)} come from its base model {where}, which could not be loaded ({error}). To fix: let "
        f"huggingface_hub reach the Hub so the base model can be downloaded (network access; unset HF_HUB_OFFLINE"
        f"{offline}; check HF_ENDPOINT, and HF_TOKEN for a private repo), or put the base model in the local Hub "
        f"cache first; a local base folder ({aliases} included) must exist on this machine. Or re-save the model "
        "with `save_pretrained(..., save_backbone=True)` so that its folder holds the whole model."
    )
