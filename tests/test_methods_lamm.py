"""LAMM on a tiny CLIP: what trains, the prompts it starts from, unseen labels, every term of the hierarchical loss (and
its KD directions), the single-label task, class-incremental merging (old scores unchanged bit for bit), saving."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import random_images, save_hub_layout_clip

import ovmlc
from ovmlc.core.backbones import tokenize_prompts
from ovmlc.core.registry import get_method
from ovmlc.methods.lamm import EXAMPLE_CONFIG, LAMMConfig, LAMMModel
from ovmlc.methods.lamm.losses_lamm import (
    distillation_loss,
    feature_alignment_loss,
    multi_label_feature_pairs,
    single_label_cross_entropy,
    single_label_feature_pairs,
    single_label_targets,
)
from ovmlc.methods.papers import CLIP, COOP

SEEN = ["cat", "red car", "dotted background"]
UNSEEN = ["sky", "boat"]
NAMES = SEEN + UNSEEN


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    return save_hub_layout_clip(tmp_path_factory.mktemp("clip"))


@pytest.fixture(scope="module")
def pixels(clip_dir):
    model = build(clip_dir)
    return model.preprocess(random_images(6))  # [6, 3, 32, 32]


def build(clip_dir, seen=SEEN, **kwargs) -> LAMMModel:
    model = LAMMModel.from_clip(str(clip_dir), seen_labels=list(seen), **kwargs)
    model.set_label_cache(None)  # memory only
    return model


def literal(model: LAMMModel, names) -> torch.Tensor:
    """Frozen CLIP's embeddings `[C, D]` of the literal prompts "a photo of a {name}."."""
    with torch.no_grad():
        prompts = [f"a photo of a {name}." for name in names]
        return model.clip.get_text_features(**tokenize_prompts(model.text_tokenizer, prompts)).pooler_output


def one_hot(rows, num_labels: int = 3) -> torch.Tensor:
    labels = torch.zeros(len(rows), num_labels)
    for row, columns in enumerate(rows):
        labels[row, columns] = 1.0
    return labels


