"""Method quality on the synthetic shapes world (CPU): CLIP zero-shot vs CLIP-FT vs MKT vs QKS.

Every trained method runs through the real trainer (`ovmlc.train`) with its recipe in `hub_configs/*-synthetic.yaml`
(training seed overridden per run), then the best-on-validation model is scored on the test split:

* GZSL: all 38 labels scored together (`synthetic` protocol: all test images);
* ZSL: the 10 unseen labels (test images with at least one unseen positive). Models whose scores depend on the
  scored label set (MKT normalises its two streams across the labels) are re-scored with the unseen labels alone,
  as in the MKT paper; for the others the ZSL columns of the GZSL scores are the same numbers;
* seen: the 28 training labels among all 38 scores (all test images).

Scores are the ones paper-style tables rank (`model.ranking_scores()`): for CLIP zero-shot the plain cosine, without
the reference prompt it predicts with.

Prints a markdown table (mean ± sd over seeds, percent) with the training wall time per run (MKT stage 1 + 2: both
stages; stage 1 is trained once and shared with the stage-1 row), then MKT's ZSL mAP per stream.

    ovmlc data prepare synthetic --root synthetic --out data/synthetic
    python benchmarks/bench_methods_synthetic.py --data data/synthetic --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

import numpy as np  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
RECIPES = REPO / "hub_configs"


@dataclass(frozen=True)
class MethodRun:
    """One table row: a recipe (or a chain of recipes, e.g. MKT stage 1 then 2), or plain CLIP zero-shot."""

    name: str
    recipes: tuple[str, ...] = ()


METHODS: dict[str, MethodRun] = {
    "clip-zs": MethodRun("CLIP zero-shot"),
    "clipft": MethodRun("CLIP-FT (full)", ("clipft-synthetic.yaml",)),
    "clipft-lora": MethodRun("CLIP-FT (LoRA)", ("clipft-lora-synthetic.yaml",)),
    "mkt-stage1": MethodRun("MKT stage 1", ("mkt-synthetic-stage1.yaml",)),
    "mkt": MethodRun("MKT (stage 1 + 2)", ("mkt-synthetic-stage1.yaml", "mkt-synthetic-stage2.yaml")),
    "qks": MethodRun("QKS", ("qks-synthetic.yaml",)),
}
DEFAULT_METHODS = ("clip-zs", "clipft", "clipft-lora", "mkt-stage1", "mkt", "qks")
METRICS = ("zsl_map", "zsl_f1_3", "gzsl_map", "gzsl_f1_3", "seen_map")
# Trained outputs of this process: (recipe, dataset, seed, output, overrides) → (folder, wall seconds).
_TRAINED: dict[tuple, tuple[Path, float]] = {}


@dataclass
class RunResult:
    method: str
    seed: int
    train_seconds: float
    zsl_map: float
    zsl_f1_3: float
    gzsl_map: float
    gzsl_f1_3: float
    seen_map: float
    output_dir: str | None = None
    extra: dict = field(default_factory=dict)


def ensure_dataset(path: str | os.PathLike) -> Path:
    """The canonical synthetic dataset at `path` (prepared with the default sizes and seed 0 if missing)."""
    path = Path(path)
    if not (path / "README.md").is_file():
        from ovmlc.cli import main as cli_main

        print(f"preparing the synthetic dataset in {path} ...", file=sys.stderr)
        code = cli_main(["data", "prepare", "synthetic", "--root", "synthetic", "--out", str(path), "--no-progress"])
        if code:
            raise RuntimeError(f"`ovmlc data prepare synthetic --out {path}` failed with exit code {code}")
    return path


def evaluate_model(model, dataset_path: str | os.PathLike, batch_size: int = 256) -> dict[str, float]:
    """ZSL / GZSL / seen numbers (percent) of a model on the test split (see the module docstring)."""
    from ovmlc import data as ovmlc_data
    from ovmlc.core.scoring import Scorer
    from ovmlc.evaluation.engine import dataset_batches
    from ovmlc.evaluation.metrics import evaluate_protocol

    seen, unseen = ovmlc_data.read_label_split(dataset_path)
    test = ovmlc_data.load_canonical(dataset_path, split="test")
    names = [*seen, *unseen]
    is_unseen = np.array([False] * len(seen) + [True] * len(unseen))
    labels = ovmlc_data.label_matrix(test, names)  # int8 [N, C]: 1 positive, -1 negative (full annotation)

    # The paper-style ranking scores (CLIP zero-shot: plain cosine, no reference prompt), ranked by logit; MKT's ZSL
    # view scores the unseen labels alone (the Scorer applies the rule from the model's trait).
    scored = Scorer(model, batch_size=batch_size).score_for_views(
        lambda: dataset_batches(model, test, batch_size), names, is_unseen, with_predicted=False
    )
    arrays = scored.scores_file_arrays()
    report = evaluate_protocol(
        arrays["scores"],
        labels,
        names,
        is_unseen,
        "synthetic",
        unseen_scores=arrays["unseen_scores"],
        logits=arrays["logits"],
        unseen_logits=arrays["unseen_logits"],
    )
    zsl, gzsl, seen_view = (report["views"][view] for view in ("zsl", "gzsl", "seen"))
    return {
        "zsl_map": 100 * zsl["mAP"],
        "zsl_f1_3": 100 * zsl["top_k"]["3"]["f1"],
        "gzsl_map": 100 * gzsl["mAP"],
        "gzsl_f1_3": 100 * gzsl["top_k"]["3"]["f1"],
        "seen_map": 100 * seen_view["mAP"],
    }


def mkt_stream_zsl(model, dataset_path: str | os.PathLike, batch_size: int = 256) -> dict[str, float]:
    """ZSL mAP (percent) of an MKT model's global stream `<cls, t_c>`, local stream (top-k patch mean) and their
    fusion: shows which stream keeps the unseen labels (distillation acts on the global one)."""
    import torch
    import torch.nn.functional as F

    from ovmlc import data as ovmlc_data
    from ovmlc.evaluation.metrics import evaluate_protocol

    _, unseen = ovmlc_data.read_label_split(dataset_path)
    test = ovmlc_data.load_canonical(dataset_path, split="test")
    labels = ovmlc_data.label_matrix(test, list(unseen))
    model.eval()
    global_scores, local_scores = [], []
    with torch.inference_mode():
        label_embeds = model.encode_labels(list(unseen))  # [C_u, D]
        for start in range(0, len(test), batch_size):
            features = model.encode_image_features(model.preprocess(test[start : start + batch_size]["image"]))
            if "image_embeds" in features:
                image_embeds, patch_embeds = features["image_embeds"], features["patch_embeds"]
            else:
                image_embeds, patch_embeds = model.student(features["hidden_states"])
            top_k = min(int(model.config.top_k), patch_embeds.shape[1])
            global_scores.append(image_embeds @ label_embeds.T)
            local_scores.append((patch_embeds @ label_embeds.T).topk(top_k, dim=1).values.mean(dim=1))
    global_scores, local_scores = torch.cat(global_scores), torch.cat(local_scores)
    fused = (F.normalize(global_scores, dim=-1) + F.normalize(local_scores, dim=-1)) / 2
    all_unseen = np.ones(len(unseen), dtype=bool)
    numbers = {}
    for name, scores in (("global", global_scores), ("local", local_scores), ("fused", fused)):
        report = evaluate_protocol(scores.float().numpy(), labels, list(unseen), all_unseen, "synthetic")
        numbers[f"zsl_map_{name}"] = 100 * report["views"]["zsl"]["mAP"]
    return numbers


def train_recipes(
    recipes: Sequence[str], dataset_path: Path, seed: int, work_dir: Path, overrides: Sequence[str] = ()
) -> tuple[Path, float]:
    """Run a chain of recipes (each later one starts from the previous output); returns the last output folder and
    the summed wall time."""
    from ovmlc.training.trainer import train

    output, seconds, previous = None, 0.0, None
    for recipe in recipes:
        output = work_dir / f"{Path(recipe).stem}-seed{seed}"
        key = (recipe, str(dataset_path), seed, str(output), tuple(overrides))
        if key in _TRAINED:  # e.g. MKT stage 1, shared by the "mkt-stage1" and "mkt" rows
            output, recipe_seconds = _TRAINED[key]
            seconds += recipe_seconds
            previous = output
            continue
        run_overrides = [
            f"dataset.path={dataset_path}",
            f"training.seed={seed}",
            f"output_dir={output}",
            "tracker=none",
            "hub.repo_id=null",
            *overrides,
        ]
        if previous is not None:
            run_overrides.append(f"init_from={previous}")
        started = time.perf_counter()
        train(RECIPES / recipe, run_overrides, overwrite=True)
        _TRAINED[key] = (output, time.perf_counter() - started)
        seconds += _TRAINED[key][1]
        previous = output
    return output, seconds


def run_method(
    key: str, dataset_path: Path, seed: int, work_dir: Path, backbone: str = "synthetic", overrides: Sequence[str] = ()
) -> RunResult:
    import ovmlc

    method = METHODS[key]
    if not method.recipes:
        started = time.perf_counter()
        model = ovmlc.CLIPZeroShotModel.from_clip(backbone)
        numbers = evaluate_model(model, dataset_path)
        return RunResult(key, seed, time.perf_counter() - started, **numbers)
    output, seconds = train_recipes(method.recipes, dataset_path, seed, work_dir, overrides)
    model = ovmlc.load_model(str(output))
    result = RunResult(key, seed, seconds, **evaluate_model(model, dataset_path), output_dir=str(output))
    if isinstance(model, ovmlc.MKTModel):
        result.extra.update(mkt_stream_zsl(model, dataset_path))
    return result


def run_benchmark(
    methods: Sequence[str],
    seeds: Sequence[int],
    dataset_path: str | os.PathLike,
    work_dir: str | os.PathLike | None = None,
    overrides: dict[str, Sequence[str]] | None = None,
    log=print,
) -> list[RunResult]:
    """Train and evaluate every method for every seed (CLIP zero-shot once: it has no randomness)."""
    dataset_path = ensure_dataset(dataset_path)
    work_dir = Path(work_dir) if work_dir else Path(tempfile.mkdtemp(prefix="ovmlc-bench-methods-"))
    results = []
    for key in methods:
        if key not in METHODS:
            raise ValueError(f"unknown method {key!r}; available: {', '.join(METHODS)}")
        for seed in seeds[:1] if not METHODS[key].recipes else seeds:
            result = run_method(key, dataset_path, seed, work_dir, overrides=(overrides or {}).get(key, ()))
            log(
                f"{METHODS[key].name} seed {seed}: "
                + ", ".join(f"{name} {getattr(result, name):.1f}" for name in METRICS)
                + f" ({result.train_seconds:.0f} s)"
            )
            results.append(result)
    return results


def summarize(results: Sequence[RunResult]) -> dict[str, dict[str, tuple[float, float]]]:
    """`{method: {metric: (mean, sd)}}` over seeds (sd 0 for a single run), plus `train_seconds`."""
    summary: dict[str, dict[str, tuple[float, float]]] = {}
    for key in dict.fromkeys(result.method for result in results):
        rows = [result for result in results if result.method == key]
        summary[key] = {}
        for name in (*METRICS, "train_seconds"):
            values = np.array([getattr(row, name) for row in rows], dtype=np.float64)
            summary[key][name] = (float(values.mean()), float(values.std(ddof=1)) if len(values) > 1 else 0.0)
        summary[key]["runs"] = (float(len(rows)), 0.0)
    return summary


def markdown_table(results: Sequence[RunResult]) -> str:
    summary = summarize(results)
    header = "| method | ZSL mAP | ZSL F1@3 | GZSL mAP | GZSL F1@3 | seen mAP | runs | train time / run |"
    lines = [header, "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for key, numbers in summary.items():
        cells = []
        for name in METRICS:
            mean, sd = numbers[name]
            cells.append(f"{mean:.1f} ± {sd:.1f}" if numbers["runs"][0] > 1 else f"{mean:.1f}")
        seconds = numbers["train_seconds"][0]
        time_cell = "—" if not METHODS[key].recipes else f"{seconds:.0f} s"
        lines.append(f"| {METHODS[key].name} | " + " | ".join(cells) + f" | {int(numbers['runs'][0])} | {time_cell} |")
    return "\n".join(lines)


def stream_lines(results: Sequence[RunResult]) -> list[str]:
    """Per MKT row: ZSL mAP of the global stream, the local stream and their fusion (mean ± sd over seeds)."""
    lines = []
    for key in dict.fromkeys(result.method for result in results if "zsl_map_global" in result.extra):
        rows = [result for result in results if result.method == key]
        parts = []
        for stream in ("global", "local", "fused"):
            values = np.array([row.extra[f"zsl_map_{stream}"] for row in rows])
            sd = f" ± {values.std(ddof=1):.1f}" if len(values) > 1 else ""
            parts.append(f"{stream} {values.mean():.1f}{sd}")
        lines.append(f"{METHODS[key].name}, ZSL mAP by stream: " + ", ".join(parts))
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="data/synthetic", help="canonical synthetic dataset (prepared if missing)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="training seeds (0 1 2)")
    parser.add_argument("--methods", nargs="+", default=list(DEFAULT_METHODS), choices=list(METHODS))
    parser.add_argument("--work-dir", default=None, help="where the trained models go (default: a temporary folder)")
    parser.add_argument("--json", default=None, help="also write every run's numbers to this JSON file")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads (1: on a shared 2-core machine 2 threads stall)"
    )
    args = parser.parse_args(argv)

    import torch
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    results = run_benchmark(
        args.methods, args.seeds, args.data, args.work_dir, log=lambda text: print(text, file=sys.stderr)
    )
    total = time.perf_counter() - started
    print(
        f"Synthetic shapes world ({args.data}, test split), seeds {' '.join(map(str, args.seeds))}; percent, "
        f"mean ± sd over seeds; CPU ({torch.get_num_threads()} threads), total wall time {total / 60:.1f} min.\n"
    )
    print(markdown_table(results))
    for line in stream_lines(results):
        print(f"\n{line}")
    if args.json:
        Path(args.json).write_text(json.dumps([asdict(result) for result in results], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
