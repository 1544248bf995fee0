import os

import pytest
import torch
from helpers import random_images, save_hub_layout_clip

from ovmlc import QKSConfig, QKSModel
from ovmlc.core.vocabulary import LabelVocabulary

LABELS = ["cat", "dog", "red car", "tree", "sky"]
SMALL = {"num_queries": 4, "num_query_layers": 2, "templates": ["a photo of a {}.", "a {} in the scene."]}


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    return save_hub_layout_clip(tmp_path_factory.mktemp("clip"))


@pytest.fixture(scope="module")
def model(clip_dir):
    torch.manual_seed(0)
    return QKSModel.from_clip(str(clip_dir), **SMALL)


@pytest.fixture(scope="module")
def batch(model):
    generator = torch.Generator().manual_seed(0)
    labels = (torch.rand(6, len(LABELS), generator=generator) > 0.6).long()
    label_mask = torch.ones_like(labels)
    label_mask[0, 1] = 0  # one unannotated entry
    return {"pixel_values": model.preprocess(random_images(6, seed=1)), "labels": labels, "label_mask": label_mask}


def test_config_defaults_follow_the_paper():
    config = QKSConfig()
    assert (config.num_queries, config.num_query_layers) == (12, 7)  # NUS-WIDE setting
    assert (config.templates, config.prompt_pool) == ("qks-pool85", "raw")
    assert (config.loss, config.asl_gamma_neg, config.asl_gamma_pos, config.asl_clip) == ("asl", 4.0, 0.0, 0.0)
    assert config.include_cls_token and config.train_projection and config.mask_unannotated
    with pytest.raises(ValueError, match="loss"):
        QKSConfig(loss="focal")
    with pytest.raises(ValueError, match="num_queries"):
        QKSConfig(num_queries=0)


def test_projection_starts_as_a_copy_of_clip_projection(model):
    assert torch.equal(model.query_projection.weight, model.clip.visual_projection.weight)
    assert model.query_projection.weight.data_ptr() != model.clip.visual_projection.weight.data_ptr()
    assert 0.01 < model.query_transformer.query_tokens.std().item() < 0.04  # N(0, 0.02)


def test_output_shapes_query_index_and_label_maps(model, batch):
    label_embeds = model.encode_labels(LABELS)
    output = model(pixel_values=batch["pixel_values"], label_embeds=label_embeds, return_label_maps=True)
    assert output.logits.shape == (6, len(LABELS))
    assert output.query_index.shape == (6, len(LABELS)) and output.query_index.dtype == torch.long
    assert int(output.query_index.min()) >= 0 and int(output.query_index.max()) < SMALL["num_queries"]
    assert output.label_maps.shape == (6, len(LABELS), 4, 4)
    # Maps are the picked query's attention over patches (CLS excluded), so each sums to at most 1.
    totals = output.label_maps.sum(dim=(-1, -2))
    assert bool((totals > 0).all()) and bool((totals <= 1 + 1e-5).all())
    usage = QKSModel.query_usage(output.query_index, SMALL["num_queries"])
    assert usage.shape == (SMALL["num_queries"],) and int(usage.sum()) == 6 * len(LABELS)


def test_logit_is_max_over_queries_of_unnormalised_dot_product(model, batch):
    label_embeds = model.encode_labels(LABELS)
    features = model.encode_image_features(batch["pixel_values"])
    with torch.no_grad():
        output = model.score(features, label_embeds)
        queries, _ = model.query_transformer(features["vision_tokens"])
        expected = torch.einsum("bmd,cd->bcm", model.query_projection(queries), label_embeds).max(dim=-1)
    torch.testing.assert_close(output.logits, expected.values)
    assert torch.equal(output.query_index, expected.indices)
    # Independent per label: scoring a subset gives the same numbers.
    alone = model.score(features, label_embeds[2:3]).logits
    torch.testing.assert_close(alone[:, 0], output.logits[:, 2])


def test_prompt_pool_label_embeddings_are_raw_means(model):
    vocabulary = model.vocabulary(["cat"])
    assert vocabulary.templates == SMALL["templates"] and vocabulary.pool == "raw"
    tokens = model.text_tokenizer(vocabulary.prompts("cat"), padding=True, return_tensors="pt")
    with torch.no_grad():
        per_template = model.clip.get_text_features(**tokens).pooler_output  # [2, D]
    torch.testing.assert_close(model.encode_labels(vocabulary)[0], per_template.mean(dim=0), atol=1e-5, rtol=1e-5)


