"""ovmlc: open-vocabulary multi-label image classification on the Hugging Face stack.

`import ovmlc` is light: it imports neither torch nor transformers (the CLI's `--help` stays fast). The public names
below load on first use (PEP 562). The methods are registered with transformers' `AutoConfig` / `AutoModel` and the
pipeline task with `transformers.pipelines` as soon as transformers loads those modules (see `ovmlc/_registration.py`),
so `AutoModel.from_pretrained(folder)` and `pipeline("open-vocabulary-multi-label-classification", ...)` work after
`import ovmlc`, whichever of the two is imported first.
"""

from __future__ import annotations

import importlib
from typing import Any

from . import _compat, _registration
from . import hub as _hub  # noqa: F401 - registers the model-card save hook and push function with the base model
from ._version import __version__

# public name -> module that defines it
_LAZY = {
    "CLIPFTConfig": "ovmlc.methods.clipft",
    "CLIPFTModel": "ovmlc.methods.clipft",
    "CLIPZeroShotConfig": "ovmlc.methods.clip_zeroshot",
    "CLIPZeroShotModel": "ovmlc.methods.clip_zeroshot",
    "CoOpConfig": "ovmlc.methods.coop",
    "CoOpModel": "ovmlc.methods.coop",
    "DualCoOpConfig": "ovmlc.methods.dualcoop",
    "DualCoOpModel": "ovmlc.methods.dualcoop",
    "DualCoOpPPConfig": "ovmlc.methods.dualcooppp",
    "DualCoOpPPModel": "ovmlc.methods.dualcooppp",
    "ImageLoadError": "ovmlc.core.images",
    "LAMMConfig": "ovmlc.methods.lamm",
    "LAMMModel": "ovmlc.methods.lamm",
    "LabelVocabulary": "ovmlc.core.vocabulary",
    "LinearProbeConfig": "ovmlc.methods.linear_probe",
    "LinearProbeModel": "ovmlc.methods.linear_probe",
    "MKTConfig": "ovmlc.methods.mkt",
    "MKTModel": "ovmlc.methods.mkt",
    "MultiLabelOutput": "ovmlc.core.outputs",
    "OVMLCConfig": "ovmlc.core.modeling_base",
    "OVMLCPreTrainedModel": "ovmlc.core.modeling_base",
    "OpenVocabularyMultiLabelPipeline": "ovmlc.inference.pipeline",
    "PIPELINE_TASK": "ovmlc.files",
    "QKSConfig": "ovmlc.methods.qks",
    "QKSModel": "ovmlc.methods.qks",
    "SYNTHETIC_CLIP_PATH": "ovmlc.core.backbones",
    "ViLDConfig": "ovmlc.methods.vild",
    "ViLDModel": "ovmlc.methods.vild",
    "get_method": "ovmlc.core.registry",
    "list_methods": "ovmlc.core.registry",
    "list_templates": "ovmlc.core.vocabulary",
    "load_clip_backbone": "ovmlc.core.backbones",
    "load_image": "ovmlc.core.images",
    "load_labelset": "ovmlc.core.vocabulary",
    "load_model": "ovmlc.inference.factory",
    "load_templates": "ovmlc.core.vocabulary",
}


def _methods() -> dict[str, tuple[type, type]]:
    """`{name: (config class, model class)}` of every registered method (registration order)."""
    importlib.import_module("ovmlc.methods")
    from .core.registry import method_specs

    return {spec.name: (spec.config_class, spec.model_class) for spec in method_specs()}


def __getattr__(name: str) -> Any:
    if name == "METHODS":  # derived from the registry on every access (methods may register later)
        methods = _methods()
        _registration.sync()
        return methods
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        _registration.sync()
        return value
    raise AttributeError(f"module 'ovmlc' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY, "METHODS"})


_compat.install()
_registration.install()

__all__ = [
    "CLIPFTConfig",
    "CLIPFTModel",
    "CLIPZeroShotConfig",
    "CLIPZeroShotModel",
    "CoOpConfig",
    "CoOpModel",
    "DualCoOpConfig",
    "DualCoOpModel",
    "DualCoOpPPConfig",
    "DualCoOpPPModel",
    "ImageLoadError",
    "LAMMConfig",
    "LAMMModel",
    "LabelVocabulary",
    "LinearProbeConfig",
    "LinearProbeModel",
    "METHODS",
    "MKTConfig",
    "MKTModel",
    "MultiLabelOutput",
    "OVMLCConfig",
    "OVMLCPreTrainedModel",
    "OpenVocabularyMultiLabelPipeline",
    "PIPELINE_TASK",
    "QKSConfig",
    "QKSModel",
    "SYNTHETIC_CLIP_PATH",
    "ViLDConfig",
    "ViLDModel",
    "__version__",
    "get_method",
    "list_methods",
    "list_templates",
    "load_clip_backbone",
    "load_image",
    "load_labelset",
    "load_model",
    "load_templates",
]
