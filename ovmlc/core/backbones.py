"""The one place touching vision-language backbone internals: loading, image / dense features, text forward from
embeddings, tokenizer rules. Two families are supported (`BackboneFamily`, one instance each):

- **CLIP** (`CLIPModel`): a CLS token pooled through `post_layernorm` + `visual_projection`; a causal text tower pooled
  at the EOS token, so prompts are padded to the longest and the shared start of a template can be encoded once.
- **SigLIP / SigLIP 2** (`SiglipModel`; SigLIP 2 FixRes checkpoints such as `google/siglip2-base-patch16-224` are
  `model_type: siglip` too): no CLS token, the image embedding is an attention-pooling head (probe + MHA + MLP) over
  tokens already through `post_layernorm`; a *bidirectional* text tower that pools the **last position of a fixed
  64-token sequence** (prompts are padded to `max_length`, on the right, never to the longest) with a learned
  `logit_bias`; text is canonicalised (lowercase, punctuation removed, whitespace collapsed) before tokenizing.

Every method reaches the backbone through the module-level functions below (`image_features(clip, ...)`,
`text_features_from_embeddings(clip, ...)`, ...), which dispatch on `backbone_family(clip)`; the attribute holding
the backbone stays `clip` for both families (the name of a VLM slot, kept so saved folders keep their keys). The
CLIP implementations are unchanged: CLIP results are bit-identical to those before SigLIP support.
"""

from __future__ import annotations

import hashlib
import json
import os
import string
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from transformers import (
    AutoTokenizer,
    CLIPConfig,
    CLIPImageProcessorPil,
    CLIPModel,
    PreTrainedConfig,
    PreTrainedTokenizerBase,
    SiglipConfig,
    SiglipImageProcessorPil,
    SiglipModel,
)
from transformers.masking_utils import create_causal_mask

from ..files import CONFIG_FILE
from ..resources import DEFAULT_BACKBONE as DEFAULT_BACKBONE  # re-exported: the default of every loader
from ..resources import (
    SHAPES_CLUTTER_CLIP_ALIAS,
    SHAPES_CLUTTER_CLIP_DIR,
    SHAPES_CLUTTER_CLIP_RECIPE,
    SIGLIP_SYNTHETIC_ALIAS,
    SIGLIP_SYNTHETIC_DIR,
    SIGLIP_SYNTHETIC_RECIPE,
    SYNTHETIC_CLIP_ALIAS,
    SYNTHETIC_CLIP_DIR,
)

# The small CLIP pretrained on the synthetic world, shipped inside the package (the offline default).
SYNTHETIC_CLIP_PATH = SYNTHETIC_CLIP_DIR
BACKBONE_ALIASES = {
    SYNTHETIC_CLIP_ALIAS: SYNTHETIC_CLIP_PATH,
    SHAPES_CLUTTER_CLIP_ALIAS: SHAPES_CLUTTER_CLIP_DIR,
    SIGLIP_SYNTHETIC_ALIAS: SIGLIP_SYNTHETIC_DIR,
}
# Offline backbones that `ovmlc pretrain-vlp` builds from a recipe: alias -> recipe (named when the folder is missing).
BUILT_BACKBONE_RECIPES = {
    SHAPES_CLUTTER_CLIP_ALIAS: SHAPES_CLUTTER_CLIP_RECIPE,
    SIGLIP_SYNTHETIC_ALIAS: SIGLIP_SYNTHETIC_RECIPE,
}
# CLIP's temperature cap (CLIP training clamps exp(logit_scale) at 100).
MAX_CLIP_LOGIT_SCALE = 100.0


class BackboneNotFoundError(OSError):
    """A backbone name is neither a local folder, an alias nor a reachable Hub id."""


class UnsupportedBackboneError(ValueError):
    """A checkpoint of a model type no backbone family covers, or a method that cannot use this backbone family."""


@dataclass
class Backbone:
    """A vision-language model (CLIP or SigLIP) with the tokenizer and image processor it was trained with."""

    model: CLIPModel | SiglipModel
    tokenizer: PreTrainedTokenizerBase
    image_processor: CLIPImageProcessorPil | SiglipImageProcessorPil
    name_or_path: str

    @property
    def family(self) -> BackboneFamily:
        return backbone_family(self.model)


CLIPBackbone = Backbone  # the name before SigLIP support


def resolve_backbone(name_or_path: str | os.PathLike) -> str:
    """Map aliases ("synthetic") to their local folder; anything else is a local folder or a Hub id."""
    alias = BACKBONE_ALIASES.get(str(name_or_path))
    if alias is None:
        return str(name_or_path)
    recipe = BUILT_BACKBONE_RECIPES.get(str(name_or_path))
    if not Path(alias).is_dir() and recipe and SYNTHETIC_CLIP_DIR.is_dir():  # package data present, this one not built
        raise BackboneNotFoundError(
            f"the offline backbone {str(name_or_path)!r} is not built yet ({alias} is missing): pretrain it from a "
            f"checkout with `ovmlc pretrain-vlp --config hub_configs/{recipe}`, or pass another backbone"
        )
    if not Path(alias).is_dir():  # the flat remote-code copy of this module carries no package data
        raise BackboneNotFoundError(
            f"the backbone {str(name_or_path)!r} is the offline CLIP shipped inside the ovmlc package, which this copy "
            "of the model code does not carry: `pip install ovmlc` and load with `ovmlc.load_model`, or save the "
            "model with `save_pretrained(..., save_backbone=True)` so that its folder holds the backbone"
        )
    return str(alias)


