"""DualCoOp++: evidence-guided aggregation of a positive/negative prompt pair, Winner-Take-All."""

from ovmlc.core.registry import MethodCard, MethodSpec, Paper, register_method

from ..papers import CLIP, COOP, DUALCOOP
from .configuration_dualcooppp import DualCoOpPPConfig
from .modeling_dualcooppp import DualCoOpPPModel

DUALCOOPPP = Paper(
    title="DualCoOp++: Fast and Effective Adaptation to Multi-Label Recognition with Limited Annotations",
    authors="Ping Hu and Ximeng Sun and Stan Sclaroff and Kate Saenko",
    venue="IEEE Transactions on Pattern Analysis and Machine Intelligence (TPAMI)",
    year=2023,
    url="https://arxiv.org/abs/2308.01890",
    bibtex=(
        "@article{hu2023dualcooppp,\n"
        "  title = {DualCoOp++: Fast and Effective Adaptation to Multi-Label Recognition with Limited Annotations},\n"
        "  author = {Hu, Ping and Sun, Ximeng and Sclaroff, Stan and Saenko, Kate},\n"
        "  journal = {IEEE Transactions on Pattern Analysis and Machine Intelligence},\n"
        "  year = {2023},\n"
        "  eprint = {2308.01890},\n"
        "  archivePrefix = {arXiv}\n"
        "}"
    ),
)

CARD = MethodCard(
    name="DualCoOp++ (Evidence-guided Dual Context Optimization)",
    summary=(
        "DualCoOp with a third learned prompt per label, the evidential one, whose spatial response decides which"
        " regions the positive and negative prompts are aggregated over, plus a parameter-free Winner-Take-All "
        "step that lets the labels compete for each region during training. No official code exists; this is a "
        "reading of the paper with every decision documented."
    ),
    papers=(DUALCOOPPP, DUALCOOP, COOP, CLIP),
    notes=(
        "SigLIP / SigLIP 2 backbones: supported as DualCoOp (docs/siglip.md).",
        (
            "No official code (DualCoOp issue #16): written from the paper's description; everything below that "
            "the paper does not pin down is a decision of this implementation."
        ),
        (
            "Three prompt sets per label (`prompt_learner.ctx [3, n_ctx, H]`, order evidential, positive, "
            "negative) sharing `n_ctx` and the initialisation rule, independent vectors; CSC as in DualCoOp."
        ),
        (
            "Evidence-guided aggregation: w = softmax over regions of 20 * cos(evidential prompt, region) "
            "(DualCoOp's scale); positive and negative logits = 5 * sum_r w * 20 * cos(prompt, region), exactly "
            "DualCoOp's aggregation with the evidential prompt in place of the positive one for the weights. The "
            "evidential prompt has no loss of its own: it learns only through the weights."
        ),
        (
            "Probability and loss as DualCoOp: softmax over (negative, positive), `logits = pos - neg`, ASL on "
            "the 2-way softmax as coded (gamma+ 1, gamma- 2, clip 0.05, summed, x `loss_weight`)."
        ),
        (
            "Winner-Take-All (parameter-free, across labels, training only): before the spatial softmax the "
            "evidential logits g [B, C, R] become g + log softmax over labels of g / T (T = `wta_temperature`, "
            "1), so a region's weight for label c is proportional to exp(g_cr) times c's share of that region "
            "among the labels of the batch; a region that clearly shows another label contributes little to c. At"
            " inference (and without gradients) it is off, so a label's score never depends on the other labels "
            "scored with it. With `num_train_cls` the competition is among the sampled labels."
        ),
        (
            "Same dense features as DualCoOp (value path by default, `dense_features: patch` for the plain "
            "tokens) and the same global token; `label_maps` are the evidential weights over the patch grid."
        ),
    ),
)

register_method(
    MethodSpec(
        name="dualcooppp",
        config_class=DualCoOpPPConfig,
        model_class=DualCoOpPPModel,
        card=CARD,
        example_config={
            "prompt_learning": {
                "n_ctx": 4,
            },
        },
    )
)

__all__ = ["DualCoOpPPConfig", "DualCoOpPPModel"]
