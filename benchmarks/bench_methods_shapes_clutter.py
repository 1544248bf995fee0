"""Method quality on the shapes-clutter world (CPU): the issue-18 results table, with its controls as rows.

Every trained method runs through the real trainer (`ovmlc.train`) with its recipe in
`hub_configs/*-shapes-clutter.yaml` (training seed, dataset and backbone overridden per run), then the
best-on-validation model is scored on the test split (ZSL: the 12 unseen labels on the test images with at least one
of them, MKT's unseen labels scored alone; GZSL: all labels, all images; seen: the seen labels, all images). Rows:

* the methods on the main dataset (`ovmlc data prepare shapes-clutter`): CLIP zero-shot, CLIP-FT full and LoRA, MKT
  stage 1 and 1 + 2, QKS, and with `--methods` the prompt family (CoOp, DualCoOp, DualCoOp++), LAMM, the linear probe
  and ViLD (each recipe mirrors its `*-synthetic.yaml`), and `vild-windows`, the training-free baseline of ViLD's
  row (CLIP on the crops of the ViLD recipe's windows, untrained);
* the supervised upper bound: a method trained on *all* labels (dataset prepared with `--oracle`), evaluated on the
  same test images and the same unseen labels;
* controls, with CLIP zero-shot and the transfer methods (MKT, QKS; `--control-methods`):
  * shift off: the same world rendered in the pretraining ("web") style (`--style web`), and the pretraining
    distribution itself, fully labelled (`--layout web --style web`);
  * captions mention everything: the same recipes on a CLIP pretrained with `world_options: {mention_all: true}`
    (`--captions-all-backbone`, e.g. `ovmlc pretrain-vlp --config hub_configs/clip-shapes-clutter-captions-all.yaml`);
  * seen-count sweep: 10 / 20 / 30 of the 42 seen shapes kept (`--num-seen-shapes`), same unseen labels;
* AP by object size: ZSL mAP of the unseen shapes with their positives split by the size of the largest visible
  instance (all test images; the other positives of the label are left out of that bin's AP).

`--large-prob P` measures the whole table on another tagging layout: every variant prepared with that share of
cell-sized objects (`data prepare --large-prob`; 1.0 leaves no object smaller than a patch), in its own data and run
folders.

Prints markdown tables (mean ± sd over seeds, percent) and writes every run's numbers with `--json`. Needs the
world's CLIP (`ovmlc pretrain-vlp --config hub_configs/clip-shapes-clutter.yaml`, the `shapes-clutter` backbone;
`--backbone` runs every row but captions-all on another CLIP of the world, e.g. the patch-8 experiment's);
docs/synthetic.md ("shapes-clutter") has the commands, the cost and what is measured.

    python benchmarks/bench_methods_shapes_clutter.py --seeds 0 1 2 --json results.json
    python benchmarks/bench_methods_shapes_clutter.py --quick          # small data, 1 seed: a smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_methods_synthetic as base  # noqa: E402  (train_recipes: the real trainer, chained recipes)

WORLD = "shapes-clutter"
METHODS: dict[str, tuple[str, tuple[str, ...]]] = {
    "clip-zs": ("CLIP zero-shot", ()),
    "clipft": ("CLIP-FT (full)", ("clipft-shapes-clutter.yaml",)),
    "clipft-lora": ("CLIP-FT (LoRA)", ("clipft-lora-shapes-clutter.yaml",)),
    "mkt-stage1": ("MKT stage 1", ("mkt-shapes-clutter-stage1.yaml",)),
    "mkt": ("MKT (stage 1 + 2)", ("mkt-shapes-clutter-stage1.yaml", "mkt-shapes-clutter-stage2.yaml")),
    "qks": ("QKS", ("qks-shapes-clutter.yaml",)),
    "coop": ("CoOp", ("coop-shapes-clutter.yaml",)),
    "dualcoop": ("DualCoOp (plain tokens)", ("dualcoop-shapes-clutter.yaml",)),
    "dualcooppp": ("DualCoOp++ (plain tokens)", ("dualcooppp-shapes-clutter.yaml",)),
    "lamm": ("LAMM", ("lamm-shapes-clutter.yaml",)),
    "linear-probe": ("Linear probe", ("linear-probe-shapes-clutter.yaml",)),
    "vild": ("ViLD-ensemble", ("vild-shapes-clutter.yaml",)),
    "vild-windows": ("zero-shot CLIP on ViLD's windows", ()),
}
MAIN_METHODS = ("clip-zs", "clipft", "clipft-lora", "mkt-stage1", "mkt", "qks")
CONTROL_METHODS = ("clip-zs", "mkt-stage1", "qks")
UPPER_BOUND_METHODS = ("linear-probe", "qks")  # a head trained on all labels, and a transfer method
# Dataset variants: `ovmlc data prepare shapes-clutter` arguments.
VARIANTS: dict[str, tuple[str, tuple[str, ...]]] = {
    "main": ("tagging data (42 seen shapes)", ()),
    "oracle": ("all labels labelled in training (upper bound)", ("--oracle",)),
    "style-off": ("shift off: tagging layout, web rendering style", ("--style", "web")),
    "web-off": ("shift off: web layout and style, fully labelled", ("--layout", "web", "--style", "web")),
    "seen10": ("10 seen shapes", ("--num-seen-shapes", "10")),
    "seen20": ("20 seen shapes", ("--num-seen-shapes", "20")),
    "seen30": ("30 seen shapes", ("--num-seen-shapes", "30")),
}
FULL_SIZES = {"num_train": 20_000, "num_val": 2_000, "num_test": 5_000}
QUICK_SIZES = {"num_train": 3_000, "num_val": 300, "num_test": 1_000}
SIZE_BINS = ((6.0, 10.0), (10.0, 16.0))  # px, nominal width of the largest visible instance: small (6-9), large
METRICS = ("zsl_map", "zsl_f1_3", "gzsl_map", "gzsl_f1_3", "seen_map")


@dataclass
class RunResult:
    row: str  # e.g. "main/qks", "seen10/mkt-stage1", "captions-all/clip-zs", "oracle/qks"
    method: str
    variant: str
    backbone: str
    seed: int
    train_seconds: float
    zsl_map: float
    zsl_f1_3: float
    gzsl_map: float
    gzsl_f1_3: float
    seen_map: float
    zsl_map_by_size: dict[str, float] = field(default_factory=dict)
    output_dir: str | None = None


def layout_name(large_prob: float | None) -> str:
    """Folder-name suffix of the tagging layout's share of cell-sized objects ("" for the default layout)."""
    return "" if large_prob is None else f"large-prob-{large_prob:g}"


