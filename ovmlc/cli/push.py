"""`ovmlc push --model DIR --repo org/name` and `ovmlc push-dataset --data DIR --repo org/name`."""

from __future__ import annotations

import argparse
import sys


def register(subparsers) -> None:
    model_parser = subparsers.add_parser(
        "push",
        help="push a saved/trained model folder to the Hub with a generated model card",
        description=(
            "Validate a folder written by `save_pretrained` or `ovmlc train` (safetensors weights, config.json with "
            "auto_map, method code, processor files) and upload it in one commit with a model card generated from "
            "its config, recipe, trainer state and evaluation report. The token and endpoint come from HF_TOKEN / "
            "HF_ENDPOINT (or `hf auth login`)."
        ),
    )
    model_parser.add_argument(
        "--model", required=True, metavar="DIR", help="model folder (save_pretrained/ovmlc train)"
    )
    model_parser.add_argument("--repo", required=True, metavar="ORG/NAME", help="Hub model repo id")
    model_parser.add_argument("--private", action="store_true", default=None, help="create the repo as private")
    model_parser.add_argument("--revision", metavar="BRANCH", help="branch to push to (created from main if missing)")
    model_parser.add_argument("--commit-message", help="commit message (default: 'Upload ovmlc model')")
    model_parser.add_argument("--license", help="license id for the card metadata (default: the recipe's hub.license)")
    model_parser.add_argument(
        "--dry-run", action="store_true", help="validate and print the file list and the card, upload nothing"
    )
    model_parser.set_defaults(func=run_push_model)

    dataset_parser = subparsers.add_parser(
        "push-dataset",
        help="push a canonical dataset folder (ovmlc data prepare) to the Hub with its dataset card",
        description=(
            "Validate a folder written by `ovmlc data prepare` (README.md with `configs` and an `ovmlc:` block, "
            "parquet shards) and upload it as-is to a dataset repo, so `datasets.load_dataset(repo)` and "
            "`ovmlc.data.load_canonical(repo)` work."
        ),
    )
    dataset_parser.add_argument("--data", required=True, metavar="DIR", help="canonical dataset folder")
    dataset_parser.add_argument("--repo", required=True, metavar="ORG/NAME", help="Hub dataset repo id")
    dataset_parser.add_argument("--private", action="store_true", default=None, help="create the repo as private")
    dataset_parser.add_argument("--revision", metavar="BRANCH", help="branch to push to (created from main if missing)")
    dataset_parser.add_argument("--commit-message", help="commit message")
    dataset_parser.add_argument("--dry-run", action="store_true", help="validate and print the file list only")
    dataset_parser.set_defaults(func=run_push_dataset)


def _hub_errors() -> tuple[type[BaseException], ...]:
    from huggingface_hub.utils import httpx

    return (OSError, httpx.HTTPError)


def _print_plan(plan, card: bool) -> None:
    print(f"{plan.repo_type} repo {plan.repo_id}: {len(plan.paths_in_repo)} files from {plan.folder}")
    for name in plan.paths_in_repo:
        print(f"  {name}{'  (generated)' if name in plan.generated else ''}")
    if plan.skipped:
        print(f"not uploaded: {', '.join(plan.skipped[:20])}{' ...' if len(plan.skipped) > 20 else ''}")
    if card:
        for name, data in plan.generated.items():
            print(f"\n----- {name} -----\n{data.decode('utf-8')}")


def _run(args: argparse.Namespace, command: str, plan_factory) -> int:
    from ..hub import HubFolderError, upload
    from ..hub.model_card import ModelCardError

    try:
        plan = plan_factory()
    except (HubFolderError, ModelCardError) as error:
        print(f"ovmlc {command}: error: {error}", file=sys.stderr)
        return 2
    if args.dry_run:
        _print_plan(plan, card=command == "push")
        return 0
    try:
        commit = upload(plan, private=args.private, revision=args.revision, commit_message=args.commit_message)
    except _hub_errors() as error:
        print(f"ovmlc {command}: error: upload to {plan.repo_id} failed: {error}", file=sys.stderr)
        return 1
    print(f"pushed {len(plan.paths_in_repo)} files to {plan.repo_id}: {commit.commit_url}")
    return 0


def run_push_model(args: argparse.Namespace) -> int:
    from ..hub import plan_model_upload

    return _run(
        args, "push", lambda: plan_model_upload(args.model, args.repo, revision=args.revision, license=args.license)
    )


def run_push_dataset(args: argparse.Namespace) -> int:
    from ..hub import plan_dataset_upload

    return _run(args, "push-dataset", lambda: plan_dataset_upload(args.data, args.repo))
