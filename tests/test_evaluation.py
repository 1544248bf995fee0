"""`ovmlc evaluate`: the scores file contract, reports, threshold calibration and the model path on a tiny CLIP."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from helpers import random_images, save_hub_layout_clip

from ovmlc.cli import main as cli_main
from ovmlc.evaluation.engine import (
    ScoresFile,
    ScoresFileError,
    best_f1_threshold,
    calibrate_thresholds,
    evaluate_scores,
    load_scores,
    pick_labels_across_ap,
    precision_at_positives,
    save_scores,
    score_dataset,
)
from ovmlc.evaluation.metrics import average_precision

NAMES = [f"label{index}" for index in range(8)]
UNSEEN = np.array([False] * 6 + [True] * 2)


def toy_scores(seed: int = 0, num_images: int = 40):
    rng = np.random.default_rng(seed)
    labels = np.where(rng.random((num_images, len(NAMES))) < 0.3, 1, -1).astype(np.int8)
    scores = np.clip(rng.random(labels.shape) * 0.6 + 0.35 * (labels == 1), 0, 1).astype(np.float32)
    return scores, labels


@pytest.fixture
def scores_path(tmp_path):
    scores, labels = toy_scores()
    return save_scores(tmp_path / "scores.npz", scores, labels, NAMES, UNSEEN)


# ------------------------------------------------------------------------------------------------ scores file


def test_scores_file_round_trip(tmp_path):
    scores, labels = toy_scores()
    ids = [f"img{index}" for index in range(len(scores))]
    loaded = load_scores(save_scores(tmp_path / "s.npz", scores, labels, NAMES, UNSEEN, image_ids=ids))
    np.testing.assert_array_equal(loaded.scores, scores)
    np.testing.assert_array_equal(loaded.labels, labels)
    assert loaded.labels.dtype == np.int8 and loaded.unseen.dtype == bool
    assert loaded.label_names == NAMES and loaded.unseen.tolist() == UNSEEN.tolist() and loaded.image_ids == ids
    no_split = load_scores(save_scores(tmp_path / "plain.npz", scores, labels, NAMES))
    assert not no_split.unseen.any()


def test_unseen_scores_round_trip_and_feed_only_the_zsl_views(tmp_path):
    """Label-set-dependent models (MKT) store the unseen labels scored alone; ZSL uses them, GZSL/seen do not."""
    scores, labels = toy_scores()
    rng = np.random.default_rng(1)
    unseen_scores = rng.random((len(scores), int(UNSEEN.sum()))).astype(np.float32)
    path = save_scores(tmp_path / "s.npz", scores, labels, NAMES, UNSEEN, unseen_scores=unseen_scores)
    loaded = load_scores(path)
    np.testing.assert_array_equal(loaded.unseen_scores, unseen_scores)
    assert load_scores(save_scores(tmp_path / "plain.npz", scores, labels, NAMES, UNSEEN)).unseen_scores is None

    report = evaluate_scores(loaded, "synthetic")
    plain = evaluate_scores(tmp_path / "plain.npz", "synthetic")
    replaced = scores.copy()
    replaced[:, UNSEEN] = unseen_scores
    by_hand = evaluate_scores(ScoresFile(replaced, labels, NAMES, UNSEEN), "synthetic")
    assert report["views"]["zsl"]["mAP"] == pytest.approx(by_hand["views"]["zsl"]["mAP"])
    assert report["views"]["zsl"]["mAP"] != pytest.approx(plain["views"]["zsl"]["mAP"])
    assert report["views"]["zsl"]["scored_labels"] == "unseen labels alone"
    for view in ("gzsl", "seen"):
        assert report["views"][view]["mAP"] == pytest.approx(plain["views"][view]["mAP"])
        assert "scored_labels" not in report["views"][view]


def test_threshold_scores_round_trip_feed_only_the_threshold_block(tmp_path, capsys):
    """Ranking scores (CLIP zero-shot's plain cosine) in `scores`, predicted ones in `threshold_scores`."""
    scores, labels = toy_scores()
    predicted = np.clip(scores + np.linspace(-0.2, 0.2, len(scores))[:, None], 0, 1).astype(np.float32)
    path = save_scores(tmp_path / "s.npz", scores, labels, NAMES, UNSEEN, threshold_scores=predicted)
    loaded = load_scores(path)
    np.testing.assert_array_equal(loaded.threshold_scores, predicted)
    both = evaluate_scores(loaded, "voc2007")["views"]["all"]
    ranking_only = evaluate_scores(ScoresFile(scores, labels, NAMES, UNSEEN), "voc2007")["views"]["all"]
    predicted_only = evaluate_scores(ScoresFile(predicted, labels, NAMES, UNSEEN), "voc2007")["views"]["all"]
    assert both["mAP"] == ranking_only["mAP"] != predicted_only["mAP"]
    assert both["threshold"] == predicted_only["threshold"] != ranking_only["threshold"]
    # --limit keeps the optional matrices (it used to drop unseen_scores), row for row.
    unseen_scores = np.random.default_rng(2).random((len(scores), 2)).astype(np.float32)
    path = save_scores(
        tmp_path / "all.npz", scores, labels, NAMES, UNSEEN, unseen_scores=unseen_scores, threshold_scores=predicted
    )
    output = tmp_path / "limited"
    argv = ["evaluate", "--scores", str(path), "--protocol", "synthetic", "--limit", "10", "--output", str(output)]
    assert cli_main([*argv, "--no-plots"]) == 0
    capsys.readouterr()
    limited = json.loads((output / "metrics.json").read_text())
    expected = evaluate_scores(
        ScoresFile(scores[:10], labels[:10], NAMES, UNSEEN, None, unseen_scores[:10], predicted[:10]), "synthetic"
    )
    assert limited["views"]["zsl"]["scored_labels"] == "unseen labels alone"
    assert limited["views"]["zsl"]["mAP"] == pytest.approx(expected["views"]["zsl"]["mAP"])


def test_pr_curve_helpers_pick_distinct_aps_and_enclose_ap():
    assert pick_labels_across_ap([1.0, 1.0, 0.9, np.nan, 0.5, 0.5, 0.2], count=3) == [0, 4, 6]
    # By value, not by rank: a cluster of near-perfect labels gets one curve, the low ones the rest.
    assert pick_labels_across_ap([1.0, 0.99, 0.98, 0.97, 0.96, 0.7, 0.4], count=3) == [0, 5, 6]
    assert pick_labels_across_ap([0.3, 0.7], count=5) == [1, 0]
    scores, labels = toy_scores(seed=3)
    for column in range(3):
        recall, precision = precision_at_positives(scores[:, column], labels[:, column])
        assert recall[0] > 0 and recall[-1] == 1.0  # starts at the first positive, not at (0, 0)
        area = np.sum(np.diff(np.r_[0.0, recall]) * precision)  # the steps-pre curve from recall 0
        assert area == pytest.approx(average_precision(scores, labels)[column])


def write_npz(path, **arrays):
    with open(path, "wb") as handle:
        np.savez(handle, **arrays)
    return path


def good_arrays():
    scores, labels = toy_scores(num_images=4)
    return {"scores": scores, "labels": labels, "label_names": np.asarray(NAMES), "unseen": UNSEEN}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"labels": None}, r"missing key\(s\) labels"),
        ({"scores": np.zeros(8, dtype=np.float32)}, r"key `scores` must be a matrix"),
        ({"scores": np.full((4, 8), np.nan, dtype=np.float32)}, r"key `scores` holds 32 NaN"),
        ({"labels": np.zeros((4, 7), dtype=np.int8)}, r"key `labels` has shape \(4, 7\)"),
        ({"labels": np.full((4, 8), 2, dtype=np.int8)}, r"key `labels` must hold only 1 .* found 2 at image 0"),
        ({"label_names": np.asarray(NAMES[:7])}, r"key `label_names` must be a vector of 8 names"),
        ({"label_names": np.asarray(["x"] * 8)}, r"key `label_names` holds duplicate names: x"),
        ({"label_names": np.asarray(NAMES, dtype=object)}, r"key `label_names` cannot be read without pickle"),
        ({"unseen": np.zeros(3, dtype=bool)}, r"key `unseen` must be a vector of 8 booleans"),
        ({"unseen_scores": np.zeros((4, 8), dtype=np.float32)}, r"key `unseen_scores` must be a matrix \[4, 2\]"),
        ({"unseen_scores": np.full((4, 2), np.nan, dtype=np.float32)}, r"key `unseen_scores` must hold floats"),
        ({"threshold_scores": np.zeros((4, 7), dtype=np.float32)}, r"key `threshold_scores` has shape \(4, 7\)"),
        ({"logits": np.zeros((4, 7), dtype=np.float32)}, r"key `logits` has shape \(4, 7\) but `scores`"),
        ({"logits": np.full((4, 8), np.inf, dtype=np.float32)}, r"key `logits` must hold finite floats"),
        ({"logits": np.zeros((4, 8), dtype=np.float32)}, r"key `logits` are not the logits of `scores`: sigmoid\(0\)"),
        ({"unseen_logits": np.zeros((4, 2), dtype=np.float32)}, r"key `unseen_logits` needs `unseen_scores`"),
    ],
)
def test_bad_scores_files_name_file_and_key(tmp_path, change, message):
    arrays = {**good_arrays(), **change}
    path = write_npz(tmp_path / "bad.npz", **{key: value for key, value in arrays.items() if value is not None})
    with pytest.raises(ScoresFileError, match=message) as error:
        load_scores(path)
    assert str(path) in str(error.value)