def prepare_variant(
    variant: str, root: Path, sizes: dict[str, int], seed: int = 0, large_prob: float | None = None
) -> Path:
    """The canonical dataset of a variant under `root` (generated once); `large_prob` replaces the tagging layout's
    share of cell-sized objects."""
    path = root / "-".join(filter(None, (variant, layout_name(large_prob))))
    if not (path / "README.md").is_file():
        from ovmlc.cli import main as cli_main

        argv = ["data", "prepare", WORLD, "--out", str(path), "--seed", str(seed), "--no-progress"]
        argv += ["--num-train", str(sizes["num_train"]), "--num-val", str(sizes["num_val"])]
        argv += ["--num-test", str(sizes["num_test"]), *VARIANTS[variant][1]]
        if large_prob is not None:
            argv += ["--large-prob", str(large_prob)]
        print(f"preparing {variant} in {path} ...", file=sys.stderr)
        if cli_main(argv):
            raise RuntimeError(f"`ovmlc {' '.join(argv)}` failed")
    return path


def object_sizes(dataset_path: Path, names: Sequence[str]) -> np.ndarray:
    """float32 [N, C]: size of the largest labelled instance of each shape label in the test split (0 = absent)."""
    from ovmlc import data as ovmlc_data
    from ovmlc.data import shapes_clutter

    metadata = ovmlc_data.read_card_metadata(dataset_path)  # the card's `ovmlc:` block (world seed, layout, style)
    config = shapes_clutter.dataset_world_config(metadata)
    test = ovmlc_data.load_canonical(dataset_path, split="test")
    world = shapes_clutter.generate_world(
        len(test), seed=int(metadata.get("world_seed", 0)), stream="test", config=config
    )
    return world.scenes.largest_visible_size(list(names))


