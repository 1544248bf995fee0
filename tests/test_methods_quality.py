"""Method quality on the synthetic shapes world with the shipped offline CLIP (slow: trains every method, 2 seeds).

The claims come from docs/methods.md ("Results on the synthetic shapes world"), measured with
`benchmarks/bench_methods_synthetic.py` over 3 seeds on the 10k-image dataset; here the same recipes run on a smaller
dataset (4,000 training images) for 2 seeds, and every seed must satisfy each claim (no lucky run).
"""

import sys
from pathlib import Path

import pytest

from ovmlc.clip_utils import SYNTHETIC_CLIP_PATH

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import bench_methods_synthetic as bench  # noqa: E402

pytestmark = [
    pytest.mark.slow,
    pytest.mark.quality,
    pytest.mark.skipif(
        not (SYNTHETIC_CLIP_PATH / "model.safetensors").is_file(), reason="the shipped synthetic CLIP is missing"
    ),
]
SEEDS = (0, 1)
# Claims of the issue: trained methods keep the unseen labels within this many ZSL mAP points of CLIP zero-shot ...
ZSL_TOLERANCE = 3.0
# ... while naive full fine-tuning of the image tower loses at least this many.
FORGETTING = 15.0


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    from ovmlc.cli import main as cli_main

    path = tmp_path_factory.mktemp("synthetic") / "data"
    arguments = ["--num-train", "4000", "--num-val", "500", "--num-test", "1000", "--no-progress"]
    assert cli_main(["data", "prepare", "synthetic", "--root", "synthetic", "--out", str(path), *arguments]) == 0
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
    reason="measured (docs/methods.md): the faithful two-stream MKT loses ~7 ZSL mAP points on this world; the "
    "distilled global stream keeps them (within 1) but the local top-k patch stream, trained on seen labels only, "
    "ranks unseen labels at ~70 mAP and the fusion pulls ZSL below the tolerance",
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
    reason="measured (docs/methods.md): a faithful QKS (randomly initialised query transformer trained on 28 seen "
    "labels) loses ~22 ZSL mAP points on this world; the loss shrinks with label diversity (14 seen labels: ZSL ~31; "
    "28: ~72), is not a prompt-pool effect (single template: same) and is not fixed by early stopping (ZSL still "
    "rises when seen mAP has saturated)",
)
def test_qks_keeps_zsl_within_tolerance(trained, zero_shot):
    for run in trained("qks"):
        assert run.zsl_map >= zero_shot.zsl_map - ZSL_TOLERANCE, (run, zero_shot)
