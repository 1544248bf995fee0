"""Reading source images as encoded bytes for parquet, with missing/corrupt files reported instead of raised."""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import ExifTags, Image, ImageOps

from ovmlc.core.images import ImageLoadError, load_image

VERIFY_MODES = ("full", "header")
# apply: store the pixels upright (as load_image and datasets show them); raw: the pixels as encoded, never turned.
# Either way only images with an EXIF orientation are re-encoded (without the tag), so every reader shows the same.
EXIF_ORIENTATION_MODES = ("apply", "raw")


@dataclass
class SkippedImage(Exception):
    """An image that is not written: `reason` is "missing" or "corrupt", `where` names the file."""

    reason: str
    where: str
    detail: str = ""

    def __str__(self) -> str:
        return f"{self.where}: {self.reason}" + (f" ({self.detail})" if self.detail else "")


def _verify(data: bytes, where: str, mode: str) -> None:
    if mode == "full":
        # Full decode: truncated JPEGs only fail here. load_image names the file in its error.
        try:
            load_image({"bytes": data, "path": where})
        except ImageLoadError as error:
            raise SkippedImage("corrupt", where, str(error).removeprefix(f"{where}: ")) from error
        except Exception as error:  # noqa: BLE001 - e.g. PIL's DecompressionBombError: report, never crash halfway
            raise SkippedImage("corrupt", where, f"{type(error).__name__}: {error}") from error
        return
    try:
        with Image.open(io.BytesIO(data)) as opened:
            opened.verify()
    except Exception as error:  # noqa: BLE001 - any header failure means the file is not a readable image
        raise SkippedImage("corrupt", where, f"{type(error).__name__}: {error}") from error


def _without_orientation(data: bytes, exif_orientation: str) -> bytes:
    """`data` itself if it has no EXIF orientation tag; else re-encoded without it, the pixels turned upright
    (`apply`) or left as encoded (`raw`). JPEG stays JPEG (quality 95, other EXIF kept), other formats become PNG."""
    try:
        with Image.open(io.BytesIO(data)) as opened:
            exif = opened.getexif()
            if exif.get(ExifTags.Base.Orientation, 1) == 1:
                return data
            source_format = opened.format
            opened.load()
            image = ImageOps.exif_transpose(opened) if exif_orientation == "apply" else opened.copy()
    except Exception:  # noqa: BLE001 - unreadable: verification reports it (or, verify="header", the reader)
        return data
    del exif[ExifTags.Base.Orientation]
    image.info.pop("exif", None)
    buffer = io.BytesIO()
    if source_format == "JPEG":
        image.save(buffer, format="JPEG", quality=95, exif=exif.tobytes())
    else:
        image.save(buffer, format="PNG")
    return buffer.getvalue()


def encode_image(image: Any, where: str, verify: str = "full", exif_orientation: str = "apply") -> dict[str, Any]:
    """`{"bytes", "path"}` storage of one image for `datasets.Image()`; raises `SkippedImage` if unusable.

    `image` is a file path (its original encoded bytes are kept, not re-encoded), encoded bytes, a
    `{"bytes", "path"}` dict, a PIL image (encoded as PNG), or a zero-argument callable returning one of these
    (so a converter can defer reading a large source until the image is written). `exif_orientation`: see
    `EXIF_ORIENTATION_MODES` (images carrying an orientation tag are the only ones re-encoded).
    """
    if verify not in VERIFY_MODES:
        raise ValueError(f"verify must be one of {VERIFY_MODES}, got {verify!r}")
    if exif_orientation not in EXIF_ORIENTATION_MODES:
        raise ValueError(f"exif_orientation must be one of {EXIF_ORIENTATION_MODES}, got {exif_orientation!r}")
    if callable(image) and not isinstance(image, Image.Image):
        image = image()
    if isinstance(image, Image.Image):
        if image.getexif().get(ExifTags.Base.Orientation, 1) != 1:
            image = ImageOps.exif_transpose(image) if exif_orientation == "apply" else image.copy()
            image.info.pop("exif", None)
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        return {"bytes": buffer.getvalue(), "path": Path(where).name}
    if isinstance(image, dict):
        if image.get("bytes") is not None:
            data = image["bytes"]
            _verify(data, where, verify)
            data = _without_orientation(data, exif_orientation)
            return {"bytes": data, "path": image.get("path") or Path(where).name}
        if image.get("path"):
            return encode_image(image["path"], where, verify, exif_orientation)
        raise SkippedImage("missing", where, "no bytes and no path")
    if isinstance(image, (bytes, bytearray)):
        _verify(bytes(image), where, verify)
        return {"bytes": _without_orientation(bytes(image), exif_orientation), "path": Path(where).name}
    if isinstance(image, (str, os.PathLike)):
        path = Path(image)
        if not path.is_file():
            raise SkippedImage("missing", where)
        try:
            data = path.read_bytes()
        except OSError as error:
            raise SkippedImage("missing", where, str(error)) from error
        if not data:
            raise SkippedImage("corrupt", where, "empty file")
        _verify(data, where, verify)
        return {"bytes": _without_orientation(data, exif_orientation), "path": path.name}
    raise SkippedImage("corrupt", where, f"unsupported image value of type {type(image).__name__}")