# ---------------------------------------------------------------------------------------------- backbone families
class BackboneFamily(ABC):
    """What differs between backbone families; one subclass per family, one instance each (`BACKBONE_FAMILIES`).

    Shapes: `B` images, `N` patch tokens, `H_v` / `H_t` vision / text widths, `D` the joint embedding size.
    """

    name: str
    model_types: tuple[str, ...]
    model_class: type[nn.Module]
    config_class: type[PreTrainedConfig]
    image_processor_class: type
    # vision tokens before the patch grid in `vision_tokens` (CLIP: the CLS token; SigLIP: none)
    global_tokens: int
    # the text tower is causal: tokens after the pooled one never matter, and a shared prefix can be encoded once
    causal_text: bool

    # ---- backbone shape
    @abstractmethod
    def embedding_dim(self, model) -> int:
        """`D`, the joint embedding size."""

    @abstractmethod
    def image_side_modules(self, model) -> tuple[nn.Module, ...]:
        """Modules whose weights determine image embeddings."""

    @abstractmethod
    def text_tower_modules(self, model) -> tuple[nn.Module, ...]:
        """Modules whose weights determine text embeddings."""

    @abstractmethod
    def logit_scale_and_bias(self, model) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The checkpoint's own `exp(logit_scale)` (CLIP: capped at 100 as in CLIP training) and `logit_bias` (None
        for CLIP, which has none)."""

    # ---- text
    def prepare_tokenizer(self, tokenizer: PreTrainedTokenizerBase) -> PreTrainedTokenizerBase:
        """The backbone's tokenizer with the family's text rules installed (CLIP: unchanged)."""
        return tokenizer

    @abstractmethod
    def text_inputs(self, model, tokenizer: PreTrainedTokenizerBase, prompts: list[str]) -> dict[str, torch.Tensor]:
        """What `get_text_features` takes for `prompts`."""

    @abstractmethod
    def text_padded_length(self, model, longest: int) -> int:
        """Length a batch of prompt embeddings is padded to, its longest prompt having `longest` tokens."""

    @abstractmethod
    def text_pool_positions(self, model, eos_index: torch.Tensor, sequence_length: int) -> torch.Tensor:
        """Position `[B]` pooled for prompts with the EOS token at `eos_index [B]`."""

    @abstractmethod
    def text_features_from_embeddings(self, model, inputs_embeds, pool_index, attention_mask=None) -> torch.Tensor:
        """Text embeddings `[B, D]` from token embeddings `[B, T, H_t]`, pooled at `pool_index [B]`."""

    # ---- vision
    @abstractmethod
    def vision_tokens(self, model, pixel_values: torch.Tensor) -> torch.Tensor:
        """Vision tokens `[B, G + N, H_v]` after the final LayerNorm."""

    @abstractmethod
    def image_features(self, model, pixel_values: torch.Tensor) -> dict[str, torch.Tensor]:
        """`image_embeds [B, D]` and `patch_embeds [B, N, D]`."""

    @abstractmethod
    def dense_image_tokens(self, model, pixel_values: torch.Tensor, value_path: bool) -> torch.Tensor:
        """Global + patch tokens in the joint space, `[B, 1 + N, D]`."""

    @abstractmethod
    def token_projection_weight(self, model) -> torch.Tensor:
        """`[D, H_v]`: the backbone's linear map from a vision token to the joint space (the start of a learned
        projection)."""


class CLIPFamily(BackboneFamily):
    name = "clip"
    model_types = ("clip",)
    model_class = CLIPModel
    config_class = CLIPConfig
    image_processor_class = CLIPImageProcessorPil
    global_tokens = 1
    causal_text = True

    def embedding_dim(self, model: CLIPModel) -> int:
        return int(model.config.projection_dim)

    def image_side_modules(self, model: CLIPModel) -> tuple[nn.Module, ...]:
        return model.vision_model, model.visual_projection

    def text_tower_modules(self, model: CLIPModel) -> tuple[nn.Module, ...]:
        return model.text_model, model.text_projection

    def logit_scale_and_bias(self, model: CLIPModel) -> tuple[torch.Tensor, None]:
        return model.logit_scale.exp().clamp(max=MAX_CLIP_LOGIT_SCALE), None

    def text_inputs(self, model, tokenizer, prompts):
        return tokenize_prompts(tokenizer, prompts)

    def text_padded_length(self, model, longest: int) -> int:
        return longest  # the causal tower makes padding after the EOS token irrelevant

    def text_pool_positions(self, model, eos_index, sequence_length):
        return eos_index  # CLIP pools the EOS token itself

    def text_features_from_embeddings(self, model: CLIPModel, inputs_embeds, pool_index, attention_mask=None):
        text_model = model.text_model
        hidden_states = text_model.embeddings(inputs_embeds=inputs_embeds)  # [B, T, H_t]
        causal_mask = create_causal_mask(
            config=text_model.config, inputs_embeds=hidden_states, attention_mask=attention_mask, cache=None
        )
        encoded = text_model.encoder(inputs_embeds=hidden_states, attention_mask=causal_mask, is_causal=True)
        last_hidden_state = text_model.final_layer_norm(encoded.last_hidden_state)  # [B, T, H_t]
        rows = torch.arange(last_hidden_state.shape[0], device=last_hidden_state.device)
        return model.text_projection(last_hidden_state[rows, pool_index])  # [B, D]

    def vision_tokens(self, model: CLIPModel, pixel_values):
        # HF applies `post_layernorm` only to the pooled CLS; OpenAI's `ln_post` applies to every token, which is
        # what dense methods (MKT, QKS, MaskCLIP-style maps) expect.
        outputs = model.vision_model(pixel_values=pixel_values)
        return model.vision_model.post_layernorm(outputs.last_hidden_state)  # [B, 1 + N, H_v]

    def image_features(self, model: CLIPModel, pixel_values):
        tokens = self.vision_tokens(model, pixel_values)  # [B, 1 + N, H_v]
        projected = model.visual_projection(tokens)  # [B, 1 + N, D]
        return {"image_embeds": projected[:, 0], "patch_embeds": projected[:, 1:]}

    def dense_image_tokens(self, model: CLIPModel, pixel_values, value_path: bool):
        vision = model.vision_model
        interpolate = tuple(pixel_values.shape[-2:]) != (model.config.vision_config.image_size,) * 2
        hidden_states = vision.pre_layrnorm(vision.embeddings(pixel_values, interpolate_pos_encoding=interpolate))
        layers = vision.encoder.layers
        for layer in layers[: len(layers) - 1 if value_path else len(layers)]:
            hidden_states = layer(hidden_states, None)
        if value_path:
            last = layers[-1]
            values = last.self_attn.out_proj(last.self_attn.v_proj(last.layer_norm1(hidden_states)))  # [B, 1+N, H_v]
            hidden_states = hidden_states + values
            hidden_states = hidden_states + last.mlp(last.layer_norm2(hidden_states))
        return model.visual_projection(vision.post_layernorm(hidden_states))  # [B, 1 + N, D]

    def token_projection_weight(self, model: CLIPModel) -> torch.Tensor:
        return model.visual_projection.weight  # [D, H_v]


# SigLIP's text canonicalisation (big_vision's prompt engineering, also `SiglipTokenizer.canonicalize_text`):
# lowercase, punctuation removed, runs of whitespace collapsed to one space, stripped. SigLIP 2 checkpoints ship a
# Gemma tokenizer that does none of it (a public report measures ~12 points lost without it), so ovmlc installs it as
# the first steps of the tokenizer's own normalizer: every path that tokenizes (label prompts, learned prompts, the
# saved tokenizer a Hub user loads) applies it, once, in the tokenizer.
_PUNCTUATION_PATTERN = "[" + "".join("\\" + char for char in string.punctuation) + "]"
CANONICALIZE_NORMALIZERS = (
    {"type": "Lowercase"},
    {"type": "Replace", "pattern": {"Regex": _PUNCTUATION_PATTERN}, "content": ""},
    {"type": "Replace", "pattern": {"Regex": r"\s+"}, "content": " "},
    {"type": "Strip", "strip_left": True, "strip_right": True},
)


def canonicalize_text(text: str) -> str:
    """SigLIP's text canonicalisation in Python (what the installed tokenizer normalizer does): lowercase, no
    punctuation, single spaces, stripped."""
    text = text.lower().translate(str.maketrans("", "", string.punctuation))
    return " ".join(text.split())


class SiglipFamily(BackboneFamily):
    name = "siglip"
    model_types = ("siglip",)
    model_class = SiglipModel
    config_class = SiglipConfig
    image_processor_class = SiglipImageProcessorPil
    global_tokens = 0
    causal_text = False

    def embedding_dim(self, model: SiglipModel) -> int:
        text_config = model.config.text_config
        return int(text_config.projection_size or text_config.hidden_size)

    def image_side_modules(self, model: SiglipModel) -> tuple[nn.Module, ...]:
        return (model.vision_model,)  # the pooling head is part of it; there is no separate projection

    def text_tower_modules(self, model: SiglipModel) -> tuple[nn.Module, ...]:
        return (model.text_model,)  # its `head` is the text projection

    def logit_scale_and_bias(self, model: SiglipModel) -> tuple[torch.Tensor, torch.Tensor]:
        # no cap: SigLIP's learned scale (~117 for the released checkpoints) goes with its bias
        return model.logit_scale.exp(), model.logit_bias

    def prepare_tokenizer(self, tokenizer: PreTrainedTokenizerBase) -> PreTrainedTokenizerBase:
        if hasattr(tokenizer, "canonicalize_text"):  # SigLIP (1)'s SentencePiece tokenizer canonicalises itself
            return tokenizer
        backend = getattr(tokenizer, "backend_tokenizer", None)
        if backend is None:
            raise UnsupportedBackboneError(
                f"SigLIP backbone: the tokenizer {type(tokenizer).__name__} has no `tokenizers` backend, so ovmlc "
                "cannot install SigLIP's text canonicalisation (lowercase, no punctuation); use the checkpoint's own "
                "tokenizer (SiglipTokenizer, or the Gemma tokenizer of SigLIP 2)"
            )
        spec = json.loads(backend.to_str())
        current = spec.get("normalizer")
        steps = current.get("normalizers", [current]) if current and current.get("type") == "Sequence" else [current]
        if [step for step in steps if step][: len(CANONICALIZE_NORMALIZERS)] == list(CANONICALIZE_NORMALIZERS):
            return tokenizer  # installed already (a folder saved by ovmlc)
        spec["normalizer"] = {
            "type": "Sequence",
            "normalizers": [*CANONICALIZE_NORMALIZERS, *([current] if current else [])],
        }
        # Built from the JSON spec (the `tokenizers` package itself is not imported: Hub remote code may not need it)
        backend.normalizer = type(backend).from_str(json.dumps(spec)).normalizer
        return tokenizer

    def context_length(self, model: SiglipModel) -> int:
        return int(model.config.text_config.max_position_embeddings)

    def text_inputs(self, model, tokenizer, prompts):
        # Padded to the full context on the right, as SigLIP was trained (padding to the longest pools a real token
        # instead of padding: a public report measures MNIST zero-shot falling from ~80 to ~10). No attention mask:
        # big_vision's text tower attends to the padding, so HF's mask would change the pooled state.
        tokens = tokenizer(
            prompts,
            padding="max_length",
            truncation=True,
            max_length=self.context_length(model),
            padding_side="right",
            return_tensors="pt",
        )
        return {"input_ids": tokens["input_ids"]}

    def text_padded_length(self, model, longest: int) -> int:
        return self.context_length(model)  # always the full 64 tokens (bidirectional: padding is read)

    def text_pool_positions(self, model, eos_index, sequence_length):
        return torch.full_like(eos_index, sequence_length - 1)  # the last position, whatever token sits there

    def text_features_from_embeddings(self, model: SiglipModel, inputs_embeds, pool_index, attention_mask=None):
        if attention_mask is not None:
            raise ValueError("SigLIP's text tower is run without an attention mask (it attends to its padding)")
        text_model = model.text_model
        hidden_states = text_model.embeddings(inputs_embeds=inputs_embeds)  # [B, T, H_t]
        encoded = text_model.encoder(inputs_embeds=hidden_states, attention_mask=None)
        last_hidden_state = text_model.final_layer_norm(encoded.last_hidden_state)  # [B, T, H_t]
        rows = torch.arange(last_hidden_state.shape[0], device=last_hidden_state.device)
        return text_model.head(last_hidden_state[rows, pool_index])  # [B, D]

    def _tokens(self, model: SiglipModel, pixel_values: torch.Tensor) -> torch.Tensor:
        interpolate = tuple(pixel_values.shape[-2:]) != (model.config.vision_config.image_size,) * 2
        outputs = model.vision_model(pixel_values=pixel_values, interpolate_pos_encoding=interpolate)
        return outputs.last_hidden_state  # [B, N, H_v], already through post_layernorm

    def vision_tokens(self, model: SiglipModel, pixel_values):
        return self._tokens(model, pixel_values)  # [B, N, H_v]: no CLS token

    def head_value_path(self, model: SiglipModel, tokens: torch.Tensor) -> torch.Tensor:
        """Each token through the attention-pooling head as if the probe attended to it alone:
        `out_proj(v_proj(x))` then the head's MLP residual, `[B, N, H_v] -> [B, N, D]`. MaskCLIP's value path, on
        SigLIP's pooling head: before its MLP the head's output is out_proj of, per attention head, an
        attention-weighted mean of these values; a token the probe attended to alone, in every head, would give
        exactly its value-path token."""
        head = model.vision_model.head
        attention = head.attention
        width = attention.embed_dim
        value_weight = attention.in_proj_weight[2 * width :]  # [H_v, H_v]
        value_bias = attention.in_proj_bias[2 * width :] if attention.in_proj_bias is not None else None
        values = attention.out_proj(F.linear(tokens, value_weight, value_bias))  # [B, N, D]
        return values + head.mlp(head.layernorm(values))

    def image_features(self, model: SiglipModel, pixel_values):
        tokens = self._tokens(model, pixel_values)  # [B, N, H_v]
        image_embeds = model.vision_model.head(tokens)  # [B, D] == get_image_features(...).pooler_output
        return {"image_embeds": image_embeds, "patch_embeds": self.head_value_path(model, tokens)}

    def dense_image_tokens(self, model: SiglipModel, pixel_values, value_path: bool):
        # SigLIP's patch tokens reach the joint space only through the pooling head, so both modes take the head's
        # value path (the head's attention is what is bypassed); the pooled embedding comes first, like CLIP's CLS.
        features = self.image_features(model, pixel_values)
        return torch.cat([features["image_embeds"][:, None], features["patch_embeds"]], dim=1)  # [B, 1 + N, D]

    def token_projection_weight(self, model: SiglipModel) -> torch.Tensor:
        # The linear part of the head's value path (`head_value_path`): out_proj o v_proj. Its biases and the MLP
        # residual are left out: they are what a bias-free linear map cannot hold.
        attention = model.vision_model.head.attention
        width = attention.embed_dim
        return attention.out_proj.weight @ attention.in_proj_weight[2 * width :]  # [D, H_v] @ [H_v, H_v]


CLIP_FAMILY = CLIPFamily()
SIGLIP_FAMILY = SiglipFamily()
BACKBONE_FAMILIES: dict[str, BackboneFamily] = {CLIP_FAMILY.name: CLIP_FAMILY, SIGLIP_FAMILY.name: SIGLIP_FAMILY}
# Model types with a known reason not to load (the message says what to use instead).
_UNSUPPORTED_MODEL_TYPES = {
    "siglip2": (
        "SigLIP 2 NaFlex checkpoints (`Siglip2Model`, variable resolution with `spatial_shapes`) are not supported; "
        "use a fixed-resolution SigLIP 2 checkpoint (`model_type: siglip`), e.g. google/siglip2-base-patch16-224"
    ),
}


def family_for_model_type(model_type: str | None, name: str = "backbone") -> BackboneFamily:
    """The family of a checkpoint's `model_type`; `UnsupportedBackboneError` naming it and the supported types."""
    for family in BACKBONE_FAMILIES.values():
        if model_type in family.model_types:
            return family
    reason = _UNSUPPORTED_MODEL_TYPES.get(str(model_type))
    supported = sorted(t for family in BACKBONE_FAMILIES.values() for t in family.model_types)
    raise UnsupportedBackboneError(
        f"{name}: model_type {model_type!r} is not a supported vision-language backbone "
        f"({reason or f'supported: {supported}'})"
    )


