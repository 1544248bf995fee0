"""Method quality on the synthetic shapes world with the shipped offline CLIP (~25 min: trains every method, 3 seeds).

The claims come from docs/methods.md ("Results on the synthetic shapes world"), measured with
`benchmarks/bench_methods_synthetic.py`; these tests run the same recipes on the same dataset (`ovmlc data prepare
synthetic` with its default sizes: the effects need the 10,000 training images — with 4,000, full fine-tuning forgets
only ~9 ZSL points and no method fits the seen labels beyond zero-shot) for 3 training seeds, and every seed must
satisfy each claim (no lucky run). Run with `pytest -m quality tests/test_methods_quality.py`.
"""

import sys
from pathlib import Path

import pytest

from ovmlc.core.backbones import SYNTHETIC_CLIP_PATH

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import bench_methods_synthetic as bench  # noqa: E402

pytestmark = [
    pytest.mark.slow,
    pytest.mark.quality,
    pytest.mark.skipif(
        not (SYNTHETIC_CLIP_PATH / "model.safetensors").is_file(), reason="the shipped synthetic CLIP is missing"
    ),
]
SEEDS = (0, 1, 2)
# Claims of the issue: trained methods keep the unseen labels within this many ZSL mAP points of CLIP zero-shot ...
ZSL_TOLERANCE = 3.0
# ... while naive full fine-tuning of the image tower loses at least this many.
FORGETTING = 15.0


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    from ovmlc.cli import main as cli_main

    path = tmp_path_factory.mktemp("synthetic") / "data"
    assert cli_main(["data", "prepare", "synthetic", "--root", "synthetic", "--out", str(path), "--no-progress"]) == 0
    return path


@pytest.fixture(scope="module")
def work_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("runs")


@pytest.fixture(scope="module")
def zero_shot(dataset, work_dir):
    return bench.run_benchmark(["clip-zs"], SEEDS, dataset, work_dir, log=print)[0]


@pytest.fixture(scope="module")
def trained(dataset, work_dir):
    """`trained(method)` → that method's runs for every seed (each method trained once per module)."""
    cache = {}

    def runs(method):
        if method not in cache:
            cache[method] = bench.run_benchmark([method], SEEDS, dataset, work_dir, log=print)
        return cache[method]

    return runs


def test_full_clip_ft_forgets_unseen_labels(trained, zero_shot):
    for run in trained("clipft"):
        assert run.zsl_map <= zero_shot.zsl_map - FORGETTING, (run, zero_shot)


def test_mkt_distillation_keeps_the_global_stream_on_unseen_labels(trained, zero_shot):
    """MKT's mechanism against forgetting: the distilled CLS stream ranks unseen labels as well as CLIP does."""
    for run in trained("mkt-stage1"):
        assert run.extra["zsl_map_global"] >= zero_shot.zsl_map - ZSL_TOLERANCE, (run, zero_shot)
        assert run.seen_map >= zero_shot.seen_map - 0.5, (run, zero_shot)


@pytest.mark.xfail(
    strict=True,
    reason="measured (docs/methods.md, 3 seeds, 10k images): the faithful two-stream MKT keeps seen mAP above "
    "zero-shot (97.8 vs 96.2) but loses 7.6 ZSL mAP points (86.8 vs 94.4): its distilled global stream keeps the "
    "unseen labels (93.0) while the top-k patch stream, aligned on seen labels only, ranks them at 53.9, and the "
    "fusion pulls ZSL below the 3-point tolerance; stage-2 prompt tuning does not move it",
)
def test_mkt_reaches_zero_shot_seen_map_and_keeps_zsl(trained, zero_shot):
    for run in trained("mkt"):
        assert run.seen_map >= zero_shot.seen_map, (run, zero_shot)
        assert run.zsl_map >= zero_shot.zsl_map - ZSL_TOLERANCE, (run, zero_shot)


def test_qks_fits_seen_labels_beyond_zero_shot(trained, zero_shot):
    for run in trained("qks"):
        assert run.seen_map >= zero_shot.seen_map, (run, zero_shot)


@pytest.mark.xfail(
    strict=True,
    reason="measured (docs/methods.md, 3 seeds, 10k images): QKS fits the seen labels (97.9 vs 96.2) but "
    "loses 33 ZSL mAP points (61.3 vs 94.4): its randomly initialised query transformer learns a query space aligned "
    "with the 28 seen labels only; the loss grows with fewer seen concepts (14: ZSL ~31), is not a prompt-pool effect "
    "(single template: same), not fixed by freezing the projection, and not by early stopping (ZSL still rises after "
    "seen mAP saturates)",
)
def test_qks_keeps_zsl_within_tolerance(trained, zero_shot):
    for run in trained("qks"):
        assert run.zsl_map >= zero_shot.zsl_map - ZSL_TOLERANCE, (run, zero_shot)
