"""ViLD for open-vocabulary tagging with boxes (Gu et al., ICLR 2022): registers the method (`MethodSpec`)."""

from ovmlc.core.registry import MethodCard, MethodSpec, Paper, register_method

from ..papers import CLIP
from .configuration_vild import ViLDConfig
from .modeling_vild import ViLDModel

PAPER = Paper(
    title="Open-vocabulary Object Detection via Vision and Language Knowledge Distillation",
    authors="Xiuye Gu and Tsung-Yi Lin and Weicheng Kuo and Yin Cui",
    venue="International Conference on Learning Representations (ICLR)",
    year=2022,
    url="https://arxiv.org/abs/2104.13921",
    bibtex=(
        "@inproceedings{gu2022vild,\n"
        "  title = {Open-vocabulary Object Detection via Vision and Language Knowledge Distillation},\n"
        "  author = {Gu, Xiuye and Lin, Tsung-Yi and Kuo, Weicheng and Cui, Yin},\n"
        "  booktitle = {International Conference on Learning Representations (ICLR)},\n"
        "  year = {2022},\n"
        "  url = {https://arxiv.org/abs/2104.13921}\n"
        "}"
    ),
)

CARD = MethodCard(
    name="ViLD (Vision and Language knowledge Distillation)",
    summary=(
        "Tags images with any labels and says where each one is. Class-agnostic regions of the image (multi-scale "
        "windows over the patch grid, or boxes given by the caller) are RoI-pooled from the frozen CLIP's dense "
        "tokens and mapped by a small trained head to region embeddings, compared with the frozen label text "
        "embeddings at temperature 0.01 next to a learned background embedding. ViLD-text trains the head with a "
        "softmax over [background, seen labels] on regions matched to object boxes (or, with image-level labels only, "
        "on each label's best region); ViLD-image distils the region embeddings (L1) to the CLIP image embeddings of "
        "the regions' crops, which carries CLIP's knowledge of unseen labels over; the ensemble keeps one head per "
        "loss and scores p_text^lambda * p_image^(1 - lambda) (lambda = 2/3 for seen labels, 1/3 for unseen). An "
        "image's score of a label is its best region's probability; `detect()` returns the boxes."
    ),
    papers=(PAPER, CLIP),
    notes=(
        "Regions are sliding windows over the ViT patch grid (sizes, strides and aspect ratios in the config), not "
        "the proposals of an RPN trained on the seen classes; there is no box regression and no mask head. "
        "Caller boxes (`detect(boxes=...)`) replace the windows; while training, the ground-truth boxes are added to "
        "the regions, as Mask R-CNN adds them to its sampled proposals.",
        "Region features: torchvision-exact RoIAlign (aligned, 2 x 2 bins, 2 x 2 samples), written in torch, over the "
        "frozen CLIP ViT's last-layer tokens (after the final LayerNorm), then `head_num_layers` fc + ReLU and a "
        "projection to the joint space, L2-normalised (ViLD: 4 conv + 2 fc on FPN features of a trained backbone).",
        "Unseen labels' text rows are masked out of training as in the official code: they stay in the training "
        "softmax with logit 0 (the code multiplies their logits by 0), so they get no gradient. Training images "
        "still show unseen objects, unlabelled: ViLD-text learns them as background, ViLD-image does not.",
        "Labels that are positive on an image without a box of their own (scene labels, e.g. a background pattern) "
        "count as an object covering the whole image for the region-level loss. An object with several labels (a "
        "red star: `star`, `red`) spreads its softmax target evenly over them.",
        "With image-level labels only (NUS-WIDE), a label's image-level logit is the max or the log-mean-exp of its "
        "region log-odds, under masked BCE or ASL; `region_scoring: sigmoid` then scores each label against the "
        "background alone (sigmoid(z_c - z_bg)), so a label's score does not depend on the other labels.",
        "ViLD-image targets are the CLIP embeddings of each window's 1x and 1.5x crops (each normalised, averaged, "
        "renormalised), computed once by the trainer with the image features and cached on disk. Crops are taken from "
        "the model's input image (e.g. 224 px), not the original resolution. `crop_mode: mask` keeps the region in "
        "place and greys out the rest instead of resizing it, for a CLIP that only knows objects at their native "
        "scale (the shipped synthetic CLIP recognises 4x-upscaled crops at chance).",
        "The L1 distillation is (1 / M) sum_r ||e_r - v_r||_1 over the windows (the code's mean absolute difference "
        "times the embedding size). The background embedding is learned only by ViLD-text; a ViLD-image-only model "
        "scores regions against the labels alone. In the ensemble both heads use the same classifier (labels + "
        "background).",
        "A label is 'seen' for the ensemble weights when its text embedding equals that of one of "
        "`config.seen_labels` (same name, templates and frozen text tower), so every caller gets the right lambda "
        "without passing names; an untrained model treats every label as unseen.",
        "Scores are float32-exact log-odds of the region probabilities (a saturated softmax at temperature 0.01 "
        "would round to 1 and tie); `logit_scale`/`logit_bias` are not used. With `region_scoring: softmax` a "
        "label's score depends on the labels scored with it. ViLD's protocol scores the unseen labels among all "
        "labels (`zsl_scores_unseen_alone = False`), so ovmlc's ZSL views do too; scored alone they rank lower "
        "(docs/vild.md, Results).",
        "No large-scale jitter or other augmentation: box targets and teacher crops follow the fixed evaluation "
        "geometry.",
        "Saved weights: the region head(s) and the background embedding; the frozen CLIP is inherited "
        "(`inherited_modules = ('clip',)`), so a model trained from a pinned Hub CLIP saves adapter-only.",
        "SigLIP / SigLIP 2 backbones: supported. The teacher embeds the crops with SigLIP's pooled (attention-pooling "
        "head) embedding; the heads read the patch tokens after the final LayerNorm (SigLIP has no CLS token to leave "
        "out) and learn their own projection to the joint space, so they need no text-aligned patch tokens "
        "(docs/siglip.md).",
    ),
)

register_method(
    MethodSpec(
        name="vild",
        config_class=ViLDConfig,
        model_class=ViLDModel,
        card=CARD,
        # Tiny and fast: a 16-unit head, one hidden layer, 6 windows, both heads (ViLD-ensemble).
        example_config={
            "templates": "single",
            "head_hidden_size": 16,
            "head_num_layers": 1,
            "window_sizes": [0.5, 1.0],
            "window_strides": [0.5, 0.5],
            "double_branch": True,
        },
        variant_configs=(
            # ViLD-text alone, scoring each label against the background only (no label-set dependence).
            {
                "templates": "single",
                "head_hidden_size": 16,
                "head_num_layers": 1,
                "window_sizes": [1.0],
                "window_strides": [1.0],
                "distillation_weight": 0.0,
                "double_branch": False,
                "region_scoring": "sigmoid",
            },
        ),
    )
)

__all__ = ["ViLDConfig", "ViLDModel"]
