"""The linear-probe baseline: a per-label logistic regression on frozen CLIP image embeddings."""

from .configuration_linear_probe import LinearProbeConfig
from .modeling_linear_probe import LinearProbeModel

# The method card, one structured source (fields of the registry's MethodCard / Paper).
METHOD_CARD = {
    "name": "Linear probe",
    "summary": (
        "A per-label logistic regression on the frozen CLIP image embedding, trained with masked BCE (unannotated"
        " entries ignored). The closed-set baseline of the partial-label setting: labels it was not trained on "
        "are scored zero-shot."
    ),
    "papers": (
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
            "`logit_c = w_c . x + b_c` on the L2-normalised CLIP image embedding x; rows for `probe_labels` (the "
            "training labels, passed by the trainer at construction) under `probe.*`."
        ),
        (
            "Rows start as the zero-shot classifier (`init: text`: w_c = CLIP scale x the normalised 'a photo of "
            "a {}.' embedding, b_c = `logit_bias`) or at zero (`init: zeros`, classic logistic regression)."
        ),
        (
            "Its label embeddings are the classifier rows `[C, D + 1]`; labels without a learned row get the text"
            " row and the mean learned bias, so any label can be scored (zero-shot) and predict/pipeline/Space "
            "work unchanged."
        ),
    ),
}
# Tiny settings for fast tests and docs.
EXAMPLE_CONFIG = {
    "probe_labels": [
        "cat",
        "dog",
        "red car",
    ],
}

__all__ = ["EXAMPLE_CONFIG", "METHOD_CARD", "LinearProbeConfig", "LinearProbeModel"]
