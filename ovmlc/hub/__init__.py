"""Hub layer: model cards (`model_card.py` + `model_card_template.md`) and pushing models and canonical datasets
(`push.py`, the engine of `ovmlc push` / `ovmlc push-dataset`).

Importing this package registers, with the base model's extension points (`ovmlc/core/hooks.py`), the model-card
writer that runs after every `save_pretrained` and the upload behind `model.push_to_hub`. `import ovmlc` imports it,
so they are registered whenever ovmlc is. Light: `model_card` (huggingface_hub, jinja2, yaml) loads on first use.

The names of `push.py` are re-exported here (this package replaced the former `ovmlc/hub.py` module).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..core.hooks import register_push_function, register_save_hook
from .push import (
    HubFolderError,
    UploadPlan,
    plan_dataset_upload,
    plan_model_upload,
    push_dataset,
    push_model,
    push_pretrained_model,
    upload,
    validate_dataset_folder,
    validate_model_folder,
)


def _write_model_card_after_save(model: Any, directory: Path) -> None:
    """An honest card from what the folder holds (the trainer refreshes it once its report is in the folder)."""
    from .model_card import write_model_card

    write_model_card(directory)


register_save_hook("model_card", _write_model_card_after_save)
register_push_function(push_pretrained_model)

__all__ = [
    "HubFolderError",
    "UploadPlan",
    "plan_dataset_upload",
    "plan_model_upload",
    "push_dataset",
    "push_model",
    "push_pretrained_model",
    "upload",
    "validate_dataset_folder",
    "validate_model_folder",
]
