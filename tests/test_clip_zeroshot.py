import json
import os

import numpy as np
import pytest
import torch
from helpers import random_images, save_hub_layout_clip
from PIL import Image
from transformers import AutoConfig, AutoModel, pipeline

import ovmlc
from ovmlc import PIPELINE_TASK, CLIPZeroShotModel, ImageLoadError, LabelVocabulary
from ovmlc.cli import main as cli_main

LABELS = ["cat", "dog", "red car", "tree"]


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    return save_hub_layout_clip(tmp_path_factory.mktemp("clip-vit-base-patch16"))


@pytest.fixture(scope="module")
def model(clip_dir):
    return CLIPZeroShotModel.from_clip(str(clip_dir))


@pytest.fixture(scope="module")
def saved_dir(model, tmp_path_factory):
    directory = tmp_path_factory.mktemp("saved")
    model.config.label_names = LABELS
    model.save_pretrained(directory)
    return directory


def test_from_clip_on_hub_layout_folder(clip_dir, model):
    assert {"config.json", "model.safetensors", "tokenizer.json", "preprocessor_config.json"} <= set(
        os.listdir(clip_dir)
    )
    assert type(model.image_processor).__name__ == "CLIPImageProcessorPil"
    assert model.config.model_type == "ovmlc_clip_zeroshot"
    assert model.config.backbone_name_or_path == str(clip_dir)
    # The CLIP weights were loaded into `model.clip` (not left at random init).
    reference = AutoModel.from_pretrained(clip_dir)
    torch.testing.assert_close(model.clip.visual_projection.weight, reference.visual_projection.weight)


def test_reference_prompt_baseline(model):
    pixel_values = model.preprocess(random_images(2))
    label_embeds = model.encode_labels(LABELS)
    with_reference = model(pixel_values=pixel_values, label_embeds=label_embeds).logits
    model.config.reference_prompt = None
    try:
        plain = model(pixel_values=pixel_values, label_embeds=label_embeds).logits
    finally:
        model.config.reference_prompt = "a photo."
    shift = plain - with_reference  # scale * cos(image, "a photo."): one number per image, same for every label
    torch.testing.assert_close(shift, shift[:, :1].expand_as(shift))
    assert torch.equal(plain.argsort(dim=1), with_reference.argsort(dim=1))


def test_ranking_scores_are_plain_cosine_and_change_rankings_within_a_label(model):
    """The reference baseline is one constant per image: each image's label ranking is unchanged, but how images
    rank within a label changes; paper-style tables rank the plain cosine (`ranking_scores()`), predict does not."""
    pixel_values = model.preprocess(random_images(6, seed=3))
    label_embeds = model.encode_labels(LABELS)
    predicted = model(pixel_values=pixel_values, label_embeds=label_embeds).logits
    with model.ranking_scores() as description:
        ranking = model(pixel_values=pixel_values, label_embeds=label_embeds).logits
    assert "plain cosine" in description and "a photo." in description
    model.config.reference_prompt = None
    try:
        plain = model(pixel_values=pixel_values, label_embeds=label_embeds).logits
        with model.ranking_scores() as nothing_to_switch:
            assert nothing_to_switch is None
    finally:
        model.config.reference_prompt = "a photo."
    torch.testing.assert_close(ranking, plain)
    torch.testing.assert_close(model(pixel_values=pixel_values, label_embeds=label_embeds).logits, predicted)
    assert torch.equal(ranking.argsort(dim=1), predicted.argsort(dim=1))  # within an image: same order
    assert not torch.equal(ranking.argsort(dim=0), predicted.argsort(dim=0))  # within a label: not
    model.config.ranking_scores = "reference"
    try:
        with model.ranking_scores() as description:
            assert description is None
            torch.testing.assert_close(model(pixel_values=pixel_values, label_embeds=label_embeds).logits, predicted)
    finally:
        model.config.ranking_scores = "plain_cosine"
    with pytest.raises(ValueError, match="ranking_scores must be 'plain_cosine' or 'reference'"):
        ovmlc.CLIPZeroShotConfig(ranking_scores="cosine")


