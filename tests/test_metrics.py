"""Exact metric definitions (ovmlc.metrics) against sklearn, literal loop transcriptions and hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score

from ovmlc.evaluation.metrics import (
    average_precision,
    evaluate_protocol,
    filter_classes,
    filter_images,
    list_protocols,
    load_protocol,
    mean_average_precision,
    precision_recall_curve,
    rank_order,
    threshold_f1_curve,
    threshold_metrics,
    to_label_matrix,
    top_k_mask,
    top_k_metrics,
    weighted_mean_average_precision,
)

PRESETS = [
    "coco-48-17",
    "generic",
    "nus-wide-biam",
    "nus-wide-qks",
    "openimages-biam",
    "openimages-qks",
    "synthetic",
    "voc2007",
    "voc2007-dualcoop",
    "voc2007-mlgcn",
]


def random_problem(seed: int, num_images: int = 60, num_labels: int = 12, unannotated: float = 0.0, ties: bool = False):
    rng = np.random.default_rng(seed)
    labels = np.where(rng.random((num_images, num_labels)) < 0.25, 1, -1).astype(np.int8)
    labels[rng.random(labels.shape) < unannotated] = 0
    scores = rng.random((num_images, num_labels)) + 0.3 * (labels == 1)
    if ties:
        scores = np.round(scores * 4) / 4  # few distinct values: many ties
    return scores, labels


def literal_top_k(scores, labels, k):
    """BiAM/DualCoOp 'overall' P/R/F1@K written as loops; ties go to the lower column index."""
    true_positives, num_positives = 0, 0
    for row_scores, row_labels in zip(scores.tolist(), labels.tolist()):
        ranked = sorted(range(len(row_scores)), key=lambda column: -row_scores[column])  # sorted() is stable
        true_positives += sum(1 for column in ranked[:k] if row_labels[column] == 1)
        num_positives += sum(1 for value in row_labels if value == 1)
    precision = true_positives / (len(scores) * k)
    recall = true_positives / num_positives
    return precision, recall, 2 * precision * recall / (precision + recall)


def literal_average_precision(scores, labels):
    """BiAM compute_AP as loops over annotated images, stable descending order."""
    result = []
    for column in range(scores.shape[1]):
        kept = [(scores[row, column], labels[row, column]) for row in range(len(scores)) if labels[row, column] != 0]
        ranked = sorted(kept, key=lambda entry: -entry[0])
        hits, precisions = 0, []
        for rank, (_, label) in enumerate(ranked, start=1):
            if label == 1:
                hits += 1
                precisions.append(hits / rank)
        result.append(sum(precisions) / len(precisions) if precisions else 0.0)
    return np.array(result)


# ------------------------------------------------------------------------------------------------ AP


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_average_precision_matches_sklearn_without_ties(seed, dtype):
    scores, labels = random_problem(seed)
    scores = scores.astype(dtype)
    expected = [average_precision_score(labels[:, c] == 1, scores[:, c]) for c in range(labels.shape[1])]
    np.testing.assert_allclose(average_precision(scores, labels), expected, rtol=0, atol=1e-12)


def test_average_precision_ignores_unannotated_like_sklearn_on_the_annotated_subset():
    scores, labels = random_problem(3, unannotated=0.3)
    for column in range(labels.shape[1]):
        annotated = labels[:, column] != 0
        expected = average_precision_score(labels[annotated, column] == 1, scores[annotated, column])
        assert average_precision(scores, labels)[column] == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("seed", [4, 5])
def test_average_precision_stable_ties_match_literal_loops(seed):
    scores, labels = random_problem(seed, unannotated=0.2, ties=True)
    np.testing.assert_allclose(average_precision(scores, labels), literal_average_precision(scores, labels), atol=1e-12)


@pytest.mark.parametrize("ties", ["stable", "pessimistic", "optimistic"])
def test_float32_fast_ranking_equals_reference_sort(ties):
    rng = np.random.default_rng(8)
    scores = (np.round(rng.normal(size=(7, 300)) * 3) / 3).astype(np.float32)  # negatives, many ties
    scores[0, :4] = [-0.0, 0.0, np.inf, -np.inf]
    is_positive = rng.random(scores.shape) < 0.3
    expected = rank_order(scores.astype(np.float64), is_positive, ties, axis=1)  # argsort / lexsort path
    np.testing.assert_array_equal(rank_order(scores, is_positive, ties, axis=1), expected)
    np.testing.assert_array_equal(rank_order(scores.T, is_positive.T, ties, axis=0), expected.T)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_average_precision_float32_and_float64_agree_with_loops(dtype):
    scores, labels = random_problem(9, unannotated=0.2, ties=True)
    scores = (scores - 0.5).astype(dtype)
    np.testing.assert_allclose(average_precision(scores, labels), literal_average_precision(scores, labels), atol=1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_average_precision_hand_computed_ties(dtype):
    scores = np.array([[0.9], [0.5], [0.5], [0.1]], dtype=dtype)
    # Stable keeps index order among the tied 0.5s: -, +, -, + -> (1/2 + 2/4) / 2.
    assert average_precision(scores, [[-1], [1], [-1], [1]])[0] == pytest.approx(0.5)
    # Pessimistic puts the tied negative first: -, -, +, + -> (1/3 + 2/4) / 2.
    assert average_precision(scores, [[-1], [1], [-1], [1]], ties="pessimistic")[0] == pytest.approx(5 / 12)
    tied_negative_first = [[-1], [-1], [1], [1]]
    assert average_precision(scores, tied_negative_first)[0] == pytest.approx(5 / 12)
    assert average_precision(scores, tied_negative_first, ties="optimistic")[0] == pytest.approx(0.5)
    assert average_precision(scores, tied_negative_first, ties="pessimistic")[0] == pytest.approx(5 / 12)


def test_average_precision_unannotated_and_no_positive_classes():
    scores = np.array([[0.9, 0.4], [0.8, 0.3], [0.7, 0.2], [0.6, 0.1]])
    labels = np.array([[0, -1], [1, -1], [-1, 0], [1, -1]])
    # Column 0 without the unannotated top image: +, -, + -> (1/1 + 2/3) / 2. Column 1 has no positive.
    np.testing.assert_allclose(average_precision(scores, labels), [5 / 6, 0.0])
    ap = average_precision(scores, labels, no_positive="exclude")
    assert ap[0] == pytest.approx(5 / 6) and math.isnan(ap[1])
    assert mean_average_precision(scores, labels) == pytest.approx(5 / 12)  # BiAM: the empty class counts as 0
    assert mean_average_precision(scores, labels, no_positive="exclude") == pytest.approx(5 / 6)


def test_weighted_map_hand_computed():
    scores = np.array([[0.9, 0.9], [0.8, 0.1], [0.7, 0.5], [0.1, 0.6]])
    labels = np.array([[1, -1], [-1, 1], [-1, 1], [-1, 1]])
    # Class 0: AP 1 with 1 positive. Class 1 ranks -, +, +, + (0.9, 0.6, 0.5, 0.1): (1/2 + 2/3 + 3/4) / 3.
    ap1 = (1 / 2 + 2 / 3 + 3 / 4) / 3
    np.testing.assert_allclose(average_precision(scores, labels), [1.0, ap1])
    assert weighted_mean_average_precision(scores, labels) == pytest.approx((1 * 1.0 + 3 * ap1) / 4)
    assert mean_average_precision(scores, labels) == pytest.approx((1.0 + ap1) / 2)


def test_average_precision_accepts_torch_and_boolean_labels():
    scores, labels = random_problem(6)
    expected = average_precision(scores, labels)
    np.testing.assert_allclose(average_precision(torch.tensor(scores), torch.tensor(labels)), expected)
    np.testing.assert_allclose(average_precision(scores, labels == 1), expected)


def test_precision_recall_curve_skips_unannotated():
    precision, recall = precision_recall_curve([0.9, 0.8, 0.7, 0.6], [0, 1, -1, 1])
    np.testing.assert_allclose(precision, [1.0, 1 / 2, 2 / 3])
    np.testing.assert_allclose(recall, [1 / 2, 1 / 2, 1.0])


# ------------------------------------------------------------------------------------------------ P/R/F1@K


@pytest.mark.parametrize("k", [1, 3, 5])
@pytest.mark.parametrize("ties", [False, True])
def test_top_k_matches_literal_definition(k, ties):
    scores, labels = random_problem(7, unannotated=0.2, ties=ties)
    labels[:5] = np.where(labels[:5] == 1, -1, labels[:5])  # images without positives still predict K labels
    precision, recall, f1 = literal_top_k(scores, labels, k)
    metrics = top_k_metrics(scores, labels, k)
    assert metrics["precision"] == pytest.approx(precision)
    assert metrics["recall"] == pytest.approx(recall)
    assert metrics["f1"] == pytest.approx(f1)
    assert metrics["num_predictions"] == len(scores) * k


def test_top_k_hand_computed_with_unannotated_and_empty_images():
    scores = np.array([[0.9, 0.8, 0.1], [0.2, 0.7, 0.6], [0.5, 0.4, 0.3]])
    labels = np.array([[0, 1, 1], [-1, -1, 1], [-1, -1, -1]])
    # K=1: image 0 picks the unannotated label (not a hit), image 1 misses, image 2 has no positive.
    assert top_k_metrics(scores, labels, 1)["precision"] == 0.0
    # K=2: hits = image 0 {1}, image 1 {2} -> TP 2 of 3*2 predictions and 3 positives.
    metrics = top_k_metrics(scores, labels, 2)
    assert (metrics["precision"], metrics["recall"]) == pytest.approx((2 / 6, 2 / 3))
    assert metrics["f1"] == pytest.approx(2 * (1 / 3) * (2 / 3) / (1 / 3 + 2 / 3))
    # The oracle hits min(K, positives) per image: 2 + 1 + 0 = 3 -> P 3/6, R 1.
    assert metrics["f1_upper_bound"] == pytest.approx(2 * 0.5 * 1 / 1.5)


def test_top_k_tie_policies():
    scores = np.array([[0.5, 0.5, 0.5]])
    labels = np.array([[-1, 1, -1]])
    assert top_k_mask(scores, 1).tolist() == [[True, False, False]]  # stable: the lowest column wins
    assert top_k_metrics(scores, labels, 1, ties="optimistic")["num_true_positives"] == 1
    assert top_k_metrics(scores, labels, 1, ties="pessimistic")["num_true_positives"] == 0
    assert top_k_metrics(scores, labels, 2)["num_true_positives"] == 1
    assert top_k_metrics(scores, labels, 2, ties="pessimistic")["num_true_positives"] == 0
    assert (top_k_mask(np.random.default_rng(0).random((50, 9)).round(1), 4).sum(axis=1) == 4).all()
    with pytest.raises(ValueError, match="K=4 is out of range"):
        top_k_mask(scores, 4)


# ------------------------------------------------------------------------------------------------ thresholds, filters


def test_threshold_metrics_hand_computed():
    scores = np.array([[0.9, 0.2, 0.6], [0.3, 0.8, 0.7]])
    labels = np.array([[1, -1, 1], [-1, 1, -1]])
    metrics = threshold_metrics(scores, labels, 0.5)
    np.testing.assert_allclose(metrics["per_class_precision"], [1, 1, 0.5])
    np.testing.assert_allclose(metrics["per_class_recall"], [1, 1, 1])
    assert metrics["CP"] == pytest.approx(2.5 / 3)
    assert metrics["CF1"] == pytest.approx(2 * (2.5 / 3) / (2.5 / 3 + 1))
    assert metrics["macro_f1"] == pytest.approx((1 + 1 + 2 / 3) / 3)
    assert (metrics["OP"], metrics["OR"]) == pytest.approx((3 / 4, 1.0))
    # Per-label thresholds: label 2 at 0.65 drops its false positive (0.6 is the positive, 0.7 the negative).
    per_label = threshold_metrics(scores, labels, [0.5, 0.5, 0.65])
    np.testing.assert_allclose(per_label["per_class_precision"], [1, 1, 0])
    np.testing.assert_allclose(per_label["per_class_recall"], [1, 1, 0])


def test_threshold_metrics_unannotated_and_classes_without_positives():
    scores = np.array([[0.9, 0.9], [0.9, 0.1]])
    labels = np.array([[0, -1], [1, -1]])
    zero = threshold_metrics(scores, labels, 0.5)
    assert zero["per_class_precision"].tolist() == [1.0, 0.0]  # the unannotated prediction is not a false positive
    assert zero["CR"] == pytest.approx(0.5)
    exclude = threshold_metrics(scores, labels, 0.5, no_positive="exclude")
    assert math.isnan(exclude["per_class_recall"][1]) and exclude["CR"] == pytest.approx(1.0)
    assert exclude["OP"] == pytest.approx(1 / 2)  # overall still counts the false positive of class 1


def test_image_and_class_filters():
    labels = np.array([[1, 0, -1], [-1, 0, -1], [0, 0, 1]])
    assert filter_images(labels, "all").tolist() == [True, True, True]
    assert filter_images(labels, "has_positive").tolist() == [True, False, True]
    assert filter_classes(labels, "none").tolist() == [True, True, True]
    assert filter_classes(labels, "annotated_only").tolist() == [True, False, True]


def test_label_matrix_conversions_and_errors():
    positives = np.array([[True, False], [False, True]])
    assert to_label_matrix(positives).tolist() == [[1, -1], [-1, 1]]
    assert to_label_matrix(positives, annotation_mask=[[1, 0], [1, 1]]).tolist() == [[1, 0], [-1, 1]]
    with pytest.raises(ValueError, match=r"found 2 at image 1, label 0"):
        to_label_matrix(np.array([[1, 0], [2, -1]]))
    with pytest.raises(ValueError, match="NaN"):
        average_precision(np.array([[np.nan]]), np.array([[1]]))
    with pytest.raises(ValueError, match="shape"):
        average_precision(np.zeros((2, 3)), np.zeros((2, 2), dtype=np.int8))
    with pytest.raises(ValueError, match="tie policy"):
        average_precision(np.zeros((2, 2)), np.ones((2, 2), dtype=np.int8), ties="random")
    labels, unseen = np.array([[1, -1, 1], [-1, 1, 1]]), [False, True, True]
    with pytest.raises(ValueError, match=r"`unseen_scores` has shape \(2, 3\); expected \(2, 2\)"):
        evaluate_protocol(np.zeros((2, 3)), labels, list("abc"), unseen, "synthetic", unseen_scores=np.zeros((2, 3)))


# ------------------------------------------------------------------------------------------------ protocols


def test_presets_are_listed_and_load():
    assert list_protocols() == PRESETS
    for name in PRESETS:
        protocol = load_protocol(name)
        assert protocol.name == name and protocol.description and protocol.citation
        assert protocol.top_k or protocol.threshold is not None  # VOC presets of papers without top-K: thresholds
    assert load_protocol("synthetic").top_k == (1, 3)
    assert load_protocol("openimages-biam").weighted_map and load_protocol("openimages-biam").ap_mode == "row_pooled"
    assert load_protocol("openimages-qks").ap_mode == "per_class"
    assert [view.name for view in load_protocol("voc2007").views] == ["all"]
    assert load_protocol("voc2007-dualcoop").top_k == () and load_protocol("voc2007-mlgcn").threshold_top_k == (3,)
    settings = load_protocol("openimages-biam").settings()
    assert (
        settings["views"]["gzsl"]["top_k_class_filter"] == "none"
        and "top_k_class_filter" not in settings["views"]["zsl"]
    )


def test_unknown_protocol_lists_presets():
    with pytest.raises(ValueError, match="Available presets: coco-48-17, generic, nus-wide-biam"):
        load_protocol("nus-wide")


def test_protocol_file_validation(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text(
        "name: mine\ndescription: d\ncitation: c\ntop_k: [2]\nno_positive_class: exclude\n"
        "views:\n  gzsl: {labels: all, image_filter: has_positive}\n"
    )
    protocol = load_protocol(path)
    assert protocol.no_positive_class == "exclude" and protocol.views[0].class_filter == "none"
    path.write_text("name: bad\ndescription: d\ncitation: c\ntop_k: [2]\nviews:\n  zsl: {labels: novel}\n")
    with pytest.raises(
        ValueError, match=r"mine\.yaml: views\.zsl\.labels: expected one of 'unseen', 'seen', 'all', got 'novel'"
    ):
        load_protocol(path)
    path.write_text("name: bad\ndescription: d\ntop_k: [2]\nviews: {}\n")
    with pytest.raises(ValueError, match=r"mine\.yaml: missing required key 'citation'"):
        load_protocol(path)
    base = "name: bad\ndescription: d\ncitation: c\ntop_k: [2]\nviews:\n  all: {labels: all}\n"
    for extra, message in (
        ("ap_mode: pooled\n", r"mine\.yaml: ap_mode: expected one of 'per_class', 'row_pooled', got 'pooled'"),
        ("threshold_rule: '<'\n", r"mine\.yaml: threshold_rule: expected one of '>=', '>', got '<'"),
        ("unannotated: positive\n", r"mine\.yaml: unannotated: expected one of 'ignore', 'negative', got 'positive'"),
        ("threshold_top_k: [3]\n", r"mine\.yaml: threshold_top_k: needs a threshold"),
        (
            "threshold: 0.5\nthreshold_top_k: [0]\n",
            r"mine\.yaml: threshold_top_k\[0\]: expected an integer >= 1, got 0",
        ),
    ):
        path.write_text(base + extra)
        with pytest.raises(ValueError, match=message):
            load_protocol(path)
    path.write_text(base.replace("{labels: all}", "{labels: all, top_k_class_filter: some}"))
    with pytest.raises(
        ValueError,
        match=r"views\.all\.top_k_class_filter: expected one of 'none', 'annotated_only' or null, got 'some'",
    ):
        load_protocol(path)


# ------------------------------------------------------------------------------------------------ presets, by hand

# Two images x labels (a, b, c); c is unseen. Image 0 has a and c, image 1 only b (no unseen positive).
NAMES = ["a", "b", "c"]
UNSEEN = [False, False, True]
SCORES = np.array([[0.9, 0.2, 0.6], [0.3, 0.8, 0.7]])
LABELS = np.array([[1, -1, 1], [-1, 1, -1]])
# AP over both images: a = 1, b = 1, c ranks image 1 (-) above image 0 (+) -> 1/2.
GZSL_MAP = (1 + 1 + 0.5) / 3
# K=3 over 3 labels: every positive is predicted: TP 3 of 6 predictions, 3 positives.
GZSL_AT_3 = {"precision": 0.5, "recall": 1.0, "f1": 2 / 3}


def check_top_k(view, k, expected):
    metrics = view["top_k"][str(k)]
    if expected is None:
        assert metrics["precision"] is None and "exceeds" in metrics["note"]
    else:
        assert {key: metrics[key] for key in expected} == pytest.approx(expected)


def test_preset_nus_wide_biam_by_hand():
    report = evaluate_protocol(SCORES, LABELS, NAMES, UNSEEN, "nus-wide-biam")
    zsl, gzsl, seen = (report["views"][name] for name in ("zsl", "gzsl", "seen"))
    assert report["protocol"] == zsl["protocol"] == "nus-wide-biam"
    assert zsl["num_images"] == 2 and zsl["mAP"] == pytest.approx(0.5)  # image 1 is kept: a negative for c
    assert gzsl["mAP"] == pytest.approx(GZSL_MAP) and seen["mAP"] == pytest.approx(1.0)
    check_top_k(gzsl, 3, GZSL_AT_3)
    check_top_k(gzsl, 5, None)
    check_top_k(zsl, 3, None)
    assert "WmAP" not in gzsl


def test_preset_nus_wide_qks_by_hand():
    report = evaluate_protocol(SCORES, LABELS, NAMES, UNSEEN, "nus-wide-qks")
    zsl, gzsl, seen = (report["views"][name] for name in ("zsl", "gzsl", "seen"))
    assert (zsl["num_images"], zsl["num_images_dropped"]) == (1, 1)  # image 1 has no unseen positive
    assert zsl["mAP"] == pytest.approx(1.0)
    assert gzsl["num_images"] == 2 and gzsl["mAP"] == pytest.approx(GZSL_MAP)
    check_top_k(gzsl, 3, GZSL_AT_3)
    assert seen["num_images"] == 2 and seen["mAP"] == pytest.approx(1.0)


def test_preset_coco_48_17_by_hand():
    report = evaluate_protocol(SCORES, LABELS, NAMES, UNSEEN, "coco-48-17")
    assert report["views"]["zsl"]["num_images"] == 1 and report["views"]["zsl"]["mAP"] == pytest.approx(1.0)
    check_top_k(report["views"]["zsl"], 3, None)
    check_top_k(report["views"]["gzsl"], 3, GZSL_AT_3)
    assert report["views"]["gzsl"]["mAP"] == pytest.approx(GZSL_MAP)


def test_preset_synthetic_by_hand():
    report = evaluate_protocol(SCORES, LABELS, NAMES, UNSEEN, "synthetic")
    zsl, gzsl, seen = (report["views"][name] for name in ("zsl", "gzsl", "seen"))
    # ZSL keeps image 0 only; its single unseen label is its top-1 and a hit.
    check_top_k(zsl, 1, {"precision": 1.0, "recall": 1.0, "f1": 1.0})
    # GZSL top-1: image 0 -> a (hit), image 1 -> b (hit): P 2/2, R 2/3, F1 0.8.
    check_top_k(gzsl, 1, {"precision": 1.0, "recall": 2 / 3, "f1": 0.8})
    check_top_k(gzsl, 3, GZSL_AT_3)
    assert gzsl["num_images"] == 2 and gzsl["mAP"] == pytest.approx(GZSL_MAP)
    check_top_k(seen, 1, {"precision": 1.0, "recall": 1.0, "f1": 1.0})


def test_preset_voc2007_by_hand_without_split():
    report = evaluate_protocol(SCORES, LABELS, NAMES, [False] * 3, "voc2007")
    assert list(report["views"]) == ["all"] and report["num_unseen_labels"] == 0
    view = report["views"]["all"]
    assert view["mAP"] == pytest.approx(GZSL_MAP)
    check_top_k(view, 3, GZSL_AT_3)
    # Threshold 0.5: predictions a0, c0, b1, c1 -> class precisions 1, 1, 1/2, all recalls 1.
    threshold = view["threshold"]
    assert threshold["source"] == "protocol"
    assert (threshold["CP"], threshold["CR"], threshold["OP"], threshold["OR"]) == pytest.approx((2.5 / 3, 1, 0.75, 1))
    assert threshold["OF1"] == pytest.approx(2 * 0.75 / 1.75)


def test_preset_openimages_qks_by_hand():
    # b is never annotated; image 1 has a as its only positive and no unseen positive.
    scores = np.array([[0.2, 0.9, 0.6], [0.4, 0.1, 0.7]])
    labels = np.array([[1, 0, 1], [1, 0, -1]])
    report = evaluate_protocol(scores, labels, NAMES, UNSEEN, "openimages-qks")
    zsl, gzsl, seen = (report["views"][name] for name in ("zsl", "gzsl", "seen"))
    assert zsl["num_images"] == 1 and zsl["mAP"] == pytest.approx(1.0) and zsl["WmAP"] == pytest.approx(1.0)
    # GZSL: both images kept, b dropped; a has AP 1 (2 positives), c has AP 1/2 (1 positive).
    assert (gzsl["num_images"], gzsl["num_labels"], gzsl["num_labels_dropped"]) == (2, 2, 1)
    assert gzsl["mAP"] == pytest.approx(0.75)
    assert gzsl["WmAP"] == pytest.approx((2 * 1 + 1 * 0.5) / 3)
    assert [row["label"] for row in gzsl["per_label"]] == ["a", "c"]
    assert seen["num_labels"] == 1 and seen["mAP"] == pytest.approx(1.0)
    check_top_k(gzsl, 10, None)
    # Without the class filter (BiAM NUS-WIDE), the never-annotated b counts as AP 0.
    nus = evaluate_protocol(scores, labels, NAMES, UNSEEN, "nus-wide-biam")
    assert nus["views"]["gzsl"]["mAP"] == pytest.approx((1 + 0 + 0.5) / 3)


def test_preset_openimages_biam_by_hand():
    # Same scores: b is never annotated, image 1 has no unseen positive.
    scores = np.array([[0.2, 0.9, 0.6], [0.4, 0.1, 0.7]])
    labels = np.array([[1, 0, 1], [1, 0, -1]])
    gzsl = evaluate_protocol(scores, labels, NAMES, UNSEEN, "openimages-biam")["views"]["gzsl"]
    # Row-pooled: a and c are annotated on both images -> the pooled entries 0.7-, 0.6+, 0.4+, 0.2+:
    # (1/2 + 2/3 + 3/4) / 3 for both; per-class mAP (a: 1, c: 1/2) is reported next to it.
    pooled = (1 / 2 + 2 / 3 + 3 / 4) / 3
    assert gzsl["mAP"] == pytest.approx(pooled) and gzsl["mAP_per_class"] == pytest.approx(0.75)
    assert gzsl["WmAP"] == pytest.approx(pooled)
    assert [row["ap_per_class"] for row in gzsl["per_label"]] == pytest.approx([1.0, 0.5])
    # Top-K over all 3 columns (b included), AP over the 2 annotated ones.
    assert (gzsl["num_labels"], gzsl["num_top_k_labels"], gzsl["top_k_class_filter"]) == (2, 3, "none")


def test_threshold_rule_unannotated_and_top_k_hand_computed():
    scores = np.array([[0.9, 0.5, 0.7], [0.5, 0.8, 0.2]])
    labels = np.array([[1, 0, -1], [-1, 1, 1]])
    inclusive = threshold_metrics(scores, labels, 0.5)
    strict = threshold_metrics(scores, labels, 0.5, rule=">")
    # >= 0.5 also predicts the two 0.5s: (0, 1) is unannotated (ignored), (1, 0) a false positive.
    assert inclusive["per_class_false_positives"].tolist() == [1, 0, 1]
    assert strict["per_class_false_positives"].tolist() == [0, 0, 1]
    # ML-GCN: a prediction on the unannotated (difficult) entry is a false positive; never a false negative.
    negative = threshold_metrics(scores, labels, 0.5, unannotated="negative")
    assert negative["per_class_false_positives"].tolist() == [1, 1, 1]
    assert negative["per_class_false_negatives"].tolist() == [0, 0, 1]
    # Top-1 that also passes 0.5: image 0 -> label 0 (hit), image 1 -> label 1 (hit).
    top1 = threshold_metrics(scores, labels, 0.5, top_k=1)
    assert top1["per_class_true_positives"].tolist() == [1, 1, 0] and top1["OP"] == 1.0
    assert top1["OR"] == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="threshold rule"):
        threshold_metrics(scores, labels, 0.5, rule="=>")


@pytest.mark.parametrize(("no_positive", "unannotated"), [("zero", "ignore"), ("exclude", "negative")])
def test_threshold_f1_curve_equals_threshold_metrics_at_every_grid_point(no_positive, unannotated):
    scores, labels = random_problem(11, unannotated=0.2, ties=True)
    labels[:, 3] = np.where(labels[:, 3] == 1, -1, labels[:, 3])  # a class without positives
    grid = np.r_[np.linspace(-0.1, 1.4, 23), 0.5, 0.75]  # includes values equal to (tied) scores
    curve = threshold_f1_curve(scores, labels, grid, no_positive=no_positive, unannotated=unannotated)
    for index, threshold in enumerate(curve["thresholds"]):
        expected = threshold_metrics(scores, labels, threshold, no_positive=no_positive, unannotated=unannotated)
        np.testing.assert_allclose(
            [curve["overall_f1"][index], curve["macro_f1"][index]], [expected["OF1"], expected["macro_f1"]]
        )


def test_generic_preset_ranks_every_label_under_both_image_filters():
    # Image 1 has no positive; label b is never annotated; c has no positive.
    scores = np.array([[0.9, 0.2, 0.6], [0.3, 0.8, 0.7], [0.1, 0.5, 0.2]])
    labels = np.array([[1, 0, -1], [-1, 0, -1], [1, 0, -1]])
    report = evaluate_protocol(scores, labels, NAMES, UNSEEN, "generic")  # the split is ignored
    every, with_positive = report["views"]["all"], report["views"]["with_positive"]
    assert (every["num_images"], with_positive["num_images"]) == (3, 2)
    assert every["num_images_by_filter"] == {"all": 3, "has_positive": 2}
    assert every["num_labels"] == 2 and every["num_labels_dropped"] == 1  # b: nothing annotated
    # a ranks 0.9+, 0.3-, 0.1+ -> (1 + 2/3) / 2; c has no positive and is left out of mAP.
    assert every["mAP"] == pytest.approx(5 / 6) and with_positive["mAP"] == pytest.approx(1.0)
    assert every["top_k"]["5"]["note"] == "K=5 exceeds the 2 labels of this view"


def test_protocol_unannotated_negative_and_threshold_scores():
    scores = np.array([[0.9, 0.6], [0.7, 0.4], [0.2, 0.8]])
    labels = np.array([[1, 0], [0, 1], [-1, 1]])
    dualcoop = evaluate_protocol(scores, labels, ["a", "b"], [False, False], "voc2007-dualcoop")["views"]["all"]
    # Unannotated entries are negatives: a ranks 0.9+, 0.7-, 0.2- -> 1; b ranks 0.8+, 0.6-, 0.4+ -> (1 + 2/3) / 2.
    assert dualcoop["mAP"] == pytest.approx((1 + 5 / 6) / 2)
    predicted = scores + 0.05  # e.g. CLIP zero-shot's predicted scores vs the plain cosine it ranks
    with_threshold_scores = evaluate_protocol(
        scores, labels, ["a", "b"], [False, False], "voc2007", threshold_scores=predicted
    )["views"]["all"]
    plain = evaluate_protocol(predicted, labels, ["a", "b"], [False, False], "voc2007")["views"]["all"]
    assert with_threshold_scores["threshold"] == plain["threshold"]  # thresholds apply to the predicted scores
    assert (
        with_threshold_scores["top_k"]
        == evaluate_protocol(scores, labels, ["a", "b"], [False, False], "voc2007")["views"]["all"]["top_k"]
    )


def test_protocol_without_unseen_labels_skips_views():
    report = evaluate_protocol(SCORES, LABELS, NAMES, [False] * 3, "nus-wide-biam")
    assert list(report["views"]) == ["gzsl"]
    assert set(report["skipped_views"]) == {"zsl", "seen"}
    assert "no unseen labels" in report["skipped_views"]["zsl"]


def test_report_uses_calibrated_thresholds():
    thresholds = {"label_thresholds": {"c": 0.65}, "global_threshold": 0.5}
    report = evaluate_protocol(SCORES, LABELS, NAMES, UNSEEN, "synthetic", thresholds=thresholds)
    gzsl = report["views"]["gzsl"]
    assert gzsl["threshold"]["source"] == "calibrated"
    assert [row["threshold"] for row in gzsl["per_label"]] == [0.5, 0.5, 0.65]
    assert gzsl["per_label"][2]["precision"] == 0.0  # c: 0.6 (positive) and 0.7 (negative) vs 0.65
