"""Method quality on the synthetic shapes world (CPU): CLIP zero-shot vs CLIP-FT vs MKT vs QKS vs the prompt-learning
family (CoOp, DualCoOp, DualCoOp++), plus DualCoOp's partial-label setting.

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

`--partial-labels 0.1 0.3 0.5 0.7 0.9` adds DualCoOp's partial-label table: each `--partial-methods` recipe trained
with `dataset.partial_label=P` (a seeded share P of the training annotations kept, train and validation; the test
split stays complete) and scored by the mAP of the seen labels on all test images, with the training-loop time per run.
`--dense-diagnostics` prints the untrained region-aggregation mAP of each dense-feature variant (literal prompt).

    ovmlc data prepare synthetic --root synthetic --out data/synthetic
    python benchmarks/bench_methods_synthetic.py --data data/synthetic --seeds 0 1 2
    python benchmarks/bench_methods_synthetic.py --methods clip-zs coop dualcoop dualcoop-value dualcooppp \
        --partial-labels 0.1 0.3 0.5 0.7 0.9

Another world (e.g. the `shapes-clutter` world of issue 18): prepare its dataset, then pass `--data DIR` and, when it
ships its own CLIP, `--backbone NAME` (every recipe and the zero-shot row use it).
"""

from __future__ import annotations

import argparse
import hashlib
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
    """One table row: a recipe (or a chain of recipes, e.g. MKT stage 1 then 2) with recipe overrides applied to the
    last one, or plain CLIP zero-shot."""

    name: str
    recipes: tuple[str, ...] = ()
    overrides: tuple[str, ...] = ()


METHODS: dict[str, MethodRun] = {
    "clip-zs": MethodRun("CLIP zero-shot"),
    "clipft": MethodRun("CLIP-FT (full)", ("clipft-synthetic.yaml",)),
    "clipft-lora": MethodRun("CLIP-FT (LoRA)", ("clipft-lora-synthetic.yaml",)),
    "mkt-stage1": MethodRun("MKT stage 1", ("mkt-synthetic-stage1.yaml",)),
    "mkt": MethodRun("MKT (stage 1 + 2)", ("mkt-synthetic-stage1.yaml", "mkt-synthetic-stage2.yaml")),
    "qks": MethodRun("QKS", ("qks-synthetic.yaml",)),
    "coop": MethodRun("CoOp", ("coop-synthetic.yaml",)),
    "dualcoop": MethodRun("DualCoOp (plain tokens)", ("dualcoop-synthetic.yaml",)),
    "dualcoop-value": MethodRun(
        "DualCoOp (value-path tokens)", ("dualcoop-synthetic.yaml",), ("method_config.dense_features=value",)
    ),
    "dualcoop-no-global": MethodRun(
        "DualCoOp (plain tokens, no global token)",
        ("dualcoop-synthetic.yaml",),
        ("method_config.include_global_token=false",),
    ),
    "dualcoop-global": MethodRun(
        "DualCoOp (global embedding only, no region aggregation)",
        ("dualcoop-synthetic.yaml",),
        ("method_config.dense_features=global",),
    ),
    # The summed ASL x loss_w makes the step size proportional to the annotated entries: at P = 10 % the recipe's
    # loss_w 0.01 takes a tenth of the full-label step; this row gives it back (partial-label diagnosis).
    "dualcoop-loss-x10": MethodRun(
        "DualCoOp (plain tokens, loss_w 0.1)", ("dualcoop-synthetic.yaml",), ("method_config.loss_weight=0.1",)
    ),
    "dualcooppp": MethodRun("DualCoOp++ (plain tokens)", ("dualcooppp-synthetic.yaml",)),
    "linear-probe": MethodRun("Linear probe", ("linear-probe-synthetic.yaml",)),
}
DEFAULT_METHODS = ("clip-zs", "clipft", "clipft-lora", "mkt-stage1", "mkt", "qks")
PROMPT_METHODS = ("coop", "dualcoop", "dualcoop-value", "dualcooppp")
DEFAULT_PARTIAL_METHODS = ("dualcoop", "dualcooppp", "coop", "clipft-lora", "linear-probe")
METRICS = ("zsl_map", "zsl_f1_3", "gzsl_map", "gzsl_f1_3", "seen_map")
# Trained outputs of this process: (recipe, dataset, seed, output, overrides) → (folder, wall seconds).
_TRAINED: dict[tuple, tuple[Path, float]] = {}
# Written next to each trained model: the wall time of its `train()` call (for `--reuse-runs`).
WALL_SECONDS_FILE = "bench_wall_seconds.json"


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
    partial_label: float | None = None


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


