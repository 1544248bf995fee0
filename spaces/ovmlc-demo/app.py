"""ovmlc demo Space: tag any image with any vocabulary, with per-label heatmaps.

    python spaces/ovmlc-demo/app.py [--model DIR_OR_HUB_ID ...] [--port N] [--host H]

The default model is the offline CLIP shipped with ovmlc for the shapes-clutter world of the examples
("shapes-clutter"); set OVMLC_DEMO_MODELS (comma-separated) to change the default list, e.g. on a Space:
"shapes-clutter,openai/clip-vit-base-patch16".
"""

import argparse
import os
import sys
from pathlib import Path

from ovmlc.space.demo import (
    DEFAULT_MODEL,
    DemoLimits,
    DemoModelError,
    build_demo,
    load_examples,
    load_models,
    load_presets,
)

HERE = Path(__file__).resolve().parent


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model",
        action="append",
        dest="models",
        metavar="DIR_OR_HUB_ID",
        help="model to serve (repeat for several; the first is the default and the one /predict uses). Default: "
        f"$OVMLC_DEMO_MODELS or {DEFAULT_MODEL!r} (the shipped offline model)",
    )
    parser.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", 7860)))
    parser.add_argument("--device", default=None, help="torch device for the models (default: CPU)")
    parser.add_argument("--concurrency", type=int, default=DemoLimits.concurrency, help="requests computed at once")
    parser.add_argument("--max-labels", type=int, default=DemoLimits.max_labels, help="labels per request at most")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    names = args.models or [name.strip() for name in os.environ.get("OVMLC_DEMO_MODELS", DEFAULT_MODEL).split(",")]
    try:
        models = load_models([name for name in names if name], device=args.device)
    except DemoModelError as error:
        print(f"ovmlc-demo: {error}", file=sys.stderr)
        return 2
    limits = DemoLimits(
        concurrency=args.concurrency,
        max_labels=args.max_labels,
        label_cache_size=max(DemoLimits.label_cache_size, args.max_labels),  # one request's labels always fit
    )
    demo = build_demo(
        models,
        presets=load_presets(HERE / "presets.json"),
        examples=load_examples(HERE / "examples") if (HERE / "examples").is_dir() else None,
        limits=limits,
    )
    demo.launch(server_name=args.host, server_port=args.port, max_file_size=limits.max_file_size)
    return 0


if __name__ == "__main__":
    sys.exit(main())
