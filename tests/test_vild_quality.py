"""ViLD's claims on the synthetic shapes world with the shipped offline CLIP (slow: trains 3 variants x 3 seeds and
runs the training-free baseline, 84 min with 1 thread on 2 shared cores, plus ~50 min for the teacher cache when it
is not there yet; seconds when `OVMLC_VILD_RUNS` points at a finished sweep).

The numbers come from `benchmarks/bench_vild_synthetic.py` (docs/vild.md, "Results"): these tests run the same
recipe (`hub_configs/vild-synthetic.yaml`) through the real trainer on the same dataset (`ovmlc data prepare
synthetic`, default sizes) for training seeds 0, 1, 2, and every seed must satisfy each claim (no lucky run). Margins
are below the smallest gap measured over the seeds. Run with `pytest -m quality -s tests/test_vild_quality.py`; set
`OVMLC_SYNTHETIC_DATA` to an already prepared default-size dataset folder (the world is deterministic, so the numbers
are the same) to reuse it and its feature caches (`OVMLC_CACHE`), `OVMLC_VILD_RUNS` to the `--work-dir` of a
benchmark sweep on that dataset to read its finished runs instead of training them again (`--reuse-runs`: only runs
of the same recipe, overrides and dataset path count), and `OVMLC_BENCH_JSON` to keep every run's numbers.
"""

import json
import os
import sys
from pathlib import Path

import pytest

from ovmlc.core.backbones import SYNTHETIC_CLIP_PATH

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import bench_vild_synthetic as bench  # noqa: E402

pytestmark = [
    pytest.mark.slow,
    pytest.mark.quality,
    pytest.mark.skipif(
        not (SYNTHETIC_CLIP_PATH / "model.safetensors").is_file(), reason="the shipped synthetic CLIP is missing"
    ),
]
SEEDS = (0, 1, 2)
# Margins sit below the smallest gap measured over seeds 0, 1, 2 (docs/vild.md, "Results"; that gap in brackets).
# ViLD-image keeps the unseen labels better than ViLD-text (the paper's Table 3 direction), by at least:
UNSEEN_ZSL_MARGIN = 30.0  # ZSL tag mAP points [38.9]
UNSEEN_POINTING_MARGIN = 15.0  # unseen pointing accuracy points [17.4]
# The ensemble is best overall: above both single heads on all labels, by at least:
OVERALL_GZSL_MARGIN = 2.0  # GZSL tag mAP points [3.4]
OVERALL_BOX_AP_MARGIN = 4.0  # box AP@0.5 points over all labels with boxes [5.8]
# ... and it localises the unseen labels best, above both single heads by at least:
UNSEEN_BOX_AP_OVER_HEADS_MARGIN = 15.0  # unseen box AP@0.5 points [24.6]
# ... and above the training-free baseline (zero-shot CLIP on the same windows), by at least:
BASELINE_GZSL_MARGIN = 3.0  # GZSL tag mAP points [4.4]
BASELINE_BOX_AP_MARGIN = 35.0  # box AP@0.5 points, all labels [43.7]
BASELINE_UNSEEN_BOX_AP_MARGIN = 15.0  # box AP@0.5 points, unseen labels [23.1]


@pytest.fixture(scope="module")
def runs(synthetic_dataset, tmp_path_factory):
    """Every variant for every seed, trained once per module: `{variant: [RunResult per seed]}`."""
    runs_dir = os.environ.get("OVMLC_VILD_RUNS")
    work_dir = Path(runs_dir) if runs_dir else tmp_path_factory.mktemp("runs")
    results = bench.run_benchmark(
        list(bench.VARIANTS), SEEDS, synthetic_dataset, work_dir, log=print, reuse=bool(runs_dir)
    )
    print("\n" + bench.markdown_tables(results))
    if os.environ.get("OVMLC_BENCH_JSON"):
        from dataclasses import asdict

        Path(os.environ["OVMLC_BENCH_JSON"]).write_text(json.dumps([asdict(r) for r in results], indent=1))
    grouped = {}
    for result in results:
        grouped.setdefault(result.variant, []).append(result)
    return grouped


def by_seed(runs, variant):
    return {result.seed: result for result in runs[variant]}


def test_vild_image_keeps_unseen_labels_better_than_vild_text(runs):
    text, image = by_seed(runs, "vild-text"), by_seed(runs, "vild-image")
    for seed in SEEDS:
        assert image[seed].zsl_map >= text[seed].zsl_map + UNSEEN_ZSL_MARGIN, (image[seed], text[seed])
        assert image[seed].unseen_pointing >= text[seed].unseen_pointing + UNSEEN_POINTING_MARGIN, (
            image[seed],
            text[seed],
        )