def evaluate(model, dataset_path: Path, unseen: Sequence[str], batch_size: int = 256) -> dict:
    """ZSL / GZSL / seen numbers (percent) on the test split with the given unseen labels (`bench_methods_synthetic`'s
    scoring), plus the ZSL mAP of the unseen shapes by object size."""
    from ovmlc.data import shapes_clutter
    from ovmlc.evaluation.metrics import mean_average_precision

    names, is_unseen, labels, arrays = base.score_test_split(model, dataset_path, unseen, batch_size)
    numbers = base.protocol_numbers(names, is_unseen, labels, arrays)
    unseen = [name for name, flag in zip(names, is_unseen) if flag]
    scores, unseen_scores = arrays["scores"], arrays["unseen_scores"]  # [N, C], [N, C_unseen] or None
    shapes = [name for name in unseen if name in shapes_clutter.SHAPE_NAMES]
    if unseen_scores is not None:  # scored with the unseen labels alone (MKT): the ZSL view's own scores
        shape_scores = unseen_scores[:, [unseen.index(name) for name in shapes]]
    else:
        shape_scores = scores[:, [names.index(name) for name in shapes]]  # [N, S]
    sizes = object_sizes(dataset_path, shapes)  # [N, S]
    by_size = {}
    for low, high in SIZE_BINS:
        binned = np.where(sizes == 0, -1, np.where((sizes >= low) & (sizes < high), 1, 0)).astype(np.int8)
        by_size[f"{low:g}-{high:g}px"] = 100 * mean_average_precision(shape_scores, binned, no_positive="exclude")
    numbers["zsl_map_by_size"] = by_size
    return numbers


def untrained_model(method: str, backbone: str):
    """The training-free rows: CLIP zero-shot on the whole image, or on each of ViLD's windows (the ViLD recipe's
    windows, crops and scoring with CLIP embedding every window's crops instead of trained region heads)."""
    import ovmlc

    if method == "vild-windows":
        from ovmlc.resources import recipe_path
        from ovmlc.training.recipe import load_recipe, validate_method_config

        overrides = ["method_config.region_encoder=clip_crops", "method_config.double_branch=false"]
        recipe = load_recipe(recipe_path("vild-shapes-clutter.yaml"), overrides)
        return ovmlc.ViLDModel.from_clip(backbone, **validate_method_config(recipe, ovmlc.ViLDConfig))
    return ovmlc.CLIPZeroShotModel.from_clip(backbone)


def run_one(
    method: str,
    variant: str,
    dataset_path: Path,
    seed: int,
    work_dir: Path,
    backbone: str,
    unseen: Sequence[str],
    reuse: bool = False,
) -> RunResult:
    import ovmlc

    _, recipes = METHODS[method]
    started = time.perf_counter()
    output = None
    if not recipes:
        model = untrained_model(method, backbone)
    else:
        overrides = [f"backbone={backbone}"]
        output, seconds = base.train_recipes(recipes, dataset_path, seed, work_dir, overrides, reuse=reuse)
        model = ovmlc.load_model(str(output))
    seconds = time.perf_counter() - started if not recipes else seconds
    numbers = evaluate(model, dataset_path, unseen)
    output_dir = str(output) if output else None
    return RunResult(f"{variant}/{method}", method, variant, backbone, seed, seconds, output_dir=output_dir, **numbers)


