"""Prompt encoding: the token layout of a learned prompt, name-span detection, splicing of context vectors and label
tokens into the token embeddings, and the text forward from embeddings.

A prompt for label `name` stands for the literal text `before + name + after` (`PromptLearningConfig.literal_parts`):
its tokens are `[front specials] [before] [name…] [after] [EOS]`, where `before` are context tokens and `after` is
context tokens followed by a fixed tail ("." without "{}" in `ctx_init`). The literal is tokenized once per label to
find the name's tokens as the tokenizer produces them in context; the learned sequence is then
`[front] ctx_before name… ctx_after tail [EOS]`, with one vector per context token (or word, `word_mean`). Every
backbone access goes through `ovmlc.core.backbones` (token table, pooling position, padded length, text forward).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn
from transformers import PreTrainedTokenizerBase

from ovmlc.core.backbones import (
    eos_positions,
    text_features_from_embeddings,
    text_padded_length,
    text_pool_positions,
)

from .configuration_prompting import DEFAULT_N_CTX, PromptLearningConfig

# Labels listed in an error message before "...".
MAX_LISTED = 8


def _token_ids(tokenizer: PreTrainedTokenizerBase, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"]) if text.strip() else []


@dataclass(frozen=True)
class PromptLayout:
    """Where the name and the context go in a learned prompt (resolved from a `PromptLearningConfig` + tokenizer).

    literal_before, literal_after: the text around the name in the literal prompt.
    front_ids: special tokens before the text (CLIP: the start token); eos_token_id, pad_token_id: the tokenizer's.
    before_ids, after_ids: tokens of `literal_before` / `literal_after` as they must appear around the name.
    tail_ids: the fixed (frozen) tokens at the end of `after_ids` ("." or none).
    init_before, init_after: per context vector before / after the name, the token ids whose embeddings' mean
        initialises it (one token each in `token` mode; a word's tokens in `word_mean` mode; empty lists when the
        context starts random without words).
    """

    literal_before: str
    literal_after: str
    front_ids: tuple[int, ...]
    before_ids: tuple[int, ...]
    after_ids: tuple[int, ...]
    tail_ids: tuple[int, ...]
    eos_token_id: int
    pad_token_id: int
    n_before: int
    n_after: int
    init_before: tuple[tuple[int, ...], ...] = ()
    init_after: tuple[tuple[int, ...], ...] = ()

    @property
    def n_ctx(self) -> int:
        return self.n_before + self.n_after

    @property
    def init_token_ids(self) -> tuple[tuple[int, ...], ...]:
        """Per context vector (before, then after the name) the token ids it starts from; empty = random."""
        return (*self.init_before, *self.init_after)

    def literal(self, name: str) -> str:
        return f"{self.literal_before}{name}{self.literal_after}"


def resolve_prompt_layout(config: PromptLearningConfig, tokenizer: PreTrainedTokenizerBase) -> PromptLayout:
    """The token layout of `config`'s prompts under `tokenizer` (counts context tokens, checks `n_ctx`)."""
    eos_token_id = tokenizer.eos_token_id
    if eos_token_id is None:
        raise ValueError(f"prompt learning needs a tokenizer with an EOS token; {type(tokenizer).__name__} has none")
    pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos_token_id
    empty = list(tokenizer("")["input_ids"])
    front_ids = tuple(empty[: empty.index(eos_token_id)]) if eos_token_id in empty else ()
    literal_before, literal_after = config.literal_parts()
    before_ids, after_ids = _token_ids(tokenizer, literal_before), _token_ids(tokenizer, literal_after)
    tail_ids = _token_ids(tokenizer, config.tail_text())
    words_before, words_after = config.context_words()
    context_after_ids = _token_ids(tokenizer, " ".join(words_after))
    if after_ids != context_after_ids + tail_ids:
        raise ValueError(
            f"ctx_init {config.ctx_init!r}: the context words after the class name and the fixed "
            f"{config.tail_text()!r} do not tokenize separately ({after_ids} != {context_after_ids} + {tail_ids})"
        )
    if config.ctx_init is None:
        n_ctx = config.n_ctx or DEFAULT_N_CTX
        n_before = {"end": n_ctx, "front": 0, "middle": n_ctx // 2}[config.class_token_position]
        return PromptLayout(
            literal_before, literal_after, front_ids, tuple(before_ids), tuple(after_ids), tuple(tail_ids),
            int(eos_token_id), int(pad_token_id), n_before, n_ctx - n_before,
        )  # fmt: skip
    if config.ctx_init_mode == "token":
        init_before = tuple((token,) for token in before_ids)
        init_after = tuple((token,) for token in context_after_ids)
    else:  # word_mean: one vector per word, from the mean of the word's tokens
        init_before = tuple(tuple(_token_ids(tokenizer, word)) for word in words_before)
        init_after = tuple(tuple(_token_ids(tokenizer, word)) for word in words_after)
        empty_words = [w for w, ids in zip([*words_before, *words_after], [*init_before, *init_after]) if not ids]
        if empty_words:
            raise ValueError(f"ctx_init {config.ctx_init!r}: words {empty_words} tokenize to nothing")
    layout = PromptLayout(
        literal_before, literal_after, front_ids, tuple(before_ids), tuple(after_ids), tuple(tail_ids),
        int(eos_token_id), int(pad_token_id), len(init_before), len(init_after), init_before, init_after,
    )  # fmt: skip
    if config.n_ctx is not None and config.n_ctx != layout.n_ctx:
        unit = "tokens" if config.ctx_init_mode == "token" else "words"
        raise ValueError(
            f"PromptLearningConfig.n_ctx={config.n_ctx} but ctx_init {config.ctx_init!r} has {layout.n_ctx} {unit} "
            f"under this tokenizer; leave n_ctx unset (None) to take the count from ctx_init"
        )
    return layout


@dataclass(frozen=True)
class TokenizedPrompts:
    """Literal prompts of some labels, tokenized, with the name's token span per row.

    input_ids `[C, T]` (padded); name_start, name_stop `[C]` (the name is `input_ids[c, start:stop]`); eos `[C]`.
    """

    names: tuple[str, ...]
    input_ids: torch.Tensor
    name_start: torch.Tensor
    name_stop: torch.Tensor
    eos: torch.Tensor

    @property
    def name_lengths(self) -> torch.Tensor:
        return self.name_stop - self.name_start

    def name_token_ids(self, row: int) -> list[int]:
        return self.input_ids[row, int(self.name_start[row]) : int(self.name_stop[row])].tolist()

    def sequence_lengths(self, layout: PromptLayout) -> torch.Tensor:
        """Tokens per learned prompt `[C]`: front + context + name + tail + EOS."""
        return len(layout.front_ids) + layout.n_ctx + self.name_lengths + len(layout.tail_ids) + 1

    def select(self, rows: Sequence[int]) -> TokenizedPrompts:
        index = torch.as_tensor(list(rows), dtype=torch.long)
        return TokenizedPrompts(
            tuple(self.names[i] for i in rows),
            self.input_ids[index],
            self.name_start[index],
            self.name_stop[index],
            self.eos[index],
        )


def _listed(items: Sequence) -> str:
    shown = ", ".join(map(str, items[:MAX_LISTED]))
    return shown + (f", ... ({len(items)} in all)" if len(items) > MAX_LISTED else "")


def tokenize_label_prompts(
    tokenizer: PreTrainedTokenizerBase, layout: PromptLayout, names: Sequence[str], max_positions: int
) -> TokenizedPrompts:
    """Tokenize the literal prompts of `names` and find each name's tokens (multi-token names included).

    Raises `ValueError` naming the labels whose literal prompt does not tokenize as `[front] before name after
    [EOS]` (the tokenizer merges a name's first/last characters with the text around it) or whose learned prompt
    would exceed the text tower's `max_positions` tokens.
    """
    names = tuple(names)
    if not names:
        raise ValueError("no labels to encode")
    # Right padding, whatever the tokenizer's default (Gemma's, for SigLIP 2, is left): the spans below count from 0.
    literals = [layout.literal(name) for name in names]
    encoded = tokenizer(literals, padding="longest", padding_side="right", return_tensors="pt")
    input_ids = encoded["input_ids"]  # [C, T]
    eos = eos_positions(input_ids, layout.eos_token_id)  # [C]
    front, before, after = list(layout.front_ids), list(layout.before_ids), list(layout.after_ids)
    start = len(front) + len(before)
    starts, stops, merged = [], [], []
    for row, (ids, end) in enumerate(zip(input_ids.tolist(), eos.tolist())):
        stop = end - len(after)
        if ids[: len(front)] != front or ids[len(front) : start] != before or ids[stop:end] != after or stop <= start:
            merged.append(f"{names[row]!r} → {ids[: end + 1]}")
        starts.append(start)
        stops.append(stop)
    if merged:
        raise ValueError(
            f"the prompt of some labels does not tokenize as the context text + the label + the text after it "
            f"({layout.literal('{label}')!r}; expected ids {front} + {before} + label + {after} + EOS): the tokenizer "
            f"merges the label with the text around it or the label is empty. Labels: {_listed(merged)}"
        )
    tokens = TokenizedPrompts(names, input_ids, torch.tensor(starts), torch.tensor(stops), eos)
    lengths = tokens.sequence_lengths(layout)
    too_long = [f"{names[row]!r} ({int(length)})" for row, length in enumerate(lengths) if length > max_positions]
    if too_long:
        raise ValueError(
            f"learned prompts longer than the text tower's {max_positions} tokens (context {layout.n_ctx} + label + "
            f"{len(layout.front_ids) + len(layout.tail_ids) + 1} fixed): {_listed(too_long)}"
        )
    return tokens


def assemble_prompt_embeddings(
    token_embedding: nn.Embedding,
    tokens: TokenizedPrompts,
    layout: PromptLayout,
    context: torch.Tensor,
    label_tokens: torch.Tensor | None = None,
    label_token_mask: torch.Tensor | None = None,
    padded_length: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Splice learned vectors into the frozen token embeddings of `tokens`.

    context `[C, S, n_ctx, H]`: per label and prompt set, the context vectors (the first `layout.n_before` go before
    the name). label_tokens `[C, L, H]` with label_token_mask `[C]` (bool): rows where the mask is set replace their
    first `L` name tokens. Returns `inputs_embeds [C, S, T', H]` (token embeddings without positions, padded with the
    pad token's embedding to `padded_length` or the longest prompt) and `eos_index [C]` (position of the EOS token).
    """
    num_labels, num_sets, n_ctx, _ = context.shape
    if num_labels != len(tokens.names) or n_ctx != layout.n_ctx:
        raise ValueError(
            f"context {tuple(context.shape)} does not fit {len(tokens.names)} labels x {layout.n_ctx} context vectors"
        )
    device = token_embedding.weight.device
    input_ids = tokens.input_ids.to(device)  # [C, T]
    name_start, name_lengths = tokens.name_start.to(device)[:, None], tokens.name_lengths.to(device)[:, None]
    literal_eos = tokens.eos.to(device)[:, None]
    front, tail = len(layout.front_ids), len(layout.tail_ids)
    lengths = tokens.sequence_lengths(layout).to(device)  # [C]
    length = max(int(lengths.max()), padded_length or 0)

    # Where each position of the learned sequence reads the literal ids from (-1: context or padding).
    position = torch.arange(length, device=device)[None, :]  # [1, T']
    name_begin = front + layout.n_before
    after_begin = name_begin + name_lengths  # [C, 1]
    tail_begin = after_begin + layout.n_after
    eos_index = tail_begin + tail  # [C, 1]
    source = torch.full((num_labels, length), -1, dtype=torch.long, device=device)
    source = torch.where(position < front, position, source)
    in_name = (position >= name_begin) & (position < after_begin)
    source = torch.where(in_name, name_start + position - name_begin, source)
    in_tail = (position >= tail_begin) & (position < eos_index)
    source = torch.where(in_tail, literal_eos - tail + position - tail_begin, source)
    source = torch.where(position == eos_index, literal_eos, source)
    sequence_ids = torch.where(
        source >= 0, input_ids.gather(1, source.clamp(0, input_ids.shape[1] - 1)), layout.pad_token_id
    )  # [C, T']
    embeds = token_embedding(sequence_ids).detach()  # [C, T', H] frozen parts

    if label_tokens is not None and label_token_mask is not None and bool(label_token_mask.any()):
        count = label_tokens.shape[1]
        short = [tokens.names[row] for row in torch.nonzero(label_token_mask).flatten().tolist()
                 if int(tokens.name_lengths[row]) < count]  # fmt: skip
        if short:
            raise ValueError(f"labels with fewer than min_len={count} tokens cannot take learned label tokens: {short}")
        current = embeds[:, name_begin : name_begin + count]  # [C, L, H]
        learned = torch.where(label_token_mask.to(device)[:, None, None], label_tokens.to(embeds.dtype), current)
        embeds = torch.cat([embeds[:, :name_begin], learned, embeds[:, name_begin + count :]], dim=1)

    embeds = embeds.unsqueeze(1).expand(-1, num_sets, -1, -1)  # [C, S, T', H]
    if n_ctx:
        context_positions = torch.cat(
            [
                (front + torch.arange(layout.n_before, device=device)).expand(num_labels, -1),
                after_begin + torch.arange(layout.n_after, device=device)[None, :],
            ],
            dim=1,
        )  # [C, n_ctx]
        index = context_positions[:, None, :, None].expand(-1, num_sets, -1, embeds.shape[-1])
        embeds = embeds.contiguous().scatter(2, index, context.to(embeds.dtype))
    return embeds, eos_index.squeeze(1)


def prompt_text_features(clip, inputs_embeds: torch.Tensor, eos_index: torch.Tensor) -> torch.Tensor:
    """Text embeddings `[N, D]` of prompt embeddings `[N, T', H]` whose EOS token sits at `eos_index [N]`; the pooled
    position comes from the backbone helper (CLIP: the EOS token)."""
    pool_index = text_pool_positions(clip, eos_index, inputs_embeds.shape[1])
    return text_features_from_embeddings(clip, inputs_embeds, pool_index)


def padded_prompt_length(clip, tokens: TokenizedPrompts, layout: PromptLayout) -> int:
    """The sequence length a batch of `tokens` runs at (the backbone decides; CLIP: the longest prompt)."""
    return text_padded_length(clip, int(tokens.sequence_lengths(layout).max()))


__all__ = [
    "PromptLayout",
    "TokenizedPrompts",
    "assemble_prompt_embeddings",
    "padded_prompt_length",
    "prompt_text_features",
    "resolve_prompt_layout",
    "tokenize_label_prompts",
]
