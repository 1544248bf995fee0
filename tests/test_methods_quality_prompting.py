"""Quality of the prompt-learning family (CoOp, DualCoOp, DualCoOp++) and the partial-label baselines on the synthetic
shapes world with the shipped offline CLIP, through the real trainer, 3 training seeds (every seed must satisfy each
claim). The claims and the measured numbers are in docs/methods.md ("The prompt-learning family on the synthetic
world"), produced by `benchmarks/bench_methods_synthetic.py`; each threshold keeps a margin below the measured effect.
Run with `pytest -m quality tests/test_methods_quality_prompting.py` (about an hour on 2 busy cores; `-k` selects).
`OVMLC_SYNTHETIC_DATA`: an already prepared default-size dataset folder (the world is deterministic);
`OVMLC_BENCH_RUNS`: the benchmark's `--work-dir`, whose finished runs of the same recipe, overrides and seed are then
read instead of trained again (`--reuse-runs`: the same models, so the tests check exactly what the tables report).
"""

import os
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


@pytest.fixture(scope="module")
def zero_shot(synthetic_dataset, tmp_path_factory):
    return bench.run_benchmark(["clip-zs"], SEEDS, synthetic_dataset, tmp_path_factory.mktemp("zs"), log=print)[0]


@pytest.fixture(scope="module")
def trained(synthetic_dataset, tmp_path_factory):
    """`trained(method, partial_label=None)` → that row's runs for every seed (each trained once per module)."""
    reuse = bool(os.environ.get("OVMLC_BENCH_RUNS"))
    work_dir = Path(os.environ["OVMLC_BENCH_RUNS"]) if reuse else tmp_path_factory.mktemp("runs")
    cache = {}

    def runs(method, partial_label=None):
        key = (method, partial_label)
        if key not in cache:
            cache[key] = bench.run_benchmark(
                [method], SEEDS, synthetic_dataset, work_dir, log=print, partial_labels=[partial_label], reuse=reuse
            )
        return cache[key]

    return runs


# ---------------------------------------------------------------------- zero-shot setting (28 seen / 10 unseen)
def test_coop_from_the_zero_shot_prompt_keeps_zero_shot(trained, zero_shot):
    """Measured: ZSL 94.5 vs 94.5, seen 96.3 vs 96.4 (the frozen tower cannot forget; the context hardly moves)."""
    for run in trained("coop"):
        assert run.zsl_map >= zero_shot.zsl_map - 0.5, (run, zero_shot)
        assert run.seen_map >= zero_shot.seen_map - 0.5, (run, zero_shot)


def test_dualcoop_keeps_unseen_labels(trained, zero_shot):
    """Measured: ZSL 93.2 vs 94.5 (plain tokens)."""
    for run in trained("dualcoop"):
        assert run.zsl_map >= zero_shot.zsl_map - 2.0, (run, zero_shot)


def test_plain_tokens_beat_value_path_tokens_on_the_synthetic_clip(trained):
    """Measured: ZSL 93.2 vs 69.7, seen 95.0 vs 84.6: the 4-layer synthetic CLIP's value-path tokens are far less
    text-aligned than its output tokens (MaskCLIP's premise is a large CLIP)."""
    for plain, value in zip(trained("dualcoop"), trained("dualcoop-value"), strict=True):
        assert plain.zsl_map >= value.zsl_map + 15.0, (plain, value)
        assert plain.seen_map >= value.seen_map + 5.0, (plain, value)


def test_dualcoop_head_on_the_global_embedding_matches_coop(trained):
    """The negative/positive pair with its 2-way-softmax ASL is not what costs DualCoOp here. Measured on the global
    embedding alone: ZSL 94.4, seen 96.3 vs CoOp 94.5 / 96.3."""
    for dual, coop in zip(trained("dualcoop-global"), trained("coop"), strict=True):
        assert dual.seen_map >= coop.seen_map - 0.5, (dual, coop)
        assert dual.zsl_map >= coop.zsl_map - 0.5, (dual, coop)


def test_region_aggregation_is_what_costs_dualcoop_here(trained):
    """Same head, regions vs the global embedding alone: measured seen 95.0 vs 96.3; the regions without the global
    token rank the seen labels near chance (46.3 seen mAP): the synthetic CLIP's patch tokens carry little label
    information, and every object fills one patch (nothing small for the aggregation to find)."""
    for regions, global_only, patches in zip(
        trained("dualcoop"), trained("dualcoop-global"), trained("dualcoop-no-global"), strict=True
    ):
        assert global_only.seen_map >= regions.seen_map + 0.6, (regions, global_only)
        assert patches.seen_map <= regions.seen_map - 30.0, (patches, regions)


