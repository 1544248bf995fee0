"""Quality claims of the SigLIP backbone (issue 23) on the synthetic world, with `siglip-synthetic` (the SigLIP the
recipe `hub_configs/siglip-synthetic.yaml` pretrains there) through the real trainer, 3 training seeds (every seed
must satisfy each claim). Measured numbers: docs/siglip.md ("A SigLIP of the synthetic world"), produced by
`benchmarks/bench_methods_synthetic.py --backbone siglip-synthetic`, `benchmarks/bench_lamm_synthetic.py --world
shapes-64-siglip` and `benchmarks/bench_vild_synthetic.py backbone=siglip-synthetic`; each threshold keeps a margin
below the measured effect. Run with `pytest -m quality tests/test_siglip_quality.py` (~45 min on one core; `-k`
selects).
`OVMLC_SYNTHETIC_DATA`: a prepared synthetic dataset (the `synthetic_dataset` fixture, tests/conftest.py);
`OVMLC_BENCH_RUNS`: the benchmark's `--work-dir`, run with `--backbone siglip-synthetic --reuse-runs`, whose finished
runs are read.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from ovmlc.resources import SIGLIP_SYNTHETIC_ALIAS, SIGLIP_SYNTHETIC_DIR, SYNTHETIC_CLIP_ALIAS

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import bench_methods_synthetic as bench  # noqa: E402

pytestmark = [
    pytest.mark.slow,
    pytest.mark.quality,
    pytest.mark.skipif(
        not (SIGLIP_SYNTHETIC_DIR / "model.safetensors").is_file(), reason="the shipped synthetic SigLIP is missing"
    ),
]

SEEDS = (0, 1, 2)
VIEWS = ("zsl", "gzsl", "seen")


@pytest.fixture(scope="module")
def rows(synthetic_dataset, tmp_path_factory):
    """`rows(method)` → that row's runs on siglip-synthetic for every seed (each trained once per module)."""
    reuse = bool(os.environ.get("OVMLC_BENCH_RUNS"))
    work_dir = Path(os.environ["OVMLC_BENCH_RUNS"]) if reuse else tmp_path_factory.mktemp("runs")
    cache = {}

    def runs(method):
        if method not in cache:
            cache[method] = bench.run_benchmark(
                [method], SEEDS, synthetic_dataset, work_dir, log=print, backbone=SIGLIP_SYNTHETIC_ALIAS, reuse=reuse
            )
        return cache[method]

    return runs


def test_value_path_patch_tokens_rank_labels_almost_like_the_pooled_embedding(synthetic_dataset):
    """The issue's question: SigLIP's patch tokens reach the text space only through the pooling head's value path.
    Untrained region aggregation over value-path patch tokens alone vs the pooled embedding, mAP ratio per view.
    Measured: SigLIP 71.6 / 74.4 / 76.6 vs 75.1 / 81.0 / 84.3 (ratios 0.95 / 0.92 / 0.91); MaskCLIP's value path on
    the synthetic CLIP 47.3 / 43.3 / 43.5 vs 94.5 / 95.4 / 96.2 (ratios 0.50 / 0.45 / 0.45)."""
    siglip = bench.dense_feature_zero_shot(synthetic_dataset, SIGLIP_SYNTHETIC_ALIAS)
    clip = bench.dense_feature_zero_shot(synthetic_dataset, SYNTHETIC_CLIP_ALIAS)
    for view in VIEWS:
        key, pooled = "value tokens, patches only", "global embedding alone (CLIP zero-shot)"
        siglip_ratio = siglip[key][view] / siglip[pooled][view]
        clip_ratio = clip[key][view] / clip[pooled][view]
        assert siglip_ratio >= 0.85, (view, siglip)
        assert clip_ratio <= 0.65, (view, clip)
    # on SigLIP "plain" and "value" tokens are the same tokens (both through the head's value path)
    assert siglip["plain tokens, patches only"] == siglip["value tokens, patches only"]


def test_coop_on_siglip_keeps_zero_shot(rows):
    """Measured: CoOp 75.1 / 84.3 (ZSL / seen) = zero-shot 75.1 / 84.3 on every seed (the context hardly moves)."""
    zero_shot = rows("clip-zs")[0]
    for run in rows("coop"):
        assert abs(run.zsl_map - zero_shot.zsl_map) <= 0.5 and abs(run.seen_map - zero_shot.seen_map) <= 0.5, run


