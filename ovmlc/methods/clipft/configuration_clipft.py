"""Configuration of the CLIP fine-tuning baseline (CLIP-FT, as in MKT's tables)."""

from ovmlc.core.modeling_base import OVMLCConfig

CLIPFT_MODES = ("full", "lora")


class CLIPFTConfig(OVMLCConfig):
    r"""
    CLIP-FT: the CLIP image tower fine-tuned on the seen labels with (masked) BCE against frozen label-text
    embeddings; logits = scale * cos(image, label) + bias with a learnable scale and bias. The baseline that forgets
    unseen labels. Fields are those of `OVMLCConfig` plus:

    finetune (`"full"` | `"lora"`): train the whole image tower (vision transformer + `visual_projection`), or LoRA
        adapters on `lora_target_modules` of the vision tower only (peft).
    lora_r, lora_alpha (`int`), lora_dropout (`float`): LoRA rank, scaling numerator and dropout.
    lora_target_modules (`list[str]`): vision-tower linear layers that get adapters (CLIP attention: `q_proj`,
        `k_proj`, `v_proj`, `out_proj`; MLP: `fc1`, `fc2`).
    logit_scale, logit_bias (`float`): the *initial* scale and bias of the learnable logit head (SigLIP's 10 and -10,
        so all labels start below 0.5; `logit_scale=None` starts from CLIP's learned temperature, and on a SigLIP
        backbone from SigLIP's own scale and bias, `logit_bias` then unused).
    train_logit_params (`bool`): learn the scale and bias (needed for BCE on cosines).
    logit_lr_multiplier (`float`): learning-rate multiplier of the scale and bias: at fine-tuning learning rates
        (1e-5 to 1e-4) Adam moves them by about the learning rate per step, far too slowly to go from the initial
        (10, -10) to where the cosines of the backbone sit (e.g. bias -8.5 at scale 40 for the synthetic CLIP).
    """

    model_type = "ovmlc_clipft"

    logit_scale: float | None = 10.0
    logit_bias: float = -10.0
    finetune: str = "full"
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.0
    lora_target_modules: list[str] | None = None
    train_logit_params: bool = True
    logit_lr_multiplier: float = 100.0

    def __post_init__(self, **kwargs):
        if self.finetune not in CLIPFT_MODES:
            raise ValueError(f"CLIPFTConfig.finetune must be one of {CLIPFT_MODES}, got {self.finetune!r}")
        if self.lora_target_modules is None:
            self.lora_target_modules = ["q_proj", "v_proj"]
        if isinstance(self.lora_target_modules, str) or not all(
            isinstance(name, str) and name.isidentifier() for name in self.lora_target_modules
        ):
            raise ValueError(
                f"CLIPFTConfig.lora_target_modules must be a list of module names such as ['q_proj', 'v_proj'], "
                f"got {self.lora_target_modules!r}"
            )
        if int(self.lora_r) < 1:
            raise ValueError(f"CLIPFTConfig.lora_r must be >= 1, got {self.lora_r!r}")
        super().__post_init__(**kwargs)


__all__ = ["CLIPFTConfig"]
