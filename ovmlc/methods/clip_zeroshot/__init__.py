from ovmlc.core.registry import MethodCard, MethodSpec, register_method

from ..papers import CLIP
from .configuration_clip_zeroshot import CLIPZeroShotConfig
from .modeling_clip_zeroshot import CLIPZeroShotModel

CARD = MethodCard(
    name="CLIP zero-shot",
    summary=(
        "Plain CLIP used as a multi-label classifier without training: each label is scored independently as a "
        "scaled cosine similarity between the image embedding and the averaged prompt embeddings of the label (a "
        "sigmoid per label, no softmax across labels). Any label text can be scored."
    ),
    papers=(CLIP,),
    notes=(
        (
            "SigLIP / SigLIP 2 backbones (docs/siglip.md): logits = exp(logit_scale) * cos + logit_bias with the "
            "checkpoint's own scale and bias (its pretraining sigmoid), no reference prompt; label maps from each "
            "patch token through the pooling head's value path."
        ),
        "Each image's similarity to a neutral reference prompt (`reference_prompt`, \"a photo.\") is subtracted "
        "from its label similarities, so raw CLIP cosines (around 0.2-0.3 for every label) become usable sigmoid "
        "scores without calibration data; rankings are those of plain CLIP.",
        "`label_maps` are the same score computed per patch token (projected through the final LayerNorm and "
        "`visual_projection`), usable as coarse heatmaps.",
    ),
)

register_method(
    MethodSpec(
        name="clip_zeroshot",
        config_class=CLIPZeroShotConfig,
        model_class=CLIPZeroShotModel,
        card=CARD,
        example_config={},
    )
)

__all__ = ["CLIPZeroShotConfig", "CLIPZeroShotModel"]
