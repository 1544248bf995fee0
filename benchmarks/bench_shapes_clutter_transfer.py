"""Does anything learned on the seen labels carry to the unseen ones? (issue 18, docs/synthetic.md "Transfer probes")

The transfer methods (MKT, QKS, DualCoOp) can only beat zero-shot on unseen labels if training on the seen labels
changes something the unseen labels share. This benchmark isolates the image side: the label embeddings stay the
frozen CLIP's prompts (so an unseen label is always scored zero-shot through whatever was learned), and the image side
is trained on the *seen* labels of the tagging train split (BCE, a learnable logit scale and per-label bias started
calibrated, so the first steps rank rather than shift every score down):

1. a residual linear adapter on the frozen global embedding, `x + W x`, W starting at 0 (CLIP-Adapter style);
2. the whole image tower fine-tuned;
3. the tower fine-tuned on *all* labels (an oracle: what the unseen labels could gain if they were labelled);
4. with `--probes ... patch`, the route of the patch-token methods (QKS, DualCoOp's regions, MKT's local stream):
   each frozen patch token through a residual 2-layer MLP (its output layer starting at 0), the CLIP's own projection
   into the joint space, cosine with the prompts, a soft maximum over the patches; untrained (patch zero-shot), trained
   on the seen labels, and on all labels (oracle).

Each runs under a pixel shift applied to the train and test images alike, a label-agnostic "camera" the CLIP never
saw (`--shifts`): `none`; `warm` (white balance: R x1.3, B x0.55, contrast x0.7); `channel-swap` (RGB -> GBR, exactly
invertible by the first layer). A shift that training on seen labels undoes *for the unseen labels too* (row 2 above
zero-shot on `unseen colours`, close to row 3) is transfer; seen labels recovering while the unseen stay put is
per-label fitting. Scores: ZSL mAP (the 12 unseen labels on the test images with one of them, as the `synthetic`
protocol), seen mAP (all test images) and, over all test images, the unseen labels by group (8 shapes, the colours
orange and blue, the stuff effects vignette and rain) and the 10 seen colours. Images are generated in memory.

    python benchmarks/bench_shapes_clutter_transfer.py           # 20k / 5k images, 3 shifts, ~16 min on one core
    python benchmarks/bench_shapes_clutter_transfer.py --shifts none --probes global patch --layout large_prob=1.0
    python benchmarks/bench_shapes_clutter_transfer.py --train-images 2000 --test-images 500 --shifts none --epochs 1
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import functools
import math
import os
import sys
import time
from collections.abc import Sequence

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_shapes_clutter_ceiling import image_embeddings, pixel_values  # noqa: E402
from bench_shapes_clutter_heads import (  # noqa: E402
    add_layout_argument,
    fit_minibatches,
    layout_label,
    load_world_clip,
    markdown_table,
    table_row,
    tagging_config,
)

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

INITIAL_LOGIT_SCALE = 10.0
PATCH_POOL_SHARPNESS = 30.0  # logsumexp(30 cos) / 30 over the patches: close to their max cosine, gradient to all
SHIFTS = ("none", "warm", "channel-swap")
PROBES = ("global", "patch")


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

    def __call__(self, cosines):
        return self.log_scale.exp() * cosines + self.bias  # [B, C]


def global_cosines(embeds, label_embeds):
    """Image embeddings [B, D] (any norm) -> cosines with the L2-normalised label embeddings, [B, C]."""
    import torch.nn.functional as F

    return F.normalize(embeds, dim=-1) @ label_embeds.T


def patch_cosines(patch_embeds, label_embeds):
    """Patch embeddings [B, N, D] -> per label a soft maximum over the patches of their cosines, [B, C]."""
    import torch
    import torch.nn.functional as F

    cosines = F.normalize(patch_embeds, dim=-1) @ label_embeds.T  # [B, N, C]
    return torch.logsumexp(PATCH_POOL_SHARPNESS * cosines, dim=1) / PATCH_POOL_SHARPNESS


class PatchAdapter:
    """Frozen vision tokens [B, 1 + N, H_v] -> patch embeddings [B, N, D]: each patch token plus a 2-layer MLP of it
    (output layer starting at 0, so the adapter starts as the CLIP), then the CLIP's own token projection."""

    def __init__(self, projection):
        import torch

        hidden = projection.shape[1]
        self.mlp = torch.nn.Sequential(
            torch.nn.Linear(hidden, 2 * hidden), torch.nn.GELU(), torch.nn.Linear(2 * hidden, hidden)
        )
        torch.nn.init.zeros_(self.mlp[2].weight)
        torch.nn.init.zeros_(self.mlp[2].bias)
        self.projection = projection.detach()  # [D, H_v]

    def parameters(self) -> list:
        return list(self.mlp.parameters())

    def __call__(self, tokens):
        patches = tokens[:, 1:]  # [B, N, H_v]
        return (patches + self.mlp(patches)) @ self.projection.T  # [B, N, D]


