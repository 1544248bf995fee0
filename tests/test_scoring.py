"""The one Scorer (`ovmlc/core/scoring.py`): batching, precision (image side under autocast, float32 head), logits kept,
the ZSL "unseen labels alone" rule from the trait, the gather hook, label embeddings from the model's one cache, and
`predict` / the pipeline going through it."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import random_images, save_hub_layout_clip
from transformers import pipeline

import ovmlc
from ovmlc import PIPELINE_TASK
from ovmlc.core.outputs import rank_labels
from ovmlc.core.registry import method_specs
from ovmlc.core.scoring import Scorer, ScoreResult, parse_dtype, ranking_description, scores_unseen_labels_alone
from ovmlc.core.vocabulary import LabelVocabulary
from ovmlc.evaluation.metrics import tie_fraction

LABELS = ["cat", "dog", "red car", "tree", "blue sky"]
UNSEEN = np.array([False, False, False, True, True])
METHODS = [spec.name for spec in method_specs()]


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    return save_hub_layout_clip(tmp_path_factory.mktemp("clip") / "tiny-clip")


@pytest.fixture(scope="module")
def images():
    return random_images(7, seed=11)


_MODELS: dict[str, torch.nn.Module] = {}


@pytest.fixture
def build(clip_dir):
    """A tiny model of a registered method (example config), with a fresh memory-only label cache."""

    def make(name: str):
        if name not in _MODELS:
            torch.manual_seed(0)
            spec = ovmlc.get_method(name)
            _MODELS[name] = spec.model_class.from_clip(str(clip_dir), **spec.example_config).eval()
        model = _MODELS[name]
        model.set_label_cache(None)
        model.label_cache.clear()
        return model

    return make


def count_text_forwards(model, monkeypatch) -> list[int]:
    """Counts text-tower passes over labels missing from the cache (`LabelVocabulary._encode_labels`: every
    frozen-template label encode, whether it shares the template's prefix or not)."""
    calls: list[int] = []
    original = LabelVocabulary._encode_labels

    def counted(self, *args, **kwargs):
        calls.append(1)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(LabelVocabulary, "_encode_labels", counted)
    return calls


# ------------------------------------------------------------------------------------------------ batching


@pytest.mark.parametrize("name", ["clip_zeroshot", "qks"])
def test_batching_equals_one_batch(build, images, name):
    model = build(name)
    one = Scorer(model, batch_size=len(images)).score_images(images, LABELS)
    chunked = Scorer(model, batch_size=3).score_images(images, LABELS)
    assert isinstance(one, ScoreResult) and one.label_names == LABELS
    assert one.logits.shape == (7, 5) and one.logits.dtype == np.float32 and one.scores.dtype == np.float32
    np.testing.assert_allclose(chunked.logits, one.logits, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(one.scores, torch.sigmoid(torch.from_numpy(one.logits)).numpy())
    # Batches that carry an `index` may come in any order: rows land at their index.
    pixel_values = model.preprocess(images)
    shuffled = [{"pixel_values": pixel_values[[4, 0, 6]], "index": torch.tensor([4, 0, 6])}]
    shuffled.append({"pixel_values": pixel_values[[1, 5, 2, 3]], "index": [1, 5, 2, 3]})
    placed = Scorer(model).score_pixel_batches(shuffled, LABELS, num_rows=7)
    np.testing.assert_allclose(placed.logits, one.logits, rtol=1e-5, atol=1e-6)
    # Cached image features (a feature cache's batches) give the same scores as pixels.
    features = {key: value for key, value in model.encode_image_features(pixel_values).items()}
    cached = Scorer(model).score_pixel_batches([{"image_features": features}], LABELS)
    np.testing.assert_allclose(cached.logits, one.logits, rtol=1e-5, atol=1e-6)
    empty = Scorer(model).score_pixel_batches([], LABELS)
    assert empty.logits.shape == (0, 5)


@pytest.mark.parametrize("name", METHODS)
def test_predict_numbers_unchanged(build, images, name):
    """`predict_scores` / `predict` through the Scorer give bit-identical float32 numbers to the loop they replace
    (`sigmoid(model(pixel_values, label_embeds).logits)` per batch of `batch_size`)."""
    model = build(name)
    with torch.inference_mode():
        label_embeds = model.encode_labels(LABELS)
        before = torch.cat(
            [
                torch.sigmoid(
                    model(
                        pixel_values=model.preprocess(images[start : start + 4]), label_embeds=label_embeds
                    ).logits.float()
                )
                for start in range(0, len(images), 4)
            ]
        ).numpy()
    now = model.predict_scores(images, LABELS, batch_size=4)
    assert now.dtype == np.float32
    np.testing.assert_array_equal(now, before)
    expected = rank_labels(before, LABELS, top_k=3)  # no ties here: the logit order is the score order
    assert model.predict(images, LABELS, top_k=3, batch_size=4) == expected


def test_predict_orders_saturated_scores_by_logit(build, images):
    """Raw logits >= ~17 all give a float32 sigmoid of exactly 1.0; the ranking still follows the logits."""
    model = build("clip_zeroshot")
    model.config.logit_bias = 40.0
    try:
        result = Scorer(model).score_images(images[:1], LABELS)
        assert (result.scores == 1.0).all() and len(set(result.logits[0].tolist())) == len(LABELS)
        ranked = model.predict(images[0], LABELS)
        assert [label for label, _ in ranked] == [LABELS[i] for i in np.argsort(-result.logits[0], kind="stable")]
        assert all(score == 1.0 for _, score in ranked)
    finally:
        model.config.logit_bias = 0.0


# ------------------------------------------------------------------------------------------------ precision


def test_parse_dtype():
    assert parse_dtype("bf16") is torch.bfloat16 and parse_dtype("torch.float16") is torch.float16
    assert parse_dtype(None) is None and parse_dtype(torch.float32) is torch.float32
    with pytest.raises(ValueError, match="unknown dtype 'int8'"):
        parse_dtype("int8")


def test_image_side_under_autocast_head_in_float32(build, images, monkeypatch):
    model = build("qks")
    seen = {}
    encode, score = model.encode_image_features, model.score

    def spy_encode(pixel_values):
        seen["encode"] = (torch.is_autocast_enabled("cpu"), torch.get_autocast_dtype("cpu"))
        return encode(pixel_values)

    def spy_score(features, label_embeds, return_label_maps=False):
        seen["score"] = torch.is_autocast_enabled("cpu")
        seen["feature_dtypes"] = {value.dtype for value in features.values()}
        seen["label_dtype"] = label_embeds.dtype
        return score(features, label_embeds, return_label_maps)

    monkeypatch.setattr(model, "encode_image_features", spy_encode)
    monkeypatch.setattr(model, "score", spy_score)
    fp32 = Scorer(model).score_images(images, LABELS)
    assert seen["encode"][0] is False
    with torch.autocast("cpu", dtype=torch.bfloat16):  # a caller's autocast never reaches the head
        mixed = Scorer(model, image_dtype="bfloat16").score_images(images, LABELS)
    assert seen["encode"] == (True, torch.bfloat16)
    assert seen["score"] is False and seen["feature_dtypes"] == {torch.float32} and seen["label_dtype"] == torch.float32
    assert mixed.logits.dtype == np.float32
    assert 0 < np.abs(mixed.logits - fp32.logits).max() < 0.05  # the image side did run in bf16


def test_float32_image_side_needs_float32_weights(build):
    model = build("clip_zeroshot")
    with pytest.raises(ValueError, match="image_dtype float32 needs a model in float32"):
        Scorer(model.to(torch.bfloat16), image_dtype="float32")
    model.to(torch.float32)


@pytest.mark.parametrize("name", METHODS)
def test_bf16_image_side_float32_head_has_no_ties(build, name):
    """Issue 17: a bf16 image tower with a float32 head ranks without ties (< 1% of positive-negative pairs); the
    same model with its head under bf16 autocast (how evaluation and the trainer scored before) ties far more."""
    model = build(name)
    rng = np.random.default_rng(0)
    labels = np.where(rng.random((96, len(LABELS))) < 0.3, 1, -1).astype(np.int8)
    pixel_values = model.preprocess(random_images(96, seed=5))
    mixed = Scorer(model, batch_size=32, image_dtype=torch.bfloat16).score_pixel_batches([pixel_values], LABELS)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        bf16_head = model(pixel_values=pixel_values, label_embeds=model.encode_labels(LABELS)).logits.float().numpy()
    assert tie_fraction(mixed.logits, labels) < 0.01
    assert tie_fraction(mixed.scores, labels) < 0.01
    if name == "vild":
        # ViLD's logits are log-odds spread over ~[-27, 2] here (QKS: [0.3, 2.1]), so bf16 rounding makes fewer
        # collisions: measured 0.31% of pairs tie with the bf16 head (QKS 14.6%), none with the float32 head.
        assert tie_fraction(bf16_head, labels) > 0.0 == tie_fraction(mixed.logits, labels)
    else:
        assert tie_fraction(bf16_head, labels) > 0.01


# ------------------------------------------------------------------------------------------------ evaluation passes


def test_score_for_views_ranking_predicted_and_one_encode(build, images, monkeypatch):
    """CLIP zero-shot: tables rank the plain cosine, thresholds use the predicted scores; every pass reuses the one
    encoding of the vocabulary (and of the reference prompt) from the model's cache."""
    model = build("clip_zeroshot")
    text_forwards = count_text_forwards(model, monkeypatch)
    pixel_values = model.preprocess(images)
    batches = [pixel_values[:4], pixel_values[4:]]
    views = Scorer(model).score_for_views(batches, LABELS, UNSEEN)
    assert "plain cosine" in views.ranking_description and views.unseen_alone is None
    assert len(text_forwards) == 2  # the labels once, "a photo." once
    np.testing.assert_allclose(views.predicted.scores, model.predict_scores(images, LABELS), atol=1e-6)
    with torch.no_grad(), model.ranking_scores():
        plain = model(pixel_values=pixel_values, label_embeds=model.encode_labels(LABELS)).logits.numpy()
    np.testing.assert_allclose(views.ranking.logits, plain, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(views.threshold_scores, views.predicted.scores)
    arrays = views.scores_file_arrays()
    assert arrays["logits"] is views.ranking.logits and arrays["threshold_scores"] is views.predicted.scores
    assert len(text_forwards) == 2  # nothing encoded again
    without = Scorer(model).score_for_views(batches, LABELS, UNSEEN, with_predicted=False)
    assert without.predicted is None and without.threshold_scores is without.ranking.scores
    with pytest.raises(ValueError, match="needs 2 passes"):
        Scorer(model).score_for_views(iter(batches), LABELS, UNSEEN)
    single_pass = Scorer(model).score_for_views(iter(batches), LABELS, UNSEEN, with_predicted=False)
    np.testing.assert_array_equal(single_pass.ranking.logits, views.ranking.logits)


def test_unseen_labels_alone_rule_comes_from_the_trait(build, images, monkeypatch):
    model = build("clip_zeroshot")
    batches = lambda: [model.preprocess(images)]  # noqa: E731
    assert not scores_unseen_labels_alone(model)
    assert Scorer(model).score_for_views(batches, LABELS, UNSEEN).unseen_alone is None
    monkeypatch.setattr(model, "scores_depend_on_label_set", True, raising=False)
    views = Scorer(model).score_for_views(batches, LABELS, UNSEEN)
    alone = Scorer(model).score_images(images, ["tree", "blue sky"], ranking=True)
    assert views.unseen_alone.label_names == ["tree", "blue sky"]
    np.testing.assert_array_equal(views.unseen_alone.logits, alone.logits)
    assert Scorer(model).score_for_views(batches, LABELS, np.zeros(5, bool)).unseen_alone is None  # no unseen labels


def test_mkt_scores_unseen_labels_alone(build, images):
    model = build("mkt")
    assert type(model).scores_depend_on_label_set and scores_unseen_labels_alone(model)
    views = Scorer(model).score_for_views(lambda: [model.preprocess(images)], LABELS, UNSEEN)
    alone = model.predict_scores(images, ["tree", "blue sky"])
    np.testing.assert_allclose(views.unseen_alone.scores, alone, atol=1e-6)
    assert not np.allclose(views.unseen_alone.scores, views.ranking.scores[:, UNSEEN], atol=1e-4)  # depends on the set
    arrays = views.scores_file_arrays()
    assert arrays["unseen_logits"].shape == (7, 2) and arrays["threshold_scores"] is None


def test_gather_hook_is_called_and_rows_land_in_order(build, images):
    """Two simulated processes: each scores every other row and the hook returns both processes' rows."""
    model = build("clip_zeroshot")
    pixel_values = model.preprocess(images)
    reference = Scorer(model).score_pixel_batches([pixel_values], LABELS)
    calls = []

    def gather(tensors):
        index, logits, scores = tensors
        calls.append(index.tolist())
        other = index + 1  # "rank 1" scored the next row of each pair
        keep = other < len(images)
        other_logits = torch.from_numpy(reference.logits[other[keep].numpy()])
        return (
            torch.cat([index, other[keep]]),
            torch.cat([logits, other_logits]),
            torch.cat([scores, torch.sigmoid(other_logits)]),
        )

    rank0 = [{"pixel_values": pixel_values[[0, 2]], "index": torch.tensor([0, 2])}]
    rank0.append({"pixel_values": pixel_values[[4, 6]], "index": torch.tensor([4, 6])})
    gathered = Scorer(model, gather=gather).score_pixel_batches(rank0, LABELS, num_rows=7)
    assert calls == [[0, 2], [4, 6]]
    np.testing.assert_allclose(gathered.logits, reference.logits, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="gather hook every batch needs an `index`"):
        Scorer(model, gather=gather).score_pixel_batches([pixel_values], LABELS)
    with pytest.raises(RuntimeError, match="3 rows were never scored"):
        Scorer(model).score_pixel_batches(rank0, LABELS, num_rows=7)  # without the hook: rank 0's rows only
    with pytest.raises(ValueError, match=r"indices range over \[0, 6\], expected \[0, 5\)"):
        Scorer(model).score_pixel_batches(rank0, LABELS, num_rows=5)


# ------------------------------------------------------------------------------------------------ one label cache


def test_label_embeddings_encoded_once_per_vocabulary(build, images, monkeypatch):
    model = build("qks")
    text_forwards = count_text_forwards(model, monkeypatch)
    pixel_values = model.preprocess(images)
    scorer = Scorer(model, batch_size=2)
    scorer.score_pixel_batches([pixel_values[:2], pixel_values[2:4], pixel_values[4:]], LABELS)
    assert model.label_cache.encoded == len(LABELS)  # encoded once for three image batches
    forwards = len(text_forwards)
    assert forwards >= 1
    scorer.score_images(images, LABELS)
    Scorer(model).score_images(images, list(reversed(LABELS)))
    model.predict(images, LABELS)
    assert len(text_forwards) == forwards  # the same vocabulary (any order), from the model's cache
    scorer.score_images(images, [*LABELS, "boat"])
    assert len(text_forwards) > forwards and model.label_cache.last_lookup_encoded == 1  # only the new label
    assert model.label_cache.encoded == len(LABELS) + 1
    torch.testing.assert_close(scorer.label_embeddings(LABELS), model.encode_labels(LABELS))


def test_pipeline_uses_the_models_label_cache(build, images, monkeypatch, tmp_path):
    model = build("clip_zeroshot")
    pipe = pipeline(PIPELINE_TASK, model=model)
    text_forwards = count_text_forwards(model, monkeypatch)
    first = pipe(images[:3], candidate_labels=LABELS, top_k=2, batch_size=2)
    forwards = len(text_forwards)
    assert forwards == 2  # the labels, and CLIP zero-shot's reference prompt
    hits = model.label_cache.hits
    second = pipe(images[:3], candidate_labels=LABELS, top_k=2, batch_size=2)
    assert second == first and len(text_forwards) == forwards and model.label_cache.hits > hits
    assert pipe.scorer.model is model and not hasattr(pipe, "_label_embeds")  # no second cache
    expected = model.predict(images[:3], LABELS, top_k=2)
    assert [[entry["label"] for entry in row] for row in first] == [[label for label, _ in row] for row in expected]


def test_ranking_description_reads_the_context(build):
    assert "plain cosine" in ranking_description(build("clip_zeroshot"))
    assert ranking_description(build("qks")) is None
