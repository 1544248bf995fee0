"""CLIP fine-tuning baseline (CLIP-FT) as a Hub-native model: full fine-tuning, or a peft LoRA adapter of the CLIP.

The LoRA adapter is an ordinary peft adapter *of the wrapped CLIP checkpoint*: injected into `self.clip` with peft's
`inject_adapter_in_model` and saved/loaded with `get_peft_model_state_dict` / `set_peft_model_state_dict` (the calls
transformers' `add_adapter` / `load_adapter` make; those two need peft >= 0.22, newer than the peft on PyPI, 0.21.2,
so ovmlc calls peft directly and keeps transformers' bookkeeping, `clip.peft_config`, in step). Its keys are relative to
`CLIPModel` and its `adapter_config.json` names the CLIP as `base_model_name_or_path` (a Hub id with its `revision`,
or the folder it was trained from), so `PeftModel.from_pretrained(CLIPModel.from_pretrained(base), folder,
subfolder="backbone_adapter")` gives the fine-tuned CLIP. A saved folder keeps it in `backbone_adapter/` (see
`ovmlc/files.py`); `model.safetensors` holds the rest (the logit head; in the whole-model layout also the CLIP's base
weights under their original names). `merge_and_unload()` folds the adapter into the vision tower (a plain
`finetune="full"` model); `save_pretrained(dir, merge_lora=True)` writes such a folder and leaves the model as it is.
Folders of ovmlc 0.1 (adapter files at the top, keys relative to CLIP-FT, the logit head inside) still load.
`load_adapter` is transformers' own (not overridden).

peft is imported only where LoRA is used, inside `try:` blocks: a full fine-tuning folder's remote code runs without it.
"""

import copy
import json
import math

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import initialization as init
from transformers.utils import cached_file

from ovmlc.core.backbones import (
    BACKBONE_ALIASES,
    image_side_modules,
    logit_scale_and_bias,
    patch_grid_size,
    resolve_backbone,
    text_tower_modules,
)
from ovmlc.core.modeling_base import (
    MODEL_LOADING_KWARGS,
    OVMLCPreTrainedModel,
    read_folder_config,
    with_own_lr_group,
)
from ovmlc.core.outputs import MultiLabelOutput
from ovmlc.core.weights_layout import CheckpointRef, record_versions
from ovmlc.files import ADAPTER_CONFIG_FILE, ADAPTER_WEIGHTS_FILE, BACKBONE_ADAPTER_DIR, WEIGHTS_FILE

from .configuration_clipft import CLIPFTConfig

ADAPTER_NAME = "default"
# peft's adapter files name weights as seen from a `PeftModel` wrapper.
PEFT_KEY_PREFIX = "base_model.model."
HUB_LOOKUP_KWARGS = ("revision", "token", "cache_dir", "local_files_only")


