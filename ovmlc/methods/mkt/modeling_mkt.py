"""MKT (Multi-modal Knowledge Transfer) as a Hub-native model.

He et al., "Open-Vocabulary Multi-Label Classification via Multi-modal Knowledge Transfer", AAAI 2023. Written from
the paper and the notes in `docs/methods.md`; no code copied from the official repo.
"""

import json
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from transformers import initialization as init
from transformers.models.clip.modeling_clip import CLIPEncoderLayer
from transformers.utils import logging

from ovmlc.core.backbones import patch_grid_size, text_token_embedding
from ovmlc.core.losses import l1_distillation, ranking_loss
from ovmlc.core.modeling_base import OVMLCPreTrainedModel
from ovmlc.core.outputs import MultiLabelOutput
from ovmlc.core.vocabulary import LabelVocabulary, load_templates
from ovmlc.prompting.configuration_prompting import PromptLearningConfig
from ovmlc.prompting.prompt_encoder import prompt_text_features
from ovmlc.prompting.prompt_mixin import PromptLearningMixin

from .configuration_mkt import MKTConfig

logger = logging.get_logger(__name__)


# Checkpoint keys of stage-2 context vectors before the shared prompt learner (one `[P, H_t]` / `[S, H_t]` tensor per
# side of the label); they load into `prompt_learner.ctx [1, P + S, H_t]`.
LEGACY_CONTEXT_KEYS = ("prompt_learner.prefix_context", "prompt_learner.suffix_context")


