"""DualCoOp++: evidence-guided aggregation of a positive/negative prompt pair, Winner-Take-All."""

from .configuration_dualcooppp import DualCoOpPPConfig
from .modeling_dualcooppp import DualCoOpPPModel

# The method card, one structured source (fields of the registry's MethodCard / Paper).
METHOD_CARD = {
    "name": "DualCoOp++ (Evidence-guided Dual Context Optimization)",
    "summary": (
        "DualCoOp with a third learned prompt per label, the evidential one, whose spatial response decides which"
        " regions the positive and negative prompts are aggregated over, plus a parameter-free Winner-Take-All "
        "step that lets the labels compete for each region during training. No official code exists; this is a "
        "reading of the paper with every decision documented."
    ),
    "papers": (
        {
            "title": "DualCoOp++: Fast and Effective Adaptation to Multi-Label Recognition with Limited Annotations",
            "authors": "Ping Hu, Ximeng Sun, Stan Sclaroff, Kate Saenko",
            "venue": "IEEE Transactions on Pattern Analysis and Machine Intelligence (TPAMI)",
            "year": 2023,
            "url": "https://arxiv.org/abs/2308.01890",
            "bibtex": (
                "@article{hu2023dualcooppp,\n"
                "  title = {DualCoOp++: Fast and Effective Adaptation to Multi-Label Recognition with Limited "
                "Annotations},\n"
                "  author = {Hu, Ping and Sun, Ximeng and Sclaroff, Stan and Saenko, Kate},\n"
                "  journal = {IEEE Transactions on Pattern Analysis and Machine Intelligence},\n"
                "  year = {2023},\n"
                "  eprint = {2308.01890},\n"
                "  archivePrefix = {arXiv}\n"
                "}"
            ),
        },
        {
            "title": "DualCoOp: Fast Adaptation to Multi-Label Recognition with Limited Annotations",
            "authors": "Ximeng Sun, Ping Hu, Kate Saenko",
            "venue": "Advances in Neural Information Processing Systems (NeurIPS)",
            "year": 2022,
            "url": "https://arxiv.org/abs/2206.09541",
            "bibtex": (
                "@inproceedings{sun2022dualcoop,\n"
                "  title = {DualCoOp: Fast Adaptation to Multi-Label Recognition with Limited Annotations},\n"
                "  author = {Sun, Ximeng and Hu, Ping and Saenko, Kate},\n"
                "  booktitle = {Advances in Neural Information Processing Systems (NeurIPS)},\n"
                "  year = {2022},\n"
                "  eprint = {2206.09541},\n"
                "  archivePrefix = {arXiv}\n"
                "}"
            ),
        },
        {
            "title": "Learning to Prompt for Vision-Language Models",
            "authors": "Kaiyang Zhou, Jingkang Yang, Chen Change Loy, Ziwei Liu",
            "venue": "International Journal of Computer Vision (IJCV)",
            "year": 2022,
            "url": "https://arxiv.org/abs/2109.01134",
            "bibtex": (
                "@article{zhou2022coop,\n"
                "  title = {Learning to Prompt for Vision-Language Models},\n"
                "  author = {Zhou, Kaiyang and Yang, Jingkang and Loy, Chen Change and Liu, Ziwei},\n"
                "  journal = {International Journal of Computer Vision},\n"
                "  volume = {130},\n"
                "  number = {9},\n"
                "  pages = {2337--2348},\n"
                "  year = {2022},\n"
                "  doi = {10.1007/s11263-022-01653-1},\n"
                "  eprint = {2109.01134},\n"
                "  archivePrefix = {arXiv}\n"
                "}"
            ),
        },
        {
            "title": "Learning Transferable Visual Models From Natural Language Supervision",
            "authors": (
                "Alec Radford, Jong Wook Kim, Chris Hallacy, Aditya Ramesh, Gabriel Goh, Sandhini Agarwal, Girish"
                " Sastry, Amanda Askell, Pamela Mishkin, Jack Clark, Gretchen Krueger, Ilya Sutskever"
            ),
            "venue": "International Conference on Machine Learning (ICML)",
            "year": 2021,
            "url": "https://arxiv.org/abs/2103.00020",
            "bibtex": (
                "@inproceedings{radford2021clip,\n"
                "  title = {Learning Transferable Visual Models From Natural Language Supervision},\n"
                "  author = {Radford, Alec and Kim, Jong Wook and Hallacy, Chris and Ramesh, Aditya and Goh, "
                "Gabriel and Agarwal, Sandhini and Sastry, Girish and Askell, Amanda and Mishkin, Pamela and "
                "Clark, Jack and Krueger, Gretchen and Sutskever, Ilya},\n"
                "  booktitle = {International Conference on Machine Learning (ICML)},\n"
                "  year = {2021},\n"
                "  eprint = {2103.00020},\n"
                "  archivePrefix = {arXiv}\n"
                "}"
            ),
        },
    ),
    "notes": (
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
}
# Tiny settings for fast tests and docs.
EXAMPLE_CONFIG = {
    "prompt_learning": {
        "n_ctx": 4,
    },
}

__all__ = ["EXAMPLE_CONFIG", "METHOD_CARD", "DualCoOpPPConfig", "DualCoOpPPModel"]
