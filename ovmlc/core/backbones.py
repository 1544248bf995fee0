"""CLIP helpers shared by every method: backbone loading, image/dense features, text forward from embeddings.

All methods reach CLIP only through these functions, so a change in transformers' CLIP internals is fixed once.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoTokenizer, CLIPImageProcessorPil, CLIPModel, PreTrainedTokenizerBase
from transformers.masking_utils import create_causal_mask

from ..files import CONFIG_FILE
from ..resources import DEFAULT_BACKBONE as DEFAULT_BACKBONE  # re-exported: the default of every loader
from ..resources import SYNTHETIC_CLIP_ALIAS, SYNTHETIC_CLIP_DIR

# The small CLIP pretrained on the synthetic world, shipped inside the package (the offline default).
SYNTHETIC_CLIP_PATH = SYNTHETIC_CLIP_DIR
BACKBONE_ALIASES = {SYNTHETIC_CLIP_ALIAS: SYNTHETIC_CLIP_PATH}


class BackboneNotFoundError(OSError):
    """A backbone name is neither a local folder, an alias nor a reachable Hub id."""


@dataclass
class CLIPBackbone:
    """A CLIP model with the tokenizer and image processor it was trained with."""

    model: CLIPModel
    tokenizer: PreTrainedTokenizerBase
    image_processor: CLIPImageProcessorPil
    name_or_path: str


def resolve_backbone(name_or_path: str | os.PathLike) -> str:
    """Map aliases ("synthetic") to their local folder; anything else is a local folder or a Hub id."""
    alias = BACKBONE_ALIASES.get(str(name_or_path))
    if alias is None:
        return str(name_or_path)
    if not Path(alias).is_dir():  # the flat remote-code copy of this module carries no package data
        raise BackboneNotFoundError(
            f"the backbone {str(name_or_path)!r} is the offline CLIP shipped inside the ovmlc package, which this copy "
            "of the model code does not carry: `pip install ovmlc` and load with `ovmlc.load_model`, or save the "
            "model with `save_pretrained(..., save_backbone=True)` so that its folder holds the backbone"
        )
    return str(alias)


def load_image_processor(name_or_path: str | os.PathLike, **kwargs) -> CLIPImageProcessorPil:
    # Always the PIL backend: the torchvision one is not installed on CPU machines and the two differ slightly.
    return CLIPImageProcessorPil.from_pretrained(resolve_backbone(name_or_path), **kwargs)


def load_clip_backbone(
    name_or_path: str | os.PathLike = DEFAULT_BACKBONE,
    dtype: torch.dtype | str | None = torch.float32,
    revision: str | None = None,
    attn_implementation: str | None = None,
) -> CLIPBackbone:
    """Load a CLIP checkpoint (Hub id such as `openai/clip-vit-base-patch16`, a local folder laid out like the Hub
    repo, or the alias `"synthetic"`) with its tokenizer and a `CLIPImageProcessorPil`."""
    resolved = resolve_backbone(name_or_path)
    looks_local = os.path.sep in resolved or resolved.startswith(".") or Path(resolved).exists()
    if looks_local and not Path(resolved, CONFIG_FILE).is_file():
        raise BackboneNotFoundError(f"{resolved}: not a CLIP checkpoint folder (config.json missing)")
    kwargs = {"revision": revision} if revision else {}
    try:
        model = CLIPModel.from_pretrained(resolved, dtype=dtype, attn_implementation=attn_implementation, **kwargs)
        tokenizer = AutoTokenizer.from_pretrained(resolved, **kwargs)
        image_processor = load_image_processor(resolved, **kwargs)
    except OSError as error:
        raise BackboneNotFoundError(
            f"could not load CLIP backbone {name_or_path!r}: {error}. Use a local folder, the offline alias "
            f"'synthetic', or a Hub id with network access (HF_HUB_OFFLINE must be unset)."
        ) from error
    return CLIPBackbone(
        model=model.eval(), tokenizer=tokenizer, image_processor=image_processor, name_or_path=str(name_or_path)
    )


def patch_grid_size(clip: CLIPModel) -> tuple[int, int]:
    """(h, w) of the ViT patch grid at the configured image size."""
    vision_config = clip.config.vision_config
    side = vision_config.image_size // vision_config.patch_size
    return side, side


def vision_tokens(clip: CLIPModel, pixel_values: torch.Tensor) -> torch.Tensor:
    """All vision tokens after the final LayerNorm, before projection: `[B, 1 + N, H_v]` (CLS first).

    HF applies `post_layernorm` only to the pooled CLS; OpenAI's `ln_post` applies to every token, which is what
    dense methods (MKT, QKS, MaskCLIP-style maps) expect.
    """
    outputs = clip.vision_model(pixel_values=pixel_values)
    return clip.vision_model.post_layernorm(outputs.last_hidden_state)


def image_features(clip: CLIPModel, pixel_values: torch.Tensor) -> dict[str, torch.Tensor]:
    """Global and dense image embeddings in the joint space from one vision forward.

    Returns `image_embeds [B, D]` (equal to `get_image_features(...).pooler_output`) and
    `patch_embeds [B, N, D]` (patch tokens through `post_layernorm` and `visual_projection`, CLS excluded).
    """
    tokens = vision_tokens(clip, pixel_values)  # [B, 1 + N, H_v]
    projected = clip.visual_projection(tokens)  # [B, 1 + N, D]
    return {"image_embeds": projected[:, 0], "patch_embeds": projected[:, 1:]}


def eos_positions(input_ids: torch.Tensor, eos_token_id: int) -> torch.Tensor:
    """Index of the first EOS token per row `[B]` (pad == eos in CLIP tokenizers, so the first one counts)."""
    is_eos = input_ids == eos_token_id
    if not bool(is_eos.any(dim=-1).all()):
        raise ValueError("every tokenized prompt must contain the EOS token (prompt truncated or tokenizer mismatch?)")
    return is_eos.int().argmax(dim=-1)


def text_eos_token_id(clip: CLIPModel, tokenizer: PreTrainedTokenizerBase | None = None) -> int:
    if tokenizer is not None and tokenizer.eos_token_id is not None:
        return int(tokenizer.eos_token_id)
    return int(clip.config.text_config.eos_token_id)


def text_features_from_embeddings(
    clip: CLIPModel,
    inputs_embeds: torch.Tensor,
    eos_index: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """CLIP text forward from token embeddings, so callers can insert learned context vectors or label tokens.

    `inputs_embeds [B, T, H_t]` (token embeddings, without positions) → + positions → causal encoder → final LN →
    pool at `eos_index [B]` → `text_projection`. Returns `[B, D]`; fed the plain token embeddings it equals
    `clip.get_text_features(input_ids).pooler_output`.
    """
    text_model = clip.text_model
    hidden_states = text_model.embeddings(inputs_embeds=inputs_embeds)  # [B, T, H_t]
    causal_mask = create_causal_mask(
        config=text_model.config, inputs_embeds=hidden_states, attention_mask=attention_mask, cache=None
    )
    encoded = text_model.encoder(inputs_embeds=hidden_states, attention_mask=causal_mask, is_causal=True)
    last_hidden_state = text_model.final_layer_norm(encoded.last_hidden_state)  # [B, T, H_t]
    pooled = last_hidden_state[torch.arange(last_hidden_state.shape[0], device=last_hidden_state.device), eos_index]
    return clip.text_projection(pooled)  # [B, D]


def tokenize_prompts(tokenizer: PreTrainedTokenizerBase, prompts: list[str], max_length: int | None = None):
    """Tokenize padded to the longest prompt (not 77): CLIP's causal text tower pools at the first EOS, so the
    output is identical and short prompts run ~5x faster."""
    limit = max_length or min(int(getattr(tokenizer, "model_max_length", 77) or 77), 77)
    return tokenizer(prompts, padding="longest", truncation=True, max_length=limit, return_tensors="pt")


def module_fingerprint(*modules: nn.Module, extra: str = "") -> str:
    """A short, stable digest of module weights (shapes + full contents), used to key embedding caches."""
    digest = hashlib.sha256(extra.encode())
    for module in modules:
        for name, tensor in sorted(module.state_dict().items()):
            digest.update(name.encode())
            digest.update(str(tuple(tensor.shape)).encode())
            digest.update(tensor.detach().to(torch.float32).cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def text_tower_modules(clip: CLIPModel) -> tuple[nn.Module, nn.Module]:
    """The modules that determine text embeddings (for cache fingerprints)."""
    return clip.text_model, clip.text_projection


def text_token_embedding(clip: CLIPModel) -> nn.Embedding:
    """The text tower's token-embedding table `[V, H_t]` (what prompt learners splice context vectors next to)."""
    return clip.text_model.embeddings.token_embedding