class MKTStudentHead(nn.Module):
    """The trainable end of the student tower: copies of the last `n` vision blocks, the final LayerNorm (applied to
    every token, as OpenAI's `ln_post`) and the projection into the joint space."""

    def __init__(self, vision_config, projection_dim: int, num_layers: int):
        super().__init__()
        self.layers = nn.ModuleList([CLIPEncoderLayer(vision_config) for _ in range(num_layers)])
        self.post_layernorm = nn.LayerNorm(vision_config.hidden_size, eps=vision_config.layer_norm_eps)
        self.projection = nn.Linear(vision_config.hidden_size, projection_dim, bias=False)

    def forward(self, hidden_states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """`hidden_states [B, 1 + N, H_v]` (after the frozen blocks) → CLS `[B, D]` and patches `[B, N, D]`."""
        for layer in self.layers:
            hidden_states = layer(hidden_states, None)
        projected = self.projection(self.post_layernorm(hidden_states))  # [B, 1 + N, D]
        return projected[:, 0], projected[:, 1:]


class MKTTokenTableLearner(nn.Module):
    """Stage 2 with `prompt_tuning="token_table"` (the official code): a trainable copy of the token-embedding table
    `token_embedding [V, H_t]`; every prompt position reads it except the label's tokens, which keep their frozen
    embeddings. (Not a context-vector prompt: a template word's row is shared by every place that word occurs, and the
    start/end tokens train too; so it stays here instead of in `ovmlc.prompting`, reusing its span detection.)"""

    def __init__(self, text_config):
        super().__init__()
        self.token_embedding = nn.Embedding(text_config.vocab_size, text_config.hidden_size)


class MKTModel(PromptLearningMixin, OVMLCPreTrainedModel):
    """MKT: two-stream (global CLS + top-k local patches) scores from a student CLIP tower distilled from the frozen
    original; stage 2 tunes the prompt.

    `encode_image_features` returns only what frozen weights compute, so the trainer can cache it: in stage 1 the
    hidden states after the frozen blocks `hidden_states [B, 1 + N, H_v]` and the teacher's CLIP image embedding
    `teacher_embeds [B, D]` (the distillation target); in stage 2 the student's outputs `image_embeds [B, D]` and
    `patch_embeds [B, N, D]`. `score` runs whatever is left.

    Stage 2 (`prompt_tuning="context"`) is a user of the shared prompt learner (`ovmlc.prompting`): one context
    vector per word of the template, initialised from the mean of the word's token embeddings.
    """

    config: MKTConfig
    # encode_image_features only runs frozen weights in both stages (see the class docstring).
    uses_frozen_image_features = True
    # Scores are L2-normalised across the label set: score each evaluation view (ZSL, GZSL) with its own labels.
    scores_depend_on_label_set = True
    # Built here, not read from a CLIP checkpoint: the student starts as a copy of the teacher's last blocks, the
    # prompt learner (stage 2) from the template words (also when stage 2 starts from a stage-1 folder).
    modules_created_on_load = ("student", "prompt_learner")
    # Stage-2 folders saved before the shared prompt learner: restored by `_load_legacy_prompt_context`.
    _keys_to_ignore_on_load_unexpected = [r"^prompt_learner\.(prefix|suffix)_context$"]
    unsupported_backbone_reasons = {
        "siglip": "MKT's student is a copy of CLIP's last vision blocks + CLS pooling + `visual_projection`, and its "
        "local stream scores projected patch tokens; SigLIP has no CLS token and no projection (its patch tokens "
        "reach the text space only through the pooling head's value path, an approximation not validated for MKT)",
    }

    def __init__(self, config: MKTConfig):
        super().__init__(config)
        vision_config = self.clip.config.vision_config
        if config.num_trainable_layers > vision_config.num_hidden_layers:
            raise ValueError(
                f"MKTConfig.num_trainable_layers={config.num_trainable_layers} exceeds the vision tower's "
                f"{vision_config.num_hidden_layers} layers"
            )
        self.student = MKTStudentHead(vision_config, self.clip.config.projection_dim, config.num_trainable_layers)
        self.prompt_learner = None
        if config.stage == 2 and config.prompt_tuning == "context":
            self.build_prompt_learner(self.prompt_learning_settings())
        elif config.stage == 2:
            self.prompt_learner = MKTTokenTableLearner(self.clip.config.text_config)
        self.post_init()
        self._freeze()

    # ------------------------------------------------------------------ set-up
    @property
    def prompt_template(self) -> str:
        templates = load_templates(self.config.templates or "mkt")
        if len(templates) != 1:
            raise ValueError(f"MKT uses a single prompt template; config.templates gives {len(templates)}")
        return templates[0]

    def prompt_learning_settings(self) -> PromptLearningConfig:
        """Stage 2's prompt as a shared-mechanism config: the template's words around the label are context, one
        vector per word (the mean of its token embeddings), or random N(0, `initializer_range`)."""
        return PromptLearningConfig(
            ctx_init=self.prompt_template,
            ctx_init_mode="word_mean",
            ctx_random_init=self.config.prompt_context_init == "random",
            init_std=self.config.initializer_range,
        )

    @property
    def inherited_modules(self) -> tuple[str, ...]:
        """What this stage takes unchanged from the checkpoint it starts from: the CLIP (teacher and text tower); in
        stage 2 also the student trained by stage 1, so a stage-2 folder built from a stage-1 Hub repo stores only the
        prompt (the adapter-only layout; see core/weights_layout.py)."""
        return ("clip",) if self.config.stage == 1 else ("clip", "student")

    @property
    def trains_text_side(self) -> bool:
        """Stage 2 tunes the prompt: the trainer encodes the labels every step, with gradients."""
        return self.config.stage == 2

    @property
    def num_frozen_layers(self) -> int:
        return self.clip.config.vision_config.num_hidden_layers - self.config.num_trainable_layers

    def _freeze(self) -> None:
        self.requires_grad_(False)
        trainable = self.student if self.config.stage == 1 else self.prompt_learner
        trainable.requires_grad_(True)

    def post_load(self) -> None:
        self._freeze()

    def train(self, mode: bool = True):
        super().train(mode)
        self.clip.eval()  # frozen teacher / text tower
        if self.config.stage == 2:
            self.student.eval()  # the image side is frozen in stage 2
        return self

    def _copy_sources(self) -> dict[int, nn.Module]:
        """`id(module) → the CLIP module it starts as a copy of` (student blocks, LayerNorm, projection; the token
        table of `prompt_tuning="token_table"`). Leaf modules only: transformers skips containers without
        parameters of their own when initialising custom-code models."""
        vision = self.clip.vision_model
        pairs = {
            id(self.student.post_layernorm): vision.post_layernorm,
            id(self.student.projection): self.clip.visual_projection,
        }
        for index, layer in enumerate(self.student.layers):
            source = vision.encoder.layers[self.num_frozen_layers + index]
            pairs.update({id(target): origin for target, origin in zip(layer.modules(), source.modules())})
        if isinstance(self.prompt_learner, MKTTokenTableLearner):
            pairs[id(self.prompt_learner.token_embedding)] = text_token_embedding(self.clip)
        return pairs

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)  # the prompt learner (context) is initialised by PromptLearningMixin
        if not hasattr(self, "student"):
            return  # MKT's own modules do not exist yet
        source = self._copy_sources().get(id(module))
        if source is not None:
            for name, parameter in module.named_parameters(recurse=False):
                init.copy_(parameter, source.get_parameter(name))

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *model_args, **kwargs):
        model = super().from_pretrained(pretrained_model_name_or_path, *model_args, **kwargs)
        model._load_legacy_prompt_context(pretrained_model_name_or_path, kwargs)
        return model

    @torch.no_grad()
    def _load_legacy_prompt_context(self, source, kwargs: dict) -> None:
        """Folders saved before the shared prompt learner hold `prompt_learner.prefix_context [P, H_t]` and
        `suffix_context [S, H_t]`: copy them into `prompt_learner.ctx [1, P + S, H_t]`."""
        if self.prompt_learning_config is None:
            return
        from safetensors import safe_open
        from transformers.utils import cached_file

        from ovmlc.core.backbones import resolve_backbone

        hub_kwargs = {key: kwargs[key] for key in ("revision", "token", "cache_dir") if kwargs.get(key)}
        source = resolve_backbone(source)
        files = [cached_file(source, "model.safetensors", _raise_exceptions_for_missing_entries=False, **hub_kwargs)]
        if files[0] is None:  # sharded
            index = cached_file(
                source, "model.safetensors.index.json", _raise_exceptions_for_missing_entries=False, **hub_kwargs
            )
            if index is None:
                return
            weight_map = json.loads(Path(index).read_text()).get("weight_map", {})
            shards = {weight_map[key] for key in LEGACY_CONTEXT_KEYS if key in weight_map}
            files = [cached_file(source, shard, **hub_kwargs) for shard in sorted(shards)]
        legacy = {}
        for path in files:
            with safe_open(str(path), framework="pt") as handle:
                legacy.update({key: handle.get_tensor(key) for key in LEGACY_CONTEXT_KEYS if key in handle.keys()})
        if len(legacy) != len(LEGACY_CONTEXT_KEYS):
            return
        context = torch.cat([legacy[key] for key in LEGACY_CONTEXT_KEYS])  # [P + S, H_t]
        target = self.prompt_learner.ctx
        if tuple(target.shape) != (1, *context.shape):
            raise ValueError(
                f"{source}: legacy MKT prompt context of shape {tuple(context.shape)} does not fit this model's "
                f"prompt_learner.ctx {tuple(target.shape)} (another template?)"
            )
        target.copy_(context.to(target.dtype).unsqueeze(0))

    # ------------------------------------------------------------------ image side
    def _frozen_hidden_states(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Hidden states after the frozen blocks `[B, 1 + N, H_v]` (shared by teacher and student)."""
        vision = self.clip.vision_model
        with torch.no_grad():
            hidden_states = vision.pre_layrnorm(vision.embeddings(pixel_values.to(self.dtype)))
            for layer in vision.encoder.layers[: self.num_frozen_layers]:
                hidden_states = layer(hidden_states, None)
        return hidden_states

    @torch.no_grad()
    def teacher_embeds(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """The frozen CLIP image embedding `[B, D]` (raw, as the distillation target) from the shared hidden states."""
        vision = self.clip.vision_model
        for layer in vision.encoder.layers[self.num_frozen_layers :]:
            hidden_states = layer(hidden_states, None)
        return self.clip.visual_projection(vision.post_layernorm(hidden_states[:, 0]))

    def encode_image_features(self, pixel_values: torch.Tensor) -> dict[str, torch.Tensor]:
        hidden_states = self._frozen_hidden_states(pixel_values)
        if self.config.stage == 2:
            with torch.no_grad():
                image_embeds, patch_embeds = self.student(hidden_states)
            return {"image_embeds": image_embeds, "patch_embeds": patch_embeds}
        # The teacher's embedding is cached with the hidden states (the trainer builds caches in eval mode); at
        # inference it costs the last `num_trainable_layers` frozen blocks once more.
        if self.config.distillation_weight <= 0:
            return {"hidden_states": hidden_states}
        return {"hidden_states": hidden_states, "teacher_embeds": self.teacher_embeds(hidden_states)}

    def image_side_modules(self) -> tuple[nn.Module, ...]:
        """Modules whose weights determine `encode_image_features` (keys the trainer's feature cache)."""
        modules = (self.clip.vision_model, self.clip.visual_projection)
        return modules if self.config.stage == 1 else (*modules, self.student)

    # ------------------------------------------------------------------ scoring
    def score(self, image_features, label_embeds, return_label_maps=False) -> MultiLabelOutput:
        if "image_embeds" in image_features and "patch_embeds" in image_features:
            image_embeds, patch_embeds = image_features["image_embeds"], image_features["patch_embeds"]
        elif "hidden_states" in image_features:
            image_embeds, patch_embeds = self.student(image_features["hidden_states"])  # [B, D], [B, N, D]
        else:
            raise ValueError(
                f"MKTModel.score needs image_features with 'hidden_states' or 'image_embeds' + 'patch_embeds' (from "
                f"encode_image_features), got keys {sorted(image_features)}"
            )
        label_embeds = label_embeds.to(image_embeds.dtype)  # [C, D], raw
        global_scores = image_embeds @ label_embeds.T  # [B, C]
        patch_scores = patch_embeds @ label_embeds.T  # [B, N, C]
        top_k = min(int(self.config.top_k), patch_scores.shape[1])
        local_scores = patch_scores.topk(top_k, dim=1).values.mean(dim=1)  # [B, C]
        # Each stream is L2-normalised across the label set (so scores depend on the vocabulary), then averaged.
        fused = (F.normalize(local_scores, dim=-1) + F.normalize(global_scores, dim=-1)) / 2
        scale = 1.0 if self.config.logit_scale is None else float(self.config.logit_scale)
        logits = scale * fused + self.config.logit_bias
        label_maps = None
        if return_label_maps:
            height, width = patch_grid_size(self.clip)
            label_maps = patch_scores.transpose(1, 2).reshape(patch_scores.shape[0], -1, height, width)
        return MultiLabelOutput(logits=logits, label_maps=label_maps, image_embeds=image_embeds)

    def compute_loss(self, outputs, labels, label_mask, image_features) -> torch.Tensor:
        loss = ranking_loss(outputs.logits, labels, label_mask, margin=self.config.ranking_margin)
        if self.config.stage == 1 and self.config.distillation_weight > 0 and "hidden_states" in image_features:
            teacher = image_features.get("teacher_embeds")
            if teacher is None:
                teacher = self.teacher_embeds(image_features["hidden_states"])
            loss = loss + self.config.distillation_weight * l1_distillation(outputs.image_embeds, teacher)
        return loss

    def parameter_groups(self, learning_rate, weight_decay=0.0, layer_decay=None):
        """Layer-wise LR decay over the student (head x1, last block x decay, the one before x decay^2, ...); no
        weight decay on biases, norms and 1-d parameters. `layer_decay=None` uses `config.layer_decay`."""
        decay = float(self.config.layer_decay if layer_decay is None else layer_decay)
        num_layers = self.config.num_trainable_layers
        grouped: dict[tuple[float, bool], list[nn.Parameter]] = {}
        for name, parameter in self.named_parameters():
            if not parameter.requires_grad:
                continue
            lr_scale = 1.0
            if name.startswith("student.layers."):
                lr_scale = decay ** (num_layers - int(name.split(".")[2]))
            no_decay = parameter.ndim <= 1 or name.endswith(".bias")
            grouped.setdefault((lr_scale, no_decay), []).append(parameter)
        return [
            {
                "params": parameters,
                "lr": learning_rate * lr_scale,
                "lr_scale": lr_scale,
                "weight_decay": 0.0 if no_decay else weight_decay,
            }
            for (lr_scale, no_decay), parameters in sorted(grouped.items(), key=lambda item: item[0])
        ]

    # ------------------------------------------------------------------ text side
    def encode_label_embeddings(self, vocabulary: LabelVocabulary) -> torch.Tensor:
        # Stage 1: frozen template embeddings (cached, base class); stage 2: the tuned prompt (PromptLearningMixin).
        if self.prompt_learner is not None and list(vocabulary.templates) != [self.prompt_template]:
            raise ValueError(
                f"this stage-2 MKT model tuned the prompt {self.prompt_template!r}; the vocabulary uses "
                f"{vocabulary.templates[:3]}"
            )
        return super().encode_label_embeddings(vocabulary)

    def encode_prompts(self, names, use_label_tokens: bool = True) -> torch.Tensor:
        """`[C, 1, D]` raw text embeddings of the tuned prompt for `names` (differentiable w.r.t. the prompt)."""
        if not isinstance(self.prompt_learner, MKTTokenTableLearner):
            return super().encode_prompts(names, use_label_tokens)
        # The literal template prompt, every position read from the trainable table except the label's tokens.
        layout = self.prompt_layout(PromptLearningConfig(ctx_init=self.prompt_template))
        tokens = self.tokenize_label_prompts(list(names), layout)
        input_ids = tokens.input_ids.to(self.device)  # [C, T]
        position = torch.arange(input_ids.shape[1], device=self.device)[None, :]
        is_label = (position >= tokens.name_start.to(self.device)[:, None]) & (
            position < tokens.name_stop.to(self.device)[:, None]
        )  # [C, T]
        embeds = torch.where(
            is_label.unsqueeze(-1),
            text_token_embedding(self.clip)(input_ids).detach(),
            self.prompt_learner.token_embedding(input_ids),
        )  # [C, T, H_t]
        return prompt_text_features(self.clip, embeds, tokens.eos.to(self.device)).unsqueeze(1)


MKTConfig.register_for_auto_class()
MKTModel.register_for_auto_class("AutoModel")

__all__ = ["MKTModel", "MKTTokenTableLearner"]