def backbone_family(model_or_config) -> BackboneFamily:
    """The family of a backbone model (`CLIPModel`, `SiglipModel`) or of its config."""
    for family in BACKBONE_FAMILIES.values():
        if isinstance(model_or_config, (family.model_class, family.config_class)):
            return family
    raise UnsupportedBackboneError(f"{type(model_or_config).__name__} is not a supported vision-language backbone")


def backbone_config_from_dict(config: dict) -> PreTrainedConfig:
    """A saved backbone config (`clip_config` of an ovmlc config.json) as its family's config class (a dict without
    `model_type`, as older CLIP-only folders may hold, is CLIP)."""
    family = family_for_model_type(config.get("model_type", CLIP_FAMILY.model_types[0]), "clip_config")
    return family.config_class(**config)


def load_backbone_config(name_or_path: str | os.PathLike, **kwargs) -> PreTrainedConfig:
    """The config of a backbone checkpoint (Hub id, folder, alias), checked to be of a supported family."""
    from transformers import AutoConfig

    resolved = resolve_backbone(name_or_path)
    try:
        config = AutoConfig.from_pretrained(resolved, **kwargs)
    except (OSError, ValueError) as error:
        raise BackboneNotFoundError(f"could not load backbone {str(name_or_path)!r}: {error}") from error
    family = family_for_model_type(config.model_type, str(name_or_path))
    if not isinstance(config, family.config_class):
        config = family.config_class(**config.to_dict())
    return config