def text_context_length(clip: CLIPModel) -> int:
    """The longest token sequence the text tower takes (CLIP: 77 position embeddings)."""
    return int(clip.config.text_config.max_position_embeddings)


def text_padded_length(clip: CLIPModel, longest: int) -> int:
    """Length to pad a batch of prompt embeddings whose longest prompt has `longest` tokens (CLIP: `longest`; its
    causal tower makes padding after the EOS token irrelevant)."""
    return longest


def text_pool_positions(clip: CLIPModel, eos_index: torch.Tensor, sequence_length: int) -> torch.Tensor:
    """Position `[B]` the text tower pools for prompts whose EOS token sits at `eos_index [B]` in sequences of
    `sequence_length` tokens (CLIP pools the EOS token itself)."""
    return eos_index


# ---------------------------------------------------------------------------- label-cache fill: shared prompt prefix
# Label prompts through CLIP's text tower, without recomputing the template's shared start for every label.
#
# Filling a label cache is dominated by the text tower's linear layers, i.e. by the number of tokens pushed through
# it. Prompts of one template share their first tokens ("<bos> a photo of a" before every label): CLIP's text
# transformer is causal, so those tokens' hidden states (and their keys / values in every layer) are the same for every
# label. They are computed once; each batch then runs only the tokens from the label on, attending to the cached keys
# and values, and the last layer runs only the pooled (EOS) token, the only one whose output is read. With the
# `"single"` template this pushes roughly half the tokens of the plain path; the embeddings equal
# `clip.get_text_features(...).pooler_output` up to float rounding.
#
# This reaches into the text layers (attention projections), like the helpers in `clip_utils`; `supports_prefix_sharing`
# says when the layout is the one expected, and `encode_prompts` falls back to the plain forward otherwise.
#


