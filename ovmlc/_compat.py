"""Old module paths of ovmlc 0.1 (before the layered layout), importable for one release.

`import ovmlc.clip_utils` gives the module `ovmlc.core.backbones` itself (the same object, so every name, private
ones included, and monkeypatching work); a path whose names now live in several modules (`ovmlc.vocabulary`) gives a
module that forwards attribute lookups to them in order. Saved models whose remote code imports the old paths (e.g.
`from ovmlc.modeling_base import OVMLCPreTrainedModel`) keep loading.

Implemented as a `sys.meta_path` finder for exactly these names, with no shim files: the old paths stay deleted in
the repository, so git follows each file to its new place.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import types
from typing import Any

# old module path -> the module(s) that now define its names (first match wins)
MOVED_MODULES: dict[str, tuple[str, ...]] = {
    "ovmlc.clip_utils": ("ovmlc.core.backbones",),
    "ovmlc.images": ("ovmlc.core.images",),
    "ovmlc.vocabulary": ("ovmlc.core.vocabulary", "ovmlc.core.label_cache"),
    "ovmlc.losses": ("ovmlc.core.losses",),
    "ovmlc.modeling_base": ("ovmlc.core.modeling_base", "ovmlc.core.outputs", "ovmlc.files"),
    "ovmlc.metrics": ("ovmlc.evaluation.metrics",),
    "ovmlc.model_card": ("ovmlc.hub.model_card",),
    "ovmlc.factory": ("ovmlc.inference.factory",),
    "ovmlc.pipeline": ("ovmlc.inference.pipeline", "ovmlc.files", "ovmlc.core.modeling_base"),
    "ovmlc.demo": ("ovmlc.space.demo",),
    "ovmlc.vlp": ("ovmlc.training.pretrain_vlp",),
}


class _ForwardingModule(types.ModuleType):
    """A module whose attributes are looked up in `__targets__` (modules), in order."""

    def __getattr__(self, name: str) -> Any:
        for target in self.__dict__["__targets__"]:
            if hasattr(target, name):
                return getattr(target, name)
        raise AttributeError(f"module {self.__name__!r} has no attribute {name!r}")

    def __dir__(self) -> list[str]:
        return sorted({name for target in self.__dict__["__targets__"] for name in dir(target)})


class _MovedModuleLoader(importlib.abc.Loader):
    def create_module(self, spec):
        targets = [importlib.import_module(name) for name in MOVED_MODULES[spec.name]]
        if len(targets) == 1:
            module = targets[0]  # the new module itself
            module.__dict__.setdefault("__ovmlc_spec__", module.__spec__)
            return module
        module = _ForwardingModule(spec.name, f"moved: see {', '.join(MOVED_MODULES[spec.name])}")
        module.__targets__ = targets
        return module

    def exec_module(self, module) -> None:
        # The import system stamped the old name's spec on the module: give the moved module its own back.
        original = module.__dict__.pop("__ovmlc_spec__", None)
        if original is not None:
            module.__spec__ = original


class _MovedModuleFinder(importlib.abc.MetaPathFinder):
    _loader = _MovedModuleLoader()

    def find_spec(self, fullname, path=None, target=None):
        if fullname not in MOVED_MODULES:
            return None
        return importlib.machinery.ModuleSpec(fullname, self._loader)


_FINDER = _MovedModuleFinder()


def install() -> None:
    if _FINDER not in sys.meta_path:
        sys.meta_path.append(_FINDER)
