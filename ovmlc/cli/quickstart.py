"""`ovmlc quickstart`: the whole open-vocabulary pipeline on the offline synthetic world, in minutes on a CPU.

1. generate a small synthetic world (canonical dataset, seen/unseen label split in its card);
2. evaluate CLIP zero-shot on its test split (protocol `synthetic`);
3. train a method on the seen labels only, selecting on the validation split: MKT stage 1 by default, the best
   method on this world's unseen labels (README results table; `--method qks` or `clipft` for the others);
4. evaluate it ZSL (unseen labels only), GZSL (all labels) and on the seen labels alone on the test split;
5. print the paper-style table, where everything was written, and the command that opens the demo.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from ..files import CARD_FILE, EVAL_DIR, METRICS_FILE_NAME
from ..resources import DEFAULT_BACKBONE, recipe_path

# Recipe of each method the quickstart can train (hub_configs/), and the method's display name.
METHOD_RECIPES = {
    "qks": ("qks-synthetic.yaml", "QKS"),
    "mkt": ("mkt-synthetic-stage1.yaml", "MKT (stage 1)"),
    "clipft": ("clipft-synthetic.yaml", "CLIP-FT"),
}
ZERO_SHOT_RECIPE = "clip-zeroshot-eval-synthetic.yaml"
# World sizes (train, validation, test) and training length of the full run and of `--tiny` (CI).
FULL = {"num_train": 6000, "num_val": 600, "num_test": 1500, "epochs": 8}
TINY = {"num_train": 320, "num_val": 64, "num_test": 192, "epochs": 1}


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "quickstart",
        help="offline end-to-end demo: synthetic world, CLIP zero-shot, train MKT on seen labels, ZSL/GZSL table",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--output", default="ovmlc-output/quickstart", help="where data, models and reports go")
    parser.add_argument(
        "--method", choices=sorted(METHOD_RECIPES), default="mkt", help="method to train (default: mkt)"
    )
    parser.add_argument("--backbone", default=DEFAULT_BACKBONE, help="CLIP checkpoint (default: the shipped one)")
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

    sizes = TINY if args.tiny else FULL
    output = Path(args.output).resolve()
    data_dir = output / "data" / "synthetic"
    started = time.perf_counter()
    common = [f"dataset.path={data_dir}", f"backbone={args.backbone}", f"training.seed={args.seed}"]

    print(f"[1/3] Generating the synthetic world into {data_dir}", flush=True)
    if not (data_dir / CARD_FILE).is_file():
        code = cli_main(
            ["data", "prepare", "synthetic", "--out", str(data_dir), "--seed", str(args.seed),
             "--num-train", str(sizes["num_train"]), "--num-val", str(sizes["num_val"]),
             "--num-test", str(sizes["num_test"])]
        )  # fmt: skip
        if code:
            return code

    print("[2/3] CLIP zero-shot on the test split", flush=True)
    zero_shot_dir = train(
        recipe_path(ZERO_SHOT_RECIPE), [*common, f"output_dir={output / 'clip-zeroshot'}"], overwrite=True
    )

    recipe_name, method_name = METHOD_RECIPES[args.method]
    print(f"[3/3] Training {method_name} on the seen labels only", flush=True)
    overrides = [*common, f"output_dir={output / args.method}", f"training.epochs={sizes['epochs']}"]
    if args.tiny:
        overrides += ["training.checkpoint_every=1000"]
    method_dir = train(recipe_path(recipe_name), overrides, overwrite=True)

    rows = []
    for name, directory in (("CLIP zero-shot", zero_shot_dir), (method_name, method_dir)):
        report = json.loads((Path(directory) / EVAL_DIR / METRICS_FILE_NAME).read_text())
        # seen mAP: the seen labels on all test images, what training on them buys (ZSL: what it costs)
        rows.append((name, *_headline(report, "zsl"), *_headline(report, "gzsl"), _headline(report, "seen")[0]))

    print(f"\nSynthetic world, protocol `synthetic`, test split ({sizes['num_test']} images), scores in %:\n")
    print("| method | ZSL mAP | ZSL F1@3 | GZSL mAP | GZSL F1@3 | seen mAP |")
    print("|---|---|---|---|---|---|")
    for name, *values in rows:
        print(f"| {name} | " + " | ".join(_fmt(value) for value in values) + " |")
    print(f"\nDone in {time.perf_counter() - started:.0f} s.")
    print(f"  data:    {data_dir}")
    print(f"  models:  {zero_shot_dir}, {method_dir}")
    print(f"  reports: {Path(method_dir) / EVAL_DIR} (metrics.json, results.md, per_label_ap.csv, plots)")
    print(f"  demo:    python spaces/ovmlc-demo/app.py --model {method_dir} --model {args.backbone}")
    sys.stdout.flush()
    return 0