def load_image_processor(name_or_path: str | os.PathLike, **kwargs) -> CLIPImageProcessorPil | SiglipImageProcessorPil:
    """The checkpoint's image processor, PIL backend (the torchvision one is not installed on CPU machines and the two
    differ slightly): `SiglipImageProcessorPil` (224² squash, mean/std 0.5) when the folder's
    `preprocessor_config.json` names a SigLIP processor, else `CLIPImageProcessorPil`."""
    resolved = resolve_backbone(name_or_path)
    processor_dict, _ = CLIPImageProcessorPil.get_image_processor_dict(resolved, **kwargs)
    kind = str(processor_dict.get("image_processor_type") or "")
    processor_class = SiglipImageProcessorPil if kind.startswith("Siglip") else CLIPImageProcessorPil
    return processor_class.from_pretrained(resolved, **kwargs)


def load_tokenizer(name_or_path: str | os.PathLike, family: BackboneFamily, **kwargs) -> PreTrainedTokenizerBase:
    """The checkpoint's tokenizer with its family's text rules installed (`BackboneFamily.prepare_tokenizer`)."""
    try:
        tokenizer = AutoTokenizer.from_pretrained(resolve_backbone(name_or_path), **kwargs)
    except (ImportError, AttributeError, TypeError) as error:  # SigLIP (1) without sentencepiece installed
        raise BackboneNotFoundError(
            f"could not load the tokenizer of {str(name_or_path)!r}: {error}. SigLIP (1) checkpoints ship a "
            "SentencePiece tokenizer: `pip install sentencepiece`"
        ) from error
    if tokenizer is False or tokenizer is None:
        raise BackboneNotFoundError(
            f"no tokenizer class for {str(name_or_path)!r}: SigLIP (1) checkpoints need `pip install sentencepiece`"
        )
    return family.prepare_tokenizer(tokenizer)


