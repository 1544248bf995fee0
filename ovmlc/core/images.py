"""Image loading: any path / PIL image / array -> RGB PIL image, with errors that name the input."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import ExifTags, Image, ImageFile, ImageOps, UnidentifiedImageError

# A path, PIL image, numpy array (HWC/CHW), torch tensor or datasets' {"bytes", "path"} dict.
ImageInput = Any


class ImageLoadError(ValueError):
    """An input could not be read as an image; the message names the file or input index."""


def _to_rgb(image: Image.Image) -> Image.Image:
    # 16-bit and float modes cannot convert to RGB directly: rescale to 8 bit first.
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        array = np.asarray(image, dtype=np.float64)
        if image.mode.startswith("I;16"):
            array = array / 257.0
        elif array.max() > 255 or array.min() < 0:
            lo, hi = float(array.min()), float(array.max())
            array = (array - lo) / max(hi - lo, 1e-12) * 255.0
        image = Image.fromarray(np.clip(array, 0, 255).astype(np.uint8), mode="L")
    if image.mode in ("RGBA", "LA") or (image.mode == "P" and "transparency" in image.info):
        # Composite transparency onto white instead of dropping alpha (which exposes arbitrary RGB values).
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB") if image.mode != "RGB" else image


def _array_to_image(array: np.ndarray, name: str) -> Image.Image:
    if array.ndim == 3 and array.shape[0] in (1, 3, 4) and array.shape[-1] not in (1, 3, 4):
        array = np.moveaxis(array, 0, -1)  # CHW -> HWC
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[-1] not in (3, 4)):
        raise ImageLoadError(
            f"{name}: array of shape {tuple(array.shape)} is not an image (expected HxW, HxWx3 or HxWx4)"
        )
    if array.dtype != np.uint8:
        array = np.asarray(array, dtype=np.float64)
        if array.size and array.max() <= 1.0 and array.min() >= 0.0:
            array = array * 255.0
        array = np.clip(np.round(array), 0, 255).astype(np.uint8)
    return Image.fromarray(array)


def load_image(image: ImageInput, name: str | None = None, min_size: int | None = None) -> Image.Image:
    """Return `image` as an RGB PIL image.

    Accepts a path, a PIL image (any mode: grayscale, RGBA, CMYK, palette, 16-bit), a numpy array (HWC or CHW,
    uint8 or float in [0, 1]) or a `{"bytes": ..., "path": ...}` dict as stored by `datasets.Image(decode=False)`.
    Files are turned upright by their EXIF orientation (as `datasets` and transformers do). Unreadable or truncated
    files raise `ImageLoadError` naming the file. `min_size` (files only): see `load_image_file`.
    """
    if isinstance(image, Image.Image):
        return _to_rgb(image)
    if isinstance(image, np.ndarray):
        return _array_to_image(image, name or "array input")
    if hasattr(image, "numpy") and hasattr(image, "dim"):  # torch tensor
        return _array_to_image(image.detach().cpu().numpy(), name or "tensor input")
    if isinstance(image, dict) and ("bytes" in image or "path" in image):
        import io

        label = image.get("path") or name or "image bytes"
        if image.get("bytes") is not None:
            return load_image_file(io.BytesIO(image["bytes"]), str(label), min_size=min_size)
        return load_image(image["path"], name, min_size=min_size)
    if isinstance(image, (str, os.PathLike)):
        path = Path(image)
        if not path.is_file():
            raise ImageLoadError(f"{path}: no such image file")
        return load_image_file(path, str(path), min_size=min_size)
    raise ImageLoadError(f"{name or 'input'}: unsupported image type {type(image).__name__}")


def load_image_file(source: Any, label: str, min_size: int | None = None) -> Image.Image:
    """Open and fully decode an image file (so truncated files fail here, not later), upright by its EXIF orientation.

    `min_size`: let the JPEG decoder downscale by 1/2, 1/4 or 1/8 in the DCT domain while the shorter side stays
    >= `min_size` (several times faster for large photos; pixels differ slightly from a full decode + resize).
    """
    previous = ImageFile.LOAD_TRUNCATED_IMAGES
    ImageFile.LOAD_TRUNCATED_IMAGES = False  # a truncated JPEG is an error, not a grey half-image
    try:
        with Image.open(source) as opened:
            if min_size is not None and opened.format == "JPEG":
                width, height = opened.size
                shorter = max(1, min(width, height))
                # draft() keeps both sides >= the requested size: ask for the size whose shorter side is min_size.
                opened.draft("RGB", (-(-width * min_size // shorter), -(-height * min_size // shorter)))
            opened.load()
            if opened.getexif().get(ExifTags.Base.Orientation, 1) != 1:  # exif_transpose copies even when upright
                return _to_rgb(ImageOps.exif_transpose(opened))
            return _to_rgb(opened)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise ImageLoadError(f"{label}: cannot read image ({error})") from error
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = previous


def load_images(images: ImageInput | Sequence[ImageInput]) -> list[Image.Image]:
    """`load_image` over one input or a sequence of inputs."""
    if isinstance(images, (str, os.PathLike, Image.Image, dict)) or (
        isinstance(images, np.ndarray) and images.ndim <= 3
    ):
        images = [images]
    return [load_image(image, name=f"image #{index}") for index, image in enumerate(images)]