@dataclass(frozen=True)
class Plan:
    """One group of rows: methods x seeds on a dataset variant with a backbone."""

    variant: str
    methods: tuple[str, ...]
    backbone: str = WORLD
    tag: str = ""  # row-name prefix when the backbone is not the default


def build_plans(args: argparse.Namespace) -> list[Plan]:
    backbone = args.backbone
    plans = [Plan("main", tuple(args.methods), backbone=backbone)]
    if args.upper_bound:
        plans.append(Plan("oracle", tuple(args.upper_bound_methods), backbone=backbone))
    controls = tuple(args.control_methods)
    for control in args.controls:
        if control == "captions-all":
            if not args.captions_all_backbone:
                raise SystemExit("--controls captions-all needs --captions-all-backbone")
            plans.append(Plan("main", controls, backbone=args.captions_all_backbone, tag="captions-all"))
        else:
            plans.append(Plan(control, controls, backbone=backbone))
    return plans


def run_benchmark(args: argparse.Namespace, log=print) -> list[RunResult]:
    from ovmlc.data.shapes_clutter import load_labelset

    sizes = QUICK_SIZES if args.quick else FULL_SIZES
    data_root = Path(args.data_root)
    work_root = Path(args.work_dir) if args.work_dir else Path(tempfile.mkdtemp(prefix="ovmlc-bench-clutter-"))
    unseen = load_labelset()["unseen"]
    results: list[RunResult] = []
    for plan in build_plans(args):
        dataset_path = prepare_variant(plan.variant, data_root, sizes, large_prob=args.large_prob)
        group = plan.tag or plan.variant
        # one folder per group (chained recipes never see another group's outputs), per CLIP and per layout
        layout_root = work_root / layout_name(args.large_prob)
        work_dir = (
            layout_root / group
            if plan.backbone == WORLD or plan.tag
            else layout_root / Path(plan.backbone).name / group
        )
        for method in plan.methods:
            seeds = args.seeds[:1] if not METHODS[method][1] else args.seeds
            for seed in seeds:
                result = run_one(
                    method, plan.variant, dataset_path, seed, work_dir, plan.backbone, unseen, args.reuse_runs
                )
                result.row = f"{group}/{method}"
                log(
                    f"{result.row} seed {seed}: "
                    + ", ".join(f"{name} {getattr(result, name):.1f}" for name in METRICS)
                    + " | by size "
                    + ", ".join(f"{k} {v:.1f}" for k, v in result.zsl_map_by_size.items())
                    + f" ({result.train_seconds:.0f} s)"
                )
                results.append(result)
                if args.json:
                    Path(args.json).write_text(json.dumps([asdict(r) for r in results], indent=1))
    return results


def _mean_sd(values: Sequence[float]) -> str:
    values = np.asarray(values, dtype=np.float64)
    if len(values) == 1:
        return f"{values[0]:.1f}"
    return f"{values.mean():.1f} ± {values.std(ddof=1):.1f}"


def _row_title(row: str) -> str:
    group, method = row.split("/", 1)
    name = METHODS[method][0]
    if group == "main":
        return name
    if group == "oracle":
        return f"supervised upper bound: {name} on all labels"
    if group == "captions-all":
        return f"{name}, captions mention everything"
    return f"{name}, {VARIANTS[group][0]}"


