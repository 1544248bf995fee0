from ovmlc.core.registry import MethodCard, MethodSpec, Paper, register_method

from ..papers import CLIP
from .configuration_qks import QKSConfig
from .modeling_qks import QKSModel

PAPER = Paper(
    title="Query-Based Knowledge Sharing for Open-Vocabulary Multi-Label Classification",
    authors="Xuelin Zhu and Jian Liu and Dongqi Tang and Jiawei Ge and Weijia Liu and Bo Liu and Jiuxin Cao",
    venue="ACM Transactions on Multimedia Computing, Communications, and Applications (TOMM)",
    year=2025,
    url="https://arxiv.org/abs/2401.01181",
    bibtex=(
        "@article{zhu2024qks,\n"
        "  title = {Query-Based Knowledge Sharing for Open-Vocabulary Multi-Label Classification},\n"
        "  author = {Xuelin Zhu and Jian Liu and Dongqi Tang and Jiawei Ge and Weijia Liu and Bo Liu and Jiuxin Cao},\n"
        "  journal = {ACM Transactions on Multimedia Computing, Communications, and Applications (TOMM)},\n"
        "  year = {2025},\n"
        "  doi = {10.1145/3762195},\n"
        "  eprint = {2401.01181},\n"
        "  archivePrefix = {arXiv}\n"
        "}"
    ),
)

CARD = MethodCard(
    name="QKS (Query-Based Knowledge Sharing)",
    summary=(
        "A frozen CLIP image tower feeds a set of learnable, label-agnostic query tokens refined by a small query "
        "transformer (self-attention among the queries, cross-attention to all image tokens). Every label embedding "
        "(an average over a pool of prompt templates) picks the query it matches best; the un-normalised dot product "
        "is the label's logit. Only the queries, the query transformer and a projection are trained, on the seen "
        "labels; unseen labels are scored through the same shared queries."
    ),
    papers=(PAPER, CLIP),
    notes=(
        (
            "SigLIP / SigLIP 2 backbones: supported. The queries attend to SigLIP's patch tokens (after its final "
            "LayerNorm; there is no CLS token, so `include_cls_token` changes nothing). SigLIP has no "
            "`visual_projection`: the bias-free projection starts from the linear part of the attention-pooling head's "
            "value path, `out_proj.weight @ W_v`, the map a token takes into the joint space when the head attends to "
            "it alone (the value path's biases and the head's MLP residual are left out: a bias-free linear cannot "
            "hold them; docs/siglip.md)."
        ),
        "The projection into the joint space is a trainable *copy* of CLIP's `visual_projection` (the official code "
        "trains CLIP's own `proj`): the zero-shot projection inside `clip` stays intact, so the same checkpoint can "
        "still act as plain CLIP.",
        "Unannotated labels are masked out of the loss (`mask_unannotated=True`, the paper's intent); the official "
        "Open Images command used plain BCE that counts them as negatives: `mask_unannotated=False` reproduces it.",
        "ASL is summed over annotated entries and divided by the batch size (the code also divides by the number of "
        "labels and multiplies by 1000; with Adam this only matters through gradient clipping, which the code does "
        "not use).",
        "The query transformer is built from plain attention/FFN layers (BERT-style post-LayerNorm, as BLIP-2's "
        "Q-Former; hidden = vision width, heads = vision heads, FFN = 4x by default) instead of a BERT-base module; "
        "the official Q-Former also carries unused text-side weights.",
        "Logits are `logit_scale * max_j <q_j, t_c> + logit_bias` with `logit_scale = 1`, `logit_bias = 0` by "
        "default: the raw dot product, whose magnitude the queries and projection learn.",
        "Outputs `query_index [B, C]` (the query each label picked) and, on request, `label_maps [B, C, h, w]`: the "
        "last layer's head-averaged cross-attention of the picked query over the patch grid.",
        "Saved weights: the whole model (frozen CLIP + query transformer + projection), so the folder loads on its "
        "own.",
    ),
)

register_method(
    MethodSpec(
        name="qks",
        config_class=QKSConfig,
        model_class=QKSModel,
        card=CARD,
        example_config={"num_queries": 4, "num_query_layers": 1},
    )
)

__all__ = ["QKSConfig", "QKSModel"]
