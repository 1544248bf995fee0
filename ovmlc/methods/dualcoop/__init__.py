"""DualCoOp: a positive and a negative learned prompt per label, class-specific region aggregation."""

from ovmlc.core.registry import MethodCard, MethodSpec, Paper, register_method

from ..papers import CLIP, COOP, DUALCOOP
from .configuration_dualcoop import DualCoOpConfig
from .modeling_dualcoop import DualCoOpModel

MASKCLIP = Paper(
    title="Extract Free Dense Labels from CLIP",
    authors="Chong Zhou and Chen Change Loy and Bo Dai",
    venue="European Conference on Computer Vision (ECCV)",
    year=2022,
    url="https://arxiv.org/abs/2112.01071",
    bibtex=(
        "@inproceedings{zhou2022maskclip,\n"
        "  title = {Extract Free Dense Labels from CLIP},\n"
        "  author = {Zhou, Chong and Loy, Chen Change and Dai, Bo},\n"
        "  booktitle = {European Conference on Computer Vision (ECCV)},\n"
        "  year = {2022},\n"
        "  eprint = {2112.01071},\n"
        "  archivePrefix = {arXiv}\n"
        "}"
    ),
)

CARD = MethodCard(
    name="DualCoOp (Dual Context Optimization)",
    summary=(
        "A frozen CLIP with two learned prompts per label, a positive and a negative one. Every region of the "
        "image (dense CLIP tokens, the global token included) is compared with both prompts; the regions are "
        "weighted by a softmax of the positive prompt's response (class-specific region aggregation), and the "
        "label's probability is the softmax between its aggregated positive and negative logits, trained with "
        "ASL. One method for partial labels and for zero-shot labels (scored through their names)."
    ),
    papers=(DUALCOOP, COOP, MASKCLIP, CLIP),
    notes=(
        (
            "SigLIP / SigLIP 2 backbones (docs/siglip.md): supported; region scores read each patch token through "
            "SigLIP's attention-pooling head's value path (SigLIP has no CLS token nor projection; the global token "
            "is the pooled image embedding), an approximation like MaskCLIP's on CLIP."
        ),
        (
            "Dense features: the official code uses CLIP ResNets, whose attention pool it replaces by its value "
            "path (`c_proj(v_proj(tokens))` for the mean token and every spatial token). transformers has no "
            "ResNet CLIP, so for ViT backbones the regions are MaskCLIP's value-path tokens of the last block "
            "(`out_proj(v_proj(LN1(x)))` instead of attention, then the block's residual and MLP, the final "
            "LayerNorm and the projection; `dense_features: value`, the default) or the plain output tokens "
            "(`dense_features: patch`). The two are measured side by side on the synthetic world in "
            "docs/methods.md (on the small shipped CLIP the plain tokens are the better ones)."
        ),
        (
            "The global token (CLS through the same path) is one of the regions, as the code's mean token is "
            "(`include_global_token`)."
        ),
        (
            "Scores as coded: s = 20 * cos(prompt, region) per region and prompt, w = softmax over regions of the"
            " positive prompt's s (used for both prompts), logit = 5 * sum_r w * s (the code's hard-coded 20 and "
            "5, config fields here; its `--logit_scale` is unused). The weighted sum is taken on the features, "
            "which gives the same numbers."
        ),
        (
            "Output: `logits = pos - neg`, so `sigmoid(logits)` is the 2-way softmax's positive probability and "
            "every ovmlc tool (thresholds, predict, pipeline) works unchanged; `label_maps [B, C, h, w]` are the "
            "positive prompt's spatial weights over the patch grid (the global token's weight left out)."
        ),
        (
            "Loss, paper vs code: the paper writes ASL on p = softmax(pos, neg) with a hard threshold max(p - m, "
            "0) on negatives; the code shifts the negative probability up by the clip (min(p- + 0.05, 1)), which "
            "is the same function. Code-only details kept: gamma+ = 1, gamma- = 2, clip 0.05, log clamped at "
            "1e-6, focal weights without gradient, entries with label -1 (unannotated) removed, the loss SUMMED "
            "over entries (not averaged) and multiplied by `loss_w` (`loss_weight`; 0.01 in the zero-shot README,"
            " not published per partial-label proportion). `asl_reduction: batch_mean` divides by the batch size "
            "instead."
        ),
        (
            "`num_train_cls` (the code's `--num_train_cls`): each training batch encodes prompts and computes the"
            " loss for a random subset of at most that many training labels (torch.randperm, like the code); "
            "evaluation scores every label."
        ),
        (
            "Contexts: positive and negative sets share `n_ctx` and the initialisation rule, with independent "
            "vectors (`prompt_learner.ctx [2, n_ctx, H]`, order negative, positive); class-agnostic by default "
            "(zero-shot), CSC for partial labels (`class_specific`, training labels only, with `csc_fallback` for"
            " the others)."
        ),
        (
            "Recipes (hub_configs/dualcoop-*.yaml) follow the README commands (SGD, momentum 0.9, wd 5e-4, 1 "
            "constant warm-up epoch at 1e-5 then cosine, batch 32, 50 epochs, squash + Cutout + RandAugment); the"
            " schedule steps per iteration instead of per epoch, and model selection uses a held-out validation "
            "split instead of the test set."
        ),
        (
            "COCO partial labels: the official loader's per-object-size rows, masked independently as DualCoOp "
            "issues #4/#10 describe, are `ovmlc data prepare coco --partial-label-mode dualcoop-size-rows` (off "
            "by default; it keeps 1 - (1 - P)^3 of the entries and turns some positives into negatives). The "
            "released loader masks the three rows with one shared draw, so as published it keeps exactly P."
        ),
    ),
)

register_method(
    MethodSpec(
        name="dualcoop",
        config_class=DualCoOpConfig,
        model_class=DualCoOpModel,
        card=CARD,
        example_config={
            "prompt_learning": {
                "n_ctx": 4,
            },
        },
    )
)

__all__ = ["DualCoOpConfig", "DualCoOpModel"]