def markdown_tables(results: Sequence[RunResult]) -> str:
    rows = list(dict.fromkeys(result.row for result in results))
    lines = [
        "| row | ZSL mAP | ZSL F1@3 | GZSL mAP | GZSL F1@3 | seen mAP | runs | train time / run |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in rows:
        runs = [result for result in results if result.row == row]
        cells = [_mean_sd([getattr(run, name) for run in runs]) for name in METRICS]
        seconds = np.mean([run.train_seconds for run in runs])
        time_cell = "—" if not METHODS[runs[0].method][1] else f"{seconds:.0f} s"
        lines.append(f"| {_row_title(row)} | " + " | ".join(cells) + f" | {len(runs)} | {time_cell} |")

    def binned(runs: Sequence[RunResult], size_bin: str) -> list[float]:
        values = [run.zsl_map_by_size.get(size_bin, float("nan")) for run in runs]
        return [value for value in values if np.isfinite(value)]  # a bin without positives has no AP

    # the bins that hold positives somewhere (none of 6-10 px on the cell-sized layout)
    bins = [b for b in dict.fromkeys(b for r in results for b in r.zsl_map_by_size) if binned(results, b)]
    lines += ["", "ZSL mAP of the unseen shapes by the size of their largest visible instance:", ""]
    lines += ["| row | " + " | ".join(bins) + " |", "| --- |" + " ---: |" * len(bins)]
    for row in rows:
        runs = [result for result in results if result.row == row]
        cells = [_mean_sd(values) if values else "—" for values in (binned(runs, b) for b in bins)]
        lines.append(f"| {_row_title(row)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-root", default="data/shapes-clutter-bench", help="dataset variants go here")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="training seeds (0 1 2)")
    parser.add_argument("--methods", nargs="+", default=list(MAIN_METHODS), choices=list(METHODS))
    parser.add_argument("--control-methods", nargs="+", default=list(CONTROL_METHODS), choices=list(METHODS))
    parser.add_argument("--upper-bound-methods", nargs="+", default=list(UPPER_BOUND_METHODS), choices=list(METHODS))
    parser.add_argument("--no-upper-bound", dest="upper_bound", action="store_false")
    parser.add_argument(
        "--controls",
        nargs="*",
        default=["style-off", "web-off", "seen10", "seen20", "seen30", "captions-all"],
        choices=["style-off", "web-off", "seen10", "seen20", "seen30", "captions-all"],
    )
    parser.add_argument(
        "--backbone", default=WORLD, help="the CLIP of the world every other row uses (alias or folder)"
    )
    parser.add_argument(
        "--large-prob",
        type=float,
        default=None,
        help="every dataset variant with this share of cell-sized objects (`data prepare --large-prob`; 1.0: none "
        "smaller than a patch)",
    )
    parser.add_argument("--captions-all-backbone", default=None, help="CLIP pretrained with captions mentioning all")
    parser.add_argument("--quick", action="store_true", help="3k/300/1k images, seed 0 only, no captions-all")
    parser.add_argument("--work-dir", default=None, help="where the trained models go (default: a temporary folder)")
    parser.add_argument(
        "--reuse-runs", action="store_true", help="keep finished runs of the same recipe in --work-dir (resume a sweep)"
    )
    parser.add_argument("--json", default=None, help="also write every run's numbers to this JSON file")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 on a shared 2-core machine)")
    args = parser.parse_args(argv)
    if args.quick:
        args.seeds = args.seeds[:1]
        args.data_root = args.data_root.rstrip("/") + "-quick"
        if "captions-all" in args.controls and not args.captions_all_backbone:
            args.controls = [c for c in args.controls if c != "captions-all"]
    elif "captions-all" in args.controls and not args.captions_all_backbone:
        print("note: no --captions-all-backbone, skipping the captions-all control", file=sys.stderr)
        args.controls = [c for c in args.controls if c != "captions-all"]

    import torch
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    results = run_benchmark(args, log=lambda text: print(text, file=sys.stderr, flush=True))
    total = time.perf_counter() - started
    print(
        f"shapes-clutter world ({args.data_root}, test split"
        + ("" if args.large_prob is None else f", share of cell-sized objects {args.large_prob:g}")
        + f"), CLIP {args.backbone}, "
        f"seeds {' '.join(map(str, args.seeds))}; percent, mean ± "
        f"sd over seeds; CPU ({torch.get_num_threads()} threads), total wall time {total / 60:.1f} min.\n"
    )
    print(markdown_tables(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
