"""Where the package data lives: prompt templates, label sets, protocol presets, transform presets, the shipped
offline CLIP, the model-card template and the recipes of `hub_configs/`.

Everything is found relative to this file (the package folder), so it works from a wheel / non-editable install as
well as from a source checkout. Layer 0: standard library only (nothing here imports torch or reads a file at import
time). This module is also part of the flat remote code exported next to saved models (`core/code_export.py`),
where `import ovmlc` may fail: it never imports the package, and there the data folders simply do not exist (the code
that reads them says so when asked for a shipped name).

`hub_configs/` is the top-level home of the recipes in the repository (users copy from it); the wheel ships the same
files as `ovmlc/hub_configs/` (a `package-dir` mapping in pyproject.toml, no second copy in the repository).
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

PACKAGE = "ovmlc"


class ResourceError(FileNotFoundError):
    """A data file of the package cannot be found (broken or zipped install); the message names it."""


def package_dir() -> Path:
    """The installed `ovmlc` package folder (a real directory: ovmlc is not importable from a zip archive)."""
    path = Path(__file__).resolve().parent
    if not path.is_dir():
        raise ResourceError(f"the ovmlc package data is not a folder on disk ({path}); install ovmlc unzipped")
    return path


_ROOT = package_dir()
TEMPLATES_DIR = _ROOT / "templates"
LABELSETS_DIR = _ROOT / "labelsets"
PROTOCOLS_DIR = _ROOT / "evaluation" / "protocols"
TRANSFORM_PRESETS_DIR = _ROOT / "data" / "transform_presets"
SYNTHETIC_CLIP_DIR = _ROOT / "assets" / "clip-synthetic"
SYNTHETIC_LABELSET = LABELSETS_DIR / "synthetic.json"
# The shapes-clutter world (issue 18; the quickstart's and the Space examples' world): its label set, and the folder,
# alias and recipe of the CLIP pretrained on it.
SHAPES_CLUTTER_LABELSET = LABELSETS_DIR / "shapes-clutter.json"
SHAPES_CLUTTER_CLIP_DIR = _ROOT / "assets" / "clip-shapes-clutter"
SHAPES_CLUTTER_CLIP_ALIAS = "shapes-clutter"
SHAPES_CLUTTER_CLIP_RECIPE = "clip-shapes-clutter.yaml"
# The small SigLIP pretrained on the shapes-64 world (issue 23): SigLIP-specific behaviour measured offline.
SIGLIP_SYNTHETIC_DIR = _ROOT / "assets" / "siglip-synthetic"
SIGLIP_SYNTHETIC_ALIAS = "siglip-synthetic"
SIGLIP_SYNTHETIC_RECIPE = "siglip-synthetic.yaml"
MODEL_CARD_TEMPLATE = _ROOT / "hub" / "model_card_template.md"
# The name under which `SYNTHETIC_CLIP_DIR` is accepted wherever a CLIP checkpoint is (the offline default).
SYNTHETIC_CLIP_ALIAS = "synthetic"
DEFAULT_BACKBONE = SYNTHETIC_CLIP_ALIAS


def hub_configs_dir() -> Path:
    """The recipes folder: `ovmlc/hub_configs/` of an installed wheel, else the checkout's top-level `hub_configs/`
    (source tree, `PYTHONPATH=checkout`, editable install)."""
    candidates = [_ROOT / "hub_configs", _ROOT.parent / "hub_configs"]
    try:  # an editable install maps the namespace package `ovmlc.hub_configs` to the checkout's folder
        candidates.append(Path(str(resources.files(f"{PACKAGE}.hub_configs"))))
    except (ModuleNotFoundError, TypeError):
        pass
    for candidate in candidates:
        if candidate.is_dir() and any(candidate.glob("*.yaml")):
            return candidate
    raise ResourceError(f"no hub_configs/ recipes folder found (looked in {', '.join(map(str, candidates[:2]))})")


def recipe_path(name: str) -> Path:
    """A shipped recipe, e.g. `recipe_path("qks-synthetic.yaml")`."""
    path = hub_configs_dir() / name
    if not path.is_file():
        available = sorted(p.name for p in hub_configs_dir().glob("*.yaml"))
        raise ResourceError(f"recipe {name!r} is not shipped; available: {available}")
    return path


__all__ = [
    "DEFAULT_BACKBONE",
    "LABELSETS_DIR",
    "MODEL_CARD_TEMPLATE",
    "PROTOCOLS_DIR",
    "ResourceError",
    "SHAPES_CLUTTER_CLIP_ALIAS",
    "SHAPES_CLUTTER_CLIP_DIR",
    "SHAPES_CLUTTER_CLIP_RECIPE",
    "SHAPES_CLUTTER_LABELSET",
    "SYNTHETIC_CLIP_ALIAS",
    "SYNTHETIC_CLIP_DIR",
    "SYNTHETIC_LABELSET",
    "TEMPLATES_DIR",
    "TRANSFORM_PRESETS_DIR",
    "hub_configs_dir",
    "package_dir",
    "recipe_path",
]
