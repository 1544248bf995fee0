"""Inference throughput: ovmlc `predict` with a cached vocabulary vs the bare image encoder vs the stock pipeline;
end-to-end tagging of a folder of JPEGs; label-cache fill speed.

No download: a ViT-B/16-shaped CLIP with random weights (or `--tiny`) and a byte-level tokenizer built in code;
`--backbone siglip`: a SigLIP-B/16-shaped model instead (vision 768 x 12 at 224 px, patch 16; text 768 x 12, 64
positions; random weights, a character-level Gemma tokenizer built in code), rows a-c (the stock pipeline pads to 64
tokens and applies a sigmoid for SigLIP) and d-e; the cache-fill rows compare CLIP's shared-prefix path and are skipped.
Measured side by side in one run, fp32 and bf16; prints images/s and the ratios

    b/a = predict (cached vocabulary) / bare image encoder      (target >= 0.9 at 7,586 labels)
    b/c = predict (cached vocabulary) / stock zero-shot pipeline (target >= 50 at 1,000 labels)
    d/e = `ovmlc predict` end to end (a folder of JPEGs of 300-1200 px -> JSONL, 7,586 labels, decoding in DataLoader
          workers) / the bare image side (`encode_image_features`, same precision) on the same images pre-decoded
          (target >= 0.9); with the peak RSS of the run
    fill = label-cache fill, plain sorted batches / template prefix encoded once (target >= 1.5, same embeddings)

bf16 here means fp32 weights with the image side (and the text tower) under bf16 autocast, as `--dtype bfloat16` runs;
rows a-c load the weights in bf16. bf16 is only fast on CPUs with AMX / AVX512-BF16 (emulated, it is slower than fp32).

Note: the byte-level tokenizer makes prompts ~2x longer than CLIP's BPE, which slows the stock pipeline (it
re-encodes every label for every image) and label-cache filling, not `predict` with a filled cache.

    python benchmarks/bench_inference.py [--tiny] [--images 16] [--pipeline-images 2] [--jpegs 200] [--fill-labels 7586]
"""

from __future__ import annotations

import argparse
import os
import resource
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
from helpers import tiny_siglip_tokenizer, tiny_tokenizer  # noqa: E402

import ovmlc  # noqa: E402
from ovmlc.core.backbones import encode_prompts_plain, encode_prompts_sharing_prefix  # noqa: E402
from ovmlc.core.scoring import Scorer  # noqa: E402
from ovmlc.inference.tagging import discover_image_files, file_sources, tag_to_file  # noqa: E402

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


def build_siglip_backbone(directory: Path, tiny: bool) -> None:
    """A SigLIP(-2 FixRes)-shaped checkpoint folder: `SiglipModel` with random weights, Gemma tokenizer, processor."""
    from transformers import SiglipConfig, SiglipImageProcessorPil, SiglipModel

    tokenizer = tiny_siglip_tokenizer()
    ids = dict(pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id, bos_token_id=None)
    if tiny:
        width = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4)
        vision = dict(width, image_size=64, patch_size=16)
    else:  # SigLIP(2)-B/16: both towers 768 x 12 layers, 12 heads; 224 px, patch 16; 64 text positions
        width = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12)
        vision = dict(width, image_size=224, patch_size=16)
    text = dict(width, vocab_size=len(tokenizer), max_position_embeddings=64, **ids)
    torch.manual_seed(0)
    SiglipModel(SiglipConfig(text_config=text, vision_config=vision)).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    size = vision["image_size"]
    SiglipImageProcessorPil(size={"height": size, "width": size}).save_pretrained(directory)


def build_backbone(directory: Path, tiny: bool, family: str = "clip") -> None:
    if family == "siglip":
        build_siglip_backbone(directory, tiny)
        return
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


