from ovmlc.core.registry import MethodCard, MethodSpec, register_method

from ..papers import CLIP, MKT
from .configuration_clipft import CLIPFTConfig
from .modeling_clipft import CLIPFTModel

CARD = MethodCard(
    name="CLIP-FT (fine-tuned CLIP)",
    summary=(
        "The CLIP image tower is fine-tuned on the seen labels (fully, or with LoRA adapters) with a masked BCE loss "
        "against frozen CLIP label-text embeddings and a learnable logit scale and bias; there is no distillation. "
        "It is the fine-tuning baseline of the open-vocabulary multi-label literature (e.g. the tables of the MKT "
        "paper); expect it to forget part of CLIP's zero-shot ability on unseen labels."
    ),
    papers=(CLIP, MKT),
    notes=(
        (
            "SigLIP / SigLIP 2 backbones (docs/siglip.md): supported; SigLIP's vision encoder layers have CLIP's "
            "module names, so LoRA targets the same q/v projections (the attention-pooling head is not adapted; full "
            "fine-tuning trains it); with `logit_scale=None` the logit scale and bias start from SigLIP's own."
        ),
        "Logits are `scale * cos(image, label) + bias` with a learnable scale and bias initialised at SigLIP's 10 and "
        "-10, trained at `logit_lr_multiplier` times the learning rate (at fine-tuning learning rates Adam would move "
        "them far too slowly).",
        "`finetune=\"full\"` trains the whole vision transformer and visual projection; `finetune=\"lora\"` trains "
        "peft LoRA adapters on the vision tower's attention projections (`q_proj`, `v_proj` by default).",
        "LoRA is a peft adapter of the CLIP itself (transformers' `add_adapter` / `load_adapter` on the wrapped "
        "`CLIPModel`), saved in `backbone_adapter/` (`adapter_config.json` naming the CLIP as "
        "`base_model_name_or_path`, `adapter_model.safetensors`); the logit head is in `model.safetensors`. "
        "`save_pretrained(dir, merge_lora=True)` writes the adapter merged into the vision tower (a plain "
        "`finetune=\"full\"` folder).",
    ),
)

register_method(
    MethodSpec(
        name="clipft",
        config_class=CLIPFTConfig,
        model_class=CLIPFTModel,
        card=CARD,
        example_config={"finetune": "full"},
        variant_configs=({"finetune": "lora", "lora_r": 2},),
    )
)

__all__ = ["CLIPFTConfig", "CLIPFTModel"]
