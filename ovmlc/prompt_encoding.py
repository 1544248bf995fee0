"""Label prompts through CLIP's text tower, without recomputing the template's shared start for every label.

Filling a label cache is dominated by the text tower's linear layers, i.e. by the number of tokens pushed through
it. Prompts of one template share their first tokens ("<bos> a photo of a" before every label): CLIP's text
transformer is causal, so those tokens' hidden states (and their keys / values in every layer) are the same for every
label. They are computed once; each batch then runs only the tokens from the label on, attending to the cached keys
and values, and the last layer runs only the pooled (EOS) token, the only one whose output is read. With the
`"single"` template this pushes roughly half the tokens of the plain path; the embeddings equal
`clip.get_text_features(...).pooler_output` up to float rounding.

This reaches into the text layers (attention projections), like the helpers in `clip_utils`; `supports_prefix_sharing`
says when the layout is the one expected, and `encode_prompts` falls back to the plain forward otherwise.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F


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
    from .clip_utils import tokenize_prompts

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
