"""Configuration of ViLD (Vision and Language knowledge Distillation, Gu et al., ICLR 2022) for tagging with boxes."""

from ovmlc.core.modeling_base import OVMLCConfig

VILD_TEXT_SUPERVISION = ("auto", "boxes", "image")
VILD_IMAGE_AGGREGATIONS = ("max", "logsumexp")
VILD_IMAGE_LOSSES = ("bce", "asl")
VILD_REGION_SCORING = ("softmax", "sigmoid")
VILD_CROP_MODES = ("resize", "mask")
VILD_REGION_ENCODERS = ("head", "clip_crops")


class ViLDConfig(OVMLCConfig):
    r"""
    ViLD brought to multi-label tagging: class-agnostic regions of each image (multi-scale windows over the patch
    grid, or boxes given by the caller or the dataset) are RoI-pooled from the frozen CLIP's dense tokens and mapped
    by a small trainable head to L2-normalised region embeddings, scored against frozen label text embeddings. Fields
    are those of `OVMLCConfig` (defaults: `templates="imagenet80"`, `prompt_pool="normalized"`, i.e. ViLD's
    normalise-average-renormalise prompt ensemble; `logit_scale`/`logit_bias` are not used: ViLD's logits are the
    log-odds of its probabilities) plus:

    window_sizes (`list[float]`): window sides as fractions of the image side (coarse to fine order is kept).
    window_strides (`list[float]`): the largest step between neighbouring windows of each size (same unit).
    window_aspect_ratios (`list[float]`): width / height ratios of the windows (constant area).
    roi_output_size (`int`): RoIAlign bins per side (S); the head sees S x S x vision width features.
    roi_sampling_ratio (`int`): bilinear samples per bin per side.
    head_hidden_size (`int`), head_num_layers (`int`): the region head's hidden fc layers (ViLD: 2 x 1024).
    temperature (`float`): tau of `z = cos(e_r, t_c) / tau` (0.01, i.e. ViLD's multiplier 100).
    background_init_std (`float`): std of the learnable background embedding's normal init (0.01), normalised.
    text_weight (`float`): weight of the ViLD-text loss (0 = ViLD-image only, with `double_branch=False`).
    distillation_weight (`float`): w of the ViLD-image L1 distillation loss (0.5; 0 = ViLD-text only, with
        `double_branch=False`).
    double_branch (`bool`): ViLD-ensemble: a text head (ViLD-text loss) and an image head (distillation) whose
        probabilities are combined as `p_text^lambda * p_image^(1 - lambda)`; needs both weights > 0 (each head is
        trained by its own loss only: with a weight of 0 it would stay random, so that is refused).
    ensemble_weight (`float`): lambda for seen labels (2/3); unseen labels use 1 - lambda (1/3).
    text_supervision (`"auto"` | `"boxes"` | `"image"`): region-level softmax on regions matched to object boxes
        (`boxes`), or image-level labels through aggregated region scores (`image`); `auto` uses boxes when the
        training batch carries them.
    train_on_object_boxes (`bool`): add the ground-truth boxes to the regions of a training image (as Mask R-CNN adds
        them to its sampled proposals).
    positive_iou, background_iou (`float`): a region with IoU >= positive_iou with an object box learns that object's
        labels; one with IoU < background_iou with every box learns background; the rest are ignored.
    mask_unseen_text_rows (`bool`): the unseen labels' text rows stay in the training softmax with logit 0 (the
        official code multiplies their logits by 0), so they are never trained.
    image_aggregation (`"max"` | `"logsumexp"`): image-level logit of a label from its region log-odds (`logsumexp`
        is the log-mean-exp: between the mean and the max).
    image_loss (`"bce"` | `"asl"`), asl_gamma_neg, asl_gamma_pos, asl_clip: the image-level loss (masked).
    region_scoring (`"softmax"` | `"sigmoid"`): a region's probability of a label is a softmax over [background,
        scored labels] (ViLD; a label's score then depends on the other labels scored with it) or
        `sigmoid(z_c - z_background)` (independent of the other labels).
    crop_mode (`"resize"` | `"mask"`): how the CLIP teacher sees a region: cut out and resized to the input size
        (ViLD), or in place with the rest of the image set to the mean colour (for a CLIP that only knows objects
        at their native scale, e.g. the shipped synthetic one).
    crop_context (`list[float]`): box scales whose teacher embeddings are ensembled (ViLD: 1x and 1.5x).
    region_encoder (`"head"` | `"clip_crops"`): `head` is ViLD; `clip_crops` embeds each region with the frozen CLIP
        on its crops (the teacher itself, no training: the zero-shot baseline on the same regions).
    nms_iou (`float`), max_detections (`int`), detection_score_threshold (`float`): `detect()` post-processing
        (per-label NMS at IoU 0.5, at most 100 boxes per image, score threshold 0 as in ViLD).
    initializer_range (`float`): std of the head's weight init.
    """

    model_type = "ovmlc_vild"

    templates: str | list[str] | None = "imagenet80"
    prompt_pool: str = "normalized"
    window_sizes: list[float] | None = None
    window_strides: list[float] | None = None
    window_aspect_ratios: list[float] | None = None
    roi_output_size: int = 2
    roi_sampling_ratio: int = 2
    head_hidden_size: int = 1024
    head_num_layers: int = 2
    temperature: float = 0.01
    background_init_std: float = 0.01
    text_weight: float = 1.0
    distillation_weight: float = 0.5
    double_branch: bool = False
    ensemble_weight: float = 2.0 / 3.0
    text_supervision: str = "auto"
    train_on_object_boxes: bool = True
    positive_iou: float = 0.5
    background_iou: float = 0.3
    mask_unseen_text_rows: bool = True
    image_aggregation: str = "max"
    image_loss: str = "bce"
    asl_gamma_neg: float = 4.0
    asl_gamma_pos: float = 0.0
    asl_clip: float = 0.05
    region_scoring: str = "softmax"
    crop_mode: str = "resize"
    crop_context: list[float] | None = None
    region_encoder: str = "head"
    nms_iou: float = 0.5
    max_detections: int = 100
    detection_score_threshold: float = 0.0
    initializer_range: float = 0.02

    def __post_init__(self, **kwargs):
        # Mutable defaults are filled here (a dataclass field cannot default to a list).
        self.window_sizes = [float(v) for v in (self.window_sizes or [0.25, 0.5, 1.0])]
        self.window_strides = [float(v) for v in (self.window_strides or [0.25] * len(self.window_sizes))]
        self.window_aspect_ratios = [float(v) for v in (self.window_aspect_ratios or [1.0])]
        self.crop_context = [float(v) for v in (self.crop_context or [1.0, 1.5])]
        choices = {
            "text_supervision": VILD_TEXT_SUPERVISION,
            "image_aggregation": VILD_IMAGE_AGGREGATIONS,
            "image_loss": VILD_IMAGE_LOSSES,
            "region_scoring": VILD_REGION_SCORING,
            "crop_mode": VILD_CROP_MODES,
            "region_encoder": VILD_REGION_ENCODERS,
        }
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"ViLDConfig.{name} must be one of {allowed}, got {getattr(self, name)!r}")
        if len(self.window_sizes) != len(self.window_strides):
            raise ValueError(
                f"ViLDConfig.window_sizes {self.window_sizes} and window_strides {self.window_strides} need the same "
                "length"
            )
        if any(not 0 < size <= 1 for size in self.window_sizes) or any(s <= 0 for s in self.window_strides):
            raise ValueError(
                f"ViLDConfig.window_sizes must lie in (0, 1] and window_strides be > 0 (fractions of the image side), "
                f"got {self.window_sizes} / {self.window_strides}"
            )
        if any(ratio <= 0 for ratio in self.window_aspect_ratios) or any(c <= 0 for c in self.crop_context):
            raise ValueError("ViLDConfig.window_aspect_ratios and crop_context must be > 0")
        for name in ("roi_output_size", "roi_sampling_ratio", "head_hidden_size", "max_detections"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"ViLDConfig.{name} must be >= 1, got {getattr(self, name)!r}")
        if int(self.head_num_layers) < 0:
            raise ValueError(f"ViLDConfig.head_num_layers must be >= 0, got {self.head_num_layers!r}")
        if float(self.temperature) <= 0:
            raise ValueError(f"ViLDConfig.temperature must be > 0, got {self.temperature!r}")
        if float(self.text_weight) < 0 or float(self.distillation_weight) < 0:
            raise ValueError("ViLDConfig.text_weight and distillation_weight must be >= 0")
        if not 0.0 <= float(self.ensemble_weight) <= 1.0:
            raise ValueError(f"ViLDConfig.ensemble_weight must be in [0, 1], got {self.ensemble_weight!r}")
        if not 0.0 <= float(self.background_iou) <= float(self.positive_iou) <= 1.0:
            raise ValueError(
                f"ViLDConfig needs 0 <= background_iou <= positive_iou <= 1, got {self.background_iou!r}, "
                f"{self.positive_iou!r}"
            )
        if self.double_branch and self.region_encoder != "head":
            raise ValueError("ViLDConfig.double_branch needs region_encoder='head'")
        if self.region_encoder == "head":
            self._check_every_head_trains()
        super().__post_init__(**kwargs)

    def _check_every_head_trains(self) -> None:
        """Refuse settings under which a trainable head keeps its random init: each loss is the only one that trains
        its head (the ensemble's image head: distillation; its text head and the background: ViLD-text). An untrained
        head is noise, not a training-free branch (that is `region_encoder='clip_crops'`, the teacher itself)."""
        trains_text, distills = float(self.text_weight) > 0, float(self.distillation_weight) > 0
        if self.double_branch and not distills:
            raise ValueError(
                "ViLDConfig.double_branch=True with distillation_weight=0: the ensemble's image head is trained only "
                "by the distillation loss, so it would keep its random init and its p_image would be noise; set "
                "distillation_weight > 0 (ViLD: 0.5), or double_branch=False for ViLD-text alone"
            )
        if self.double_branch and not trains_text:
            raise ValueError(
                "ViLDConfig.double_branch=True with text_weight=0: the ensemble's text head (and the background "
                "embedding) is trained only by the ViLD-text loss, so it would keep its random init and its p_text "
                "would be noise; set text_weight > 0, or double_branch=False for ViLD-image alone"
            )
        if not (trains_text or distills):
            raise ValueError(
                "ViLDConfig.text_weight=0 and distillation_weight=0: nothing would train the region head; for the "
                "training-free baseline (CLIP on each region's crops) use region_encoder='clip_crops'"
            )


__all__ = ["ViLDConfig"]
