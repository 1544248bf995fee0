"""Example images of the offline worlds for the Space and the README: each image raw (64 px) and upscaled for
display, with an `examples.json` of its labels (read by `ovmlc.space.demo.load_examples`)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
from PIL import Image


def write_world_examples(
    out_dir: str | os.PathLike,
    world,
    sampler,
    caption_rng: np.random.Generator,
    labelset: dict,
    source: str,
    upscale: int = 4,
) -> list[dict]:
    """Write every image of a generated `world` (either world's: `image(i)`, `scenes.labels(i)`) as
    `example-<i>-64px.png` (raw) and `example-<i>.png` (x`upscale`, nearest neighbour), and `examples.json` with its
    labels, the unseen ones among them and a caption naming them all (`sampler.full`); `source` says how the images
    were made. Returns the `examples.json` entries."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    unseen = set(labelset["unseen"])
    entries = []
    for i in range(len(world)):
        raw_name, large_name = f"example-{i}-64px.png", f"example-{i}.png"
        image = world.image(i)
        image.save(out_dir / raw_name, optimize=True)
        large = image.resize((image.width * upscale, image.height * upscale), Image.NEAREST)
        large.save(out_dir / large_name, optimize=True)
        labels = world.scenes.labels(i)
        entries.append(
            {
                "file": large_name,
                "file_64px": raw_name,
                "labels": labels,
                "unseen_labels": [name for name in labels if name in unseen],
                "caption": sampler.full(world.scenes, i, caption_rng),
            }
        )
    meta = {
        "description": (
            f"{source} `file` is upscaled x{upscale} (nearest) for display; the shipped CLIP's image processor (BOX "
            f"resampling to its input size) maps it back exactly to `file_64px`. Labels are over the "
            f"`{labelset['name']}` label set."
        ),
        "label_set": labelset["name"],
        "examples": entries,
    }
    (out_dir / "examples.json").write_text(json.dumps(meta, indent=2) + "\n")
    return entries
