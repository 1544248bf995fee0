"""LAMM on an offline synthetic world: few-shot single-label accuracy, multi-label ZSL/GZSL/seen, class-incremental
merging. Every trained row runs through the real trainer (`ovmlc.training.trainer`) with the recipes
`hub_configs/lamm-synthetic-fewshot.yaml` (single-label) and `hub_configs/lamm-synthetic.yaml` (multi-label), one
run per training seed; the method variants are recipe overrides:

* CLIP zero-shot: the LAMM recipe with `training.epochs=0` (the prompt "a photo of a {label}." of frozen CLIP);
* CoOp: unified "a photo of a" context trained, label tokens frozen (`prompt_learning.label_tokens=frozen`), the
  task loss only: CoOp through LAMM's own `coop` head (same prompt, same scaled-cosine head, same optimiser);
* LAMM: the context frozen, label tokens + hierarchical loss ("LAMM alone", the official `--origin-clip`);
* CoOp + LAMM: context and label tokens trained, hierarchical loss;
* LAMM w/o hierarchical loss (few-shot table only): the paper's ablation;
* multi-label only, with `hub_configs/lamm-dualcoop-synthetic.yaml` (LAMM's `dualcoop` head, DualCoOp's settings):
  DualCoOp (label tokens frozen: DualCoOp's negative and positive contexts, region aggregation and loss through
  LAMM's head), DualCoOp + LAMM (contexts and label tokens in both prompts trained together, hierarchical loss) and
  DualCoOp, then LAMM (`init_from` the same seed's DualCoOp run, its contexts frozen: label tokens + hierarchical
  loss only, "LAMM alone" on a trained DualCoOp).

Tables (percent, mean ± sd over seeds):

1. few-shot: top-1 accuracy on the test split (all 24 classes) vs shots, per dataset style of the world's
   single-object dataset (`standard`: objects as in CLIP's pretraining; `small`: smaller objects, a domain shift);
2. multi-label: ZSL / GZSL / seen mAP and F1@3 under the `synthetic` protocol (the columns of
   `bench_methods_synthetic.py`, scored the same way);
3. class-incremental: LAMM round 1 on the base classes, round 2 on the new classes, `merge` of the two, and CoOp
   trained on the base classes then continued on the new ones; top-1 on base images (base classes only), new images
   (new classes only) and all images (all classes).

`--world` names a world preset (`WORLDS`: its backbone and how to prepare its datasets under `--data-dir`); adding
a world (e.g. `shapes-clutter`) is one entry there, after which `--world shapes-clutter` re-runs every table.

    python benchmarks/bench_lamm_synthetic.py --world shapes-64 --data-dir data --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

import numpy as np  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
RECIPES = REPO / "hub_configs"
FEWSHOT_RECIPE = RECIPES / "lamm-synthetic-fewshot.yaml"
MULTILABEL_RECIPE = RECIPES / "lamm-synthetic.yaml"
DUALCOOP_RECIPE = RECIPES / "lamm-dualcoop-synthetic.yaml"


@dataclass(frozen=True)
class World:
    """An offline world: its CLIP and how to prepare its datasets (`ovmlc data prepare <converter> <args>`)."""

    backbone: str
    multi_label: tuple[str, tuple[str, ...]]  # (converter, extra args): the multi-label dataset
    single_label: dict[str, tuple[str, tuple[str, ...]]]  # style -> (converter, extra args): single-object datasets
    base_new_labelsets: tuple[str, str]  # label sets whose training labels are the base / the new classes
    merge_style: str  # the single-label style of the class-incremental table


WORLDS: dict[str, World] = {
    "shapes-64": World(
        backbone="synthetic",
        multi_label=("synthetic", ()),
        single_label={
            "standard": ("synthetic-single", ("--style", "standard")),
            "small": ("synthetic-single", ("--style", "small")),
        },
        base_new_labelsets=("synthetic-shapes", "synthetic-shapes-new"),
        merge_style="small",
    ),
}
# The same datasets on the SigLIP of the shapes-64 world (docs/siglip.md).
WORLDS["shapes-64-siglip"] = replace(WORLDS["shapes-64"], backbone="siglip-synthetic")

# Method variants as recipe overrides (see the module docstring).
VARIANTS: dict[str, tuple[str, tuple[str, ...]]] = {
    "clip-zs": ("CLIP zero-shot", ("training.epochs=0",)),
    "coop": (
        "CoOp",
        ("method_config.train_context=true", "method_config.prompt_learning.label_tokens=frozen"),
    ),
    "lamm": ("LAMM", ()),
    "coop-lamm": ("CoOp + LAMM", ("method_config.train_context=true",)),
    "lamm-nohl": ("LAMM w/o hierarchical loss", ("method_config.hierarchical_loss=false",)),
    "dualcoop": ("DualCoOp", ("method_config.prompt_learning.label_tokens=frozen",)),
    "dualcoop-lamm": ("DualCoOp + LAMM", ()),
    "dualcoop-then-lamm": ("DualCoOp, then LAMM (contexts frozen)", ("method_config.train_context=false",)),
}
# The multi-label recipe of each variant (default MULTILABEL_RECIPE): the DualCoOp rows use LAMM's dualcoop head.
MULTI_LABEL_RECIPES = {name: DUALCOOP_RECIPE for name in ("dualcoop", "dualcoop-lamm", "dualcoop-then-lamm")}
# Variants that start from another variant's run of the same seed (`init_from`); that variant must run first.
MULTI_LABEL_INIT_FROM = {"dualcoop-then-lamm": "dualcoop"}
FEW_SHOT_VARIANTS = ("clip-zs", "coop", "lamm", "coop-lamm", "lamm-nohl")
MULTI_LABEL_VARIANTS = ("clip-zs", "coop", "lamm", "coop-lamm", "dualcoop", "dualcoop-lamm", "dualcoop-then-lamm")
STANDARD_SHOTS = (1, 2, 4, 8, 16)
ML_METRICS = ("zsl_map", "zsl_f1_3", "gzsl_map", "gzsl_f1_3", "seen_map")


@dataclass
class Run:
    table: str  # "few-shot", "multi-label" or "merge"
    method: str
    seed: int
    seconds: float
    numbers: dict[str, float] = field(default_factory=dict)
    setting: dict = field(default_factory=dict)  # style, shots, round, ...


# ----------------------------------------------------------------------------------------------------------------------
# Data and runs
# ----------------------------------------------------------------------------------------------------------------------


def prepare(data_dir: Path, name: str, converter: str, arguments: Sequence[str]) -> Path:
    """`<data_dir>/<name>`, prepared with `ovmlc data prepare <converter> <arguments>` if missing."""
    path = data_dir / name
    if not (path / "README.md").is_file():
        from ovmlc.cli import main as cli_main

        print(f"preparing {path} ...", file=sys.stderr)
        command = ["data", "prepare", converter, "--root", converter, "--out", str(path), "--no-progress", *arguments]
        if cli_main(command):
            raise RuntimeError(f"`ovmlc {' '.join(command)}` failed")
    return path


def train_run(recipe: Path, output: Path, overrides: Sequence[str]) -> tuple[Path, float]:
    from ovmlc.training.trainer import train

    started = time.perf_counter()
    train(recipe, [f"output_dir={output}", "tracker=none", "hub.repo_id=null", *overrides], overwrite=True)
    return output, time.perf_counter() - started


def read_single_label_report(output: Path) -> dict[str, float]:
    """top-1 (percent) of the `all`, `base` and `new` views of a run's test report (those present)."""
    report = json.loads((output / "eval" / "metrics.json").read_text())
    return {
        f"{view}_top1": 100 * report["views"][view]["top1"]
        for view in ("all", "base", "new")
        if view in report["views"]
    }