def load_backbone(
    name_or_path: str | os.PathLike = DEFAULT_BACKBONE,
    dtype: torch.dtype | str | None = torch.float32,
    revision: str | None = None,
    attn_implementation: str | None = None,
) -> Backbone:
    """Load a CLIP or SigLIP checkpoint (Hub id such as `openai/clip-vit-base-patch16` or
    `google/siglip2-base-patch16-224`, a local folder laid out like the Hub repo, or the alias `"synthetic"`) with its
    tokenizer (family text rules installed) and PIL image processor."""
    resolved = resolve_backbone(name_or_path)
    looks_local = os.path.sep in resolved or resolved.startswith(".") or Path(resolved).exists()
    if looks_local and not Path(resolved, CONFIG_FILE).is_file():
        raise BackboneNotFoundError(f"{resolved}: not a backbone checkpoint folder (config.json missing)")
    kwargs = {"revision": revision} if revision else {}
    config = load_backbone_config(name_or_path, **kwargs)
    family = backbone_family(config)
    try:
        model = family.model_class.from_pretrained(
            resolved, config=config, dtype=dtype, attn_implementation=attn_implementation, **kwargs
        )
        tokenizer = load_tokenizer(resolved, family, **kwargs)
        image_processor = load_image_processor(resolved, **kwargs)
    except OSError as error:
        raise BackboneNotFoundError(
            f"could not load backbone {name_or_path!r}: {error}. Use a local folder, the offline alias "
            f"'synthetic', or a Hub id with network access (HF_HUB_OFFLINE must be unset)."
        ) from error
    return Backbone(
        model=model.eval(), tokenizer=tokenizer, image_processor=image_processor, name_or_path=str(name_or_path)
    )


def load_clip_backbone(
    name_or_path: str | os.PathLike = DEFAULT_BACKBONE,
    dtype: torch.dtype | str | None = torch.float32,
    revision: str | None = None,
    attn_implementation: str | None = None,
) -> Backbone:
    """`load_backbone` under its name from before SigLIP support (loads SigLIP checkpoints too)."""
    return load_backbone(name_or_path, dtype=dtype, revision=revision, attn_implementation=attn_implementation)


# ---------------------------------------------------------------------------------------------- family dispatch
def embedding_dim(clip) -> int:
    """`D`, the size of the joint image-text embedding (CLIP: `projection_dim`; SigLIP: the text head's output)."""
    return backbone_family(clip).embedding_dim(clip)


def logit_scale_and_bias(clip) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The checkpoint's `exp(logit_scale)` (CLIP: capped at 100) and `logit_bias` (None for CLIP)."""
    return backbone_family(clip).logit_scale_and_bias(clip)