def write_jpegs(folder: Path, count: int, low: int, high: int, seed: int = 0) -> None:
    """Photo-like JPEGs (smooth colour fields + grain) with both sides drawn from [low, high] px."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for index in range(count):
        width, height = (int(side) for side in rng.integers(low, high + 1, size=2))
        coarse = Image.fromarray(rng.integers(0, 255, (6, 8, 3), dtype=np.uint8)).resize((width, height), Image.BICUBIC)
        grain = rng.normal(0, 12, (height, width, 3))
        pixels = np.clip(np.asarray(coarse, dtype=np.float32) + grain, 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(folder / f"{index:04d}.jpg", quality=90)


def peak_rss_mib() -> tuple[float, float]:
    """Peak resident memory of this process and of its largest finished child (DataLoader workers), MiB."""
    return (
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
    )


def end_to_end_rows(backbone: Path, folder: Path, names: list[str], args, tmp: Path, dtypes, cache) -> list[tuple]:
    """(e) the image side alone on pre-decoded tensors vs (d) `ovmlc predict` from JPEG files, per precision."""
    rows = []
    paths = discover_image_files([folder])
    model = ovmlc.CLIPZeroShotModel.from_clip(str(backbone), dtype=torch.float32)
    model._label_cache = cache  # the fp32 rows above filled it (same weights, same fingerprint)
    images = [ovmlc.load_image(path) for path in paths]
    pixel_values = model.preprocess(images)  # [N, 3, H, W], decoded and resized once, outside the timing
    with torch.no_grad():
        label_embeds = model.encode_labels(names)  # cached vocabulary, as in a long tagging run
    for dtype in dtypes:
        dtype_name = str(dtype).replace("torch.", "")

        def image_side(dtype=dtype):
            with torch.no_grad(), torch.autocast("cpu", dtype=dtype, enabled=dtype != torch.float32):
                for start in range(0, len(paths), args.batch_size):
                    model.encode_image_features(pixel_values[start : start + args.batch_size])

        Scorer(model, image_dtype=dtype).score_batch(pixel_values[:2], label_embeds)  # warm-up
        encoder_ips = len(paths) / timed(image_side)
        rows.append((dtype_name, "e: bare image side on pre-decoded tensors", "-", encoder_ips))
        for fast in (False, True):
            output = tmp / f"tags-{dtype_name}-{fast}.jsonl"
            summary = tag_to_file(
                model,
                file_sources(paths),
                names,
                output,
                top_k=10,
                batch_size=args.batch_size,
                num_workers=args.workers,
                image_dtype=dtype,
                fast_decode=fast,
                progress=False,
            )
            label = "d: ovmlc predict, JPEG folder -> JSONL" + (" (--fast-decode)" if fast else "")
            rows.append((dtype_name, label, len(names), summary.images_per_second))
    return rows


def fill_rows(backbone: Path, names: list[str], dtypes) -> list[tuple]:
    """Label-cache fill: the plain path (sorted by length, padded per batch) vs the template prefix encoded once."""
    backbone_model = ovmlc.load_clip_backbone(str(backbone))
    clip, tokenizer = backbone_model.model, backbone_model.tokenizer
    prompts = [f"a photo of a {name}." for name in names]
    rows = []
    for dtype in dtypes:
        results = {}
        for name, encode in (("plain", encode_prompts_plain), ("shared prefix", encode_prompts_sharing_prefix)):
            with torch.autocast("cpu", dtype=dtype, enabled=dtype != torch.float32):
                start = time.perf_counter()
                embeddings = encode(clip, tokenizer, prompts)
                results[name] = (time.perf_counter() - start, embeddings)
        difference = float((results["plain"][1] - results["shared prefix"][1]).abs().max())
        dtype_name = str(dtype).replace("torch.", "")
        rows.append((dtype_name, len(names), results["plain"][0], results["shared prefix"][0], difference))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="a tiny CLIP instead of ViT-B/16 (seconds)")
    parser.add_argument("--backbone", choices=["clip", "siglip"], default="clip", help="CLIP- or SigLIP-B/16-shaped")
    parser.add_argument("--images", type=int, default=16, help="images for the encoder / predict timings")
    parser.add_argument("--pipeline-images", type=int, default=2, help="images for the (slow) stock pipeline")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--jpegs", type=int, default=200, help="JPEG files for the end-to-end rows (d, e)")
    parser.add_argument("--jpeg-sizes", type=int, nargs=2, default=(300, 1200), metavar=("MIN", "MAX"))
    parser.add_argument("--workers", type=int, default=1, help="DataLoader workers for the end-to-end rows")
    parser.add_argument("--e2e-labels", type=int, default=7586, help="vocabulary of the end-to-end rows")
    parser.add_argument("--fill-labels", type=int, default=1000, help="labels for the cache-fill rows (7586: slow)")
    parser.add_argument(
        "--vocab-sizes",
        type=int,
        nargs="+",
        default=list(VOCAB_SIZES),
        help="vocabularies of the predict rows (b); the ratios need 1000 and 7586",
    )
    parser.add_argument(
        "--sections",
        nargs="+",
        default=["predict", "e2e", "fill"],
        choices=["predict", "e2e", "fill"],
        help="predict: rows a-c; e2e: rows d-e; fill: label-cache fill (default: all)",
    )
    parser.add_argument(
        "--dtypes",
        nargs="+",
        default=["float32", "bfloat16"],
        choices=["float32", "bfloat16"],
        help="precisions to measure (bf16 only makes sense on CPUs with AMX / AVX512-BF16)",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    dtypes = [getattr(torch, name) for name in args.dtypes]
    if args.backbone == "siglip" and "fill" in args.sections:
        args.sections = [section for section in args.sections if section != "fill"]
        print("--backbone siglip: no cache-fill rows (SigLIP's bidirectional text tower has no shared-prefix path)")
    print(f"load average: {os.getloadavg()[0]:.2f} (timings are noisy above ~0.5 on 2 cores)")

    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 255, (480, 640, 3), dtype=np.uint8)) for _ in range(args.images)]
    rows = []
    cache = ovmlc.core.label_cache.LabelEmbeddingCache()  # in memory and shared: each table is filled once per run
    with tempfile.TemporaryDirectory() as tmp:
        backbone = Path(tmp) / "clip"
        build_backbone(backbone, args.tiny, args.backbone)
        for dtype in dtypes if "predict" in args.sections else ():
            dtype_name = str(dtype).replace("torch.", "")
            model = ovmlc.CLIPZeroShotModel.from_clip(str(backbone), dtype=dtype)
            model._label_cache = cache
            pixel_values = model.preprocess(images)

            def encoder(model=model, pixel_values=pixel_values):
                with torch.inference_mode():
                    for start in range(0, len(images), args.batch_size):
                        model.clip.get_image_features(pixel_values=pixel_values[start : start + args.batch_size])

            encoder()  # warm-up
            encoder_ips = len(images) / timed(encoder, repeats=2)
            rows.append((dtype_name, "a: bare image encoder", "-", encoder_ips))
            for size in args.vocab_sizes:
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

        # End to end and cache fill last, in a fresh model, so the RSS reported is the tagging run's.
        if "e2e" in args.sections:
            write_jpegs(Path(tmp) / "jpegs", args.jpegs, *args.jpeg_sizes)
            e2e_names = label_names(args.e2e_labels)
            rows += end_to_end_rows(backbone, Path(tmp) / "jpegs", e2e_names, args, Path(tmp), dtypes, cache)
        rss_main, rss_worker = peak_rss_mib()
        fills = fill_rows(backbone, label_names(args.fill_labels), dtypes) if "fill" in args.sections else []

    name = {"clip": "CLIP", "siglip": "SigLIP"}[args.backbone]
    print(f"\n{'B/16-shaped' if not args.tiny else 'tiny'} {name}, random weights, {args.threads} threads\n")
    print("| dtype | path | labels | images/s |\n|---|---|---|---|")
    for dtype_name, path, size, ips in rows:
        print(f"| {dtype_name} | {path} | {size} | {ips:.3f} |")
    print()
    for dtype_name in args.dtypes if "predict" in args.sections else ():
        by_key = {(path[:1], size): ips for d, path, size, ips in rows if d == dtype_name}
        encoder_ips, ratios = by_key[("a", "-")], []
        if ("b", 7586) in by_key:
            ratios.append(f"b/a at 7,586 labels = {by_key[('b', 7586)] / encoder_ips:.2f} (target >= 0.9)")
        if ("b", 1000) in by_key:
            ratios.append(f"b/c at 1,000 labels = {by_key[('b', 1000)] / by_key[('c', 1000)]:.0f} (target >= 50)")
        print(f"{dtype_name}: " + "; ".join(ratios or ["(no ratio: --vocab-sizes has neither 1000 nor 7586)"]))
    print()
    for dtype_name in args.dtypes if "e2e" in args.sections else ():
        by_path = {path: ips for d, path, size, ips in rows if d == dtype_name}
        image_side = by_path["e: bare image side on pre-decoded tensors"]
        plain = by_path["d: ovmlc predict, JPEG folder -> JSONL"]
        fast = by_path["d: ovmlc predict, JPEG folder -> JSONL (--fast-decode)"]
        print(
            f"{dtype_name}: d/e at {args.e2e_labels:,} labels = {plain / image_side:.2f} "
            f"(--fast-decode {fast / image_side:.2f}; target >= 0.9; {args.jpegs} JPEGs, {args.workers} worker(s))"
        )
    print(f"peak RSS: {rss_main:.0f} MiB (this process, all rows), {rss_worker:.0f} MiB (largest decoding worker)")
    if fills:
        print("\n| dtype | labels | cache fill, plain | shared prefix | speed-up | max abs difference |")
        print("|---|---|---|---|---|---|")
    for dtype_name, count, plain, shared, difference in fills:
        print(f"| {dtype_name} | {count} | {plain:.2f} s | {shared:.2f} s | {plain / shared:.2f}x | {difference:.1e} |")


if __name__ == "__main__":
    main()
