"""CoOp (Context Optimization) for multi-label classification, and the base of the CoOp family (DualCoOp, DualCoOp++).

Zhou, Yang, Loy & Liu, "Learning to Prompt for Vision-Language Models", IJCV 2022. Written from the paper and the notes
in `docs/methods.md`; no code copied from the official repositories. The learned prompt is the shared mechanism of
`ovmlc.prompting` (`model.prompt_learner`, keys `prompt_learner.*`).
"""

import torch
import torch.nn.functional as F
from torch import nn
from transformers import initialization as init

from ovmlc.core.backbones import dense_image_tokens
from ovmlc.core.losses import asymmetric_loss, masked_bce_with_logits
from ovmlc.core.modeling_base import OVMLCPreTrainedModel
from ovmlc.core.outputs import MultiLabelOutput
from ovmlc.core.vocabulary import LabelVocabulary
from ovmlc.prompting.configuration_prompting import PromptLearningConfig
from ovmlc.prompting.prompt_mixin import PromptLearningMixin

from .configuration_coop import CoOpConfig, CoOpFamilyConfig

# CLIP's temperature cap (CLIP training clamps exp(logit_scale) at 100; CoOp multiplies cosines by it).
MAX_CLIP_LOGIT_SCALE = 100.0
# log(p) is clamped at this in DualCoOp's ASL (its `eps`).
ASL_LOG_EPS = 1e-6


def coop_logits(
    image_embeds: torch.Tensor,
    label_embeds: torch.Tensor,
    scale: float | torch.Tensor,
    bias: float | torch.Tensor = 0.0,
) -> torch.Tensor:
    """CoOp's head: `scale * cos(image, prompt) + bias`. image_embeds `[B, D]`, label_embeds `[C, D]` → `[B, C]`."""
    image_embeds = F.normalize(image_embeds, dim=-1)
    label_embeds = F.normalize(label_embeds.to(image_embeds.dtype), dim=-1)
    return scale * image_embeds @ label_embeds.T + bias


def prompt_family_loss(
    logits: torch.Tensor, labels: torch.Tensor, label_mask: torch.Tensor | None, config, eps: float = ASL_LOG_EPS
) -> torch.Tensor:
    """The prompt family's task loss on `logits [B, C]` (for DualCoOp `pos - neg`, so this is its ASL on the 2-way
    softmax): ASL as DualCoOp codes it (log clamped at 1e-6, focal weights without gradient, summed or divided by the
    batch size) or masked BCE, times `loss_weight`; unannotated entries never count. `config` supplies `loss`,
    `asl_gamma_neg`, `asl_gamma_pos`, `asl_clip`, `asl_reduction` and `loss_weight` (any config with these fields:
    the CoOp family's, or LAMM's); `eps` is where the logs are clamped (DualCoOp's code: 1e-6)."""
    if config.loss == "bce":
        loss = masked_bce_with_logits(logits, labels, label_mask)
    else:
        loss = asymmetric_loss(
            logits,
            labels,
            label_mask,
            gamma_neg=float(config.asl_gamma_neg),
            gamma_pos=float(config.asl_gamma_pos),
            clip=float(config.asl_clip),
            eps=eps,
            reduction=config.asl_reduction,
        )
    return float(config.loss_weight) * loss


