"""Quality claims on the shapes-clutter world (issue 18) with its shipped CLIP (`shapes-clutter`), through the real
trainer, 3 training seeds (every seed must satisfy each claim). Measured numbers: docs/synthetic.md ("Methods on
catalogue v2", "Only cell-sized objects, through the trainer"), produced by
`benchmarks/bench_methods_shapes_clutter.py --seeds 0 1 2` (with `--large-prob 1.0` for the cell-sized layout); each
threshold keeps a margin below the measured effect. Only what holds is asserted; the issue's targets that are missed
are reported there.
Run with `pytest -m quality tests/test_shapes_clutter_quality.py` (~2.8 h on one core: the world's 27k images,
CLIP-FT three times, then ViLD three times, its first run caching the CLIP embeddings of every training window's crops
for ~18 min, and CLIP on ViLD's windows scoring the test split's crops; then the same on the cell-sized layout's 27k
images (CLIP-FT and ViLD three times each, ~90 min more); 15 min when the benchmark's runs are reused). The
quickstart's claim runs `ovmlc quickstart` itself for 3 seeds (~8 min).
`OVMLC_SHAPES_CLUTTER_DATA`: the benchmark's `--data-root` (its `main` and `main-large-prob-1` variants are reused);
`OVMLC_BENCH_RUNS`: the benchmark's `--work-dir`, whose finished runs of the same recipes are read.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from ovmlc.cli import main as cli_main
from ovmlc.data.shapes_clutter import load_labelset
from ovmlc.resources import SHAPES_CLUTTER_CLIP_DIR

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import bench_methods_shapes_clutter as bench  # noqa: E402

pytestmark = [
    pytest.mark.slow,
    pytest.mark.quality,
    pytest.mark.skipif(
        not (SHAPES_CLUTTER_CLIP_DIR / "model.safetensors").is_file(), reason="the shapes-clutter CLIP is missing"
    ),
]

SEEDS = (0, 1, 2)


def _rows_on(tmp_path_factory, large_prob: float | None):
    """`rows(method)` → that method's runs on the main dataset of a layout for every seed (trained once)."""
    data_root = Path(os.environ.get("OVMLC_SHAPES_CLUTTER_DATA") or tmp_path_factory.mktemp("shapes-clutter"))
    dataset = bench.prepare_variant("main", data_root, bench.FULL_SIZES, large_prob=large_prob)
    reuse = bool(os.environ.get("OVMLC_BENCH_RUNS"))
    work_root = Path(os.environ["OVMLC_BENCH_RUNS"]) if reuse else tmp_path_factory.mktemp("runs")
    work_dir = work_root / bench.layout_name(large_prob) / "main"  # where the benchmark puts them
    unseen = load_labelset()["unseen"]
    cache = {}

    def runs(method):
        if method not in cache:
            seeds = SEEDS if bench.METHODS[method][1] else SEEDS[:1]
            cache[method] = [
                bench.run_one(method, "main", dataset, seed, work_dir, bench.WORLD, unseen, reuse) for seed in seeds
            ]
        return cache[method]

    return runs


@pytest.fixture(scope="module")
def rows(tmp_path_factory):
    """The shipped tagging layout (half the objects 6-9 px)."""
    return _rows_on(tmp_path_factory, None)


@pytest.fixture(scope="module")
def cell_sized_rows(tmp_path_factory):
    """The tagging layout with only cell-sized objects (`--large-prob 1.0`)."""
    return _rows_on(tmp_path_factory, 1.0)


def test_zero_shot_is_inside_the_target_range(rows):
    """The issue's first target: CLIP zero-shot ZSL mAP between 40 and 70 on the 5,000 tagging test images (images
    with an unseen label). Measured: 42.7 (GZSL 36.9, seen 36.2; random weights 21.0 on 2,000 images)."""
    zero_shot = rows("clip-zs")[0]
    assert 40.0 <= zero_shot.zsl_map <= 70.0, zero_shot


def test_full_clipft_gains_seen_labels_and_forgets_unseen_ones(rows):
    """Fine-tuning the whole image tower on the seen labels moves both ways. Measured (3 seeds): ZSL 35.1 ± 0.1 vs
    zero-shot 42.7 (−7.6), seen 39.6 ± 0.0 vs 36.2 (+3.4). Asserted per seed: ZSL ≤ zero-shot − 5, seen ≥ + 2. (The
    issue's targets, forgetting ≥ 10 and seen ≥ + 10, are missed: docs/synthetic.md.)"""
    zero_shot = rows("clip-zs")[0]
    for run in rows("clipft"):
        assert run.zsl_map <= zero_shot.zsl_map - 5.0, (run, zero_shot)
        assert run.seen_map >= zero_shot.seen_map + 2.0, (run, zero_shot)


