"""LAMM's claims on the synthetic shapes world with the shipped offline CLIP, through the real trainer, training seeds
0, 1, 2 (markers `slow`, `quality`: `pytest -m quality tests/test_lamm_quality.py`, about 45 min on 2 shared cores;
the dualcoop-head rows alone, `-k dualcoop`, about 15 min).

The runs are those of `benchmarks/bench_lamm_synthetic.py` (same recipes, datasets and seeds; shots cut to 1, 4 and
16 for the `small` style and to 16 for `standard`; no CoOp + LAMM few-shot rows); docs/methods.md ("LAMM on the
synthetic world") has the measured tables the margins come from. Every seed must satisfy each claim (no lucky run);
paired claims compare runs of the same seed, which draw the same shots. What does not hold on this world is a strict
expected failure with the measured numbers, never a loosened margin.
"""

import sys
from pathlib import Path

import pytest

from ovmlc.core.backbones import SYNTHETIC_CLIP_PATH

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import bench_lamm_synthetic as bench  # noqa: E402

pytestmark = [
    pytest.mark.slow,
    pytest.mark.quality,
    pytest.mark.skipif(
        not (SYNTHETIC_CLIP_PATH / "model.safetensors").is_file(), reason="the shipped synthetic CLIP is missing"
    ),
]
SEEDS = (0, 1, 2)
WORLD = bench.WORLDS["shapes-64"]
SMALL_SHOTS = (1, 4, 16)
# Margins (top-1 / mAP points), each below the smallest per-seed difference measured over seeds 0-2 (docs/methods.md).
LAMM_OVER_COOP_SMALL = {1: 0.5, 4: 1.5, 16: 0.3}  # paired LAMM - CoOp, small style (measured min 0.92, 2.25, 0.59)
LAMM_OVER_ZERO_SHOT_SMALL = 2.0  # LAMM - zero-shot at 4 and 16 shots, small style (measured min 2.91, 3.00)
HIERARCHICAL_LOSS_GAIN_16 = 0.5  # paired LAMM - LAMM w/o hierarchical loss at 16 shots, small (measured min 0.75)
SEEN_MAP_GAIN = 0.3  # multi-label: LAMM alone - zero-shot and CoOp+LAMM - CoOp, seen mAP (measured min 0.63, 0.66)
# The dualcoop head (hub_configs/lamm-dualcoop-synthetic.yaml), paired with DualCoOp through the same head per seed:
DUALCOOP_LAMM_SEEN_GAIN = 1.5  # DualCoOp + LAMM (joint) - DualCoOp, seen mAP (measured 1.70 / 1.70 / 1.74)
DUALCOOP_THEN_LAMM_SEEN_GAIN = 1.2  # LAMM on a trained DualCoOp - DualCoOp, seen mAP (measured 1.36 / 1.35 / 1.37)
DUALCOOP_VARIANTS = ("dualcoop", "dualcoop-lamm", "dualcoop-then-lamm")


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("lamm-data")


@pytest.fixture(scope="module")
def work_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("lamm-runs")


@pytest.fixture(scope="module")
def few_shot(data_dir, work_dir):
    runs = bench.few_shot_runs(
        WORLD, data_dir, work_dir, ["small", "standard"], {"small": SMALL_SHOTS, "standard": (16,)}, SEEDS,
        ("clip-zs", "coop", "lamm", "lamm-nohl"), log=print,
    )  # fmt: skip

    def top1(style, method, shots):
        return {
            run.seed: run.numbers["all_top1"]
            for run in runs
            if run.setting["style"] == style and run.method == method and run.setting["shots"] == shots
        }

    return top1


@pytest.fixture(scope="module")
def multi_label(data_dir, work_dir):
    runs = bench.multi_label_runs(WORLD, data_dir, work_dir, SEEDS, ("clip-zs", "coop", "lamm", "coop-lamm"), log=print)
    return {
        method: [run for run in runs if run.method == method] for method in ("clip-zs", "coop", "lamm", "coop-lamm")
    }


