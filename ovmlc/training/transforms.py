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

PROCESSOR_INTERPOLATIONS = {0: "nearest", 1: "lanczos", 2: "bilinear", 3: "bicubic", 4: "box"}


def processor_transform_config(processor) -> dict[str, Any]:
    """A transform preset equivalent to the backbone's image processor, read from its `size`: `shortest_edge` (Hub
    CLIPs: resize the shortest edge, then centre crop) or `{height, width}` (SigLIP, ovmlc's offline CLIPs: the whole
    image squashed to the square, then the centre crop if the processor has one)."""
    processor_size = dict(processor.size or {})
    resample = getattr(processor, "resample", 3)
    interpolation = PROCESSOR_INTERPOLATIONS.get(int(resample) if resample is not None else 3, "bicubic")
    do_resize, do_crop = getattr(processor, "do_resize", True), getattr(processor, "do_center_crop", False)
    crop = (getattr(processor, "crop_size", None) or {}).get("height") if do_crop else None
    if "shortest_edge" in processor_size:
        steps = [
            {"op": "resize_shortest_edge", "size": int(processor_size["shortest_edge"]), "interpolation": interpolation}
        ]
        description = "resize shortest edge + centre crop"
    else:
        if not processor_size.get("height") or processor_size["height"] != processor_size.get("width"):
            raise RecipeError(f"the backbone's image processor does not resize to a square: size={processor_size}")
        steps = [{"op": "squash", "interpolation": interpolation}]
        description = "the whole image squashed to a square" + (", centre crop" if crop else ", no crop")
    size = crop or processor_size.get("height") or processor_size.get("shortest_edge")
    steps = steps * bool(do_resize) + [{"op": "center_crop", "size": int(size)}] * bool(crop)
    return {
        "name": "backbone-processor",
        "description": f"the backbone's image processor ({description})",
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