def test_vild_beats_zero_shot_on_unseen_labels_and_clip_on_its_windows_beats_vild(rows):
    """ViLD-ensemble, trained with the seen labels' object boxes, scores every window (the 16 grid cells, 9 blocks, the
    whole image) with region heads distilled from CLIP's embeddings of the window crops, so a cell-sized object is no
    longer diluted by the clutter around it. Measured (3 seeds): ZSL 47.2 / 47.6 / 47.5 vs zero-shot 42.7, seen
    43.0 / 43.1 / 42.9 vs 36.2; the unseen shapes' large (10-16 px) instances 46.3 / 47.8 / 46.9 vs 33.4, the small
    ones unchanged (7.8 vs 7.4). Asserted per seed: ZSL ≥ zero-shot + 3 (the issue's transfer target), seen ≥ + 5,
    large unseen shapes ≥ + 8. The gain is the windows', not the training's: CLIP scoring the same windows on their
    crops, untrained, reaches ZSL 52.0 (the issue's counter-evidence outcome); asserted ≥ every ViLD seed + 2."""
    zero_shot, windows = rows("clip-zs")[0], rows("vild-windows")[0]
    large = "10-16px"
    for run in rows("vild"):
        assert run.zsl_map >= zero_shot.zsl_map + 3.0, (run, zero_shot)
        assert run.seen_map >= zero_shot.seen_map + 5.0, (run, zero_shot)
        assert run.zsl_map_by_size[large] >= zero_shot.zsl_map_by_size[large] + 8.0, (run, zero_shot)
        assert windows.zsl_map >= run.zsl_map + 2.0, (windows, run)


def test_on_cell_sized_objects_full_clipft_buys_seen_labels_and_forgets_unseen_ones(cell_sized_rows):
    """With no object smaller than a patch (`data prepare --large-prob 1.0`), zero-shot stays inside the target range
    (measured ZSL 49.6, seen 44.4) and fine-tuning the image tower shows both sides of training: measured (3 seeds)
    seen 52.2 / 52.3 / 52.3 (+7.8) and ZSL 36.1 / 36.1 / 36.3 (−13.5), the issue's forgetting target (≤ −10) met.
    Asserted per seed: seen ≥ zero-shot + 5, ZSL ≤ zero-shot − 10."""
    zero_shot = cell_sized_rows("clip-zs")[0]
    assert 40.0 <= zero_shot.zsl_map <= 70.0, zero_shot
    for run in cell_sized_rows("clipft"):
        assert run.seen_map >= zero_shot.seen_map + 5.0, (run, zero_shot)
        assert run.zsl_map <= zero_shot.zsl_map - 10.0, (run, zero_shot)


def test_on_cell_sized_objects_the_room_is_in_the_regions(cell_sized_rows):
    """On the cell-sized layout CLIP scoring each of ViLD's windows on its crop, untrained, reaches ZSL 79.5 and seen
    70.6 against 49.6 / 44.4 for the whole image: the prompts know the shapes, and the whole-image embedding of 4-10
    objects loses them. ViLD-ensemble, whose region heads learn the crop embeddings of every window (unseen objects
    included) and the seen labels' boxes, measured (3 seeds): ZSL 70.1 / 70.1 / 70.7, seen 67.7 / 67.7 / 67.8, far
    above zero-shot but below the crops it imitates. Asserted: windows ≥ zero-shot + 20 ZSL; per ViLD seed ZSL ≥
    zero-shot + 12 and ≤ windows − 5."""
    zero_shot, windows = cell_sized_rows("clip-zs")[0], cell_sized_rows("vild-windows")[0]
    assert windows.zsl_map >= zero_shot.zsl_map + 20.0, (windows, zero_shot)
    for run in cell_sized_rows("vild"):
        assert run.zsl_map >= zero_shot.zsl_map + 12.0, (run, zero_shot)
        assert run.zsl_map <= windows.zsl_map - 5.0, (run, windows)


def test_quickstart_shows_what_training_buys_and_costs(tmp_path):
    """`ovmlc quickstart` as a user runs it (its own 6,000-image world per seed, CLIP-FT for 8 epochs), seeds 0-2:
    the seen labels gain and the unseen ones are forgotten on every seed. Measured (docs/synthetic.md, "The
    quickstart on this world"): seen +5.6 / +5.6 / +5.7, ZSL -12.5 / -11.8 / -11.4; about 2.5 min per seed."""
    for seed in SEEDS:
        output = tmp_path / f"seed-{seed}"
        assert cli_main(["quickstart", "--output", str(output), "--seed", str(seed)]) == 0
        views = {}
        for run in ("clip-zeroshot", "clipft"):
            report = json.loads((output / run / "eval" / "metrics.json").read_text())["views"]
            views[run] = {view: 100 * report[view]["mAP"] for view in ("zsl", "seen")}
        seen_gain = views["clipft"]["seen"] - views["clip-zeroshot"]["seen"]
        zsl_change = views["clipft"]["zsl"] - views["clip-zeroshot"]["zsl"]
        assert seen_gain >= 4.5, (seed, views)
        assert zsl_change <= -9.0, (seed, views)
