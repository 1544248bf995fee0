"""`ovmlc pretrain-vlp`: contrastive pretraining of a small CLIP on the synthetic world (engine: `ovmlc.vlp`)."""

from __future__ import annotations

import argparse
import json
import sys


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "pretrain-vlp",
        help="pretrain a small CLIP on the synthetic shapes-64 world (offline, CPU)",
        description=(
            "Pretrain a small CLIPModel contrastively on ovmlc's procedural image + caption world and save it as a "
            "Hub-layout folder (config, safetensors, tokenizer, CLIPImageProcessorPil config, model card)."
        ),
    )
    parser.add_argument("--config", required=True, help="recipe YAML, e.g. hub_configs/clip-synthetic.yaml")
    parser.add_argument("--output-dir", default=None, help="override the recipe's output_dir")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..training.pretrain_vlp import VLPPretrainConfig, pretrain_vlp

    try:
        config = VLPPretrainConfig.from_yaml(args.config)
    except ValueError as error:
        print(f"ovmlc pretrain-vlp: error: {error}", file=sys.stderr)
        return 2
    if args.output_dir is not None:
        config.output_dir = args.output_dir
    results = pretrain_vlp(config, recipe_path=args.config, show_progress=not args.no_progress)
    summary = {
        "output_dir": results["output_dir"],
        "zero_shot": {k: round(v, 2) for k, v in results["zero_shot"].items() if isinstance(v, (int, float))},
        "wall_time_s": round(results["timings"]["total_s"], 1),
    }
    print(json.dumps(summary, indent=2))
    return 0
