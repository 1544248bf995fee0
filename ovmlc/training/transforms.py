"""The image transforms of a recipe, built on `ovmlc.data.transforms` presets.

* evaluation (validation, test, feature cache): `transforms.eval`, a preset name / YAML file / mapping, or by default
  the backbone's own image processor (resize the shortest edge + centre crop, bicubic), reproduced exactly;
* training: the same as evaluation unless `training.augment` names a preset with random steps (e.g. RandAugment).

Output size and normalisation follow the backbone's processor (`transforms.size` / `transforms.normalize` override
them), so one preset serves every CLIP resolution.
"""

from __future__ import annotations

from typing import Any

from .recipe import Recipe, RecipeError

PROCESSOR_INTERPOLATIONS = {0: "nearest", 1: "lanczos", 2: "bilinear", 3: "bicubic"}


def processor_transform_config(processor) -> dict[str, Any]:
    """A transform preset equivalent to a CLIP-style image processor (shortest-edge resize + centre crop)."""
    crop = processor.crop_size or {}
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
    from ..data.transforms import TransformConfigError, load_transform, load_transform_config

    processor_config = processor_transform_config(model.processor)
    settings = recipe.transforms
    size = settings.size or processor_config["size"]
    normalize = settings.normalize

    def build(spec: Any, key: str):
        try:
            config = spec if isinstance(spec, dict) else load_transform_config(spec)
            config = dict(config)
            if normalize == "backbone":
                config["normalize"] = processor_config["normalize"]
            return load_transform(config, size=size)
        except (TransformConfigError, FileNotFoundError) as error:
            raise RecipeError(f"recipe {recipe.source}: {key}: {error}") from None

    eval_spec = settings.eval
    eval_transform = build(eval_spec if eval_spec is not None else processor_config, "transforms.eval")
    augment = recipe.training.augment
    train_transform = eval_transform if augment == "none" else build(augment, "training.augment")
    description = {"eval": eval_transform.to_config(), "train": train_transform.to_config()}
    return train_transform, eval_transform, description
