from ovmlc.core.registry import MethodCard, MethodSpec, register_method

from ..papers import CLIP, MKT
from .configuration_mkt import MKTConfig
from .modeling_mkt import MKTModel

CARD = MethodCard(
    name="MKT (Multi-modal Knowledge Transfer)",
    summary=(
        "A CLIP image tower is fine-tuned on the seen labels while an L1 distillation loss keeps its global "
        "embedding close to the frozen CLIP teacher; a two-stream head scores every label from the global embedding "
        "and from the top-k patch tokens. Label embeddings come from the CLIP text tower with tuned prompts. "
        "Distillation is what preserves the zero-shot ability on unseen labels."
    ),
    papers=(MKT, CLIP),
    notes=(
        (
            "SigLIP / SigLIP 2 backbones: refused with an error naming MKT and the backbone (the student copies "
            "CLIP's last blocks, CLS pooling and projection; docs/siglip.md)."
        ),
        "Fusion follows the official code: each stream's scores are L2-normalised across the label set and the two "
        "are averaged (the paper describes two heads whose scores are summed).",
        "Stage 1 loss: BiAM's ranking loss (margin 1) reduced per image (sum of hinges / that image's violating "
        "pairs, then the mean over images with a positive), plus lambda * L1 distillation of the raw CLS embedding "
        "towards the teacher's CLIP image embedding (lambda = 1).",
        "Scores depend on the label set: each stream is L2-normalised across the labels scored together, so an "
        "image-label pair scores differently among the unseen labels only (ZSL) and among all labels (GZSL), as in "
        "the paper's evaluation. ovmlc's evaluation scores the unseen labels alone for the ZSL views.",
        "Student and teacher share the frozen first blocks: the model keeps the original CLIP (the teacher, also the "
        "zero-shot tower) and stores trainable copies of only the last `n` blocks, final LayerNorm and projection "
        "(`student.*`). This equals a full student copy whose first blocks are frozen, and keeps checkpoints small.",
        "Stage 2 (`prompt_tuning=\"context\"`, the paper's intent) learns CoOp-style context vectors, one per word of "
        "the template around the label (\"There is a\" / \"in the scene\"), initialised from those words' embeddings, "
        "so stage 2 starts exactly at stage 1's label embeddings. `prompt_tuning=\"token_table\"` reproduces the "
        "official code: a trainable copy of the whole token-embedding table, with the label words kept at their "
        "frozen embeddings.",
        "Logits are `logit_scale * fused + logit_bias` with `logit_scale = 1`, `logit_bias = 0` by default (the fused "
        "score itself, in [-1, 1]); the ranking margin is in those units. Pixel normalisation follows the backbone's "
        "processor (the official code feeds ImageNet mean/std to both towers).",
        "`label_maps [B, C, h, w]` are the student's patch scores `<p_j, t_c>`. Saved weights: the whole-model "
        "layout holds the original CLIP, the student copies and (stage 2) the prompt vectors (or the token table); "
        "the adapter-only layout (the default for a model built from a Hub id) holds only what the stage did not "
        "inherit: the student in stage 1, and in stage 2 started from a stage-1 Hub repo only the prompt (the student "
        "and the CLIP are loaded from that repo).",
    ),
)

register_method(
    MethodSpec(
        name="mkt",
        config_class=MKTConfig,
        model_class=MKTModel,
        card=CARD,
        example_config={"num_trainable_layers": 1, "top_k": 4},
        variant_configs=({"stage": 2}, {"stage": 2, "prompt_tuning": "token_table"}),
    )
)

__all__ = ["MKTConfig", "MKTModel"]
