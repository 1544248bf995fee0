"""Configuration of the shared learnable-text-context mechanism (CoOp-style prompts, DualCoOp prompt sets, LAMM label
tokens). Plain Python (no torch) so that a method config can embed it as a dict and validate it cheaply."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

CLASS_TOKEN_POSITIONS = ("end", "middle", "front")
CTX_INIT_MODES = ("token", "word_mean")
CSC_FALLBACKS = ("unified", "mean", "error")
LABEL_TOKEN_MODES = ("frozen", "learnable")
# Context vectors without `ctx_init` (CoOp's default M).
DEFAULT_N_CTX = 16
# The fixed text after the class name (and the context after it) when `ctx_init` has no "{}": CoOp's "." .
NAME_TAIL = "."


@dataclass
class PromptLearningConfig:
    r"""
    Learnable text prompts `[SOT] ctx… name… ctx… . [EOT]` for a frozen CLIP text tower.

    n_ctx (`int`, *optional*): context vectors per prompt (per prompt set). `None` = as many as `ctx_init` gives
        (its word-piece tokens, or its words with `ctx_init_mode="word_mean"`), or 16 without `ctx_init`. When set
        together with `ctx_init` it must equal that count (checked when the learner is built).
    ctx_init (`str`, *optional*): words the context starts from, e.g. "a photo of a" (CoOp) or, with `{}` marking
        where the class name goes, "There is a {} in the scene" (MKT). Without `{}` the name goes where
        `class_token_position` says and a fixed "." follows; with `{}` every word of `ctx_init` is context and
        nothing else is added. `None` = random N(0, `init_std`) context.
    ctx_init_mode (`"token"` | `"word_mean"`): one context vector per word-piece token of `ctx_init`, initialised
        from that token's embedding (CoOp; the prompt then equals the literal text exactly), or one per
        whitespace-separated word, initialised from the mean of its tokens' embeddings (MKT).
    ctx_random_init (`bool`): keep `ctx_init`'s layout (number of vectors, class position) but draw the vectors from
        N(0, `init_std`) instead of the words' embeddings.
    class_specific (`bool`): CSC, one context per label of `class_names` instead of one shared (unified) context.
    class_names (`list[str]`, *optional*): the labels that get class-specific parameters (CSC context, learnable
        label tokens), in parameter order; normally the seen/training labels. Required by `class_specific` and
        `label_tokens="learnable"` (a method may fill it from its config's `seen_labels`).
    csc_fallback (`"unified"` | `"mean"` | `"error"`): with `class_specific`, what labels outside `class_names` (e.g.
        unseen labels) use: the unified context (a frozen copy of the context's initial value: the `ctx_init` words,
        i.e. the zero-shot prompt, or the random init), the mean of the class-specific contexts, or a `ValueError`.
    num_prompt_sets (`int`): independent contexts per label, e.g. 2 for DualCoOp (negative, positive) or 3 for
        DualCoOp++ (evidential, positive, negative); label embeddings are then `[C, S, D]`.
    label_tokens (`"frozen"` | `"learnable"`): LAMM. `"learnable"`: the first `min_len` word-piece embeddings of each
        label in `class_names` become a learnable `[C, min_len, H]` parameter (a frozen copy keeps the initial
        values); labels outside `class_names` keep their name's embeddings.
    min_len (`int`): how many leading name tokens are learnable (LAMM: the shortest name's token count, usually 1);
        a label of `class_names` with fewer tokens is an error.
    label_tokens_random_init (`bool`): learnable label tokens start from N(0, `init_std`) instead of the name's token
        embeddings.
    class_token_position (`"end"` | `"middle"` | `"front"`): where the name goes without `{}` in `ctx_init`: after
        the context, between its halves (the first `n // 2` vectors or words before it), or before it.
    init_std (`float`): std of every random initialisation (CoOp: 0.02).
    """

    n_ctx: int | None = None
    ctx_init: str | None = None
    ctx_init_mode: str = "token"
    ctx_random_init: bool = False
    class_specific: bool = False
    class_names: list[str] | None = None
    csc_fallback: str = "unified"
    num_prompt_sets: int = 1
    label_tokens: str = "frozen"
    min_len: int = 1
    label_tokens_random_init: bool = False
    class_token_position: str = "end"
    init_std: float = 0.02

    def __post_init__(self) -> None:
        def fail(key: str, problem: str) -> None:
            raise ValueError(f"PromptLearningConfig.{key}: {problem}")

        for key, choices in (
            ("ctx_init_mode", CTX_INIT_MODES),
            ("csc_fallback", CSC_FALLBACKS),
            ("label_tokens", LABEL_TOKEN_MODES),
            ("class_token_position", CLASS_TOKEN_POSITIONS),
        ):
            if getattr(self, key) not in choices:
                fail(key, f"must be one of {choices}, got {getattr(self, key)!r}")
        if self.ctx_init is not None:
            if not isinstance(self.ctx_init, str) or not self.ctx_init.strip():
                fail("ctx_init", f"must be a non-empty string or None, got {self.ctx_init!r}")
            if self.ctx_init.count("{}") > 1:
                fail("ctx_init", f"may mark the class name with at most one '{{}}', got {self.ctx_init!r}")
            if "{}" in self.ctx_init and self.class_token_position != "end":
                fail(
                    "class_token_position",
                    f"ctx_init {self.ctx_init!r} places the class name with '{{}}'; leave class_token_position "
                    f"at 'end' (got {self.class_token_position!r})",
                )
            if not self.context_words()[0] and not self.context_words()[1]:
                fail("ctx_init", f"{self.ctx_init!r} has no context words")
        else:
            if self.ctx_init_mode != "token":
                fail("ctx_init_mode", f"{self.ctx_init_mode!r} needs ctx_init words")
            if self.ctx_random_init:
                fail("ctx_random_init", "only applies with ctx_init (without it the context is random anyway)")
        if self.n_ctx is not None:
            if isinstance(self.n_ctx, bool) or not isinstance(self.n_ctx, int) or self.n_ctx < 1:
                fail("n_ctx", f"must be a positive integer or None, got {self.n_ctx!r}")
            if self.ctx_init is not None and self.ctx_init_mode == "word_mean":
                words = sum(map(len, self.context_words()))
                if self.n_ctx != words:
                    fail("n_ctx", f"{self.n_ctx} != the {words} words of ctx_init {self.ctx_init!r} (word_mean)")
        if isinstance(self.num_prompt_sets, bool) or not isinstance(self.num_prompt_sets, int):
            fail("num_prompt_sets", f"must be an integer, got {self.num_prompt_sets!r}")
        if self.num_prompt_sets < 1:
            fail("num_prompt_sets", f"must be >= 1, got {self.num_prompt_sets}")
        if isinstance(self.min_len, bool) or not isinstance(self.min_len, int) or self.min_len < 1:
            fail("min_len", f"must be a positive integer, got {self.min_len!r}")
        if not float(self.init_std) > 0:
            fail("init_std", f"must be > 0, got {self.init_std!r}")
        if self.class_names is not None:
            names = list(self.class_names)
            if not names or not all(isinstance(name, str) and name.strip() for name in names):
                fail("class_names", "must be a non-empty list of label names")
            self.class_names = names

    # ------------------------------------------------------------------ derived
    @property
    def uses_class_names(self) -> bool:
        """Whether the learner has per-label parameters (CSC context or learnable label tokens)."""
        return self.class_specific or self.label_tokens == "learnable"

    @property
    def template_mode(self) -> bool:
        """`ctx_init` marks the class position with `{}`: the template fixes the whole prompt."""
        return self.ctx_init is not None and "{}" in self.ctx_init

    def context_words(self) -> tuple[list[str], list[str]]:
        """The `ctx_init` words before and after the class name (both empty without `ctx_init`)."""
        if self.ctx_init is None:
            return [], []
        if self.template_mode:
            before, after = self.ctx_init.split("{}")
            return before.split(), after.split()
        words = self.ctx_init.split()
        split = {"end": len(words), "front": 0, "middle": len(words) // 2}[self.class_token_position]
        return words[:split], words[split:]

    def literal_parts(self) -> tuple[str, str]:
        """(text before, text after) the class name in the literal prompt this config stands for: the prompt is
        `before + name + after` ("a photo of a " + name + "." for `ctx_init="a photo of a"`)."""
        if self.template_mode:
            before, after = self.ctx_init.split("{}")
            return before, after
        words_before, words_after = self.context_words()
        before = " ".join(words_before) + " " if words_before else ""
        after = (" " + " ".join(words_after) if words_after else "") + NAME_TAIL
        return before, after

    def tail_text(self) -> str:
        """The fixed (not learned) text after the context that follows the name: "." or "" (template mode)."""
        return "" if self.template_mode else NAME_TAIL

    # ------------------------------------------------------------------ (de)serialisation
    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable fields (what a method config stores)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, values: Mapping[str, Any] | None, where: str = "prompt_learning") -> PromptLearningConfig:
        """Build from a mapping (e.g. a method config's `prompt_learning` dict); unknown keys are an error naming
        `where`."""
        values = dict(values or {})
        valid = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(values) - set(valid))
        if unknown:
            raise ValueError(f"{where}: unknown key(s) {unknown}; valid keys: {', '.join(valid)}")
        return cls(**values)

    def replace(self, **changes: Any) -> PromptLearningConfig:
        return dataclasses.replace(self, **changes)


__all__ = ["CLASS_TOKEN_POSITIONS", "DEFAULT_N_CTX", "PromptLearningConfig"]
