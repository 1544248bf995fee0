"""CoOp (Context Optimization) for multi-label classification, and the base of the CoOp family."""

from ovmlc.core.registry import MethodCard, MethodSpec, register_method

from ..papers import CLIP, COOP
from .configuration_coop import CoOpConfig
from .modeling_coop import CoOpModel

CARD = MethodCard(
    name="CoOp (Context Optimization)",
    summary=(
        "A frozen CLIP whose only trainable part is the text prompt: M context vectors replace the hand-written "
        "words around each label name (shared by all labels, or one context per training label), and a label's "
        "logit is the scaled cosine between the image embedding and its learned prompt's embedding plus a learned"
        " bias, one sigmoid per label (ASL or masked BCE instead of CoOp's softmax cross-entropy). The "
        "multi-label baseline of prompt learning; unseen labels are scored through their names with the learned "
        "context."
    ),
    papers=(COOP, CLIP),
    notes=(
        (
            "SigLIP / SigLIP 2 backbones (docs/siglip.md): supported; the learned prompt runs through SigLIP's "
            "bidirectional text tower at its fixed 64 tokens, pooled at the last position (no prefix sharing); the "
            "logit scale is SigLIP's, capped at 100 as for CLIP."
        ),
        (
            "Prompt: `[SOT] V_1..V_M name . [EOT]` through the shared `ovmlc.prompting` learner "
            "(`prompt_learner.*`): M = 16 vectors from N(0, 0.02) by default, or one vector per word-piece of "
            "`ctx_init` (e.g. 'a photo of a'); class name at the end, middle or front; unified or class-specific "
            "(CSC) context."
        ),
        (
            "CSC exists only for the training labels (`seen_labels`, passed by the trainer at construction); "
            "other labels use `csc_fallback`: the unified context (a frozen copy of the initial context), the "
            "mean of the class contexts, or a clear error."
        ),
        (
            "Multi-label transplant (CoOp itself is single-label with softmax cross-entropy): one sigmoid per "
            "label, `logit = s * cos(image, prompt) + b` with s = CLIP's learned temperature (capped at 100, as "
            "CoOp) and a bias shared by all labels (`logit_head.bias`, initial `logit_bias`, learning rate x "
            "`logit_bias_lr_multiplier`): sigmoid(s * cos) of raw CLIP cosines is near 1 for every label, so a "
            "per-label sigmoid loss needs a bias."
        ),
        (
            "Loss: DualCoOp's ASL (gamma+ 1, gamma- 2, clip 0.05, log clamped at 1e-6, focal weights without "
            "gradient, summed over annotated entries, x `loss_weight`), so that CoOp and DualCoOp differ only in "
            "the head; masked BCE as an option. Unannotated (partial-label) entries never count."
        ),
        "Image side: CLIP's global image embedding only (frozen, cacheable by the trainer); no label maps.",
        ("`num_train_cls`: at most this many random training labels per batch (as DualCoOp), for large label sets."),
    ),
)

register_method(
    MethodSpec(
        name="coop",
        config_class=CoOpConfig,
        model_class=CoOpModel,
        card=CARD,
        example_config={
            "prompt_learning": {
                "n_ctx": 4,
            },
        },
    )
)

__all__ = ["CoOpConfig", "CoOpModel"]
