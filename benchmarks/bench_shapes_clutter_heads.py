"""How much the shapes-clutter CLIP holds beyond its prompts (issue 18, docs/synthetic.md "Methods on catalogue v2").

Supervised heads trained to convergence on *all* labels of the tagging train split (BCE), scored on the test split
against zero-shot, per label group:

1. linear on the global image embedding (L-BFGS, full batch);
2. linear per patch token, soft-max over the patches (AdamW);
3. a 2-layer MLP per patch token, soft-max over the patches (AdamW);
4. the head of (3) with the whole image tower fine-tuned end to end (`--tower-epochs`, 0 skips it).

A head that cannot beat zero-shot by much on seen labels means the frozen features, not the method, are the limit;
(4) tells whether the tagging images can teach the tower more. Images are generated in memory (seeded).

    python benchmarks/bench_shapes_clutter_heads.py                  # 20k / 5k images, ~15 min on one core
    python benchmarks/bench_shapes_clutter_heads.py --tower-epochs 0 --layout num_objects=[2,5] overlap_prob=0
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_shapes_clutter_ceiling import image_embeddings, pixel_values  # noqa: E402

if TYPE_CHECKING:
    from ovmlc.data.shapes_clutter import WorldConfig

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

SOFT_MAX_SHARPNESS = 4.0  # logsumexp(4 z) / 4 over patches: close to max, with gradient to every patch


class PatchHead:
    """Per-patch-token scores pooled by a soft max: tokens [B, 1 + N, H] -> logits [B, C]."""

    def __init__(self, hidden: int, num_labels: int, mlp: bool):
        import torch

        layers = [torch.nn.Linear(hidden, 2 * hidden), torch.nn.GELU(), torch.nn.Linear(2 * hidden, num_labels)]
        self.module = torch.nn.Sequential(*layers) if mlp else torch.nn.Linear(hidden, num_labels)

    def __call__(self, tokens):
        import torch

        scores = self.module(tokens[:, 1:])  # [B, N, C]
        return torch.logsumexp(scores * SOFT_MAX_SHARPNESS, dim=1) / SOFT_MAX_SHARPNESS


def fit_minibatches(optimizer, parameters, batch_loss, num_items: int, epochs: int, batch_size: int) -> None:
    """`epochs` passes over seeded random minibatches of `num_items`: `batch_loss(indices)` -> loss, gradients clipped
    to norm 1 over `parameters`, linear warm-up over 5 % of the steps then cosine decay of every group's lr."""
    import torch

    steps = epochs * math.ceil(num_items / batch_size)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / max(1, steps // 20)) * 0.5 * (1 + math.cos(math.pi * s / steps))
    )
    generator = torch.Generator().manual_seed(0)
    for _ in range(epochs):
        for batch in torch.randperm(num_items, generator=generator).split(batch_size):
            loss = batch_loss(batch)
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(parameters, 1.0)
            optimizer.step()
            schedule.step()


def train_head(
    head, features, targets, epochs: int, lr: float, weight_decay: float, batch_size: int = 256, tower=None, pixels=None
):
    """AdamW with warm-up and cosine decay; `tower(pixels)` gives the tokens when the tower is trained too."""
    import torch
    import torch.nn.functional as F

    parameters = list(head.module.parameters()) + (list(tower.parameters) if tower else [])
    optimizer = torch.optim.AdamW(parameters, lr=lr, weight_decay=weight_decay)

    def batch_loss(batch):
        inputs = tower(pixels[batch]) if tower else features[batch]
        return F.binary_cross_entropy_with_logits(head(inputs), targets[batch])

    if tower:
        tower.train(True)
    fit_minibatches(optimizer, parameters, batch_loss, len(pixels if tower else features), epochs, batch_size)
    if tower:
        tower.train(False)


class Tower:
    """The image tower of a backbone as a token function, trainable or frozen."""

    def __init__(self, backbone):
        self.backbone = backbone
        self.parameters = [p for m in backbone.family.image_side_modules(backbone.model) for p in m.parameters()]

    def train(self, mode: bool) -> None:
        for module in self.backbone.family.image_side_modules(self.backbone.model):
            module.train(mode)

    def __call__(self, pixels):
        return self.backbone.family.vision_tokens(self.backbone.model, pixels)  # [B, 1 + N, H_v]


