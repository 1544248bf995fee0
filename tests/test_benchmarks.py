"""The benchmark scripts run end to end on small inputs and print the ratios / tables they promise (no timing asserted:
the numbers they print are measured side by side and reported, never checked in tests)."""

import math
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ovmlc.files import TRAINER_STATE_FILE

REPO = Path(__file__).resolve().parents[1]
BENCHMARKS = REPO / "benchmarks"


def run_script(name: str, *arguments: str, tmp_path: Path) -> str:
    env = dict(os.environ, OMP_NUM_THREADS="1", OVMLC_CACHE=str(tmp_path / "cache"))
    result = subprocess.run(
        [sys.executable, str(BENCHMARKS / name), *arguments], env=env, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


@pytest.mark.slow
def test_bench_training_prints_the_feature_cache_speed_up(tmp_path):
    out = run_script("bench_training.py", "--skip-b16", "--tiny-images", "24", tmp_path=tmp_path)
    row = re.search(r"^tiny\s+24\s+([\d.]+)s\s+([\d.]+)s\s+([\d.]+)x", out, flags=re.MULTILINE)
    assert row, out
    pixels, cached, ratio = map(float, row.groups())
    assert pixels > 0 and cached > 0
    # Times are printed to 1 ms and the ratio to 0.1, from the unrounded times.
    assert (pixels - 5e-4) / (cached + 5e-4) - 0.05 <= ratio <= (pixels + 5e-4) / max(cached - 5e-4, 1e-9) + 0.05


@pytest.mark.slow
def test_bench_inference_prints_both_ratios_for_both_dtypes(tmp_path):
    small = ["--tiny", "--images", "2", "--pipeline-images", "1", "--threads", "1", "--jpegs", "4"]
    small += ["--jpeg-sizes", "40", "90", "--e2e-labels", "100", "--fill-labels", "20", "--workers", "1"]
    out = run_script("bench_inference.py", *small, tmp_path=tmp_path)
    for dtype in ("float32", "bfloat16"):
        assert re.search(rf"^\| {dtype} \| a: bare image encoder \| - \| [\d.]+ \|$", out, flags=re.MULTILINE), out
        for size in (81, 1000, 1006, 7586):
            assert re.search(rf"^\| {dtype} \| b: predict, cached vocabulary .*\| {size} \| [\d.]+ \|$", out, re.M)
        assert re.search(rf"^\| {dtype} \| c: stock zero-shot-image-classification pipeline \| 1000 \|", out, re.M)
    for dtype in ("float32", "bfloat16"):
        assert re.search(rf"^{dtype}: b/a at 7,586 labels = [\d.]+ .*; b/c at 1,000 labels = \d+ ", out, re.M), out
        assert re.search(rf"^\| {dtype} \| e: bare image side on pre-decoded tensors \| - \| [\d.]+ \|$", out, re.M)
        for suffix in ("", r" \(--fast-decode\)"):
            assert re.search(
                rf"^\| {dtype} \| d: ovmlc predict, JPEG folder -> JSONL{suffix} \| 100 \| [\d.]+ \|$", out, re.M
            )
        assert re.search(
            rf"^{dtype}: d/e at 100 labels = [\d.]+ \(--fast-decode [\d.]+; target >= 0.9; 4 JPEGs", out, re.M
        )
        fill = re.search(rf"^\| {dtype} \| 20 \| ([\d.]+) s \| ([\d.]+) s \| [\d.]+x \| ([\d.e+-]+) \|$", out, re.M)
        assert fill and float(fill.group(3)) < (1e-5 if dtype == "float32" else 5e-2), out
    assert re.search(r"^peak RSS: \d+ MiB \(this process, all rows\), \d+ MiB", out, re.M), out


@pytest.mark.slow
def test_bench_methods_synthetic_trains_through_the_recipes_and_tabulates(tmp_path):
    sys.path.insert(0, str(BENCHMARKS))
    try:
        import bench_methods_synthetic as bench
    finally:
        sys.path.remove(str(BENCHMARKS))
    from ovmlc.cli import main as cli_main

    data = tmp_path / "data"
    sizes = ["--num-train", "64", "--num-val", "16", "--num-test", "48", "--no-progress"]
    assert cli_main(["data", "prepare", "synthetic", "--root", "synthetic", "--out", str(data), *sizes]) == 0
    one_epoch = ["training.epochs=1", "training.batch_size=32", "training.eval_batch_size=32"]
    results = bench.run_benchmark(
        ["clip-zs", "mkt-stage1", "mkt"],
        [0, 1],
        data,
        tmp_path / "runs",
        overrides={"mkt-stage1": one_epoch, "mkt": one_epoch},
        log=lambda text: None,
    )
    assert [(result.method, result.seed) for result in results] == [
        ("clip-zs", 0),
        ("mkt-stage1", 0),
        ("mkt-stage1", 1),
        ("mkt", 0),
        ("mkt", 1),
    ]
    for result in results:
        for name in bench.METRICS:
            assert 0.0 <= getattr(result, name) <= 100.0, result
    # Stage 1 is trained once per seed and shared by the two-stage row (same output folder upstream).
    assert (tmp_path / "runs" / "mkt-synthetic-stage1-seed0" / "model.safetensors").is_file()
    assert results[3].output_dir.endswith("mkt-synthetic-stage2-seed0")
    assert results[3].train_seconds > results[1].train_seconds
    # The stream decomposition ends in the fused score, which is what MKT's ZSL column reports.
    for result in results[1:]:
        assert result.extra["zsl_map_fused"] == pytest.approx(result.zsl_map, abs=1e-6)

    table = bench.markdown_table(results).splitlines()
    assert table[0].startswith("| method | ZSL mAP") and len(table) == 2 + 3
    assert table[2].startswith("| CLIP zero-shot |") and table[2].endswith("| 1 | — |")
    assert re.fullmatch(r"\| MKT stage 1 \|( \d+\.\d ± \d+\.\d \|){5} 2 \| \d+ s \|", table[3]), table[3]
    streams = bench.stream_lines(results)
    assert len(streams) == 2 and streams[0].startswith("MKT stage 1, ZSL mAP by stream: global ")


@pytest.mark.slow
def test_bench_onnx_prints_accuracy_and_speed_tables(tmp_path):
    pytest.importorskip("onnxruntime", reason="ONNX export needs the `onnx` extra: pip install 'ovmlc[onnx]'")
    out = run_script("bench_onnx.py", "--test-images", "24", "--threads", "1", tmp_path=tmp_path)
    rows = dict(re.findall(r"^\| (PyTorch fp32|onnxruntime fp32|onnxruntime int8) \| ([\d.]+) \| [\d.]+ \|", out, re.M))
    assert set(rows) == {"PyTorch fp32", "onnxruntime fp32", "onnxruntime int8"}, out
    assert abs(float(rows["onnxruntime fp32"]) - float(rows["PyTorch fp32"])) < 0.01  # same scores, same mAP
    for runtime in ("PyTorch fp32", "onnxruntime fp32", "onnxruntime int8"):
        assert re.search(rf"^\| synthetic CLIP \| {runtime} \| [\d.]+ \| [\d.]+x \|$", out, re.M), out


@pytest.mark.slow
def test_bench_lamm_synthetic_runs_every_table_through_the_trainer(tmp_path, monkeypatch):
    sys.path.insert(0, str(BENCHMARKS))
    try:
        import bench_lamm_synthetic as bench
    finally:
        sys.path.remove(str(BENCHMARKS))
    from ovmlc.cli import main as cli_main

    monkeypatch.setenv("OVMLC_CACHE", str(tmp_path / "cache"))
    world = bench.WORLDS["shapes-64"]
    data = tmp_path / "data"
    tiny = ["--num-train", "48", "--num-val", "24", "--num-test", "48", "--no-progress"]
    for name, (converter, arguments) in (("multi-label", world.multi_label), *(
        (f"single-{style}", spec) for style, spec in world.single_label.items()
    )):  # fmt: skip
        command = ["data", "prepare", converter, "--root", converter, "--out", str(data / name), *arguments, *tiny]
        assert cli_main(command) == 0
    quick = ["training.epochs=1", "training.batch_size=16", "training.eval_batch_size=48"]
    runs = bench.few_shot_runs(
        world, data, tmp_path / "runs", ["small"], {"small": [1, 2]}, [0], ["clip-zs", "coop", "lamm"], quick, print
    )
    variants = ["clip-zs", "lamm", "dualcoop", "dualcoop-lamm", "dualcoop-then-lamm"]
    runs += bench.multi_label_runs(world, data, tmp_path / "runs", [0], variants, quick, print)
    multi = {run.method: run.numbers for run in runs if run.table == "multi-label"}
    assert multi["dualcoop-then-lamm"]["zsl_map"] == multi["dualcoop"]["zsl_map"]  # frozen DualCoOp contexts
    assert "| DualCoOp + LAMM |" in bench.multi_label_table(runs)
    runs += bench.merge_runs(world, data, tmp_path / "runs", [0], shots=1, extra=quick, log=print)
    few_shot = bench.few_shot_table(runs, "small")
    assert few_shot.splitlines()[0] == "| method | 1-shot | 2-shot |" and "| LAMM |" in few_shot
    assert "| CLIP zero-shot |" in bench.multi_label_table(runs)
    numbers = {(run.method, run.seed): run.numbers for run in runs if run.table == "merge"}
    assert numbers[("lamm-merged", 0)]["base_top1"] == numbers[("lamm-round1", 0)]["base_top1"]
    assert numbers[("lamm-merged", 0)]["new_top1"] == numbers[("lamm-round2", 0)]["new_top1"]
    assert "| LAMM merged (round 1 + round 2) |" in bench.merge_table(runs)


@pytest.mark.slow
def test_bench_methods_synthetic_partial_label_table(tmp_path):
    sys.path.insert(0, str(BENCHMARKS))
    try:
        import bench_methods_synthetic as bench
    finally:
        sys.path.remove(str(BENCHMARKS))
    from ovmlc.cli import main as cli_main

    data = tmp_path / "data"
    sizes = ["--num-train", "64", "--num-val", "16", "--num-test", "48", "--no-progress"]
    assert cli_main(["data", "prepare", "synthetic", "--root", "synthetic", "--out", str(data), *sizes]) == 0
    short = ["training.epochs=1", "training.eval_batch_size=32"]
    results = bench.run_benchmark(
        ["dualcoop-value", "linear-probe"],
        [0],
        data,
        tmp_path / "runs",
        overrides={"dualcoop-value": short, "linear-probe": short},
        log=lambda text: None,
        partial_labels=[0.3, 0.9],
    )
    assert [(result.method, result.partial_label) for result in results] == [
        ("dualcoop-value", 0.3),
        ("dualcoop-value", 0.9),
        ("linear-probe", 0.3),
        ("linear-probe", 0.9),
    ]
    from ovmlc.training.recipe import load_recipe

    recipe = load_recipe(Path(results[0].output_dir) / "recipe.yaml")
    assert recipe.dataset.partial_label == 0.3 and recipe.method_config["dense_features"] == "value"
    assert all(0.0 <= result.seen_map <= 100.0 and result.extra["train_loop_seconds"] > 0 for result in results)
    table = bench.partial_label_table(results)
    assert table.splitlines()[0].startswith("| method | P = 30 % | P = 90 % | mean | runs |")
    assert "| DualCoOp (value-path tokens) |" in table and "| Linear probe |" in table
    # --reuse-runs: a finished run with the same recipe is scored again, not retrained (a resumed sweep).
    bench._TRAINED.clear()
    state_file = Path(results[0].output_dir) / TRAINER_STATE_FILE
    before = state_file.stat().st_mtime_ns
    again = bench.run_benchmark(
        ["dualcoop-value"], [0], data, tmp_path / "runs", overrides={"dualcoop-value": short}, log=lambda text: None,
        partial_labels=[0.3], reuse=True,
    )  # fmt: skip
    assert state_file.stat().st_mtime_ns == before
    assert (again[0].seen_map, again[0].train_seconds) == (results[0].seen_map, results[0].train_seconds)


@pytest.mark.slow
def test_bench_vild_synthetic_runs_every_variant_through_the_trainer(tmp_path, monkeypatch):
    sys.path.insert(0, str(BENCHMARKS))
    try:
        import bench_vild_synthetic as bench
    finally:
        sys.path.remove(str(BENCHMARKS))
    from ovmlc.cli import main as cli_main

    monkeypatch.setenv("OVMLC_CACHE", str(tmp_path / "cache"))
    data = tmp_path / "data"
    sizes = ["--num-train", "32", "--num-val", "8", "--num-test", "16", "--no-progress"]
    assert cli_main(["data", "prepare", "synthetic", "--root", "synthetic", "--out", str(data), *sizes]) == 0
    small = ["training.epochs=1", "training.batch_size=16", "training.eval_batch_size=16"]
    small += ["method_config.head_hidden_size=16", "method_config.window_sizes=[0.5,1.0]"]
    small += ["method_config.window_strides=[0.5,0.5]"]
    results = bench.run_benchmark(list(bench.VARIANTS), [0, 1], data, tmp_path / "runs", small, log=lambda t: None)
    assert [(r.variant, r.seed) for r in results] == [
        ("clip-windows", 0),
        ("vild-text", 0),
        ("vild-text", 1),
        ("vild-image", 0),
        ("vild-image", 1),
        ("vild", 0),
        ("vild", 1),
    ]
    for result in results:
        for name in (*bench.TAG_METRICS, *bench.BOX_METRICS):
            assert 0.0 <= getattr(result, name) <= 100.0, result
    # ViLD-image and the ensemble share one teacher cache: one training-feature file with teacher embeddings.
    assert len(list((tmp_path / "cache" / "features").glob("train-*.safetensors"))) == 2  # + ViLD-text's
    tables = bench.markdown_tables(results).split("\n\n")
    assert tables[0].splitlines()[2].startswith("| zero-shot CLIP on the windows |")
    assert re.fullmatch(r"\| ViLD \(ensemble\) \|( \d+\.\d ± \d+\.\d \|){5}", tables[1].splitlines()[-1])
    assert re.fullmatch(r"\| ViLD-text \|( \d+\.\d ± \d+\.\d \|){6} 2 \| \d+ s \|", tables[0].splitlines()[3])
    # --reuse-runs: finished runs of the same recipe are read again, not retrained (the quality tests read a sweep).
    state = Path(results[1].output_dir) / TRAINER_STATE_FILE
    before = state.stat().st_mtime_ns
    again = bench.run_benchmark(["vild-text"], [0], data, tmp_path / "runs", small, log=lambda t: None, reuse=True)
    assert state.stat().st_mtime_ns == before and again == [results[1]]


@pytest.mark.slow
def test_bench_inference_has_a_siglip_row(tmp_path):
    small = ["--backbone", "siglip", "--tiny", "--images", "2", "--pipeline-images", "1", "--threads", "1"]
    small += ["--sections", "predict", "--dtypes", "float32", "--vocab-sizes", "1000", "7586"]
    out = run_script("bench_inference.py", *small, tmp_path=tmp_path)
    assert "tiny SigLIP, random weights" in out, out
    assert re.findall(r"^\| float32 \| b: predict, cached vocabulary .*\| (\d+) \|", out, re.M) == ["1000", "7586"], out
    assert re.search(r"^\| float32 \| c: stock zero-shot-image-classification pipeline \| 1000 \|", out, re.M), out
    assert re.search(r"^float32: b/a at 7,586 labels = [\d.]+ .*; b/c at 1,000 labels = \d+ ", out, re.M), out


@pytest.mark.slow
def test_bench_shapes_clutter_heads_prints_every_head_and_group(tmp_path):
    small = ["--train-images", "200", "--test-images", "80", "--epochs", "1", "--tower-epochs", "1"]
    out = run_script("bench_shapes_clutter_heads.py", *small, tmp_path=tmp_path)
    assert "| head | seen | unseen | shapes | colours | textures | stuff |" in out, out
    heads = (
        "zero-shot (prompts)",
        "linear, global embedding (L-BFGS)",
        "linear per patch token, soft-max",
        "2-layer MLP per patch token, soft-max",
        "the MLP head with the image tower fine-tuned, 1 epochs",
    )
    for head in heads:
        row = re.search(rf"^\| {re.escape(head)} \|((?: [\d.]+ \|){{6}})$", out, flags=re.MULTILINE)
        assert row, (head, out)
        assert all(0 <= float(cell) <= 100 for cell in row.group(1).split("|") if cell.strip())


def test_bench_shapes_clutter_heads_layout_changes():
    sys.path.insert(0, str(BENCHMARKS))
    try:
        import bench_shapes_clutter_heads as bench
    finally:
        sys.path.remove(str(BENCHMARKS))
    from ovmlc.data import shapes_clutter

    config = bench.tagging_config(["num_objects=[2, 5]", "overlap_prob=0"])
    assert config.num_objects == (2, 5) and config.overlap_prob == 0 and config.style == "tagging"
    assert bench.tagging_config([]) == shapes_clutter.TAGGING
    with pytest.raises(SystemExit, match="num_object.*one of"):
        bench.tagging_config(["num_object=3"])
    for bad in ("num_objects=3", "overlap_prob=often", "large_prob=[0.5, 1]", "style=1"):
        with pytest.raises(SystemExit, match=r"takes a value like"):
            bench.tagging_config([bad])


@pytest.mark.slow
def test_bench_shapes_clutter_transfer_prints_every_row_for_every_shift(tmp_path):
    small = ["--train-images", "160", "--test-images", "80", "--epochs", "1", "--probes", "global", "patch"]
    out = run_script("bench_shapes_clutter_transfer.py", *small, "--layout", "large_prob=1.0", tmp_path=tmp_path)
    header = "| shift: row | ZSL mAP | seen mAP | seen colours | unseen colours | unseen shapes | unseen stuff |"
    assert header in out and "test tagging images (large_prob=1.0)" in out, out
    rows = (
        "zero-shot",
        "linear adapter, seen labels",
        "image tower fine-tuned, seen labels",
        "image tower fine-tuned, all labels (oracle)",
        "patch tokens, zero-shot",
        "patch tokens, zero-shot, averaged with global zero-shot",
        "residual MLP per patch token, seen labels",
        "residual MLP per patch token, seen labels, averaged with global zero-shot",
        "residual MLP per patch token, all labels (oracle)",
    )
    for shift in ("none", "warm", "channel-swap"):
        for title in rows:
            row = re.search(rf"^\| {shift}: {re.escape(title)} \|((?: [\d.]+ \|){{6}})$", out, flags=re.MULTILINE)
            assert row, (shift, title, out)
            assert all(0 <= float(cell) <= 100 for cell in row.group(1).split("|") if cell.strip())


def test_bench_shapes_clutter_transfer_shifts_and_calibrated_head():
    import torch

    sys.path.insert(0, str(BENCHMARKS))
    try:
        import bench_shapes_clutter_transfer as bench
    finally:
        sys.path.remove(str(BENCHMARKS))

    images = np.random.default_rng(0).integers(0, 256, size=(3, 4, 4, 3), dtype=np.uint8)
    assert bench.shift_pixels(images, "none") is images
    swapped = bench.shift_pixels(images, "channel-swap")
    assert np.array_equal(swapped[..., 2], images[..., 0]) and np.array_equal(swapped[..., 0], images[..., 1])
    warm = bench.shift_pixels(np.full((1, 1, 1, 3), 200, dtype=np.uint8), "warm")
    assert warm.dtype == np.uint8 and warm[0, 0, 0, 0] > 200 > warm[0, 0, 0, 1] > warm[0, 0, 0, 2]
    with pytest.raises(ValueError, match="Unknown shift 'sepia'"):
        bench.shift_pixels(images, "sepia")
    # Calibrated start: each label's mean predicted probability on the training images is near its prior.
    generator = torch.Generator().manual_seed(0)
    cosines = torch.rand(500, 4, generator=generator) * 0.4  # [n, C]
    prior = torch.tensor([0.05, 0.2, 0.5, 0.01])
    head = bench.CalibratedHead(cosines, prior)
    assert head(cosines[:2]).shape == (2, 4)
    probabilities = torch.sigmoid(head(cosines)).mean(0)
    assert torch.allclose(probabilities, prior, atol=0.06), probabilities
    # The patch route starts as the CLIP: each patch token through the CLIP's projection, a soft max over patches.
    projection = torch.randn(6, 5, generator=generator)  # [D, H_v]
    tokens = torch.randn(2, 1 + 3, 5, generator=generator)  # [B, 1 + N, H_v]
    label_embeds = torch.nn.functional.normalize(torch.randn(4, 6, generator=generator), dim=-1)  # [C, D]
    adapter = bench.PatchAdapter(projection)
    assert torch.allclose(adapter(tokens), tokens[:, 1:] @ projection.T)
    pooled = bench.patch_cosines(adapter(tokens), label_embeds)  # [B, C]
    per_patch = torch.nn.functional.normalize(tokens[:, 1:] @ projection.T, dim=-1) @ label_embeds.T  # [B, N, C]
    assert pooled.shape == (2, 4) and (pooled >= per_patch.amax(1) - 1e-6).all()
    assert (pooled <= per_patch.amax(1) + math.log(3) / bench.PATCH_POOL_SHARPNESS + 1e-6).all()
    assert len(adapter.parameters()) == 4 and all(p.requires_grad for p in adapter.parameters())


@pytest.mark.slow
def test_bench_shapes_clutter_ceiling_prints_every_row(tmp_path):
    small = ["--train-images", "300", "--test-images", "120", "--steps", "2", "--eval-every", "1", "--batch-size", "16"]
    out = run_script("bench_shapes_clutter_ceiling.py", *small, tmp_path=tmp_path)
    for model in ("zero-shot \\(prompts\\)", "linear probe, frozen embedding", "fine-tuned image side, 2 steps"):
        for style in ("web", "tagging"):
            row = re.search(rf"^\| {model} \| {style} style \| ([\d.]+) \|$", out, flags=re.MULTILINE)
            assert row, out
            assert 0 <= float(row.group(1)) <= 100