def evaluate_single_label_model(
    model, dataset_path: Path, base: Sequence[str], new: Sequence[str], output_dir: Path
) -> dict[str, float]:
    """top-1 (percent) of a model on the test split: all classes, base classes on base images, new on new images."""
    from ovmlc.evaluation import evaluate_model

    report = evaluate_model(
        model,
        str(dataset_path),
        "single-label",
        output_dir=output_dir,
        label_split=(list(base), list(new)),
        plots=False,
        progress=False,
    )
    return {f"{view}_top1": 100 * report["views"][view]["top1"] for view in ("all", "base", "new")}


def few_shot_runs(
    world: World, data_dir: Path, work_dir: Path, styles: Sequence[str], shots: dict[str, Sequence[int]],
    seeds: Sequence[int], variants: Sequence[str], extra: Sequence[str] = (), log=print,
) -> list[Run]:  # fmt: skip
    runs = []
    for style in styles:
        converter, arguments = world.single_label[style]
        dataset = prepare(data_dir, f"single-{style}", converter, arguments)
        common = [f"dataset.path={dataset}", f"backbone={world.backbone}", *extra]
        for variant in variants:
            label, overrides = VARIANTS[variant]
            if variant == "clip-zs":  # no randomness, no shots
                output, seconds = train_run(FEWSHOT_RECIPE, work_dir / f"fewshot-{style}-zs", [*common, *overrides])
                numbers = read_single_label_report(output)
                runs.extend(
                    Run("few-shot", variant, seed, seconds, numbers, {"style": style, "shots": k})
                    for seed in seeds
                    for k in shots[style]
                )
                log(f"few-shot {style} {label}: top-1 {numbers['all_top1']:.2f}")
                continue
            for k in shots[style]:
                for seed in seeds:
                    output, seconds = train_run(
                        FEWSHOT_RECIPE,
                        work_dir / f"fewshot-{style}-{variant}-{k}shot-seed{seed}",
                        [*common, f"dataset.shots={k}", f"training.seed={seed}", *overrides],
                    )
                    numbers = read_single_label_report(output)
                    runs.append(Run("few-shot", variant, seed, seconds, numbers, {"style": style, "shots": k}))
                    log(
                        f"few-shot {style} {label} {k}-shot seed {seed}: top-1 {numbers['all_top1']:.2f} "
                        f"({seconds:.0f} s)"
                    )
    return runs


