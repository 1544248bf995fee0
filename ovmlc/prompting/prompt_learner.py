"""The learnable text-side parameters of prompt learning: context vectors (unified or class-specific, per prompt set)
and LAMM label tokens. A model holds one `PromptLearner` as `self.prompt_learner`, so every key starts with
`prompt_learner.`:

- `ctx [S, n_ctx, H]`: the unified context (a Parameter); with `class_specific` a frozen buffer holding the
  context's initial value, used by labels outside `class_names` when `csc_fallback="unified"`;
- `ctx_class [C, S, n_ctx, H]`: class-specific contexts (CSC), rows in `class_names` order;
- `label_tokens [C, min_len, H]` and the buffer `label_tokens_init [C, min_len, H]` (their initial values).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from transformers import initialization as init

from ovmlc.core.vocabulary import normalize_label

from .configuration_prompting import PromptLearningConfig


class PromptLearner(nn.Module):
    def __init__(self, config: PromptLearningConfig, hidden_size: int, n_ctx: int):
        super().__init__()
        if config.uses_class_names and not config.class_names:
            raise ValueError(
                "PromptLearningConfig.class_names is required with class_specific=True or label_tokens='learnable' "
                "(the labels that get their own parameters, normally the training labels)"
            )
        self.config = config
        self.n_ctx = int(n_ctx)
        self.class_names: tuple[str, ...] = tuple(config.class_names or ()) if config.uses_class_names else ()
        self._class_rows = {normalize_label(name): row for row, name in enumerate(self.class_names)}
        if len(self._class_rows) != len(self.class_names):
            raise ValueError(f"PromptLearningConfig.class_names has duplicates: {list(self.class_names)}")
        num_sets, num_classes = config.num_prompt_sets, len(self.class_names)
        if config.class_specific:
            self.ctx_class = nn.Parameter(torch.empty(num_classes, num_sets, self.n_ctx, hidden_size))
            if config.csc_fallback == "unified":
                self.register_buffer("ctx", torch.empty(num_sets, self.n_ctx, hidden_size))
        else:
            self.ctx = nn.Parameter(torch.empty(num_sets, self.n_ctx, hidden_size))
        if config.label_tokens == "learnable":
            self.label_tokens = nn.Parameter(torch.empty(num_classes, config.min_len, hidden_size))
            self.register_buffer("label_tokens_init", torch.empty(num_classes, config.min_len, hidden_size))

    def extra_repr(self) -> str:
        config = self.config
        return (
            f"n_ctx={self.n_ctx}, prompt_sets={config.num_prompt_sets}, class_specific={config.class_specific}, "
            f"label_tokens={config.label_tokens!r}, classes={len(self.class_names)}"
        )

    # ------------------------------------------------------------------ initialisation
    @torch.no_grad()
    def initialize(
        self,
        token_embedding: torch.Tensor,
        context_token_ids: Sequence[Sequence[int]] = (),
        class_name_token_ids: Sequence[Sequence[int]] | None = None,
    ) -> None:
        """Initialise whatever was not loaded from a checkpoint (transformers' `_is_hf_initialized` flags).

        token_embedding `[V, H]`: the frozen token table. context_token_ids: per context vector, the token ids whose
        mean embedding it starts from (empty: N(0, init_std)). class_name_token_ids: per label of `class_names`,
        its name's token ids (needed for label tokens initialised from the name).
        """
        config, std = self.config, float(self.config.init_std)
        from_words = bool(context_token_ids) and not config.ctx_random_init
        if from_words:
            if len(context_token_ids) != self.n_ctx:
                raise ValueError(f"{len(context_token_ids)} context initialisations for {self.n_ctx} context vectors")
            words = torch.stack([token_embedding[list(ids)].mean(dim=0) for ids in context_token_ids])  # [n_ctx, H]
        for name in ("ctx", "ctx_class"):
            tensor = getattr(self, name, None)
            if tensor is None:
                continue
            if from_words:
                init.copy_(tensor, words.to(tensor.dtype).expand_as(tensor))
            else:
                init.normal_(tensor, mean=0.0, std=std)
        if config.label_tokens == "learnable":
            if config.label_tokens_random_init:
                init.normal_(self.label_tokens, mean=0.0, std=std)
            elif not getattr(self.label_tokens, "_is_hf_initialized", False):
                if class_name_token_ids is None or len(class_name_token_ids) != len(self.class_names):
                    raise ValueError("label tokens start from the class names' token embeddings: pass their token ids")
                short = [n for n, ids in zip(self.class_names, class_name_token_ids) if len(ids) < config.min_len]
                if short:
                    raise ValueError(
                        f"PromptLearningConfig.min_len={config.min_len}: labels {short} have fewer tokens; lower it"
                    )
                first = torch.stack([token_embedding[list(ids)[: config.min_len]] for ids in class_name_token_ids])
                init.copy_(self.label_tokens, first.to(self.label_tokens.dtype))
            init.copy_(self.label_tokens_init, self.label_tokens.detach())

    # ------------------------------------------------------------------ lookups
    def class_rows(self, names: Sequence[str]) -> torch.Tensor:
        """Row of each label in `class_names` `[C]` (long), -1 for labels without class-specific parameters."""
        return torch.tensor([self._class_rows.get(normalize_label(name), -1) for name in names], dtype=torch.long)

    def context_for(self, names: Sequence[str]) -> torch.Tensor:
        """Context vectors `[C, S, n_ctx, H]` of `names` (unified, class-specific, or the CSC fallback)."""
        if not self.config.class_specific:
            return self.ctx.unsqueeze(0).expand(len(names), -1, -1, -1)
        rows = self.class_rows(names).to(self.ctx_class.device)
        known = rows >= 0  # [C]
        if bool(known.all()):
            return self.ctx_class[rows]
        fallback = self.config.csc_fallback
        if fallback == "error":
            missing = [name for name, ok in zip(names, known.tolist()) if not ok]
            raise ValueError(
                f"labels {missing[:10]} have no class-specific context (this model learned contexts for "
                f"{len(self.class_names)} labels: {list(self.class_names[:10])}...); set csc_fallback='unified' or "
                f"'mean' to score labels outside them"
            )
        shared = self.ctx if fallback == "unified" else self.ctx_class.mean(dim=0)  # [S, n_ctx, H]
        specific = self.ctx_class[rows.clamp(min=0)]  # [C, S, n_ctx, H]
        return torch.where(known[:, None, None, None], specific, shared.unsqueeze(0).to(specific.dtype))

    def label_tokens_for(self, names: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor] | tuple[None, None]:
        """Learned label tokens `[C, min_len, H]` and the mask `[C]` of labels that have them (None, None without
        learnable label tokens)."""
        if self.config.label_tokens != "learnable":
            return None, None
        rows = self.class_rows(names).to(self.label_tokens.device)
        return self.label_tokens[rows.clamp(min=0)], rows >= 0

    def learned_label_mask(self, names: Sequence[str]) -> torch.Tensor:
        """`[C]` bool: which labels have class-specific parameters (CSC context and/or learned label tokens)."""
        return self.class_rows(names) >= 0

    def label_token_penalty(self) -> torch.Tensor:
        """LAMM's L_param: `sum((E - E0)^2)` over the learned label tokens and their initial values."""
        if self.config.label_tokens != "learnable":
            raise ValueError("label_token_penalty needs label_tokens='learnable'")
        return (self.label_tokens - self.label_tokens_init).pow(2).sum()


__all__ = ["PromptLearner"]
