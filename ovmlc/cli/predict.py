"""`ovmlc predict IMAGE... --labels "a,b,c"`: tag images with any labels."""

from __future__ import annotations

import argparse
import json
import sys

from ..resources import DEFAULT_BACKBONE


def threshold_value(text: str) -> float | str:
    if text == "calibrated":
        return text
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"threshold must be a number or 'calibrated', got {text!r}") from None


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "predict",
        help="tag images with any list of labels",
        description="Score every given label for every image (independent sigmoid scores, no softmax).",
    )
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="image files")
    labels = parser.add_mutually_exclusive_group(required=True)
    labels.add_argument("--labels", help='comma- or newline-separated label names, e.g. "cat, dog, red car"')
    labels.add_argument("--labelset", help="a shipped label set (e.g. coco-80, voc2007, nus-wide-81, synthetic)")
    parser.add_argument(
        "--model",
        default=DEFAULT_BACKBONE,
        help="ovmlc model folder / Hub id, or a CLIP checkpoint (default: %(default)s)",
    )
    parser.add_argument("--top-k", type=int, default=None, help="keep at most K labels per image")
    parser.add_argument("--threshold", type=threshold_value, default=None, help="min score, or 'calibrated'")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..core.images import ImageLoadError
    from ..core.vocabulary import load_labelset
    from ..inference.factory import load_model
    from ..inference.pipeline import split_label_text

    if args.top_k is None and args.threshold is None:
        args.top_k = 5
    label_names = split_label_text(args.labels) if args.labels is not None else load_labelset(args.labelset)["labels"]
    try:
        model = load_model(args.model)
        results = model.predict(
            args.images, label_names, top_k=args.top_k, threshold=args.threshold, batch_size=args.batch_size
        )
    except (ImageLoadError, ValueError, OSError) as error:
        print(f"ovmlc predict: error: {error}", file=sys.stderr)
        return 2
    if args.json:
        payload = [
            {"image": image, "labels": [{"label": label, "score": round(score, 6)} for label, score in ranked]}
            for image, ranked in zip(args.images, results)
        ]
        print(json.dumps(payload, indent=2))
        return 0
    for image, ranked in zip(args.images, results):
        print(image)
        for label, score in ranked:
            print(f"  {score:7.4f}  {label}")
        if not ranked:
            print("  (no label above the threshold)")
    return 0
