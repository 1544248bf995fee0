"""Inference throughput: ovmlc `predict` with a cached vocabulary vs the bare image encoder vs the stock pipeline.

No download: a ViT-B/16-shaped CLIP with random weights (or `--tiny`) and a byte-level tokenizer built in code.
Measured side by side in one run, fp32 and bf16; prints images/s and the ratios

    b/a = predict (cached vocabulary) / bare image encoder      (target >= 0.9 at 7,586 labels)
    b/c = predict (cached vocabulary) / stock zero-shot pipeline (target >= 50 at 1,000 labels)

Note: the byte-level tokenizer makes prompts ~2x longer than CLIP's BPE, which slows the stock pipeline (it
re-encodes every label for every image) and label-cache filling, not `predict` with a filled cache.

    python benchmarks/bench_inference.py [--tiny] [--images 16] [--pipeline-images 2]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402
from transformers import CLIPConfig, CLIPImageProcessorPil, CLIPModel, pipeline  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from helpers import tiny_tokenizer  # noqa: E402

import ovmlc  # noqa: E402

VOCAB_SIZES = (81, 1000, 1006, 7586)
WORDS = "red green blue small large old young wooden metal striped bright dark".split()
NOUNS = "cat dog car tree boat house bird lamp road chair sky flower horse train cloud".split()


def label_names(count: int) -> list[str]:
    names = [f"{a} {b}" for a in WORDS for b in NOUNS]
    names += [f"{a} {b} {c}" for a in WORDS for b in WORDS if a != b for c in NOUNS]
    names += [f"{a} {b} {c} {d}" for a in WORDS[:6] for b in WORDS[6:] for c in NOUNS for d in NOUNS if c != d]
    if count > len(names):
        raise ValueError(f"only {len(names)} distinct label names available")
    return names[:count]


def build_backbone(directory: Path, tiny: bool) -> None:
    tokenizer = tiny_tokenizer()
    text = dict(
        vocab_size=len(tokenizer),
        max_position_embeddings=77,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    if tiny:
        text.update(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4)
        vision = dict(
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            image_size=64,
            patch_size=16,
        )
        config = CLIPConfig(text_config=text, vision_config=vision, projection_dim=64)
    else:  # ViT-B/16: vision 768 x 12 layers at 224 px, patch 16; text 512 x 12 layers; projection 512
        config = CLIPConfig(text_config=text, vision_config=dict(patch_size=16), projection_dim=512)
    torch.manual_seed(0)
    CLIPModel(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    size = config.vision_config.image_size
    CLIPImageProcessorPil(size={"shortest_edge": size}, crop_size={"height": size, "width": size}).save_pretrained(
        directory
    )


def timed(function, repeats: int = 1) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="a tiny CLIP instead of ViT-B/16 (seconds)")
    parser.add_argument("--images", type=int, default=16, help="images for the encoder / predict timings")
    parser.add_argument("--pipeline-images", type=int, default=2, help="images for the (slow) stock pipeline")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"load average: {os.getloadavg()[0]:.2f} (timings are noisy above ~0.5 on 2 cores)")

    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 255, (480, 640, 3), dtype=np.uint8)) for _ in range(args.images)]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        backbone = Path(tmp) / "clip"
        build_backbone(backbone, args.tiny)
        for dtype in (torch.float32, torch.bfloat16):
            dtype_name = str(dtype).replace("torch.", "")
            model = ovmlc.CLIPZeroShotModel.from_clip(str(backbone), dtype=dtype)
            model._label_cache = ovmlc.core.label_cache.LabelEmbeddingCache()  # in memory: nothing from earlier runs
            pixel_values = model.preprocess(images)

            def encoder(model=model, pixel_values=pixel_values):
                with torch.inference_mode():
                    for start in range(0, len(images), args.batch_size):
                        model.clip.get_image_features(pixel_values=pixel_values[start : start + args.batch_size])

            encoder()  # warm-up
            encoder_ips = len(images) / timed(encoder, repeats=2)
            rows.append((dtype_name, "a: bare image encoder", "-", encoder_ips))
            for size in VOCAB_SIZES:
                names = label_names(size)
                fill = timed(lambda names=names, model=model: model.encode_labels(names))  # fills the label cache once
                predict_ips = len(images) / timed(
                    lambda names=names, model=model: model.predict(images, names, top_k=10, batch_size=args.batch_size),
                    repeats=2,
                )
                rows.append((dtype_name, f"b: predict, cached vocabulary (cache fill {fill:.1f} s)", size, predict_ips))

            stock = pipeline("zero-shot-image-classification", model=str(backbone), dtype=dtype)
            names = label_names(1000)
            few = images[: args.pipeline_images]
            stock_ips = len(few) / timed(lambda names=names, few=few, stock=stock: stock(few, candidate_labels=names))
            rows.append((dtype_name, "c: stock zero-shot-image-classification pipeline", 1000, stock_ips))

    print(f"\n{'B/16-shaped' if not args.tiny else 'tiny'} CLIP, random weights, {args.threads} threads\n")
    print("| dtype | path | labels | images/s |\n|---|---|---|---|")
    for dtype_name, path, size, ips in rows:
        print(f"| {dtype_name} | {path} | {size} | {ips:.3f} |")
    print()
    for dtype_name in ("float32", "bfloat16"):
        by_key = {(path[:1], size): ips for d, path, size, ips in rows if d == dtype_name}
        encoder_ips = by_key[("a", "-")]
        print(
            f"{dtype_name}: b/a at 7,586 labels = {by_key[('b', 7586)] / encoder_ips:.2f} (target >= 0.9); "
            f"b/c at 1,000 labels = {by_key[('b', 1000)] / by_key[('c', 1000)]:.0f} (target >= 50)"
        )


if __name__ == "__main__":
    main()
