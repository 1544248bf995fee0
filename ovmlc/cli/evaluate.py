"""`ovmlc evaluate`: exact ZSL/GZSL metrics of a protocol preset, from a saved scores file or a model + dataset."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..files import RESULTS_FILE_NAME

DEFAULT_PROTOCOL = "generic"


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "evaluate",
        help="compute ZSL/GZSL metrics (mAP, P/R/F1@K, ...) under a protocol preset",
        description=(
            "Evaluate under a protocol preset (ovmlc/evaluation/protocols/*.yaml). Either re-score a saved scores file "
            "(--scores scores.npz: keys scores [N,C], labels [N,C] in {1,0,-1}, label_names [C], unseen [C]) or "
            "run a model over a canonical dataset split (--model + --dataset), which also saves scores.npz. "
            "Writes metrics.json, results.md, per_label_ap.csv and PNG plots to --output."
        ),
    )
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--scores", metavar="FILE.npz", help="a saved scores file (no model needed)")
    source.add_argument("--model", metavar="DIR_OR_HUB_ID", help="an ovmlc model, a CLIP checkpoint or 'synthetic'")
    parser.add_argument("--dataset", metavar="DIR_OR_HUB_ID", help="a canonical dataset (with --model)")
    parser.add_argument(
        "--protocol",
        metavar="NAME",
        help="a preset name (see --list-protocols) or a YAML file (default: generic, for a dataset of your own: "
        "every label, all images and images with a positive; name a paper's preset to compare with its numbers)",
    )
    parser.add_argument("--split", default="test", help="dataset split to evaluate (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=32, help="images per forward pass (default: %(default)s)")
    parser.add_argument("--device", default="auto", help="with --model: auto, cpu, cuda, cuda:1, mps (default: auto)")
    parser.add_argument(
        "--dtype",
        default="float32",
        choices=["float32", "bfloat16", "float16"],
        help="with --model: precision of the image side (autocast); the scoring head, scores and logits stay float32 "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--limit",
        type=int,
        default=None,
        metavar="N",
        help="use only the first N images (of the evaluated and the calibration split)",
    )
    parser.add_argument(
        "--calibrate-split",
        metavar="SPLIT",
        default=None,
        help="fit per-label and global score thresholds on this split (e.g. validation); writes thresholds.json",
    )
    parser.add_argument(
        "--calibration-scores",
        metavar="FILE.npz",
        default=None,
        help="with --scores: fit the thresholds on this scores file (same labels) instead of a dataset split",
    )
    parser.add_argument(
        "--output", metavar="DIR", default=None, help="report folder (default: ./ovmlc-eval/<protocol>-<timestamp>)"
    )
    parser.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    parser.add_argument("--list-protocols", action="store_true", help="print the available presets and exit")
    parser.set_defaults(func=run, parser=parser)


def run(args: argparse.Namespace) -> int:
    from ..evaluation.metrics import list_protocols, load_protocol

    if args.list_protocols:
        for name in list_protocols():
            protocol = load_protocol(name)
            print(f"{name:<18} K={','.join(map(str, protocol.top_k)) or '-':<6} {protocol.description}")
        return 0
    parser = args.parser
    if args.protocol is None:
        args.protocol = DEFAULT_PROTOCOL
        print(
            f"ovmlc evaluate: no --protocol given, using {DEFAULT_PROTOCOL!r} (name a paper's preset to compare with "
            f"its numbers: {', '.join(name for name in list_protocols() if name != DEFAULT_PROTOCOL)})",
            file=sys.stderr,
        )
    if args.scores is None and args.model is None:
        parser.error("give --scores FILE.npz, or --model and --dataset")
    if args.model is not None and args.dataset is None:
        parser.error("--model needs --dataset")
    if args.scores is not None and (args.dataset is not None or args.calibrate_split is not None):
        parser.error("--dataset and --calibrate-split go with --model; with --scores use --calibration-scores")
    if args.model is not None and args.calibration_scores is not None:
        parser.error("--calibration-scores goes with --scores; with --model use --calibrate-split")
    if args.limit is not None and args.limit < 1:
        parser.error("--limit must be >= 1")
    if args.batch_size < 1:
        parser.error("--batch-size must be >= 1")

    try:
        report, output_dir = _evaluate(args)
    except (ValueError, OSError) as error:
        print(f"ovmlc evaluate: error: {error}", file=sys.stderr)
        return 2
    print(f"protocol {report['protocol']}: report written to {output_dir}")
    print((output_dir / RESULTS_FILE_NAME).read_text(encoding="utf-8"))
    return 0


def _evaluate(args: argparse.Namespace) -> tuple[dict, Path]:
    from ..evaluation import engine as evaluation
    from ..evaluation.metrics import load_protocol

    protocol = load_protocol(args.protocol)
    output_dir = Path(args.output) if args.output else evaluation.default_output_dir(protocol.name)
    if args.model is not None:
        from ..core.scoring import parse_dtype, resolve_device
        from ..inference.factory import load_model

        model = load_model(args.model, device=resolve_device(args.device))
        model.name_or_path = str(args.model)  # the report names the model as given
        report = evaluation.evaluate_model(
            model,
            args.dataset,
            protocol,
            output_dir=output_dir,
            split=args.split,
            batch_size=args.batch_size,
            limit=args.limit,
            calibrate_split=args.calibrate_split,
            plots=not args.no_plots,
            image_dtype=parse_dtype(args.dtype),
        )
        return report, output_dir

    scores_file = evaluation.load_scores(args.scores)
    if args.limit is not None:

        def first_rows(rows):
            return None if rows is None else rows[: args.limit]

        scores_file = evaluation.ScoresFile(
            scores_file.scores[: args.limit],
            scores_file.labels[: args.limit],
            scores_file.label_names,
            scores_file.unseen,
            first_rows(scores_file.image_ids),
            first_rows(scores_file.unseen_scores),
            first_rows(scores_file.threshold_scores),
            first_rows(scores_file.logits),
            first_rows(scores_file.unseen_logits),
        )
    thresholds = None
    provenance = {"scores_file": str(args.scores), "limit": args.limit}
    if args.calibration_scores is not None:
        calibration = evaluation.load_scores(args.calibration_scores)
        if calibration.label_names != scores_file.label_names:
            raise ValueError(
                f"Calibration scores file {args.calibration_scores} has other labels (or another order) than "
                f"{args.scores}."
            )
        calibration_labels = calibration.labels.copy()
        calibration_labels[:, calibration.unseen] = 0  # never tune unseen labels on their annotations
        # Thresholds apply to the predicted scores (`threshold_scores` where the ranking scores differ from them).
        predicted = calibration.scores if calibration.threshold_scores is None else calibration.threshold_scores
        thresholds = evaluation.calibrate_thresholds(predicted, calibration_labels, calibration.label_names)
        evaluation.write_thresholds(
            thresholds,
            calibration_labels,
            calibration.label_names,
            output_dir,
            scores_file=str(args.calibration_scores),
        )
        provenance["calibration_scores"] = str(args.calibration_scores)
    report = evaluation.evaluate_scores(
        scores_file,
        protocol,
        output_dir=output_dir,
        thresholds=thresholds,
        plots=not args.no_plots,
        provenance=provenance,
    )
    return report, output_dir
