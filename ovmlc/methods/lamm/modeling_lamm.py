"""LAMM (Label Alignment for Multi-Modal prompt learning) as a Hub-native model.

Gao et al., "LAMM: Label Alignment for Multi-Modal Prompt Learning", AAAI 2024. Written from the paper and the notes
in `docs/methods.md`; no code copied from the official repo. Built on the shared prompt mechanism (`ovmlc.prompting`,
`label_tokens: learnable`).
"""

import copy
import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import initialization as init

from ovmlc.core.backbones import image_features as clip_image_features
from ovmlc.core.backbones import (
    logit_scale_and_bias,
    module_fingerprint,
    patch_grid_size,
    text_token_embedding,
    text_tower_modules,
)
from ovmlc.core.modeling_base import OVMLCPreTrainedModel, with_own_lr_group
from ovmlc.core.outputs import MultiLabelOutput
from ovmlc.core.vocabulary import LabelVocabulary, normalize_label
from ovmlc.methods.coop.modeling_coop import CoOpFamilyModel, prompt_family_loss
from ovmlc.methods.dualcoop.modeling_dualcoop import (
    NEGATIVE,
    POSITIVE,
    dense_region_features,
    dualcoop_logits,
    select_regions,
    spatial_label_maps,
)
from ovmlc.prompting.configuration_prompting import PromptLearningConfig
from ovmlc.prompting.prompt_learner import PromptLearner
from ovmlc.prompting.prompt_mixin import PromptLearningMixin

from .configuration_lamm import LAMMConfig
from .losses_lamm import (
    distillation_loss,
    feature_alignment_loss,
    multi_label_feature_pairs,
    single_label_cross_entropy,
    single_label_feature_pairs,
    single_label_targets,
)

# Where the coop head's ASL clamps its logs (the transplant's choice; DualCoOp's code clamps at 1e-6).
LAMM_ASL_LOG_EPS = 1e-8


@dataclass
class LAMMOutput(MultiLabelOutput):
    """`MultiLabelOutput` plus the detached terms of the training loss (present when a loss was computed):
    task_loss (ASL/BCE or CE), param_loss (L_param), feature_loss (L_feat), kd_loss (L_kd), unweighted."""

    task_loss: torch.FloatTensor | None = None
    param_loss: torch.FloatTensor | None = None
    feature_loss: torch.FloatTensor | None = None
    kd_loss: torch.FloatTensor | None = None


# ----------------------------------------------------------------------------------------------------------------------
# Heads: label embeddings + image features -> logits. Pluggable, so that LAMM's label tokens sit on top of CoOp's
# scaled cosine or DualCoOp's class-specific region aggregation.
# ----------------------------------------------------------------------------------------------------------------------