def load_world_clip(name: str, threads: int):
    """Torch threads and seed set; the world's CLIP in eval mode, its label names, unseen set and prompt embeddings:
    (backbone, names, unseen, label_embeds [C, D], L2-normalised, no grad)."""
    import torch
    import torch.nn.functional as F

    from ovmlc.core.backbones import load_backbone
    from ovmlc.core.vocabulary import LabelVocabulary
    from ovmlc.data import shapes_clutter

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    backbone = load_backbone(name)
    backbone.model.eval()
    labelset = shapes_clutter.load_labelset()
    names, unseen = list(labelset["labels"]), set(labelset["unseen"])
    vocabulary = LabelVocabulary(names, templates="single")
    label_embeds = F.normalize(vocabulary.encode(backbone.model, backbone.tokenizer), dim=-1).detach()
    return backbone, names, unseen, label_embeds


def table_row(title: str, scores: np.ndarray, targets: np.ndarray, groups: dict) -> str:
    """A markdown row: per group `name -> (label columns, image rows or None for all)`, the mean AP (%) of its labels
    that have a positive on those images."""
    from sklearn.metrics import average_precision_score

    cells = []
    for cols, rows in groups.values():
        group_targets, group_scores = (targets, scores) if rows is None else (targets[rows], scores[rows])
        aps = [
            average_precision_score(group_targets[:, c], group_scores[:, c]) for c in cols if group_targets[:, c].any()
        ]
        cells.append(f"{100 * np.mean(aps):.1f}")
    return f"| {title} | " + " | ".join(cells) + " |"


def markdown_table(first_column: str, groups: dict, rows: Sequence[str]) -> str:
    """Header (the first column, then the groups' names), separator and `table_row` rows."""
    return "\n".join([f"| {first_column} | " + " | ".join(groups) + " |", "| --- |" + " ---: |" * len(groups), *rows])


def tagging_config(changes: Sequence[str]) -> WorldConfig:
    """The world's tagging layout and style with `FIELD=VALUE` changes (YAML values; lists become tuples), each value
    of the field's kind: a number, or a list as long as the default's."""
    import dataclasses

    import yaml

    from ovmlc.data import shapes_clutter

    fields = {field.name for field in dataclasses.fields(shapes_clutter.WorldConfig)}
    overrides = {}
    for change in changes:
        name, sep, text = change.partition("=")
        if not sep or name not in fields:
            raise SystemExit(f"--layout {change!r}: expected FIELD=VALUE with FIELD one of {sorted(fields)}")
        default, value = getattr(shapes_clutter.TAGGING, name), yaml.safe_load(text)
        value = tuple(value) if isinstance(value, list) else value
        if not _same_kind(value, default):
            raise SystemExit(f"--layout {change!r}: {name} takes a value like {default!r}")
        overrides[name] = value
    return dataclasses.replace(shapes_clutter.TAGGING, **overrides)


def add_layout_argument(parser: argparse.ArgumentParser) -> None:
    """`--layout FIELD=VALUE ...`, the changes `tagging_config` applies."""
    parser.add_argument(
        "--layout",
        nargs="*",
        default=[],
        metavar="FIELD=VALUE",
        help="tagging-layout changes (WorldConfig fields, YAML values), e.g. num_objects=[2,5] overlap_prob=0",
    )


def layout_label(changes: Sequence[str]) -> str:
    """The report-header suffix of layout changes, " (FIELD=VALUE, ...)"; empty for the shipped layout."""
    return f" ({', '.join(changes)})" if changes else ""


