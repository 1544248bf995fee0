import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import random_images, save_hub_layout_clip

from ovmlc import MKTConfig, MKTModel
from ovmlc.core.vocabulary import LabelVocabulary

SEEN = ["cat", "dog", "red car", "tree"]
UNSEEN = ["sky", "boat", "bird"]
# The tiny tokenizer has one token per character, so single-letter template words are single tokens (exact init).
TEMPLATE = "a {} b"


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    return save_hub_layout_clip(tmp_path_factory.mktemp("clip"))


@pytest.fixture(scope="module")
def model(clip_dir):
    return MKTModel.from_clip(str(clip_dir), num_trainable_layers=1, top_k=3, templates=TEMPLATE)


@pytest.fixture(scope="module")
def batch(model):
    generator = torch.Generator().manual_seed(0)
    labels = (torch.rand(6, len(SEEN), generator=generator) > 0.5).long()
    labels[:, 0] = 1  # every image has a positive (images without one are dropped by the ranking loss)
    return {"pixel_values": model.preprocess(random_images(6, seed=2)), "labels": labels}


def test_config_defaults_follow_the_paper():
    config = MKTConfig()
    assert (config.stage, config.num_trainable_layers, config.layer_decay) == (1, 2, 0.65)
    assert (config.top_k, config.distillation_weight, config.ranking_margin) == (16, 1.0, 1.0)
    assert (config.templates, config.prompt_tuning) == ("mkt", "context")
    for bad in ({"stage": 3}, {"prompt_tuning": "full"}, {"top_k": 0}, {"layer_decay": 0.0}):
        with pytest.raises(ValueError):
            MKTConfig(**bad)


def test_student_starts_as_the_teacher(model, batch):
    vision = model.clip.vision_model
    assert torch.equal(model.student.layers[0].mlp.fc1.weight, vision.encoder.layers[1].mlp.fc1.weight)
    assert torch.equal(model.student.projection.weight, model.clip.visual_projection.weight)
    features = model.encode_image_features(batch["pixel_values"])
    clip_embeds = model.clip.get_image_features(pixel_values=batch["pixel_values"]).pooler_output
    torch.testing.assert_close(features["teacher_embeds"], clip_embeds, atol=1e-5, rtol=1e-5)
    student_cls, _ = model.student(features["hidden_states"])
    torch.testing.assert_close(student_cls, features["teacher_embeds"], atol=1e-5, rtol=1e-5)


def test_two_stream_score_and_shapes(model, batch):
    label_embeds = model.encode_labels(SEEN)
    features = model.encode_image_features(batch["pixel_values"])
    output = model(image_features=features, label_embeds=label_embeds, return_label_maps=True)
    assert output.logits.shape == (6, len(SEEN)) and output.label_maps.shape == (6, len(SEEN), 4, 4)
    with torch.no_grad():
        cls, patches = model.student(features["hidden_states"])
        patch_scores = patches @ label_embeds.T  # [B, N, C]
        local = patch_scores.topk(3, dim=1).values.mean(dim=1)
        expected = (F.normalize(local, dim=-1) + F.normalize(cls @ label_embeds.T, dim=-1)) / 2
    torch.testing.assert_close(output.logits, expected)
    torch.testing.assert_close(output.label_maps.flatten(2).transpose(1, 2), patch_scores)


def test_top_k_is_capped_by_the_patch_count(clip_dir, batch):
    model = MKTModel.from_clip(str(clip_dir), top_k=16 * 4)  # 16 patches in the tiny CLIP
    assert model(pixel_values=batch["pixel_values"], label_names=SEEN).logits.shape == (6, len(SEEN))


def test_zsl_and_gzsl_scores_differ_because_of_label_set_normalisation(model, batch):
    assert MKTModel.scores_depend_on_label_set
    with torch.no_grad():
        gzsl = model(pixel_values=batch["pixel_values"], label_names=SEEN + UNSEEN).logits[:, len(SEEN) :]
        zsl = model(pixel_values=batch["pixel_values"], label_names=UNSEEN).logits
    assert not torch.allclose(zsl, gzsl, atol=1e-4)
    # Each stream is a unit vector over the scored labels, so the fused vector has norm <= 1.
    assert bool((zsl.norm(dim=-1) <= 1 + 1e-5).all())


