"""Does anything learned on the seen labels carry to the unseen ones? (issue 18, docs/synthetic.md "Transfer probes")

The transfer methods (MKT, QKS, DualCoOp) can only beat zero-shot on unseen labels if training on the seen labels
changes something the unseen labels share. This benchmark isolates the image side: the label embeddings stay the
frozen CLIP's prompts (so an unseen label is always scored zero-shot through whatever was learned), and the image side
is trained on the *seen* labels of the tagging train split (BCE, a learnable logit scale and per-label bias started
calibrated, so the first steps rank rather than shift every score down):

1. a residual linear adapter on the frozen global embedding, `x + W x`, W starting at 0 (CLIP-Adapter style);
2. the whole image tower fine-tuned;
3. the tower fine-tuned on *all* labels (an oracle: what the unseen labels could gain if they were labelled).

Each runs under a pixel shift applied to the train and test images alike, a label-agnostic "camera" the CLIP never
saw (`--shifts`): `none`; `warm` (white balance: R x1.3, B x0.55, contrast x0.7); `channel-swap` (RGB -> GBR, exactly
invertible by the first layer). A shift that training on seen labels undoes *for the unseen labels too* (row 2 above
zero-shot on `unseen colours`, close to row 3) is transfer; seen labels recovering while the unseen stay put is
per-label fitting. Scores: ZSL mAP (the 12 unseen labels on the test images with one of them, as the `synthetic`
protocol), seen mAP (all test images) and, over all test images, the unseen labels by group (8 shapes, the colours
orange and blue, the stuff effects vignette and rain) and the 10 seen colours. Images are generated in memory.

    python benchmarks/bench_shapes_clutter_transfer.py           # 20k / 5k images, 3 shifts, ~16 min on one core
    python benchmarks/bench_shapes_clutter_transfer.py --train-images 2000 --test-images 500 --shifts none --epochs 1
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import math
import os
import sys
import time
from collections.abc import Sequence

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_shapes_clutter_ceiling import image_embeddings, pixel_values  # noqa: E402
from bench_shapes_clutter_heads import fit_minibatches, load_world_clip, markdown_table, table_row  # noqa: E402

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

INITIAL_LOGIT_SCALE = 10.0
SHIFTS = ("none", "warm", "channel-swap")


def shift_pixels(images: np.ndarray, shift: str) -> np.ndarray:
    """uint8 [N, H, W, 3] -> the same images through the named camera."""
    if shift == "none":
        return images
    if shift == "channel-swap":
        return np.ascontiguousarray(images[..., [1, 2, 0]])
    if shift == "warm":
        warmed = (images.astype(np.float32) * np.array([1.3, 1.0, 0.55], dtype=np.float32) - 128.0) * 0.7 + 128.0
        return np.clip(np.rint(warmed), 0, 255).astype(np.uint8)
    raise ValueError(f"Unknown shift {shift!r}; known: {SHIFTS}.")


class CalibratedHead:
    """logits [B, C] = exp(log_scale) * cos(image, label) + bias_c, the bias started at the label's prior log-odds
    minus its mean scaled cosine on the training images (so every label starts calibrated)."""

    def __init__(self, train_cosines, prior):
        import torch

        self.log_scale = torch.tensor(math.log(INITIAL_LOGIT_SCALE), requires_grad=True)
        prior = prior.clamp(1e-3, 1 - 1e-3)
        bias = -INITIAL_LOGIT_SCALE * train_cosines.mean(0) + torch.log(prior / (1 - prior))  # [C]
        self.bias = bias.detach().clone().requires_grad_(True)

    def __call__(self, image_embeds, label_embeds):
        return self.log_scale.exp() * image_embeds @ label_embeds.T + self.bias  # [B, C]


def train_image_side(image_side, parameters, head, inputs, targets, label_embeds, epochs, lr, batch_size=128):
    """AdamW on `parameters` (the head's scale and bias at 10x lr), warm-up then cosine, BCE on `targets`."""
    import torch
    import torch.nn.functional as F

    optimizer = torch.optim.AdamW(
        [{"params": parameters}, {"params": [head.log_scale, head.bias], "lr": lr * 10}], lr=lr, weight_decay=0.0
    )

    def batch_loss(batch):
        embeds = F.normalize(image_side(inputs[batch]), dim=-1)  # [b, D]
        return F.binary_cross_entropy_with_logits(head(embeds, label_embeds), targets[batch])

    fit_minibatches(optimizer, parameters, batch_loss, len(inputs), epochs, batch_size)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backbone", default="shapes-clutter", help="a CLIP of the world (alias or folder)")
    parser.add_argument("--train-images", type=int, default=20000)
    parser.add_argument("--test-images", type=int, default=5000)
    parser.add_argument("--shifts", nargs="+", default=list(SHIFTS), choices=SHIFTS)
    parser.add_argument("--epochs", type=int, default=3, help="epochs of every trained row")
    parser.add_argument("--adapter-lr", type=float, default=1e-3)
    parser.add_argument("--tower-lr", type=float, default=1e-4)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 on a shared 2-core machine)")
    args = parser.parse_args(argv)

    import torch
    import torch.nn.functional as F

    from ovmlc.data import shapes_clutter as world_module

    started = time.perf_counter()
    backbone, names, unseen, label_embeds = load_world_clip(args.backbone, args.threads)
    family = backbone.family
    seen_columns = [c for c, name in enumerate(names) if name not in unseen]
    unseen_columns = [c for c, name in enumerate(names) if name in unseen]

    worlds = {split: world_module.generate_world(count, seed=0, stream=split, num_workers=1)
              for split, count in (("train", args.train_images), ("test", args.test_images))}  # fmt: skip
    train_targets = torch.tensor(worlds["train"].scenes.label_matrix(names), dtype=torch.float32)  # [n, C]
    test_targets = worlds["test"].scenes.label_matrix(names)  # int8 [m, C]
    zsl_rows = np.flatnonzero(test_targets[:, unseen_columns].any(axis=1))

    def unseen_in(group: str) -> list[int]:
        return [c for c in unseen_columns if names[c] in world_module.LABEL_GROUPS[group]]

    columns = {
        "ZSL mAP": (unseen_columns, zsl_rows),
        "seen mAP": (seen_columns, None),
        "seen colours": ([c for c in seen_columns if names[c] in world_module.COLOUR_NAMES], None),
        "unseen colours": (unseen_in("colours"), None),
        "unseen shapes": (unseen_in("shapes"), None),
        "unseen stuff": (unseen_in("stuff"), None),
    }

    def row(title: str, scores: np.ndarray) -> str:
        return table_row(title, scores, test_targets, columns)

    lines = []
    for shift in args.shifts:
        pixels = {
            split: pixel_values(
                backbone,
                dataclasses.replace(world, images=shift_pixels(world.images, shift)),
                np.ones(len(world), bool),
            )
            for split, world in worlds.items()
        }  # [n, 3, H, W] each
        train_embeds, test_embeds = (image_embeddings(backbone, pixels[split]).clone() for split in ("train", "test"))
        lines.append(row(f"{shift}: zero-shot", (test_embeds @ label_embeds.T).numpy()))

        def head_for(label_columns: list[int], train_embeds=train_embeds) -> CalibratedHead:
            return CalibratedHead(train_embeds @ label_embeds[label_columns].T, train_targets[:, label_columns].mean(0))

        # 1. residual linear adapter on the frozen embedding, trained on the seen labels
        adapter = torch.nn.Linear(train_embeds.shape[1], train_embeds.shape[1])
        torch.nn.init.zeros_(adapter.weight)
        torch.nn.init.zeros_(adapter.bias)
        train_image_side(
            lambda x, adapter=adapter: x + adapter(x), list(adapter.parameters()), head_for(seen_columns),
            train_embeds, train_targets[:, seen_columns], label_embeds[seen_columns], args.epochs, args.adapter_lr,
        )  # fmt: skip
        with torch.no_grad():
            adapted = F.normalize(test_embeds + adapter(test_embeds), dim=-1)
        lines.append(row(f"{shift}: linear adapter, seen labels", (adapted @ label_embeds.T).numpy()))

        # 2-3. the image tower fine-tuned on the seen labels, then on all labels
        for title, label_columns in (("seen labels", seen_columns), ("all labels (oracle)", list(range(len(names))))):
            model = copy.deepcopy(backbone.model)
            modules = family.image_side_modules(model)
            parameters = [p for module in modules for p in module.parameters()]
            for module in modules:
                module.train(True)
            train_image_side(
                lambda px, model=model: family.image_features(model, px)["image_embeds"], parameters,
                head_for(label_columns), pixels["train"], train_targets[:, label_columns], label_embeds[label_columns],
                args.epochs, args.tower_lr,
            )  # fmt: skip
            for module in modules:
                module.train(False)
            tuned = dataclasses.replace(backbone, model=model)
            scores = (image_embeddings(tuned, pixels["test"]) @ label_embeds.T).numpy()
            lines.append(row(f"{shift}: image tower fine-tuned, {title}", scores))

    print(
        f"Image-side training against the frozen prompts of {args.backbone!r}: {args.train_images} training / "
        f"{args.test_images} test tagging images, {args.epochs} epochs (adapter lr {args.adapter_lr:g}, tower lr "
        f"{args.tower_lr:g}); mAP (%); {torch.get_num_threads()} thread(s), "
        f"{(time.perf_counter() - started) / 60:.1f} min.\n"
    )
    print(markdown_table("shift: row", columns, lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
