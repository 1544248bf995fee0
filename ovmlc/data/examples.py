"""Example images of the offline worlds for the Space and the README: each image raw (64 px) and upscaled for
display, with an `examples.json` of its labels (read by `ovmlc.space.demo.load_examples`)."""

from __future__ import annotations

import json
import os
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path

from PIL import Image


@dataclass(frozen=True)
class WorldExample:
    """One example image with the labels of its world vocabulary that it holds, and a caption naming them."""

    image: Image.Image  # the raw world image
    labels: list[str]
    caption: str


def write_examples_folder(
    out_dir: str | os.PathLike,
    examples: Sequence[WorldExample],
    label_set: str,
    unseen_labels: Collection[str],
    source: str,
    upscale: int = 4,
) -> list[dict]:
    """Write `example-<i>-64px.png` (raw), `example-<i>.png` (x`upscale`, nearest neighbour) and `examples.json`
    (`source` says how the images were made). Returns the `examples.json` entries."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    unseen = set(unseen_labels)
    entries = []
    for i, example in enumerate(examples):
        raw_name, large_name = f"example-{i}-64px.png", f"example-{i}.png"
        example.image.save(out_dir / raw_name, optimize=True)
        width, height = example.image.size
        example.image.resize((width * upscale, height * upscale), Image.NEAREST).save(
            out_dir / large_name, optimize=True
        )
        entries.append(
            {
                "file": large_name,
                "file_64px": raw_name,
                "labels": list(example.labels),
                "unseen_labels": [name for name in example.labels if name in unseen],
                "caption": example.caption,
            }
        )
    meta = {
        "description": (
            f"{source} `file` is upscaled x{upscale} (nearest) for display; the shipped CLIP's image processor (BOX "
            f"resampling to its input size) maps it back exactly to `file_64px`. Labels are over the `{label_set}` "
            "label set."
        ),
        "label_set": label_set,
        "examples": entries,
    }
    (out_dir / "examples.json").write_text(json.dumps(meta, indent=2) + "\n")
    return entries