def score_test_split(
    model, dataset_path: str | os.PathLike, unseen: Sequence[str] | None = None, batch_size: int = 256
) -> tuple[list[str], np.ndarray, np.ndarray, dict[str, np.ndarray | None]]:
    """The test split scored for the ZSL / GZSL / seen views: label names (seen first), the unseen mask [C], the
    label matrix int8 [N, C] and the Scorer's arrays (`scores` [N, C], `unseen_scores` [N, C_u] or None, logits).
    `unseen`: the unseen labels (default: the dataset's own split)."""
    from ovmlc import data as ovmlc_data
    from ovmlc.core.scoring import Scorer
    from ovmlc.evaluation.engine import dataset_batches

    test = ovmlc_data.load_canonical(dataset_path, split="test")
    if unseen is None:
        seen, unseen = ovmlc_data.read_label_split(dataset_path)
    else:  # e.g. a seen-count sweep: the same unseen labels whatever the dataset's split
        present = ovmlc_data.dataset_label_names(test)
        unseen = [name for name in present if name in set(unseen)]
        seen = [name for name in present if name not in set(unseen)]
    names = [*seen, *unseen]
    is_unseen = np.array([False] * len(seen) + [True] * len(unseen))
    labels = ovmlc_data.label_matrix(test, names)  # int8 [N, C]: 1 positive, -1 negative (full annotation)
    # The paper-style ranking scores (CLIP zero-shot: plain cosine, no reference prompt), ranked by logit; MKT's ZSL
    # view scores the unseen labels alone (the Scorer applies the rule from the model's trait).
    scored = Scorer(model, batch_size=batch_size).score_for_views(
        lambda: dataset_batches(model, test, batch_size), names, is_unseen, with_predicted=False
    )
    return names, is_unseen, labels, scored.scores_file_arrays()


def evaluate_model(
    model, dataset_path: str | os.PathLike, batch_size: int = 256, unseen: Sequence[str] | None = None
) -> dict[str, float]:
    """ZSL / GZSL / seen numbers (percent) of a model on the test split (see the module docstring)."""
    return protocol_numbers(*score_test_split(model, dataset_path, unseen, batch_size))


def protocol_numbers(
    names: list[str], is_unseen: np.ndarray, labels: np.ndarray, arrays: dict[str, np.ndarray | None]
) -> dict[str, float]:
    """ZSL / GZSL / seen mAP and F1@3 (percent) of `score_test_split`'s output (`synthetic` protocol)."""
    from ovmlc.evaluation.metrics import evaluate_protocol

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
    recipes: Sequence[str],
    dataset_path: Path,
    seed: int,
    work_dir: Path,
    overrides: Sequence[str] = (),
    last_overrides: Sequence[str] = (),
    reuse: bool = False,
) -> tuple[Path, float]:
    """Run a chain of recipes (each later one starts from the previous output; `last_overrides` apply to the last one
    only); returns the last output folder and the summed wall time. `reuse`: a folder that already holds a finished
    run with the same resolved recipe is not trained again (its recorded wall time counts)."""
    from ovmlc.training.trainer import train

    output, seconds, previous = None, 0.0, None
    for position, recipe in enumerate(recipes):
        extra = tuple(last_overrides) if position == len(recipes) - 1 else ()
        tag = "-" + hashlib.sha256("\n".join(extra).encode()).hexdigest()[:8] if extra else ""
        output = work_dir / f"{Path(recipe).stem}{tag}-seed{seed}"
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
            *extra,
        ]
        if previous is not None:
            run_overrides.append(f"init_from={previous}")
        if reuse and finished_run_seconds(output, RECIPES / recipe, run_overrides) is not None:
            _TRAINED[key] = (output, finished_run_seconds(output, RECIPES / recipe, run_overrides))
            seconds += _TRAINED[key][1]
            previous = output
            continue
        started = time.perf_counter()
        train(RECIPES / recipe, run_overrides, overwrite=True)
        _TRAINED[key] = (output, time.perf_counter() - started)
        (output / WALL_SECONDS_FILE).write_text(json.dumps({"seconds": _TRAINED[key][1]}))
        seconds += _TRAINED[key][1]
        previous = output
    return output, seconds


