"""`ovmlc data ...`: build canonical multi-label datasets from raw releases or your own data.

ovmlc data prepare <source> --root RAW --out DIR [--val-fraction 0.1 --seed 0 --partial-ratio P]
ovmlc data info DIR_OR_HUB_ID

Upload a prepared folder with `ovmlc push-dataset --data DIR --repo org/name` (it keeps the card).
"""

from __future__ import annotations

import argparse
import sys


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"expected a fraction in [0, 1), got {value}")
    return value


def _proportion(text: str) -> float:
    value = _fraction(text)
    if value == 0.0:
        raise argparse.ArgumentTypeError("--partial-ratio must be in (0, 1)")
    return value


def _add_common_prepare_arguments(parser: argparse.ArgumentParser, requires_root: bool = True) -> None:
    parser.add_argument("--root", required=requires_root, help="raw source: folder, table file, parquet path or Hub id")
    parser.add_argument("--out", required=True, help="output folder (parquet shards + README.md dataset card)")
    parser.add_argument(
        "--val-fraction", type=_fraction, default=0.1, help="validation hold-out from the training images (0.1)"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the validation hold-out and partial masking (0)")
    parser.add_argument(
        "--partial-ratio",
        type=_proportion,
        default=None,
        metavar="P",
        help="partial labels (DualCoOp protocol): keep each annotated train/validation entry with probability P "
        "(0.1 ... 0.9), the rest become unannotated; stored in the data, seeded, not redrawn per run",
    )
    parser.add_argument(
        "--verify-images",
        choices=("full", "header"),
        default="full",
        help="full: decode every image (catches truncated files); header: quicker header check",
    )
    parser.add_argument(
        "--exif-orientation",
        choices=("apply", "raw"),
        default="apply",
        help="images with an EXIF orientation tag are stored without it: apply: turned upright (as ovmlc and "
        "datasets show them); raw: the pixels as encoded",
    )
    parser.add_argument("--num-workers", type=int, default=1, help="threads reading/verifying images (1)")
    parser.add_argument("--limit", type=int, default=None, help="read at most N images per source split (trial runs)")
    parser.add_argument("--max-shard-size", type=int, default=500, metavar="MB", help="parquet shard size (500 MB)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing ovmlc dataset in --out")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def register(subparsers) -> None:
    from . import command_requested

    parser = subparsers.add_parser(
        "data",
        help="prepare canonical multi-label datasets (NUS-WIDE, COCO, VOC, Open Images, your own data)",
        description="Build and inspect canonical ovmlc datasets (parquet + dataset card). See docs/data.md.",
    )
    actions = parser.add_subparsers(dest="data_command", metavar="ACTION")
    actions.required = True

    prepare = actions.add_parser(
        "prepare",
        help="convert a raw source into a canonical DatasetDict (train / validation / test)",
        description="Convert a raw source into a canonical dataset folder loadable with datasets.load_dataset(DIR).",
    )
    sources = prepare.add_subparsers(dest="source", metavar="SOURCE")
    sources.required = True
    # The converters (and the datasets library they import) load only when `data prepare` is being parsed.
    converters = {}
    if command_requested(subparsers, "data", "prepare"):
        from ovmlc.data.converters import CONVERTERS as converters
    for name, converter in converters.items():
        source_parser = sources.add_parser(name, help=converter.help, description=converter.help)
        _add_common_prepare_arguments(source_parser, requires_root=getattr(converter, "requires_root", True))
        converter.add_arguments(source_parser)
        source_parser.set_defaults(func=run_prepare)

    info = actions.add_parser("info", help="print the label split and sizes of a canonical dataset")
    info.add_argument("dataset", help="canonical dataset folder or Hub id")
    info.set_defaults(func=run_info)


def run_prepare(args: argparse.Namespace) -> int:
    from ovmlc.data.converters import get_converter
    from ovmlc.data.prepare import PrepareOptions, prepare_canonical

    converter = get_converter(args.source)
    options = PrepareOptions(
        val_fraction=args.val_fraction,
        seed=args.seed,
        partial_ratio=args.partial_ratio,
        verify=args.verify_images,
        exif_orientation=args.exif_orientation,
        num_workers=max(1, args.num_workers),
        limit=args.limit,
        overwrite=args.overwrite,
        max_shard_bytes=args.max_shard_size * 1024**2,
        progress=not args.no_progress,
    )
    try:
        plan = converter.plan(args)
        summary = prepare_canonical(plan, args.out, options)
    except (ValueError, KeyError, OSError) as error:
        message = error.args[0] if isinstance(error, KeyError) and error.args else error
        print(f"ovmlc data prepare {args.source}: error: {message}", file=sys.stderr)
        return 2
    print(summary.format())
    return 0


def run_info(args: argparse.Namespace) -> int:
    from ovmlc.data import load_canonical, read_card_metadata

    try:
        block = read_card_metadata(args.dataset)
        dataset = load_canonical(args.dataset)
    except (ValueError, OSError) as error:
        print(f"ovmlc data info: error: {error}", file=sys.stderr)
        return 2
    print(f"{args.dataset}: source {block['source']} (converter {block['converter_version']})")
    print(f"  annotation: {block['annotation']}")
    print(f"  labels: {len(block['seen_labels'])} seen, {len(block['unseen_labels'])} unseen")
    if block.get("partial_label_proportion") is not None:
        proportion, seed = block["partial_label_proportion"], block.get("partial_label_seed")
        print(f"  partial labels: kept proportion {proportion} (seed {seed})")
    for split, split_dataset in dataset.items():
        print(f"  {split}: {len(split_dataset):,} images")
    return 0