class LAMMHead(nn.Module):
    """Turns `image_features` (from `encode_image_features`) and label embeddings `[C, D]` (`[C, S, D]` for
    `num_prompt_sets = S > 1`) into logits `[B, C]` whose sigmoid is each label's score, and optionally
    `label_maps [B, C, h, w]`. Its parameters live under `head.` and are trained when `train_logit_params` says so."""

    num_prompt_sets: int = 1
    # Config fields the head reads besides its weights: models that differ in them are not merged.
    settings_keys: tuple[str, ...] = ()

    def __init__(self, config: LAMMConfig, clip):
        super().__init__()

    def initialize(self, config: LAMMConfig, clip) -> None:
        """Set the initial values of the head's tensors (called by the model's `_init_weights`)."""

    def task_loss(
        self, logits: torch.Tensor, labels: torch.Tensor, label_mask: torch.Tensor | None, config: LAMMConfig
    ) -> torch.Tensor:
        """The multi-label task loss on `logits [B, C]`: the prompt family's ASL (LAMM's transplant: log clamped at
        1e-8) or masked BCE over sigmoid scores, times `loss_weight`."""
        return prompt_family_loss(logits, labels, label_mask, config, eps=LAMM_ASL_LOG_EPS)

    def check_trainable(self, model: "LAMMModel") -> None:
        """Raise a `ValueError` when training `model` through this head cannot learn anything (default: never)."""

    def image_features(self, clip, pixel_values: torch.Tensor) -> dict[str, torch.Tensor]:
        """What the head scores, from the frozen CLIP (the model's `encode_image_features`, cacheable): by default
        the global and patch embeddings in the joint space."""
        return clip_image_features(clip, pixel_values)

    def image_feature_settings(self) -> dict:
        """Settings `image_features` depends on besides the CLIP weights (the feature-cache key)."""
        return {}

    def forward(
        self, image_features: dict[str, torch.Tensor], label_embeds: torch.Tensor, return_label_maps: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        raise TypeError(f"{type(self).__name__} must implement forward()")


class CoOpCosineHead(LAMMHead):
    """CoOp / LAMM: logits = scale * cos(global image embedding, prompt embedding) + bias. The scale starts at CLIP's
    learned temperature (or `logit_scale`), the bias at `logit_bias`; both stay fixed unless `train_logit_params`
    (single-label: fixed, as in the paper; the bias cancels in the softmax)."""

    def __init__(self, config: LAMMConfig, clip):
        super().__init__(config, clip)
        self.log_scale = nn.Parameter(torch.zeros(()))
        self.bias = nn.Parameter(torch.zeros(()))
        self.grid = patch_grid_size(clip)

    def initialize(self, config: LAMMConfig, clip) -> None:
        backbone_bias = logit_scale_and_bias(clip)[1]  # SigLIP's learned bias; None for CLIP
        if config.logit_scale is not None:
            init.constant_(self.log_scale, math.log(float(config.logit_scale)))
        elif backbone_bias is None:
            init.copy_(self.log_scale, clip.logit_scale.detach().clamp(max=math.log(100.0)))
        else:  # SigLIP: its own (uncapped) scale and its bias, the pretrained sigmoid head as it is
            init.copy_(self.log_scale, clip.logit_scale.detach().reshape(()))
        if config.logit_scale is None and backbone_bias is not None:
            init.copy_(self.bias, backbone_bias.detach().reshape(()))
        else:
            init.constant_(self.bias, float(config.logit_bias))

    def forward(self, image_features, label_embeds, return_label_maps=False):
        image_embeds = image_features["image_embeds"]  # [B, D]
        label_embeds = F.normalize(label_embeds.to(image_embeds.dtype), dim=-1)  # [C, D]
        scale = self.log_scale.exp()
        logits = scale * F.normalize(image_embeds, dim=-1) @ label_embeds.T + self.bias  # [B, C]
        label_maps = None
        if return_label_maps and "patch_embeds" in image_features:
            patches = F.normalize(image_features["patch_embeds"], dim=-1)  # [B, N, D]
            dense = scale * patches @ label_embeds.T + self.bias  # [B, N, C]
            label_maps = dense.transpose(1, 2).reshape(dense.shape[0], -1, *self.grid)  # [B, C, h, w]
        return logits, label_maps


class DualCoOpRegionHead(LAMMHead):
    """DualCoOp's head under LAMM's label tokens: label embeddings `[C, 2, D]` (negative, positive prompt, both with
    the label's tokens), class-specific region aggregation over dense CLIP tokens guided by the positive prompt
    (`dualcoop_logits`), `logits = pos - neg` (its sigmoid is the 2-way softmax's positive probability), DualCoOp's
    task loss (`prompt_family_loss`: ASL on the 2-way softmax as coded) and the positive prompt's spatial weights as
    label maps. No parameters: the region and aggregation scales are fixed (`region_logit_scale`,
    `aggregated_logit_scale`, DualCoOp's hard-coded 20 and 5)."""

    num_prompt_sets = 2
    settings_keys = ("dense_features", "include_global_token", "region_logit_scale", "aggregated_logit_scale")

    def __init__(self, config: LAMMConfig, clip):
        super().__init__(config, clip)
        self.dense_features = config.dense_features
        self.include_global_token = bool(config.include_global_token)
        self.region_logit_scale = float(config.region_logit_scale)
        self.aggregated_logit_scale = float(config.aggregated_logit_scale)

    def image_features(self, clip, pixel_values):
        return dense_region_features(clip, pixel_values, self.dense_features)  # {"dense_embeds": [B, 1 + N, D]}

    def image_feature_settings(self) -> dict:
        return {"dense_features": self.dense_features}

    def forward(self, image_features, label_embeds, return_label_maps=False):
        regions = select_regions(image_features, self.include_global_token, "LAMM's dualcoop head")  # [B, R, D]
        prompts = CoOpFamilyModel.prompt_sets(label_embeds, self.num_prompt_sets)  # [C, 2, D]
        logits, _, weights = dualcoop_logits(
            regions, prompts, self.region_logit_scale, self.aggregated_logit_scale
        )  # [B, C], _, [B, C, R]
        label_maps = None
        if return_label_maps and self.dense_features != "global":
            label_maps = spatial_label_maps(weights, self.include_global_token)  # [B, C, h, w]
        return logits, label_maps

    def task_loss(self, logits, labels, label_mask, config):
        return prompt_family_loss(logits, labels, label_mask, config)

    def check_trainable(self, model: "LAMMModel") -> None:
        """With frozen contexts that are equal for both prompt sets (e.g. both from the words "a photo of a"), each
        label's two prompts are the same text: its logit is 0 whatever the label tokens, and nothing trains."""
        context = getattr(model.prompt_learner, "ctx", None)  # [2, n_ctx, H] (negative, positive)
        if context is None or context.requires_grad:
            return
        if torch.equal(context[NEGATIVE], context[POSITIVE]):
            raise ValueError(
                "LAMM's dualcoop head with train_context: false and equal negative and positive contexts: every "
                "label's two prompts are the same text, so its logit (pos - neg) is 0 whatever its label tokens. Set "
                "train_context: true (DualCoOp + LAMM), or start from a trained DualCoOp's contexts"
            )


# name -> head class: LAMM's label tokens on CoOp's scaled cosine or on DualCoOp's region aggregation.
LAMM_HEADS: dict[str, type[LAMMHead]] = {"coop": CoOpCosineHead, "dualcoop": DualCoOpRegionHead}


def register_lamm_head(name: str, head_class: type[LAMMHead], replace: bool = False) -> None:
    """Make `head_class` available as `LAMMConfig.head = name`."""
    if name in LAMM_HEADS and not replace:
        raise ValueError(f"a LAMM head named {name!r} is already registered ({LAMM_HEADS[name].__name__})")
    LAMM_HEADS[name] = head_class


def build_lamm_head(config: LAMMConfig, clip) -> LAMMHead:
    if config.head not in LAMM_HEADS:
        raise ValueError(f"LAMMConfig.head: unknown head {config.head!r}; available: {', '.join(sorted(LAMM_HEADS))}")
    head = LAMM_HEADS[config.head](config, clip)
    sets = PromptLearningConfig.from_dict(config.prompt_learning).num_prompt_sets
    if sets != head.num_prompt_sets:
        raise ValueError(
            f"LAMMConfig.prompt_learning.num_prompt_sets={sets} but head {config.head!r} scores "
            f"{head.num_prompt_sets} prompt set(s)"
        )
    return head


# ----------------------------------------------------------------------------------------------------------------------
# The model
# ----------------------------------------------------------------------------------------------------------------------


class LAMMModel(PromptLearningMixin, OVMLCPreTrainedModel):
    """LAMM: frozen CLIP, prompt `[SOT] ctx ("a photo of a") + label tokens + rest of the name + "." [EOT]`; the
    first `min_len` word-piece embeddings of each trained label are learnable (`prompt_learner.label_tokens`, with the
    frozen copy `prompt_learner.label_tokens_init`), the context trains too with `train_context` (CoOp + LAMM).

    Labels without learned tokens (unseen labels, or any label outside `prompt_learning.class_names`) are encoded
    with their original name tokens and the current context: with the context frozen that is exactly CLIP's
    zero-shot prompt "a photo of a {label}.". Image features come from frozen weights only (cacheable).
    """

    config: LAMMConfig
    uses_frozen_image_features = True
    scores_depend_on_label_set = False
    # Read by the trainer (label embeddings re-encoded with gradients every step).
    trains_text_side = True
    # Text side through the backbone layer (fixed 64-token padding on SigLIP); the dualcoop head's regions are
    # SigLIP's value-path tokens, as DualCoOp's.
    supported_backbone_families = ("clip", "siglip")
    # The frozen CLIP is inherited from the backbone: adapter-only saves hold the prompt learner and the head only.
    inherited_modules = ("clip",)
    _keys_to_ignore_on_load_missing = [r"^prompt_learner\.", r"^head\."]

    def __init__(self, config: LAMMConfig):
        super().__init__(config)
        resolved = self.build_prompt_learner(PromptLearningConfig.from_dict(config.prompt_learning))
        config.prompt_learning = resolved.to_dict()
        self.head = build_lamm_head(config, self.clip)
        self.post_init()
        self._freeze()

    # ------------------------------------------------------------------ set-up
    def _freeze(self) -> None:
        """Everything frozen except the label tokens, the context (`train_context`) and the head's scale and bias
        (`train_logit_params`)."""
        self.requires_grad_(False)
        learner = self.prompt_learner
        if isinstance(getattr(learner, "label_tokens", None), nn.Parameter):
            learner.label_tokens.requires_grad_(True)
        if self.config.train_context:
            for name in ("ctx", "ctx_class"):
                tensor = getattr(learner, name, None)
                if isinstance(tensor, nn.Parameter):
                    tensor.requires_grad_(True)
        self.head.requires_grad_(self.config.trains_logit_params)

    def post_load(self) -> None:
        self._freeze()

    def train(self, mode: bool = True):
        super().train(mode)
        self.clip.eval()  # frozen towers
        return self

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)  # the prompt learner is initialised by PromptLearningMixin
        if isinstance(module, LAMMHead) and module is getattr(self, "head", None):
            module.initialize(self.config, self.clip)

    @property
    def has_label_tokens(self) -> bool:
        return self.prompt_learning_config.label_tokens == "learnable"

    @property
    def class_names(self) -> tuple[str, ...]:
        """The labels that own learned label tokens (in parameter order)."""
        return self.prompt_learner.class_names

    # ------------------------------------------------------------------ image side
    def image_feature_settings(self) -> dict:
        """The config settings `encode_image_features` depends on (the trainer's feature-cache key): the head's
        (none for `coop`), so shots, losses and prompt settings share one cache."""
        return {"head": self.config.head, **self.head.image_feature_settings()}

    def encode_image_features(self, pixel_values: torch.Tensor) -> dict[str, torch.Tensor]:
        with torch.no_grad():  # frozen image tower
            return self.head.image_features(self.clip, pixel_values.to(self.dtype))

    # ------------------------------------------------------------------ scoring and losses
    def score(self, image_features, label_embeds, return_label_maps=False) -> LAMMOutput:
        logits, label_maps = self.head(image_features, label_embeds, return_label_maps)
        return LAMMOutput(logits=logits, label_maps=label_maps, image_embeds=image_features.get("image_embeds"))

    def compute_loss(self, outputs, labels, label_mask, image_features) -> torch.Tensor:
        """The task loss times `loss_weight`: cross-entropy over the softmax (single-label) or the head's multi-label
        loss (ASL / masked BCE over sigmoid scores)."""
        if self.config.task == "single_label":
            return float(self.config.loss_weight) * single_label_cross_entropy(outputs.logits, labels, label_mask)
        return self.head.task_loss(outputs.logits, labels, label_mask, self.config)

    @property
    def hierarchical_loss_active(self) -> bool:
        """The hierarchical loss applies while training learnable label tokens (without them the model is CoOp)."""
        learner = self.prompt_learner
        tokens = getattr(learner, "label_tokens", None)
        return bool(
            self.config.hierarchical_loss
            and self.training
            and isinstance(tokens, nn.Parameter)
            and tokens.requires_grad
            and torch.is_grad_enabled()
        )

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
    ) -> LAMMOutput:
        r"""As `OVMLCPreTrainedModel.forward`; in training the loss adds the hierarchical loss, which needs
        `label_names` (the original-name embeddings of the same labels): the trainer passes them."""
        if image_features is None:
            if pixel_values is None:
                raise ValueError("forward() needs pixel_values or image_features")
            image_features = self.encode_image_features(pixel_values)
        vocabulary = None if label_names is None else self.vocabulary(label_names)
        if label_embeds is None:
            if vocabulary is None:
                raise ValueError("forward() needs label_embeds (model.encode_labels(names)) or label_names")
            label_embeds = self.encode_labels(vocabulary)
        outputs = self.score(image_features, label_embeds, return_label_maps=return_label_maps)
        if labels is None:
            return outputs
        if labels.shape != outputs.logits.shape:
            raise ValueError(f"labels shape {tuple(labels.shape)} != logits shape {tuple(outputs.logits.shape)}")
        if self.training and torch.is_grad_enabled():
            self.head.check_trainable(self)
        loss = self.compute_loss(outputs, labels, label_mask, image_features)
        outputs.task_loss = loss.detach()
        if self.hierarchical_loss_active:
            if vocabulary is None:
                raise ValueError(
                    "LAMM's hierarchical loss compares each label's embedding with its original-name embedding: pass "
                    "label_names (not only label_embeds) when training, or set hierarchical_loss=False"
                )
            terms = self.hierarchical_loss_terms(
                outputs.logits, label_embeds, image_features, vocabulary, labels, label_mask
            )
            config = self.config
            # loss_weight scales the whole loss (as DualCoOp's loss_w does), so the regularisers keep LAMM's weights
            # relative to the task loss whatever its scale (DualCoOp's summed ASL x 0.01).
            loss = loss + float(config.loss_weight) * (
                config.effective_param_loss_weight * terms["param_loss"]
                + config.feature_loss_weight * terms["feature_loss"]
                + config.kd_loss_weight * terms["kd_loss"]
            )
            for name, value in terms.items():
                setattr(outputs, name, value.detach())
        outputs.loss = loss
        return outputs

    def hierarchical_loss_terms(
        self,
        logits: torch.Tensor,
        label_embeds: torch.Tensor,
        image_features: dict[str, torch.Tensor],
        vocabulary: LabelVocabulary,
        labels: torch.Tensor,
        label_mask: torch.Tensor | None,
    ) -> dict[str, torch.Tensor]:
        """Unweighted L_param, L_feat and L_kd for a batch scored with `logits [B, C]` from `label_embeds [C, D]`
        (`[C, S, D]` with S prompt sets; the labels of `vocabulary`), see the config docstring. With S sets (the
        `dualcoop` head) L_feat averages 1 - cos over the sets (each set's prompt with learned vs original name
        tokens) and L_kd compares the head's logits, whose sigmoid is the 2-way softmax: the per-label KD is the
        KD between the 2-way (negative, positive) distributions at temperature T."""
        config = self.config
        # t0: the original names with the current context. L_feat uses it as a detached target; so does L_kd in the
        # paper's direction. Only the official direction with a trainable context back-propagates through it.
        needs_grad = config.kd_direction == "official" and config.train_context
        original = self._original_label_embeddings(vocabulary, needs_grad)  # [C, D] ([C, S, D])
        original_logits, _ = self.head(image_features, original)  # [B, C]
        if config.task == "single_label":
            targets, keep = single_label_targets(labels, label_mask)
            pair_label, counted = single_label_feature_pairs(targets, keep)
        else:
            pair_label, counted = multi_label_feature_pairs(labels, label_mask)
        return {
            "param_loss": self.label_token_penalty(),
            "feature_loss": feature_alignment_loss(label_embeds, original, pair_label, counted),
            "kd_loss": distillation_loss(
                logits,
                original_logits,
                temperature=float(config.kd_temperature),
                direction=config.kd_direction,
                multi_label=config.task == "multi_label",
            ),
        }

    def _original_label_embeddings(self, vocabulary: LabelVocabulary, needs_grad: bool) -> torch.Tensor:
        """`[C, D]` embeddings of the labels' original names with the current context (pooled like the labels).
        With a frozen context they never change during training: computed once per label list."""
        names = tuple(vocabulary.names)
        if needs_grad:
            return self._pool_prompt_embeddings(self.original_name_embeddings(names), vocabulary.pool)
        context_frozen = not any(
            isinstance(tensor, nn.Parameter) and tensor.requires_grad
            for tensor in (getattr(self.prompt_learner, "ctx", None), getattr(self.prompt_learner, "ctx_class", None))
        )
        key = (names, vocabulary.pool, self._context_state())
        memo = self.__dict__.get("_original_embeddings_memo")
        if context_frozen and memo is not None and memo[0] == key:
            return memo[1]
        with torch.no_grad():
            embeddings = self._pool_prompt_embeddings(self.original_name_embeddings(names), vocabulary.pool)
        if context_frozen:
            self.__dict__["_original_embeddings_memo"] = (key, embeddings)
        return embeddings

    def _context_state(self) -> tuple:
        tensors = (getattr(self.prompt_learner, "ctx", None), getattr(self.prompt_learner, "ctx_class", None))
        return tuple((id(tensor), tensor._version) for tensor in tensors if tensor is not None)

    def parameter_groups(self, learning_rate, weight_decay=0.0, layer_decay=None):
        """The base groups for the prompt learner, plus the head's scale and bias (when trained) at
        `learning_rate * logit_lr_multiplier` without weight decay."""
        head = [parameter for parameter in self.head.parameters() if parameter.requires_grad]
        groups = super().parameter_groups(learning_rate, weight_decay, layer_decay)
        return with_own_lr_group(groups, head, learning_rate, float(self.config.logit_lr_multiplier))

    # ------------------------------------------------------------------ class-incremental learning
    @torch.no_grad()
    def add_labels(
        self,
        names: Sequence[str],
        label_tokens: torch.Tensor | None = None,
        label_tokens_init: torch.Tensor | None = None,
    ) -> "LAMMModel":
        """A copy of this model whose label tokens also cover `names` (appended after the existing ones).

        New rows start from the names' token embeddings (their prompts are then CLIP's zero-shot prompts), or take
        `label_tokens [len(names), min_len, H]` (and `label_tokens_init`, default: the same values). The existing
        rows, the context, the text tower and the head are copied unchanged, so the old labels' scores stay the same
        bit for bit.
        """
        if not self.has_label_tokens:
            raise ValueError("add_labels needs learnable label tokens (prompt_learning.label_tokens: learnable)")
        prompt_config = self.prompt_learning_config
        if prompt_config.class_specific:
            raise ValueError("add_labels needs a unified context (class-specific contexts are not merged)")
        names = [str(name) for name in names]
        if not names:
            raise ValueError("add_labels: no labels given")
        known = {normalize_label(name) for name in self.class_names}
        duplicates = sorted({name for name in names if normalize_label(name) in known})
        if duplicates or len({normalize_label(name) for name in names}) != len(names):
            raise ValueError(
                f"add_labels: labels {duplicates or names} already have label tokens (or are repeated); the label "
                f"sets of class-incremental rounds must be disjoint"
            )
        learner = self.prompt_learner
        shape = (len(names), *learner.label_tokens.shape[1:])
        if label_tokens is None:
            tokens = self.tokenize_label_prompts(names)
            short = [name for row, name in enumerate(names) if int(tokens.name_lengths[row]) < shape[1]]
            if short:
                raise ValueError(f"add_labels: labels {short} have fewer than min_len={shape[1]} tokens")
            table = text_token_embedding(self.clip).weight  # [V, H]
            label_tokens = torch.stack([table[tokens.name_token_ids(row)[: shape[1]]] for row in range(len(names))])
        if tuple(label_tokens.shape) != shape:
            raise ValueError(f"add_labels: label_tokens of shape {tuple(label_tokens.shape)}, expected {shape}")
        label_tokens_init = label_tokens if label_tokens_init is None else label_tokens_init
        if tuple(label_tokens_init.shape) != shape:
            raise ValueError(
                f"add_labels: label_tokens_init of shape {tuple(label_tokens_init.shape)}, expected {shape}"
            )

        new_config = prompt_config.replace(class_names=[*self.class_names, *names])
        new_learner = PromptLearner(new_config, learner.label_tokens.shape[-1], learner.n_ctx).to(
            device=learner.label_tokens.device, dtype=learner.label_tokens.dtype
        )
        state = {name: tensor for name, tensor in learner.state_dict().items() if not name.startswith("label_tokens")}
        state["label_tokens"] = torch.cat([learner.label_tokens, label_tokens.to(learner.label_tokens)])
        state["label_tokens_init"] = torch.cat(
            [learner.label_tokens_init, label_tokens_init.to(learner.label_tokens_init)]
        )
        new_learner.load_state_dict(state)

        merged = copy.deepcopy(self)
        merged.prompt_learner = new_learner
        merged.__dict__.pop("_original_embeddings_memo", None)
        merged._text_fingerprint = None
        config = merged.config
        config.prompt_learning = new_config.to_dict()
        config.seen_labels = _union(config.seen_labels or list(self.class_names), names)
        config.label_names = _union(config.label_names or [], names)
        if config.unseen_labels:
            config.unseen_labels = [name for name in config.unseen_labels if name not in set(config.seen_labels)]
        merged._freeze()
        return merged.train(self.training)

    def merge(self, other: "LAMMModel") -> "LAMMModel":
        """Join two models trained on disjoint label sets with the same frozen context (class-incremental rounds,
        e.g. base classes then new classes, each with `train_context: false`) into one model that scores every label.

        Each label keeps the label tokens of the model that trained it; nothing else is trained, so this model's
        labels score exactly as before (bit for bit) and `other`'s labels as in `other`. Refused (a `ValueError`
        naming the difference) when the two differ in anything but their label tokens: backbone text tower, prompt
        layout, context, head or task. Per-label calibrated thresholds of both are kept.
        """
        if not isinstance(other, LAMMModel):
            raise TypeError(f"merge needs another LAMMModel, got {type(other).__name__}")
        if not (self.has_label_tokens and other.has_label_tokens):
            raise ValueError("merge needs learnable label tokens in both models")
        mine, theirs = self.prompt_learning_config.to_dict(), other.prompt_learning_config.to_dict()
        for key in sorted(set(mine) - {"class_names"}):
            if mine[key] != theirs[key]:
                raise ValueError(
                    f"merge: the models' prompt settings differ in {key}: {mine[key]!r} vs {theirs[key]!r}"
                )
        for key in ("task", "head", *self.head.settings_keys):
            if getattr(self.config, key) != getattr(other.config, key):
                raise ValueError(f"merge: the models differ in {key}: {getattr(self.config, key)!r} vs "
                                 f"{getattr(other.config, key)!r}")  # fmt: skip
        if module_fingerprint(*text_tower_modules(self.clip)) != module_fingerprint(*text_tower_modules(other.clip)):
            raise ValueError("merge: the models have different text towers (another backbone?)")
        if not torch.equal(self.prompt_learner.ctx, other.prompt_learner.ctx.to(self.prompt_learner.ctx)):
            raise ValueError(
                "merge: the models' contexts differ; class-incremental merging needs rounds trained with the context "
                "frozen (train_context: false) from the same initialisation, so every label's prompt shares it"
            )
        for (name, tensor), other_tensor in zip(self.head.state_dict().items(), other.head.state_dict().values()):
            if not torch.equal(tensor, other_tensor.to(tensor)):
                raise ValueError(
                    f"merge: the models' heads differ (head.{name}: {tensor.flatten()[:4].tolist()} vs "
                    f"{other_tensor.flatten()[:4].tolist()}); train the rounds with train_logit_params: false so "
                    f"that labels of both rounds share one head"
                )
        merged = self.add_labels(
            other.class_names, other.prompt_learner.label_tokens, other.prompt_learner.label_tokens_init
        )
        config = merged.config
        config.label_names = _union(self.config.label_names or [], other.config.label_names or [])
        config.seen_labels = _union(self.config.seen_labels or list(self.class_names), other.config.seen_labels or [])
        config.unseen_labels = [
            name
            for name in _union(self.config.unseen_labels or [], other.config.unseen_labels or [])
            if name not in set(config.seen_labels)
        ]
        thresholds = {**(other.config.label_thresholds or {}), **(self.config.label_thresholds or {})}
        config.label_thresholds = thresholds or None
        return merged


def _union(first: Sequence[str], second: Sequence[str]) -> list[str]:
    return list(dict.fromkeys([*first, *second]))


LAMMConfig.register_for_auto_class()
LAMMModel.register_for_auto_class("AutoModel")

__all__ = [
    "LAMM_HEADS",
    "CoOpCosineHead",
    "DualCoOpRegionHead",
    "LAMMHead",
    "LAMMModel",
    "LAMMOutput",
    "build_lamm_head",
    "register_lamm_head",
]
