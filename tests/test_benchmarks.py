"""The benchmark scripts run end to end on small inputs and print the ratios / tables they promise (no timing asserted:
the numbers they print are measured side by side and reported, never checked in tests)."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

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
    assert re.fullmatch(r"\| ViLD-text \|( \d+\.\d ± \d+\.\d \|){5} 2 \| \d+ s \|", tables[0].splitlines()[3])