def train_steps(model, pixels, labels, names=SEEN, steps=3, lr=0.5):
    model.train()
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=lr)
    for _ in range(steps):
        loss = model(pixel_values=pixels, label_names=names, labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()


# ---------------------------------------------------------------------- config and construction
def test_registered_and_card(clip_dir):
    assert ovmlc.METHODS["lamm"] == (LAMMConfig, LAMMModel)
    assert LAMMConfig.model_type == "ovmlc_lamm"
    spec = get_method("lamm")
    assert spec.model_class is LAMMModel and spec.model_type == "ovmlc_lamm"
    assert spec.card.papers[0].bibtex.startswith("@inproceedings{gao2024lamm")
    assert [paper.title for paper in spec.card.papers[1:]] == [COOP.title, CLIP.title]
    assert LAMMModel.inherited_modules == ("clip",)  # the frozen CLIP stays out of adapter-only saves
    model = LAMMModel.from_clip(str(clip_dir), **EXAMPLE_CONFIG)
    assert model.class_names == tuple(EXAMPLE_CONFIG["seen_labels"])


def test_config_errors_name_the_field(clip_dir):
    for bad, field in (
        ({"task": "multi-label"}, "task"),
        ({"loss": "focal"}, "loss"),
        ({"kd_direction": "student"}, "kd_direction"),
        ({"shots": 0}, "shots"),
        ({"kd_temperature": 0}, "kd_temperature"),
        ({"param_loss_weight": -1.0}, "param_loss_weight"),
        ({"prompt_learning": {"n_context": 4}}, "prompt_learning"),
        ({"prompt_learning": {"num_prompt_sets": 2}}, "prompt_learning"),
    ):
        with pytest.raises(ValueError, match=f"LAMMConfig.{field}"):
            LAMMConfig(**bad)
    with pytest.raises(ValueError, match="unknown head 'dualcoop'; available: coop"):
        build(clip_dir, head="dualcoop")
    with pytest.raises(ValueError, match="learnable label tokens need the labels that own them"):
        LAMMModel.from_clip(str(clip_dir))  # no seen labels


def test_defaults_are_the_paper_prompt_and_weights():
    config = LAMMConfig()
    assert (
        config.prompt_learning["ctx_init"] == "a photo of a" and config.prompt_learning["label_tokens"] == "learnable"
    )
    assert config.prompt_learning["min_len"] == 1
    assert (config.feature_loss_weight, config.kd_loss_weight, config.kd_temperature) == (1.0, 0.05, 2.0)
    assert config.kd_direction == "paper"
    # lambda_1 = 1/shots; unknown shots = 1 (the official --shots default); an explicit weight wins.
    assert LAMMConfig().effective_param_loss_weight == 1.0
    assert LAMMConfig(shots=16).effective_param_loss_weight == 1 / 16
    assert LAMMConfig(shots=16, param_loss_weight=1.0).effective_param_loss_weight == 1.0
    assert LAMMConfig(task="single_label").trains_logit_params is False
    assert LAMMConfig(task="multi_label").trains_logit_params is True


@pytest.mark.parametrize(
    "kwargs, trainable",
    [
        ({}, {"prompt_learner.label_tokens", "head.log_scale", "head.bias"}),  # LAMM alone, multi-label
        ({"task": "single_label"}, {"prompt_learner.label_tokens"}),
        ({"task": "single_label", "train_context": True}, {"prompt_learner.label_tokens", "prompt_learner.ctx"}),
        (
            {"task": "single_label", "train_context": True, "prompt_learning": {"label_tokens": "frozen"}},
            {"prompt_learner.ctx"},
        ),  # CoOp
    ],
)
def test_what_trains(clip_dir, kwargs, trainable):
    model = build(clip_dir, **kwargs)
    assert {name for name, parameter in model.named_parameters() if parameter.requires_grad} == trainable
    # Everything but the frozen CLIP sits under two clean prefixes (adapter-only saves keep just these).
    assert {key.split(".")[0] for key in model.state_dict() if not key.startswith("clip.")} <= {
        "prompt_learner",
        "head",
    }
    assert model.uses_frozen_image_features and not model.scores_depend_on_label_set
    assert model.image_feature_settings() == {"head": "coop"}  # shots, losses, prompts: one feature cache


def test_starts_at_clips_zero_shot_prompt_and_temperature(clip_dir, pixels):
    model = build(clip_dir, task="single_label").eval()
    with torch.no_grad():
        embeddings = model.encode_labels(NAMES)
    torch.testing.assert_close(embeddings, literal(model, NAMES), atol=2e-6, rtol=1e-5)
    assert model.head.log_scale.item() == pytest.approx(min(model.clip.logit_scale.item(), math.log(100.0)))
    with torch.no_grad():
        logits = model(pixel_values=pixels, label_names=NAMES).logits
        image = F.normalize(model.encode_image_features(pixels)["image_embeds"], dim=-1)
    expected = model.head.log_scale.exp() * image @ F.normalize(literal(model, NAMES), dim=-1).T
    torch.testing.assert_close(logits, expected, atol=1e-4, rtol=1e-4)


# ---------------------------------------------------------------------- unseen labels
def test_unseen_labels_keep_their_original_names(clip_dir, pixels):
    """LAMM alone: after training, unseen labels are scored exactly as by CLIP's zero-shot prompt."""
    model = build(clip_dir, task="single_label")
    before = model.eval().encode_labels(NAMES).clone()
    train_steps(model, pixels, one_hot([[0], [1], [2], [0], [1], [2]]))
    assert model.learned_label_mask(NAMES).tolist() == [True, True, True, False, False]
    after = model.encode_labels(NAMES)
    assert not torch.allclose(after[:3], before[:3], atol=1e-4)  # the seen labels' tokens moved
    torch.testing.assert_close(after[3:], before[3:], rtol=0, atol=0)
    torch.testing.assert_close(after[3:], literal(model, UNSEEN), atol=2e-6, rtol=1e-5)
    with torch.no_grad():
        # (encoded in another batch: padded to another length, so equal up to float rounding)
        torch.testing.assert_close(model.original_name_embeddings(UNSEEN)[:, 0], after[3:], atol=1e-6, rtol=1e-6)


def test_with_a_trained_context_unseen_labels_use_it_with_their_names(clip_dir, pixels):
    model = build(clip_dir, task="single_label", train_context=True)
    train_steps(model, pixels, one_hot([[0], [1], [2], [0], [1], [2]]))
    with torch.no_grad():
        unseen = model.encode_labels(UNSEEN)
        torch.testing.assert_close(unseen, model.original_name_embeddings(UNSEEN)[:, 0], rtol=0, atol=0)
    assert not torch.allclose(unseen, literal(model, UNSEEN), atol=1e-4)  # the context moved


# ---------------------------------------------------------------------- loss terms
def test_loss_is_the_weighted_sum_of_its_terms(clip_dir, pixels):
    model = build(clip_dir, task="single_label", train_context=True, shots=4)
    train_steps(model, pixels, one_hot([[0], [1], [2], [0], [1], [2]]), steps=2)  # move the tokens off their init
    model.train()
    labels = one_hot([[0], [1], [2], [0], [1], [1]])
    outputs = model(pixel_values=pixels, label_names=SEEN, labels=labels)
    expected = outputs.task_loss + outputs.param_loss / 4 + outputs.feature_loss + 0.05 * outputs.kd_loss
    torch.testing.assert_close(outputs.loss.detach(), expected)
    learner = model.prompt_learner
    torch.testing.assert_close(
        outputs.param_loss, (learner.label_tokens - learner.label_tokens_init).pow(2).sum().detach()
    )
    torch.testing.assert_close(outputs.task_loss, F.cross_entropy(outputs.logits, labels.argmax(1)).detach())
    # L_feat: mean over samples of 1 - cos(t_y, t0_y) (every sample's batch holds another label here).
    with torch.no_grad():
        current = model.encode_prompts(SEEN)[:, 0]
        original = model.original_name_embeddings(SEEN)[:, 0]
    cosine = F.cosine_similarity(current, original, dim=-1)
    torch.testing.assert_close(outputs.feature_loss, (1 - cosine[labels.argmax(1)]).mean(), atol=1e-6, rtol=1e-5)
    assert outputs.feature_loss > 0 and outputs.param_loss > 0
    # Without the hierarchical loss the loss is the task loss.
    model.config.hierarchical_loss = False
    plain = model(pixel_values=pixels, label_names=SEEN, labels=labels)
    torch.testing.assert_close(plain.loss, plain.task_loss)
    assert plain.param_loss is None


def test_hierarchical_loss_needs_label_names(clip_dir, pixels):
    model = build(clip_dir, task="single_label").train()
    embeds = model.encode_labels(SEEN)
    with pytest.raises(ValueError, match="hierarchical loss .* pass label_names"):
        model(pixel_values=pixels, label_embeds=embeds, labels=one_hot([[0]] * 6))


def test_kd_directions():
    current = torch.tensor([[2.0, 0.0, -1.0], [0.5, 1.5, 0.0]], requires_grad=True)
    original = torch.tensor([[1.0, 0.5, 0.0], [0.0, 2.0, -0.5]], requires_grad=True)
    paper = distillation_loss(current, original, temperature=2.0, direction="paper")
    expected = 4.0 * F.cross_entropy(current / 2, F.softmax(original.detach() / 2, dim=1))
    torch.testing.assert_close(paper, expected)
    paper.backward()
    assert original.grad is None and current.grad.abs().sum() > 0  # CLIP (original names) is the detached teacher
    current.grad = None
    official = distillation_loss(current, original, temperature=2.0, direction="official")
    torch.testing.assert_close(official, 4.0 * F.cross_entropy(original / 2, F.softmax(current / 2, dim=1)))
    official.backward()
    assert current.grad.abs().sum() > 0 and original.grad.abs().sum() > 0  # the code's target carries gradient
    # Multi-label: per-label sigmoid KD, summed over labels, mean over images.
    multi = distillation_loss(current, original, 2.0, "paper", multi_label=True)
    per_label = F.binary_cross_entropy_with_logits(current / 2, torch.sigmoid(original.detach() / 2), reduction="none")
    torch.testing.assert_close(multi, 4.0 * per_label.sum(dim=1).mean())
    with pytest.raises(ValueError, match="kd direction"):
        distillation_loss(current, original, 2.0, "sideways")


def test_official_kd_direction_trains_through_the_original_logits(clip_dir, pixels):
    """LAMM alone: in the paper's direction the KD gradient reaches the label tokens through the current logits; in
    the official one through the softmax target. Both differ, both train."""
    grads = {}
    labels = one_hot([[0], [1], [2], [0], [1], [2]])
    for direction in ("paper", "official"):
        model = build(clip_dir, task="single_label", kd_direction=direction).train()
        features = model.encode_image_features(pixels)
        embeds = model.encode_labels(SEEN)  # with gradients in training
        logits = model.score(features, embeds).logits
        terms = model.hierarchical_loss_terms(logits, embeds, features, model.vocabulary(SEEN), labels, None)
        terms["kd_loss"].backward()
        grads[direction] = model.prompt_learner.label_tokens.grad.clone()
    assert grads["paper"].abs().sum() > 0 and grads["official"].abs().sum() > 0
    assert not torch.allclose(grads["paper"], grads["official"])


def test_feature_loss_batch_conditions():
    text = torch.randn(3, 8)
    original = torch.randn(3, 8)
    # Single-label: a batch of one label only counts nothing (the official FeatureLoss condition).
    targets, keep = single_label_targets(one_hot([[1], [1], [1]]))
    pairs = single_label_feature_pairs(targets, keep)
    assert not pairs[1].any() and feature_alignment_loss(text, original, *pairs).item() == 0.0
    targets, keep = single_label_targets(one_hot([[1], [1], [2]]))
    label, counted = single_label_feature_pairs(targets, keep)
    assert label.tolist() == [1, 1, 2] and counted.all()
    cosine = F.cosine_similarity(text, original, dim=-1)
    expected = ((1 - cosine[1]) * 2 + (1 - cosine[2])) / 3
    torch.testing.assert_close(feature_alignment_loss(text, original, label, counted), expected)
    # Multi-label: one pair per annotated positive; only images whose positives include another label count.
    labels = one_hot([[0, 2], [1], [0, 1, 2]])
    mask = torch.ones_like(labels)
    mask[2, 2] = 0  # unannotated: not a pair
    label, counted = multi_label_feature_pairs(labels, mask)
    assert label.tolist() == [0, 2, 1, 0, 1] and counted.tolist() == [True, True, False, True, True]
    expected = (2 - cosine[0] - cosine[2] + 2 - cosine[0] - cosine[1]) / 4
    torch.testing.assert_close(feature_alignment_loss(text, original, label, counted), expected)


def test_single_label_cross_entropy_rows():
    logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 3.0]])
    labels = one_hot([[0], [], [2]])  # the middle image has no trained label: left out
    expected = F.cross_entropy(logits[[0, 2]], torch.tensor([0, 2]))
    torch.testing.assert_close(single_label_cross_entropy(logits, labels), expected)
    with pytest.raises(ValueError, match="image 1 of the batch has 2 positive labels"):
        single_label_cross_entropy(logits, one_hot([[0], [0, 1], [2]]))
    assert single_label_cross_entropy(logits, one_hot([[], [], []])).item() == 0.0