def _same_kind(value, default) -> bool:
    if isinstance(default, str):
        return isinstance(value, str)
    if isinstance(default, tuple):
        return isinstance(value, tuple) and len(value) == len(default) and all(map(_same_kind, value, default))
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backbone", default="shapes-clutter", help="a CLIP of the world (alias or folder)")
    parser.add_argument("--train-images", type=int, default=20000)
    parser.add_argument("--test-images", type=int, default=5000)
    parser.add_argument("--epochs", type=int, default=8, help="AdamW epochs of the patch heads")
    parser.add_argument("--tower-epochs", type=int, default=4, help="epochs of head (4); 0 skips it")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 on a shared 2-core machine)")
    add_layout_argument(parser)
    args = parser.parse_args(argv)

    import torch
    import torch.nn.functional as F

    from ovmlc.data import shapes_clutter as world_module

    started = time.perf_counter()
    config = tagging_config(args.layout)
    backbone, names, unseen, text = load_world_clip(args.backbone, args.threads)
    tower = Tower(backbone)

    def render(count: int, split: str):
        world = world_module.generate_world(count, seed=0, stream=split, config=config, num_workers=1)
        pixels = pixel_values(backbone, world, np.ones(count, dtype=bool))  # [n, 3, H, W]
        return pixels, world.scenes.label_matrix(names)  # int8 [n, C]

    def tokens_of(pixels):
        with torch.no_grad():
            return torch.cat([tower(pixels[s : s + 512]) for s in range(0, len(pixels), 512)])  # [n, 1 + N, H_v]

    train_pixels, train_targets = render(args.train_images, "train")
    test_pixels, test_targets = render(args.test_images, "test")
    train_tokens, test_tokens = tokens_of(train_pixels), tokens_of(test_pixels)
    targets = torch.tensor(train_targets, dtype=torch.float32)
    columns = {
        "seen": ([c for c, name in enumerate(names) if name not in unseen], None),
        "unseen": ([c for c, name in enumerate(names) if name in unseen], None),
        **{group: ([names.index(n) for n in members], None) for group, members in world_module.LABEL_GROUPS.items()},
    }

    def row(title: str, scores: np.ndarray) -> str:
        return table_row(title, scores, test_targets, columns)

    rows = []
    # [n, D]; cloned out of inference mode so that L-BFGS can differentiate through them
    train_embeds, test_embeds = (image_embeddings(backbone, pixels).clone() for pixels in (train_pixels, test_pixels))
    rows.append(row("zero-shot (prompts)", (test_embeds @ text.T).numpy()))

    weight = torch.zeros(train_embeds.shape[1], len(names), requires_grad=True)
    bias = torch.zeros(len(names), requires_grad=True)
    optimizer = torch.optim.LBFGS([weight, bias], max_iter=300, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = (
            F.binary_cross_entropy_with_logits(train_embeds @ weight * 10 + bias, targets)
            + 1e-4 * weight.square().sum()
        )
        loss.backward()
        return loss

    optimizer.step(closure)
    rows.append(row("linear, global embedding (L-BFGS)", (test_embeds @ weight * 10 + bias).detach().numpy()))
    hidden = train_tokens.shape[-1]
    for title, mlp in (("linear per patch token, soft-max", False), ("2-layer MLP per patch token, soft-max", True)):
        head = PatchHead(hidden, len(names), mlp)
        train_head(head, train_tokens, targets, args.epochs, lr=2e-3, weight_decay=1e-4)
        with torch.no_grad():
            rows.append(row(title, head(test_tokens).numpy()))
    if args.tower_epochs:
        head = PatchHead(hidden, len(names), mlp=True)
        train_head(head, None, targets, args.tower_epochs, 5e-4, 0.05, batch_size=128, tower=tower, pixels=train_pixels)
        with torch.no_grad():
            rows.append(row(f"the MLP head with the image tower fine-tuned, {args.tower_epochs} epochs",
                            head(tokens_of(test_pixels)).numpy()))  # fmt: skip

    print(
        f"Supervised heads on {args.backbone!r}, all {len(names)} labels, {args.train_images} training / "
        f"{args.test_images} test tagging images{layout_label(args.layout)}; mAP (%) "
        f"over all test images; {torch.get_num_threads()} thread(s), "
        f"{(time.perf_counter() - started) / 60:.1f} min.\n"
    )
    print(markdown_table("head", columns, rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
