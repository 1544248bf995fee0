"""LAMM: learnable label tokens with the hierarchical loss (multi-label, single-label few-shot, class-incremental).

Registers the method (`MethodSpec` with its `MethodCard`): the one source of its card text (summary, papers with
BibTeX, implementation choices) and of the tiny example config the common method suite uses.
"""

from ovmlc.core.registry import MethodCard, MethodSpec, Paper, register_method

from ..papers import CLIP, COOP
from .configuration_lamm import LAMMConfig
from .modeling_lamm import (
    LAMM_HEADS,
    CoOpCosineHead,
    DualCoOpRegionHead,
    LAMMHead,
    LAMMModel,
    LAMMOutput,
    register_lamm_head,
)

PAPER = Paper(
    title="LAMM: Label Alignment for Multi-Modal Prompt Learning",
    authors=(
        "Jingsheng Gao and Jiacheng Ruan and Suncheng Xiang and Zefang Yu and Ke Ji and Mingye Xie and Ting Liu and "
        "Yuzhuo Fu"
    ),
    venue="AAAI Conference on Artificial Intelligence",
    year=2024,
    url="https://arxiv.org/abs/2312.08212",
    bibtex=(
        "@inproceedings{gao2024lamm,\n"
        "  title = {LAMM: Label Alignment for Multi-Modal Prompt Learning},\n"
        "  author = {Gao, Jingsheng and Ruan, Jiacheng and Xiang, Suncheng and Yu, Zefang and Ji, Ke and "
        "Xie, Mingye and Liu, Ting and Fu, Yuzhuo},\n"
        "  booktitle = {AAAI Conference on Artificial Intelligence},\n"
        "  year = {2024},\n"
        "  eprint = {2312.08212},\n"
        "  archivePrefix = {arXiv}\n"
        "}"
    ),
)

