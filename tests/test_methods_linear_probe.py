"""The linear-probe baseline on a tiny CLIP: zero-shot initialisation, rows as label embeddings, the unseen-label
fallback, what trains, saving and loading."""

import pytest
import torch
import torch.nn.functional as F
from helpers import random_images, save_hub_layout_clip

import ovmlc
from ovmlc import LinearProbeConfig, LinearProbeModel

SEEN = ["cat", "dog", "red car"]
UNSEEN = ["sky", "boat"]


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    return save_hub_layout_clip(tmp_path_factory.mktemp("clip"))


def build(clip_dir, **overrides):
    model = LinearProbeModel.from_clip(str(clip_dir), **{"probe_labels": SEEN, "logit_bias": -2.0, **overrides})
    model.set_label_cache(None)
    return model


@pytest.fixture(scope="module")
def pixels(clip_dir):
    return build(clip_dir).preprocess(random_images(4, seed=2))


def test_text_initialisation_is_the_zero_shot_classifier_for_every_label(clip_dir, pixels):
    model = build(clip_dir).eval()
    assert model.probe.weight.shape == (len(SEEN), 16) and model.probe.bias.tolist() == [-2.0] * 3
    with torch.no_grad():
        rows = model.encode_labels(SEEN + UNSEEN)  # [C, D + 1]
        logits = model(pixel_values=pixels, label_embeds=rows).logits
        text = model.clip.get_text_features(
            **model.text_tokenizer(
                [f"a photo of a {name}." for name in SEEN + UNSEEN], padding=True, return_tensors="pt"
            )
        ).pooler_output
        image = model.encode_image_features(pixels)["image_embeds"]
    assert rows.shape == (5, 17)
    scale = model.clip.logit_scale.exp().clamp(max=100)
    expected = scale * F.normalize(image, dim=-1) @ F.normalize(text, dim=-1).T - 2.0
    torch.testing.assert_close(logits, expected, atol=1e-4, rtol=1e-5)


def test_only_probe_rows_train_and_unseen_labels_keep_their_text_row(clip_dir, pixels):
    model = build(clip_dir, init="zeros").train()
    assert model.trains_text_side and model.uses_frozen_image_features
    assert {name for name, p in model.named_parameters() if p.requires_grad} == {"probe.weight", "probe.bias"}
    assert float(model.probe.weight.detach().abs().sum()) == 0.0
    labels = torch.tensor([[1.0, 0, 1], [0, 1, 0], [1, 1, 0], [0, 0, 1]])
    output = model(pixel_values=pixels, label_names=SEEN, labels=labels)
    output.loss.backward()
    assert {name for name, p in model.named_parameters() if p.grad is not None} == {"probe.weight", "probe.bias"}
    with torch.no_grad():
        model.probe.bias.copy_(torch.tensor([1.0, 2.0, 6.0]))
        rows = model.eval().encode_labels(["sky", "dog"])
    assert rows[0, -1].item() == pytest.approx(3.0) and rows[1, -1].item() == 2.0  # unseen: the mean learned bias
    with pytest.raises(ValueError, match="probe_labels"):
        LinearProbeModel.from_clip(str(clip_dir))
    with pytest.raises(ValueError, match="init"):
        LinearProbeConfig(init="random")


def test_save_load_round_trip(clip_dir, pixels, tmp_path):
    model = build(clip_dir).eval()
    with torch.no_grad():
        model.probe.weight.add_(0.3)
    model.config.label_names = SEEN + UNSEEN
    model.save_pretrained(tmp_path)
    loaded = ovmlc.load_model(tmp_path)
    assert type(loaded) is LinearProbeModel and loaded.config.probe_labels == SEEN
    with torch.no_grad():
        torch.testing.assert_close(
            loaded(pixel_values=pixels, label_names=SEEN + UNSEEN).logits,
            model(pixel_values=pixels, label_names=SEEN + UNSEEN).logits,
        )
