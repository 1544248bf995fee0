"""Registry of dataset converters: source name -> `Converter` (used by `ovmlc data prepare <source>`).

Add a source with `register_converter(MyConverter())` (a `Converter` subclass with `name`, `help`, `version`,
`add_arguments` and `plan`). The synthetic worlds (`ovmlc/data/synthetic.py`,
`synthetic_single.py`, `shapes_clutter.py`) are picked up automatically when they define their converter class.
"""

from __future__ import annotations

import importlib

from ovmlc.data.converters.base import Converter, SourceFormatError
from ovmlc.data.converters.class_folders import ClassFoldersConverter
from ovmlc.data.converters.coco import CocoConverter
from ovmlc.data.converters.hub import HubConverter
from ovmlc.data.converters.nus_wide import NusWideConverter
from ovmlc.data.converters.openimages import OpenImagesConverter
from ovmlc.data.converters.tables import TableConverter
from ovmlc.data.converters.voc import Voc2007Converter

CONVERTERS: dict[str, Converter] = {}


def register_converter(converter: Converter, name: str | None = None, replace: bool = False) -> Converter:
    """Make `converter` available as `ovmlc data prepare <name>` (default: `converter.name`)."""
    name = name or converter.name
    if not name:
        raise ValueError(f"{type(converter).__name__} has no name")
    if name in CONVERTERS and not replace:
        raise ValueError(f"a converter named {name!r} is already registered ({type(CONVERTERS[name]).__name__})")
    CONVERTERS[name] = converter
    return converter


def get_converter(name: str) -> Converter:
    try:
        return CONVERTERS[name]
    except KeyError:
        raise KeyError(f"unknown data source {name!r}; available: {sorted(CONVERTERS)}") from None


for _converter in (
    NusWideConverter(),
    CocoConverter(),
    Voc2007Converter(),
    OpenImagesConverter(),
    TableConverter("folder", "a folder of your images with metadata.csv/jsonl (path, labels), optionally per split"),
    TableConverter("csv", "your images listed in a CSV table (path, labels[, negative_labels, split, image_id])"),
    TableConverter("jsonl", "your images listed in a JSON-lines table (path, labels[, negative_labels, split])"),
    HubConverter("hub", "any Hub dataset id with an image column and a label column"),
    HubConverter("parquet", "a local parquet dataset (folder or file) with an image column and a label column"),
    ClassFoldersConverter(),
):
    register_converter(_converter)


def _register_synthetic() -> None:
    # The synthetic worlds live in their own modules (issues 6, 18); register their converters when they provide them.
    for module_name, class_name, source in (
        ("ovmlc.data.synthetic", "SyntheticConverter", "synthetic"),
        ("ovmlc.data.synthetic_single", "SyntheticSingleObjectConverter", "synthetic-single"),
        ("ovmlc.data.shapes_clutter", "ShapesClutterConverter", "shapes-clutter"),
    ):
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as error:
            if error.name == module_name:
                continue
            raise
        converter_class = getattr(module, class_name, None)
        if converter_class is not None and source not in CONVERTERS:
            register_converter(converter_class())


_register_synthetic()

__all__ = ["CONVERTERS", "Converter", "SourceFormatError", "get_converter", "register_converter"]
