"""Image transforms described as data (`transform_presets/*.yaml`), implemented with PIL + numpy.

A preset is a list of steps applied to an RGB PIL image, followed by a normalisation to a float32 `[3, H, W]` array:

    name: clip-eval
    size: 224                       # output size; load_transform(..., size=336) overrides it
    steps:
      - {op: resize_shortest_edge, interpolation: bicubic}
      - {op: center_crop}
    normalize: {mean: [...], std: [...]}

Size-bearing steps use the preset `size` unless they set `size` (absolute) or `size_ratio` (relative, e.g. ImageNet's
resize to 256 before a 224 crop is `size_ratio: 1.142857`). Ops: `resize_shortest_edge`, `center_crop`, `squash`
(resize to a square, no crop), `random_resized_crop`, `horizontal_flip`, `rand_augment`, `cutout`. The schema of a
step is its op function's signature (annotations with their ranges, and defaults), checked by `ovmlc.yaml_schema`:
errors name the preset and the key (`mine.yaml: steps[1].p: expected a finite number in [0, 1], got 1.5`).

Why PIL/numpy rather than a library: torchvision is not allowed (it breaks the CPU torch build), albumentations pulls
opencv (a ~60 MB wheel) and is frozen on its last MIT release, and kornia works on batched tensors with the global
torch RNG; the eval path here reproduces `CLIPImageProcessor` (PIL backend) exactly, and every random draw comes from
a seeded `numpy.random.Generator`, so augmentation is reproducible and distinct per DataLoader worker.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import os
import sys
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
from PIL import Image, ImageEnhance, ImageOps

from ovmlc.resources import TRANSFORM_PRESETS_DIR as PRESETS_DIR  # noqa: E402
from ovmlc.yaml_schema import (
    Bounds,
    Check,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    SchemaError,
    Tagged,
    UnitFloat,
    from_data,
    read_yaml,
    to_data,
)

SIZED_OPS = ("resize_shortest_edge", "center_crop", "squash", "random_resized_crop")
RANDOM_OPS = ("random_resized_crop", "horizontal_flip", "rand_augment", "cutout")
INTERPOLATIONS = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
    "box": Image.Resampling.BOX,  # ovmlc's offline CLIPs (integer upscales of world images map back exactly)
}
_FILL = (128, 128, 128)


class TransformConfigError(SchemaError):
    """A transform preset or step is invalid; the message names the preset (file) and the key."""


Interpolation = Literal["nearest", "bilinear", "bicubic", "lanczos", "box"]
AreaFraction = Annotated[float, Bounds(gt=0, le=1)]


# --------------------------------------------------------------------------------------------------- geometric ops


def _interpolation(name: str) -> Image.Resampling:
    try:
        return INTERPOLATIONS[name]
    except KeyError:
        raise TransformConfigError(f"unknown interpolation {name!r}; use one of {sorted(INTERPOLATIONS)}") from None


def resize_shortest_edge(
    image: Image.Image, size: PositiveInt, interpolation: Interpolation = "bicubic"
) -> Image.Image:
    """Shorter side -> `size`, longer side -> int(size * long / short) (as transformers' image processors do)."""
    width, height = image.size
    short, long = (width, height) if width <= height else (height, width)
    new_short, new_long = size, int(size * long / short)
    new_size = (new_short, new_long) if width <= height else (new_long, new_short)
    return image.resize(new_size, resample=_interpolation(interpolation))


def center_crop(image: Image.Image, size: PositiveInt) -> Image.Image:
    """Central `size` x `size` crop (zero padding when the image is smaller), offsets rounded down."""
    width, height = image.size
    if width < size or height < size:
        canvas = Image.new(image.mode, (max(width, size), max(height, size)))
        canvas.paste(image, ((max(width, size) - width + 1) // 2, (max(height, size) - height + 1) // 2))
        image, (width, height) = canvas, canvas.size
    top, left = (height - size) // 2, (width - size) // 2
    return image.crop((left, top, left + size, top + size))


def squash(image: Image.Image, size: PositiveInt, interpolation: Interpolation = "bicubic") -> Image.Image:
    """Resize to `size` x `size` ignoring the aspect ratio (DualCoOp's train/test resize)."""
    return image.resize((size, size), resample=_interpolation(interpolation))


def random_resized_crop(
    image: Image.Image,
    rng: np.random.Generator,
    size: PositiveInt,
    scale: tuple[AreaFraction, AreaFraction] = (0.08, 1.0),
    ratio: tuple[PositiveFloat, PositiveFloat] = (3 / 4, 4 / 3),
    interpolation: Interpolation = "bicubic",
) -> Image.Image:
    """A crop of random area fraction in `scale` and aspect ratio in `ratio` (log-uniform), resized to a square."""
    width, height = image.size
    area = width * height
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target_area = area * rng.uniform(scale[0], scale[1])
        aspect = math.exp(rng.uniform(*log_ratio))
        crop_width = int(round(math.sqrt(target_area * aspect)))
        crop_height = int(round(math.sqrt(target_area / aspect)))
        if 0 < crop_width <= width and 0 < crop_height <= height:
            top = int(rng.integers(0, height - crop_height + 1))
            left = int(rng.integers(0, width - crop_width + 1))
            break
    else:  # fall back to a central crop with the closest allowed aspect ratio
        in_ratio = width / height
        if in_ratio < ratio[0]:
            crop_width, crop_height = width, int(round(width / ratio[0]))
        elif in_ratio > ratio[1]:
            crop_height, crop_width = height, int(round(height * ratio[1]))
        else:
            crop_width, crop_height = width, height
        top, left = (height - crop_height) // 2, (width - crop_width) // 2
    box = (left, top, left + crop_width, top + crop_height)
    return image.resize((size, size), resample=_interpolation(interpolation), box=box)


def horizontal_flip(image: Image.Image, rng: np.random.Generator, p: UnitFloat = 0.5) -> Image.Image:
    return image.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if rng.random() < p else image


def cutout(
    image: Image.Image,
    rng: np.random.Generator,
    p: UnitFloat = 0.5,
    size_fraction: AreaFraction = 0.5,
    fill: Literal["random", "gray"] = "random",
) -> Image.Image:
    """With probability `p`, paint one rectangle (`size_fraction` of each side, centre uniform, clipped at the border)
    with a random colour (`fill: random`) or mid-grey (`fill: gray`)."""
    if rng.random() >= p:
        return image
    width, height = image.size
    half_width, half_height = int(width * size_fraction) // 2, int(height * size_fraction) // 2
    centre_x, centre_y = int(rng.integers(0, width)), int(rng.integers(0, height))
    box = (
        max(0, centre_x - half_width),
        max(0, centre_y - half_height),
        min(width, centre_x + half_width),
        min(height, centre_y + half_height),
    )
    colour = tuple(int(c) for c in rng.integers(0, 256, size=3)) if fill == "random" else _FILL
    image = image.copy()
    image.paste(colour, box)
    return image


# --------------------------------------------------------------------------------------------------- RandAugment
# Each op maps a strength in [0, 1] (magnitude / max_magnitude) to its own range; signed ops flip a fair coin.


def _signed(strength: float, rng: np.random.Generator) -> float:
    return strength if rng.random() < 0.5 else -strength


def _affine(image: Image.Image, matrix: tuple[float, ...]) -> Image.Image:
    return image.transform(
        image.size, Image.Transform.AFFINE, matrix, resample=Image.Resampling.BILINEAR, fillcolor=_FILL
    )


_RAND_AUGMENT_OPS: dict[str, Callable[[Image.Image, float, np.random.Generator], Image.Image]] = {
    "identity": lambda image, s, rng: image,
    "auto_contrast": lambda image, s, rng: ImageOps.autocontrast(image),
    "equalize": lambda image, s, rng: ImageOps.equalize(image),
    "rotate": lambda image, s, rng: image.rotate(
        _signed(30.0 * s, rng), resample=Image.Resampling.BILINEAR, fillcolor=_FILL
    ),
    "solarize": lambda image, s, rng: ImageOps.solarize(image, threshold=int(round(256 - 256 * s))),
    "posterize": lambda image, s, rng: ImageOps.posterize(image, max(1, 8 - int(round(4 * s)))),
    "color": lambda image, s, rng: ImageEnhance.Color(image).enhance(1.0 + _signed(0.9 * s, rng)),
    "contrast": lambda image, s, rng: ImageEnhance.Contrast(image).enhance(1.0 + _signed(0.9 * s, rng)),
    "brightness": lambda image, s, rng: ImageEnhance.Brightness(image).enhance(1.0 + _signed(0.9 * s, rng)),
    "sharpness": lambda image, s, rng: ImageEnhance.Sharpness(image).enhance(1.0 + _signed(0.9 * s, rng)),
    "shear_x": lambda image, s, rng: _affine(image, (1.0, _signed(0.3 * s, rng), 0.0, 0.0, 1.0, 0.0)),
    "shear_y": lambda image, s, rng: _affine(image, (1.0, 0.0, 0.0, _signed(0.3 * s, rng), 1.0, 0.0)),
    "translate_x": lambda image, s, rng: _affine(
        image, (1.0, 0.0, _signed(0.45 * s, rng) * image.size[0], 0.0, 1.0, 0.0)
    ),
    "translate_y": lambda image, s, rng: _affine(
        image, (1.0, 0.0, 0.0, 0.0, 1.0, _signed(0.45 * s, rng) * image.size[1])
    ),
}


RandAugmentOp = Literal[tuple(_RAND_AUGMENT_OPS)]


def rand_augment(
    image: Image.Image,
    rng: np.random.Generator,
    num_ops: NonNegativeInt = 2,
    magnitude: NonNegativeFloat = 9.0,
    max_magnitude: PositiveFloat = 10.0,
    ops: list[RandAugmentOp] | None = None,
) -> Image.Image:
    """RandAugment (Cubuk et al., 2020): `num_ops` ops drawn uniformly (with replacement), all at one magnitude."""
    names = list(ops) if ops else list(_RAND_AUGMENT_OPS)
    unknown = [name for name in names if name not in _RAND_AUGMENT_OPS]
    if unknown:
        raise TransformConfigError(f"unknown rand_augment op(s) {unknown}; available: {sorted(_RAND_AUGMENT_OPS)}")
    strength = float(np.clip(magnitude / max_magnitude, 0.0, 1.0))
    for index in rng.integers(0, len(names), size=num_ops):
        image = _RAND_AUGMENT_OPS[names[int(index)]](image, strength, rng)
    return image


_OPS: dict[str, Callable[..., Image.Image]] = {
    "resize_shortest_edge": resize_shortest_edge,
    "center_crop": center_crop,
    "squash": squash,
    "random_resized_crop": random_resized_crop,
    "horizontal_flip": horizontal_flip,
    "rand_augment": rand_augment,
    "cutout": cutout,
}


# --------------------------------------------------------------------------------------------------- the schema


def _step_schema(op: str, function: Callable[..., Image.Image]) -> type:
    """The schema of one step: `op` plus the op function's keyword parameters (their annotations and defaults).

    Size-bearing steps may leave out `size` (the preset size) or give `size_ratio` (relative to it) instead."""
    hints = typing.get_type_hints(function, include_extras=True)
    fields: list[tuple[str, Any, Any]] = [("op", Literal[op], field())]
    for name, parameter in inspect.signature(function).parameters.items():
        if name in ("image", "rng"):
            continue
        annotation = hints[name]
        if op in SIZED_OPS and name == "size":
            annotation, default = annotation | None, None
        else:
            default = parameter.default
        fields.append((name, annotation, field(default=default)))
    if op in SIZED_OPS:
        fields.append(("size_ratio", PositiveFloat | None, field(default=None)))
    return dataclasses.make_dataclass(f"{op}_step", fields)


_STEP_SCHEMAS = {op: _step_schema(op, function) for op, function in _OPS.items()}
TransformStep = typing.Union[tuple(_STEP_SCHEMAS.values())]  # noqa: UP007 - built from a tuple at run time


@dataclass
class NormalizeSettings:
    mean: Annotated[list[float], Check(lambda values: len(values) == 3, "3 numbers (one per channel)")]
    std: Annotated[list[PositiveFloat], Check(lambda values: len(values) == 3, "3 numbers > 0 (one per channel)")]


@dataclass
class TransformPreset:
    """A transform preset file (`transform_presets/*.yaml`). `normalize` may be left out of a file used only where the
    backbone's normalisation replaces it (`transforms.normalize: backbone` in a recipe)."""

    size: PositiveInt
    steps: list[Annotated[TransformStep, Tagged("op")]]
    normalize: NormalizeSettings | None = None
    name: str = "custom"
    description: str = ""


def check_transform_config(config: Mapping[str, Any], source: str | os.PathLike | None = None) -> TransformPreset:
    """Validate a preset mapping (errors name `source`, by default the preset's name, and the key)."""
    if source is None:
        name = config.get("name", "custom") if isinstance(config, Mapping) else "custom"
        source = name if isinstance(name, str) else "custom"
    return from_data(TransformPreset, config, source=source, error=TransformConfigError)


# --------------------------------------------------------------------------------------------------- the transform


class ImageTransform:
    """A preset applied to one image: `transform(image) -> float32 [3, size, size]` (normalised, channels first).

    Random steps draw from a `numpy.random.Generator` seeded by `seed` (and, inside a torch DataLoader worker, the
    worker id, so workers never repeat each other's augmentations). Pass `rng=` to control the draws per call.
    """

    def __init__(
        self,
        steps: list[Mapping[str, Any]],
        mean: list[float],
        std: list[float],
        size: int,
        *,
        seed: int | None = None,
        name: str = "custom",
        description: str = "",
    ):
        self.name = name
        self.description = description
        self.size = int(size)
        mean, std = (values.tolist() if isinstance(values, np.ndarray) else values for values in (mean, std))
        preset = check_transform_config(
            {"name": name, "size": size, "steps": list(steps), "normalize": {"mean": mean, "std": std}}, source=name
        )
        self.mean = np.asarray(preset.normalize.mean, dtype=np.float32).reshape(3, 1, 1)
        self.std = np.asarray(preset.normalize.std, dtype=np.float32).reshape(3, 1, 1)
        self.steps = [self._resolve_step(written, step) for written, step in zip(steps, preset.steps)]
        self.seed = seed
        self._generator: np.random.Generator | None = None
        self._generator_owner: tuple[int, int] | None = None

    def _resolve_step(self, written: Mapping[str, Any], step: Any) -> dict[str, Any]:
        """A checked step as the op's keyword arguments: the keys written (values converted), `size` resolved."""
        resolved = {name: getattr(step, name) for name in written}
        if step.op in SIZED_OPS:
            ratio = resolved.pop("size_ratio", None)
            if resolved.get("size") is None:
                resolved["size"] = int(round(self.size * ratio)) if ratio else self.size
        return resolved

    @classmethod
    def from_config(
        cls, config: Mapping[str, Any], *, size: int | None = None, seed: int | None = None
    ) -> ImageTransform:
        """Build from a preset dict; `size` replaces the preset size (and every step size derived from it)."""
        preset = check_transform_config(config)
        if preset.normalize is None:
            raise TransformConfigError("missing required key 'normalize'", source=preset.name)
        target = int(size) if size is not None else preset.size
        steps = [
            {name: value for name, value in to_data(step).items() if name in written}
            for written, step in zip(config["steps"], preset.steps)
        ]
        if size is not None:
            for step in steps:  # an absolute step size scales with the new output size
                if step.get("size") is not None:
                    step["size"] = int(round(step["size"] * target / preset.size))
        return cls(
            steps,
            preset.normalize.mean,
            preset.normalize.std,
            target,
            seed=seed,
            name=preset.name,
            description=preset.description,
        )

    @property
    def is_random(self) -> bool:
        return any(step["op"] in RANDOM_OPS for step in self.steps)

    def _default_generator(self) -> np.random.Generator:
        worker_id = 0
        torch = sys.modules.get("torch")  # only look at DataLoader workers when torch is in use anyway
        if torch is not None:
            info = torch.utils.data.get_worker_info()
            worker_id = 0 if info is None else info.id + 1
        owner = (os.getpid(), worker_id)
        if self._generator is None or self._generator_owner != owner:
            entropy = [self.seed, worker_id] if self.seed is not None else None
            self._generator, self._generator_owner = np.random.default_rng(entropy), owner
        return self._generator

    def reseed(self, seed: int | None) -> None:
        """Restart the random stream (e.g. for a reproducible preview)."""
        self.seed, self._generator, self._generator_owner = seed, None, None

    def apply_pil(self, image: Image.Image, rng: np.random.Generator | None = None) -> Image.Image:
        """The geometric/photometric steps only (a PIL image, before normalisation)."""
        from ovmlc.core.images import load_image

        image = load_image(image)
        rng = rng if rng is not None else self._default_generator()
        for step in self.steps:
            params = {key: value for key, value in step.items() if key != "op"}
            function = _OPS[step["op"]]
            image = function(image, rng, **params) if step["op"] in RANDOM_OPS else function(image, **params)
        return image

    def __call__(self, image: Any, rng: np.random.Generator | None = None) -> np.ndarray:
        """`image` (path, PIL, array, `{"bytes", "path"}`) -> float32 `[3, H, W]`."""
        pil = self.apply_pil(image, rng)
        array = np.asarray(pil, dtype=np.float32).transpose(2, 0, 1) / 255.0  # [3, H, W] in [0, 1]
        return (array - self.mean) / self.std

    def to_config(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "size": self.size,
            "steps": [
                {key: (list(value) if isinstance(value, tuple) else value) for key, value in step.items()}
                for step in self.steps
            ],
            "normalize": {"mean": self.mean.ravel().tolist(), "std": self.std.ravel().tolist()},
        }

    def __repr__(self) -> str:
        ops = ", ".join(step["op"] for step in self.steps)
        return f"ImageTransform(name={self.name!r}, size={self.size}, steps=[{ops}], seed={self.seed})"


def list_transform_presets() -> list[str]:
    return sorted(path.stem for path in PRESETS_DIR.glob("*.yaml"))


def load_transform_config(name_or_path: str | os.PathLike) -> dict[str, Any]:
    """A shipped preset by name (see `list_transform_presets()`) or a YAML file path, checked against the schema."""
    path = PRESETS_DIR / f"{name_or_path}.yaml"
    if not path.is_file():
        path = Path(name_or_path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(
            f"transform preset {name_or_path!r} not found; shipped presets: {list_transform_presets()}"
        )
    config = read_yaml(path, error=TransformConfigError)
    config.setdefault("name", path.stem)
    check_transform_config(config, source=path)
    return config


def load_transform(
    name_or_path: str | os.PathLike | Mapping[str, Any], *, size: int | None = None, seed: int | None = None
) -> ImageTransform:
    """`ImageTransform` from a preset name, a YAML path or a config dict."""
    config = name_or_path if isinstance(name_or_path, Mapping) else load_transform_config(name_or_path)
    return ImageTransform.from_config(config, size=size, seed=seed)