def supports_prefix_sharing(clip) -> bool:
    """True for the HF CLIP text tower layout this module drives (embeddings, pre-LN layers, final LN)."""
    text_model = getattr(clip, "text_model", None)
    layers = getattr(getattr(text_model, "encoder", None), "layers", None)
    if text_model is None or not layers or not hasattr(text_model, "final_layer_norm"):
        return False
    attention = getattr(layers[0], "self_attn", None)
    return all(hasattr(attention, name) for name in ("q_proj", "k_proj", "v_proj", "out_proj", "head_dim", "scale"))


def pooled_positions(ids: Sequence[Sequence[int]], eos_token_id: int) -> list[int]:
    """Where CLIP pools each prompt: the first EOS token (the highest id for legacy configs with `eos_token_id == 2`,
    as transformers does)."""
    if eos_token_id == 2:
        return [max(range(len(row)), key=row.__getitem__) for row in ids]
    positions = []
    for row in ids:
        if eos_token_id not in row:
            raise ValueError("every tokenized prompt must contain the EOS token (tokenizer mismatch?)")
        positions.append(list(row).index(eos_token_id))
    return positions


def _heads(states: torch.Tensor, head_dim: int) -> torch.Tensor:
    batch, length, _ = states.shape
    return states.view(batch, length, -1, head_dim).transpose(1, 2)  # [B, heads, T, d]


def _merge_heads(states: torch.Tensor) -> torch.Tensor:
    batch, heads, length, head_dim = states.shape
    return states.transpose(1, 2).reshape(batch, length, heads * head_dim)  # [B, T, H]