def test_stage1_gradients_frozen_weights_and_layer_decay(clip_dir, batch):
    model = MKTModel.from_clip(str(clip_dir), num_trainable_layers=2, templates=TEMPLATE).train()
    trainable = {name for name, parameter in model.named_parameters() if parameter.requires_grad}
    assert trainable and all(name.startswith("student.") for name in trainable)
    groups = model.parameter_groups(1e-3, 0.05)
    lrs = {}
    for group in groups:
        for parameter in group["params"]:
            lrs[id(parameter)] = (group["lr"], group["weight_decay"])
    named = dict(model.named_parameters())
    assert lrs[id(named["student.projection.weight"])] == (pytest.approx(1e-3), 0.05)
    assert lrs[id(named["student.layers.1.mlp.fc1.weight"])] == (pytest.approx(0.65e-3), 0.05)
    assert lrs[id(named["student.layers.0.mlp.fc1.weight"])] == (pytest.approx(0.65**2 * 1e-3), 0.05)
    assert lrs[id(named["student.layers.0.mlp.fc1.bias"])][1] == 0.0
    assert len(lrs) == len(trainable)
    assert model.parameter_groups(1e-3, 0.0, layer_decay=0.5)[0]["lr"] == pytest.approx(0.25e-3)

    frozen = {name: parameter.detach().clone() for name, parameter in model.named_parameters() if name not in trainable}
    projection_before = model.student.projection.weight.detach().clone()
    optimizer = torch.optim.AdamW(groups)
    output = model(pixel_values=batch["pixel_values"], label_names=SEEN, labels=batch["labels"])
    output.loss.backward()
    assert {name for name, parameter in model.named_parameters() if parameter.grad is not None} == trainable
    optimizer.step()
    for name, parameter in model.named_parameters():
        if name in frozen:
            assert torch.equal(parameter, frozen[name]), f"frozen weight {name} changed"
    assert not torch.equal(model.student.projection.weight, projection_before)


def test_stage1_loss_is_ranking_plus_distillation_and_decreases(clip_dir, batch):
    model = MKTModel.from_clip(str(clip_dir), num_trainable_layers=1, templates=TEMPLATE).train()
    label_embeds = model.encode_labels(SEEN)
    features = model.encode_image_features(batch["pixel_values"])  # frozen part, as from the feature cache
    output = model(image_features=features, label_embeds=label_embeds, labels=batch["labels"])
    from ovmlc.core.losses import ranking_loss

    # At initialisation the student equals the teacher: the distillation term is zero.
    torch.testing.assert_close(output.loss, ranking_loss(output.logits, batch["labels"]))
    optimizer = torch.optim.AdamW(model.parameter_groups(3e-3, 0.0))
    losses = []
    for _ in range(12):
        output = model(image_features=features, label_embeds=label_embeds, labels=batch["labels"])
        optimizer.zero_grad()
        output.loss.backward()
        optimizer.step()
        losses.append(output.loss.item())
    assert losses[-1] < 0.7 * losses[0]
    # Without cached teacher embeddings the loss computes them from the hidden states.
    without = {"hidden_states": features["hidden_states"]}
    with torch.no_grad():
        a = model(image_features=features, label_embeds=label_embeds, labels=batch["labels"]).loss
        b = model(image_features=without, label_embeds=label_embeds, labels=batch["labels"]).loss
    torch.testing.assert_close(a, b)
    assert a > ranking_loss(model(image_features=features, label_embeds=label_embeds).logits, batch["labels"])


@pytest.fixture(scope="module")
def stage1_dir(clip_dir, batch, tmp_path_factory):
    model = MKTModel.from_clip(str(clip_dir), num_trainable_layers=1, templates=TEMPLATE).train()
    optimizer = torch.optim.AdamW(model.parameter_groups(1e-2, 0.0))
    for _ in range(2):
        loss = model(pixel_values=batch["pixel_values"], label_names=SEEN, labels=batch["labels"]).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    directory = tmp_path_factory.mktemp("mkt-stage1")
    model.config.label_names = SEEN + UNSEEN
    model.save_pretrained(directory)
    return directory


