"""`PromptLearningMixin`: label embeddings from learned prompts for an `OVMLCPreTrainedModel`.

    class CoOpModel(PromptLearningMixin, OVMLCPreTrainedModel):
        def __init__(self, config):
            super().__init__(config)
            resolved = self.build_prompt_learner(PromptLearningConfig.from_dict(config.prompt_learning))
            config.prompt_learning = resolved.to_dict()  # n_ctx / class_names resolved: saved with the model
            self.post_init()

`encode_label_embeddings(vocabulary)` then gives `[C, D]` (`[C, S, D]` with S prompt sets): from the model's label
cache in eval mode (keyed by a fingerprint of the text tower, the learner's weights and the prompt config, so it never
serves embeddings of other weights), recomputed with gradients in training. The learner is initialised in
`_init_weights` (from the words of `ctx_init` / the class names' token embeddings, or randomly), after which the
spliced prompts equal the frozen text tower's embeddings of the literal prompts.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from itertools import chain

import torch
import torch.nn.functional as F
from torch import nn
from transformers.utils import logging

from ovmlc.core.backbones import module_fingerprint, text_context_length, text_token_embedding, text_tower_modules
from ovmlc.core.vocabulary import LabelVocabulary

from .configuration_prompting import DEFAULT_N_CTX, PromptLearningConfig
from .prompt_encoder import (
    PromptLayout,
    TokenizedPrompts,
    assemble_prompt_embeddings,
    padded_prompt_length,
    prompt_text_features,
    resolve_prompt_layout,
    tokenize_label_prompts,
)
from .prompt_learner import PromptLearner

logger = logging.get_logger(__name__)

# Tokenized label lists kept per model (training re-encodes the same labels every step).
TOKENIZED_MEMO_SIZE = 8


class PromptLearningMixin:
    """Mix into an `OVMLCPreTrainedModel` subclass (before it in the bases). The learner lives in
    `self.prompt_learner` (`None` = no prompt learning: the base class's frozen template embeddings)."""

    # Labels encoded per text forward when no gradient is needed (cache fills, evaluation).
    prompt_batch_size: int = 256
    # Built around a CLIP checkpoint the learner is new by design (initialised from the words / the name tokens):
    # not a "MISSING ... newly initialized" line in transformers' load report.
    modules_created_on_load: tuple[str, ...] = ("prompt_learner",)

    # ------------------------------------------------------------------ construction
    def build_prompt_learner(self, prompt_config: PromptLearningConfig) -> PromptLearningConfig:
        """Create `self.prompt_learner` for `prompt_config` (call in `__init__`, before `post_init`). Returns the config
        with `n_ctx` and `class_names` resolved (`class_names` defaults to `config.seen_labels`); store it in the
        method config so that a saved model rebuilds the same shapes without a tokenizer."""
        changes = {}
        if prompt_config.uses_class_names and not prompt_config.class_names:
            seen = getattr(self.config, "seen_labels", None)
            if not seen:
                raise ValueError(
                    "class-specific prompts / learnable label tokens need the labels that own them: set "
                    "prompt_learning class_names (or the config's seen_labels) before building the model"
                )
            changes["class_names"] = list(seen)
        if prompt_config.n_ctx is None:
            if prompt_config.ctx_init is None:
                changes["n_ctx"] = DEFAULT_N_CTX
            elif prompt_config.ctx_init_mode == "word_mean":
                changes["n_ctx"] = sum(map(len, prompt_config.context_words()))
            else:  # one vector per word-piece token: count them with the backbone's tokenizer
                try:
                    tokenizer = self.text_tokenizer
                except (OSError, ValueError) as error:
                    raise ValueError(
                        f"prompt learning: ctx_init {prompt_config.ctx_init!r} is counted in tokens, which needs the "
                        f"backbone's tokenizer ({error}); set n_ctx explicitly"
                    ) from error
                changes["n_ctx"] = resolve_prompt_layout(prompt_config, tokenizer).n_ctx
        resolved = prompt_config.replace(**changes) if changes else prompt_config
        hidden_size = text_token_embedding(self.clip).embedding_dim
        self.prompt_learner = PromptLearner(resolved, hidden_size, resolved.n_ctx)
        return resolved

    def _shared_prompt_learner(self) -> PromptLearner | None:
        # Not a class attribute: a class-level `prompt_learner = None` would shadow the registered submodule.
        learner = getattr(self, "prompt_learner", None)
        return learner if isinstance(learner, PromptLearner) else None

    @property
    def prompt_learning_config(self) -> PromptLearningConfig | None:
        learner = self._shared_prompt_learner()
        return learner.config if learner is not None else None

    def _prompt_memo(self) -> dict[str, dict]:
        """Layouts per (tokenizer, prompt config) and tokenized label lists per (layout, labels)."""
        memo = self.__dict__.get("_prompt_memo_tables")
        if memo is None:
            memo = self.__dict__["_prompt_memo_tables"] = {"layouts": {}, "tokens": {}}
        return memo

    def prompt_layout(self, prompt_config: PromptLearningConfig | None = None) -> PromptLayout:
        """The token layout of this model's prompts (or of `prompt_config`), resolved once per tokenizer."""
        prompt_config = prompt_config or self.prompt_learning_config
        if prompt_config is None:
            raise ValueError(f"{type(self).__name__} has no prompt learner")
        tokenizer = self.text_tokenizer
        layouts = self._prompt_memo()["layouts"]
        key = (id(tokenizer), json.dumps(prompt_config.to_dict(), sort_keys=True))
        if key not in layouts:
            layout = resolve_prompt_layout(prompt_config, tokenizer)
            learner = self._shared_prompt_learner()
            if learner is not None and learner.config == prompt_config and layout.n_ctx != learner.n_ctx:
                raise ValueError(
                    f"the prompt learner holds {learner.n_ctx} context vectors but ctx_init "
                    f"{prompt_config.ctx_init!r} gives {layout.n_ctx} under this tokenizer (another tokenizer?)"
                )
            layouts[key] = layout
        return layouts[key]

    def tokenize_label_prompts(self, names: Sequence[str], layout: PromptLayout | None = None) -> TokenizedPrompts:
        """Literal prompts of `names` tokenized, with each name's token span (memoised: training encodes the same
        labels every step)."""
        layout = layout or self.prompt_layout()
        tokens_memo = self._prompt_memo()["tokens"]
        key = (id(self.text_tokenizer), layout, tuple(names))
        if key not in tokens_memo:
            if len(tokens_memo) >= TOKENIZED_MEMO_SIZE:
                tokens_memo.pop(next(iter(tokens_memo)))
            tokens_memo[key] = tokenize_label_prompts(
                self.text_tokenizer, layout, names, text_context_length(self.clip)
            )
        return tokens_memo[key]

    @torch.no_grad()
    def init_prompt_learner(self, learner: PromptLearner) -> None:
        """Initialise the learner's tensors that were not loaded (from `ctx_init`'s words and the class names'
        token embeddings; randomly if the tokenizer cannot be loaded, with a warning)."""
        tensors = list(chain(learner.parameters(), learner.buffers()))
        if all(getattr(tensor, "_is_hf_initialized", False) for tensor in tensors):
            return  # loaded from a checkpoint
        config = learner.config
        needs_words = config.ctx_init is not None and not config.ctx_random_init
        needs_names = config.label_tokens == "learnable" and not config.label_tokens_random_init
        context_ids, name_ids = (), None
        if needs_words or needs_names:
            try:
                _ = self.text_tokenizer  # loads it lazily
            except (OSError, ValueError) as error:
                logger.warning(f"prompt learner: no tokenizer to read ctx_init / class names ({error}); random init")
                learner.initialize(text_token_embedding(self.clip).weight, (), None)
                return
            layout = self.prompt_layout(config)  # a bad ctx_init / n_ctx is an error here, not a silent random init
            context_ids = layout.init_token_ids if needs_words else ()
            if needs_names:
                tokens = self.tokenize_label_prompts(learner.class_names, layout)
                name_ids = [tokens.name_token_ids(row) for row in range(len(learner.class_names))]
        learner.initialize(text_token_embedding(self.clip).weight, context_ids, name_ids)

    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        if isinstance(module, PromptLearner) and module is self._shared_prompt_learner():
            self.init_prompt_learner(module)

    # ------------------------------------------------------------------ encoding
    def encode_prompts(self, names: Sequence[str], use_label_tokens: bool = True) -> torch.Tensor:
        """Raw text embeddings `[C, S, D]` of the learned prompts of `names`, differentiable w.r.t. the learner.

        `use_label_tokens=False` keeps every name's original token embeddings (LAMM's "original names with the
        current context"). Without gradients the labels are encoded in batches of `prompt_batch_size`, sorted by
        length; with gradients in one batch.
        """
        names = list(names)
        if self._shared_prompt_learner() is None:
            raise ValueError(f"{type(self).__name__} has no shared prompt learner to encode prompts with")
        layout = self.prompt_layout()
        tokens = self.tokenize_label_prompts(names)
        if torch.is_grad_enabled() or len(names) <= self.prompt_batch_size:
            return self._encode_prompt_batch(tokens, layout, use_label_tokens)
        order = sorted(range(len(names)), key=lambda row: int(tokens.name_lengths[row]))
        outputs = torch.empty(0)
        for begin in range(0, len(order), self.prompt_batch_size):
            rows = order[begin : begin + self.prompt_batch_size]
            features = self._encode_prompt_batch(tokens.select(rows), layout, use_label_tokens)  # [b, S, D]
            if not outputs.numel():
                outputs = features.new_empty(len(names), *features.shape[1:])
            outputs[rows] = features
        return outputs

    def _encode_prompt_batch(self, tokens: TokenizedPrompts, layout: PromptLayout, use_label_tokens: bool):
        learner = self._shared_prompt_learner()
        names = tokens.names
        label_tokens, label_mask = learner.label_tokens_for(names) if use_label_tokens else (None, None)
        inputs_embeds, eos_index = assemble_prompt_embeddings(
            text_token_embedding(self.clip),
            tokens,
            layout,
            learner.context_for(names),
            label_tokens,
            label_mask,
            padded_length=padded_prompt_length(self.clip, tokens, layout),
        )  # [C, S, T', H], [C]
        num_labels, num_sets = inputs_embeds.shape[:2]
        features = prompt_text_features(
            self.clip, inputs_embeds.flatten(0, 1), eos_index.repeat_interleave(num_sets)
        )  # [C * S, D]
        return features.view(num_labels, num_sets, -1)

    def original_name_embeddings(self, names: Sequence[str]) -> torch.Tensor:
        """`[C, S, D]` text embeddings with the current context but every label's original name tokens (LAMM's
        t⁰ for L_feat / L_kd); differentiable w.r.t. the context."""
        return self.encode_prompts(names, use_label_tokens=False)

    def label_token_penalty(self) -> torch.Tensor:
        """LAMM's L_param: `sum((E - E0)^2)` over the learned label tokens."""
        learner = self._shared_prompt_learner()
        if learner is None:
            raise ValueError(f"{type(self).__name__} has no shared prompt learner")
        return learner.label_token_penalty()

    def learned_label_mask(self, names: Sequence[str]) -> torch.Tensor:
        """`[C]` bool: labels with class-specific parameters (CSC context / learned label tokens); unseen labels
        are False (they use the CSC fallback and their original name tokens)."""
        learner = self._shared_prompt_learner()
        if learner is None:
            return torch.zeros(len(names), dtype=torch.bool)
        return learner.learned_label_mask(names)

    def encode_label_embeddings(self, vocabulary: LabelVocabulary) -> torch.Tensor:
        """`[C, D]` label embeddings (`[C, S, D]` with S > 1 prompt sets), pooled as `vocabulary.pool` says.

        Training with gradients: computed every call (differentiable). Otherwise: the label cache, keyed by
        `text_fingerprint()`; only missing labels are encoded.
        """
        learner = getattr(self, "prompt_learner", None)
        if learner is None:
            return super().encode_label_embeddings(vocabulary)
        learner_trains = any(parameter.requires_grad for parameter in learner.parameters())
        if self.training and torch.is_grad_enabled() and learner_trains:
            return self._pool_prompt_embeddings(self.encode_prompts(vocabulary.names), vocabulary.pool)

        def encode_missing(missing: list[str]) -> torch.Tensor:
            with torch.no_grad():
                return self._pool_prompt_embeddings(self.encode_prompts(missing), vocabulary.pool)  # [M, (S,) D]

        embeddings = self.label_cache.lookup(
            self.text_fingerprint(), vocabulary.templates_key, vocabulary.names, encode_missing
        )
        return embeddings.to(self.device)

    @staticmethod
    def _pool_prompt_embeddings(embeddings: torch.Tensor, pool: str) -> torch.Tensor:
        """`[C, S, D]` → `[C, D]` for one prompt set; L2-normalised with `pool="normalized"`."""
        if pool == "normalized":
            embeddings = F.normalize(embeddings, dim=-1)
        return embeddings.squeeze(1) if embeddings.shape[1] == 1 else embeddings

    # ------------------------------------------------------------------ cache keys
    def text_side_modules(self) -> tuple[nn.Module, ...]:
        modules, learner = text_tower_modules(self.clip), getattr(self, "prompt_learner", None)
        return modules if learner is None else (*modules, learner)

    def text_fingerprint(self) -> str:
        """Digest of the text tower, the learner's weights and the prompt config. Recomputed after `train()`/
        `eval()`, in training mode, and whenever a text-side tensor was replaced or modified in place (its version
        counter moved), so cached label embeddings never outlive the weights they came from."""
        tensors = chain.from_iterable(chain(m.parameters(), m.buffers()) for m in self.text_side_modules())
        state = tuple((id(tensor), tensor._version) for tensor in tensors)
        if self.training or self._text_fingerprint is None or state != getattr(self, "_text_fingerprint_state", None):
            prompt_config = self.prompt_learning_config
            extra = json.dumps(
                [type(self).__name__, prompt_config.to_dict() if prompt_config else None], sort_keys=True, default=str
            )
            self._text_fingerprint = module_fingerprint(*self.text_side_modules(), extra=extra)
            self._text_fingerprint_state = state
        return self._text_fingerprint


__all__ = ["PromptLearningMixin"]