class CoOpFamilyModel(PromptLearningMixin, OVMLCPreTrainedModel):
    """Frozen CLIP + learned prompts (`prompt_learner`, `num_prompt_sets` sets per label). Shared by CoOp, DualCoOp and
    DualCoOp++: building and freezing, the per-batch label subset (`num_train_cls`) and the loss. Subclasses set
    `num_prompt_sets` and implement `encode_image_features` and `score`."""

    config: CoOpFamilyConfig
    # Prompt sets per label (CoOp 1; DualCoOp 2: negative, positive; DualCoOp++ 3: evidential, positive, negative).
    num_prompt_sets: int = 1
    # Frozen CLIP: the image side can be cached by the trainer; the learned prompts are the text side that trains.
    uses_frozen_image_features = True
    trains_text_side = True
    # Modules built here beside CLIP (the learner, CoOp's bias head): new by design when built around a CLIP checkpoint.
    modules_created_on_load = ("prompt_learner", "logit_head")
    # The frozen CLIP comes unchanged from its checkpoint: the adapter-only layout stores only the prompts (and head).
    inherited_modules = ("clip",)
    # SigLIP: learned prompts run through the bidirectional text tower at its fixed 64 tokens, pooled at the last
    # position (core/backbones.py); region scoring (DualCoOp) reads patch tokens through the pooling head's value path.
    supported_backbone_families = ("clip", "siglip")

    def __init__(self, config: CoOpFamilyConfig):
        super().__init__(config)
        config.prompt_learning = self.build_prompt_learner(self.prompt_learning_settings()).to_dict()
        self.build_head()
        self.post_init()
        self._freeze()

    # ------------------------------------------------------------------ set-up
    def prompt_learning_settings(self) -> PromptLearningConfig:
        """The config's `prompt_learning` with this method's number of prompt sets."""
        where = f"{type(self.config).__name__}.prompt_learning"
        given = dict(self.config.prompt_learning or {})
        if given.get("num_prompt_sets", self.num_prompt_sets) != self.num_prompt_sets:
            raise ValueError(
                f"{where}.num_prompt_sets={given['num_prompt_sets']}: {type(self).__name__} uses "
                f"{self.num_prompt_sets} prompt set(s) per label; leave it out"
            )
        given["num_prompt_sets"] = self.num_prompt_sets
        return PromptLearningConfig.from_dict(given, where=where)

    def build_head(self) -> None:
        """Trainable modules besides the prompt learner (none by default)."""

    def head_modules(self) -> tuple[nn.Module, ...]:
        return ()

    def _freeze(self) -> None:
        self.requires_grad_(False)
        self.prompt_learner.requires_grad_(True)  # ctx (or ctx_class); CSC's unified fallback is a frozen buffer

    def post_load(self) -> None:
        self._freeze()

    def train(self, mode: bool = True):
        super().train(mode)
        self.clip.eval()  # frozen backbone: never in training mode
        return self

    # ------------------------------------------------------------------ forward with a per-batch label subset
    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        image_features: dict[str, torch.Tensor] | None = None,
        label_embeds: torch.Tensor | None = None,
        label_names=None,
        labels: torch.Tensor | None = None,
        label_mask: torch.Tensor | None = None,
        return_label_maps: bool = False,
        **kwargs,
    ) -> MultiLabelOutput:
        r"""`OVMLCPreTrainedModel.forward`; in training with `label_names` and `labels`, when there are more labels than
        `config.num_train_cls`, a random subset of that many (torch's RNG, as DualCoOp's `torch.randperm`) is encoded
        and trained on: `logits`, `labels` and the loss then cover those columns only."""
        limit = self.config.num_train_cls
        if self.training and limit and labels is not None and label_embeds is None and label_names is not None:
            vocabulary = self.vocabulary(label_names)
            if len(vocabulary) > limit:
                columns = torch.randperm(len(vocabulary))[:limit].sort().values  # [limit]
                label_names = LabelVocabulary(
                    [vocabulary.names[i] for i in columns.tolist()], vocabulary.templates, vocabulary.pool
                )
                index = columns.to(labels.device)
                labels = labels.index_select(1, index)
                label_mask = None if label_mask is None else label_mask.index_select(1, index)
        return super().forward(
            pixel_values=pixel_values,
            image_features=image_features,
            label_embeds=label_embeds,
            label_names=label_names,
            labels=labels,
            label_mask=label_mask,
            return_label_maps=return_label_maps,
            **kwargs,
        )

    def compute_loss(self, outputs, labels, label_mask, image_features) -> torch.Tensor:
        """`prompt_family_loss` with this config's settings."""
        return prompt_family_loss(outputs.logits, labels, label_mask, self.config)

    @staticmethod
    def prompt_sets(label_embeds: torch.Tensor, num_sets: int) -> torch.Tensor:
        """`label_embeds` as `[C, S, D]` (a `[C, D]` table is one set); checks S."""
        if label_embeds.dim() == 2:
            label_embeds = label_embeds.unsqueeze(1)
        if label_embeds.dim() != 3 or label_embeds.shape[1] != num_sets:
            raise ValueError(
                f"label embeddings of shape {tuple(label_embeds.shape)}: expected [C, {num_sets}, D] (one per prompt "
                f"set; use model.encode_labels(names))"
            )
        return label_embeds