def image_side_modules(clip) -> tuple[nn.Module, ...]:
    """The modules that determine image embeddings (CLIP: vision tower + `visual_projection`; SigLIP: vision tower)."""
    return backbone_family(clip).image_side_modules(clip)


def token_projection_weight(clip) -> torch.Tensor:
    """`[D, H_v]`, the backbone's linear map from a post-LayerNorm vision token to the joint space, for a learned
    projection to start from. CLIP: `visual_projection.weight`. SigLIP (no projection; the pooling head maps tokens to
    the joint space): the linear part of the head's value path, `out_proj.weight @ W_v` (biases and the head's MLP
    residual left out)."""
    return backbone_family(clip).token_projection_weight(clip)


def patch_grid_size(clip) -> tuple[int, int]:
    """(h, w) of the ViT patch grid at the configured image size."""
    vision_config = clip.config.vision_config
    side = vision_config.image_size // vision_config.patch_size
    return side, side


def vision_tokens(clip, pixel_values: torch.Tensor) -> torch.Tensor:
    """All vision tokens after the final LayerNorm, before any projection: `[B, G + N, H_v]` with
    `G = backbone_family(clip).global_tokens` global tokens first (CLIP: the CLS token; SigLIP: none)."""
    return backbone_family(clip).vision_tokens(clip, pixel_values)


def image_features(clip, pixel_values: torch.Tensor) -> dict[str, torch.Tensor]:
    """Global and dense image embeddings in the joint space from one vision forward.

    Returns `image_embeds [B, D]` (equal to `get_image_features(...).pooler_output`) and `patch_embeds [B, N, D]`
    (CLIP: patch tokens through `post_layernorm` and `visual_projection`, CLS excluded; SigLIP: each patch token
    through the pooling head's value path, `SiglipFamily.head_value_path`).
    """
    return backbone_family(clip).image_features(clip, pixel_values)


def eos_positions(input_ids: torch.Tensor, eos_token_id: int) -> torch.Tensor:
    """Index of the first EOS token per row `[B]` (pad == eos in CLIP tokenizers, so the first one counts)."""
    is_eos = input_ids == eos_token_id
    if not bool(is_eos.any(dim=-1).all()):
        raise ValueError("every tokenized prompt must contain the EOS token (prompt truncated or tokenizer mismatch?)")
    return is_eos.int().argmax(dim=-1)


def text_eos_token_id(clip, tokenizer: PreTrainedTokenizerBase | None = None) -> int:
    if tokenizer is not None and tokenizer.eos_token_id is not None:
        return int(tokenizer.eos_token_id)
    return int(clip.config.text_config.eos_token_id)


def text_features_from_embeddings(
    clip,
    inputs_embeds: torch.Tensor,
    eos_index: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Text forward from token embeddings, so callers can insert learned context vectors or label tokens.

    `inputs_embeds [B, T, H_t]` (token embeddings, without positions) → + positions → encoder (CLIP: causal;
    SigLIP: bidirectional, no mask) → final LN → pool at `eos_index [B]` (the position to pool: give it
    `text_pool_positions(...)`) → projection (CLIP: `text_projection`; SigLIP: the text `head`). Returns `[B, D]`;
    fed the plain token embeddings of `text_inputs(...)` it equals `clip.get_text_features(...).pooler_output`.
    """
    return backbone_family(clip).text_features_from_embeddings(clip, inputs_embeds, eos_index, attention_mask)


def tokenize_prompts(tokenizer: PreTrainedTokenizerBase, prompts: list[str], max_length: int | None = None):
    """CLIP's rule: tokenize padded to the longest prompt (not 77): CLIP's causal text tower pools at the first EOS, so
    the output is identical and short prompts run ~5x faster. Family-aware callers use `text_inputs`."""
    limit = max_length or min(int(getattr(tokenizer, "model_max_length", 77) or 77), 77)
    return tokenizer(prompts, padding="longest", truncation=True, max_length=limit, return_tensors="pt")


def text_inputs(clip, tokenizer: PreTrainedTokenizerBase, prompts: list[str]) -> dict[str, torch.Tensor]:
    """What `clip.get_text_features(**...)` takes for `prompts`, by the family's rules (CLIP: `tokenize_prompts`;
    SigLIP: padded on the right to the full 64-token context, no attention mask)."""
    return backbone_family(clip).text_inputs(clip, tokenizer, list(prompts))


def module_fingerprint(*modules: nn.Module, extra: str = "") -> str:
    """A short, stable digest of module weights (shapes + full contents), used to key embedding caches."""
    digest = hashlib.sha256(extra.encode())
    for module in modules:
        for name, tensor in sorted(module.state_dict().items()):
            digest.update(name.encode())
            digest.update(str(tuple(tensor.shape)).encode())
            digest.update(tensor.detach().to(torch.float32).cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def text_tower_modules(clip) -> tuple[nn.Module, ...]:
    """The modules that determine text embeddings (for cache fingerprints)."""
    return backbone_family(clip).text_tower_modules(clip)


def text_fingerprint_extra(clip, extra: str = "") -> str:
    """What a label-cache fingerprint adds to the text tower's weights: the backbone family (CLIP and SigLIP
    embeddings never share a cache table, even for equal weights: their text rules differ). CLIP: `extra` unchanged,
    so CLIP cache keys are those from before SigLIP support."""
    family = backbone_family(clip)
    return extra if family is CLIP_FAMILY else f"{extra}|family={family.name}"


def text_token_embedding(clip) -> nn.Embedding:
    """The text tower's token-embedding table `[V, H_t]` (what prompt learners splice context vectors next to)."""
    return clip.text_model.embeddings.token_embedding