def test_forward_shapes_and_independent_scores(model):
    pixel_values = model.preprocess(random_images(3))
    label_embeds = model.encode_labels(LABELS)
    output = model(pixel_values=pixel_values, label_embeds=label_embeds, return_label_maps=True)
    assert output.logits.shape == (3, 4)
    assert output.label_maps.shape == (3, 4, 4, 4)
    # No softmax across labels: a label's score does not depend on which other labels are asked for.
    alone = model(pixel_values=pixel_values, label_embeds=model.encode_labels(["dog"])).logits
    torch.testing.assert_close(alone[:, 0], output.logits[:, 1])


def test_loss_ignores_unannotated_entries(model):
    pixel_values = model.preprocess(random_images(2))
    label_embeds = model.encode_labels(LABELS)
    labels = torch.tensor([[1.0, 0, 0, 1], [0, 1, 0, 0]])
    mask = torch.tensor([[1.0, 1, 0, 1], [1, 1, 1, 0]])
    loss = model(pixel_values=pixel_values, label_embeds=label_embeds, labels=labels, label_mask=mask).loss
    flipped = labels.clone()
    flipped[0, 2], flipped[1, 3] = 1.0, 1.0  # change only unannotated entries
    same = model(pixel_values=pixel_values, label_embeds=label_embeds, labels=flipped, label_mask=mask).loss
    torch.testing.assert_close(loss, same)


def test_predict_sorted_topk_threshold(model):
    images = random_images(2)
    results = model.predict(images, LABELS)
    assert len(results) == 2 and all(len(r) == 4 for r in results)
    for ranked in results:
        scores = [score for _, score in ranked]
        assert scores == sorted(scores, reverse=True) and all(0 <= s <= 1 for s in scores)
    top = model.predict(images, LABELS, top_k=2)
    assert [r[:2] for r in results] == top
    cut = (results[0][1][1] + results[0][2][1]) / 2  # between the 2nd and 3rd score
    kept = model.predict(images[0], LABELS, threshold=cut)
    assert [label for label, _ in kept] == [label for label, _ in results[0][:2]]
    vocab = LabelVocabulary(LABELS)
    assert model.predict(images, vocab) == results


def test_save_load_round_trip(model, saved_dir):
    names = set(os.listdir(saved_dir))
    assert {
        "config.json",
        "model.safetensors",
        "modeling_clip_zeroshot.py",
        "configuration_clip_zeroshot.py",
        "pipeline.py",
        "tokenizer.json",
        "preprocessor_config.json",
        "label_embeddings.safetensors",
    } <= names
    config = json.loads((saved_dir / "config.json").read_text())
    assert config["auto_map"]["AutoModel"] == "modeling_clip_zeroshot.CLIPZeroShotModel"
    assert config["custom_pipelines"][PIPELINE_TASK]["impl"] == "pipeline.OpenVocabularyMultiLabelPipeline"
    loaded = AutoModel.from_pretrained(saved_dir)
    assert isinstance(loaded, CLIPZeroShotModel)
    assert isinstance(AutoConfig.from_pretrained(saved_dir), ovmlc.CLIPZeroShotConfig)
    images = random_images(2, seed=3)
    np.testing.assert_allclose(loaded.predict_scores(images, LABELS), model.predict_scores(images, LABELS), atol=1e-6)


def test_pipeline_matches_predict_and_encodes_labels_once(model, saved_dir, monkeypatch):
    pipe = pipeline(PIPELINE_TASK, model=ovmlc.load_model(str(saved_dir)))
    images = random_images(3, seed=5)
    calls = []
    original = pipe.model.encode_labels
    monkeypatch.setattr(pipe.model, "encode_labels", lambda labels: calls.append(list(labels)) or original(labels))
    outputs = pipe(images, candidate_labels=LABELS, top_k=3, batch_size=2)
    assert calls.count(LABELS) == 1  # one vocabulary → encoded once, not per image
    expected = model.predict(images, LABELS, top_k=3)
    for got, want in zip(outputs, expected):
        assert [item["label"] for item in got] == [label for label, _ in want]
        np.testing.assert_allclose([item["score"] for item in got], [score for _, score in want], atol=1e-6)
    single = pipe(images[0], candidate_labels="cat, dog", threshold=0.0)
    assert {item["label"] for item in single} == {"cat", "dog"}
    # From a folder, the task comes from config.json's `custom_pipelines` (transformers asks for trust_remote_code).
    from_folder = pipeline(model=str(saved_dir), trust_remote_code=True)
    assert from_folder.task == PIPELINE_TASK
    assert [d["label"] for d in from_folder(images[0], candidate_labels=LABELS)] == [
        label for label, _ in model.predict(images[0], LABELS)
    ]