def logit(scores):
    return np.log(scores / (1 - scores)).astype(np.float32)


def test_logits_round_trip_and_rank(tmp_path):
    """`logits` are stored, validated against `scores` and ranked by AP and top-K; thresholds keep the scores."""
    scores, labels = toy_scores()
    scores = np.clip(scores, 0.01, 0.99)
    logits = logit(scores)
    scores = 1 / (1 + np.exp(-logits.astype(np.float64)))
    unseen_scores = scores[:, UNSEEN][::-1].copy()
    path = save_scores(
        tmp_path / "s.npz",
        scores,
        labels,
        NAMES,
        UNSEEN,
        unseen_scores=unseen_scores,
        logits=logits,
        unseen_logits=logit(unseen_scores),
    )
    loaded = load_scores(path)
    np.testing.assert_array_equal(loaded.logits, logits)
    assert loaded.logits.dtype == np.float32 and loaded.unseen_logits.shape == (40, 2)
    report = evaluate_scores(loaded, "nus-wide-biam", thresholds=0.5)
    plain = evaluate_scores(
        ScoresFile(loaded.scores, loaded.labels, NAMES, UNSEEN, unseen_scores=loaded.unseen_scores),
        "nus-wide-biam",
        thresholds=0.5,
    )
    assert report["ranked_by"] == "logits" and plain["ranked_by"] == "scores"
    for view in ("zsl", "gzsl"):  # monotone: the same numbers when there are no ties
        assert report["views"][view]["mAP"] == pytest.approx(plain["views"][view]["mAP"], abs=1e-12)
        assert report["views"][view]["threshold"]["OF1"] == plain["views"][view]["threshold"]["OF1"]
    with pytest.raises(ScoresFileError, match="key `unseen_logits` is missing"):
        save_scores(tmp_path / "t.npz", scores, labels, NAMES, UNSEEN, unseen_scores=unseen_scores, logits=logits)


