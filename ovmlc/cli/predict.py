"""`ovmlc predict INPUT... --labels "a,b,c" [--output tags.jsonl]`: tag images, folders, globs, lists or a dataset.

Also `python -m ovmlc.predict ...` / `accelerate launch -m ovmlc.predict ...` (one output shard per process, merged).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..resources import DEFAULT_BACKBONE


def threshold_value(text: str) -> float | str:
    """A number, `calibrated`, or the path of a `thresholds.json` (as `ovmlc evaluate --calibrate-split` writes)."""
    if text == "calibrated":
        return text
    try:
        return float(text)
    except ValueError:
        pass
    if Path(text).is_file():
        return text
    raise argparse.ArgumentTypeError(
        f"threshold must be a number, 'calibrated' or a thresholds.json file; got {text!r} (no such file)"
    )


def load_threshold(value: float | str | None) -> float | str | dict | None:
    """A `--threshold` value as `model.predict` takes it (a thresholds.json becomes its dict)."""
    if not isinstance(value, str) or value == "calibrated":
        return value
    try:
        content = json.loads(Path(value).read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise ValueError(f"{value}: not a readable thresholds JSON file ({error})") from None
    if not isinstance(content, dict):
        raise ValueError(f"{value}: a thresholds file holds an object ({{label: threshold}} or label_thresholds)")
    return content


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "predict",
        help="tag images (files, folders, globs, path lists or a dataset) with any list of labels",
        description=(
            "Score every given label for every image (independent sigmoid scores, no softmax). Inputs: image files, "
            "folders (recursive), quoted glob patterns ('photos/**/*.jpg'), .txt/.lst files of paths, or --dataset. "
            "Without --output the results are printed; with --output FILE (.jsonl, .csv, .parquet) they are written "
            "as they come, unreadable images go to FILE's .errors.jsonl, and --resume continues a killed run. Under "
            "`accelerate launch -m ovmlc.predict` every process tags its share and the main process merges."
        ),
    )
    parser.add_argument("images", nargs="*", metavar="INPUT", help="image files, folders, glob patterns, path lists")
    parser.add_argument("--dataset", metavar="DIR_OR_HUB_ID", help="a canonical dataset to tag (keys: image_id)")
    parser.add_argument("--split", default="test", help="dataset split with --dataset (default: %(default)s)")
    labels = parser.add_mutually_exclusive_group(required=True)
    labels.add_argument("--labels", help='comma- or newline-separated label names, e.g. "cat, dog, red car"')
    labels.add_argument("--labelset", help="a shipped label set (e.g. coco-80, nus-wide-81, synthetic) or a JSON file")
    parser.add_argument(
        "--model",
        default=DEFAULT_BACKBONE,
        help="ovmlc model folder / Hub id, or a CLIP checkpoint (default: %(default)s)",
    )
    parser.add_argument("--top-k", type=int, default=None, help="keep at most K labels per image (default 5)")
    parser.add_argument(
        "--threshold",
        type=threshold_value,
        default=None,
        help="min score: a number, 'calibrated' (the model's stored thresholds) or a thresholds.json file",
    )
    parser.add_argument("--output", metavar="FILE", help="write results to FILE (.jsonl, .csv or .parquet)")
    parser.add_argument("--resume", action="store_true", help="continue --output, skipping images it holds")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --output")
    parser.add_argument("--all-scores", action="store_true", help="also write every label's score (a vector column)")
    parser.add_argument("--label-maps", action="store_true", help="also write the kept labels' maps (JSONL/Parquet)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, mps (default: %(default)s)")
    parser.add_argument(
        "--dtype",
        default="float32",
        choices=["float32", "bfloat16", "float16"],
        help="image-side precision (the head stays float32; default: %(default)s)",
    )
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--num-workers", type=int, default=None, help="image decoding workers (default: cores - 1)")
    parser.add_argument(
        "--fast-decode",
        action="store_true",
        help="decode JPEGs at a reduced scale (DCT scaling) that still covers the model's input size: much faster "
        "for large photos, scores differ slightly from a full decode",
    )
    parser.add_argument(
        "--rows-per-part",
        type=int,
        default=None,
        metavar="N",
        help="Parquet: rows per complete part file while running (what a kill can lose; default 1024)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--json", action="store_true", help="without --output: print JSON instead of a table")
    parser.set_defaults(func=run, parser=parser)


def run(args: argparse.Namespace) -> int:
    from ..inference.tagging import TaggingError

    if args.top_k is None and args.threshold is None:
        args.top_k = 5
    if not args.images and args.dataset is None:
        args.parser.error("give INPUT files/folders/patterns/lists, or --dataset")
    if args.images and args.dataset is not None:
        args.parser.error("give either INPUT paths or --dataset, not both")
    if args.output is None and (args.resume or args.overwrite):
        args.parser.error("--resume and --overwrite go with --output")
    try:
        return _run(args)
    except (TaggingError, ValueError, OSError) as error:
        print(f"ovmlc predict: error: {error}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace) -> int:
    from ..core.outputs import rank_labels
    from ..core.scoring import parse_dtype, resolve_device
    from ..core.vocabulary import load_labelset
    from ..inference import tagging
    from ..inference.factory import load_model
    from ..inference.pipeline import split_label_text

    label_names = split_label_text(args.labels) if args.labels is not None else load_labelset(args.labelset)["labels"]
    rows = None
    if args.dataset is not None:
        from ..data import load_canonical

        sources, rows = tagging.dataset_sources(load_canonical(args.dataset, split=args.split))
    else:
        sources = tagging.file_sources(tagging.discover_image_files(args.images))
    group = tagging.current_process_group()
    device = group.device if group.count > 1 and args.device == "auto" else resolve_device(args.device)
    image_dtype = parse_dtype(args.dtype)
    threshold = load_threshold(args.threshold)
    model = load_model(args.model, device=device)
    options = dict(
        batch_size=args.batch_size,
        image_dtype=image_dtype,
        label_maps=args.label_maps,
        fast_decode=args.fast_decode,
        rows=rows,
    )

    if args.output is not None:
        summary = tagging.tag_to_file(
            model,
            sources,
            label_names,
            args.output,
            top_k=args.top_k,
            threshold=threshold,
            num_workers=args.num_workers,
            all_scores=args.all_scores,
            resume=args.resume,
            overwrite=args.overwrite,
            progress=not args.no_progress,
            group=group,
            model_id=str(args.model),
            threshold_id=args.threshold,
            **({"rows_per_part": args.rows_per_part} if args.rows_per_part is not None else {}),
            **options,
        )
        if group.is_main:
            who = "tagged" if group.count == 1 else f"process 1 of {group.count} tagged"
            where = f" ({summary.failed} unreadable, listed in {summary.errors_file})" if summary.failed else ""
            skipped = f", {summary.skipped} already there" if summary.skipped else ""
            print(
                f"{who} {summary.tagged} images at {summary.images_per_second:.1f} img/s{skipped}{where}; "
                f"{summary.output} holds {summary.rows} rows",
                file=sys.stderr,
            )
        return 0

    if group.count > 1:
        raise ValueError("several processes need --output (each writes a shard, merged at the end)")
    if args.all_scores:
        raise ValueError("--all-scores needs --output")
    vocabulary = model.vocabulary(label_names)
    thresholds = model.resolve_thresholds(vocabulary.names, threshold)
    label_embeds = model.encode_labels(vocabulary).float()
    num_workers = tagging.default_num_workers() if args.num_workers is None else args.num_workers
    results, failed = [], []
    for batch in tagging.tag_batches(model, sources, label_embeds, num_workers=num_workers, **options):
        ranked = rank_labels(batch.scores, vocabulary.names, top_k=args.top_k, thresholds=thresholds)
        results += zip(batch.keys, ranked)
        failed += batch.failed
    for _key, message in failed:
        print(f"ovmlc predict: skipped unreadable image: {message}", file=sys.stderr)
    if args.json:
        payload = [
            {"image": key, "labels": [{"label": label, "score": round(score, 6)} for label, score in ranked]}
            for key, ranked in results
        ]
        print(json.dumps(payload, indent=2))
    else:
        for key, ranked in results:
            print(key)
            for label, score in ranked:
                print(f"  {score:7.4f}  {label}")
            if not ranked:
                print("  (no label above the threshold)")
    return 1 if failed else 0
