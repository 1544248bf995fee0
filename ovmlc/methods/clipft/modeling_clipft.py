"""CLIP fine-tuning baseline (CLIP-FT) as a Hub-native model: full fine-tuning or LoRA (peft) of the image tower."""

import math
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from peft import LoraConfig, get_peft_model_state_dict, inject_adapter_in_model, set_peft_model_state_dict
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import AutoTokenizer
from transformers import initialization as init
from transformers.utils import SAFE_WEIGHTS_INDEX_NAME, SAFE_WEIGHTS_NAME, cached_file

from ovmlc.core.backbones import load_image_processor, patch_grid_size, resolve_backbone
from ovmlc.core.modeling_base import OVMLCPreTrainedModel
from ovmlc.core.outputs import MultiLabelOutput
from ovmlc.files import ADAPTER_CONFIG_FILE, ADAPTER_WEIGHTS_FILE, LABEL_EMBEDDINGS_FILE

from .configuration_clipft import CLIPFTConfig

ADAPTER_CONFIG_NAME = ADAPTER_CONFIG_FILE
ADAPTER_WEIGHTS_NAME = ADAPTER_WEIGHTS_FILE
ADAPTER_NAME = "default"
# PEFT's adapter files name weights as seen from a `PeftModel` wrapper.
PEFT_KEY_PREFIX = "base_model.model."
# from_pretrained kwargs that are about loading, not config fields.
LOADING_KWARGS = {
    "dtype",
    "torch_dtype",
    "revision",
    "token",
    "cache_dir",
    "trust_remote_code",
    "device_map",
    "attn_implementation",
    "local_files_only",
    "force_download",
    "subfolder",
    "code_revision",
}


class CLIPFTLogitHead(nn.Module):
    """Learnable logit scale (stored as its log) and bias: logits = exp(log_scale) * cos + bias."""

    def __init__(self):
        super().__init__()
        self.log_scale = nn.Parameter(torch.zeros(()))
        self.bias = nn.Parameter(torch.zeros(()))


