"""MKT (Multi-modal Knowledge Transfer) as a Hub-native model.

He et al., "Open-Vocabulary Multi-Label Classification via Multi-modal Knowledge Transfer", AAAI 2023. Written from
the paper and the notes in `docs/methods.md`; no code copied from the official repo.
"""

import torch
import torch.nn.functional as F
from torch import nn
from transformers import initialization as init
from transformers.models.clip.modeling_clip import CLIPEncoderLayer
from transformers.utils import logging

from ovmlc.clip_utils import (
    eos_positions,
    patch_grid_size,
    text_eos_token_id,
    text_features_from_embeddings,
    text_tower_modules,
    tokenize_prompts,
)
from ovmlc.losses import l1_distillation, ranking_loss
from ovmlc.modeling_base import MultiLabelOutput, OVMLCPreTrainedModel
from ovmlc.vocabulary import LabelVocabulary, load_templates

from .configuration_mkt import MKTConfig

logger = logging.get_logger(__name__)

CARD_TEXT = """\
**MKT** (Multi-modal Knowledge Transfer; He et al., AAAI 2023). A student CLIP ViT image tower, initialised from the
backbone, trains its last `n` blocks (default 2), the final LayerNorm and the projection with layer-wise LR decay
0.65; the frozen original tower is the teacher. Scores are two-stream: global `<cls, t_c>` and local = the mean of the
top-k (k = 16, capped by the patch count) patch scores `<p_j, t_c>`; each of the two score vectors is L2-normalised
**across the label set** and the two are averaged (as the official code does; the paper describes two heads whose
scores are summed). Stage 1 trains the student with the BiAM ranking loss (margin 1, per image averaged over its
violating pairs, then over images; images without positives dropped) plus lambda * L1 distillation of the raw CLS
embedding towards the teacher's CLIP image embedding (lambda = 1), with frozen label embeddings of the template
"There is a {} in the scene". Stage 2 freezes the image side and tunes the prompt with the ranking loss.

Scores depend on the vocabulary: because of the normalisation across labels, the same image-label pair scores
differently when scored among the unseen labels only (ZSL) and among all labels (GZSL), exactly as in the paper's
evaluation. Score the ZSL view with the unseen labels alone to reproduce the reported numbers.

Implementation choices (paper vs official code):
- Student and teacher share the frozen first blocks: the model keeps the original CLIP (the teacher, also the
  zero-shot tower) and stores trainable copies of only the last `n` blocks, final LayerNorm and projection
  (`student.*`). This equals a full student copy whose first blocks are frozen, and keeps checkpoints small (no
  teacher copy is saved: it is the untouched `clip`).
- Stage 2 (`prompt_tuning="context"`, the paper's intent) learns CoOp-style context vectors, one per word of the
  template around the label ("There is a" / "in the scene"), initialised from those words' embeddings, so stage 2
  starts exactly at stage 1's label embeddings. `prompt_tuning="token_table"` reproduces the official code: a
  trainable copy of the whole token-embedding table, with the label words kept at their frozen embeddings.
- Logits are `logit_scale * fused + logit_bias` with `logit_scale = 1`, `logit_bias = 0` by default (the fused score
  itself, in [-1, 1]); the ranking margin is in those units. Pixel normalisation follows the backbone's processor (the
  official code feeds ImageNet mean/std to both towers).

`label_maps [B, C, h, w]` are the student's patch scores `<p_j, t_c>`. Saved weights: the original CLIP, the student
copies and (stage 2) the prompt vectors (or the token table), so the folder loads on its own.
"""


def _template_parts(template: str) -> tuple[list[str], list[str]]:
    """Words before and after the `{}` of a template: "There is a {} in the scene" → (["There", "is", "a"],
    ["in", "the", "scene"])."""
    prefix, suffix = template.split("{}")
    return prefix.split(), suffix.split()


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


class MKTPromptLearner(nn.Module):
    """Stage 2's learnable text side for one template "<prefix words> {} <suffix words>".

    `"context"`: one learned vector per template word (`prefix_context [P, H_t]`, `suffix_context [S, H_t]`).
    `"token_table"`: a trainable copy of the token-embedding table `[V, H_t]` (label words keep frozen embeddings).
    """

    def __init__(self, config: MKTConfig, text_config, template: str):
        super().__init__()
        self.mode = config.prompt_tuning
        self.template = template
        prefix_words, suffix_words = _template_parts(template)
        hidden = text_config.hidden_size
        if self.mode == "context":
            self.prefix_context = nn.Parameter(torch.zeros(len(prefix_words), hidden))
            self.suffix_context = nn.Parameter(torch.zeros(len(suffix_words), hidden))
        else:
            self.token_embedding = nn.Embedding(text_config.vocab_size, hidden)


