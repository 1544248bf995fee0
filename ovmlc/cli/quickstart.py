"""`ovmlc quickstart`: the whole open-vocabulary pipeline on an offline synthetic world, in minutes on a CPU.

1. generate a small world (canonical dataset, seen/unseen label split in its card): by default `shapes-clutter` with
   only cell-sized objects (4-10 per image, its own CLIP pretrained on captions of the salient ones), or `--world
   synthetic` (shapes-64, where zero-shot is near the ceiling);
2. evaluate CLIP zero-shot on its test split (protocol `synthetic`);
3. train a method on the seen labels only, selecting on the validation split: full CLIP fine-tuning on
   shapes-clutter (it shows both sides: the seen labels gain, the unseen ones are forgotten), MKT stage 1 on
   shapes-64 (`--method` for the others);
4. evaluate it ZSL (unseen labels only), GZSL (all labels) and on the seen labels alone on the test split;
5. print the paper-style table, where everything was written, and the command that opens the demo.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from ..files import CARD_FILE, EVAL_DIR, METRICS_FILE_NAME
from ..resources import SHAPES_CLUTTER_CLIP_ALIAS, SYNTHETIC_CLIP_ALIAS, recipe_path

# Display name of each method the quickstart can train.
METHOD_NAMES = {"clipft": "CLIP-FT", "mkt": "MKT (stage 1)", "qks": "QKS"}


@dataclass(frozen=True)
class QuickstartWorld:
    """An offline world the quickstart runs on: how its data is prepared, its CLIP, and its recipes (hub_configs/)."""

    title: str
    source: str  # `ovmlc data prepare` source
    prepare_args: tuple[str, ...]  # extra `ovmlc data prepare` flags
    backbone: str  # the shipped CLIP's alias
    zero_shot_recipe: str
    method_recipes: dict[str, str]  # method → recipe, keys of METHOD_NAMES
    default_method: str


WORLDS = {
    "shapes-clutter": QuickstartWorld(
        title="Shapes-clutter world, cell-sized objects (--large-prob 1.0)",
        source="shapes-clutter",
        prepare_args=("--large-prob", "1.0"),
        backbone=SHAPES_CLUTTER_CLIP_ALIAS,
        zero_shot_recipe="clip-zeroshot-eval-shapes-clutter.yaml",
        method_recipes={
            "clipft": "clipft-shapes-clutter.yaml",
            "mkt": "mkt-shapes-clutter-stage1.yaml",
            "qks": "qks-shapes-clutter.yaml",
        },
        default_method="clipft",
    ),
    "synthetic": QuickstartWorld(
        title="Synthetic shapes-64 world",
        source="synthetic",
        prepare_args=(),
        backbone=SYNTHETIC_CLIP_ALIAS,
        zero_shot_recipe="clip-zeroshot-eval-synthetic.yaml",
        method_recipes={
            "clipft": "clipft-synthetic.yaml",
            "mkt": "mkt-synthetic-stage1.yaml",
            "qks": "qks-synthetic.yaml",
        },
        default_method="mkt",
    ),
}
DEFAULT_WORLD = "shapes-clutter"
# World sizes (train, validation, test) and training length of the full run and of `--tiny` (CI).
FULL = {"num_train": 6000, "num_val": 600, "num_test": 1500, "epochs": 8}
TINY = {"num_train": 320, "num_val": 64, "num_test": 192, "epochs": 1}


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "quickstart",
        help="offline end-to-end demo: synthetic world, CLIP zero-shot, train a method on seen labels, ZSL/GZSL table",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--output", default="ovmlc-output/quickstart", help="where data, models and reports go")
    parser.add_argument(
        "--world", choices=sorted(WORLDS), default=DEFAULT_WORLD, help=f"offline world (default: {DEFAULT_WORLD})"
    )
    parser.add_argument(
        "--method",
        choices=sorted(METHOD_NAMES),
        default=None,
        help="method to train (default: clipft on shapes-clutter, mkt on synthetic)",
    )
    parser.add_argument("--backbone", default=None, help="CLIP checkpoint (default: the world's shipped CLIP)")
    parser.add_argument("--tiny", action="store_true", help="a few hundred images and one epoch (CI smoke run)")
    parser.add_argument("--seed", type=int, default=0)
    parser.set_defaults(func=run)


def _headline(report: dict, view: str) -> tuple[float | None, float | None]:
    """(mAP, F1@3) in percent for a view of an `ovmlc evaluate` metrics.json."""
    metrics = report.get("views", {}).get(view, {})
    average_precision = metrics.get("mAP")
    f1_at_3 = (metrics.get("top_k", {}).get("3") or {}).get("f1")
    return tuple(None if value is None else 100.0 * value for value in (average_precision, f1_at_3))


def _fmt(value: float | None) -> str:
    return "  n/a" if value is None else f"{value:5.1f}"


def run(args: argparse.Namespace) -> int:
    from ..training.trainer import train
    from . import main as cli_main

    world = WORLDS[args.world]
    method = args.method or world.default_method
    backbone = args.backbone or world.backbone
    sizes = TINY if args.tiny else FULL
    output = Path(args.output).resolve()
    data_dir = output / "data" / args.world
    started = time.perf_counter()
    common = [f"dataset.path={data_dir}", f"backbone={backbone}", f"training.seed={args.seed}"]

    print(f"[1/3] Generating the world ({world.title}) into {data_dir}", flush=True)
    if not (data_dir / CARD_FILE).is_file():
        code = cli_main(
            ["data", "prepare", world.source, "--out", str(data_dir), "--seed", str(args.seed),
             "--num-train", str(sizes["num_train"]), "--num-val", str(sizes["num_val"]),
             "--num-test", str(sizes["num_test"]), *world.prepare_args]
        )  # fmt: skip
        if code:
            return code

    print("[2/3] CLIP zero-shot on the test split", flush=True)
    zero_shot_dir = train(
        recipe_path(world.zero_shot_recipe), [*common, f"output_dir={output / 'clip-zeroshot'}"], overwrite=True
    )

    method_name = METHOD_NAMES[method]
    print(f"[3/3] Training {method_name} on the seen labels only", flush=True)
    overrides = [*common, f"output_dir={output / method}", f"training.epochs={sizes['epochs']}"]
    if args.tiny:
        overrides += ["training.checkpoint_every=1000"]
    method_dir = train(recipe_path(world.method_recipes[method]), overrides, overwrite=True)

    rows = []
    for name, directory in (("CLIP zero-shot", zero_shot_dir), (method_name, method_dir)):
        report = json.loads((Path(directory) / EVAL_DIR / METRICS_FILE_NAME).read_text())
        # seen mAP: the seen labels on all test images, what training on them buys (ZSL: what it costs)
        rows.append((name, *_headline(report, "zsl"), *_headline(report, "gzsl"), _headline(report, "seen")[0]))

    print(f"\n{world.title}, protocol `synthetic`, test split ({sizes['num_test']} images), scores in %:\n")
    print("| method | ZSL mAP | ZSL F1@3 | GZSL mAP | GZSL F1@3 | seen mAP |")
    print("|---|---|---|---|---|---|")
    for name, *values in rows:
        print(f"| {name} | " + " | ".join(_fmt(value) for value in values) + " |")
    (_, zero_shot_zsl, *_, zero_shot_seen), (_, method_zsl, *_, method_seen) = rows
    if None not in (zero_shot_zsl, zero_shot_seen, method_zsl, method_seen):
        print(
            f"\nTraining {method_name} on the seen labels moved their mAP by {method_seen - zero_shot_seen:+.1f} and "
            f"the unseen labels' (ZSL) mAP by {method_zsl - zero_shot_zsl:+.1f}."
        )
    print(f"\nDone in {time.perf_counter() - started:.0f} s.")
    print(f"  data:    {data_dir}")
    print(f"  models:  {zero_shot_dir}, {method_dir}")
    print(f"  reports: {Path(method_dir) / EVAL_DIR} (metrics.json, results.md, per_label_ap.csv, plots)")
    print(f"  demo:    python spaces/ovmlc-demo/app.py --model {method_dir} --model {backbone}")
    sys.stdout.flush()
    return 0
