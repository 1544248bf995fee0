"""Shared learnable text context for prompt-learning methods (CoOp, DualCoOp/DualCoOp++, LAMM, MKT stage 2)."""

from .configuration_prompting import PromptLearningConfig
from .prompt_encoder import (
    PromptLayout,
    TokenizedPrompts,
    assemble_prompt_embeddings,
    prompt_text_features,
    resolve_prompt_layout,
    tokenize_label_prompts,
)
from .prompt_learner import PromptLearner
from .prompt_mixin import PromptLearningMixin

__all__ = [
    "PromptLayout",
    "PromptLearner",
    "PromptLearningConfig",
    "PromptLearningMixin",
    "TokenizedPrompts",
    "assemble_prompt_embeddings",
    "prompt_text_features",
    "resolve_prompt_layout",
    "tokenize_label_prompts",
]
