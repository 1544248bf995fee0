"""Configuration of the CoOp family: CoOp (Zhou et al., IJCV 2022) as a multi-label method, and the fields DualCoOp and
DualCoOp++ share with it (learned prompts, ASL, the per-batch label subset)."""

from ovmlc.core.modeling_base import OVMLCConfig
from ovmlc.prompting.configuration_prompting import PromptLearningConfig

PROMPT_FAMILY_LOSSES = ("asl", "bce")
ASL_REDUCTIONS = ("sum", "batch_mean")


class CoOpFamilyConfig(OVMLCConfig):
    r"""
    Fields shared by CoOp, DualCoOp and DualCoOp++ (frozen CLIP, only learned prompt context trains). On top of
    `OVMLCConfig`:

    prompt_learning (`dict`, *optional*): the learned prompt, a `ovmlc.prompting.PromptLearningConfig` as a dict
        (`n_ctx`, `ctx_init`, `class_specific`, `csc_fallback`, `class_token_position`, `init_std`, ...). `None` = the
        CoOp default: 16 context vectors from N(0, 0.02), shared by all labels, class name at the end. The number of
        prompt sets is the method's (CoOp 1, DualCoOp 2, DualCoOp++ 3) and need not be given.
    loss (`"asl"` | `"bce"`): asymmetric loss (the DualCoOp code's) or masked BCE (mean over annotated entries).
    asl_gamma_neg, asl_gamma_pos, asl_clip (`float`): ASL focusing and probability margin (DualCoOp code: 2, 1, 0.05).
    asl_reduction (`"sum"` | `"batch_mean"`): ASL summed over the annotated entries of a batch (the DualCoOp code) or
        divided by the batch size.
    loss_weight (`float`): the loss is multiplied by this (DualCoOp's `loss_w`; its zero-shot command uses 0.01).
    num_train_cls (`int`, *optional*): in training, each batch uses a random subset of at most this many of the
        training labels (prompts encoded and loss computed only for them; DualCoOp's `--num_train_cls`, 100 on
        NUS-WIDE's 925 seen tags). `None` = every training label every batch.
    """

    prompt_learning: dict | None = None
    loss: str = "asl"
    asl_gamma_neg: float = 2.0
    asl_gamma_pos: float = 1.0
    asl_clip: float = 0.05
    asl_reduction: str = "sum"
    loss_weight: float = 1.0
    num_train_cls: int | None = None

    def __post_init__(self, **kwargs):
        name = type(self).__name__
        if self.loss not in PROMPT_FAMILY_LOSSES:
            raise ValueError(f"{name}.loss must be one of {PROMPT_FAMILY_LOSSES}, got {self.loss!r}")
        if self.asl_reduction not in ASL_REDUCTIONS:
            raise ValueError(f"{name}.asl_reduction must be one of {ASL_REDUCTIONS}, got {self.asl_reduction!r}")
        if self.num_train_cls is not None and (isinstance(self.num_train_cls, bool) or int(self.num_train_cls) < 1):
            raise ValueError(f"{name}.num_train_cls must be a positive integer or None, got {self.num_train_cls!r}")
        if not float(self.loss_weight) > 0:
            raise ValueError(f"{name}.loss_weight must be > 0, got {self.loss_weight!r}")
        if self.prompt_learning is not None and not isinstance(self.prompt_learning, dict):
            raise ValueError(f"{name}.prompt_learning must be a mapping of PromptLearningConfig fields or None")
        # Fail at construction on unknown keys or bad values (names the field), not when the model is built.
        PromptLearningConfig.from_dict(self.prompt_learning, where=f"{name}.prompt_learning")
        super().__post_init__(**kwargs)


class CoOpConfig(CoOpFamilyConfig):
    r"""
    CoOp for multi-label classification: frozen CLIP; one learned prompt `[SOT] V_1..V_M name . [EOT]` per label
    (context shared by all labels, or class-specific); `logit_c = scale * cos(image, prompt_c) + bias`, one sigmoid
    per label. Fields are those of `CoOpFamilyConfig` plus:

    logit_scale (`float`, *optional*): the cosine scale; `None` = CLIP's learned temperature (capped at 100, CoOp's
        `logit_scale.exp()`).
    logit_bias (`float`): the initial value of the bias shared by all labels. Raw CLIP cosines of absent labels are
        far above 0 (sigmoid of `scale * cos` is ~1 for every label), so a per-label sigmoid loss needs a bias; CoOp's
        softmax never did.
    train_logit_bias (`bool`): learn the bias (`logit_head.bias`) with the prompt.
    logit_bias_lr_multiplier (`float`): its learning-rate multiplier (prompt learning rates are small and the bias
        must travel `scale * typical cosine`).
    """

    model_type = "ovmlc_coop"

    logit_bias: float = 0.0
    train_logit_bias: bool = True
    logit_bias_lr_multiplier: float = 100.0


__all__ = ["CoOpConfig", "CoOpFamilyConfig"]