def train_image_side(image_side, parameters, head, inputs, targets, label_embeds, epochs, lr, cosines=global_cosines):
    """AdamW on `parameters` (the head's scale and bias at 10x lr), warm-up then cosine, BCE on `targets`;
    `cosines(image_side(inputs), label_embeds)` -> [b, C]."""
    import torch
    import torch.nn.functional as F

    optimizer = torch.optim.AdamW(
        [{"params": parameters}, {"params": [head.log_scale, head.bias], "lr": lr * 10}], lr=lr, weight_decay=0.0
    )

    def batch_loss(batch):
        logits = head(cosines(image_side(inputs[batch]), label_embeds))  # [b, C]
        return F.binary_cross_entropy_with_logits(logits, targets[batch])

    fit_minibatches(optimizer, parameters, batch_loss, len(inputs), epochs, batch_size=128)


def patch_rows(
    shift, backbone, pixels, label_embeds, train_targets, seen_columns, head_for, row, args, global_zero_shot
) -> list[str]:
    """Probe 4: the patch route, untrained and with the residual MLP per patch token trained on the seen / all
    labels; the untrained and seen-label routes also averaged with the global zero-shot cosines (`global_zero_shot`,
    [m, C]), as MKT and ViLD-ensemble combine a global and a local score."""
    import torch

    family = backbone.family
    with torch.inference_mode():
        tokens = {
            split: torch.cat([family.vision_tokens(backbone.model, part) for part in split_pixels.split(256)]).clone()
            for split, split_pixels in pixels.items()
        }  # [n, 1 + N, H_v] each, cloned out of inference mode
    projection = family.token_projection_weight(backbone.model)  # [D, H_v]
    untrained = PatchAdapter(projection)
    with torch.no_grad():
        train_cosines = patch_cosines(untrained(tokens["train"]), label_embeds)  # [n, C]
        zero_shot = patch_cosines(untrained(tokens["test"]), label_embeds).numpy()
    lines = [
        row(f"{shift}: patch tokens, zero-shot", zero_shot),
        row(f"{shift}: patch tokens, zero-shot, averaged with global zero-shot", (zero_shot + global_zero_shot) / 2),
    ]
    torch.manual_seed(0)
    all_columns = list(range(len(label_embeds)))
    for title, label_columns in (("seen labels", seen_columns), ("all labels (oracle)", all_columns)):
        adapter = PatchAdapter(projection)
        train_image_side(
            adapter, adapter.parameters(), head_for(label_columns, train_cosines), tokens["train"],
            train_targets[:, label_columns], label_embeds[label_columns], args.epochs, args.patch_lr, patch_cosines,
        )  # fmt: skip
        with torch.no_grad():
            scores = patch_cosines(adapter(tokens["test"]), label_embeds).numpy()
        lines.append(row(f"{shift}: residual MLP per patch token, {title}", scores))
        if label_columns is seen_columns:
            averaged = (scores + global_zero_shot) / 2
            lines.append(
                row(f"{shift}: residual MLP per patch token, {title}, averaged with global zero-shot", averaged)
            )
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backbone", default="shapes-clutter", help="a CLIP of the world (alias or folder)")
    parser.add_argument("--train-images", type=int, default=20000)
    parser.add_argument("--test-images", type=int, default=5000)
    parser.add_argument("--shifts", nargs="+", default=list(SHIFTS), choices=SHIFTS)
    parser.add_argument("--epochs", type=int, default=3, help="epochs of every trained row")
    parser.add_argument("--adapter-lr", type=float, default=1e-3)
    parser.add_argument("--tower-lr", type=float, default=1e-4)
    parser.add_argument("--patch-lr", type=float, default=1e-3)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 on a shared 2-core machine)")
    parser.add_argument("--probes", nargs="+", default=["global"], choices=PROBES, help="global (1-3), patch (4)")
    add_layout_argument(parser)
    args = parser.parse_args(argv)

    import torch
    import torch.nn.functional as F

    from ovmlc.data import shapes_clutter as world_module

    started = time.perf_counter()
    config = tagging_config(args.layout)
    backbone, names, unseen, label_embeds = load_world_clip(args.backbone, args.threads)
    family = backbone.family
    seen_columns = [c for c, name in enumerate(names) if name not in unseen]
    unseen_columns = [c for c, name in enumerate(names) if name in unseen]

    worlds = {split: world_module.generate_world(count, seed=0, stream=split, config=config, num_workers=1)
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

    all_columns = list(range(len(names)))

    def head_for(label_columns: list[int], train_cosines) -> CalibratedHead:
        return CalibratedHead(train_cosines[:, label_columns], train_targets[:, label_columns].mean(0))

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

        if "global" in args.probes:
            head = functools.partial(head_for, train_cosines=train_embeds @ label_embeds.T)
            # 1. residual linear adapter on the frozen embedding, trained on the seen labels
            adapter = torch.nn.Linear(train_embeds.shape[1], train_embeds.shape[1])
            torch.nn.init.zeros_(adapter.weight)
            torch.nn.init.zeros_(adapter.bias)
            train_image_side(
                lambda x, adapter=adapter: x + adapter(x), list(adapter.parameters()), head(seen_columns),
                train_embeds, train_targets[:, seen_columns], label_embeds[seen_columns], args.epochs, args.adapter_lr,
            )  # fmt: skip
            with torch.no_grad():
                adapted = F.normalize(test_embeds + adapter(test_embeds), dim=-1)
            lines.append(row(f"{shift}: linear adapter, seen labels", (adapted @ label_embeds.T).numpy()))

            # 2-3. the image tower fine-tuned on the seen labels, then on all labels
            for title, label_columns in (("seen labels", seen_columns), ("all labels (oracle)", all_columns)):
                model = copy.deepcopy(backbone.model)
                modules = family.image_side_modules(model)
                parameters = [p for module in modules for p in module.parameters()]
                for module in modules:
                    module.train(True)
                train_image_side(
                    lambda px, model=model: family.image_features(model, px)["image_embeds"], parameters,
                    head(label_columns), pixels["train"], train_targets[:, label_columns], label_embeds[label_columns],
                    args.epochs, args.tower_lr,
                )  # fmt: skip
                for module in modules:
                    module.train(False)
                tuned = dataclasses.replace(backbone, model=model)
                scores = (image_embeddings(tuned, pixels["test"]) @ label_embeds.T).numpy()
                lines.append(row(f"{shift}: image tower fine-tuned, {title}", scores))
        if "patch" in args.probes:
            lines += patch_rows(
                shift, backbone, pixels, label_embeds, train_targets, seen_columns, head_for, row, args,
                global_zero_shot=(test_embeds @ label_embeds.T).numpy(),
            )  # fmt: skip

    print(
        f"Image-side training against the frozen prompts of {args.backbone!r}: {args.train_images} training / "
        f"{args.test_images} test tagging images{layout_label(args.layout)}, "
        f"{args.epochs} epochs (adapter lr {args.adapter_lr:g}, tower lr {args.tower_lr:g}, patch lr "
        f"{args.patch_lr:g}); mAP (%); {torch.get_num_threads()} thread(s), "
        f"{(time.perf_counter() - started) / 60:.1f} min.\n"
    )
    print(markdown_table("shift: row", columns, lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