def tied_pairs_brute_force(scores, labels):
    tied = total = 0
    for column in range(scores.shape[1]):
        positives = scores[labels[:, column] == 1, column]
        negatives = scores[labels[:, column] == -1, column]
        total += positives.size * negatives.size
        tied += sum(int((negatives == value).sum()) for value in positives)
    return None if total == 0 else tied / total


def test_tie_fraction_matches_a_pair_count():
    from ovmlc.evaluation.metrics import tie_fraction

    rng = np.random.default_rng(3)
    scores = rng.integers(0, 6, (50, 7)).astype(np.float32)  # few distinct values: many ties
    labels = rng.choice(np.array([1, 0, -1], dtype=np.int8), size=(50, 7))
    labels[:, 6] = -1  # a label without positives adds no pair
    assert tie_fraction(scores, labels) == pytest.approx(tied_pairs_brute_force(scores, labels))
    assert tie_fraction(rng.random((50, 7)), labels) == 0.0
    assert tie_fraction(scores, np.full((50, 7), -1, dtype=np.int8)) is None


def test_saturated_sigmoid_ranks_by_logits_and_warns_without_them(tiny_setup, tmp_path):
    """Issue 17: raw logits >= 25 give float32 sigmoids of exactly 1.0. scores.npz keeps the logits, so the mAP read
    back from it is the logit-ranked mAP; a file without them ties every pair and evaluation warns."""
    import ovmlc
    from ovmlc.evaluation.engine import TiedScoresWarning, evaluate_model
    from ovmlc.evaluation.metrics import evaluate_protocol

    clip_dir, dataset_dir, names = tiny_setup
    model = ovmlc.load_model(str(clip_dir))
    model.config.logit_bias = 40.0
    report = evaluate_model(model, str(dataset_dir), "synthetic", output_dir=tmp_path / "eval", progress=False)
    saved = load_scores(tmp_path / "eval" / "scores.npz")
    assert (saved.logits >= 25).all() and (saved.scores == 1.0).all()
    by_logits = evaluate_protocol(saved.logits, saved.labels, names, saved.unseen, "synthetic")
    again = evaluate_scores(tmp_path / "eval" / "scores.npz", "synthetic")
    for view in ("zsl", "gzsl", "seen"):
        assert report["views"][view]["mAP"] == by_logits["views"][view]["mAP"] == again["views"][view]["mAP"]
        assert report["views"][view]["tie_fraction"] in (0.0, None)  # None: ZSL keeps images with an unseen positive
    assert (
        report["views"]["gzsl"]["tie_fraction"] == 0.0 and report["ranked_by"] == "logits" and "warnings" not in report
    )
    with pytest.warns(TiedScoresWarning, match="100.0% of \\(positive, negative\\) pairs have equal ranking scores"):
        tied = evaluate_scores(
            ScoresFile(saved.scores, saved.labels, names, saved.unseen), "synthetic", output_dir=tmp_path / "tied"
        )
    assert tied["views"]["gzsl"]["tie_fraction"] == 1.0 and len(tied["warnings"]) == 2  # GZSL and seen
    assert tied["views"]["gzsl"]["mAP"] != by_logits["views"]["gzsl"]["mAP"]  # index order decided, not the model
    assert "**warning**: GZSL: 100.0%" in (tmp_path / "tied" / "results.md").read_text()
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["views"]["gzsl"]["tie_fraction"] == 0.0 and metrics["ranked_by"] == "logits"