def test_dualcoop_regions_on_siglip_do_not_beat_the_pooled_embedding(rows):
    """As on the synthetic CLIP (one object per patch, nothing small): DualCoOp with value-path regions 81.8 seen mAP,
    on the pooled embedding alone 83.1, every seed (diagnosis in docs/siglip.md)."""
    for regions, pooled in zip(rows("dualcoop"), rows("dualcoop-global")):
        assert pooled.seen_map >= regions.seen_map + 0.5, (regions, pooled)


def test_qks_on_siglip_trades_unseen_labels_for_seen_ones(rows):
    """Measured: seen 87.1 / 85.6 / 86.1 vs zero-shot 84.3; ZSL 45.0 / 41.6 / 46.0 vs 75.1."""
    zero_shot = rows("clip-zs")[0]
    for run in rows("qks"):
        assert run.seen_map >= zero_shot.seen_map + 0.5, (run, zero_shot)
        assert run.zsl_map <= zero_shot.zsl_map - 20.0, (run, zero_shot)


def test_full_clipft_on_siglip_forgets_unseen_labels(rows):
    """Measured: seen 86.5 / 86.4 / 86.7 vs zero-shot 84.3; ZSL 59.5 / 59.4 / 59.1 vs 75.1 (LoRA: 70.0, seen 84.8)."""
    zero_shot = rows("clip-zs")[0]
    for run in rows("clipft"):
        assert run.seen_map >= zero_shot.seen_map + 1.0, (run, zero_shot)
        assert run.zsl_map <= zero_shot.zsl_map - 10.0, (run, zero_shot)


@pytest.fixture(scope="module")
def lamm_rows(tmp_path_factory):
    """LAMM's multi-label rows on siglip-synthetic (`bench_lamm_synthetic.py --world shapes-64-siglip`)."""
    import bench_lamm_synthetic as lamm_bench

    variants = ("clip-zs", "lamm", "dualcoop", "dualcoop-lamm")
    runs = lamm_bench.multi_label_runs(
        lamm_bench.WORLDS["shapes-64-siglip"], tmp_path_factory.mktemp("lamm-data"),
        tmp_path_factory.mktemp("lamm-runs"), SEEDS, variants, log=print,
    )  # fmt: skip
    return {variant: [run for run in runs if run.method == variant] for variant in variants}


def test_lamm_on_siglip_keeps_zero_shot_and_helps_dualcoop_on_seen_labels(lamm_rows):
    """Measured (3 seeds): LAMM (coop head) seen 84.35 / 84.36 / 84.33, ZSL 75.07, vs zero-shot 84.28 / 75.07 (its
    label tokens hardly move); DualCoOp + LAMM seen 82.38 / 82.39 / 82.37 vs DualCoOp 81.85 / 81.84 / 81.79 (paired
    gain 0.53-0.58; on the synthetic CLIP 1.70-1.74)."""
    zero_shot = lamm_rows["clip-zs"][0].numbers
    for run in lamm_rows["lamm"]:
        assert abs(run.numbers["seen_map"] - zero_shot["seen_map"]) <= 0.3, (run, zero_shot)
        assert abs(run.numbers["zsl_map"] - zero_shot["zsl_map"]) <= 0.3, (run, zero_shot)
    dualcoop = {run.seed: run.numbers["seen_map"] for run in lamm_rows["dualcoop"]}
    for run in lamm_rows["dualcoop-lamm"]:
        assert run.numbers["seen_map"] >= dualcoop[run.seed] + 0.4, (run, dualcoop)


def test_vild_ensemble_on_siglip_learns_seen_labels_and_unseen_boxes(synthetic_dataset, tmp_path_factory):
    """`bench_vild_synthetic.py backbone=siglip-synthetic`, measured per seed against zero-shot SigLIP on the same
    windows (ZSL 77.5, seen 85.0, unseen box AP 36.2): ensemble seen 88.4 / 88.7 / 88.3, unseen box AP 62.3 / 61.4 /
    60.2, ZSL 75.3 / 75.3 / 76.0 (the unseen tags stay near zero-shot while ViLD-text alone drops to 50.5)."""
    import bench_vild_synthetic as vild_bench

    runs = vild_bench.run_benchmark(
        ["clip-windows", "vild"], SEEDS, synthetic_dataset, tmp_path_factory.mktemp("vild-runs"),
        extra=[f"backbone={SIGLIP_SYNTHETIC_ALIAS}"], log=print,
    )  # fmt: skip
    baseline = next(run for run in runs if run.variant == "clip-windows")
    for run in (run for run in runs if run.variant == "vild"):
        assert run.seen_map >= baseline.seen_map + 2.5, (run, baseline)
        assert run.unseen_box_ap >= baseline.unseen_box_ap + 15.0, (run, baseline)
        assert run.zsl_map >= baseline.zsl_map - 4.0, (run, baseline)
