"""ViLD on a tiny CLIP built in code: region scores, the ensemble, the three losses, detect(), save/load."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import random_images, save_hub_layout_clip

import ovmlc
from ovmlc import ViLDConfig, ViLDModel
from ovmlc.core.regions import box_iou, crop_regions, expand_boxes
from ovmlc.methods.vild.modeling_vild import ViLDOutput, log_probabilities

LABELS = ["cat", "dog", "red car", "tree", "sky"]
SMALL = {"templates": "single", "head_hidden_size": 16, "head_num_layers": 1}


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    return save_hub_layout_clip(tmp_path_factory.mktemp("clip"))


@pytest.fixture(scope="module")
def model(clip_dir):
    torch.manual_seed(0)
    return ViLDModel.from_clip(str(clip_dir), **SMALL)


@pytest.fixture(scope="module")
def ensemble(clip_dir):
    torch.manual_seed(1)
    return ViLDModel.from_clip(str(clip_dir), double_branch=True, crop_mode="mask", **SMALL)


@pytest.fixture(scope="module")
def pixel_values(model):
    return model.preprocess(random_images(3, seed=2))


def test_config_defaults_follow_the_paper_and_reject_bad_values():
    config = ViLDConfig()
    assert (config.temperature, config.distillation_weight, config.background_init_std) == (0.01, 0.5, 0.01)
    assert config.crop_context == [1.0, 1.5] and config.ensemble_weight == pytest.approx(2 / 3)
    assert (config.positive_iou, config.background_iou, config.nms_iou) == (0.5, 0.3, 0.5)
    assert config.region_scoring == "softmax" and config.mask_unseen_text_rows and not config.double_branch
    assert config.window_sizes == [0.25, 0.5, 1.0] and config.window_strides == [0.25, 0.25, 0.25]
    assert (config.templates, config.prompt_pool) == ("imagenet80", "normalized")
    for bad, match in (
        ({"region_scoring": "max"}, "region_scoring"),
        ({"window_sizes": [0.5], "window_strides": [0.5, 0.5]}, "same length"),
        ({"window_sizes": [2.0], "window_strides": [0.5]}, "window_sizes"),
        ({"background_iou": 0.6}, "background_iou"),
        ({"temperature": 0.0}, "temperature"),
        ({"double_branch": True, "region_encoder": "clip_crops"}, "double_branch"),
        # The ensemble's image head is trained only by distillation, its text head only by ViLD-text.
        ({"double_branch": True, "distillation_weight": 0.0}, "double_branch=True with distillation_weight=0"),
        ({"double_branch": True, "text_weight": 0.0}, "double_branch=True with text_weight=0"),
        ({"text_weight": 0.0, "distillation_weight": 0.0}, "nothing would train the region head.*clip_crops"),
    ):
        with pytest.raises(ValueError, match=match):
            ViLDConfig(**bad)
    # The training-free baseline has no head: its loss weights do not matter.
    assert (
        ViLDConfig(region_encoder="clip_crops", text_weight=0.0, distillation_weight=0.0).region_encoder == "clip_crops"
    )


def test_only_the_heads_and_background_train(model, ensemble):
    trainable = {name.split(".")[0] for name, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"text_head", "background"}
    trainable = {name.split(".")[0] for name, p in ensemble.named_parameters() if p.requires_grad}
    assert trainable == {"text_head", "image_head", "background"}
    assert 0.005 < ensemble.background.embedding.std().item() < 0.02  # N(0, 0.01)
    assert model.uses_frozen_image_features and not model.augment_allowed and model.produces_boxes
    assert model.scores_depend_on_label_set  # softmax over the scored labels ...
    from ovmlc.core.scoring import scores_unseen_labels_alone

    assert not scores_unseen_labels_alone(model)  # ... but ViLD's protocol scores unseen labels among all labels
    assert scores_unseen_labels_alone(ovmlc.MKTModel) and not scores_unseen_labels_alone(ovmlc.QKSModel)
    assert not ViLDModel.from_clip(
        model.config.backbone_name_or_path, region_scoring="sigmoid", **SMALL
    ).scores_depend_on_label_set


def test_log_probabilities_are_exact_where_float32_softmax_saturates():
    logits = torch.tensor([[100.0, 0.0, -40.0], [70.0, 69.0, -3.0], [5.0, 5.0, 5.0]])
    background = torch.tensor([-20.0, 60.0, 5.0])
    log_p, log_not = log_probabilities(logits, background, "softmax", extra_zero_columns=2)
    full = torch.cat([background[:, None], logits, torch.zeros(3, 2)], dim=1).double()
    reference_p = torch.log_softmax(full, dim=1)[:, 1:4]
    reference_not = torch.stack(
        [
            torch.logsumexp(torch.cat([full[r, : c + 1], full[r, c + 2 :]]), 0) - torch.logsumexp(full[r], 0)
            for r in range(3)
            for c in range(3)
        ]
    ).reshape(3, 3)
    assert torch.allclose(log_p.double(), reference_p, rtol=1e-5, atol=1e-6)
    assert torch.allclose(log_not.double(), reference_not, rtol=1e-4, atol=1e-6)
    # 1 - p = 3e^-100 (the two masked rows and the label at logit 0): a float32 softmax gives p = 1 exactly.
    assert log_not[0, 0].item() == pytest.approx(math.log(3) - 100, abs=1e-4)
    assert torch.softmax(torch.cat([background[:, None], logits, torch.zeros(3, 2)], dim=1), dim=1)[0, 1] == 1.0
    log_p, log_not = log_probabilities(logits, background, "sigmoid")
    assert torch.allclose(log_p - log_not, logits - background[:, None])
    assert torch.allclose(log_p.exp(), torch.sigmoid(logits - background[:, None]))


def test_region_scores_and_image_scores(model, pixel_values):
    label_embeds = model.encode_labels(LABELS)
    output = model(pixel_values=pixel_values, label_embeds=label_embeds, return_label_maps=True)
    assert isinstance(output, ViLDOutput)
    num_windows = len(model.windows())
    assert num_windows == 26 and output.region_boxes.shape == (3, 26, 4)
    assert output.region_log_odds.shape == (3, 26, 5) and output.logits.shape == (3, 5)
    assert output.label_maps.shape == (3, 5, 4, 4) and output.label_boxes.shape == (3, 5, 4)
    # A region's probability of a label: softmax over [background, labels] of cos / tau.
    text = output.region_text_embeds  # [B, R, D], unit norm
    assert torch.allclose(text.norm(dim=-1), torch.ones(3, 26), atol=1e-5)
    labels = F.normalize(label_embeds, dim=-1)
    background = F.normalize(model.background.embedding, dim=-1)
    logits = torch.cat([(text @ background)[..., None], text @ labels.T], dim=-1) / 0.01
    probabilities = torch.softmax(logits.double(), dim=-1)[..., 1:]
    assert torch.allclose(torch.sigmoid(output.region_log_odds.double()), probabilities, atol=1e-6)
    # The image score of a label is its best region's.
    assert torch.equal(output.logits, output.region_log_odds.max(dim=1).values)
    best = output.region_log_odds.argmax(dim=1)
    assert torch.equal(output.label_boxes, output.region_boxes.gather(1, best[..., None].expand(-1, -1, 4)))
    scores = model.predict_scores(random_images(3, seed=2), LABELS)
    assert np.allclose(scores, torch.sigmoid(output.logits).detach().numpy(), atol=1e-6)


def test_ensemble_weights_seen_and_unseen_labels(ensemble, pixel_values):
    ensemble.config.seen_labels = ["cat", "dog", "tree"]
    try:
        assert ensemble._seen_mask(ensemble.encode_labels(LABELS)).tolist() == [True, True, False, True, False]
        label_embeds = ensemble.encode_labels(LABELS)
        output = ensemble(pixel_values=pixel_values, label_embeds=label_embeds)
        labels = F.normalize(label_embeds, dim=-1)
        background = F.normalize(ensemble.background.embedding, dim=-1)

        def probabilities(embeds):
            logits = torch.cat([(embeds @ background)[..., None], embeds @ labels.T], dim=-1) / 0.01
            return torch.softmax(logits.double(), dim=-1)[..., 1:]

        p_text, p_image = probabilities(output.region_text_embeds), probabilities(output.region_image_embeds)
        lam = torch.tensor([2 / 3, 2 / 3, 1 / 3, 2 / 3, 1 / 3], dtype=torch.float64)
        expected = p_text**lam * p_image ** (1 - lam)
        assert torch.allclose(torch.sigmoid(output.region_log_odds.double()), expected, rtol=1e-4, atol=1e-7)
    finally:
        ensemble.config.seen_labels = None
    # Without a label split (untrained) every label is unseen.
    assert not ensemble._seen_mask(ensemble.encode_labels(LABELS)).any()


def _fake_output(region_boxes, text_logits, background_logits):
    batch, regions = region_boxes.shape[:2]
    return ViLDOutput(
        logits=text_logits.max(dim=1).values,
        region_boxes=region_boxes,
        region_valid=torch.ones(batch, regions, dtype=torch.bool),
        region_text_logits=text_logits,
        region_background_logits=background_logits,
    )


def test_box_text_loss_is_the_region_softmax_on_matched_regions(model):
    """Regions: an exact object box, a box overlapping it at IoU 0.4 (ignored), an empty corner (background), the
    whole image (the scene label without a box). Object 0 carries two labels (a red car: `red car` and `cat`)."""
    regions = torch.tensor([[[0.0, 0.0, 0.25, 0.25], [0.0, 0.0, 0.25, 0.4375], [0.75, 0.75, 1.0, 1.0], [0, 0, 1, 1]]])
    assert box_iou(regions[0, :1], regions[0, 1:2]).item() == pytest.approx(0.25 / 0.4375)
    regions[0, 1] = torch.tensor([0.0, 0.0, 0.25, 0.625])  # IoU 0.4: between the thresholds
    generator = torch.Generator().manual_seed(0)
    text_logits = torch.randn(1, 4, 3, generator=generator) * 5
    background_logits = torch.randn(1, 4, generator=generator) * 5
    labels = torch.tensor([[1.0, 0.0, 1.0]])  # columns: cat, dog, red car; "red car" and "cat" boxed, no dog
    labels_scene = torch.tensor([[1.0, 1.0, 1.0]])  # dog positive without a box: the whole image is a dog
    features = {
        "object_boxes": torch.tensor([[[0.0, 0.0, 0.25, 0.25], [0.0, 0.0, 0.25, 0.25], [0, 0, 0, 0]]]),
        "object_labels": torch.tensor([[0, 2, -1]]),
    }
    model.config.unseen_labels = ["tree", "sky"]  # two masked rows: logit 0 in every region's softmax
    try:
        loss = model._box_text_loss(_fake_output(regions, text_logits, background_logits), labels, features)
        loss_scene = model._box_text_loss(_fake_output(regions, text_logits, background_logits), labels_scene, features)
    finally:
        model.config.unseen_labels = None
    full = torch.cat([background_logits[..., None], text_logits, torch.zeros(1, 4, 2)], dim=-1)
    log_softmax = torch.log_softmax(full.double(), dim=-1)[0]  # [R, 1 + 3 + 2]
    positive = -(0.5 * log_softmax[0, 1] + 0.5 * log_softmax[0, 3])  # half cat, half red car
    empty_corner = -log_softmax[2, 0]
    whole_image_background = -log_softmax[3, 0]  # IoU 1/16 with the object: background
    assert loss.item() == pytest.approx(((positive + empty_corner + whole_image_background) / 3).item(), rel=1e-5)
    whole_image_dog = -log_softmax[3, 2]
    assert loss_scene.item() == pytest.approx(((positive + empty_corner + whole_image_dog) / 3).item(), rel=1e-5)


def test_image_level_text_loss_aggregates_region_log_odds(clip_dir):
    torch.manual_seed(0)
    model = ViLDModel.from_clip(str(clip_dir), region_scoring="sigmoid", image_aggregation="logsumexp", **SMALL)
    regions = model.windows()[None].expand(2, -1, -1)
    text_logits = torch.randn(2, 26, 3)
    background_logits = torch.randn(2, 26)
    labels = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 1.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]])
    loss = model._image_text_loss(_fake_output(regions, text_logits, background_logits), labels, mask)
    region_log_odds = text_logits - background_logits[..., None]
    image_logits = torch.logsumexp(region_log_odds, dim=1) - math.log(26)
    expected = F.binary_cross_entropy_with_logits(image_logits, labels, reduction="none")
    assert loss.item() == pytest.approx(((expected * mask).sum() / mask.sum()).item(), rel=1e-5)


def test_distillation_targets_and_loss(ensemble, pixel_values):
    features = ensemble.encode_training_features(pixel_values)
    assert set(features) == {"patch_tokens", "teacher_embeds"}
    teacher = features["teacher_embeds"]
    assert teacher.shape == (3, 26, 16) and torch.allclose(teacher.norm(dim=-1), torch.ones(3, 26), atol=1e-5)
    # 1x and 1.5x crops (masked in place), each normalised, averaged, renormalised.
    window = ensemble.windows()[5]
    crops = [crop_regions(pixel_values, expand_boxes(window, f), "mask") for f in (1.0, 1.5)]
    embeds = [F.normalize(ensemble.clip.get_image_features(pixel_values=c).pooler_output, dim=-1) for c in crops]
    assert torch.allclose(teacher[:, 5], F.normalize(embeds[0] + embeds[1], dim=-1), atol=1e-5)
    assert set(ensemble.encode_image_features(pixel_values)) == {"patch_tokens"}  # inference never crops
    label_embeds = ensemble.encode_labels(LABELS[:2])
    ensemble.train()
    try:
        output = ensemble(image_features=features, label_embeds=label_embeds)
        loss = ensemble._distillation_loss(output, features)
        expected = (output.region_image_embeds - teacher).abs().sum(dim=-1).mean()
        assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
        total = ensemble(
            image_features=features, label_embeds=label_embeds, labels=torch.ones(3, 2), label_mask=torch.ones(3, 2)
        ).loss
        total.backward()
        assert ensemble.image_head.projection.weight.grad.abs().sum() > 0  # distillation reaches the image head
        with pytest.raises(ValueError, match="teacher_embeds"):
            ensemble(
                image_features={"patch_tokens": features["patch_tokens"]},
                label_embeds=label_embeds,
                labels=torch.ones(3, 2),
            )
    finally:
        ensemble.zero_grad(set_to_none=True)
        ensemble.eval()


def test_text_only_and_image_only_variants(clip_dir, pixel_values):
    text_only = ViLDModel.from_clip(str(clip_dir), distillation_weight=0.0, **SMALL)
    assert set(text_only.encode_training_features(pixel_values)) == {"patch_tokens"}  # nothing to distil
    image_only = ViLDModel.from_clip(str(clip_dir), text_weight=0.0, **SMALL)
    assert not image_only.uses_background  # the background is only learned by ViLD-text
    label_embeds = image_only.encode_labels(LABELS)
    output = image_only(pixel_values=pixel_values, label_embeds=label_embeds)
    logits = output.region_text_embeds @ F.normalize(label_embeds, dim=-1).T / 0.01
    assert torch.allclose(torch.sigmoid(output.region_log_odds.double()), torch.softmax(logits.double(), -1), atol=1e-6)
    assert text_only.image_feature_settings() != image_only.image_feature_settings()  # separate feature caches
    ensemble_config = ViLDModel.from_clip(str(clip_dir), double_branch=True, **SMALL).image_feature_settings()
    assert ensemble_config == image_only.image_feature_settings()  # the distillation variants share one


def test_clip_crops_baseline_scores_the_teacher_embeddings(clip_dir, pixel_values):
    baseline = ViLDModel.from_clip(str(clip_dir), region_encoder="clip_crops", **SMALL)
    assert baseline.text_head is None and not baseline.uses_background
    features = baseline.encode_image_features(pixel_values)
    assert torch.allclose(features["region_embeds"], baseline.crop_embeddings(pixel_values, baseline.windows()))
    output = baseline(image_features=features, label_embeds=baseline.encode_labels(LABELS))
    assert torch.equal(output.region_text_embeds, features["region_embeds"].float())
    with pytest.raises(ValueError, match="nothing to train"):
        baseline(image_features=features, label_embeds=baseline.encode_labels(LABELS), labels=torch.ones(3, 5))
    image = random_images(1, size=40, seed=4)[0]
    detections = baseline.detect([image], LABELS, boxes=[[(4.0, 4.0, 20.0, 20.0)]])[0]  # crops of the caller's box
    assert {d["box"] for d in detections} == {(4.0, 4.0, 20.0, 20.0)} and len(detections) == len(LABELS)
    with pytest.raises(ValueError, match="region embeddings"):
        baseline(image_features=features, label_embeds=baseline.encode_labels(LABELS), region_boxes=torch.rand(3, 2, 4))


def test_detect_returns_pixel_boxes_after_per_label_nms(model):
    images = random_images(2, size=40, seed=3)  # 48 x 40: resized to 38 x 32, centre crop of 32 x 32
    detections = model.detect(images, LABELS, max_detections=12)
    assert len(detections) == 2
    for per_image, image in zip(detections, images):
        assert 0 < len(per_image) <= 12
        assert [d["score"] for d in per_image] == sorted((d["score"] for d in per_image), reverse=True)
        for detection in per_image:
            x0, y0, x1, y1 = detection["box"]
            assert 0 <= x0 < x1 <= image.width and 0 <= y0 < y1 <= image.height and detection["label"] in LABELS
        for label in LABELS:
            boxes = torch.tensor([d["box"] for d in per_image if d["label"] == label]).reshape(-1, 4)
            overlap = box_iou(boxes, boxes) - torch.eye(len(boxes))
            assert (overlap <= 0.5).all()  # NMS at IoU 0.5 within a label
    # The whole-image window maps back onto the part of the image the model sees (the centre crop).
    output = model(pixel_values=model.preprocess(images[:1]), label_embeds=model.encode_labels(LABELS))
    whole = output.region_boxes[0, -1]
    assert whole.tolist() == [0.0, 0.0, 1.0, 1.0]
    single = model.detect(images[0], ["cat"], max_detections=100, score_threshold=0.0)
    assert {d["box"] for d in single} <= {tuple(round(v, 2) for v in b) for b in _window_pixels(model, images[0])}
    assert model.detect(images[0], ["cat"], score_threshold=1.1) == []  # nothing scores above 1


def _window_pixels(model, image):
    from ovmlc.core.regions import processor_geometry

    geometry = processor_geometry(model.processor, *image.size)
    return geometry.normalized_to_pixels(model.windows().cpu()).tolist()


def test_detect_with_caller_boxes(model):
    image = random_images(1, size=40, seed=4)[0]  # 48 x 40 (width x height)
    boxes = [[(4.0, 4.0, 20.0, 20.0), (20.0, 10.0, 44.0, 38.0)]]
    detections = model.detect([image], LABELS, boxes=boxes, nms_iou=1.0)[0]
    assert {d["box"] for d in detections} == {(4.0, 4.0, 20.0, 20.0), (20.0, 10.0, 44.0, 38.0)}
    assert len(detections) == 2 * len(LABELS)  # every label on both boxes (no overlap to suppress)
    with pytest.raises(ValueError, match="x1 <= x0"):
        model.detect([image], LABELS, boxes=[[(10.0, 10.0, 5.0, 20.0)]])
    with pytest.raises(ValueError, match="one list per image"):
        model.detect([image, image], LABELS, boxes=boxes)


def test_save_and_load_round_trip(model, tmp_path, pixel_values):
    model.config.label_names = LABELS
    try:
        model.save_pretrained(tmp_path / "vild")
    finally:
        model.config.label_names = None
    loaded = ovmlc.load_model(str(tmp_path / "vild"))
    assert isinstance(loaded, ViLDModel) and loaded.config.model_type == "ovmlc_vild"
    label_embeds = model.encode_labels(LABELS)
    with torch.no_grad():
        expected = model(pixel_values=pixel_values, label_embeds=label_embeds).logits
        actual = loaded(pixel_values=pixel_values, label_embeds=loaded.encode_labels(LABELS)).logits
    assert torch.allclose(expected, actual, atol=1e-6)
    assert not any(p.requires_grad for p in loaded.clip.parameters())


def test_pipeline_return_boxes(model, tmp_path):
    from transformers import pipeline

    classifier = pipeline(ovmlc.PIPELINE_TASK, model=model)
    image = random_images(1, size=40, seed=5)[0]
    tags = classifier(image, candidate_labels=LABELS, top_k=3, return_boxes=True)
    assert len(tags) == 3 and all(len(tag["box"]) == 4 for tag in tags)
    detections = model.detect(image, LABELS, max_detections=100)
    for tag in tags:  # each tag's box is its best-scoring region, the top detection of that label
        best = next(d for d in detections if d["label"] == tag["label"])
        assert tag["box"] == best["box"] and tag["score"] == pytest.approx(best["score"], abs=1e-6)
    assert "box" not in classifier(image, candidate_labels=LABELS, top_k=1)[0]
    plain = ovmlc.CLIPZeroShotModel.from_clip(model.config.backbone_name_or_path)
    with pytest.raises(ValueError, match="localise"):
        pipeline(ovmlc.PIPELINE_TASK, model=plain)(image, candidate_labels=LABELS, return_boxes=True)


def test_fresh_process_remote_code_load(model, tmp_path):
    """A saved ViLD folder loads with `trust_remote_code=True` without importing ovmlc first, and detects."""
    import os
    import subprocess
    import sys
    import textwrap

    model.save_pretrained(tmp_path / "vild")
    pixel_values = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        expected = model(pixel_values=pixel_values, label_embeds=model.encode_labels(LABELS)).logits.numpy()
    np.save(tmp_path / "pixels.npy", pixel_values.numpy())
    random_images(1, size=40, seed=6)[0].save(tmp_path / "image.png")
    script = textwrap.dedent(
        f"""
        import sys, numpy as np, torch
        from transformers import AutoModel
        assert "ovmlc" not in sys.modules
        model = AutoModel.from_pretrained({str(tmp_path / "vild")!r}, trust_remote_code=True)
        assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
        pixels = torch.from_numpy(np.load({str(tmp_path / "pixels.npy")!r}))
        with torch.no_grad():
            output = model(pixel_values=pixels, label_embeds=model.encode_labels({LABELS!r}))
        np.save({str(tmp_path / "logits.npy")!r}, output.logits.numpy())
        detections = model.detect({str(tmp_path / "image.png")!r}, {LABELS!r}, max_detections=3)
        assert len(detections) == 3 and all(len(d["box"]) == 4 for d in detections)
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=os.environ.copy())
    assert result.returncode == 0, result.stderr[-3000:]
    np.testing.assert_allclose(np.load(tmp_path / "logits.npy"), expected, atol=1e-5)
