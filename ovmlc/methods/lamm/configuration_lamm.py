"""Configuration of LAMM (Label Alignment for Multi-Modal prompt learning, Gao et al., AAAI 2024)."""

from ovmlc.core.modeling_base import OVMLCConfig
from ovmlc.methods.coop.configuration_coop import ASL_REDUCTIONS
from ovmlc.methods.dualcoop.configuration_dualcoop import check_region_aggregation_settings
from ovmlc.prompting.configuration_prompting import PromptLearningConfig

LAMM_TASKS = ("multi_label", "single_label")
LAMM_LOSSES = ("asl", "bce")
LAMM_KD_DIRECTIONS = ("paper", "official")
# The prompt of the paper and the official code: [SOT] "a photo of a" (4 context vectors) + label tokens + rest of the
# name + "." [EOT], one learnable label token per label (`min_len` = the shortest name's token count, usually 1).
LAMM_PROMPT_DEFAULTS = {"ctx_init": "a photo of a", "label_tokens": "learnable", "min_len": 1}
# The built-in heads: how many prompt sets each scores, and the task-loss settings a field left unset (None) takes.
# `coop`: LAMM's multi-label transplant (ASL gamma- 4, gamma+ 0, mean over the batch); `dualcoop`: DualCoOp's code
# (gamma- 2, gamma+ 1, summed). A head registered with `register_lamm_head` takes the `coop` loss defaults and the
# prompt sets its class declares.
LAMM_HEAD_DEFAULTS = {
    "coop": {"num_prompt_sets": 1, "asl_gamma_neg": 4.0, "asl_gamma_pos": 0.0, "asl_reduction": "batch_mean"},
    "dualcoop": {"num_prompt_sets": 2, "asl_gamma_neg": 2.0, "asl_gamma_pos": 1.0, "asl_reduction": "sum"},
}


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
    head (`str`): how label embeddings and the image become logits. `"coop"` = scaled cosine of the global image
        embedding and the prompt embedding (CoOp/LAMM). `"dualcoop"` = DualCoOp's head (multi-label only): two prompt
        sets per label (negative, positive; `prompt_learning.num_prompt_sets` 2, filled in when left out), both
        carrying the label's tokens (unseen labels: their original name tokens in both), class-specific region
        aggregation over dense CLIP tokens (`dense_features`, `include_global_token`, `region_logit_scale`,
        `aggregated_logit_scale`, as in `DualCoOpConfig`), `logits = pos - neg`, DualCoOp's ASL on the 2-way softmax
        and the positive prompt's spatial weights as label maps. Its contexts must differ to score anything: train
        them (`train_context: true`, DualCoOp + LAMM) or start from a trained DualCoOp's. More heads can be plugged
        in (`LAMM_HEADS` / `register_lamm_head` in `modeling_lamm`).
    loss (`"asl"` | `"bce"`): multi-label task loss; `asl_gamma_neg`, `asl_gamma_pos`, `asl_clip`, `asl_reduction`
        (`"batch_mean"` | `"sum"`) its parameters; unset (None) gammas and reduction take the head's defaults
        (`LAMM_HEAD_DEFAULTS`: coop 4 / 0 / batch_mean, dualcoop 2 / 1 / sum as DualCoOp's code).
    loss_weight (`float`): multiplies the whole training loss, task loss and hierarchical terms alike, as DualCoOp's
        `loss_w` multiplies its loss (its zero-shot command uses 0.01 on the summed ASL): the regularisers keep their
        weights relative to the task loss.
    dense_features, include_global_token, region_logit_scale, aggregated_logit_scale: the `dualcoop` head's regions
        and scales (see `DualCoOpConfig`); unused by the `coop` head.
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
    asl_gamma_neg: float | None = None
    asl_gamma_pos: float | None = None
    asl_clip: float = 0.05
    asl_reduction: str | None = None
    loss_weight: float = 1.0
    dense_features: str = "value"
    include_global_token: bool = True
    region_logit_scale: float = 20.0
    aggregated_logit_scale: float = 5.0
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
            fail("head", f"must be a head name such as 'coop' or 'dualcoop', got {self.head!r}")
        head_defaults = LAMM_HEAD_DEFAULTS.get(self.head, LAMM_HEAD_DEFAULTS["coop"])
        for key in ("asl_gamma_neg", "asl_gamma_pos", "asl_reduction"):
            if getattr(self, key) is None:
                setattr(self, key, head_defaults[key])
        if self.asl_reduction not in ASL_REDUCTIONS:
            fail("asl_reduction", f"must be one of {ASL_REDUCTIONS} or None, got {self.asl_reduction!r}")
        if not float(self.loss_weight) > 0:
            fail("loss_weight", f"must be > 0, got {self.loss_weight!r}")
        check_region_aggregation_settings(self)
        if self.head == "dualcoop":
            if self.task != "multi_label":
                fail(
                    "task",
                    "the 'dualcoop' head scores each label by a 2-way (negative, positive) softmax: it is multi-label "
                    "only; use head: coop for task: single_label",
                )
            if self.train_logit_params:
                fail(
                    "train_logit_params",
                    "the 'dualcoop' head has no logit scale or bias to train (its region and aggregation scales are "
                    "fixed, as in DualCoOp's code); leave it unset",
                )
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
        given = dict(self.prompt_learning or {})
        if self.head in LAMM_HEAD_DEFAULTS and "num_prompt_sets" not in given:
            given["num_prompt_sets"] = head_defaults["num_prompt_sets"]
        settings = {**LAMM_PROMPT_DEFAULTS, **given}
        self.prompt_learning = PromptLearningConfig.from_dict(settings, where="LAMMConfig.prompt_learning").to_dict()
        sets = self.prompt_learning["num_prompt_sets"]
        if self.head in LAMM_HEAD_DEFAULTS and sets != head_defaults["num_prompt_sets"]:
            expected = head_defaults["num_prompt_sets"]
            fail(
                "prompt_learning",
                f"num_prompt_sets={sets}, but the {self.head!r} head scores {expected} prompt set(s) per label; set "
                f"num_prompt_sets: {expected} or leave it out",
            )
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
        return self.task == "multi_label" and self.head != "dualcoop"


__all__ = [
    "LAMM_HEAD_DEFAULTS",
    "LAMM_KD_DIRECTIONS",
    "LAMM_LOSSES",
    "LAMM_PROMPT_DEFAULTS",
    "LAMM_TASKS",
    "LAMMConfig",
]