def finished_run_seconds(output: Path, recipe: Path, overrides: Sequence[str]) -> float | None:
    """The wall time of a finished run in `output` trained with this recipe and overrides, or None (not there, not
    finished, or another recipe). Runs from before the wall-time file count their training loop + cache build."""
    from ovmlc.training.recipe import load_recipe
    from ovmlc.training.state import read_state_file, state_file

    recipe_file = output / "recipe.yaml"
    if state_file(output) is None or not recipe_file.is_file():
        return None
    expected = load_recipe(recipe, overrides).to_dict()
    if load_recipe(recipe_file).to_dict() != expected:
        return None
    wall_file = output / WALL_SECONDS_FILE
    if wall_file.is_file():
        return float(json.loads(wall_file.read_text())["seconds"])
    state = read_state_file(output)
    return float(state["train_seconds"]) + float(state.get("feature_cache_build_seconds") or 0.0)


def run_method(
    key: str,
    dataset_path: Path,
    seed: int,
    work_dir: Path,
    backbone: str | None = None,
    overrides: Sequence[str] = (),
    partial_label: float | None = None,
    reuse: bool = False,
) -> RunResult:
    """Train (or, for CLIP zero-shot, load) one row's model for one seed and score it. `backbone` replaces the
    recipes' backbone (None: the recipes' own, `synthetic`); `partial_label` trains on that share of the annotations."""
    import ovmlc

    method = METHODS[key]
    if not method.recipes:
        started = time.perf_counter()
        model = ovmlc.CLIPZeroShotModel.from_clip(backbone or "synthetic")
        numbers = evaluate_model(model, dataset_path)
        return RunResult(key, seed, time.perf_counter() - started, **numbers, partial_label=partial_label)
    common = [*overrides] + ([f"backbone={backbone}"] if backbone else [])
    last = [*method.overrides] + ([f"dataset.partial_label={partial_label}"] if partial_label is not None else [])
    output, seconds = train_recipes(method.recipes, dataset_path, seed, work_dir, common, last, reuse=reuse)
    model = ovmlc.load_model(str(output))
    result = RunResult(
        key, seed, seconds, **evaluate_model(model, dataset_path), output_dir=str(output), partial_label=partial_label
    )
    from ovmlc.training.state import read_state_file

    state = read_state_file(output)
    result.extra["train_loop_seconds"] = float(state["train_seconds"])  # the training loop only (no cache, eval)
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
    backbone: str | None = None,
    partial_labels: Sequence[float | None] = (None,),
    reuse: bool = False,
    on_result=None,
) -> list[RunResult]:
    """Train and evaluate every method for every seed (CLIP zero-shot once: it has no randomness), for each of
    `partial_labels` (None: every annotation). `reuse`: keep finished runs of the same recipe in `work_dir`;
    `on_result(results)` is called after each run (e.g. to save them)."""
    dataset_path = ensure_dataset(dataset_path)
    work_dir = Path(work_dir) if work_dir else Path(tempfile.mkdtemp(prefix="ovmlc-bench-methods-"))
    results = []
    for key in methods:
        if key not in METHODS:
            raise ValueError(f"unknown method {key!r}; available: {', '.join(METHODS)}")
        for partial_label in partial_labels if METHODS[key].recipes else partial_labels[:1]:
            for seed in seeds[:1] if not METHODS[key].recipes else seeds:
                result = run_method(
                    key,
                    dataset_path,
                    seed,
                    work_dir,
                    backbone=backbone,
                    overrides=(overrides or {}).get(key, ()),
                    partial_label=partial_label,
                    reuse=reuse,
                )
                share = "" if partial_label is None else f" (P = {partial_label:g})"
                log(
                    f"{METHODS[key].name}{share} seed {seed}: "
                    + ", ".join(f"{name} {getattr(result, name):.1f}" for name in METRICS)
                    + f" ({result.train_seconds:.0f} s)"
                )
                results.append(result)
                if on_result is not None:
                    on_result(results)
    return results