def test_gradients_reach_exactly_the_trainable_parameters_and_frozen_weights_stay(clip_dir, batch):
    torch.manual_seed(0)
    model = QKSModel.from_clip(str(clip_dir), **SMALL).train()
    trainable = {name for name, parameter in model.named_parameters() if parameter.requires_grad}
    assert trainable and all(name.startswith(("query_transformer.", "query_projection.")) for name in trainable)
    assert "query_projection.weight" in trainable
    frozen = {name: parameter.detach().clone() for name, parameter in model.named_parameters() if name not in trainable}
    before = {name: parameter.detach().clone() for name, parameter in model.named_parameters() if name in trainable}
    optimizer = torch.optim.AdamW(model.parameter_groups(1e-3, 1e-4))
    output = model(
        pixel_values=batch["pixel_values"], label_names=LABELS, labels=batch["labels"], label_mask=batch["label_mask"]
    )
    output.loss.backward()
    with_grad = {name for name, parameter in model.named_parameters() if parameter.grad is not None}
    assert with_grad == trainable
    optimizer.step()
    for name, parameter in model.named_parameters():
        if name in frozen:
            assert torch.equal(parameter, frozen[name]), f"frozen weight {name} changed"
    assert not torch.equal(model.query_projection.weight, before["query_projection.weight"])
    assert not model.clip.training  # the frozen backbone never switches to training mode


def test_frozen_projection_option(clip_dir):
    model = QKSModel.from_clip(str(clip_dir), train_projection=False, **SMALL)
    assert not model.query_projection.weight.requires_grad


@pytest.mark.parametrize("loss", ["asl", "bce"])
def test_loss_decreases_and_ignores_unannotated_entries(clip_dir, batch, loss):
    torch.manual_seed(0)
    model = QKSModel.from_clip(str(clip_dir), loss=loss, query_dropout=0.0, query_attention_dropout=0.0, **SMALL)
    model.train()
    label_embeds = model.encode_labels(LABELS)
    features = model.encode_image_features(batch["pixel_values"])  # frozen: computed once, as from a cache
    optimizer = torch.optim.AdamW(model.parameter_groups(3e-3, 0.0))
    losses = []
    for _ in range(15):
        output = model(
            image_features=features, label_embeds=label_embeds, **{k: batch[k] for k in ("labels", "label_mask")}
        )
        optimizer.zero_grad()
        output.loss.backward()
        optimizer.step()
        losses.append(output.loss.item())
    assert losses[-1] < 0.7 * losses[0]
    # The unannotated entry does not count: flipping its label leaves the loss unchanged.
    flipped = batch["labels"].clone()
    flipped[0, 1] = 1 - flipped[0, 1]
    with torch.no_grad():
        a = model(
            image_features=features, label_embeds=label_embeds, labels=batch["labels"], label_mask=batch["label_mask"]
        )
        b = model(image_features=features, label_embeds=label_embeds, labels=flipped, label_mask=batch["label_mask"])
    torch.testing.assert_close(a.loss, b.loss)


def test_official_open_images_loss_counts_unannotated_as_negative(clip_dir, batch):
    model = QKSModel.from_clip(str(clip_dir), loss="bce", mask_unannotated=False, **SMALL).eval()
    label_embeds = model.encode_labels(LABELS)
    flipped = batch["labels"].clone()
    flipped[0, 1] = 1 - flipped[0, 1]
    with torch.no_grad():
        a = model(
            pixel_values=batch["pixel_values"],
            label_embeds=label_embeds,
            labels=batch["labels"],
            label_mask=batch["label_mask"],
        )
        b = model(
            pixel_values=batch["pixel_values"],
            label_embeds=label_embeds,
            labels=flipped,
            label_mask=batch["label_mask"],
        )
    assert not torch.allclose(a.loss, b.loss)


def test_without_cls_token(clip_dir, batch):
    model = QKSModel.from_clip(str(clip_dir), include_cls_token=False, **SMALL)
    output = model(pixel_values=batch["pixel_values"], label_names=LABELS, return_label_maps=True)
    torch.testing.assert_close(output.label_maps.sum(dim=(-1, -2)), torch.ones(6, len(LABELS)))


def test_score_rejects_features_of_another_method(model):
    with pytest.raises(ValueError, match="vision_tokens"):
        model.score({"image_embeds": torch.zeros(1, 16)}, torch.zeros(2, 16))


@pytest.fixture(scope="module")
def saved_dir(model, tmp_path_factory):
    directory = tmp_path_factory.mktemp("qks-saved")
    with torch.no_grad():
        model.query_projection.weight.add_(0.01)  # differs from CLIP's projection: the copy must be saved
    model.config.label_names = LABELS
    model.save_pretrained(directory)
    return directory


def test_save_load_round_trip(model, saved_dir, batch):
    model.eval()
    expected = model(pixel_values=batch["pixel_values"], label_names=LABELS)
    loaded = QKSModel.from_pretrained(saved_dir)
    assert not loaded.training and not loaded.clip.visual_projection.weight.requires_grad
    output = loaded(pixel_values=batch["pixel_values"], label_names=LABELS)
    torch.testing.assert_close(output.logits, expected.logits)
    assert torch.equal(output.query_index, expected.query_index)
    assert not torch.equal(loaded.query_projection.weight, loaded.clip.visual_projection.weight)
    assert set(os.listdir(saved_dir)) >= {"configuration_qks.py", "modeling_qks.py", "label_embeddings.safetensors"}


def test_label_vocabulary_with_other_templates_is_used_as_given(model, batch):
    vocabulary = LabelVocabulary(LABELS, templates="single")
    output = model(pixel_values=batch["pixel_values"], label_names=vocabulary)
    assert output.logits.shape == (6, len(LABELS))
