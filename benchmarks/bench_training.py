"""Epoch time of the training engine with and without the feature cache, side by side.

QKS (frozen CLIP image tower) is trained for two epochs through `ovmlc.train` on a generated canonical dataset, once
from pixels (`training.feature_cache: false`) and once from cached image features (`auto`), for two randomly
initialised backbones (no download): a tiny CLIP and a ViT-B/16-shaped CLIP (224 px, 12 x 768 vision layers), the
latter on a few dozen images only. Prints the mean epoch time of each and the speed-up.

    python benchmarks/bench_training.py                # both backbones
    python benchmarks/bench_training.py --b16-images 48 --tiny-images 512

Measured on the 2-core development machine, quiet (load average ~1): ViT-B/16 13.6 s vs 0.18 s per epoch of 32
images with 1 thread (77x), 7.6 s vs 0.13 s with `--threads 2` (58x); tiny 2.8x (its image tower costs little);
building the B/16 cache (48 images) took 11-23 s once. Under heavy load from other jobs, 2 threads fell to ~9x
(threads wait on each other), hence the 1-thread default.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))  # the offline tiny tokenizer/processor builders live with the test helpers


def make_dataset(directory: Path, num_train: int, num_eval: int, image_size: int, seed: int = 0) -> Path:
    """Coloured blocks on noise: 4 seen + 2 unseen labels (full annotation)."""
    from datasets import ClassLabel, Dataset, DatasetDict, Features, Image, List, Value
    from PIL import Image as PILImage

    from ovmlc.data import save_canonical

    colours = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 50, 220), "yellow": (230, 220, 40)}
    colours.update({"white": (245, 245, 245), "black": (10, 10, 10)})
    names = list(colours)
    rng = np.random.default_rng(seed)
    features = Features({"image": Image(), "labels": List(ClassLabel(names=names)), "image_id": Value("string")})
    splits = {}
    for split, count in (("train", num_train), ("validation", num_eval), ("test", num_eval)):
        images, labels = [], []
        for _ in range(count):
            pixels = rng.integers(90, 160, (image_size, image_size, 3), dtype=np.uint8)
            present = sorted(rng.choice(len(names), size=int(rng.integers(1, 3)), replace=False).tolist())
            block = image_size // 2 - 2
            for slot, index in enumerate(present):
                pixels[1 + slot * (block + 2) : 1 + slot * (block + 2) + block, 2:-2] = colours[names[index]]
            images.append(PILImage.fromarray(pixels))
            labels.append([names[index] for index in present])
        ids = [f"{split}-{index}" for index in range(count)]
        splits[split] = Dataset.from_dict({"image": images, "labels": labels, "image_id": ids}, features=features)
    return save_canonical(
        DatasetDict(splits),
        directory,
        source="bench-colours",
        converter_version="1",
        seen_labels=names[:4],
        unseen_labels=names[4:],
        annotation="full",
        description="Benchmark data: coloured blocks on noise.",
    )


def make_backbone(directory: Path, shape: str) -> Path:
    """A random CLIP in Hub layout: `tiny` (32 px, 2 x 32) or `b16` (ViT-B/16 shapes: 224 px, 12 x 768 / 12 x 512)."""
    import torch
    from helpers import tiny_image_processor, tiny_tokenizer
    from transformers import CLIPConfig, CLIPModel

    tokenizer = tiny_tokenizer()
    special = {
        "vocab_size": len(tokenizer),
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }
    if shape == "tiny":
        image_size = 32
        text = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4)
        vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, patch_size=8)
        projection = 16
    else:
        image_size = 224
        text = dict(hidden_size=512, intermediate_size=2048, num_hidden_layers=12, num_attention_heads=8)
        vision = dict(
            hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12, patch_size=16
        )
        projection = 512
    torch.manual_seed(0)
    config = CLIPConfig(
        text_config={**text, **special, "max_position_embeddings": 77},
        vision_config={**vision, "image_size": image_size},
        projection_dim=projection,
    )
    CLIPModel(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    tiny_image_processor(image_size).save_pretrained(directory)
    return directory


# QKS head per backbone: one query layer with 4 queries; on B/16 a 256-wide query transformer (the cache removes the
# frozen tower's cost, so what is left per step is this head: a wider/deeper head gives a smaller speed-up).
QKS_HEADS = {
    "tiny": {"num_queries": 4, "num_query_layers": 1},
    "b16": {"num_queries": 4, "num_query_layers": 1, "query_hidden_size": 256, "query_num_heads": 4},
}


def run(
    recipe_dir: Path, dataset: Path, backbone: Path, output: Path, cached: bool, batch_size: int, head: dict
) -> dict:
    import yaml

    from ovmlc.training.trainer import train

    recipe = {
        "method": "qks",
        "method_config": {**head, "templates": "single"},
        "backbone": str(backbone),
        "dataset": {"path": str(dataset)},
        "protocol": "synthetic",
        "optimizer": {"name": "adamw", "lr": 1.0e-4},
        "training": {
            "epochs": 2,
            "batch_size": batch_size,
            "eval_batch_size": batch_size,
            "eval_every": None,
            "checkpoint_every": None,
            "feature_cache": "auto" if cached else False,
        },
        "output_dir": str(output),
    }
    path = recipe_dir / f"{output.name}.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    train(path)
    return json.loads((output / "ovmlc_trainer_state.json").read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny-images", type=int, default=256, help="training images for the tiny backbone")
    parser.add_argument("--b16-images", type=int, default=32, help="training images for the ViT-B/16 backbone")
    parser.add_argument("--skip-b16", action="store_true", help="only the tiny backbone")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads for both runs (default 1: on a shared, busy CPU, extra threads mostly wait on each "
        "other and blur the comparison; 0 = torch's default)",
    )
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch threads: {torch.get_num_threads()}, load average: {os.getloadavg()[0]:.2f}")
    rows = []
    with tempfile.TemporaryDirectory(prefix="ovmlc-bench-training-") as scratch:
        scratch = Path(scratch)
        os.environ["OVMLC_CACHE"] = str(scratch / "cache")
        shapes = [("tiny", args.tiny_images, 32, 32)] + ([] if args.skip_b16 else [("b16", args.b16_images, 224, 8)])
        for shape, num_images, image_size, batch_size in shapes:
            dataset = make_dataset(scratch / f"data-{shape}", num_images, 8, image_size)
            backbone = make_backbone(scratch / f"clip-{shape}", shape)
            timings = {}
            for cached in (False, True):
                started = time.perf_counter()
                name = f"{shape}-{'cached' if cached else 'pixels'}"
                state = run(scratch, dataset, backbone, scratch / name, cached, batch_size, QKS_HEADS[shape])
                timings[cached] = {
                    "epoch": float(np.mean(state["epoch_seconds"])),
                    "build": state["feature_cache_build_seconds"],
                    "run": time.perf_counter() - started,
                }
            rows.append((shape, num_images, timings))

    print()
    header = f"{'backbone':<10} {'images':>6} {'epoch (pixels)':>15} {'epoch (cached)':>15} {'speed-up':>9}"
    print(f"{header} {'cache build':>12}")
    for shape, num_images, timings in rows:
        pixels, cached = timings[False], timings[True]
        ratio = pixels["epoch"] / cached["epoch"]
        print(
            f"{shape:<10} {num_images:>6} {pixels['epoch']:>14.3f}s {cached['epoch']:>14.3f}s {ratio:>8.1f}x "
            f"{cached['build']:>11.2f}s"
        )
    print("\nepoch = mean over 2 epochs of the training loop (no validation, no checkpoints); cache build is one-off.")
    print(f"QKS heads: {QKS_HEADS}")


if __name__ == "__main__":
    main()