def test_multi_label_training_moves_the_logit_head_and_tokens(clip_dir, pixels):
    model = build(clip_dir, logit_scale=10.0, logit_bias=-5.0)
    assert model.head.bias.item() == -5.0 and model.head.log_scale.exp().item() == pytest.approx(10.0)
    groups = model.parameter_groups(1e-3)
    assert [group["lr"] for group in groups] == [1e-3, pytest.approx(0.1)]  # head at x100
    labels = one_hot([[0, 2], [1], [0, 1], [2], [1, 2], [0]])
    model.train()
    first = model(pixel_values=pixels, label_names=SEEN, labels=labels)
    assert first.kd_loss > 0 and first.feature_loss.item() == pytest.approx(0.0, abs=1e-6)  # tokens at their init
    train_steps(model, pixels, labels, lr=0.1)
    assert model.head.bias.item() != -5.0 and model.label_token_penalty().item() > 0


# ---------------------------------------------------------------------- class-incremental merging
def test_merge_keeps_old_scores_bit_for_bit(clip_dir, pixels):
    first = train_steps(build(clip_dir, seen=["cat", "red car"], task="single_label"), pixels,
                        one_hot([[0], [1]] * 3, 2), names=["cat", "red car"])  # fmt: skip
    second = train_steps(build(clip_dir, seen=["sky", "boat", "tree"], task="single_label"), pixels,
                         one_hot([[0], [1], [2]] * 2, 3), names=["sky", "boat", "tree"])  # fmt: skip
    merged = first.merge(second)
    merged.set_label_cache(None)
    assert merged.class_names == ("cat", "red car", "sky", "boat", "tree")
    assert merged.config.seen_labels == ["cat", "red car", "sky", "boat", "tree"]
    images = random_images(5, seed=3)

    def scores(model, labels):
        model.set_label_cache(None)  # encode `labels` in one batch (a batched forward rounds per batch shape)
        return model.predict_scores(images, labels)

    old, new = ["cat", "red car"], ["sky", "boat", "tree"]
    assert (scores(merged, old) == scores(first, old)).all()
    assert (scores(merged, new) == scores(second, new)).all()
    # In any label list, each label scores as in the round that trained it, bit for bit; a label neither round
    # trained ("dog") keeps its zero-shot prompt.
    every = ["dog", *new, *old]
    together = scores(merged, every)
    assert (together[:, 4:] == scores(first, every)[:, 4:]).all()
    assert (together[:, 1:4] == scores(second, every)[:, 1:4]).all()
    np.testing.assert_allclose(together[:, 0], scores(first, ["dog"])[:, 0], rtol=0, atol=1e-6)
    # The inputs are untouched.
    assert first.class_names == ("cat", "red car") and second.class_names == ("sky", "boat", "tree")


