"""`ovmlc export onnx --model DIR_OR_ID [--labels ...] --output DIR`: ONNX graphs for deployment (onnxruntime)."""

from __future__ import annotations

import argparse
import json
import sys

from ..resources import DEFAULT_BACKBONE


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "export",
        help="export a model for deployment (ONNX)",
        description=(
            "ONNX export through torch.onnx (dynamo). With --labels/--labelset: one graph pixels -> per-label logits "
            "and scores (label bank, logit scale and bias folded into one matrix where the method's head allows). "
            "Without: image features + text encoder + head graphs, for any labels at run time. The graphs are checked "
            "against PyTorch with onnxruntime (max |logit difference| <= 1e-4). Needs `pip install 'ovmlc[onnx]'`."
        ),
    )
    formats = parser.add_subparsers(dest="format", metavar="FORMAT")
    formats.required = True
    onnx = formats.add_parser("onnx", help="ONNX graphs + export.json (see docs/tagging.md)")
    onnx.add_argument("--model", default=DEFAULT_BACKBONE, help="ovmlc model folder / Hub id, or a CLIP checkpoint")
    labels = onnx.add_mutually_exclusive_group()
    labels.add_argument("--labels", help="a fixed vocabulary: comma- or newline-separated label names")
    labels.add_argument("--labelset", help="a fixed vocabulary: a shipped label set or a JSON file")
    onnx.add_argument("--output", required=True, metavar="DIR", help="folder for the graphs")
    onnx.add_argument("--quantize", action="store_true", help="also write model.int8.onnx (dynamic int8 weights)")
    onnx.add_argument("--no-check", action="store_true", help="skip the onnxruntime vs PyTorch parity check")
    onnx.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..core.vocabulary import load_labelset
    from ..inference.export_onnx import ExportError, export_onnx
    from ..inference.factory import load_model
    from ..inference.pipeline import split_label_text

    try:
        labels = None
        if args.labels is not None:
            labels = split_label_text(args.labels)
        elif args.labelset is not None:
            labels = load_labelset(args.labelset)["labels"]
        model = load_model(args.model)
        info = export_onnx(model, args.output, labels=labels, quantize=args.quantize, check=not args.no_check)
    except (ExportError, ValueError, OSError) as error:
        print(f"ovmlc export: error: {error}", file=sys.stderr)
        return 2
    summary = {key: info[key] for key in ("layout", "method", "graphs") if key in info}
    summary.update({key: info[key] for key in ("head", "max_abs_logit_difference") if key in info})
    print(json.dumps(summary))
    print(f"exported to {args.output}", file=sys.stderr)
    return 0