def partial_label_table(results: Sequence[RunResult]) -> str:
    """DualCoOp's partial-label table: seen-label mAP (all test images, full annotation) per method and kept share P
    (mean ± sd over seeds), and the mean training-loop time per run."""
    shares = sorted({result.partial_label for result in results if result.partial_label is not None})
    keys = list(dict.fromkeys(result.method for result in results if result.partial_label is not None))
    header = (
        "| method | " + " | ".join(f"P = {100 * share:g} %" for share in shares) + " | mean | runs | train loop / run |"
    )
    lines = [header, "| --- |" + " ---: |" * (len(shares) + 3)]
    for key in keys:
        cells, means, seconds, runs = [], [], [], 0
        for share in shares:
            rows = [result for result in results if result.method == key and result.partial_label == share]
            values = np.array([row.seen_map for row in rows])
            sd = f" ± {values.std(ddof=1):.1f}" if len(values) > 1 else ""
            cells.append(f"{values.mean():.1f}{sd}" if len(values) else "—")
            if len(values):
                means.append(values.mean())
            seconds += [row.extra.get("train_loop_seconds", row.train_seconds) for row in rows]
            runs += len(rows)
        time_cell = f"{np.mean(seconds):.0f} s" if METHODS[key].recipes else "—"
        mean_cell = f"{np.mean(means):.1f}" if len(means) == len(shares) else "—"  # a row run at some shares only
        lines.append(f"| {METHODS[key].name} | " + " | ".join(cells) + f" | {mean_cell} | {runs} | {time_cell} |")
    return "\n".join(lines)


def dense_feature_zero_shot(
    dataset_path: str | os.PathLike, backbone: str = "synthetic", batch_size: int = 250
) -> dict[str, dict[str, float]]:
    """Untrained region aggregation (DualCoOp's head with the literal prompt "a photo of a {}." as the weighting and
    scoring prompt) per dense-feature variant: ZSL / GZSL / seen mAP (percent). Shows how text-aligned each kind of
    region is before any prompt learning."""
    import torch
    import torch.nn.functional as F

    from ovmlc import data as ovmlc_data
    from ovmlc.core.backbones import dense_image_tokens, load_clip_backbone
    from ovmlc.core.vocabulary import LabelVocabulary
    from ovmlc.evaluation.metrics import evaluate_protocol

    clip_backbone = load_clip_backbone(backbone)
    clip = clip_backbone.model
    seen, unseen = ovmlc_data.read_label_split(dataset_path)
    names = [*seen, *unseen]
    is_unseen = np.array([False] * len(seen) + [True] * len(unseen))
    test = ovmlc_data.load_canonical(dataset_path, split="test")
    labels = ovmlc_data.label_matrix(test, names)
    text = LabelVocabulary(names, templates="single").encode(clip, clip_backbone.tokenizer)  # [C, D]
    tokens = {"plain": [], "value": []}
    with torch.inference_mode():
        for start in range(0, len(test), batch_size):
            images = test[start : start + batch_size]["image"]
            pixels = clip_backbone.image_processor(images=images, return_tensors="pt")["pixel_values"]
            tokens["plain"].append(dense_image_tokens(clip, pixels, value_path=False))
            tokens["value"].append(dense_image_tokens(clip, pixels, value_path=True))
    text = F.normalize(text, dim=-1)
    numbers = {}
    for kind, parts in tokens.items():
        regions = F.normalize(torch.cat(parts), dim=-1)  # [N, 1 + P, D]
        for variant, selected in (("global + patches", regions), ("patches only", regions[:, 1:])):
            similarity = 20 * torch.einsum("nrd,cd->ncr", selected, text)  # [N, C, R]
            scores = 5 * (similarity.softmax(dim=-1) * similarity).sum(dim=-1)  # [N, C]
            report = evaluate_protocol(scores.numpy(), labels, names, is_unseen, "synthetic")
            numbers[f"{kind} tokens, {variant}"] = {
                view: 100 * report["views"][view]["mAP"] for view in ("zsl", "gzsl", "seen")
            }
    global_scores = torch.cat(tokens["plain"])[:, 0]
    report = evaluate_protocol(
        (F.normalize(global_scores, dim=-1) @ text.T).numpy(), labels, names, is_unseen, "synthetic"
    )
    numbers["global embedding alone (CLIP zero-shot)"] = {
        view: 100 * report["views"][view]["mAP"] for view in ("zsl", "gzsl", "seen")
    }
    return numbers