def multi_label_runs(
    world: World, data_dir: Path, work_dir: Path, seeds: Sequence[int], variants: Sequence[str],
    extra: Sequence[str] = (), log=print,
) -> list[Run]:  # fmt: skip
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import bench_methods_synthetic

    import ovmlc

    converter, arguments = world.multi_label
    dataset = prepare(data_dir, "multi-label", converter, arguments)
    common = [f"dataset.path={dataset}", f"backbone={world.backbone}", *extra]
    runs = []
    for variant in variants:
        label, overrides = VARIANTS[variant]
        for seed in seeds[:1] if variant == "clip-zs" else seeds:
            start = []
            if variant in MULTI_LABEL_INIT_FROM:
                source = work_dir / f"multilabel-{MULTI_LABEL_INIT_FROM[variant]}-seed{seed}"
                if not (source / "config.json").is_file():
                    raise ValueError(
                        f"variant {variant!r} starts from the {MULTI_LABEL_INIT_FROM[variant]!r} run of seed {seed} "
                        f"({source}): list {MULTI_LABEL_INIT_FROM[variant]!r} before it"
                    )
                start = [f"init_from={source}"]
            output, seconds = train_run(
                MULTI_LABEL_RECIPES.get(variant, MULTILABEL_RECIPE),
                work_dir / f"multilabel-{variant}-seed{seed}",
                [*common, f"training.seed={seed}", *overrides, *start],
            )
            numbers = bench_methods_synthetic.evaluate_model(ovmlc.load_model(str(output)), dataset)
            runs.append(Run("multi-label", variant, seed, seconds, numbers))
            log(f"multi-label {label} seed {seed}: " + ", ".join(f"{k} {v:.2f}" for k, v in numbers.items()))
    return runs


