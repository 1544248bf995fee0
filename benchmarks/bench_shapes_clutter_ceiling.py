"""Where the shapes-clutter CLIP's zero-shot ceiling is (issue 18, docs/synthetic.md "Where the ceiling is").

On web-layout images with exactly one salient object (so "which shape is it" has one answer), top-1 among the world's
shapes (50):

1. zero-shot: the image embedding against the prompts "a photo of a {shape}.";
2. linear probe: a logistic regression on the frozen image embedding, fit on the training images;
3. supervised fine-tuning: the whole image side (vision tower + projection) trained end to end with cross-entropy on
   the shape, from the checkpoint (AdamW, warm-up then cosine), evaluated every `--eval-every` steps.

If (3) does not beat (1), the image tower at this object size and budget is the ceiling, not the text side or the
contrastive objective; a world change that does not lift (3) well above today's number cannot lift zero-shot. Each
row is also measured with the test images rendered in the tagging style (`--styles`). Images are generated in memory
(seeded; nothing is written). CPU minutes at the defaults: ~1 for (1)-(2), ~4 per style for (3).

    python benchmarks/bench_shapes_clutter_ceiling.py                     # the shipped `shapes-clutter` CLIP
    python benchmarks/bench_shapes_clutter_ceiling.py --backbone outputs/my-clip --steps 900
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from collections.abc import Sequence

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")


def single_salient_world(num_images: int, seed: int, style: str):
    """Web-layout images with one salient object: (world, mask of the kept images, target shape ids [n])."""
    from ovmlc.data import shapes_clutter

    world = shapes_clutter.generate_world(
        num_images, seed=seed, stream="test", config=shapes_clutter.world_config(layout="web", style=style),
        num_workers=1,
    )  # fmt: skip
    scenes = world.scenes
    keep = scenes.salient.sum(axis=1) == 1
    slot = scenes.salient.argmax(axis=1)  # [N]: the salient object's slot
    targets = scenes.shape_ids[np.arange(len(scenes)), slot].astype(np.int64)
    return world, keep, targets[keep]


def pixel_values(backbone, world, keep: np.ndarray, batch_size: int = 256):
    import torch

    indices = np.flatnonzero(keep)
    parts = []
    for start in range(0, len(indices), batch_size):
        images = [world.image(int(i)) for i in indices[start : start + batch_size]]
        parts.append(backbone.image_processor(images=images, return_tensors="pt")["pixel_values"])
    return torch.cat(parts)  # [n, 3, H, W]


def image_embeddings(backbone, pixels, batch_size: int = 256):
    import torch
    import torch.nn.functional as F

    family = backbone.family
    with torch.inference_mode():
        parts = [family.image_features(backbone.model, pixels[s : s + batch_size])["image_embeds"]
                 for s in range(0, len(pixels), batch_size)]  # fmt: skip
    return F.normalize(torch.cat(parts), dim=-1)  # [n, D]


def top1(predicted: np.ndarray, targets: np.ndarray) -> float:
    return 100 * float((predicted == targets).mean())


def fine_tune(backbone, train_pixels, train_targets, test_sets, steps, lr, batch_size, eval_every, num_shapes, log):
    """Cross-entropy on the shape through the whole image side, a fresh linear head; top-1 per test set and step."""
    import torch
    import torch.nn.functional as F

    torch.manual_seed(0)
    model, family = backbone.model, backbone.family
    modules = family.image_side_modules(model)
    head = torch.nn.Linear(family.embedding_dim(model), num_shapes)
    parameters = [p for module in modules for p in module.parameters()] + list(head.parameters())
    for parameter in parameters:
        parameter.requires_grad_(True)
    optimizer = torch.optim.AdamW(parameters, lr=lr, betas=(0.9, 0.98), weight_decay=0.1)
    warmup = max(1, steps // 20)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: min(1.0, (step + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * step / steps))
    )
    generator = torch.Generator().manual_seed(0)
    targets = torch.from_numpy(train_targets)

    def logits(pixels):
        return head(family.image_features(model, pixels)["image_embeds"])  # [B, num_shapes]

    curve = []
    for step in range(1, steps + 1):
        for module in modules:
            module.train()
        batch = torch.randint(0, len(train_pixels), (batch_size,), generator=generator)
        loss = F.cross_entropy(logits(train_pixels[batch]), targets[batch])
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(parameters, 1.0)
        optimizer.step()
        schedule.step()
        if step % eval_every == 0 or step == steps:
            for module in modules:
                module.eval()
            row = {"step": step, "loss": loss.item()}
            with torch.inference_mode():
                for name, (pixels, expected) in test_sets.items():
                    predicted = torch.cat([logits(pixels[s : s + 256]).argmax(-1) for s in range(0, len(pixels), 256)])
                    row[name] = top1(predicted.numpy(), expected)
            curve.append(row)
            log(
                f"fine-tuning step {step}: loss {row['loss']:.3f}, "
                + ", ".join(f"{name} top-1 {row[name]:.1f} %" for name in test_sets)
            )
    return curve


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backbone", default="shapes-clutter", help="a CLIP of the world (alias or folder)")
    parser.add_argument("--train-images", type=int, default=20000, help="generated; ~60 %% have one salient object")
    parser.add_argument("--test-images", type=int, default=2000)
    parser.add_argument("--styles", nargs="+", default=["web", "tagging"], choices=["web", "tagging"])
    parser.add_argument("--steps", type=int, default=450, help="fine-tuning steps (0: zero-shot and probe only)")
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--eval-every", type=int, default=150)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 on a shared 2-core machine)")
    args = parser.parse_args(argv)

    import torch
    from sklearn.linear_model import LogisticRegression

    from ovmlc.core.backbones import load_backbone
    from ovmlc.core.vocabulary import LabelVocabulary
    from ovmlc.data import shapes_clutter

    torch.set_num_threads(args.threads)
    started = time.perf_counter()

    def log(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    backbone = load_backbone(args.backbone)
    backbone.model.eval()
    text = LabelVocabulary(list(shapes_clutter.SHAPE_NAMES), templates="single").encode(
        backbone.model, backbone.tokenizer
    )  # [num_shapes, D]
    text = torch.nn.functional.normalize(text, dim=-1)

    train_world, train_keep, train_targets = single_salient_world(args.train_images, seed=7, style="web")
    train_pixels = pixel_values(backbone, train_world, train_keep)
    test_sets = {}
    for style in args.styles:
        world, keep, targets = single_salient_world(args.test_images, seed=8, style=style)
        test_sets[f"{style} style"] = (pixel_values(backbone, world, keep), targets)
    log(f"images: {len(train_targets)} training, {', '.join(f'{len(t)} {n}' for n, (_, t) in test_sets.items())}")

    rows = []
    train_embeddings = image_embeddings(backbone, train_pixels).numpy()
    probe = LogisticRegression(max_iter=2000, C=10.0).fit(train_embeddings, train_targets)
    for name, (pixels, targets) in test_sets.items():
        embeddings = image_embeddings(backbone, pixels)
        zero_shot = (embeddings @ text.T).argmax(-1).numpy()
        rows.append(("zero-shot (prompts)", name, top1(zero_shot, targets)))
        probed = probe.predict(embeddings.numpy())
        rows.append(("linear probe, frozen embedding", name, top1(probed, targets)))
    if args.steps:
        curve = fine_tune(
            backbone, train_pixels, train_targets, test_sets, args.steps, args.lr, args.batch_size, args.eval_every,
            len(shapes_clutter.SHAPE_NAMES), log,
        )  # fmt: skip
        for name in test_sets:
            rows.append((f"fine-tuned image side, {args.steps} steps", name, curve[-1][name]))

    print(
        f"Shape recognition ceiling of {args.backbone!r}: web layout, one salient object; top-1 among the "
        f"{len(shapes_clutter.SHAPE_NAMES)} shapes; {len(train_targets)} training images; "
        f"{torch.get_num_threads()} thread(s), {(time.perf_counter() - started) / 60:.1f} min.\n"
    )
    print("| model | test images | shape top-1 % |\n| --- | --- | ---: |")
    for model, name, shape_acc in rows:
        print(f"| {model} | {name} | {shape_acc:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