class CLIPFTModel(OVMLCPreTrainedModel):
    """CLIP-FT: logits `[B, C]` = scale * cos(fine-tuned image embedding, frozen label embedding) + bias.

    With `finetune="lora"` the adapters are attached after the CLIP weights are loaded (`post_load`), so the base
    checkpoint keys stay those of CLIP.
    """

    config: CLIPFTConfig
    uses_frozen_image_features = False
    # Initialised from the config (a CLIP checkpoint has no logit head); a LoRA folder restores it from the adapter.
    modules_created_on_load = ("logit_head",)

    def __init__(self, config: CLIPFTConfig):
        super().__init__(config)
        self.logit_head = CLIPFTLogitHead()
        self.post_init()
        if config.finetune == "lora" and self.clip.logit_scale.device.type != "meta":
            self.attach_lora()  # built directly (not by from_pretrained, which attaches it in post_load)
        self._freeze()

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        if module is getattr(self, "logit_head", None):
            if self.config.logit_scale is None:
                init.copy_(module.log_scale, self.clip.logit_scale.clamp(max=math.log(100.0)))
            else:
                init.constant_(module.log_scale, math.log(float(self.config.logit_scale)))
            init.constant_(module.bias, float(self.config.logit_bias))

    # ------------------------------------------------------------------ trainable parts
    @property
    def has_lora(self) -> bool:
        return any(name.endswith(f"lora_A.{ADAPTER_NAME}") for name, _ in self.named_modules())

    def lora_config(self) -> LoraConfig:
        """The peft config of the adapters: `lora_target_modules` of the vision tower's encoder layers only."""
        names = "|".join(self.config.lora_target_modules)
        return LoraConfig(
            r=int(self.config.lora_r),
            lora_alpha=int(self.config.lora_alpha),
            lora_dropout=float(self.config.lora_dropout),
            target_modules=rf"clip\.vision_model\.encoder\.layers\.\d+\.(self_attn|mlp)\.({names})",
            base_model_name_or_path=self.config.backbone_name_or_path,
        )

    def attach_lora(self) -> None:
        """Inject fresh LoRA adapters (A: Kaiming, B: zeros, so the model starts equal to the base); idempotent."""
        if self.has_lora:
            return
        try:
            inject_adapter_in_model(self.lora_config(), self, adapter_name=ADAPTER_NAME)
        except ValueError as error:
            raise ValueError(
                f"CLIPFTConfig.lora_target_modules={self.config.lora_target_modules} matched no layer of the vision "
                f"tower (CLIP layers have q_proj, k_proj, v_proj, out_proj, fc1, fc2): {error}"
            ) from error
        self._freeze()

    def _freeze(self) -> None:
        self.requires_grad_(False)
        if self.config.finetune == "full":
            self.clip.vision_model.requires_grad_(True)
            self.clip.visual_projection.requires_grad_(True)
        else:
            for name, parameter in self.named_parameters():
                if ".lora_" in name:
                    parameter.requires_grad_(True)
        self.logit_head.requires_grad_(bool(self.config.train_logit_params))

    def parameter_groups(self, learning_rate, weight_decay=0.0, layer_decay=None):
        """The base groups (no weight decay on biases, norms, 1-d parameters) for the image side, plus the logit
        scale and bias at `learning_rate * logit_lr_multiplier` without weight decay."""
        head = [parameter for parameter in self.logit_head.parameters() if parameter.requires_grad]
        head_ids = {id(parameter) for parameter in head}
        groups = [
            dict(group, params=[p for p in group["params"] if id(p) not in head_ids])
            for group in super().parameter_groups(learning_rate, weight_decay, layer_decay)
        ]
        groups = [group for group in groups if group["params"]]
        if head:
            multiplier = float(self.config.logit_lr_multiplier)
            groups.append(
                {"params": head, "lr": learning_rate * multiplier, "lr_scale": multiplier, "weight_decay": 0.0}
            )
        return groups

    def post_load(self) -> None:
        if self.config.finetune == "lora":
            self.attach_lora()
        self._freeze()

    # ------------------------------------------------------------------ scoring
    def score(self, image_features, label_embeds, return_label_maps=False) -> MultiLabelOutput:
        scale = self.logit_head.log_scale.exp()
        bias = self.logit_head.bias
        label_embeds = F.normalize(label_embeds.to(image_features["image_embeds"].dtype), dim=-1)  # [C, D]
        image_embeds = F.normalize(image_features["image_embeds"], dim=-1)  # [B, D]
        logits = scale * image_embeds @ label_embeds.T + bias  # [B, C]
        label_maps = None
        if return_label_maps and "patch_embeds" in image_features:
            patch_embeds = F.normalize(image_features["patch_embeds"], dim=-1)  # [B, N, D]
            height, width = patch_grid_size(self.clip)
            dense = scale * patch_embeds @ label_embeds.T + bias  # [B, N, C]
            label_maps = dense.transpose(1, 2).reshape(dense.shape[0], -1, height, width)  # [B, C, h, w]
        return MultiLabelOutput(logits=logits, label_maps=label_maps, image_embeds=image_embeds)

    # ------------------------------------------------------------------ saving and loading (LoRA: PEFT-style)
    def adapter_state_dict(self) -> dict[str, torch.Tensor]:
        """The trainable weights of LoRA mode under PEFT's key names (`base_model.model.<module>.lora_A.weight`)."""
        # The adapters never touch embedding layers (vision attention/MLP only): nothing of the vocabulary to save.
        state = dict(get_peft_model_state_dict(self, adapter_name=ADAPTER_NAME, save_embedding_layers=False))
        state.update({f"logit_head.{name}": value for name, value in self.logit_head.state_dict().items()})
        return {PEFT_KEY_PREFIX + key: value.detach().cpu().contiguous() for key, value in state.items()}

    def load_adapter(self, path: str | os.PathLike) -> None:
        """Load `adapter_model.safetensors` (LoRA + logit parameters) into the attached adapters."""
        self.attach_lora()
        state = {key.removeprefix(PEFT_KEY_PREFIX): value for key, value in load_file(str(path)).items()}
        head_state = {
            key.removeprefix("logit_head."): state.pop(key) for key in list(state) if key.startswith("logit_head.")
        }
        result = set_peft_model_state_dict(self, state, adapter_name=ADAPTER_NAME)
        unexpected = list(getattr(result, "unexpected_keys", []))
        if unexpected:
            raise ValueError(f"{path}: adapter weights that match no LoRA layer of this model: {unexpected[:5]}")
        if head_state:
            self.logit_head.load_state_dict(head_state)

    def save_pretrained(self, save_directory: str | os.PathLike, *args, **kwargs):
        if self.config.finetune != "lora":
            return super().save_pretrained(save_directory, *args, **kwargs)
        # Config, code, processor files and label embeddings as usual; the weights are only the adapter's.
        super().save_pretrained(save_directory, *args, **{**kwargs, "state_dict": {}})
        if not kwargs.get("is_main_process", True):
            return
        save_directory = Path(save_directory)
        for name in (SAFE_WEIGHTS_NAME, SAFE_WEIGHTS_INDEX_NAME):
            (save_directory / name).unlink(missing_ok=True)
        self.lora_config().save_pretrained(str(save_directory))
        save_file(self.adapter_state_dict(), str(save_directory / ADAPTER_WEIGHTS_NAME), metadata={"format": "pt"})

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *model_args, **kwargs):
        source = resolve_backbone(pretrained_model_name_or_path)
        hub_kwargs = {key: kwargs[key] for key in ("revision", "token", "cache_dir") if kwargs.get(key)}
        lookup = {"_raise_exceptions_for_missing_entries": False, "_raise_exceptions_for_connection_errors": False}
        adapter_weights = cached_file(source, ADAPTER_WEIGHTS_NAME, **lookup, **hub_kwargs)
        if adapter_weights is None:  # a full checkpoint, or a CLIP backbone (from_clip)
            return super().from_pretrained(pretrained_model_name_or_path, *model_args, **kwargs)
        config = kwargs.pop("config", None)
        overrides = {key: kwargs.pop(key) for key in list(kwargs) if key not in LOADING_KWARGS}
        if config is None:
            config = cls.config_class.from_pretrained(source, **hub_kwargs)
        for key, value in overrides.items():
            setattr(config, key, value)
        if config.finetune != "lora" or not config.backbone_name_or_path:
            raise ValueError(f"{pretrained_model_name_or_path}: adapter files need finetune='lora' and a backbone")
        # Base CLIP from the backbone, LoRA attached in post_load, then the saved adapter weights on top.
        model = super().from_pretrained(
            resolve_backbone(config.backbone_name_or_path), *model_args, config=config, **kwargs
        )
        model.load_adapter(adapter_weights)
        model._attach_files_from(source, hub_kwargs)
        model.config._name_or_path = str(pretrained_model_name_or_path)
        return model.eval()

    def _attach_files_from(self, source: str, hub_kwargs: dict) -> None:
        """Tokenizer, image processor and saved label embeddings of an adapter folder (as the base loader does)."""
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(source, **hub_kwargs)
            self.image_processor = load_image_processor(source, **hub_kwargs)
        except (OSError, ValueError):
            pass  # keep the backbone's
        lookup = {"_raise_exceptions_for_missing_entries": False, "_raise_exceptions_for_connection_errors": False}
        embeddings_file = cached_file(source, LABEL_EMBEDDINGS_FILE, **lookup, **hub_kwargs)
        if embeddings_file is not None:
            self.load_label_embeddings(embeddings_file)


CLIPFTConfig.register_for_auto_class()
CLIPFTModel.register_for_auto_class("AutoModel")

__all__ = ["CLIPFTModel"]