def text_context_length(clip) -> int:
    """The longest token sequence the text tower takes (CLIP: 77 position embeddings; SigLIP: 64)."""
    return int(clip.config.text_config.max_position_embeddings)


def text_padded_length(clip, longest: int) -> int:
    """Length to pad a batch of prompt embeddings whose longest prompt has `longest` tokens (CLIP: `longest`; its
    causal tower makes padding after the EOS token irrelevant. SigLIP: always the full context, 64)."""
    return backbone_family(clip).text_padded_length(clip, longest)


def text_pool_positions(clip, eos_index: torch.Tensor, sequence_length: int) -> torch.Tensor:
    """Position `[B]` the text tower pools for prompts whose EOS token sits at `eos_index [B]` in sequences of
    `sequence_length` tokens (CLIP pools the EOS token itself; SigLIP the last position)."""
    return backbone_family(clip).text_pool_positions(clip, eos_index, sequence_length)


def dense_image_tokens(clip, pixel_values: torch.Tensor, value_path: bool = True) -> torch.Tensor:
    """Every vision token in the joint space, `[B, 1 + N, D]` (the CLS / global token first, then the patch grid).

    CLIP: through the final LayerNorm and the projection. `value_path=True` is MaskCLIP's dense ViT feature (Zhou et
    al., ECCV 2022): the last block's attention is bypassed, each token takes its own value
    (`out_proj(v_proj(LN1(x)))`, no query/key mixing), then keeps the block's residual and MLP. It is the ViT
    counterpart of DualCoOp's ResNet features (the attention pool's value path). `value_path=False` gives the plain
    output tokens (what `image_features` returns, CLS included).
    SigLIP: the pooled embedding first, then each patch token through the pooling head's value path (both modes: the
    head is the only route of patch tokens into the joint space, and its attention is what the value path bypasses).
    Images of another size than the checkpoint's get interpolated position embeddings (e.g. 448 px on a 224 ViT).
    """
    return backbone_family(clip).dense_image_tokens(clip, pixel_values, value_path)


def token_grid_size(num_patches: int) -> tuple[int, int]:
    """(h, w) of a square patch grid holding `num_patches` tokens (e.g. 196 → (14, 14)); any input size works."""
    side = int(round(num_patches**0.5))
    if side * side != num_patches:
        raise ValueError(f"{num_patches} patch tokens do not form a square grid (non-square input images?)")
    return side, side


# ---------------------------------------------------------------------------- label-cache fill: shared prompt prefix
# Label prompts through CLIP's text tower, without recomputing the template's shared start for every label.
#
# Filling a label cache is dominated by the text tower's linear layers, i.e. by the number of tokens pushed through
# it. Prompts of one template share their first tokens ("<bos> a photo of a" before every label): CLIP's text
# transformer is causal, so those tokens' hidden states (and their keys / values in every layer) are the same for every
# label. They are computed once; each batch then runs only the tokens from the label on, attending to the cached keys
# and values, and the last layer runs only the pooled (EOS) token, the only one whose output is read. With the
# `"single"` template this pushes roughly half the tokens of the plain path; the embeddings equal
# `clip.get_text_features(...).pooler_output` up to float rounding.
#
# This reaches into the text layers (attention projections), like the helpers in `clip_utils`; `supports_prefix_sharing`
# says when the layout is the one expected, and `encode_prompts` falls back to the plain forward otherwise.
#


def supports_prefix_sharing(clip) -> bool:
    """True for the HF CLIP text tower layout this module drives (embeddings, pre-LN layers, final LN). Never for a
    bidirectional text tower (SigLIP): there every token's state depends on the whole prompt, padding included."""
    if not isinstance(clip, CLIPModel):
        return False
    text_model = getattr(clip, "text_model", None)
    layers = getattr(getattr(text_model, "encoder", None), "layers", None)
    if text_model is None or not layers or not hasattr(text_model, "final_layer_norm"):
        return False
    attention = getattr(layers[0], "self_attn", None)
    return all(hasattr(attention, name) for name in ("q_proj", "k_proj", "v_proj", "out_proj", "head_dim", "scale"))


def pooled_positions(ids: Sequence[Sequence[int]], eos_token_id: int) -> list[int]:
    """Where CLIP pools each prompt: the first EOS token (the highest id for legacy configs with `eos_token_id == 2`,
    as transformers does)."""
    if eos_token_id == 2:
        return [max(range(len(row)), key=row.__getitem__) for row in ids]
    positions = []
    for row in ids:
        if eos_token_id not in row:
            raise ValueError("every tokenized prompt must contain the EOS token (tokenizer mismatch?)")
        positions.append(list(row).index(eos_token_id))
    return positions


def _heads(states: torch.Tensor, head_dim: int) -> torch.Tensor:
    batch, length, _ = states.shape
    return states.view(batch, length, -1, head_dim).transpose(1, 2)  # [B, heads, T, d]


def _merge_heads(states: torch.Tensor) -> torch.Tensor:
    batch, heads, length, head_dim = states.shape
    return states.transpose(1, 2).reshape(batch, length, heads * head_dim)  # [B, T, H]