@pytest.fixture(scope="module")
def dualcoop_rows(data_dir, work_dir):
    runs = bench.multi_label_runs(WORLD, data_dir, work_dir, SEEDS, DUALCOOP_VARIANTS, log=print)
    return {method: {run.seed: run.numbers for run in runs if run.method == method} for method in DUALCOOP_VARIANTS}


@pytest.fixture(scope="module")
def merge(data_dir, work_dir):
    runs = bench.merge_runs(WORLD, data_dir, work_dir, SEEDS, shots=16, log=print)
    return {(run.method, run.seed): run.numbers for run in runs}


# ---------------------------------------------------------------------- single-label few-shot
@pytest.mark.parametrize("shots", SMALL_SHOTS)
def test_lamm_beats_coop_under_a_domain_shift(few_shot, shots):
    lamm, coop = few_shot("small", "lamm", shots), few_shot("small", "coop", shots)
    for seed in SEEDS:
        assert lamm[seed] >= coop[seed] + LAMM_OVER_COOP_SMALL[shots], (shots, seed, lamm, coop)


@pytest.mark.parametrize("shots", (4, 16))
def test_lamm_beats_zero_shot_under_a_domain_shift(few_shot, shots):
    zero_shot = few_shot("small", "clip-zs", shots)[0]
    for seed, value in few_shot("small", "lamm", shots).items():
        assert value >= zero_shot + LAMM_OVER_ZERO_SHOT_SMALL, (shots, seed, value, zero_shot)


def test_hierarchical_loss_helps_at_16_shots(few_shot):
    lamm, ablated = few_shot("small", "lamm", 16), few_shot("small", "lamm-nohl", 16)
    for seed in SEEDS:
        assert lamm[seed] >= ablated[seed] + HIERARCHICAL_LOSS_GAIN_16, (seed, lamm, ablated)


@pytest.mark.xfail(
    strict=True,
    reason="measured (docs/methods.md, 3 seeds, small style): the paper's 'the hierarchical loss matters most with the "
    "fewest shots' does not hold here; at 1 shot LAMM and its ablation differ by -0.13 / +1.34 / +0.87 (seeds 0-2): "
    "24 classes x 1 shot is one SGD step per epoch, 50 steps in all, too few for the label tokens to overfit",
)
def test_hierarchical_loss_helps_at_1_shot(few_shot):
    lamm, ablated = few_shot("small", "lamm", 1), few_shot("small", "lamm-nohl", 1)
    for seed in SEEDS:
        assert lamm[seed] > ablated[seed], (seed, lamm, ablated)


@pytest.mark.xfail(
    strict=True,
    reason="measured (docs/methods.md, 3 seeds, small style): the gain over CoOp peaks at 4 shots in the mean (1.2 / "
    "2.5 / 1.7 points at 1 / 4 / 16 shots), not at the fewest shots, and not for every seed (seed 1: 2.29 at 4 shots "
    "< 2.54 at 16)",
)
def test_gain_over_coop_is_largest_at_few_shots(few_shot):
    lamm = {shots: few_shot("small", "lamm", shots) for shots in SMALL_SHOTS}
    coop = {shots: few_shot("small", "coop", shots) for shots in SMALL_SHOTS}
    for seed in SEEDS:
        gain = {shots: lamm[shots][seed] - coop[shots][seed] for shots in SMALL_SHOTS}
        assert gain[1] >= gain[4] >= gain[16], (seed, gain)


@pytest.mark.xfail(
    strict=True,
    reason="measured (docs/methods.md, 3 seeds): on single objects drawn as in the CLIP's pretraining, zero-shot top-1 "
    "is 97.1, above a logistic-regression probe on all 100 images per class (96.5): the remaining errors (circle / "
    "hexagon / pentagon) are not separable in the frozen image features, so learned label tokens can only overfit the "
    "shots (LAMM 16-shot 96.1 < CoOp 97.0, whose 4 context vectors barely move)",
)
def test_lamm_beats_coop_where_zero_shot_is_at_the_ceiling(few_shot):
    lamm, coop = few_shot("standard", "lamm", 16), few_shot("standard", "coop", 16)
    for seed in SEEDS:
        assert lamm[seed] >= coop[seed], (seed, lamm, coop)


