"""The linear-probe baseline: a per-label logistic regression on frozen CLIP image embeddings."""

from ovmlc.core.registry import MethodCard, MethodSpec, register_method

from ..papers import CLIP
from .configuration_linear_probe import LinearProbeConfig
from .modeling_linear_probe import LinearProbeModel

CARD = MethodCard(
    name="Linear probe",
    summary=(
        "A per-label logistic regression on the frozen CLIP image embedding, trained with masked BCE (unannotated"
        " entries ignored). The closed-set baseline of the partial-label setting: labels it was not trained on "
        "are scored zero-shot."
    ),
    papers=(CLIP,),
    notes=(
        (
            "SigLIP / SigLIP 2 backbones (docs/siglip.md): supported; rows start from scale * text embedding (scale "
            "capped at 100), the image embedding is SigLIP's pooled one."
        ),
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
)

register_method(
    MethodSpec(
        name="linear_probe",
        config_class=LinearProbeConfig,
        model_class=LinearProbeModel,
        card=CARD,
        example_config={
            "probe_labels": [
                "cat",
                "dog",
                "red car",
            ],
        },
    )
)

__all__ = ["LinearProbeConfig", "LinearProbeModel"]