def merge_runs(
    world: World, data_dir: Path, work_dir: Path, seeds: Sequence[int], shots: int, extra: Sequence[str] = (), log=print
) -> list[Run]:
    """Class-incremental rounds (base classes, then new classes) for LAMM (merged) and CoOp (continued)."""
    import ovmlc
    from ovmlc.core.vocabulary import load_labelset

    converter, arguments = world.single_label[world.merge_style]
    dataset = prepare(data_dir, f"single-{world.merge_style}", converter, arguments)
    round1_set, round2_set = world.base_new_labelsets
    round1 = load_labelset(round1_set)
    base = [name for name in round1["labels"] if name not in set(round1["unseen"])]
    new = list(round1["unseen"])
    common = [f"dataset.path={dataset}", f"backbone={world.backbone}", f"dataset.shots={shots}", *extra]
    runs = []
    for seed in seeds:
        seeded = [*common, f"training.seed={seed}"]
        lamm1, seconds1 = train_run(
            FEWSHOT_RECIPE, work_dir / f"merge-lamm-round1-seed{seed}", [*seeded, f"dataset.train_labels={round1_set}"]
        )
        lamm2, seconds2 = train_run(
            FEWSHOT_RECIPE, work_dir / f"merge-lamm-round2-seed{seed}", [*seeded, f"dataset.train_labels={round2_set}"]
        )
        first, second = ovmlc.load_model(str(lamm1)), ovmlc.load_model(str(lamm2))
        merged = first.merge(second)
        coop_overrides = VARIANTS["coop"][1]
        coop1, seconds3 = train_run(
            FEWSHOT_RECIPE,
            work_dir / f"merge-coop-round1-seed{seed}",
            [*seeded, f"dataset.train_labels={round1_set}", *coop_overrides],
        )
        coop2, seconds4 = train_run(
            FEWSHOT_RECIPE,
            work_dir / f"merge-coop-round2-seed{seed}",
            [*seeded, f"dataset.train_labels={round2_set}", f"init_from={coop1}", *coop_overrides],
        )
        for name, model, seconds in (
            ("lamm-round1", first, seconds1),
            ("lamm-round2", second, seconds2),
            ("lamm-merged", merged, seconds1 + seconds2),
            ("coop-round1", ovmlc.load_model(str(coop1)), seconds3),
            ("coop-round2", ovmlc.load_model(str(coop2)), seconds3 + seconds4),
        ):
            numbers = evaluate_single_label_model(model, dataset, base, new, work_dir / f"merge-eval-{name}-seed{seed}")
            runs.append(Run("merge", name, seed, seconds, numbers, {"style": world.merge_style, "shots": shots}))
            log(f"merge {name} seed {seed}: " + ", ".join(f"{k} {v:.2f}" for k, v in numbers.items()))
    return runs


# ----------------------------------------------------------------------------------------------------------------------
# Tables
# ----------------------------------------------------------------------------------------------------------------------


def mean_sd(values: Sequence[float]) -> tuple[float, float]:
    values = np.asarray(values, dtype=np.float64)
    return float(values.mean()), float(values.std(ddof=1)) if len(values) > 1 else 0.0


def cell(values: Sequence[float]) -> str:
    mean, sd = mean_sd(values)
    return f"{mean:.2f} ± {sd:.2f}" if len(values) > 1 else f"{mean:.2f}"


