"""The image transforms of a recipe, built on `ovmlc.data.transforms` presets.

* evaluation (validation, test, feature cache): `transforms.eval`, a preset name / YAML file / mapping, or by default
  the backbone's own image processor (resize the shortest edge + centre crop, bicubic), reproduced exactly;
* training: the same as evaluation unless `training.augment` names a preset with random steps (e.g. RandAugment).

Output size and normalisation follow the backbone's processor (`transforms.size` / `transforms.normalize` override
them), so one preset serves every CLIP resolution.
"""

from __future__ import annotations

from typing import Any

from .recipe import Recipe, RecipeError, preset_config, recipe_presets

PROCESSOR_INTERPOLATIONS = {0: "nearest", 1: "lanczos", 2: "bilinear", 3: "bicubic"}


def processor_transform_config(processor) -> dict[str, Any]:
    """A transform preset equivalent to the backbone's image processor: CLIP-style (shortest-edge resize + centre
    crop) or SigLIP-style (`size: {height, width}` without a crop: the whole image squashed to the square)."""
    processor_size = dict(processor.size or {})
    if type(processor).__name__.startswith("Siglip"):  # (CLIP processors keep the rule below, unchanged)
        if not processor_size.get("height") or processor_size["height"] != processor_size.get("width"):
            raise RecipeError(f"the backbone's image processor does not resize to a square: size={processor_size}")
        resample = getattr(processor, "resample", 3)
        interpolation = PROCESSOR_INTERPOLATIONS.get(int(resample) if resample is not None else 3, "bicubic")
        return {
            "name": "backbone-processor",
            "description": "the backbone's image processor (the whole image squashed to a square, no crop)",
            "size": int(processor_size["height"]),
            "steps": [{"op": "squash", "interpolation": interpolation}] * bool(getattr(processor, "do_resize", True)),
            "normalize": {"mean": list(processor.image_mean), "std": list(processor.image_std)},
        }
    crop = getattr(processor, "crop_size", None) or {}
    size = crop.get("height") or (processor.size or {}).get("shortest_edge")
    if size is None:
        raise RecipeError(f"cannot derive an image size from the backbone's image processor: {processor}")
    resize_to = (processor.size or {}).get("shortest_edge", size)
    resample = getattr(processor, "resample", 3)
    interpolation = PROCESSOR_INTERPOLATIONS.get(int(resample) if resample is not None else 3, "bicubic")
    steps = []
    if getattr(processor, "do_resize", True):
        steps.append({"op": "resize_shortest_edge", "size": int(resize_to), "interpolation": interpolation})
    if getattr(processor, "do_center_crop", True):
        steps.append({"op": "center_crop", "size": int(size)})
    return {
        "name": "backbone-processor",
        "description": "the backbone's image processor (resize shortest edge + centre crop)",
        "size": int(size),
        "steps": steps,
        "normalize": {"mean": list(processor.image_mean), "std": list(processor.image_std)},
    }


def build_image_transforms(recipe: Recipe, model) -> tuple[Any, Any, dict[str, Any]]:
    """`(train_transform, eval_transform, description)`; transforms map a PIL image to float32 `[3, H, W]`."""
    from ..data.transforms import TransformConfigError, load_transform

    processor_config = processor_transform_config(model.processor)
    settings = recipe.transforms
    size = settings.size or processor_config["size"]
    normalize = processor_config["normalize"] if settings.normalize == "backbone" else None

    def build(spec: Any, key: str):
        try:
            return load_transform(preset_config(spec, normalize), size=size)
        except (TransformConfigError, FileNotFoundError) as error:
            raise recipe.error(key, str(error)) from None

    presets = dict(recipe_presets(recipe))
    eval_transform = build(presets.get("transforms.eval", processor_config), "transforms.eval")
    augment = presets.get("training.augment")
    train_transform = eval_transform if augment is None else build(augment, "training.augment")
    description = {"eval": eval_transform.to_config(), "train": train_transform.to_config()}
    return train_transform, eval_transform, description
