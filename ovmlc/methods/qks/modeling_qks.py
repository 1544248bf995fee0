"""QKS (Query-Based Knowledge Sharing) as a Hub-native model.

Zhu et al., "Query-Based Knowledge Sharing for Open-Vocabulary Multi-Label Classification", arXiv 2401.01181 /
ACM TOMM 2025. Written from the paper and the notes in `docs/methods.md`; no code copied from the official repo.
"""

import math

import torch
from torch import nn
from transformers import initialization as init
from transformers.activations import ACT2FN

from ovmlc.core.backbones import (
    backbone_family,
    embedding_dim,
    patch_grid_size,
    token_projection_weight,
    vision_tokens,
)
from ovmlc.core.losses import asymmetric_loss, masked_bce_with_logits
from ovmlc.core.modeling_base import OVMLCPreTrainedModel
from ovmlc.core.outputs import MultiLabelOutput

from .configuration_qks import QKSConfig


class QKSAttention(nn.Module):
    """Multi-head attention whose queries come from the query tokens and keys/values from `context` (the queries
    themselves for self-attention, image tokens for cross-attention); returns the attention probabilities too."""

    def __init__(self, hidden_size: int, context_size: int, num_heads: int, dropout: float):
        super().__init__()
        if hidden_size % num_heads:
            raise ValueError(f"query_hidden_size {hidden_size} is not divisible by query_num_heads {num_heads}")
        self.num_heads = num_heads
        self.head_dim = hidden_size // num_heads
        self.q_proj = nn.Linear(hidden_size, hidden_size)
        self.k_proj = nn.Linear(context_size, hidden_size)
        self.v_proj = nn.Linear(context_size, hidden_size)
        self.out_proj = nn.Linear(hidden_size, hidden_size)
        self.dropout = nn.Dropout(dropout)

    def _heads(self, states: torch.Tensor) -> torch.Tensor:
        batch, length, _ = states.shape
        return states.view(batch, length, self.num_heads, self.head_dim).transpose(1, 2)  # [B, heads, T, d]

    def forward(self, hidden_states: torch.Tensor, context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        query = self._heads(self.q_proj(hidden_states))  # [B, heads, m, d]
        key = self._heads(self.k_proj(context))  # [B, heads, T, d]
        value = self._heads(self.v_proj(context))  # [B, heads, T, d]
        scores = query @ key.transpose(-1, -2) / math.sqrt(self.head_dim)  # [B, heads, m, T]
        probabilities = scores.softmax(dim=-1)
        attended = self.dropout(probabilities) @ value  # [B, heads, m, d]
        attended = attended.transpose(1, 2).reshape(hidden_states.shape)  # [B, m, H]
        return self.out_proj(attended), probabilities


class QKSQueryLayer(nn.Module):
    """One query-transformer layer (post-LayerNorm, as BERT/BLIP-2's Q-Former): self-attention among the queries,
    cross-attention to the image tokens, FFN; each sub-block `x = LayerNorm(x + dropout(f(x)))`."""

    def __init__(self, config: QKSConfig, hidden_size: int, vision_size: int, num_heads: int, intermediate: int):
        super().__init__()
        self.self_attention = QKSAttention(hidden_size, hidden_size, num_heads, config.query_attention_dropout)
        self.self_attention_norm = nn.LayerNorm(hidden_size, eps=config.query_layer_norm_eps)
        self.cross_attention = QKSAttention(hidden_size, vision_size, num_heads, config.query_attention_dropout)
        self.cross_attention_norm = nn.LayerNorm(hidden_size, eps=config.query_layer_norm_eps)
        self.fc1 = nn.Linear(hidden_size, intermediate)
        self.activation = ACT2FN["gelu"]
        self.fc2 = nn.Linear(intermediate, hidden_size)
        self.mlp_norm = nn.LayerNorm(hidden_size, eps=config.query_layer_norm_eps)
        self.dropout = nn.Dropout(config.query_dropout)

    def forward(self, queries: torch.Tensor, image_tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        attended, _ = self.self_attention(queries, queries)
        queries = self.self_attention_norm(queries + self.dropout(attended))  # [B, m, H]
        attended, cross_probabilities = self.cross_attention(queries, image_tokens)
        queries = self.cross_attention_norm(queries + self.dropout(attended))  # [B, m, H]
        transformed = self.fc2(self.activation(self.fc1(queries)))
        queries = self.mlp_norm(queries + self.dropout(transformed))  # [B, m, H]
        return queries, cross_probabilities  # cross_probabilities: [B, heads, m, T]


class QKSQueryTransformer(nn.Module):
    """Knowledge extraction: `m` learnable label-agnostic query tokens refined over `L` layers against image tokens."""

    def __init__(self, config: QKSConfig, vision_size: int, vision_heads: int):
        super().__init__()
        hidden_size = config.query_hidden_size or vision_size
        num_heads = config.query_num_heads or vision_heads
        intermediate = config.query_intermediate_size or 4 * hidden_size
        self.query_tokens = nn.Parameter(torch.zeros(1, config.num_queries, hidden_size))
        self.input_norm = nn.LayerNorm(hidden_size, eps=config.query_layer_norm_eps)
        self.dropout = nn.Dropout(config.query_dropout)
        self.layers = nn.ModuleList(
            [
                QKSQueryLayer(config, hidden_size, vision_size, num_heads, intermediate)
                for _ in range(config.num_query_layers)
            ]
        )

    def forward(self, image_tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """`image_tokens [B, T, H_v]` → query features `[B, m, H]` and the last layer's cross-attention
        probabilities averaged over heads `[B, m, T]`."""
        queries = self.query_tokens.expand(image_tokens.shape[0], -1, -1).to(image_tokens.dtype)
        queries = self.dropout(self.input_norm(queries))  # [B, m, H]
        cross_probabilities = None
        for layer in self.layers:
            queries, cross_probabilities = layer(queries, image_tokens)
        return queries, cross_probabilities.mean(dim=1)


class QKSModel(OVMLCPreTrainedModel):
    """QKS: frozen CLIP image tokens → query transformer → per-label max over queries of `<q_j, t_c>`.

    `encode_image_features` returns `{"vision_tokens": [B, G + N, H_v]}` (frozen, so the trainer can cache it; `G`
    global tokens first: CLIP's CLS, none on SigLIP);
    `score` runs the trainable part. Outputs `logits [B, C]`, `query_index [B, C]` and, with
    `return_label_maps=True`, `label_maps [B, C, h, w]` (cross-attention of the picked query).
    """

    config: QKSConfig
    # The image tower is frozen: `encode_image_features` outputs can be cached by the trainer.
    uses_frozen_image_features = True
    # Initialised here (query tokens, transformer; the projection from the backbone's), absent from a checkpoint.
    modules_created_on_load = ("query_transformer", "query_projection")
    # SigLIP: the queries attend to the patch tokens (there is no CLS), the projection starts from the linear part of
    # the pooling head's value path (`token_projection_weight`; docs/siglip.md).
    supported_backbone_families = ("clip", "siglip")

    def __init__(self, config: QKSConfig):
        super().__init__(config)
        vision_config = self.clip.config.vision_config
        self.query_transformer = QKSQueryTransformer(
            config, vision_config.hidden_size, vision_config.num_attention_heads
        )
        query_size = config.query_hidden_size or vision_config.hidden_size
        self.query_projection = nn.Linear(query_size, embedding_dim(self.clip), bias=False)
        self.post_init()
        self._freeze()

    def _freeze(self) -> None:
        self.clip.requires_grad_(False)
        self.query_projection.requires_grad_(bool(self.config.train_projection))

    def post_load(self) -> None:
        self._freeze()

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        std = self.config.initializer_range
        if module is getattr(self, "query_transformer", None):
            init.normal_(module.query_tokens, mean=0.0, std=std)
        elif module is getattr(self, "query_projection", None):
            # Start from the backbone's token-to-joint-space map: CLIP's own projection (the official code trains
            # CLIP's `proj` in place); on SigLIP the linear part of the pooling head's value path.
            source = token_projection_weight(self.clip)  # [D, H_v]
            if source.shape == module.weight.shape:
                init.copy_(module.weight, source)

    def train(self, mode: bool = True):
        super().train(mode)
        self.clip.eval()  # frozen backbone: never in training mode
        return self

    def encode_image_features(self, pixel_values: torch.Tensor) -> dict[str, torch.Tensor]:
        with torch.no_grad():
            tokens = vision_tokens(self.clip, pixel_values)  # [B, G + N, H_v], CLIP's CLS first (G = 1; SigLIP 0)
        return {"vision_tokens": tokens}

    def score(self, image_features, label_embeds, return_label_maps=False) -> MultiLabelOutput:
        if "vision_tokens" not in image_features:
            raise ValueError(
                f"QKSModel.score needs image_features['vision_tokens'] (from encode_image_features), "
                f"got keys {sorted(image_features)}"
            )
        tokens = image_features["vision_tokens"]  # [B, G + N, H_v]
        global_tokens = backbone_family(self.clip).global_tokens  # CLIP: the CLS token; SigLIP: none
        tokens = tokens if self.config.include_cls_token else tokens[:, global_tokens:]
        queries, cross_probabilities = self.query_transformer(tokens.to(self.query_projection.weight.dtype))
        query_embeds = self.query_projection(queries)  # [B, m, D]
        label_embeds = label_embeds.to(query_embeds.dtype)  # [C, D], raw (unnormalised) prompt-pool embeddings
        similarities = torch.einsum("bmd,cd->bcm", query_embeds, label_embeds)  # [B, C, m]
        best, query_index = similarities.max(dim=-1)  # [B, C]
        scale = 1.0 if self.config.logit_scale is None else float(self.config.logit_scale)
        logits = scale * best + self.config.logit_bias
        label_maps = None
        if return_label_maps:
            patch_probabilities = (
                cross_probabilities[..., global_tokens:] if self.config.include_cls_token else cross_probabilities
            )
            height, width = patch_grid_size(self.clip)
            index = query_index.unsqueeze(-1).expand(-1, -1, patch_probabilities.shape[-1])  # [B, C, N]
            picked = patch_probabilities.gather(1, index)  # [B, C, N]
            label_maps = picked.reshape(picked.shape[0], picked.shape[1], height, width)  # [B, C, h, w]
        return MultiLabelOutput(logits=logits, label_maps=label_maps, query_index=query_index)

    def compute_loss(self, outputs, labels, label_mask, image_features) -> torch.Tensor:
        mask = label_mask if self.config.mask_unannotated else None
        if self.config.loss == "asl":
            return asymmetric_loss(
                outputs.logits,
                labels,
                mask,
                gamma_neg=self.config.asl_gamma_neg,
                gamma_pos=self.config.asl_gamma_pos,
                clip=self.config.asl_clip,
            )
        return masked_bce_with_logits(outputs.logits, labels, mask)

    @staticmethod
    def query_usage(query_index: torch.Tensor, num_queries: int) -> torch.Tensor:
        """How often each query was picked: `query_index [B, C]` (or `[C]`) → counts `[num_queries]`."""
        return torch.bincount(query_index.reshape(-1).cpu(), minlength=num_queries)


QKSConfig.register_for_auto_class()
QKSModel.register_for_auto_class("AutoModel")

__all__ = ["QKSModel"]