def test_stage1_save_load_round_trip_and_checkpoint_has_no_teacher_copy(stage1_dir, batch):
    from safetensors import safe_open

    loaded = MKTModel.from_pretrained(stage1_dir)
    with safe_open(str(stage1_dir / "model.safetensors"), framework="pt") as handle:
        keys = list(handle.keys())
    assert not any("teacher" in key for key in keys)
    assert sum(key.startswith("student.layers.") for key in keys) == 16  # one block: the only extra weights
    reloaded = MKTModel.from_pretrained(stage1_dir)
    with torch.no_grad():
        a = loaded(pixel_values=batch["pixel_values"], label_names=SEEN + UNSEEN).logits
        b = reloaded(pixel_values=batch["pixel_values"], label_names=SEEN + UNSEEN).logits
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    # Training moved the student away from the untouched teacher (= the CLIP inside).
    assert not torch.equal(loaded.student.projection.weight, loaded.clip.visual_projection.weight)


def test_stage2_context_starts_at_stage1_embeddings_and_trains_only_the_prompt(stage1_dir, batch):
    stage1 = MKTModel.from_pretrained(stage1_dir)
    stage2 = MKTModel.from_pretrained(stage1_dir, stage=2)
    assert stage2.prompt_learner.ctx.shape == (1, 2, 32)  # one prompt set, "a" and "b"
    with torch.no_grad():
        torch.testing.assert_close(stage2.encode_labels(SEEN), stage1.encode_labels(SEEN), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(
            stage2(pixel_values=batch["pixel_values"], label_names=SEEN).logits,
            stage1(pixel_values=batch["pixel_values"], label_names=SEEN).logits,
            atol=1e-5,
            rtol=1e-5,
        )
    assert any(module is stage2.prompt_learner for module in stage2.text_side_modules())
    stage2.train()
    assert not stage2.student.training and not stage2.clip.training
    trainable = {name for name, parameter in stage2.named_parameters() if parameter.requires_grad}
    assert trainable == {"prompt_learner.ctx"}
    features = stage2.encode_image_features(batch["pixel_values"])
    assert set(features) == {"image_embeds", "patch_embeds"}
    frozen = {
        name: parameter.detach().clone() for name, parameter in stage2.named_parameters() if name not in trainable
    }
    optimizer = torch.optim.AdamW(stage2.parameter_groups(1e-2, 0.0))
    fingerprint = stage2.eval().text_fingerprint()
    cached = stage2.encode_labels(SEEN)
    stage2.train()
    losses = []
    for _ in range(10):
        # label_names: the label embeddings are recomputed with gradients every step (as the trainer does).
        output = stage2(image_features=features, label_names=SEEN, labels=batch["labels"])
        optimizer.zero_grad()
        output.loss.backward()
        optimizer.step()
        losses.append(output.loss.item())
    assert {name for name, parameter in stage2.named_parameters() if parameter.grad is not None} == trainable
    assert losses[-1] < losses[0]
    for name, parameter in stage2.named_parameters():
        if name in frozen:
            assert torch.equal(parameter, frozen[name]), f"frozen weight {name} changed"
    # New prompt vectors → new cache key → new label embeddings in eval mode.
    stage2.eval()
    assert stage2.text_fingerprint() != fingerprint
    assert not torch.allclose(stage2.encode_labels(SEEN), cached)


def test_stage2_save_load_round_trip(stage1_dir, batch, tmp_path):
    model = MKTModel.from_pretrained(stage1_dir, stage=2)
    with torch.no_grad():
        model.prompt_learner.ctx.add_(0.1)
    model.save_pretrained(tmp_path)
    loaded = MKTModel.from_pretrained(tmp_path)
    assert loaded.config.stage == 2
    with torch.no_grad():
        expected = model(pixel_values=batch["pixel_values"], label_names=UNSEEN).logits
        torch.testing.assert_close(loaded(pixel_values=batch["pixel_values"], label_names=UNSEEN).logits, expected)


def test_stage2_token_table_keeps_label_words_frozen(stage1_dir, batch):
    stage1 = MKTModel.from_pretrained(stage1_dir)
    model = MKTModel.from_pretrained(stage1_dir, stage=2, prompt_tuning="token_table")
    with torch.no_grad():
        torch.testing.assert_close(model.encode_labels(SEEN), stage1.encode_labels(SEEN), atol=1e-5, rtol=1e-5)
    model.train()
    output = model(pixel_values=batch["pixel_values"], label_names=SEEN, labels=batch["labels"])
    output.loss.backward()
    rows_with_grad = set(
        torch.nonzero(model.prompt_learner.token_embedding.weight.grad.abs().sum(dim=1)).flatten().tolist()
    )
    tokenizer = model.text_tokenizer
    template_rows = set(tokenizer("a b")["input_ids"])  # start, "a", "b", end
    label_rows = {i for name in SEEN for i in tokenizer(name, add_special_tokens=False)["input_ids"]} - template_rows
    assert rows_with_grad and rows_with_grad <= template_rows
    assert not rows_with_grad & label_rows


def test_stage2_rejects_other_templates(stage1_dir):
    model = MKTModel.from_pretrained(stage1_dir, stage=2)
    with pytest.raises(ValueError, match="tuned the prompt"):
        model.encode_labels(LabelVocabulary(SEEN, templates="single"))


def test_score_rejects_unknown_features(model):
    with pytest.raises(ValueError, match="hidden_states"):
        model.score({"vision_tokens": torch.zeros(1, 17, 32)}, torch.zeros(2, 16))


def test_too_many_trainable_layers_is_a_clear_error(clip_dir):
    with pytest.raises(ValueError, match="num_trainable_layers"):
        MKTModel.from_clip(str(clip_dir), num_trainable_layers=3)


def test_two_stage_training_with_the_trainer(tmp_path):
    from test_train_fixtures import make_tiny_backbone, make_tiny_dataset, write_recipe

    from ovmlc.training.trainer import train

    dataset, backbone = make_tiny_dataset(tmp_path / "data"), make_tiny_backbone(tmp_path / "clip")
    stage1 = write_recipe(
        tmp_path / "stage1.yaml",
        dataset,
        backbone,
        tmp_path / "stage1",
        method="mkt",
        method_config={"num_trainable_layers": 1, "templates": TEMPLATE},
        freeze=[],
        layer_decay=0.65,
        training={"epochs": 1},
    )
    first = train(stage1)
    stage2 = write_recipe(
        tmp_path / "stage2.yaml",
        dataset,
        backbone,
        tmp_path / "stage2",
        method="mkt",
        method_config={"stage": 2},
        init_from=str(first),
        freeze=[],
        training={"epochs": 1},
    )
    second = train(stage2)
    loaded = MKTModel.from_pretrained(second)
    assert loaded.config.stage == 2 and loaded.config.num_trainable_layers == 1
    stage1_model = MKTModel.from_pretrained(first)
    # Stage 2 kept stage 1's image side and changed only the prompt.
    assert torch.equal(loaded.student.projection.weight, stage1_model.student.projection.weight)
    with torch.no_grad():
        assert not torch.allclose(loaded.encode_labels(SEEN), stage1_model.encode_labels(SEEN))

    # MKT's ZSL protocol scores the unseen labels alone (its scores are normalised across the scored labels): the
    # trainer's report does, and `ovmlc evaluate` on the saved model gives the same numbers.
    from ovmlc import evaluation

    metrics = json.loads((second / "eval" / "metrics.json").read_text())
    assert metrics["views"]["zsl"]["scored_labels"] == "unseen labels alone"
    assert "scored_labels" not in metrics["views"]["gzsl"]
    saved = evaluation.load_scores(second / "eval" / "scores.npz")
    assert saved.unseen_scores.shape == (saved.num_images, int(saved.unseen.sum()))
    assert not np.allclose(saved.unseen_scores, saved.scores[:, saved.unseen], atol=1e-4)
    report = evaluation.evaluate_model(second, dataset, "synthetic", output_dir=tmp_path / "eval", plots=False)
    for view in ("zsl", "gzsl"):
        assert report["views"][view]["mAP"] == pytest.approx(metrics["views"][view]["mAP"], abs=1e-4)
