"""LAMM on a tiny CLIP: what trains, the prompts it starts from, unseen labels, every term of the hierarchical loss (and
its KD directions), the single-label task, class-incremental merging (old scores unchanged bit for bit), saving."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import random_images, save_hub_layout_clip

import ovmlc
from ovmlc.core.backbones import patch_grid_size, tokenize_prompts
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
        ({"asl_reduction": "mean"}, "asl_reduction"),
        ({"loss_weight": 0.0}, "loss_weight"),
        ({"head": "dualcoop", "prompt_learning": {"num_prompt_sets": 1}}, "prompt_learning"),
        ({"head": "dualcoop", "task": "single_label"}, "task"),
        ({"head": "dualcoop", "train_logit_params": True}, "train_logit_params"),
        ({"head": "dualcoop", "dense_features": "pooled"}, "dense_features"),
        ({"head": "dualcoop", "region_logit_scale": 0.0}, "region_logit_scale"),
    ):
        with pytest.raises(ValueError, match=f"LAMMConfig.{field}"):
            LAMMConfig(**bad)
    with pytest.raises(ValueError, match="num_prompt_sets=1, but the 'dualcoop' head scores 2 prompt set"):
        LAMMConfig(head="dualcoop", prompt_learning={"num_prompt_sets": 1})
    with pytest.raises(ValueError, match="unknown head 'nope'; available: coop, dualcoop"):
        build(clip_dir, head="nope")
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


# ---------------------------------------------------------------------- the dualcoop head (DualCoOp + LAMM)
DUAL = {"head": "dualcoop", "train_context": True, "dense_features": "patch"}
# DualCoOp's summed ASL and 100 x cosine logits saturate the tiny random CLIP's scores at larger steps.
DUAL_LR = 1e-4


def dual_labels() -> torch.Tensor:
    """Multi-label targets for the 6 test images over SEEN; every image has a positive and a negative, and images 0, 2
    and 4 have two positives (they count for L_feat)."""
    return one_hot([[0, 2], [1], [0, 1], [2], [1, 2], [0]])


def test_dualcoop_head_defaults_and_what_trains(clip_dir):
    config = LAMMConfig(head="dualcoop")
    assert config.prompt_learning["num_prompt_sets"] == 2  # filled in for the head
    # DualCoOp's loss as coded; the coop head keeps LAMM's transplant settings.
    assert (config.asl_gamma_neg, config.asl_gamma_pos, config.asl_clip, config.asl_reduction) == (
        2.0,
        1.0,
        0.05,
        "sum",
    )
    coop = LAMMConfig()
    assert (coop.asl_gamma_neg, coop.asl_gamma_pos, coop.asl_reduction, coop.loss_weight) == (
        4.0,
        0.0,
        "batch_mean",
        1.0,
    )
    assert not config.trains_logit_params
    model = build(clip_dir, **DUAL)
    assert {name for name, p in model.named_parameters() if p.requires_grad} == {
        "prompt_learner.label_tokens",
        "prompt_learner.ctx",
    }
    assert model.prompt_learner.ctx.shape[0] == 2 and model.encode_labels(NAMES).shape == (5, 2, 16)
    assert model.image_feature_settings() == {"head": "dualcoop", "dense_features": "patch"}
    assert {key.split(".")[0] for key in model.state_dict() if not key.startswith("clip.")} == {"prompt_learner"}


def test_dualcoop_head_scores_and_trains_as_dualcoop(clip_dir, pixels):
    """With its label tokens at their initial values (or frozen), the head is DualCoOp: same logits, label maps and
    task loss as `DualCoOpModel` with the same contexts (DualCoOp's own aggregation and loss functions)."""
    dualcoop = ovmlc.DualCoOpModel.from_clip(
        str(clip_dir), prompt_learning={"ctx_init": "a photo of a"}, dense_features="patch", loss_weight=0.01
    )
    with torch.no_grad():
        dualcoop.prompt_learner.ctx.add_(0.05 * torch.randn_like(dualcoop.prompt_learner.ctx))  # distinct pos / neg
    labels = dual_labels()
    for tokens in ("learnable", "frozen"):
        model = build(clip_dir, **DUAL, loss_weight=0.01, prompt_learning={"label_tokens": tokens})
        with torch.no_grad():
            model.prompt_learner.ctx.copy_(dualcoop.prompt_learner.ctx)
        mine = model.eval()(pixel_values=pixels, label_names=SEEN, labels=labels, return_label_maps=True)
        theirs = dualcoop.eval()(pixel_values=pixels, label_names=SEEN, labels=labels, return_label_maps=True)
        torch.testing.assert_close(mine.logits, theirs.logits, rtol=0, atol=0)
        torch.testing.assert_close(mine.label_maps, theirs.label_maps, rtol=0, atol=0)
        assert mine.label_maps.shape == (6, 3, *patch_grid_size(model.clip))
        torch.testing.assert_close(mine.loss, theirs.loss, rtol=0, atol=0)  # eval: the task loss alone


def test_dualcoop_head_unseen_labels_use_their_original_names_in_both_prompts(clip_dir, pixels):
    model = build(clip_dir, **DUAL)
    train_steps(model, pixels, dual_labels(), lr=DUAL_LR)
    assert model.label_token_penalty().item() > 0
    with torch.no_grad():
        embeddings = model.encode_labels(NAMES)  # [5, 2, D]: negative and positive prompt per label
        original = model.original_name_embeddings(NAMES)  # [5, 2, D]
    assert embeddings.shape == original.shape == (5, 2, 16)
    torch.testing.assert_close(embeddings[3:], original[3:], rtol=0, atol=1e-6)  # unseen: both prompts
    for prompt_set in (0, 1):
        assert not torch.allclose(embeddings[:3, prompt_set], original[:3, prompt_set], atol=1e-4)  # seen: moved
    assert not torch.allclose(embeddings[3:, 0], embeddings[3:, 1], atol=1e-4)  # the two contexts differ


def test_dualcoop_head_hierarchical_loss_terms(clip_dir, pixels):
    """L_param on the shared label tokens, L_feat averaged over both prompt sets, L_kd between the 2-way softmax
    distributions of the current and the original-name prompts; the total is their weighted sum."""
    model = build(clip_dir, **DUAL, shots=2, loss_weight=0.5)
    labels = dual_labels()
    model.train()
    first = model(pixel_values=pixels, label_names=SEEN, labels=labels)
    # At the start the label tokens are the names': no parameter or feature distance yet.
    assert first.param_loss.item() == 0.0 and first.feature_loss.item() == pytest.approx(0.0, abs=1e-6)
    train_steps(model, pixels, labels, steps=3, lr=DUAL_LR)
    model.train()
    outputs = model(pixel_values=pixels, label_names=SEEN, labels=labels)
    terms = [outputs.task_loss, outputs.param_loss, outputs.feature_loss, outputs.kd_loss]
    assert all(torch.isfinite(term) and term > 0 for term in terms)
    # loss_weight scales the whole loss: the task loss (reported weighted) and the regularisers.
    expected = outputs.task_loss + 0.5 * (outputs.param_loss / 2 + outputs.feature_loss + 0.05 * outputs.kd_loss)
    torch.testing.assert_close(outputs.loss.detach(), expected)
    model.config.hierarchical_loss = False
    unweighted = model(pixel_values=pixels, label_names=SEEN, labels=labels).loss
    model.config.loss_weight = 1.0
    torch.testing.assert_close(model(pixel_values=pixels, label_names=SEEN, labels=labels).loss, 2 * unweighted)
    model.config.hierarchical_loss, model.config.loss_weight = True, 0.5
    with torch.no_grad():
        current, original = model.encode_prompts(SEEN), model.original_name_embeddings(SEEN)  # [3, 2, D]
        cosine = F.cosine_similarity(current, original, dim=-1).mean(dim=1)  # [3], mean over the two prompt sets
        # pairs: (image, positive) of images with two positives: images 0, 2, 4
        pairs = torch.tensor([0, 2, 0, 1, 1, 2])
        torch.testing.assert_close(outputs.feature_loss, (1 - cosine[pairs]).mean(), atol=1e-6, rtol=1e-5)
        features = model.encode_image_features(pixels)
        original_logits = model.head(features, original)[0]  # [6, 3] = pos - neg with the original names
        # 2-way (negative, positive) softmax at T = 2: softmax((neg, pos) / T) = softmax((0, pos - neg) / T)
        pair_softmax = torch.stack([torch.zeros_like(original_logits), original_logits], dim=-1).div(2).softmax(-1)
        student = torch.stack([torch.zeros_like(outputs.logits), outputs.logits], dim=-1).div(2).log_softmax(-1)
        kd = 4 * -(pair_softmax * student).sum(-1).sum(1).mean()  # T^2 * sum over labels of the 2-way CE
    torch.testing.assert_close(outputs.kd_loss, kd, atol=1e-5, rtol=1e-5)


def test_dualcoop_head_param_loss_holds_the_label_tokens_back(clip_dir, pixels):
    def drift(**kwargs) -> float:
        torch.manual_seed(0)
        model = build(clip_dir, **DUAL, **kwargs)
        train_steps(model, pixels, dual_labels(), steps=4, lr=DUAL_LR)
        return model.label_token_penalty().item()

    free, held = drift(hierarchical_loss=False), drift(param_loss_weight=2000.0)
    assert 0 < held < 0.5 * free, (held, free)


def test_dualcoop_head_needs_distinct_contexts(clip_dir, pixels):
    """With the context frozen (LAMM alone), both prompts of a label start from the same words: refused when training,
    naming the fix. Frozen contexts taken from a trained DualCoOp work: only the label tokens train."""
    model = build(clip_dir, head="dualcoop", dense_features="patch").train()
    with pytest.raises(ValueError, match="equal negative and positive contexts.*train_context: true"):
        model(pixel_values=pixels, label_names=SEEN, labels=dual_labels())
    with torch.no_grad():
        model.prompt_learner.ctx[1].add_(0.05)  # as a trained DualCoOp's positive context
    model(pixel_values=pixels, label_names=SEEN, labels=dual_labels()).loss.backward()
    assert {name for name, p in model.named_parameters() if p.grad is not None} == {"prompt_learner.label_tokens"}
    assert model.prompt_learner.label_tokens.grad.abs().sum() > 0


def test_dualcoop_head_merge_keeps_old_scores_bit_for_bit(clip_dir, pixels):
    """Round 1 trains DualCoOp + LAMM on two labels; round 2 keeps round 1's contexts frozen and trains label tokens
    for three new labels; the merged model scores each label bit for bit as the round that trained it, label maps
    included."""
    old, new = ["cat", "red car"], ["sky", "boat", "tree"]
    first = build(clip_dir, seen=old, **DUAL)
    train_steps(first, pixels, one_hot([[0], [1], [0, 1]] * 2, 2), names=old, lr=DUAL_LR)
    second = build(clip_dir, seen=new, head="dualcoop", dense_features="patch")
    with torch.no_grad():
        second.prompt_learner.ctx.copy_(first.prompt_learner.ctx)
    train_steps(second, pixels, one_hot([[0], [1, 2], [2]] * 2, 3), names=new, lr=DUAL_LR)
    assert torch.equal(second.prompt_learner.ctx, first.prompt_learner.ctx)  # frozen in round 2
    merged = first.merge(second)
    assert merged.class_names == (*old, *new) and merged.config.head == "dualcoop"
    every = ["dog", *new, *old]

    def outputs(model, labels):
        model.set_label_cache(None)  # encode `labels` in one batch
        with torch.no_grad():
            return model.eval()(pixel_values=pixels, label_names=labels, return_label_maps=True)

    together, round1, round2 = outputs(merged, every), outputs(first, every), outputs(second, every)
    assert torch.equal(together.logits[:, 4:], round1.logits[:, 4:])
    assert torch.equal(together.logits[:, 1:4], round2.logits[:, 1:4])
    assert torch.equal(together.label_maps[:, 4:], round1.label_maps[:, 4:])
    assert torch.equal(together.label_maps[:, 1:4], round2.label_maps[:, 1:4])
    assert together.label_maps.shape[:2] == (6, 6)
    # add_labels: new labels start at their names (original name tokens in both prompts).
    grown = first.add_labels(["dog"])
    grown.set_label_cache(None)
    with torch.no_grad():
        embeddings, original = grown.encode_labels(["dog"]), grown.original_name_embeddings(["dog"])
        torch.testing.assert_close(embeddings, original, rtol=0, atol=1e-6)
        old_logits = first(pixel_values=pixels, label_names=old).logits
        assert torch.equal(grown(pixel_values=pixels, label_names=old).logits, old_logits)
    # Models whose dualcoop heads read other regions are not merged.
    other = build(clip_dir, seen=["dog"], head="dualcoop", dense_features="value")
    with torch.no_grad():
        other.prompt_learner.ctx.copy_(first.prompt_learner.ctx)
    with pytest.raises(ValueError, match="differ in dense_features"):
        first.merge(other)
