"""ONNX export: onnxruntime reproduces PyTorch's logits (<= 1e-4) for the fixed-vocabulary graph (folded matrix or
constant label bank) and the open-vocabulary graphs, per method; the CLI; what cannot be exported says why."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from helpers import random_images, save_hub_layout_clip

pytest.importorskip("onnxruntime", reason="ONNX export needs the `onnx` extra: pip install 'ovmlc[onnx]'")
pytest.importorskip("onnxscript", reason="ONNX export needs the `onnx` extra: pip install 'ovmlc[onnx]'")

import ovmlc  # noqa: E402
from ovmlc.cli import main as cli_main  # noqa: E402
from ovmlc.inference.export_onnx import (  # noqa: E402
    PARITY_TOLERANCE,
    ExportError,
    OnnxTagger,
    export_onnx,
    fold_affine_head,
)

LABELS = ["cat", "dog", "red car", "tree"]


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    return save_hub_layout_clip(tmp_path_factory.mktemp("clip"))


def _check_against_pytorch(model, directory, labels=LABELS):
    images = random_images(3, size=40, seed=3)
    tagger = OnnxTagger(directory)
    expected = model.predict_scores(images, labels)  # [3, C]
    pixels = model.preprocess(images).numpy()
    logits = tagger.logits(pixels, None if tagger.fixed else labels)
    np.testing.assert_allclose(1 / (1 + np.exp(-logits)), expected, atol=PARITY_TOLERANCE)
    ranked = tagger.predict(images, None if tagger.fixed else labels, top_k=2)
    assert [[label for label, _ in row] for row in ranked] == [
        [labels[i] for i in np.argsort(-row, kind="stable")[:2]] for row in expected
    ]


def test_clip_zero_shot_fixed_vocabulary_folds_into_one_matrix(clip_dir, tmp_path):
    model = ovmlc.load_model(str(clip_dir))
    info = export_onnx(model, tmp_path / "onnx", labels=LABELS, quantize=True)
    assert info["head"] == "folded-matrix" and info["max_abs_logit_difference"] <= PARITY_TOLERANCE
    assert json.loads((tmp_path / "onnx" / "export.json").read_text())["labels"] == LABELS
    _check_against_pytorch(model, tmp_path / "onnx")
    # The graph holds one [C, D] matrix for the head: label bank, reference prompt, scale and bias folded.
    import onnx

    graph = onnx.load(str(tmp_path / "onnx" / "model.onnx")).graph
    shapes = [tuple(initializer.dims) for initializer in graph.initializer]
    folded = {(len(LABELS), model.clip.config.projection_dim), (model.clip.config.projection_dim, len(LABELS))}
    assert folded & set(shapes) and (len(LABELS),) in shapes  # W [C, D] (or its transpose) and the bias [C]
    int8 = OnnxTagger(tmp_path / "onnx", quantized=True).logits(model.preprocess(random_images(2)).numpy())
    assert int8.shape == (2, len(LABELS)) and np.isfinite(int8).all()


def test_fold_is_refused_for_heads_that_are_not_affine(clip_dir):
    qks = ovmlc.QKSModel.from_clip(str(clip_dir), num_queries=4, num_query_layers=1)
    assert fold_affine_head(qks, qks.encode_labels(LABELS), 16) is None  # reads vision tokens, max over queries
    clip = ovmlc.load_model(str(clip_dir))
    head = fold_affine_head(clip, clip.encode_labels(LABELS), 16)
    assert head is not None and head.normalized and head.weight.shape == (len(LABELS), 16)


def test_export_cli_and_open_vocabulary_graphs(clip_dir, tmp_path, capsys):
    output = tmp_path / "open"
    assert cli_main(["export", "onnx", "--model", str(clip_dir), "--output", str(output)]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["layout"] == "open-vocabulary" and summary["max_abs_logit_difference"] <= PARITY_TOLERANCE
    model = ovmlc.load_model(str(clip_dir))
    _check_against_pytorch(model, output, labels=["boat", "red car", "green tree", "sky"])  # any labels at run time
    assert cli_main(["export", "onnx", "--model", str(clip_dir), "--output", str(tmp_path / "x"), "--quantize"]) == 2
    assert "--quantize needs --labels" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.parametrize("open_vocabulary", [False, True])
def test_qks_exports(clip_dir, tmp_path, open_vocabulary):
    torch.manual_seed(0)
    model = ovmlc.QKSModel.from_clip(str(clip_dir), num_queries=4, num_query_layers=2, templates="qks-pool85")
    info = export_onnx(model, tmp_path / "qks", labels=None if open_vocabulary else LABELS)
    assert info["max_abs_logit_difference"] <= PARITY_TOLERANCE
    assert open_vocabulary or info["head"] == "label-bank-constant"
    _check_against_pytorch(model, tmp_path / "qks")


@pytest.mark.slow
def test_mkt_exports_and_stage_two_needs_a_fixed_vocabulary(clip_dir, tmp_path):
    stage1 = ovmlc.MKTModel.from_clip(str(clip_dir), num_trainable_layers=1, top_k=3, templates="a {} b")
    info = export_onnx(stage1, tmp_path / "stage1", labels=LABELS)
    assert info["head"] == "label-bank-constant" and info["max_abs_logit_difference"] <= PARITY_TOLERANCE
    _check_against_pytorch(stage1, tmp_path / "stage1")

    stage1.save_pretrained(tmp_path / "stage1-model")
    stage2 = ovmlc.MKTModel.from_pretrained(tmp_path / "stage1-model", stage=2)
    with torch.no_grad():
        stage2.prompt_learner.ctx.normal_(std=0.5)  # a tuned prompt: label embeddings differ from CLIP's
    with pytest.raises(ExportError, match="learned weights"):
        export_onnx(stage2, tmp_path / "stage2-open")
    info = export_onnx(stage2, tmp_path / "stage2", labels=LABELS)
    assert info["max_abs_logit_difference"] <= PARITY_TOLERANCE
    _check_against_pytorch(stage2, tmp_path / "stage2")


@pytest.mark.slow
def test_clipft_fixed_vocabulary_folds(clip_dir, tmp_path):
    model = ovmlc.CLIPFTModel.from_clip(str(clip_dir), finetune="full")
    info = export_onnx(model, tmp_path / "clipft", labels=LABELS)
    assert info["head"] == "folded-matrix" and info["max_abs_logit_difference"] <= PARITY_TOLERANCE


@pytest.mark.parametrize("name", ["coop", "dualcoop", "dualcooppp", "linear_probe", "lamm", "vild"])
def test_newer_methods_export_a_fixed_vocabulary(clip_dir, tmp_path, name):
    """The prompt family, the linear probe, LAMM and ViLD export with `--labels` (their learned label embeddings or
    per-label weights become the graph's label bank); only ViLD, whose labels go through CLIP's text tower, also
    exports an open vocabulary."""
    spec = ovmlc.get_method(name)
    torch.manual_seed(0)
    model = spec.model_class.from_clip(str(clip_dir), **{"seen_labels": LABELS, **spec.example_config}).eval()
    info = export_onnx(model, tmp_path / "fixed", labels=LABELS)
    assert info["head"] in ("folded-matrix", "label-bank-constant")
    assert info["max_abs_logit_difference"] <= PARITY_TOLERANCE
    _check_against_pytorch(model, tmp_path / "fixed")
    if name == "vild":
        assert export_onnx(model, tmp_path / "open")["max_abs_logit_difference"] <= PARITY_TOLERANCE
    else:
        with pytest.raises(ExportError, match="--labels"):
            export_onnx(model, tmp_path / "open")
