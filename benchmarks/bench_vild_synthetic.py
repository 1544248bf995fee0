"""ViLD on the synthetic shapes world (CPU): tags and localisation of ViLD-text, ViLD-image, the ViLD ensemble and the
training-free baseline (zero-shot CLIP on the same windows).

Every variant runs `hub_configs/vild-synthetic.yaml` through the real trainer (`ovmlc.train`) with its overrides and
the training seed; the numbers are the trainer's own test report (`eval/metrics.json`), i.e. exactly what
`ovmlc evaluate` reports for the saved model:

* tags, `synthetic` protocol: ZSL = the 10 unseen labels on the test images with an unseen positive, scored within
  all 38 labels as ViLD's detection protocol scores novel classes (`zsl_scores_unseen_alone = False`); GZSL = all 38
  labels on all images; seen = the 28 training labels among the 38 scores. ViLD's softmax makes a label's score
  depend on the labels scored with it: the extra column "ZSL mAP, unseen alone" re-scores the unseen labels on their
  own (MKT's protocol), a diagnostic of that dependence;
* localisation (`ovmlc.box_metrics`): box AP@0.5 per label and pointing accuracy, averaged over the unseen / seen
  labels with a box in the test split (8 unseen: 6 shapes + pink + cyan; 24 seen; background patterns have none).

The ViLD-image and ensemble variants share one cache of the teacher embeddings (CLIP on 2 crops of 26 windows of each
of the 10,000 training images): the first of them builds it, for every seed (the cache is keyed by the data, the
frozen weights and the windows and crops, never by the seed). Prints two markdown tables (mean ± sd over seeds).
`--reuse-runs` keeps the finished runs of the same recipe and overrides in `--work-dir` (a resumed sweep; the quality
tests read a finished sweep this way).

    ovmlc data prepare synthetic --root synthetic --out data/synthetic
    python benchmarks/bench_vild_synthetic.py --data data/synthetic --seeds 0 1 2 --work-dir runs/vild --reuse-runs
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
from bench_methods_synthetic import WALL_SECONDS_FILE, finished_run_seconds  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO / "hub_configs" / "vild-synthetic.yaml"
# Written next to each trained model: its "ZSL mAP, unseen alone" (a full scoring pass; kept for `--reuse-runs`).
ZSL_ALONE_FILE = "bench_zsl_unseen_alone.json"


@dataclass(frozen=True)
class Variant:
    name: str
    overrides: tuple[str, ...] = ()
    trained: bool = True


VARIANTS: dict[str, Variant] = {
    "clip-windows": Variant(
        "zero-shot CLIP on the windows",
        (
            "method_config.region_encoder=clip_crops",
            "method_config.double_branch=false",
            "training.epochs=0",
        ),
        trained=False,
    ),
    "vild-text": Variant("ViLD-text", ("method_config.distillation_weight=0", "method_config.double_branch=false")),
    "vild-image": Variant("ViLD-image", ("method_config.text_weight=0", "method_config.double_branch=false")),
    "vild": Variant("ViLD (ensemble)"),
}
TAG_METRICS = ("zsl_map", "zsl_f1_3", "gzsl_map", "gzsl_f1_3", "seen_map", "zsl_alone_map")
BOX_METRICS = ("unseen_box_ap", "unseen_pointing", "seen_box_ap", "seen_pointing", "all_box_ap")


@dataclass
class RunResult:
    variant: str
    seed: int
    seconds: float
    zsl_map: float
    zsl_f1_3: float
    gzsl_map: float
    gzsl_f1_3: float
    seen_map: float
    zsl_alone_map: float
    unseen_box_ap: float
    unseen_pointing: float
    seen_box_ap: float
    seen_pointing: float
    all_box_ap: float
    output_dir: str
    per_label: dict = field(default_factory=dict)


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


def zsl_unseen_alone(output: Path, dataset: Path, batch_size: int = 256) -> float:
    """ZSL mAP (percent) of a saved model with the unseen labels scored on their own (`synthetic` protocol)."""
    import ovmlc
    from ovmlc import data as ovmlc_data
    from ovmlc.evaluation.engine import score_dataset
    from ovmlc.evaluation.metrics import evaluate_protocol

    _, unseen = ovmlc_data.read_label_split(dataset)
    test = ovmlc_data.load_canonical(dataset, split="test")
    model = ovmlc.load_model(str(output))
    scores = score_dataset(model, test, unseen, batch_size=batch_size, progress=False)
    labels = ovmlc_data.label_matrix(test, unseen)
    report = evaluate_protocol(scores, labels, unseen, np.ones(len(unseen), dtype=bool), "synthetic")
    return 100 * report["views"]["zsl"]["mAP"]


def read_run(variant: str, seed: int, output: Path, seconds: float, zsl_alone_map: float) -> RunResult:
    """The numbers of a finished run from its test report (percent)."""
    metrics = json.loads((output / "eval" / "metrics.json").read_text())
    if any(view.get("scored_labels") == "unseen labels alone" for view in metrics["views"].values()):
        raise RuntimeError(
            f"{output}: the ZSL view scored the unseen labels alone; ViLD's protocol scores them among all"
        )
    views, localization = metrics["views"], metrics["localization"]
    return RunResult(
        variant=variant,
        seed=seed,
        seconds=seconds,
        zsl_map=100 * views["zsl"]["mAP"],
        zsl_f1_3=100 * views["zsl"]["top_k"]["3"]["f1"],
        gzsl_map=100 * views["gzsl"]["mAP"],
        gzsl_f1_3=100 * views["gzsl"]["top_k"]["3"]["f1"],
        seen_map=100 * views["seen"]["mAP"],
        zsl_alone_map=zsl_alone_map,
        unseen_box_ap=100 * localization["box_ap"]["unseen"],
        unseen_pointing=100 * localization["pointing"]["unseen"],
        seen_box_ap=100 * localization["box_ap"]["seen"],
        seen_pointing=100 * localization["pointing"]["seen"],
        all_box_ap=100 * localization["box_ap"]["all"],
        output_dir=str(output),
        per_label={
            name: {"box_ap": entry["box_ap"], "pointing": entry["pointing"]}
            for name, entry in localization["per_label"].items()
            if entry["unseen"]
        },
    )


def run_variant(
    key: str, dataset: Path, seed: int, work_dir: Path, extra: Sequence[str] = (), reuse: bool = False
) -> RunResult:
    """Train one variant for one seed (with `reuse`: keep a finished run of the same recipe); read its numbers."""
    from ovmlc.training.trainer import train

    output = work_dir / f"{key}-seed{seed}"
    overrides = [
        f"dataset.path={dataset}",
        f"training.seed={seed}",
        f"output_dir={output}",
        "tracker=none",
        *extra,
        *VARIANTS[key].overrides,  # last: a variant's defining settings (e.g. no training) win over shared extras
    ]
    seconds = finished_run_seconds(output, RECIPE, overrides) if reuse else None
    if seconds is None or not (output / "eval" / "metrics.json").is_file():
        started = time.perf_counter()
        train(RECIPE, overrides, overwrite=True)
        seconds = time.perf_counter() - started
        (output / WALL_SECONDS_FILE).write_text(json.dumps({"seconds": seconds}))
        (output / ZSL_ALONE_FILE).unlink(missing_ok=True)
    alone_file = output / ZSL_ALONE_FILE
    recorded = json.loads(alone_file.read_text()) if alone_file.is_file() else {}
    if recorded.get("dataset") == str(dataset):
        zsl_alone_map = float(recorded["zsl_alone_map"])
    else:
        zsl_alone_map = zsl_unseen_alone(output, dataset)
        alone_file.write_text(json.dumps({"dataset": str(dataset), "zsl_alone_map": zsl_alone_map}))
    return read_run(key, seed, output, seconds, zsl_alone_map)


def run_benchmark(
    variants: Sequence[str],
    seeds: Sequence[int],
    dataset_path: str | os.PathLike,
    work_dir: str | os.PathLike | None = None,
    extra: Sequence[str] = (),
    log=print,
    reuse: bool = False,
) -> list[RunResult]:
    """Every variant for every seed (the training-free baseline once: it has no randomness). `reuse`: keep the
    finished runs of the same recipe and overrides in `work_dir` instead of training them again."""
    dataset = ensure_dataset(dataset_path)
    work_dir = Path(work_dir) if work_dir else Path(tempfile.mkdtemp(prefix="ovmlc-bench-vild-"))
    results = []
    for key in variants:
        if key not in VARIANTS:
            raise ValueError(f"unknown variant {key!r}; available: {', '.join(VARIANTS)}")
        for seed in seeds if VARIANTS[key].trained else seeds[:1]:
            result = run_variant(key, dataset, seed, work_dir, extra, reuse=reuse)
            numbers = ", ".join(f"{name} {getattr(result, name):.1f}" for name in (*TAG_METRICS, *BOX_METRICS))
            log(f"{VARIANTS[key].name} seed {seed}: {numbers} ({result.seconds:.0f} s)")
            results.append(result)
    return results


def teacher_crop_accuracy(num_images: int = 300, seed: int = 5) -> dict[str, float]:
    """Why the synthetic recipe uses `crop_mode: mask`: top-1 shape accuracy (percent, 24 shapes, prompt "a photo of a
    {}.") of the shipped CLIP on each object's cell at 1x and 1.5x context, cropped and resized to 64 px (ViLD's
    crops) or masked in place, and on the 1x + 1.5x ensemble, over the objects of `num_images` fresh images."""
    import torch
    import torch.nn.functional as F

    import ovmlc
    from ovmlc.data.synthetic import CELL_SIZE, GRID, IMAGE_SIZE, SHAPE_NAMES, generate_world

    model = ovmlc.ViLDModel.from_clip("synthetic", region_encoder="clip_crops", templates="single")
    world = generate_world(num_images, seed=seed, stream="examples", num_workers=1)
    rows, boxes, shapes = [], [], []
    for index in range(num_images):
        for slot in range(4):
            if world.scenes.shape_ids[index, slot] < 0:
                continue
            row, col = divmod(int(world.scenes.cells[index, slot]), GRID)
            rows.append(index)
            boxes.append([col * CELL_SIZE, row * CELL_SIZE, (col + 1) * CELL_SIZE, (row + 1) * CELL_SIZE])
            shapes.append(int(world.scenes.shape_ids[index, slot]))
    pixel_values = model.preprocess([world.image(i) for i in range(num_images)])[torch.tensor(rows)]
    boxes = torch.tensor(boxes, dtype=torch.float32)[:, None] / IMAGE_SIZE  # [M, 1, 4]
    labels = F.normalize(model.encode_labels(list(SHAPE_NAMES)), dim=-1)
    truth = torch.tensor(shapes)
    accuracy = {}
    with torch.no_grad():
        for mode in ("resize", "mask"):
            model.config.crop_mode = mode
            embeds = {}
            for context in (1.0, 1.5):
                model.config.crop_context = [context]
                embeds[context] = model.crop_embeddings(pixel_values, boxes)[:, 0]
                hits = (embeds[context] @ labels.T).argmax(dim=1) == truth
                accuracy[f"{mode} {context:g}x"] = 100 * hits.float().mean().item()
            both = F.normalize(embeds[1.0] + embeds[1.5], dim=-1)
            accuracy[f"{mode} 1x + 1.5x"] = 100 * ((both @ labels.T).argmax(dim=1) == truth).float().mean().item()
    accuracy["objects"] = float(len(shapes))
    return accuracy


def summarize(results: Sequence[RunResult], metric: str) -> dict[str, tuple[float, float, int]]:
    """`{variant: (mean, sd, runs)}` of one metric (sd 0 for a single run)."""
    summary = {}
    for key in dict.fromkeys(result.variant for result in results):
        values = np.array([getattr(r, metric) for r in results if r.variant == key], dtype=np.float64)
        summary[key] = (float(values.mean()), float(values.std(ddof=1)) if len(values) > 1 else 0.0, len(values))
    return summary


def markdown_tables(results: Sequence[RunResult]) -> str:
    def cell(key: str, metric: str) -> str:
        mean, sd, runs = summarize(results, metric)[key]
        return f"{mean:.1f} ± {sd:.1f}" if runs > 1 else f"{mean:.1f}"

    keys = list(dict.fromkeys(result.variant for result in results))
    lines = [
        "| variant | ZSL mAP | ZSL F1@3 | GZSL mAP | GZSL F1@3 | seen mAP | ZSL mAP, unseen alone | runs "
        "| time / run |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for key in keys:
        seconds, _, runs = summarize(results, "seconds")[key]
        cells = " | ".join(cell(key, metric) for metric in TAG_METRICS)
        lines.append(f"| {VARIANTS[key].name} | {cells} | {runs} | {seconds:.0f} s |")
    lines += [
        "",
        "| variant | unseen box AP@0.5 | unseen pointing | seen box AP@0.5 | seen pointing | all box AP@0.5 |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for key in keys:
        lines.append(f"| {VARIANTS[key].name} | " + " | ".join(cell(key, metric) for metric in BOX_METRICS) + " |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="data/synthetic", help="canonical synthetic dataset (prepared if missing)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="training seeds (0 1 2)")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--work-dir", default=None, help="where the trained models go (default: a temporary folder)")
    parser.add_argument(
        "--reuse-runs", action="store_true", help="keep finished runs of the same recipe in --work-dir (resume a sweep)"
    )
    parser.add_argument("--json", default=None, help="also write every run's numbers to this JSON file")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 on a shared 2-core machine)")
    parser.add_argument(
        "--crop-probe", action="store_true", help="only print the CLIP's shape accuracy on resized vs masked crops"
    )
    parser.add_argument("overrides", nargs="*", help="extra recipe overrides for every variant (key=value)")
    args = parser.parse_args(argv)

    import torch
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    torch.set_num_threads(args.threads)
    if args.crop_probe:
        accuracy = teacher_crop_accuracy()
        print(f"Shape top-1 of the shipped CLIP on {int(accuracy.pop('objects'))} object cells (percent):")
        for name, value in accuracy.items():
            print(f"  {name:<16} {value:.1f}")
        return 0
    started = time.perf_counter()
    results = run_benchmark(
        args.variants,
        args.seeds,
        args.data,
        args.work_dir,
        args.overrides,
        log=lambda t: print(t, file=sys.stderr),
        reuse=args.reuse_runs,
    )
    print(
        f"ViLD on the synthetic shapes world ({args.data}, test split), seeds {' '.join(map(str, args.seeds))}; "
        f"percent, mean ± sd over seeds; CPU ({torch.get_num_threads()} threads), total wall time "
        f"{(time.perf_counter() - started) / 60:.1f} min.\n"
    )
    print(markdown_tables(results))
    if args.json:
        Path(args.json).write_text(json.dumps([asdict(result) for result in results], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