def test_merge_refusals(clip_dir, pixels):
    first = build(clip_dir, seen=["cat", "red car"], task="single_label")
    with pytest.raises(ValueError, match=r"labels \['cat'\] already have label tokens"):
        first.merge(build(clip_dir, seen=["cat", "sky"], task="single_label"))
    moved = train_steps(build(clip_dir, seen=["sky", "tree"], task="single_label", train_context=True), pixels,
                        one_hot([[0], [1]] * 3, 2), names=["sky", "tree"])  # fmt: skip
    with pytest.raises(ValueError, match="contexts differ"):
        first.merge(moved)
    with pytest.raises(ValueError, match="differ in task"):
        first.merge(build(clip_dir, seen=["sky"]))
    other_head = build(clip_dir, seen=["sky"], task="single_label", logit_scale=5.0)
    with pytest.raises(ValueError, match="heads differ"):
        first.merge(other_head)
    with pytest.raises(ValueError, match="prompt settings differ in ctx_init"):
        first.merge(build(clip_dir, seen=["sky"], task="single_label", prompt_learning={"ctx_init": "a picture of a"}))
    with pytest.raises(TypeError, match="another LAMMModel"):
        first.merge(ovmlc.CLIPZeroShotModel.from_clip(str(clip_dir)))


def test_add_labels_starts_new_labels_at_their_names(clip_dir, pixels):
    model = train_steps(
        build(clip_dir, seen=["cat"], task="single_label"), pixels, one_hot([[0]] * 6, 1), names=["cat"]
    )
    grown = model.add_labels(["sky", "boat"])
    grown.set_label_cache(None)
    assert grown.class_names == ("cat", "sky", "boat")
    with torch.no_grad():
        torch.testing.assert_close(
            grown.encode_labels(["sky", "boat"]), literal(grown, ["sky", "boat"]), atol=2e-6, rtol=1e-5
        )
    assert {name for name, p in grown.named_parameters() if p.requires_grad} == {"prompt_learner.label_tokens"}
    with pytest.raises(ValueError, match="min_len=1 tokens|no labels"):
        grown.add_labels([])


