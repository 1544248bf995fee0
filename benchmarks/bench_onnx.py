"""ONNX export: accuracy of the fp32 and dynamic-int8 graphs on the synthetic test split, and onnxruntime vs PyTorch
fp32 images/s on the same pre-decoded tensors, side by side in one run.

1. The shipped offline CLIP as CLIP zero-shot, fixed vocabulary = the synthetic world's 38 labels, exported with
   `ovmlc export onnx --labels ... --quantize`; GZSL / ZSL mAP (protocol `synthetic`) of PyTorch, onnxruntime fp32
   and onnxruntime int8 on the test split of a freshly generated synthetic dataset.
2. Speed: the image side + folded head, PyTorch fp32 (`Scorer.score_batch`) vs onnxruntime fp32 and int8, on the
   synthetic CLIP, and with `--b16` on a ViT-B/16-shaped CLIP with random weights (export takes minutes).

    python benchmarks/bench_onnx.py [--test-images 500] [--b16] [--threads 2]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_inference import build_backbone, label_names  # noqa: E402

import ovmlc  # noqa: E402
from ovmlc import data as ovmlc_data  # noqa: E402
from ovmlc.cli import main as cli_main  # noqa: E402
from ovmlc.core.scoring import Scorer  # noqa: E402
from ovmlc.evaluation import ScoresFile, evaluate_scores  # noqa: E402
from ovmlc.inference.export_onnx import OnnxTagger, export_onnx  # noqa: E402


def sigmoid(values: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-values))


def accuracy_rows(directory: Path, test_images: int, batch_size: int) -> list[tuple[str, float, float]]:
    dataset = directory / "synthetic"
    sizes = ["--num-train", "16", "--num-val", "16", "--num-test", str(test_images), "--no-progress"]
    assert cli_main(["data", "prepare", "synthetic", "--root", "synthetic", "--out", str(dataset), *sizes]) == 0
    seen, unseen = ovmlc_data.read_label_split(dataset)
    names = [*seen, *unseen]
    split = ovmlc_data.load_canonical(dataset, split="test")
    labels = np.asarray(ovmlc_data.label_matrix(split, names), dtype=np.int8)
    is_unseen = np.array([False] * len(seen) + [True] * len(unseen))
    model = ovmlc.load_model("synthetic")
    export_onnx(model, directory / "onnx-synthetic", labels=names, quantize=True)
    pixel_values = model.preprocess(list(split["image"]))  # [N, 3, H, W]
    label_embeds = model.encode_labels(names)
    scores = {
        "PyTorch fp32": np.concatenate(
            [
                Scorer(model).score_batch(pixel_values[start : start + batch_size], label_embeds).scores.numpy()
                for start in range(0, len(pixel_values), batch_size)
            ]
        )
    }
    for name, quantized in (("onnxruntime fp32", False), ("onnxruntime int8", True)):
        tagger = OnnxTagger(directory / "onnx-synthetic", quantized=quantized)
        scores[name] = sigmoid(tagger.logits(pixel_values.numpy()))
    rows = []
    for name, values in scores.items():
        report = evaluate_scores(ScoresFile(values, labels, names, is_unseen), "synthetic")
        rows.append((name, 100 * report["views"]["gzsl"]["mAP"], 100 * report["views"]["zsl"]["mAP"]))
    return rows


def speed_rows(model, directory: Path, names: list[str], images: int, batch_size: int) -> list[tuple[str, float]]:
    export_onnx(model, directory, labels=names, quantize=True)
    size = model.clip.config.vision_config.image_size
    pixel_values = torch.randn(images, 3, size, size, generator=torch.Generator().manual_seed(0))
    label_embeds = model.encode_labels(names)

    def pytorch():
        for start in range(0, images, batch_size):
            Scorer(model).score_batch(pixel_values[start : start + batch_size], label_embeds)

    runners = {"PyTorch fp32": pytorch}
    for name, quantized in (("onnxruntime fp32", False), ("onnxruntime int8", True)):
        tagger = OnnxTagger(directory, quantized=quantized)
        array = pixel_values.numpy()

        def run(tagger=tagger, array=array):
            for start in range(0, images, batch_size):
                tagger.logits(array[start : start + batch_size])

        runners[name] = run
    rows = []
    for name, function in runners.items():
        function()  # warm-up
        best = min(_seconds(function) for _ in range(2))
        rows.append((name, images / best))
    return rows


def _seconds(function) -> float:
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--test-images", type=int, default=500)
    parser.add_argument("--speed-images", type=int, default=64)
    parser.add_argument("--b16", action="store_true", help="also time a ViT-B/16-shaped CLIP (1,000 labels)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"load average: {os.getloadavg()[0]:.2f} (timings are noisy above ~0.5 on 2 cores)")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        accuracy = accuracy_rows(tmp, args.test_images, args.batch_size)
        synthetic = ovmlc.load_model("synthetic")
        synthetic_names = ovmlc.load_labelset("synthetic")["labels"]
        speeds = [("synthetic CLIP", speed_rows(synthetic, tmp / "speed-synthetic", synthetic_names, 256, 32))]
        if args.b16:
            build_backbone(tmp / "b16", tiny=False)
            b16 = ovmlc.CLIPZeroShotModel.from_clip(str(tmp / "b16"))
            b16._label_cache = ovmlc.core.label_cache.LabelEmbeddingCache()
            speeds.append(("B/16-shaped CLIP", speed_rows(b16, tmp / "speed-b16", label_names(1000), 16, 8)))

    print(f"\nsynthetic test split ({args.test_images} images), CLIP zero-shot, 38 labels, protocol `synthetic`\n")
    print("| scores from | GZSL mAP | ZSL mAP | GZSL change |\n|---|---|---|---|")
    reference = accuracy[0][1]
    for name, gzsl, zsl in accuracy:
        print(f"| {name} | {gzsl:.2f} | {zsl:.2f} | {gzsl - reference:+.2f} |")
    print(f"\n{args.threads} threads, pre-decoded tensors, fixed vocabulary (folded head)\n")
    print("| model | runtime | images/s | vs PyTorch fp32 |\n|---|---|---|---|")
    for model_name, rows in speeds:
        base = rows[0][1]
        for name, ips in rows:
            print(f"| {model_name} | {name} | {ips:.2f} | {ips / base:.2f}x |")


if __name__ == "__main__":
    main()
