"""CoOp (Context Optimization) for multi-label classification, and the base of the CoOp family."""

from .configuration_coop import CoOpConfig
from .modeling_coop import CoOpModel

# The method card, one structured source (fields of the registry's MethodCard / Paper).
METHOD_CARD = {
    "name": "CoOp (Context Optimization)",
    "summary": (
        "A frozen CLIP whose only trainable part is the text prompt: M context vectors replace the hand-written "
        "words around each label name (shared by all labels, or one context per training label), and a label's "
        "logit is the scaled cosine between the image embedding and its learned prompt's embedding plus a learned"
        " bias, one sigmoid per label (ASL or masked BCE instead of CoOp's softmax cross-entropy). The "
        "multi-label baseline of prompt learning; unseen labels are scored through their names with the learned "
        "context."
    ),
    "papers": (
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
}
# Tiny settings for fast tests and docs.
EXAMPLE_CONFIG = {
    "prompt_learning": {
        "n_ctx": 4,
    },
}

__all__ = ["EXAMPLE_CONFIG", "METHOD_CARD", "CoOpConfig", "CoOpModel"]