class CoOpLogitHead(nn.Module):
    """The bias shared by all labels (`logit_head.bias`)."""

    def __init__(self):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(()))


class CoOpModel(CoOpFamilyModel):
    """CoOp: `logits [B, C] = scale * cos(image embedding, learned prompt embedding) + bias` over a frozen CLIP.

    `encode_image_features` returns `{"image_embeds": [B, D]}` (frozen, cacheable). No label maps (the global
    embedding has no spatial layout).
    """

    config: CoOpConfig
    num_prompt_sets = 1

    def build_head(self) -> None:
        self.logit_head = CoOpLogitHead()

    def head_modules(self) -> tuple[nn.Module, ...]:
        return (self.logit_head,)

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        if module is getattr(self, "logit_head", None):
            init.constant_(module.bias, float(self.config.logit_bias))

    def _freeze(self) -> None:
        super()._freeze()
        self.logit_head.requires_grad_(bool(self.config.train_logit_bias))

    def logit_scale_value(self) -> torch.Tensor:
        if self.config.logit_scale is not None:
            return torch.tensor(float(self.config.logit_scale), device=self.device)
        return self.clip.logit_scale.exp().clamp(max=MAX_CLIP_LOGIT_SCALE)

    def parameter_groups(self, learning_rate, weight_decay=0.0, layer_decay=None):
        """The prompt context at `learning_rate` (with weight decay, as CoOp's SGD), the bias at
        `learning_rate * logit_bias_lr_multiplier` without weight decay."""
        context = [p for p in self.prompt_learner.parameters() if p.requires_grad]
        groups = [{"params": context, "lr": learning_rate, "weight_decay": weight_decay}] if context else []
        if self.logit_head.bias.requires_grad:
            multiplier = float(self.config.logit_bias_lr_multiplier)
            groups.append(
                {
                    "params": [self.logit_head.bias],
                    "lr": learning_rate * multiplier,
                    "lr_scale": multiplier,
                    "weight_decay": 0.0,
                }
            )
        return groups

    def encode_image_features(self, pixel_values: torch.Tensor) -> dict[str, torch.Tensor]:
        with torch.no_grad():
            tokens = dense_image_tokens(self.clip, pixel_values.to(self.dtype), value_path=False)  # [B, 1 + N, D]
        return {"image_embeds": tokens[:, 0]}

    def score(self, image_features, label_embeds, return_label_maps=False) -> MultiLabelOutput:
        if "image_embeds" not in image_features:
            raise ValueError(
                f"CoOpModel.score needs image_features['image_embeds'] (from encode_image_features), got keys "
                f"{sorted(image_features)}"
            )
        prompts = self.prompt_sets(label_embeds, 1)[:, 0]  # [C, D]
        image_embeds = image_features["image_embeds"]  # [B, D]
        logits = coop_logits(image_embeds, prompts, self.logit_scale_value(), self.logit_head.bias)
        return MultiLabelOutput(logits=logits, image_embeds=image_embeds)


CoOpConfig.register_for_auto_class()
CoOpModel.register_for_auto_class("AutoModel")

__all__ = ["CoOpFamilyModel", "CoOpModel", "coop_logits", "prompt_family_loss"]
