"""One entry point to load any ovmlc model: `ovmlc.load_model(name_or_path)`."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from ..core.backbones import (
    BACKBONE_FAMILIES,
    DEFAULT_BACKBONE,
    BackboneNotFoundError,
    UnsupportedBackboneError,
    family_for_model_type,
    resolve_backbone,
)
from ..core.checkpoint_files import is_url, missing_config_error, read_config_file, url_error
from ..core.modeling_base import OVMLCPreTrainedModel
from ..files import CONFIG_FILE


def _model_type(name_or_path: str, revision: str | None) -> str | None:
    config_file = Path(name_or_path, CONFIG_FILE)
    if config_file.is_file():
        return read_config_file(config_file).get("model_type")
    if Path(name_or_path).is_dir():
        raise missing_config_error(name_or_path)
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(name_or_path, revision=revision).model_type
    except (OSError, ValueError) as error:
        raise BackboneNotFoundError(f"cannot load model {name_or_path!r}: {error}") from error


def load_model(
    name_or_path: str | os.PathLike = DEFAULT_BACKBONE,
    dtype: torch.dtype | str | None = torch.float32,
    revision: str | None = None,
    device: str | torch.device | None = None,
) -> OVMLCPreTrainedModel:
    """Load an ovmlc model (a folder written by `save_pretrained`/`ovmlc train`, or a Hub id), or wrap a plain CLIP or
    SigLIP / SigLIP 2 checkpoint (Hub id such as `google/siglip2-base-patch16-224`, local folder, or `"synthetic"`,
    the shipped offline CLIP) as `CLIPZeroShotModel` (for SigLIP: sigmoid(exp(scale) * cos + bias) with the
    checkpoint's own scale and bias)."""
    from transformers import AutoModel

    from .. import methods  # noqa: F401 - registers every method with AutoModel
    from ..methods.clip_zeroshot import CLIPZeroShotModel

    if is_url(str(name_or_path)) and not Path(name_or_path).exists():
        raise url_error(str(name_or_path))
    resolved = resolve_backbone(name_or_path)
    # "org/name" is a Hub id; absolute, relative ("./x") and nested ("a/b/c") paths can only be local folders.
    looks_local = resolved.startswith((os.path.sep, ".", "~")) or resolved.count("/") > 1
    if looks_local and not Path(resolved).exists():
        raise BackboneNotFoundError(f"{resolved}: no such model folder")
    model_type = _model_type(resolved, revision)
    kwargs = {"revision": revision} if revision else {}
    backbone_types = {model_type for family in BACKBONE_FAMILIES.values() for model_type in family.model_types}
    if model_type in backbone_types:
        model = CLIPZeroShotModel.from_clip(name_or_path, dtype=dtype, **kwargs)
    elif model_type and model_type.startswith("ovmlc"):
        model = AutoModel.from_pretrained(resolved, dtype=dtype, use_safetensors=True, **kwargs)  # never pickles
    else:
        try:
            family_for_model_type(model_type, str(name_or_path))
        except UnsupportedBackboneError as error:  # its message names the model type and a known reason, if any
            raise UnsupportedBackboneError(f"neither an ovmlc model nor a supported backbone: {error}") from None
    return model.to(device) if device is not None else model