def test_bad_inputs_give_clear_errors(model, tmp_path):
    image = random_images(1)[0]
    with pytest.raises(ValueError, match="no labels"):
        model.predict(image, [])
    with pytest.raises(ValueError, match="duplicate"):
        model.predict(image, ["cat", "CAT"])
    with pytest.raises(ValueError, match="empty label"):
        model.predict(image, ["cat", ""])
    text_file = tmp_path / "notes.txt"
    text_file.write_text("not an image")
    with pytest.raises(ImageLoadError, match="notes.txt"):
        model.predict(str(text_file), LABELS)
    jpeg = tmp_path / "truncated.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(jpeg)
    jpeg.write_bytes(jpeg.read_bytes()[: len(jpeg.read_bytes()) // 2])
    with pytest.raises(ImageLoadError, match="truncated.jpg"):
        model.predict(str(jpeg), LABELS)
    with pytest.raises(ImageLoadError, match="no such image file"):
        model.predict(str(tmp_path / "missing.png"), LABELS)
    with pytest.raises(ValueError, match="calibrated"):
        model.predict(image, LABELS, threshold="calibrated")


def test_image_modes(model, tmp_path):
    rgb = random_images(1)[0]
    images = [
        rgb.convert("L"),
        rgb.convert("RGBA"),
        rgb.convert("CMYK"),
        rgb.convert("P"),
        Image.fromarray(np.asarray(rgb.convert("L"), dtype=np.uint16) * 257),  # 16-bit grayscale
        np.asarray(rgb, dtype=np.float32) / 255.0,
    ]
    cmyk_path = tmp_path / "cmyk.jpg"
    rgb.convert("CMYK").save(cmyk_path)
    images.append(str(cmyk_path))
    results = model.predict(images, LABELS, top_k=1)
    assert len(results) == len(images)
    assert Image.fromarray(np.asarray(rgb.convert("L"), dtype=np.uint16) * 257).mode.startswith("I")


def test_calibrated_thresholds(model):
    model.config.label_thresholds = {"cat": 0.0, "dog": 1.1}
    model.config.global_threshold = 0.0
    try:
        results = model.predict(random_images(1)[0], ["cat", "dog", "tree"], threshold="calibrated")
        assert {label for label, _ in results} == {"cat", "tree"}
    finally:
        model.config.label_thresholds = None
        model.config.global_threshold = None


def test_load_model_factory(clip_dir, saved_dir):
    assert isinstance(ovmlc.load_model(str(clip_dir)), CLIPZeroShotModel)
    assert isinstance(ovmlc.load_model(str(saved_dir)), CLIPZeroShotModel)
    with pytest.raises(OSError, match="no such model folder"):
        ovmlc.load_model("./does/not/exist")


def test_cli_predict_json(saved_dir, tmp_path, capsys):
    paths = []
    for index, image in enumerate(random_images(2)):
        paths.append(str(tmp_path / f"image{index}.png"))
        image.save(paths[-1])
    assert (
        cli_main(
            ["predict", *paths, "--labels", "cat, dog,red car", "--model", str(saved_dir), "--json", "--top-k", "2"]
        )
        == 0
    )
    payload = json.loads(capsys.readouterr().out)
    assert [entry["image"] for entry in payload] == paths
    assert all(len(entry["labels"]) == 2 for entry in payload)
    assert cli_main(["predict", paths[0], "--labels", "cat,cat", "--model", str(saved_dir)]) == 2
    assert "duplicate" in capsys.readouterr().err
