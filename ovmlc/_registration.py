"""Register ovmlc with transformers (Auto classes, pipeline task) without importing transformers at `import ovmlc`.

`import ovmlc` must stay light (no torch / transformers: the CLI's `--help` would take seconds), yet after it
`AutoModel.from_pretrained(ovmlc_folder)` must work without `trust_remote_code`, and `pipeline(PIPELINE_TASK, ...)`
must know the task. So registration is a set of *post-import actions*, each waiting for a transformers module:

- the methods (`import ovmlc.methods`: each method's `__init__` calls `register_method`, which registers it with
  AutoConfig/AutoModel) once `transformers.models.auto` is loaded;
- the pipeline task once `transformers.pipelines` is loaded.

`install()` runs at once what transformers already loaded; for the rest it puts a small finder first on
`sys.meta_path`. The finder wraps the loader of every module of the watched packages (transformers, peft,
accelerate, ovmlc) imported from then on; when the outermost such import finishes, pending actions whose module is
loaded run, once none of the packages they import is half-initialised (registering while, say, `peft` still runs its
`__init__` would import `ovmlc.methods.clipft`, which needs a finished `peft`). When nothing is pending the finder
removes itself. `when_imported()` adds actions (the CLI uses it to hide transformers' progress bars).
"""

from __future__ import annotations

import importlib
import importlib.abc
import sys
import threading
import warnings
from collections.abc import Callable
from dataclasses import dataclass

_WATCHED_PACKAGES = frozenset({"transformers", "peft", "accelerate", "ovmlc"})
# What a registration imports: it waits while one of these is half-initialised.
_DEPENDENCIES = frozenset(
    {"transformers", "torch", "peft", "accelerate", "safetensors", "huggingface_hub", "tokenizers", "ovmlc", "numpy"}
)


@dataclass
class _Action:
    name: str
    modules: tuple[str, ...]  # runs once any of these is loaded
    callback: Callable[[], None]
    wait_for_dependencies: bool = True
    done: bool = False


_lock = threading.RLock()
_local = threading.local()
_running = [False]


def _register_methods() -> None:
    importlib.import_module("ovmlc.methods")


def _register_pipeline() -> None:
    from transformers import AutoModel
    from transformers.pipelines import PIPELINE_REGISTRY

    from .files import PIPELINE_TASK
    from .inference.pipeline import OpenVocabularyMultiLabelPipeline

    PIPELINE_REGISTRY.register_pipeline(
        PIPELINE_TASK, pipeline_class=OpenVocabularyMultiLabelPipeline, pt_model=AutoModel, type="multimodal"
    )


_ACTIONS: list[_Action] = [
    _Action(
        "methods",
        ("transformers.models.auto.configuration_auto", "transformers.models.auto.modeling_auto"),
        _register_methods,
    ),
    _Action("pipeline", ("transformers.pipelines",), _register_pipeline),
]


def _top(name: str) -> str:
    return name.partition(".")[0]


def _initializing(module) -> bool:
    return bool(getattr(getattr(module, "__spec__", None), "_initializing", False))


def _loaded(name: str, finished: str | None) -> bool:
    module = sys.modules.get(name)
    return module is not None and (name == finished or not _initializing(module))


def _busy_dependencies(finished: str | None) -> bool:
    """Whether a dependency is still executing its body (`finished` just ran its body to the end)."""
    for name, module in list(sys.modules.items()):
        if name not in (finished, "ovmlc") and _top(name) in _DEPENDENCIES and _initializing(module):
            return True
    return False


def sync(finished: str | None = None) -> None:
    """Run the pending actions whose module is loaded (those that import ovmlc code only if no dependency is
    mid-import)."""
    if all(action.done for action in _ACTIONS):
        return
    with _lock:
        if _running[0]:
            return
        _running[0] = True
        busy = None
        try:
            for action in _ACTIONS:
                if action.done or not any(_loaded(name, finished) for name in action.modules):
                    continue
                if action.wait_for_dependencies:
                    busy = _busy_dependencies(finished) if busy is None else busy
                    if busy:
                        continue
                try:
                    action.callback()
                except ImportError:
                    continue  # something it needs is not importable yet: retried after the next watched import
                except Exception as error:  # never break the user's import of transformers because of ovmlc
                    warnings.warn(f"ovmlc: post-import action {action.name!r} failed: {error!r}", stacklevel=2)
                action.done = True
        finally:
            _running[0] = False
        if all(action.done for action in _ACTIONS):
            uninstall()


def when_imported(
    name: str, modules: tuple[str, ...], callback: Callable[[], None], wait_for_dependencies: bool = False
) -> None:
    """Run `callback()` once any of `modules` is loaded (now, if one already is). An action registered again under the
    same name replaces the earlier one (and runs again)."""
    with _lock:
        _ACTIONS[:] = [action for action in _ACTIONS if action.name != name]
        _ACTIONS.append(_Action(name, tuple(modules), callback, wait_for_dependencies))
    install()


class _NotifyingLoader:
    """Runs the wrapped loader, then `sync()` once the outermost watched import of this thread is complete."""

    def __init__(self, loader):
        self._loader = loader

    def __getattr__(self, name):  # get_resource_reader, get_source, is_package, ... of the real loader
        return getattr(self._loader, name)

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module) -> None:
        _local.depth = getattr(_local, "depth", 0) + 1
        try:
            self._loader.exec_module(module)
        finally:
            _local.depth -= 1
        if _local.depth == 0:
            sync(finished=module.__name__)


class _WatchImports(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path=None, target=None):
        if _top(fullname) not in _WATCHED_PACKAGES or getattr(_local, "finding", False):
            return None
        _local.finding = True
        try:
            spec = None
            for finder in sys.meta_path:
                find_spec = getattr(finder, "find_spec", None)
                if finder is self or find_spec is None:
                    continue
                spec = find_spec(fullname, path, target)
                if spec is not None:
                    break
        finally:
            _local.finding = False
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return None  # let the regular machinery handle it
        spec.loader = _NotifyingLoader(spec.loader)
        return spec


_HOOK = _WatchImports()


def install() -> None:
    """Run now what transformers already loaded; watch imports for the rest."""
    sync()
    with _lock:
        if not all(action.done for action in _ACTIONS) and _HOOK not in sys.meta_path:
            sys.meta_path.insert(0, _HOOK)


def uninstall() -> None:
    with _lock:
        if _HOOK in sys.meta_path:
            sys.meta_path.remove(_HOOK)


def status() -> dict[str, bool]:
    """Which actions ran (`methods`, `pipeline`, ...) and whether the import hook is installed (`hook`)."""
    return {**{action.name: action.done for action in _ACTIONS}, "hook": _HOOK in sys.meta_path}