def few_shot_table(runs: Sequence[Run], style: str) -> str:
    rows = [run for run in runs if run.table == "few-shot" and run.setting["style"] == style]
    shots = sorted({run.setting["shots"] for run in rows})
    lines = ["| method | " + " | ".join(f"{k}-shot" for k in shots) + " |", "|---" + "|---:" * len(shots) + "|"]
    for variant in dict.fromkeys(run.method for run in rows):
        cells = []
        for k in shots:
            values = [run.numbers["all_top1"] for run in rows if run.method == variant and run.setting["shots"] == k]
            cells.append(cell(values) if variant != "clip-zs" else f"{values[0]:.2f}")
        lines.append(f"| {VARIANTS[variant][0]} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def multi_label_table(runs: Sequence[Run]) -> str:
    rows = [run for run in runs if run.table == "multi-label"]
    header = "| method | ZSL mAP | ZSL F1@3 | GZSL mAP | GZSL F1@3 | seen mAP | runs | train time / run |"
    lines = [header, "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for variant in dict.fromkeys(run.method for run in rows):
        selected = [run for run in rows if run.method == variant]
        cells = [cell([run.numbers[name] for run in selected]) for name in ML_METRICS]
        seconds = mean_sd([run.seconds for run in selected])[0]
        lines.append(f"| {VARIANTS[variant][0]} | " + " | ".join(cells) + f" | {len(selected)} | {seconds:.0f} s |")
    return "\n".join(lines)


MERGE_ROWS = {
    "lamm-round1": "LAMM round 1 (base classes)",
    "lamm-round2": "LAMM round 2 (new classes)",
    "lamm-merged": "LAMM merged (round 1 + round 2)",
    "coop-round1": "CoOp round 1 (base classes)",
    "coop-round2": "CoOp round 2 (continued on the new classes)",
}


def merge_table(runs: Sequence[Run]) -> str:
    rows = [run for run in runs if run.table == "merge"]
    lines = [
        "| model | base top-1 (base images, base classes) | new top-1 (new images, new classes) "
        "| all top-1 (all classes) |",
        "| --- | ---: | ---: | ---: |",
    ]
    for name, title in MERGE_ROWS.items():
        selected = [run for run in rows if run.method == name]
        if selected:
            cells = [cell([run.numbers[f"{view}_top1"] for run in selected]) for view in ("base", "new", "all")]
            lines.append(f"| {title} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--world", default="shapes-64", choices=sorted(WORLDS), help="world preset (WORLDS)")
    parser.add_argument("--data-dir", default="data/lamm-bench", help="where the world's datasets are prepared")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--tables", nargs="+", default=["few-shot", "multi-label", "merge"])
    parser.add_argument("--styles", nargs="+", default=None, help="single-label styles (default: all of the world)")
    parser.add_argument("--shots", type=int, nargs="+", default=list(STANDARD_SHOTS))
    parser.add_argument(
        "--standard-shots", type=int, nargs="+", default=None, help="shots for the `standard` style (default --shots)"
    )
    parser.add_argument(
        "--multi-label-variants", nargs="+", default=list(MULTI_LABEL_VARIANTS), choices=MULTI_LABEL_VARIANTS,
        help="rows of the multi-label table",
    )  # fmt: skip
    parser.add_argument("--merge-shots", type=int, default=16)
    parser.add_argument("--work-dir", default=None, help="trained models (default: a temporary folder)")
    parser.add_argument("--json", default=None, help="also write every run to this JSON file")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 on a shared machine)")
    args = parser.parse_args(argv)

    import torch
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    torch.set_num_threads(args.threads)
    world = WORLDS[args.world]
    data_dir = Path(args.data_dir) / args.world
    work_dir = Path(args.work_dir) if args.work_dir else Path(tempfile.mkdtemp(prefix="ovmlc-bench-lamm-"))
    styles = args.styles or list(world.single_label)
    shots = {style: (args.standard_shots or args.shots) if style == "standard" else args.shots for style in styles}

    def log(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    started = time.perf_counter()
    runs: list[Run] = []
    if "few-shot" in args.tables:
        runs += few_shot_runs(world, data_dir, work_dir, styles, shots, args.seeds, FEW_SHOT_VARIANTS, log=log)
    if "multi-label" in args.tables:
        runs += multi_label_runs(world, data_dir, work_dir, args.seeds, args.multi_label_variants, log=log)
    if "merge" in args.tables:
        runs += merge_runs(world, data_dir, work_dir, args.seeds, args.merge_shots, log=log)
    total = time.perf_counter() - started
    print(
        f"LAMM on the {args.world} world (backbone {world.backbone!r}), seeds {' '.join(map(str, args.seeds))}; "
        f"percent, mean ± sd over seeds; CPU ({torch.get_num_threads()} thread(s)), total {total / 60:.1f} min.\n"
    )
    for style in styles if "few-shot" in args.tables else ():
        print(f"Few-shot single-label top-1 accuracy, single-object images, style `{style}` (24 classes):\n")
        print(few_shot_table(runs, style) + "\n")
    if "multi-label" in args.tables:
        print("Multi-label (`synthetic` protocol, 28 seen / 10 unseen labels):\n")
        print(multi_label_table(runs) + "\n")
    if "merge" in args.tables:
        print(f"Class-incremental, {args.merge_shots}-shot, style `{world.merge_style}` (18 base / 6 new classes):\n")
        print(merge_table(runs) + "\n")
    if args.json:
        Path(args.json).write_text(json.dumps([asdict(run) for run in runs], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