def summarize(results: Sequence[RunResult]) -> dict[str, dict[str, tuple[float, float]]]:
    """`{method: {metric: (mean, sd)}}` over seeds (sd 0 for a single run), plus `train_seconds`."""
    summary: dict[str, dict[str, tuple[float, float]]] = {}
    for key in dict.fromkeys(result.method for result in results if result.partial_label is None):
        rows = [result for result in results if result.method == key and result.partial_label is None]
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
    parser.add_argument(
        "--partial-labels",
        type=float,
        nargs="*",
        default=[],
        metavar="P",
        help="also run the partial-label table for these kept shares (e.g. 0.1 0.3 0.5 0.7 0.9)",
    )
    parser.add_argument("--partial-methods", nargs="+", default=list(DEFAULT_PARTIAL_METHODS), choices=list(METHODS))
    parser.add_argument("--backbone", default=None, help="CLIP for every recipe and the zero-shot row (another world)")
    parser.add_argument("--dense-diagnostics", action="store_true", help="untrained region aggregation per variant")
    parser.add_argument(
        "--reuse-runs", action="store_true", help="keep finished runs of the same recipe in --work-dir (resume a sweep)"
    )
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
    log = lambda text: print(text, file=sys.stderr)  # noqa: E731
    done: list[RunResult] = []

    def save(results: Sequence[RunResult]) -> None:  # after every run: a killed sweep keeps what it measured
        if args.json:
            Path(args.json).write_text(json.dumps([asdict(result) for result in [*done, *results]], indent=1))

    settings = {"log": log, "backbone": args.backbone, "reuse": args.reuse_runs, "on_result": save}
    done += run_benchmark(args.methods, args.seeds, args.data, args.work_dir, **settings)
    results = done
    if args.partial_labels:
        results = done + run_benchmark(
            args.partial_methods, args.seeds, args.data, args.work_dir, partial_labels=args.partial_labels, **settings
        )
    total = time.perf_counter() - started
    print(
        f"Synthetic shapes world ({args.data}, test split), seeds {' '.join(map(str, args.seeds))}; percent, "
        f"mean ± sd over seeds; CPU ({torch.get_num_threads()} threads), total wall time {total / 60:.1f} min.\n"
    )
    print(markdown_table(results))
    for line in stream_lines(results):
        print(f"\n{line}")
    if args.partial_labels:
        print(
            "\nPartial labels (seen-label mAP, all test images, full test annotation; each run keeps a seeded share P "
            "of the training and validation annotations):\n"
        )
        print(partial_label_table(results))
    if args.dense_diagnostics:
        print("\nUntrained region aggregation (literal prompt), mAP ZSL / GZSL / seen:\n")
        for name, numbers in dense_feature_zero_shot(args.data, args.backbone or "synthetic").items():
            print(f"- {name}: " + " / ".join(f"{numbers[view]:.1f}" for view in ("zsl", "gzsl", "seen")))
    if args.json:
        Path(args.json).write_text(json.dumps([asdict(result) for result in results], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