@pytest.mark.xfail(
    strict=True,
    reason="measured (docs/methods.md, 3 seeds): CoOp 94.5 ZSL / 96.3 seen vs DualCoOp 93.2 / 95.0 on the synthetic "
    "world; the head is not the cause (DualCoOp on the global embedding alone: 94.4 / 96.3), the regions are: the "
    "shipped 4-layer CLIP was trained with a global contrastive loss only and its patch tokens rank the labels near "
    "chance (untrained region aggregation over patches: 48 seen mAP; trained without the global token: 46.3), and no "
    "object is small (one object per 16-px patch); a longer budget narrows but does not close the gap",
)
def test_dualcoop_beats_coop(trained):
    for dual, coop in zip(trained("dualcoop"), trained("coop"), strict=True):
        assert dual.seen_map >= coop.seen_map, (dual, coop)
        assert dual.zsl_map >= coop.zsl_map, (dual, coop)


@pytest.mark.xfail(
    strict=True,
    reason="measured (docs/methods.md, 3 seeds): DualCoOp++ 93.3 ZSL / 94.4 seen vs DualCoOp 93.2 / 95.0: with the "
    "same weak regions, evidence-guided weights and Winner-Take-All do not help on this world",
)
def test_dualcooppp_beats_dualcoop_on_seen_labels(trained):
    for plus, dual in zip(trained("dualcooppp"), trained("dualcoop"), strict=True):
        assert plus.seen_map >= dual.seen_map, (plus, dual)


# ---------------------------------------------------------------------- partial-label setting (seen labels' mAP)
def test_dualcoop_gains_from_every_kept_share_of_the_annotations(trained):
    """Measured seen mAP at P = 10 / 30 / 90 %: 88.4-88.8 / 93.6 / 94.9 (min gains 4.8 and 1.3 per seed): DualCoOp's
    two contexts start equal (every score 0.5), so all of its ranking is learned from the kept annotations."""
    for low, middle, high in zip(
        trained("dualcoop", 0.1), trained("dualcoop", 0.3), trained("dualcoop", 0.9), strict=True
    ):
        assert middle.seen_map >= low.seen_map + 3.0, (low, middle)
        assert high.seen_map >= middle.seen_map + 0.8, (middle, high)


@pytest.mark.parametrize("method", ["coop", "linear-probe"])
def test_methods_starting_at_zero_shot_hardly_depend_on_the_kept_share(trained, method):
    """Measured: CoOp 96.4 at P = 10 % vs 96.3 at 90 %, the linear probe 96.6 vs 96.7 (zero-shot 96.2): both start at
    the zero-shot classifier, which is near this world's ceiling, so a tenth of the labels is as good as all."""
    for low, high in zip(trained(method, 0.1), trained(method, 0.9), strict=True):
        assert abs(high.seen_map - low.seen_map) <= 0.5, (low, high)


def test_dualcoop_at_a_tenth_of_the_labels_needs_only_the_step_size_back(trained):
    """The diagnosis of the row above: the summed ASL x loss_w makes the step proportional to the annotated entries.
    Measured at P = 10 %: loss_w 0.1 (10x the recipe) gives 94.7-94.9 seen mAP against 88.4-88.8 with the recipe's
    0.01 and 94.9 at P = 90 %: a tenth of the labels carries (nearly) all the information here."""
    for scaled, default, full in zip(
        trained("dualcoop-loss-x10", 0.1), trained("dualcoop", 0.1), trained("dualcoop", 0.9), strict=True
    ):
        assert scaled.seen_map >= default.seen_map + 5.0, (scaled, default)
        assert scaled.seen_map >= full.seen_map - 0.6, (scaled, full)


@pytest.mark.xfail(
    strict=True,
    reason="measured (docs/methods.md, 3 seeds, seen mAP at P = 10 / 50 / 90 %): DualCoOp 88.6 / 94.4 / 94.9, "
    "DualCoOp++ 88.1 / 91.8 / 94.0, CoOp 96.4 / 96.3 / 96.3, linear probe 96.6 / 96.7 / 96.7: the methods that start "
    "at the zero-shot classifier sit at this world's ceiling (zero-shot 96.2) whatever P, while DualCoOp's two equal "
    "contexts start at 0.5 everywhere and its region aggregation costs it ~1.3 points even with every label",
)
@pytest.mark.parametrize("share", [0.1, 0.5])
def test_dualcoop_is_best_under_partial_labels(trained, share):
    for dual, coop, probe in zip(
        trained("dualcoop", share), trained("coop", share), trained("linear-probe", share), strict=True
    ):
        assert dual.seen_map >= max(coop.seen_map, probe.seen_map), (dual, coop, probe)