CARD = MethodCard(
    name="LAMM (Label Alignment for Multi-Modal prompt learning)",
    summary=(
        "A frozen CLIP whose label names become learnable token embeddings: each trained label's prompt is "
        "'[SOT] a photo of a <label tokens> ... . [EOT]', where the first word-piece embedding(s) of the name are "
        "trained (with the context frozen, 'LAMM alone', or trained too, CoOp + LAMM), regularised by a hierarchical "
        "loss that keeps the tokens near their initial values (parameter space), the label's text embedding near "
        "the original name's (feature space) and the logits near CLIP's (logit space). Labels without learned tokens "
        "(unseen labels) are scored with their original names; models trained on disjoint label sets with the same "
        "frozen context merge into one (class-incremental learning)."
    ),
    papers=(PAPER, COOP, CLIP),
    notes=(
        "Prompt: 4 context vectors initialised from 'a photo of a' (frozen with train_context: false = the official "
        "--origin-clip, trained with true = CoOp + LAMM), then min_len (1) learnable label tokens per trained label "
        "initialised from the name's token embeddings (or N(0, 0.02) with label_tokens_random_init), the rest of the "
        "name, '.' and EOT fixed. A frozen copy (prompt_learner.label_tokens_init) keeps the initial values.",
        "Hierarchical loss = task + lambda_1 L_param + L_feat + 0.05 L_kd (T = 2). L_param = sum((E - E0)^2). lambda_1 "
        "= param_loss_weight, or 1/shots (the paper's 1/n) when unset; the official code reads n from --shots, whose "
        "default 1 its base_train_lamm_all.sh never overrides, so its 1- to 16-shot runs all use lambda_1 = 1 (set "
        "param_loss_weight: 1.0 to reproduce them).",
        "L_feat = mean over counted samples of 1 - cos(t_y, t0_y), t0 = the original name with the current context "
        "used as a fixed (detached) target as in the official code. Single-label: a sample counts when its batch "
        "holds another label. Multi-label: one pair per (image, annotated positive), counted when the image's "
        "positives include another label. 0 when nothing counts.",
        "L_kd direction: kd_direction 'paper' (default) distils CLIP into LAMM as the paper describes: target = "
        "softmax(original-name logits / T), detached; student = current logits. 'official' reproduces the code's "
        "distillation(current, original): the softmax target is the current logits (with gradient) and the "
        "original-name logits are the input, the reverse of standard KD. Multi-label uses the per-label sigmoid "
        "form (T^2 * sum over labels of BCE), since its scores are independent sigmoids.",
        "Multi-label transplant (not in the paper), head: coop: ASL (gamma- 4, clip 0.05) or masked BCE over sigmoid "
        "scores on CoOp's scaled-cosine head with a learnable logit scale and bias (x100 learning rate). Single-label "
        "(the paper): cross-entropy over the softmax of CLIP-temperature cosine logits, top-1 accuracy.",
        "head: dualcoop (multi-label): the label tokens sit in both of DualCoOp's prompts per label (negative and "
        "positive context, prompt_learning.num_prompt_sets 2), scored by DualCoOp's class-specific region "
        "aggregation (dense tokens, weights from the positive prompt, logits = pos - neg, label maps = its spatial "
        "weights) and trained with DualCoOp's ASL on the 2-way softmax (gamma+ 1, gamma- 2, clip 0.05, summed, x "
        "loss_weight); the aggregation and loss are DualCoOp's own functions. Hierarchical loss with two prompt sets: "
        "L_param on the (shared) label tokens; L_feat = 1 - cos(t, t0) averaged over both prompt sets (the tokens are "
        "in both, so both prompts are kept near their original-name versions); L_kd = the per-label KD above on pos - "
        "neg, i.e. between the 2-way (negative, positive) softmax distributions at T = 2 (original names in both "
        "prompts as the teacher). The two contexts must differ (train_context: true = DualCoOp + LAMM, or a trained "
        "DualCoOp's contexts kept frozen); equal frozen contexts are refused at training time.",
        "Unseen labels (no learned tokens) use their original name tokens with the current context (in both prompt "
        "sets with the dualcoop head): with a frozen context and the coop head that is CLIP's zero-shot prompt "
        "exactly.",
        "Class-incremental: merge(other) joins two models trained on disjoint label sets with the same frozen "
        "context and head into one; the old labels' scores are unchanged bit for bit. The official repository has "
        "no merge script (its base2new rounds are evaluated separately).",
        "Saved weights: adapter-only when the frozen CLIP is the pinned Hub backbone it was loaded from (the label "
        "tokens, their initial copy, the context and the head), else the whole model.",
        "SigLIP / SigLIP 2 backbones (docs/siglip.md): supported with both heads; prompts run at SigLIP's fixed "
        "64-token context; with logit_scale null the coop head starts from SigLIP's own scale and bias (the untrained "
        "model is SigLIP's zero-shot); the dualcoop head's regions are the pooling head's value-path tokens.",
    ),
)

# Tiny, fast settings for tests and docs (the common method suite builds the model with these kwargs and feeds it
# multi-label batches, so the single-label task is covered by tests/test_methods_lamm.py and tests/test_few_shot.py).
# Variants: CoOp + LAMM, and DualCoOp + LAMM (the dualcoop head; its two contexts train).
EXAMPLE_CONFIG = {
    "seen_labels": ["cat", "red car", "dotted background"],
    "prompt_learning": {"ctx_init": "a photo of a"},
    "task": "multi_label",
}

register_method(
    MethodSpec(
        name="lamm",
        config_class=LAMMConfig,
        model_class=LAMMModel,
        card=CARD,
        example_config=EXAMPLE_CONFIG,
        variant_configs=({"train_context": True}, {"head": "dualcoop", "train_context": True}),
    )
)

__all__ = [
    "EXAMPLE_CONFIG",
    "LAMM_HEADS",
    "CoOpCosineHead",
    "DualCoOpRegionHead",
    "LAMMConfig",
    "LAMMHead",
    "LAMMModel",
    "LAMMOutput",
    "register_lamm_head",
]