# ---------------------------------------------------------------------- multi-label
def test_lamm_alone_keeps_unseen_labels_exactly_and_fits_seen_ones(multi_label):
    zero_shot = multi_label["clip-zs"][0].numbers
    for run in multi_label["lamm"]:
        # Unseen labels keep CLIP's prompt; a shared scale and bias cannot change their per-label ranking.
        assert run.numbers["zsl_map"] == pytest.approx(zero_shot["zsl_map"], abs=1e-6), run
        assert run.numbers["seen_map"] >= zero_shot["seen_map"] + SEEN_MAP_GAIN, (run, zero_shot)


def test_label_tokens_add_to_coop_on_seen_labels(multi_label):
    coop = {run.seed: run.numbers for run in multi_label["coop"]}
    for run in multi_label["coop-lamm"]:
        assert run.numbers["seen_map"] >= coop[run.seed]["seen_map"] + SEEN_MAP_GAIN, (run, coop[run.seed])


# ---------------------------------------------------------------------- multi-label, the dualcoop head
def test_label_tokens_add_to_dualcoop_on_seen_labels(dualcoop_rows):
    dualcoop, joint = dualcoop_rows["dualcoop"], dualcoop_rows["dualcoop-lamm"]
    for seed in SEEDS:
        assert joint[seed]["seen_map"] >= dualcoop[seed]["seen_map"] + DUALCOOP_LAMM_SEEN_GAIN, (seed, joint, dualcoop)


def test_lamm_on_a_trained_dualcoop_keeps_unseen_labels_exactly_and_fits_seen_ones(dualcoop_rows):
    """LAMM alone on DualCoOp's trained, frozen contexts: unseen labels keep DualCoOp's prompts (original names)."""
    dualcoop, then = dualcoop_rows["dualcoop"], dualcoop_rows["dualcoop-then-lamm"]
    for seed in SEEDS:
        assert then[seed]["zsl_map"] == pytest.approx(dualcoop[seed]["zsl_map"], abs=1e-6), (seed, then, dualcoop)
        assert then[seed]["seen_map"] >= dualcoop[seed]["seen_map"] + DUALCOOP_THEN_LAMM_SEEN_GAIN, (seed, then)


@pytest.mark.xfail(
    strict=True,
    reason="measured (docs/methods.md, 3 seeds): training DualCoOp's two contexts together with the label tokens "
    "costs the unseen labels 7.5 ZSL points (85.62 / 85.50 / 85.80 vs DualCoOp's 93.16 / 93.16 / 93.15). The "
    "contexts co-adapt with the learned tokens: scored with the original names, the seen labels fall to 86.96 (seed "
    "0; DualCoOp 94.98), as low as the unseen ones. LAMM's regularisers compare learned and original names under the "
    "*current* context, so nothing anchors the context itself; LAMM on a trained DualCoOp's frozen contexts keeps ZSL "
    "exactly (the test above)",
)
def test_dualcoop_lamm_keeps_dualcoops_unseen_labels(dualcoop_rows):
    dualcoop, joint = dualcoop_rows["dualcoop"], dualcoop_rows["dualcoop-lamm"]
    for seed in SEEDS:
        assert joint[seed]["zsl_map"] >= dualcoop[seed]["zsl_map"] - 1.0, (seed, joint, dualcoop)


# ---------------------------------------------------------------------- class-incremental
def test_merging_rounds_keeps_each_rounds_accuracy(merge):
    for seed in SEEDS:
        merged, first, second = (merge[(name, seed)] for name in ("lamm-merged", "lamm-round1", "lamm-round2"))
        assert merged["base_top1"] == first["base_top1"] and merged["new_top1"] == second["new_top1"], seed
        assert first["base_top1"] > second["base_top1"]  # round 1 learned the base classes (round 2 is zero-shot there)


def test_coop_continued_on_new_classes_forgets_base_classes(merge):
    """Measured (docs/methods.md, 16-shot, small style): base-class top-1 -0.89 / -0.44 / -0.38 (seeds 0 / 1 / 2)."""
    for seed in SEEDS:
        first, second = merge[("coop-round1", seed)], merge[("coop-round2", seed)]
        assert second["base_top1"] < first["base_top1"] - 0.2, (seed, first, second)