@pytest.mark.xfail(
    strict=True,
    reason="measured (docs/vild.md, seeds 0 / 1 / 2): unseen box AP@0.5 of ViLD-image 44.5 / 43.5 / 42.5 vs ViLD-text "
    "35.8 / 49.3 / 40.1 (seed 1 reverses it; ViLD-text's unseen box AP varies with the seed). Box AP@0.5 rewards a "
    "tight box, which only the box-supervised ViLD-text loss teaches (a window with IoU < 0.3 to every object is "
    "background); the distilled head copies CLIP's embeddings of masked crops, which barely change when the window "
    "grows around the object: on 300 test images a looser window containing an unseen shape outscores the shape's "
    "own cell for 38 % of the objects with ViLD-image (seed 1; the CLIP teacher itself: 28 %) and 1.2 % with "
    "ViLD-text. ViLD-image is far ahead on unseen tags (ZSL +39 or more) and pointing (+17 or more)",
)
def test_vild_image_also_has_the_better_unseen_box_ap(runs):
    text, image = by_seed(runs, "vild-text"), by_seed(runs, "vild-image")
    for seed in SEEDS:
        assert image[seed].unseen_box_ap > text[seed].unseen_box_ap, (image[seed], text[seed])


def test_vild_ensemble_is_best_overall(runs):
    text, image, ensemble = (by_seed(runs, key) for key in ("vild-text", "vild-image", "vild"))
    for seed in SEEDS:
        best_single = max(text[seed].gzsl_map, image[seed].gzsl_map)
        assert ensemble[seed].gzsl_map >= best_single + OVERALL_GZSL_MARGIN, (ensemble[seed], text[seed], image[seed])
        best_single = max(text[seed].all_box_ap, image[seed].all_box_ap)
        assert ensemble[seed].all_box_ap >= best_single + OVERALL_BOX_AP_MARGIN, (
            ensemble[seed],
            text[seed],
            image[seed],
        )


def test_vild_ensemble_localises_unseen_labels_best(runs):
    """The text head's tight boxes and the image head's knowledge of unseen labels combine: each head alone has one."""
    text, image, ensemble = (by_seed(runs, key) for key in ("vild-text", "vild-image", "vild"))
    for seed in SEEDS:
        best_single = max(text[seed].unseen_box_ap, image[seed].unseen_box_ap)
        assert ensemble[seed].unseen_box_ap >= best_single + UNSEEN_BOX_AP_OVER_HEADS_MARGIN, (
            ensemble[seed],
            text[seed],
            image[seed],
        )


def test_vild_ensemble_beats_zero_shot_clip_on_the_same_windows(runs):
    """Training adds localisation (a background, tight boxes) and fits the seen labels; the baseline has neither."""
    (baseline,) = runs["clip-windows"]
    for ensemble in runs["vild"]:
        assert ensemble.gzsl_map >= baseline.gzsl_map + BASELINE_GZSL_MARGIN, (ensemble, baseline)
        assert ensemble.all_box_ap >= baseline.all_box_ap + BASELINE_BOX_AP_MARGIN, (ensemble, baseline)
        assert ensemble.unseen_box_ap >= baseline.unseen_box_ap + BASELINE_UNSEEN_BOX_AP_MARGIN, (ensemble, baseline)


@pytest.mark.xfail(
    strict=True,
    reason="measured (docs/vild.md, seeds 0 / 1 / 2): on unseen *tags* the ensemble (ZSL mAP 92.8 / 91.0 / 91.4) "
    "stays below ViLD-image (93.9 / 94.9 / 94.3) and the zero-shot baseline on the windows (95.1): with lambda = 1/3 "
    "the text head, which learned the unseen background patterns of the training images as background (ViLD-text "
    "AP: dotted 26-31, grid 22-25), still pulls their probabilities down (ensemble: dotted background 82.5 / 76.8 / "
    "82.4 vs ViLD-image 97.4 / 96.7 / 97.0; grid background 86.0 / 74.0 / 71.1 vs 91.4 / 92.4 / 92.0); on the 8 "
    "unseen object labels it matches ViLD-image. The ensemble wins on unseen boxes instead (box AP 68.7-73.9 vs "
    "42.5-49.3 for either head and 45.7 for the baseline)",
)
def test_vild_ensemble_is_also_best_on_unseen_tags(runs):
    (baseline,) = runs["clip-windows"]
    image = by_seed(runs, "vild-image")
    for ensemble in runs["vild"]:
        assert ensemble.zsl_map >= max(image[ensemble.seed].zsl_map, baseline.zsl_map), (ensemble, baseline)
