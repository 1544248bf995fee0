"""Configuration of LAMM (Label Alignment for Multi-Modal prompt learning, Gao et al., AAAI 2024)."""

from ovmlc.core.modeling_base import OVMLCConfig
from ovmlc.prompting.configuration_prompting import PromptLearningConfig

LAMM_TASKS = ("multi_label", "single_label")
LAMM_LOSSES = ("asl", "bce")
LAMM_KD_DIRECTIONS = ("paper", "official")
# The prompt of the paper and the official code: [SOT] "a photo of a" (4 context vectors) + label tokens + rest of the
# name + "." [EOT], one learnable label token per label (`min_len` = the shortest name's token count, usually 1).
LAMM_PROMPT_DEFAULTS = {"ctx_init": "a photo of a", "label_tokens": "learnable", "min_len": 1}


class LAMMConfig(OVMLCConfig):
    r"""
    LAMM: a frozen CLIP whose label names become learnable token embeddings ("label tokens") inside a CoOp prompt,
    trained with the hierarchical loss. Fields are those of `OVMLCConfig` (`logit_scale=None` = CLIP's learned
    temperature; `templates` is unused: prompts come from `prompt_learning`) plus:

    prompt_learning (`dict`): the shared prompt mechanism (`ovmlc.prompting.PromptLearningConfig`), merged over
        LAMM's defaults `{"ctx_init": "a photo of a", "label_tokens": "learnable", "min_len": 1}`. Its
        `class_names` (default: `seen_labels`) are the labels that own label tokens; every other label is encoded
        with its original name tokens and the current context. `label_tokens: frozen` turns the model into plain
        CoOp (only the context trains; the hierarchical loss has nothing to act on and is skipped).
    train_context (`bool`): `False` = "LAMM alone" (the official `--origin-clip`: the "a photo of a" context stays
        frozen, only the label tokens train); `True` = CoOp + LAMM (context and label tokens train).
    task (`"multi_label"` | `"single_label"`): multi-label = independent sigmoid scores, ASL or masked BCE (the
        transplant); single-label = the paper's setting, cross-entropy over the softmax of the logits (each training
        image must have exactly one positive among the trained labels).
    head (`str`): how label embeddings and the image become logits; `"coop"` = scaled cosine of the global image
        embedding and the prompt embedding (CoOp/LAMM). Heads are pluggable (`LAMM_HEADS` in `modeling_lamm`);
        `"dualcoop"` is wired there once the DualCoOp aggregation lands.
    loss (`"asl"` | `"bce"`): multi-label task loss; `asl_gamma_neg`, `asl_gamma_pos`, `asl_clip` its parameters.
    train_logit_params (`bool`, *optional*): learn the head's logit scale and bias (`logit_scale`, `logit_bias` are
        their initial values). `None` = True for multi-label (sigmoid losses need the bias to move from CLIP's narrow
        cosine range), False for single-label (the paper keeps CLIP's temperature; a bias cancels in the softmax).
    logit_lr_multiplier (`float`): learning-rate multiplier of the head's scale and bias.
    hierarchical_loss (`bool`): add LAMM's regularisers (the official `--triplet-loss` flag) to the task loss:
        `param_loss_weight * L_param + feature_loss_weight * L_feat + kd_loss_weight * L_kd`.
    shots (`int`, *optional*): training images per class; `None` = 1, the default of the official `--shots` flag.
        The trainer fills it from `dataset.shots` when the recipe does not set it.
    param_loss_weight (`float`, *optional*): lambda_1 of L_param = sum((E - E0)^2) over the label tokens. `None` =
        1 / `shots` (the paper's 1/n). The official code reads n from `--shots`, which its `base_train_lamm_all.sh`
        never passes, so its 1- to 16-shot runs all use weight 1 (set `param_loss_weight: 1.0` to reproduce them).
    feature_loss_weight (`float`): lambda_2 of L_feat (1).
    kd_loss_weight (`float`): lambda_3 of L_kd (0.05); `kd_temperature` its T (2).
    kd_direction (`"paper"` | `"official"`): `"paper"` = knowledge flows from CLIP to LAMM as the paper describes:
        target = softmax(original-name logits / T) (detached), student = the current logits. `"official"` = the
        official code: target = softmax(current logits / T) (with gradient), input = the original-name logits.
    """

    model_type = "ovmlc_lamm"

    logit_scale: float | None = None
    prompt_learning: dict | None = None
    train_context: bool = False
    task: str = "multi_label"
    head: str = "coop"
    loss: str = "asl"
    asl_gamma_neg: float = 4.0
    asl_gamma_pos: float = 0.0
    asl_clip: float = 0.05
    train_logit_params: bool | None = None
    logit_lr_multiplier: float = 100.0
    hierarchical_loss: bool = True
    shots: int | None = None
    param_loss_weight: float | None = None
    feature_loss_weight: float = 1.0
    kd_loss_weight: float = 0.05
    kd_temperature: float = 2.0
    kd_direction: str = "paper"

    def __post_init__(self, **kwargs):
        def fail(key: str, problem: str) -> None:
            raise ValueError(f"LAMMConfig.{key}: {problem}")

        for key, choices in (("task", LAMM_TASKS), ("loss", LAMM_LOSSES), ("kd_direction", LAMM_KD_DIRECTIONS)):
            if getattr(self, key) not in choices:
                fail(key, f"must be one of {choices}, got {getattr(self, key)!r}")
        if not isinstance(self.head, str) or not self.head:
            fail("head", f"must be a head name such as 'coop', got {self.head!r}")
        if self.shots is not None and (isinstance(self.shots, bool) or int(self.shots) < 1):
            fail("shots", f"must be a positive integer or None, got {self.shots!r}")
        for key in ("param_loss_weight", "feature_loss_weight", "kd_loss_weight"):
            value = getattr(self, key)
            if value is not None and float(value) < 0:
                fail(key, f"must be >= 0, got {value!r}")
        if not float(self.kd_temperature) > 0:
            fail("kd_temperature", f"must be > 0, got {self.kd_temperature!r}")
        if not float(self.logit_lr_multiplier) > 0:
            fail("logit_lr_multiplier", f"must be > 0, got {self.logit_lr_multiplier!r}")
        # Validate (and complete) the prompt settings now, so a bad recipe fails before CLIP is loaded.
        settings = {**LAMM_PROMPT_DEFAULTS, **(self.prompt_learning or {})}
        self.prompt_learning = PromptLearningConfig.from_dict(settings, where="LAMMConfig.prompt_learning").to_dict()
        if self.prompt_learning["num_prompt_sets"] != 1 and self.head == "coop":
            fail("prompt_learning", "the 'coop' head scores one prompt set; set num_prompt_sets: 1")
        super().__post_init__(**kwargs)

    @property
    def effective_param_loss_weight(self) -> float:
        """lambda_1: `param_loss_weight`, or 1 / shots (shots = 1 when unknown, as the official `--shots`)."""
        if self.param_loss_weight is not None:
            return float(self.param_loss_weight)
        return 1.0 / float(self.shots or 1)

    @property
    def trains_logit_params(self) -> bool:
        if self.train_logit_params is not None:
            return bool(self.train_logit_params)
        return self.task == "multi_label"


__all__ = ["LAMM_KD_DIRECTIONS", "LAMM_LOSSES", "LAMM_PROMPT_DEFAULTS", "LAMM_TASKS", "LAMMConfig"]