def _peft():
    """The peft package: needed only by LoRA (a Hub user loading a full fine-tuning folder does not need it)."""
    try:
        import peft
    except ImportError as error:
        raise ImportError("CLIP-FT with finetune='lora' needs peft (pip install peft)") from error
    return peft


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
    # SigLIP: the vision encoder layers have CLIP's names (`self_attn.{q,k,v,out}_proj`, `mlp.fc1/fc2`), so LoRA
    # targets the same layers; full fine-tuning trains the vision tower with its attention-pooling head.
    supported_backbone_families = ("clip", "siglip")

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
            backbone_bias = logit_scale_and_bias(self.clip)[1]  # SigLIP's learned bias; None for CLIP
            if self.config.logit_scale is not None:
                init.constant_(module.log_scale, math.log(float(self.config.logit_scale)))
            elif backbone_bias is None:
                init.copy_(module.log_scale, self.clip.logit_scale.clamp(max=math.log(100.0)))
            else:  # SigLIP: its own (uncapped) scale, with its own bias below
                init.copy_(module.log_scale, self.clip.logit_scale.reshape(()))
            if self.config.logit_scale is None and backbone_bias is not None:
                init.copy_(module.bias, backbone_bias.reshape(()))  # SigLIP's pretrained sigmoid head, as it is
            else:
                init.constant_(module.bias, float(self.config.logit_bias))

    @property
    def inherited_modules(self) -> tuple[str, ...]:
        """What comes unchanged from the CLIP checkpoint: all of it with LoRA (the adapter is saved on its own), only
        the text side with full fine-tuning."""
        if self.config.finetune == "lora":
            return ("clip",)
        text_side = {id(module) for module in text_tower_modules(self.clip)}  # CLIP: text_model, text_projection
        return tuple(f"clip.{name}" for name, module in self.clip.named_children() if id(module) in text_side)

    # ------------------------------------------------------------------ trainable parts
    @property
    def has_lora(self) -> bool:
        return ADAPTER_NAME in (getattr(self.clip, "peft_config", None) or {})

    def lora_config(self):
        """The peft `LoraConfig` of the adapter: `lora_target_modules` of the CLIP vision tower's encoder layers."""
        names = "|".join(self.config.lora_target_modules)
        return _peft().LoraConfig(
            r=int(self.config.lora_r),
            lora_alpha=int(self.config.lora_alpha),
            lora_dropout=float(self.config.lora_dropout),
            target_modules=rf"vision_model\.encoder\.layers\.\d+\.(self_attn|mlp)\.({names})",
        )

    def attach_lora(self) -> None:
        """Inject a fresh LoRA adapter into the CLIP (A: Kaiming, B: zeros, so the model starts equal to the base);
        idempotent."""
        if self.has_lora:
            return
        lora_config = self.lora_config()
        try:
            _peft().inject_adapter_in_model(lora_config, self.clip, adapter_name=ADAPTER_NAME)
        except ValueError as error:
            raise ValueError(
                f"CLIPFTConfig.lora_target_modules={self.config.lora_target_modules} matched no layer of the vision "
                f"tower (CLIP layers have q_proj, k_proj, v_proj, out_proj, fc1, fc2): {error}"
            ) from error
        # transformers' peft bookkeeping, so its adapter API (`model.clip.active_adapters()`, ...) sees the adapter
        self.clip.peft_config = {ADAPTER_NAME: lora_config}
        self.clip._hf_peft_config_loaded = True
        self._freeze()

    def merge_and_unload(self) -> "CLIPFTModel":
        """Fold the LoRA adapter into the vision tower's weights and remove it (peft's `merge_and_unload`): the model
        becomes a plain `finetune="full"` CLIP-FT with the same outputs, loadable without peft. Returns the model."""
        layers = self._lora_layers()
        if not layers:
            raise ValueError("this CLIP-FT model has no LoRA adapter to merge (finetune='full'?)")
        for name, layer in layers.items():
            layer.merge(adapter_names=[ADAPTER_NAME])
            parent, _, child = name.rpartition(".")
            setattr(self.get_submodule(parent), child, layer.get_base_layer())
        del self.clip.peft_config
        self.clip._hf_peft_config_loaded = False
        self.config.finetune = "full"
        self._freeze()
        return self

    def _freeze(self) -> None:
        self.requires_grad_(False)
        if self.config.finetune == "full":
            for module in image_side_modules(self.clip):  # CLIP: vision tower + visual_projection
                module.requires_grad_(True)
        else:
            for name, parameter in self.clip.named_parameters():
                if ".lora_" in name:
                    parameter.requires_grad_(True)
        self.logit_head.requires_grad_(bool(self.config.train_logit_params))

    def parameter_groups(self, learning_rate, weight_decay=0.0, layer_decay=None):
        """The base groups (no weight decay on biases, norms, 1-d parameters) for the image side, plus the logit
        scale and bias at `learning_rate * logit_lr_multiplier` without weight decay."""
        head = [parameter for parameter in self.logit_head.parameters() if parameter.requires_grad]
        groups = super().parameter_groups(learning_rate, weight_decay, layer_decay)
        return with_own_lr_group(groups, head, learning_rate, float(self.config.logit_lr_multiplier))

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

    # ------------------------------------------------------------------ the peft adapter in saved folders
    def _lora_layers(self) -> dict[str, nn.Module]:
        """`{state-dict prefix: peft tuner layer}` of the adapter (empty without LoRA)."""
        if not self.has_lora:
            return {}
        tuner_layer = _peft().tuners.tuners_utils.BaseTunerLayer
        return {f"clip.{name}": module for name, module in self.clip.named_modules() if isinstance(module, tuner_layer)}

    def _adapter_keys(self, keys) -> set[str]:
        """The keys of `keys` that are weights of the adapter (`...q_proj.lora_A.default.weight`)."""
        layers = self._lora_layers()
        found = set()
        for key in keys if layers else ():
            for prefix, layer in layers.items():
                if key.startswith(prefix + ".") and key[len(prefix) + 1 :].split(".")[0] in layer.adapter_layer_names:
                    found.add(key)
                    break
        return found

    def state_dict_for_saving(self, state_dict):
        """Without the adapter's weights, and the adapted layers' base weights under their original (CLIP) names."""
        layers = self._lora_layers()
        if not layers:
            return state_dict
        adapter_keys = self._adapter_keys(state_dict)
        saved = {}
        for key, value in state_dict.items():
            if key in adapter_keys:
                continue
            for prefix in layers:
                if key.startswith(prefix + ".base_layer."):
                    key = prefix + key[len(prefix) + len(".base_layer") :]
                    break
            saved[key] = value
        return saved

    def save_peft_adapters(self, directory, plan) -> None:
        """`backbone_adapter/adapter_config.json` + `adapter_model.safetensors`: a peft LoRA adapter of the CLIP,
        whose `base_model_name_or_path` / `revision` are the backbone (an alias resolved to its folder)."""
        if not self.has_lora:
            return
        peft = _peft()
        folder = directory / BACKBONE_ADAPTER_DIR
        folder.mkdir(parents=True, exist_ok=True)
        adapter_config = copy.deepcopy(self.clip.peft_config[ADAPTER_NAME])
        backbone = self.config.backbone_name_or_path
        adapter_config.base_model_name_or_path = (
            resolve_backbone(backbone) if backbone in BACKBONE_ALIASES else backbone
        )
        adapter_config.revision = self.config.backbone_revision
        adapter_config.inference_mode = True
        adapter_config.save_pretrained(str(folder))
        state = peft.get_peft_model_state_dict(self.clip, adapter_name=ADAPTER_NAME, save_embedding_layers=False)
        weights = {PEFT_KEY_PREFIX + key: value.detach().cpu().contiguous() for key, value in state.items()}
        save_file(weights, str(folder / ADAPTER_WEIGHTS_FILE), metadata={"format": "pt"})

    def load_peft_adapters(self, source, hub_kwargs) -> None:
        """The saved adapter's weights into the adapter `post_load` attached (its settings must be the config's)."""
        if self.config.finetune != "lora":
            return
        lookup = {key: hub_kwargs[key] for key in HUB_LOOKUP_KWARGS if key in hub_kwargs}
        missing_ok = {"_raise_exceptions_for_missing_entries": False, "_raise_exceptions_for_connection_errors": False}
        config_file = cached_file(source, ADAPTER_CONFIG_FILE, subfolder=BACKBONE_ADAPTER_DIR, **missing_ok, **lookup)
        if config_file is None:
            return
        with open(config_file, encoding="utf-8") as handle:
            saved = json.load(handle)
        expected = self.clip.peft_config[ADAPTER_NAME]
        for key in ("peft_type", "r", "lora_alpha", "target_modules"):
            value = getattr(expected, key)
            value = value.value if hasattr(value, "value") else value
            if saved.get(key) != value:
                raise ValueError(
                    f"{source}/{BACKBONE_ADAPTER_DIR}/{ADAPTER_CONFIG_FILE}: {key}={saved.get(key)!r} disagrees with "
                    f"config.json (lora_r / lora_alpha / lora_target_modules give {value!r})"
                )
        weights_file = cached_file(source, ADAPTER_WEIGHTS_FILE, subfolder=BACKBONE_ADAPTER_DIR, **lookup)
        state = {key.removeprefix(PEFT_KEY_PREFIX): value for key, value in load_file(weights_file).items()}
        self._set_lora_weights(state, f"{source}/{BACKBONE_ADAPTER_DIR}/{ADAPTER_WEIGHTS_FILE}")

    def _set_lora_weights(self, state: dict[str, torch.Tensor], where: str) -> None:
        """peft's `set_peft_model_state_dict` on the CLIP; a key that fits no LoRA layer, or a LoRA weight the file
        lacks, is an error naming it."""
        result = _peft().set_peft_model_state_dict(self.clip, state, adapter_name=ADAPTER_NAME)
        unexpected = sorted(getattr(result, "unexpected_keys", []))
        missing = sorted(key for key in getattr(result, "missing_keys", []) if ".lora_" in key)
        if unexpected or missing:
            raise ValueError(
                f"{where}: LoRA weights do not fit this model: unexpected {unexpected[:5]}, missing {missing[:5]}"
            )

    def save_pretrained(self, save_directory, *args, merge_lora: bool = False, **kwargs):
        """`merge_lora=True`: save the model with its LoRA adapter merged into the vision tower (a plain
        `finetune="full"` folder, loadable without peft); the model itself keeps its adapter."""
        if not merge_lora:
            return super().save_pretrained(save_directory, *args, **kwargs)
        if not self.has_lora:
            raise ValueError("merge_lora=True needs a LoRA adapter (finetune='lora')")
        merged = copy.deepcopy(self)
        if self._weights_provenance is not None:  # the copy's tensors have their own version counters
            original, copied = self.state_dict(keep_vars=True), merged.state_dict(keep_vars=True)
            recorded = self._weights_provenance.versions
            merged._weights_provenance.versions = {
                key: int(copied[key]._version) for key in copied if recorded.get(key) == int(original[key]._version)
            }
        return merged.merge_and_unload().save_pretrained(save_directory, *args, **kwargs)

    # ------------------------------------------------------------------ folders of ovmlc 0.1
    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *model_args, **kwargs):
        source = resolve_backbone(str(pretrained_model_name_or_path))
        hub_kwargs = {key: kwargs[key] for key in HUB_LOOKUP_KWARGS if kwargs.get(key) is not None}
        lookup = {"_raise_exceptions_for_missing_entries": False, "_raise_exceptions_for_connection_errors": False}
        legacy_adapter = cached_file(source, ADAPTER_WEIGHTS_FILE, **lookup, **hub_kwargs)
        if legacy_adapter is None or cached_file(source, WEIGHTS_FILE, **lookup, **hub_kwargs) is not None:
            return super().from_pretrained(pretrained_model_name_or_path, *model_args, **kwargs)
        return cls._from_legacy_lora_folder(str(pretrained_model_name_or_path), source, legacy_adapter, kwargs)

    @classmethod
    def _from_legacy_lora_folder(cls, name, source, adapter_file, kwargs):
        """A LoRA folder of ovmlc 0.1: `adapter_config.json` + `adapter_model.safetensors` at the top, keys
        `base_model.model.clip.vision_model....lora_A.weight` (relative to CLIP-FT) and the logit head
        (`base_model.model.logit_head.*`) in the same file; the CLIP comes from `config.backbone_name_or_path`."""
        hub_kwargs = {key: kwargs.pop(key) for key in HUB_LOOKUP_KWARGS if kwargs.get(key) is not None}
        kwargs.pop("adapter_kwargs", None)
        config = kwargs.pop("config", None)
        loading = {key: kwargs.pop(key) for key in list(kwargs) if key in MODEL_LOADING_KWARGS}
        if config is None:
            config, kwargs = cls.config_class.from_pretrained(source, return_unused_kwargs=True, **hub_kwargs, **kwargs)
        for key, value in kwargs.items():
            setattr(config, key, value)
        if config.finetune != "lora" or not config.backbone_name_or_path:
            raise ValueError(f"{name}: adapter files need finetune='lora' and a backbone_name_or_path in config.json")
        model = cls.from_pretrained(config.backbone_name_or_path, config=config, _ovmlc_reference_load=True, **loading)
        state = {key.removeprefix(PEFT_KEY_PREFIX): value for key, value in load_file(adapter_file).items()}
        head = {key.removeprefix("logit_head."): state.pop(key) for key in list(state) if key.startswith("logit_head.")}
        model._set_lora_weights({key.removeprefix("clip."): value for key, value in state.items()}, adapter_file)
        with torch.no_grad():
            model.logit_head.load_state_dict(head)
        _, commit = read_folder_config(source, hub_kwargs)
        head_keys = {f"logit_head.{key}" for key in head}
        model._weights_provenance = model._weights_provenance.nest(CheckpointRef(name, commit, "ovmlc"), head_keys)
        model._weights_provenance.versions = record_versions(model.state_dict(keep_vars=True))
        model._attach_files_from(source, hub_kwargs)
        model.config._name_or_path = name
        model.name_or_path = name
        return model.eval()


CLIPFTConfig.register_for_auto_class()
CLIPFTModel.register_for_auto_class("AutoModel")

__all__ = ["CLIPFTModel"]