class MKTModel(OVMLCPreTrainedModel):
    """MKT: two-stream (global CLS + top-k local patches) scores from a student CLIP tower distilled from the frozen
    original; stage 2 tunes the prompt.

    `encode_image_features` returns only what frozen weights compute, so the trainer can cache it: in stage 1 the
    hidden states after the frozen blocks `hidden_states [B, 1 + N, H_v]` and the teacher's CLIP image embedding
    `teacher_embeds [B, D]` (the distillation target); in stage 2 the student's outputs `image_embeds [B, D]` and
    `patch_embeds [B, N, D]`. `score` runs whatever is left.
    """

    config: MKTConfig
    # encode_image_features only runs frozen weights in both stages (see the class docstring).
    uses_frozen_image_features = True
    # Scores are L2-normalised across the label set: score each evaluation view (ZSL, GZSL) with its own labels.
    scores_depend_on_label_set = True

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
        if config.stage == 2:
            self.prompt_learner = MKTPromptLearner(config, self.clip.config.text_config, self.prompt_template)
        self.post_init()
        self._freeze()

    # ------------------------------------------------------------------ set-up
    @property
    def prompt_template(self) -> str:
        templates = load_templates(self.config.templates or "mkt")
        if len(templates) != 1:
            raise ValueError(f"MKT uses a single prompt template; config.templates gives {len(templates)}")
        return templates[0]

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
        if self.prompt_learner is not None and self.prompt_learner.mode == "token_table":
            pairs[id(self.prompt_learner.token_embedding)] = self.clip.text_model.embeddings.token_embedding
        return pairs

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        if not hasattr(self, "student"):
            return  # MKT's own modules do not exist yet
        source = self._copy_sources().get(id(module))
        if source is not None:
            for name, parameter in module.named_parameters(recurse=False):
                init.copy_(parameter, source.get_parameter(name))
        elif module is self.prompt_learner and module.mode == "context":
            self._init_prompt_context(module)

    def _init_prompt_context(self, learner: MKTPromptLearner) -> None:
        if all(getattr(vectors, "_is_hf_initialized", False) for vectors in learner.parameters()):
            return  # loaded from a checkpoint
        token_embedding = self.clip.text_model.embeddings.token_embedding.weight  # [V, H_t]
        for vectors, words in zip((learner.prefix_context, learner.suffix_context), _template_parts(learner.template)):
            if vectors.numel() == 0:
                continue
            tokenizer = self._tokenizer_for_init() if self.config.prompt_context_init == "template" else None
            if tokenizer is None:
                init.normal_(vectors, mean=0.0, std=self.config.initializer_range)
            else:  # each word starts at (the mean of) its token embeddings
                ids = [tokenizer(word, add_special_tokens=False)["input_ids"] for word in words]
                init.copy_(vectors, torch.stack([token_embedding[word_ids].mean(dim=0) for word_ids in ids]))

    def _tokenizer_for_init(self):
        try:
            return self.text_tokenizer
        except (OSError, ValueError) as error:
            logger.warning(
                f"MKT prompt context: no tokenizer to read the template words ({error}); random init instead"
            )
            return None

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
    def text_side_modules(self) -> tuple[nn.Module, ...]:
        modules = text_tower_modules(self.clip)
        return modules if self.prompt_learner is None else (*modules, self.prompt_learner)

    def encode_label_embeddings(self, vocabulary: LabelVocabulary) -> torch.Tensor:
        if self.prompt_learner is None:
            return super().encode_label_embeddings(vocabulary)  # stage 1: frozen template embeddings (cached)
        if list(vocabulary.templates) != [self.prompt_template]:
            raise ValueError(
                f"this stage-2 MKT model tuned the prompt {self.prompt_template!r}; the vocabulary uses "
                f"{vocabulary.templates[:3]}"
            )
        if self.training and torch.is_grad_enabled() and any(p.requires_grad for p in self.prompt_learner.parameters()):
            return self._pool(self.prompt_label_embeddings(vocabulary.names), vocabulary)  # with gradients
        table = self.label_cache.table(self.text_fingerprint(), vocabulary.templates_key)
        missing = [name for name in vocabulary.names if name not in table]
        if missing:
            with torch.no_grad():
                embeddings = self._pool(self.prompt_label_embeddings(missing), vocabulary).float().cpu()
            table.update(zip(missing, embeddings))
            self.label_cache.persist(self.text_fingerprint(), vocabulary.templates_key)
        return torch.stack([table[name] for name in vocabulary.names]).to(self.device)

    @staticmethod
    def _pool(embeddings: torch.Tensor, vocabulary: LabelVocabulary) -> torch.Tensor:
        return F.normalize(embeddings, dim=-1) if vocabulary.pool == "normalized" else embeddings

    def prompt_label_embeddings(self, names: list[str]) -> torch.Tensor:
        """Text embeddings `[C, D]` of the tuned prompt for `names` (differentiable w.r.t. the prompt learner)."""
        learner = self.prompt_learner
        tokenizer = self.text_tokenizer
        prefix_words, suffix_words = _template_parts(learner.template)
        prefix_ids = [i for word in prefix_words for i in tokenizer(word, add_special_tokens=False)["input_ids"]]
        suffix_ids = [i for word in suffix_words for i in tokenizer(word, add_special_tokens=False)["input_ids"]]
        tokens = tokenize_prompts(tokenizer, [learner.template.format(name) for name in names]).to(self.device)
        input_ids = tokens["input_ids"]  # [C, T]
        eos = eos_positions(input_ids, text_eos_token_id(self.clip, tokenizer))  # [C]
        frozen_table = self.clip.text_model.embeddings.token_embedding
        label_spans = []
        for row, (ids, end) in enumerate(zip(input_ids.tolist(), eos.tolist())):
            start, stop = 1 + len(prefix_ids), end - len(suffix_ids)
            if ids[1:start] != prefix_ids or ids[stop:end] != suffix_ids or stop <= start:
                raise ValueError(
                    f"label {names[row]!r}: the prompt {learner.template.format(names[row])!r} does not tokenize as "
                    f"template words + label words (truncated, or the tokenizer merges across the label boundary)"
                )
            label_spans.append((start, stop))
        if learner.mode == "token_table":
            label_mask = torch.zeros_like(input_ids, dtype=torch.bool)
            for row, (start, stop) in enumerate(label_spans):
                label_mask[row, start:stop] = True
            # Label words keep their frozen embeddings (detached); every other position reads the trainable table.
            embeds = torch.where(
                label_mask.unsqueeze(-1), frozen_table(input_ids).detach(), learner.token_embedding(input_ids)
            )
            return text_features_from_embeddings(self.clip, embeds, eos)
        # "context": [SOT] prefix vectors, label token embeddings, suffix vectors [EOT], padded with EOT embeddings.
        special = frozen_table(input_ids[:, :1]).detach()  # [C, 1, H_t] start token
        end_token = frozen_table(input_ids.gather(1, eos[:, None])).detach()  # [C, 1, H_t]
        sequences, eos_index = [], []
        for row, (start, stop) in enumerate(label_spans):
            label_embeds = frozen_table(input_ids[row, start:stop]).detach()  # [L_c, H_t]
            parts = [special[row], learner.prefix_context, label_embeds, learner.suffix_context, end_token[row]]
            sequence = torch.cat([part.to(label_embeds.dtype) for part in parts])  # [T_c, H_t]
            sequences.append(sequence)
            eos_index.append(sequence.shape[0] - 1)
        max_positions = self.clip.config.text_config.max_position_embeddings
        longest = max(sequence.shape[0] for sequence in sequences)
        if longest > max_positions:
            raise ValueError(f"a tuned prompt is {longest} tokens long; the text tower takes at most {max_positions}")
        padded = torch.stack(
            [torch.cat([s, s[-1:].expand(longest - s.shape[0], -1)]) for s in sequences]
        )  # [C, T', H_t]
        eos_index = torch.tensor(eos_index, device=padded.device)
        return text_features_from_embeddings(self.clip, padded, eos_index)


MKTConfig.register_for_auto_class()
MKTModel.register_for_auto_class("AutoModel")

__all__ = ["CARD_TEXT", "MKTModel"]
