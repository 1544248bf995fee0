"""Extension points of the base model that the layers above core fill in (dependency inversion).

Core must not import the hub layer, yet `model.save_pretrained(dir)` writes the ovmlc model card and
`model.push_to_hub(repo)` uploads with it. So core only runs what was registered here:

- `register_save_hook(name, hook)`: `hook(model, directory)` runs after `save_pretrained` wrote a folder (main
  process only), in registration order; `ovmlc.hub` registers the model-card writer. `refresh_saved_folder(model,
  directory)` runs them again, e.g. after the trainer added its report to the folder.
- `register_push_function(function)`: what `model.push_to_hub(repo_id, **kwargs)` calls; `ovmlc.hub` registers
  `push_pretrained_model`.

`import ovmlc` imports `ovmlc.hub`, so both are registered whenever any part of ovmlc is imported. In the flat copy of
the model code that `save_pretrained` exports for Hub users (`code_export.py`), nothing registers: saving writes no
ovmlc card and `push_to_hub` is transformers' own. Standard library only.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

SaveHook = Callable[[Any, Path], None]
PushFunction = Callable[..., Any]

_SAVE_HOOKS: dict[str, SaveHook] = {}
_PUSH_FUNCTION: list[PushFunction] = []


def register_save_hook(name: str, hook: SaveHook) -> None:
    """Run `hook(model, directory)` after every `save_pretrained`; registering a name again replaces its hook."""
    _SAVE_HOOKS[name] = hook


def save_hooks() -> dict[str, SaveHook]:
    return dict(_SAVE_HOOKS)


def run_save_hooks(model: Any, directory: str | Path) -> None:
    for hook in list(_SAVE_HOOKS.values()):
        hook(model, Path(directory))


refresh_saved_folder = run_save_hooks


def register_push_function(function: PushFunction) -> None:
    """The function `model.push_to_hub(repo_id, **kwargs)` delegates to: `function(model, repo_id, **kwargs)`."""
    _PUSH_FUNCTION[:] = [function]


def push_function() -> PushFunction:
    if not _PUSH_FUNCTION:
        raise RuntimeError("no push function registered: `import ovmlc` registers ovmlc.hub's push_pretrained_model")
    return _PUSH_FUNCTION[0]


def registered_push_function() -> PushFunction | None:
    """The registered push function, or None (the flat remote-code copy of a model, where `ovmlc.hub` is absent:
    `push_to_hub` then falls back to transformers' own upload)."""
    return _PUSH_FUNCTION[0] if _PUSH_FUNCTION else None


__all__ = [
    "push_function",
    "refresh_saved_folder",
    "register_push_function",
    "register_save_hook",
    "registered_push_function",
    "run_save_hooks",
    "save_hooks",
]