def test_unreadable_scores_files(tmp_path):
    with pytest.raises(ScoresFileError, match="does not exist"):
        load_scores(tmp_path / "missing.npz")
    (tmp_path / "text.npz").write_text("not numpy")
    with pytest.raises(ScoresFileError, match="not a readable .npz archive"):
        load_scores(tmp_path / "text.npz")
    np.save(tmp_path / "single.npy", np.zeros((2, 2)))
    with pytest.raises(ScoresFileError, match="single array"):
        load_scores(tmp_path / "single.npy")


# ------------------------------------------------------------------------------------------------ calibration


def test_best_f1_threshold_separable_and_ties():
    threshold, f1 = best_f1_threshold([0.9, 0.8, 0.3, 0.1], [1, 1, -1, -1])
    assert (threshold, f1) == pytest.approx((0.55, 1.0))  # halfway between 0.8 (kept) and 0.3 (rejected)
    # Equal scores cannot be split: the cut after the tied pair predicts both (F1 = 2*2/(3+2)) or none of them.
    threshold, f1 = best_f1_threshold([0.9, 0.5, 0.5, 0.1], [1, 1, -1, -1])
    assert f1 == pytest.approx(0.8) and 0.1 < threshold <= 0.5
    assert best_f1_threshold([0.2, 0.4], [-1, 0]) is None