# ---------------------------------------------------------------------- saving
def test_save_load_round_trip(clip_dir, pixels, tmp_path):
    model = train_steps(build(clip_dir, task="single_label", train_context=True), pixels, one_hot([[0], [1], [2]] * 2))
    model.config.label_names = NAMES
    model.save_pretrained(tmp_path)
    loaded = ovmlc.load_model(str(tmp_path))
    assert isinstance(loaded, LAMMModel) and loaded.config.prompt_learning == model.config.prompt_learning
    loaded.set_label_cache(None)
    for key, value in model.state_dict().items():
        if not key.startswith("clip."):
            torch.testing.assert_close(loaded.state_dict()[key], value, rtol=0, atol=0)
    images = random_images(3, seed=5)
    assert (loaded.predict_scores(images, NAMES) == model.predict_scores(images, NAMES)).all()
    assert {name for name, p in loaded.named_parameters() if p.requires_grad} == {
        "prompt_learner.ctx",
        "prompt_learner.label_tokens",
    }


# ---------------------------------------------------------------------- pluggable heads
class PairHead(ovmlc.methods.lamm.LAMMHead):
    """A two-prompt-set head in the shape of DualCoOp's (negative, positive prompts; logit = pos - neg)."""

    num_prompt_sets = 2

    def image_features(self, clip, pixel_values):
        return {"dense_embeds": super().image_features(clip, pixel_values)["patch_embeds"]}

    def forward(self, image_features, label_embeds, return_label_maps=False):
        regions = F.normalize(image_features["dense_embeds"], dim=-1).mean(dim=1)  # [B, D]
        prompts = F.normalize(label_embeds, dim=-1)  # [C, 2, D]
        return 10 * (regions @ prompts[:, 1].T - regions @ prompts[:, 0].T), None


def test_a_registered_head_with_two_prompt_sets_trains(clip_dir, pixels):
    from ovmlc.methods.lamm import LAMM_HEADS, register_lamm_head

    register_lamm_head("pair", PairHead)
    try:
        with pytest.raises(ValueError, match="num_prompt_sets=1 but head 'pair' scores 2"):
            build(clip_dir, head="pair")
        model = build(clip_dir, head="pair", prompt_learning={"num_prompt_sets": 2, "ctx_random_init": True})
        assert set(model.encode_image_features(pixels)) == {"dense_embeds"}
        model.train()
        outputs = model(pixel_values=pixels, label_names=SEEN, labels=one_hot([[0, 1], [2], [1], [0], [2], [1]]))
        assert outputs.logits.shape == (6, 3) and model.encode_labels(SEEN).shape == (3, 2, 16)
        outputs.loss.backward()
        assert model.prompt_learner.label_tokens.grad.abs().sum() > 0
        with pytest.raises(ValueError, match="already registered"):
            register_lamm_head("pair", PairHead)
    finally:
        LAMM_HEADS.pop("pair")