@torch.no_grad()
def encode_prompts_sharing_prefix(
    clip,
    tokenizer,
    prompts: Sequence[str],
    batch_size: int = 256,
    on_batch: Callable[[int], None] | None = None,
) -> torch.Tensor:
    """Text embeddings `[N, D]` (float32, on CPU, in prompt order) of `prompts`, equal to
    `clip.get_text_features(**tokenize_prompts(tokenizer, prompts)).pooler_output`.

    Call it with the prompts of one template: the longest token prefix they all share is encoded once. Runs in the
    caller's autocast context (bf16 on CPU ~2x faster). `on_batch(n)` reports progress.
    """
    text_model = clip.text_model
    device = next(clip.parameters()).device
    limit = min(int(getattr(tokenizer, "model_max_length", 77) or 77), text_model.config.max_position_embeddings)
    ids = tokenizer(list(prompts), truncation=True, max_length=limit)["input_ids"]
    pooled = pooled_positions(ids, int(text_model.eos_token_id))
    # The shared prefix stops before the first pooled token, so every prompt keeps its pooled token in its suffix.
    shared = min(pooled)
    first = ids[0]
    for row in ids[1:]:
        shared = next((index for index in range(shared) if row[index] != first[index]), shared)
    layers = text_model.encoder.layers
    head_dim = layers[0].self_attn.head_dim

    # 1. The shared prefix once: keys and values of every layer, `[1, heads, P, d]`.
    prefix_cache: list[tuple[torch.Tensor, torch.Tensor]] = []
    if shared > 0:
        hidden = text_model.embeddings(input_ids=torch.tensor([first[:shared]], device=device))  # [1, P, H]
        for layer in layers:
            attention = layer.self_attn
            normed = layer.layer_norm1(hidden)
            keys, values = _heads(attention.k_proj(normed), head_dim), _heads(attention.v_proj(normed), head_dim)
            queries = _heads(attention.q_proj(normed), head_dim)
            attended = F.scaled_dot_product_attention(queries, keys, values, is_causal=True, scale=attention.scale)
            hidden = hidden + attention.out_proj(_merge_heads(attended))
            hidden = hidden + layer.mlp(layer.layer_norm2(hidden))
            prefix_cache.append((keys, values))

    # 2. The rest of each prompt, batched by length (little padding), attending to the cached prefix.
    embeddings = torch.empty(len(ids), clip.config.projection_dim)
    order = sorted(range(len(ids)), key=lambda index: len(ids[index]))
    pad = int(text_model.eos_token_id)  # padding sits after every pooled token: causal attention never reads it
    for start in range(0, len(order), batch_size):
        batch = order[start : start + batch_size]
        length = max(len(ids[index]) for index in batch) - shared
        tokens = torch.full((len(batch), length), pad, dtype=torch.long)
        for row, index in enumerate(batch):
            tokens[row, : len(ids[index]) - shared] = torch.tensor(ids[index][shared:])
        positions = torch.arange(shared, shared + length, device=device)[None]
        hidden = text_model.embeddings(input_ids=tokens.to(device), position_ids=positions)  # [b, S, H]
        allowed = torch.ones(length, shared + length, dtype=torch.bool, device=device)
        allowed[:, shared:] = torch.ones(length, length, dtype=torch.bool, device=device).tril()  # [S, P + S]
        pooled_index = torch.tensor([pooled[index] - shared for index in batch], device=device)  # [b]
        rows = torch.arange(len(batch), device=device)
        for number, layer in enumerate(layers):
            attention = layer.self_attn
            normed = layer.layer_norm1(hidden)
            keys, values = _heads(attention.k_proj(normed), head_dim), _heads(attention.v_proj(normed), head_dim)
            mask = allowed[None, None]  # [1, 1, S, P + S]
            if number == len(layers) - 1:  # only the pooled token's output is read after the last layer
                normed, hidden = normed[rows, pooled_index][:, None], hidden[rows, pooled_index][:, None]  # [b, 1, H]
                mask = allowed[pooled_index][:, None, None]  # [b, 1, 1, P + S]
            if prefix_cache:
                prefix_keys, prefix_values = prefix_cache[number]
                keys = torch.cat([prefix_keys.expand(len(batch), -1, -1, -1).to(keys.dtype), keys], dim=2)
                values = torch.cat([prefix_values.expand(len(batch), -1, -1, -1).to(values.dtype), values], dim=2)
            queries = _heads(attention.q_proj(normed), head_dim)
            attended = F.scaled_dot_product_attention(queries, keys, values, attn_mask=mask, scale=attention.scale)
            hidden = hidden + attention.out_proj(_merge_heads(attended))
            hidden = hidden + layer.mlp(layer.layer_norm2(hidden))
        features = clip.text_projection(text_model.final_layer_norm(hidden[:, 0]))  # [b, D]
        embeddings[batch] = features.float().cpu()
        if on_batch is not None:
            on_batch(len(batch))
    return embeddings


@torch.no_grad()
def encode_prompts_plain(
    clip, tokenizer, prompts: Sequence[str], batch_size: int = 256, on_batch: Callable[[int], None] | None = None
) -> torch.Tensor:
    """`clip.get_text_features` over `prompts` sorted by token length (little padding): `[N, D]` float32 on CPU."""

    device = next(clip.parameters()).device
    lengths = [len(ids) for ids in tokenizer(list(prompts), truncation=True, max_length=77)["input_ids"]]
    order = sorted(range(len(prompts)), key=lengths.__getitem__)  # similar lengths share a batch
    embeddings = torch.empty(len(prompts), clip.config.projection_dim)
    for start in range(0, len(prompts), batch_size):
        batch = order[start : start + batch_size]
        tokens = tokenize_prompts(tokenizer, [prompts[index] for index in batch]).to(device)
        embeddings[batch] = clip.get_text_features(**tokens).pooler_output.float().cpu()  # [b, D]
        if on_batch is not None:
            on_batch(len(batch))
    return embeddings