def test_calibrate_thresholds_toy_problem():
    scores = np.array([[0.9, 0.2, 0.6], [0.7, 0.8, 0.1], [0.2, 0.6, 0.3], [0.1, 0.3, 0.9]])
    labels = np.array([[1, -1, 0], [1, 1, 0], [-1, 1, 0], [-1, -1, 0]])
    result = calibrate_thresholds(scores, labels, ["a", "b", "c"])
    assert set(result) == {"label_thresholds", "global_threshold"}
    assert result["label_thresholds"]["a"] == pytest.approx((0.7 + 0.2) / 2)
    assert result["label_thresholds"]["b"] == pytest.approx((0.6 + 0.3) / 2)
    # Pooled over a and b: 0.9+ 0.8+ 0.7+ 0.6+ then 0.3- -> cut between 0.6 and 0.3 gives F1 1.
    assert result["global_threshold"] == pytest.approx(0.45)
    assert result["label_thresholds"]["c"] == result["global_threshold"]  # no annotated positive: fallback
    with pytest.raises(ValueError, match="no annotated positive"):
        calibrate_thresholds(scores, np.zeros_like(labels), ["a", "b", "c"])


# ------------------------------------------------------------------------------------------------ reports and CLI


def test_cli_scores_round_trip(tmp_path, scores_path, capsys):
    output = tmp_path / "report"
    assert cli_main(["evaluate", "--scores", str(scores_path), "--protocol", "synthetic", "--output", str(output)]) == 0
    assert "protocol synthetic" in capsys.readouterr().out
    for name in ("metrics.json", "results.md", "per_label_ap.csv", "per_label_ap.png", "pr_curves.png"):
        assert (output / name).stat().st_size > 0, name
    for name in ("ap_distribution.png", "threshold_f1.png", "score_histograms.png"):
        assert (output / name).read_bytes()[:4] == b"\x89PNG", name

    metrics = json.loads((output / "metrics.json").read_text())
    assert metrics["protocol"] == "synthetic" and metrics["provenance"]["scores_file"] == str(scores_path)
    assert set(metrics["views"]) == {"zsl", "gzsl", "seen"}
    assert metrics["views"]["gzsl"]["num_images"] == 40 and metrics["views"]["zsl"]["num_labels"] == 2
    assert metrics["views"]["gzsl"]["protocol"] == "synthetic"
    assert set(metrics["views"]["gzsl"]["top_k"]) == {"1", "3"}

    results = (output / "results.md").read_text()
    assert "protocol `synthetic`" in results
    assert "| ZSL | 2 |" in results and "| GZSL | 8 | 40 |" in results
    zsl_images = metrics["views"]["zsl"]["num_images"]
    assert f"ZSL: unseen labels; images kept by `has_positive`: {zsl_images} of 40" in results
    assert metrics["views"]["zsl"]["num_images_by_filter"] == {"all": 40, "has_positive": zsl_images}
    assert f"{100 * metrics['views']['gzsl']['mAP']:.1f}" in results

    with (output / "per_label_ap.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 2 + 8 + 6 and {row["protocol"] for row in rows} == {"synthetic"}


def test_results_table_has_wmap_column_for_openimages(tmp_path, scores_path):
    report = evaluate_scores(scores_path, "openimages-biam", output_dir=tmp_path, plots=False)
    assert "WmAP" in report["views"]["gzsl"]
    results = (tmp_path / "results.md").read_text()
    assert "| WmAP |" in results and "F1@10 exceeds" not in results and "K=10 exceeds the 8 labels" in results
    assert not (tmp_path / "per_label_ap.png").exists()


def test_cli_calibration_scores_write_thresholds(tmp_path, scores_path):
    scores, labels = toy_scores(seed=1)
    calibration = save_scores(tmp_path / "validation.npz", scores, labels, NAMES, UNSEEN)
    output = tmp_path / "report"
    argv = ["evaluate", "--scores", str(scores_path), "--protocol", "voc2007", "--output", str(output)]
    assert cli_main([*argv, "--calibration-scores", str(calibration), "--no-plots"]) == 0
    thresholds = json.loads((output / "thresholds.json").read_text())
    assert set(thresholds["label_thresholds"]) == set(NAMES)
    # Unseen labels are never tuned on their validation annotations: they use the global threshold.
    assert thresholds["fallback_labels"] == NAMES[6:]
    assert thresholds["label_thresholds"]["label7"] == thresholds["global_threshold"]
    metrics = json.loads((output / "metrics.json").read_text())
    assert metrics["views"]["all"]["threshold"]["source"] == "calibrated"


def test_cli_errors(tmp_path, scores_path, capsys):
    bad = write_npz(tmp_path / "bad.npz", scores=np.zeros((2, 2), dtype=np.float32))
    assert cli_main(["evaluate", "--scores", str(bad), "--protocol", "synthetic", "--output", str(tmp_path)]) == 2
    assert f"Scores file {bad} is missing key(s) labels" in capsys.readouterr().err
    assert cli_main(["evaluate", "--scores", str(scores_path), "--protocol", "nus", "--output", str(tmp_path)]) == 2
    assert "Available presets: coco-48-17" in capsys.readouterr().err
    # Without --protocol: the `generic` preset (every label, both image filters), said on stderr.
    assert cli_main(["evaluate", "--scores", str(scores_path), "--output", str(tmp_path / "generic")]) == 0
    captured = capsys.readouterr()
    assert "no --protocol given, using 'generic'" in captured.err and "protocol generic" in captured.out
    assert "images kept by `has_positive`: 37 of 40 (per image filter: `all` 40, `has_positive` 37)" in captured.out
    with pytest.raises(SystemExit):
        cli_main(["evaluate", "--model", "synthetic", "--protocol", "synthetic"])
    assert "--model needs --dataset" in capsys.readouterr().err


def test_cli_list_protocols(capsys):
    assert cli_main(["evaluate", "--list-protocols"]) == 0
    listed = capsys.readouterr().out
    assert all(name in listed for name in ("nus-wide-biam", "nus-wide-qks", "openimages-biam", "voc2007"))


# ------------------------------------------------------------------------------------------------ model path


@pytest.fixture(scope="module")
def tiny_setup(tmp_path_factory):
    from datasets import Dataset, DatasetDict

    from ovmlc.data import canonical_features, save_canonical

    clip_dir = save_hub_layout_clip(tmp_path_factory.mktemp("clip"))
    names = ["circle", "square", "star", "ring"]
    rng = np.random.default_rng(0)
    splits = {}
    for split, count in (("train", 4), ("validation", 6), ("test", 7)):
        images = random_images(count, seed=count)
        labels = [sorted(rng.choice(4, size=rng.integers(1, 3), replace=False).tolist()) for _ in range(count)]
        rows = {"image": images, "labels": labels, "image_id": [f"{split}-{index}" for index in range(count)]}
        splits[split] = Dataset.from_dict(rows, features=canonical_features(names))
    dataset_dir = save_canonical(
        DatasetDict(splits),
        tmp_path_factory.mktemp("data") / "tiny",
        source="test",
        converter_version="0",
        seen_labels=names[:3],
        unseen_labels=names[3:],
        annotation="full",
        description="tiny test set",
    )
    return clip_dir, dataset_dir, names


def test_score_dataset_matches_predict_scores(tiny_setup):
    import ovmlc
    from ovmlc.data import load_canonical

    clip_dir, dataset_dir, names = tiny_setup
    model = ovmlc.load_model(str(clip_dir))
    test = load_canonical(dataset_dir, split="test")
    scores = score_dataset(model, test, names, batch_size=3, limit=5, progress=False)
    assert scores.shape == (5, 4) and scores.dtype == np.float32
    expected = model.predict_scores(list(test.select(range(5))["image"]), names)
    np.testing.assert_allclose(scores, expected, atol=1e-5)


def test_cli_model_path(tiny_setup, tmp_path):
    import ovmlc
    from ovmlc.data import load_canonical

    clip_dir, dataset_dir, names = tiny_setup
    output = tmp_path / "report"
    argv = ["evaluate", "--model", str(clip_dir), "--dataset", str(dataset_dir), "--protocol", "synthetic"]
    argv += ["--output", str(output), "--batch-size", "4", "--calibrate-split", "validation"]
    assert cli_main(argv) == 0
    saved = load_scores(output / "scores.npz")
    assert saved.label_names == names and saved.unseen.tolist() == [False, False, False, True]
    assert saved.scores.shape == (7, 4) and saved.image_ids[0] == "test-0"
    metrics = json.loads((output / "metrics.json").read_text())
    assert metrics["provenance"]["model"] == str(clip_dir) and metrics["provenance"]["dataset"] == str(dataset_dir)
    # CLIP zero-shot: tables rank the plain cosine, thresholds apply to the predicted (reference-prompt) scores.
    assert "plain cosine" in metrics["provenance"]["ranking_scores"]
    assert saved.threshold_scores is not None and not np.allclose(saved.threshold_scores, saved.scores)
    model = ovmlc.load_model(str(clip_dir))
    test = load_canonical(dataset_dir, split="test")
    np.testing.assert_allclose(saved.threshold_scores, model.predict_scores(list(test["image"]), names), atol=1e-5)
    assert metrics["views"]["gzsl"]["num_images"] == 7
    thresholds = json.loads((output / "thresholds.json").read_text())
    assert thresholds["fallback_labels"] == ["ring"] and thresholds["calibration"]["split"] == "validation"
    for name in ("results.md", "per_label_ap.csv", "per_label_ap.png", "pr_curves.png", "ap_distribution.png"):
        assert (output / name).is_file(), name
    # Re-scoring the saved file gives the same numbers without the model.
    again = evaluate_scores(output / "scores.npz", "synthetic")
    assert again["views"]["gzsl"]["mAP"] == metrics["views"]["gzsl"]["mAP"]
    # The logits of the ranking scores are saved (float32) and ranked.
    assert saved.logits.dtype == np.float32 and metrics["ranked_by"] == "logits"
    np.testing.assert_allclose(1 / (1 + np.exp(-saved.logits.astype(np.float64))), saved.scores, atol=1e-6)


def test_cli_model_path_bf16_image_side(tiny_setup, tmp_path):
    """`--dtype bfloat16`: the image side runs under autocast, the head and the saved scores stay float32."""
    clip_dir, dataset_dir, _ = tiny_setup
    output = tmp_path / "bf16"
    argv = ["evaluate", "--model", str(clip_dir), "--dataset", str(dataset_dir), "--protocol", "synthetic"]
    assert cli_main([*argv, "--output", str(output), "--dtype", "bfloat16", "--device", "cpu", "--no-plots"]) == 0
    assert cli_main([*argv, "--output", str(tmp_path / "fp32"), "--no-plots"]) == 0
    bf16, fp32 = load_scores(output / "scores.npz"), load_scores(tmp_path / "fp32" / "scores.npz")
    assert bf16.logits.dtype == np.float32 and bf16.scores.dtype == np.float32
    assert 0 < np.abs(bf16.logits - fp32.logits).max() < 0.1  # the image side ran in bf16
    assert len(np.unique(bf16.logits)) == bf16.logits.size  # no bf16 rounding of the head's logits
    metrics = json.loads((output / "metrics.json").read_text())
    assert metrics["provenance"]["image_dtype"] == "bfloat16"