@torch.no_grad()
def encode_prompts_sharing_prefix(
    clip,
    tokenizer,
    prompts: Sequence[str],
    batch_size: int = 256,
    on_batch: Callable[[int], None] | None = None,
) -> torch.Tensor:
    """Text embeddings `[N, D]` (float32, on CPU, in prompt order) of `prompts`, equal to
    `clip.get_text_features(**tokenize_prompts(tokenizer, prompts)).pooler_output`.

    Call it with the prompts of one template: the longest token prefix they all share is encoded once. Runs in the
    caller's autocast context (bf16 on CPU ~2x faster). `on_batch(n)` reports progress.
    """
    text_model = clip.text_model
    device = next(clip.parameters()).device
    limit = min(int(getattr(tokenizer, "model_max_length", 77) or 77), text_model.config.max_position_embeddings)
    ids = tokenizer(list(prompts), truncation=True, max_length=limit)["input_ids"]
    pooled = pooled_positions(ids, int(text_model.eos_token_id))
    # The shared prefix stops before the first pooled token, so every prompt keeps its pooled token in its suffix.
    shared = min(pooled)
    first = ids[0]
    for row in ids[1:]:
        shared = next((index for index in range(shared) if row[index] != first[index]), shared)
    layers = text_model.encoder.layers
    head_dim = layers[0].self_attn.head_dim

    # 1. The shared prefix once: keys and values of every layer, `[1, heads, P, d]`.
    prefix_cache: list[tuple[torch.Tensor, torch.Tensor]] = []
    if shared > 0:
        hidden = text_model.embeddings(input_ids=torch.tensor([first[:shared]], device=device))  # [1, P, H]
        for layer in layers:
            attention = layer.self_attn
            normed = layer.layer_norm1(hidden)
            keys, values = _heads(attention.k_proj(normed), head_dim), _heads(attention.v_proj(normed), head_dim)
            queries = _heads(attention.q_proj(normed), head_dim)
            attended = F.scaled_dot_product_attention(queries, keys, values, is_causal=True, scale=attention.scale)
            hidden = hidden + attention.out_proj(_merge_heads(attended))
            hidden = hidden + layer.mlp(layer.layer_norm2(hidden))
            prefix_cache.append((keys, values))

    # 2. The rest of each prompt, batched by length (little padding), attending to the cached prefix.
    embeddings = torch.empty(len(ids), clip.config.projection_dim)
    order = sorted(range(len(ids)), key=lambda index: len(ids[index]))
    pad = int(text_model.eos_token_id)  # padding sits after every pooled token: causal attention never reads it
    for start in range(0, len(order), batch_size):
        batch = order[start : start + batch_size]
        length = max(len(ids[index]) for index in batch) - shared
        tokens = torch.full((len(batch), length), pad, dtype=torch.long)
        for row, index in enumerate(batch):
            tokens[row, : len(ids[index]) - shared] = torch.tensor(ids[index][shared:])
        positions = torch.arange(shared, shared + length, device=device)[None]
        hidden = text_model.embeddings(input_ids=tokens.to(device), position_ids=positions)  # [b, S, H]
        allowed = torch.ones(length, shared + length, dtype=torch.bool, device=device)
        allowed[:, shared:] = torch.ones(length, length, dtype=torch.bool, device=device).tril()  # [S, P + S]
        pooled_index = torch.tensor([pooled[index] - shared for index in batch], device=device)  # [b]
        rows = torch.arange(len(batch), device=device)
        for number, layer in enumerate(layers):
            attention = layer.self_attn
            normed = layer.layer_norm1(hidden)
            keys, values = _heads(attention.k_proj(normed), head_dim), _heads(attention.v_proj(normed), head_dim)
            mask = allowed[None, None]  # [1, 1, S, P + S]
            if number == len(layers) - 1:  # only the pooled token's output is read after the last layer
                normed, hidden = normed[rows, pooled_index][:, None], hidden[rows, pooled_index][:, None]  # [b, 1, H]
                mask = allowed[pooled_index][:, None, None]  # [b, 1, 1, P + S]
            if prefix_cache:
                prefix_keys, prefix_values = prefix_cache[number]
                keys = torch.cat([prefix_keys.expand(len(batch), -1, -1, -1).to(keys.dtype), keys], dim=2)
                values = torch.cat([prefix_values.expand(len(batch), -1, -1, -1).to(values.dtype), values], dim=2)
            queries = _heads(attention.q_proj(normed), head_dim)
            attended = F.scaled_dot_product_attention(queries, keys, values, attn_mask=mask, scale=attention.scale)
            hidden = hidden + attention.out_proj(_merge_heads(attended))
            hidden = hidden + layer.mlp(layer.layer_norm2(hidden))
        features = clip.text_projection(text_model.final_layer_norm(hidden[:, 0]))  # [b, D]
        embeddings[batch] = features.float().cpu()
        if on_batch is not None:
            on_batch(len(batch))
    return embeddings


@torch.no_grad()
def encode_prompts_plain(
    clip, tokenizer, prompts: Sequence[str], batch_size: int = 256, on_batch: Callable[[int], None] | None = None
) -> torch.Tensor:
    """`clip.get_text_features` over `prompts` sorted by token length (little padding for CLIP; SigLIP pads every
    prompt to its full context anyway): `[N, D]` float32 on CPU. Tokenized by the family's rules (`text_inputs`)."""

    device = next(clip.parameters()).device
    lengths = [len(ids) for ids in tokenizer(list(prompts), truncation=True, max_length=77)["input_ids"]]
    order = sorted(range(len(prompts)), key=lengths.__getitem__)  # similar lengths share a batch
    embeddings = torch.empty(len(prompts), embedding_dim(clip))
    for start in range(0, len(prompts), batch_size):
        batch = order[start : start + batch_size]
        tokens = text_inputs(clip, tokenizer, [prompts[index] for index in batch])
        tokens = {key: value.to(device) for key, value in tokens.items()}
        embeddings[batch] = clip.get_text_features(**tokens).pooler_output.float().cpu()  # [b, D]
        if on_batch is not None:
            on_batch(len(batch))
    return embeddings
