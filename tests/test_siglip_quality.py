"""Quality claims of the SigLIP backbone (issue 23) on the synthetic world, with `siglip-synthetic` (the SigLIP the
recipe `hub_configs/siglip-synthetic.yaml` pretrains there) through the real trainer, 3 training seeds (every seed
must satisfy each claim). Measured numbers: docs/siglip.md ("A SigLIP of the synthetic world"), produced by
`benchmarks/bench_methods_synthetic.py --backbone siglip-synthetic`; each threshold keeps a margin below the measured
effect. Run with `pytest -m quality tests/test_siglip_quality.py` (~25 min on one core; `-k` selects).
`OVMLC_SYNTHETIC_DATA` / `OVMLC_BENCH_RUNS`: as in tests/test_methods_quality_prompting.py (a prepared dataset; the
benchmark's `--work-dir`, run with `--backbone siglip-synthetic --reuse-runs`, whose finished runs are read).
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
def dataset(tmp_path_factory):
    from ovmlc.cli import main as cli_main

    if os.environ.get("OVMLC_SYNTHETIC_DATA"):
        return Path(os.environ["OVMLC_SYNTHETIC_DATA"])
    path = tmp_path_factory.mktemp("synthetic") / "data"
    assert cli_main(["data", "prepare", "synthetic", "--root", "synthetic", "--out", str(path), "--no-progress"]) == 0
    return path


@pytest.fixture(scope="module")
def rows(dataset, tmp_path_factory):
    """`rows(method)` → that row's runs on siglip-synthetic for every seed (each trained once per module)."""
    reuse = bool(os.environ.get("OVMLC_BENCH_RUNS"))
    work_dir = Path(os.environ["OVMLC_BENCH_RUNS"]) if reuse else tmp_path_factory.mktemp("runs")
    cache = {}

    def runs(method):
        if method not in cache:
            cache[method] = bench.run_benchmark(
                [method], SEEDS, dataset, work_dir, log=print, backbone=SIGLIP_SYNTHETIC_ALIAS, reuse=reuse
            )
        return cache[method]

    return runs


def test_value_path_patch_tokens_rank_labels_almost_like_the_pooled_embedding(dataset):
    """The issue's question: SigLIP's patch tokens reach the text space only through the pooling head's value path.
    Untrained region aggregation over value-path patch tokens alone vs the pooled embedding, mAP ratio per view.
    Measured: SigLIP 71.6 / 74.4 / 76.6 vs 75.1 / 81.0 / 84.3 (ratios 0.95 / 0.92 / 0.91); MaskCLIP's value path on
    the synthetic CLIP 47.3 / 43.3 / 43.5 vs 94.5 / 95.4 / 96.2 (ratios 0.50 / 0.45 / 0.45)."""
    siglip = bench.dense_feature_zero_shot(dataset, SIGLIP_SYNTHETIC_ALIAS)
    clip = bench.dense_feature_zero_shot(dataset, SYNTHETIC_CLIP_ALIAS)
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
