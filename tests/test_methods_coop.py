"""CoOp, DualCoOp and DualCoOp++ on a tiny CLIP: construction, what trains, the scoring heads against their formulas,
ASL on the 2-way softmax, the per-batch label subset, class-specific prompts, label maps, saving and loading."""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import random_images, save_hub_layout_clip

import ovmlc
from ovmlc import CoOpConfig, CoOpModel, DualCoOpConfig, DualCoOpModel, DualCoOpPPConfig, DualCoOpPPModel
from ovmlc.core.backbones import dense_image_tokens, image_features
from ovmlc.methods.coop.modeling_coop import coop_logits
from ovmlc.methods.dualcoop.modeling_dualcoop import NEGATIVE, POSITIVE, dualcoop_logits, region_aggregated_logits
from ovmlc.methods.dualcooppp.modeling_dualcooppp import EVIDENTIAL, winner_take_all

SEEN = ["cat", "dog", "red car", "tree"]
UNSEEN = ["sky", "boat"]
LABELS = SEEN + UNSEEN
SMALL = {"prompt_learning": {"n_ctx": 4}}
METHOD_CLASSES = {"coop": CoOpModel, "dualcoop": DualCoOpModel, "dualcooppp": DualCoOpPPModel}


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    return save_hub_layout_clip(tmp_path_factory.mktemp("clip"))


def build(clip_dir, method="dualcoop", **overrides):
    torch.manual_seed(0)
    model = METHOD_CLASSES[method].from_clip(str(clip_dir), **{**SMALL, **overrides})
    model.set_label_cache(None)
    return model


@pytest.fixture(scope="module")
def pixels(clip_dir):
    return build(clip_dir, "coop").preprocess(random_images(5, seed=3))  # [5, 3, 32, 32]


@pytest.fixture(scope="module")
def targets():
    generator = torch.Generator().manual_seed(1)
    labels = (torch.rand(5, len(LABELS), generator=generator) > 0.5).float()
    label_mask = torch.ones_like(labels)
    label_mask[0, 1] = label_mask[2, 4] = 0  # unannotated entries
    return labels, label_mask


# ---------------------------------------------------------------------- configuration
def test_config_defaults_follow_the_papers_code():
    config = DualCoOpConfig()
    assert (config.loss, config.asl_gamma_pos, config.asl_gamma_neg, config.asl_clip) == ("asl", 1.0, 2.0, 0.05)
    assert (config.asl_reduction, config.loss_weight, config.num_train_cls) == ("sum", 1.0, None)
    assert (config.region_logit_scale, config.aggregated_logit_scale) == (20.0, 5.0)
    assert (config.dense_features, config.include_global_token) == ("value", True)
    assert DualCoOpPPConfig().winner_take_all and CoOpConfig().train_logit_bias
    for config_class, bad, field in (
        (DualCoOpConfig, {"loss": "focal"}, "loss"),
        (DualCoOpConfig, {"asl_reduction": "mean"}, "asl_reduction"),
        (DualCoOpConfig, {"num_train_cls": 0}, "num_train_cls"),
        (DualCoOpConfig, {"dense_features": "pooled"}, "dense_features"),
        (DualCoOpConfig, {"prompt_learning": {"n_context": 4}}, "n_context"),
        (DualCoOpPPConfig, {"wta_temperature": 0.0}, "wta_temperature"),
        (CoOpConfig, {"loss_weight": 0.0}, "loss_weight"),
    ):
        with pytest.raises(ValueError, match=field):
            config_class(**bad)


@pytest.mark.parametrize("method, sets", [("coop", 1), ("dualcoop", 2), ("dualcooppp", 3)])
def test_prompt_sets_and_defaults(clip_dir, method, sets):
    model = build(clip_dir, method, prompt_learning=None)
    learner = model.prompt_learner
    assert learner.ctx.shape == (sets, 16, 32)  # CoOp's M = 16, random N(0, 0.02), shared by all labels
    assert learner.ctx.std().item() == pytest.approx(0.02, rel=0.3)
    assert model.config.prompt_learning["num_prompt_sets"] == sets
    with pytest.raises(ValueError, match="num_prompt_sets"):
        build(clip_dir, method, prompt_learning={"num_prompt_sets": sets + 1})


@pytest.mark.parametrize("method", ["coop", "dualcoop", "dualcooppp"])
def test_only_the_prompt_trains_and_the_backbone_stays_frozen(clip_dir, pixels, targets, method):
    model = build(clip_dir, method).train()
    trainable = {name for name, parameter in model.named_parameters() if parameter.requires_grad}
    expected = {"prompt_learner.ctx"} | ({"logit_head.bias"} if method == "coop" else set())
    assert trainable == expected
    assert model.trains_text_side and model.uses_frozen_image_features and not model.scores_depend_on_label_set
    frozen = {name: parameter.detach().clone() for name, parameter in model.named_parameters() if name not in expected}
    context = model.prompt_learner.ctx.detach().clone()
    optimizer = torch.optim.SGD(model.parameter_groups(0.1), lr=0.1)
    output = model(pixel_values=pixels, label_names=SEEN, labels=targets[0][:, :4], label_mask=targets[1][:, :4])
    output.loss.backward()
    assert {name for name, parameter in model.named_parameters() if parameter.grad is not None} == expected
    optimizer.step()
    assert not torch.equal(model.prompt_learner.ctx, context)
    for name, parameter in model.named_parameters():
        if name in frozen:
            assert torch.equal(parameter, frozen[name]), name
    assert not model.clip.training


# ---------------------------------------------------------------------- dense features
def test_dense_tokens_without_value_path_are_the_output_tokens(clip_dir, pixels):
    clip = build(clip_dir).clip
    with torch.no_grad():
        tokens = dense_image_tokens(clip, pixels, value_path=False)
        reference = image_features(clip, pixels)
    torch.testing.assert_close(tokens[:, 0], reference["image_embeds"])
    torch.testing.assert_close(tokens[:, 1:], reference["patch_embeds"])


def test_value_path_is_the_last_block_with_self_only_attention(clip_dir, pixels):
    """MaskCLIP's value path = the last block run with every token attending only to itself."""
    clip = build(clip_dir).clip
    vision = clip.vision_model
    with torch.no_grad():
        hidden = vision.pre_layrnorm(vision.embeddings(pixels))
        for layer in vision.encoder.layers[:-1]:
            hidden = layer(hidden, None)
        tokens = hidden.shape[1]
        self_only = torch.full((tokens, tokens), float("-inf")).fill_diagonal_(0.0)[None, None]  # [1, 1, T, T]
        hidden = vision.encoder.layers[-1](hidden, self_only.expand(hidden.shape[0], 1, -1, -1))
        expected = clip.visual_projection(vision.post_layernorm(hidden))
        value = dense_image_tokens(clip, pixels, value_path=True)
    torch.testing.assert_close(value, expected, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(value, dense_image_tokens(clip, pixels, value_path=False))


def test_other_input_sizes_interpolate_positions(clip_dir):
    clip = build(clip_dir).clip
    with torch.no_grad():
        tokens = dense_image_tokens(clip, torch.randn(2, 3, 64, 64))  # the tiny CLIP is 32 px, patch 8
    assert tokens.shape == (2, 1 + 8 * 8, 16)


# ---------------------------------------------------------------------- scoring heads
def naive_region_aggregation(regions, prompts, guide, scale_r=20.0, scale_a=5.0):
    """The code's formula with explicit per-region scores: 5 * sum_r softmax_r(20 cos(guide, r)) * 20 cos(k, r)."""
    regions, prompts, guide = F.normalize(regions, dim=-1), F.normalize(prompts, dim=-1), F.normalize(guide, dim=-1)
    similarity = scale_r * torch.einsum("brd,csd->bcsr", regions, prompts)  # [B, C, S, R]
    weights = (scale_r * torch.einsum("brd,cd->bcr", regions, guide)).softmax(dim=-1)  # [B, C, R]
    return scale_a * (weights[:, :, None] * similarity).sum(dim=-1), weights


def test_region_aggregation_equals_the_formula():
    generator = torch.Generator().manual_seed(0)
    regions, prompts = torch.randn(3, 7, 8, generator=generator), torch.randn(4, 2, 8, generator=generator)
    logits, weights = region_aggregated_logits(regions, prompts, prompts[:, POSITIVE])
    expected, expected_weights = naive_region_aggregation(regions, prompts, prompts[:, POSITIVE])
    torch.testing.assert_close(logits, expected, atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(weights, expected_weights)
    difference, pair, _ = dualcoop_logits(regions, prompts)
    assert pair.shape == (3, 2, 4)  # the code's [B, 2, C], index 0 = negative
    torch.testing.assert_close(pair[:, NEGATIVE], expected[..., NEGATIVE], atol=1e-4, rtol=1e-5)
    # sigmoid(pos - neg) is the 2-way softmax's positive probability.
    torch.testing.assert_close(torch.sigmoid(difference), pair.softmax(dim=1)[:, POSITIVE])


def test_dualcoop_scores_label_maps_and_global_token(clip_dir, pixels):
    model = build(clip_dir).eval()
    with torch.no_grad():
        features = model.encode_image_features(pixels)
        assert features["dense_embeds"].shape == (5, 17, 16)
        label_embeds = model.encode_labels(LABELS)  # [C, 2, D]
        assert label_embeds.shape == (len(LABELS), 2, 16)
        output = model.score(features, label_embeds, return_label_maps=True)
        expected, weights = naive_region_aggregation(features["dense_embeds"], label_embeds, label_embeds[:, POSITIVE])
        # Independent per label: scoring one label alone gives its column.
        alone = model.score(features, label_embeds[3:4]).logits
    torch.testing.assert_close(output.logits, expected[..., POSITIVE] - expected[..., NEGATIVE], atol=1e-4, rtol=1e-5)
    assert output.label_maps.shape == (5, len(LABELS), 4, 4)
    torch.testing.assert_close(output.label_maps.flatten(2).sum(-1) + weights[..., 0], torch.ones(5, len(LABELS)))
    torch.testing.assert_close(alone[:, 0], output.logits[:, 3])
    patches_only = build(clip_dir, include_global_token=False).eval()
    with torch.no_grad():
        maps = patches_only(pixel_values=pixels, label_names=LABELS, return_label_maps=True).label_maps
    torch.testing.assert_close(maps.flatten(2).sum(-1), torch.ones(5, len(LABELS)))


def test_patch_and_global_variants(clip_dir, pixels):
    model = build(clip_dir, dense_features="patch")
    with torch.no_grad():
        plain = dense_image_tokens(model.clip, pixels, False)
        torch.testing.assert_close(model.encode_image_features(pixels)["dense_embeds"], plain)
    # The paper's "global feature" ablation: one region, weight 1, no maps.
    model = build(clip_dir, dense_features="global").eval()
    with torch.no_grad():
        features = model.encode_image_features(pixels)
        label_embeds = model.encode_labels(LABELS)
        output = model.score(features, label_embeds, return_label_maps=True)
    torch.testing.assert_close(features["dense_embeds"], plain[:, :1])
    cosine = torch.einsum("bd,csd->bsc", F.normalize(plain[:, 0], dim=-1), F.normalize(label_embeds, dim=-1))
    torch.testing.assert_close(output.logits, 100 * (cosine[:, POSITIVE] - cosine[:, NEGATIVE]), atol=1e-4, rtol=1e-5)
    assert output.label_maps is None
    with pytest.raises(ValueError, match="include_global_token"):
        DualCoOpConfig(dense_features="global", include_global_token=False)


def test_coop_head_is_scaled_cosine_plus_bias(clip_dir, pixels):
    model = build(clip_dir, "coop", logit_bias=-3.0).eval()
    assert model.logit_head.bias.item() == -3.0
    with torch.no_grad():
        features = model.encode_image_features(pixels)
        label_embeds = model.encode_labels(LABELS)  # [C, D]
        logits = model(image_features=features, label_embeds=label_embeds).logits
        scale = model.clip.logit_scale.exp().clamp(max=100)
    cosine = F.normalize(features["image_embeds"], dim=-1) @ F.normalize(label_embeds, dim=-1).T
    torch.testing.assert_close(logits, scale * cosine - 3.0)
    torch.testing.assert_close(coop_logits(features["image_embeds"], label_embeds, 2.0), 2.0 * cosine)
    assert build(clip_dir, "coop").score(features, label_embeds, return_label_maps=True).label_maps is None
    groups = build(clip_dir, "coop", logit_bias_lr_multiplier=50.0).parameter_groups(0.002, 5e-4)
    assert [(group["lr"], group["weight_decay"]) for group in groups] == [(0.002, 5e-4), (0.1, 0.0)]
    frozen_bias = build(clip_dir, "coop", train_logit_bias=False)
    assert not frozen_bias.logit_head.bias.requires_grad and len(frozen_bias.parameter_groups(0.002)) == 1


def test_dualcooppp_weights_come_from_the_evidential_prompt(clip_dir, pixels):
    model = build(clip_dir, "dualcooppp").eval()
    with torch.no_grad():
        features = model.encode_image_features(pixels)
        label_embeds = model.encode_labels(LABELS)  # [C, 3, D]: evidential, positive, negative
        output = model.score(features, label_embeds, return_label_maps=True)
        pair, weights = naive_region_aggregation(
            features["dense_embeds"], label_embeds[:, [2, 1]], label_embeds[:, EVIDENTIAL]
        )
        # Other positive/negative prompts with the same evidential one: the maps do not move.
        shuffled = label_embeds.clone()
        shuffled[:, 1:] = shuffled[:, 1:].flip(0)
        moved = model.score(features, shuffled, return_label_maps=True)
    torch.testing.assert_close(output.logits, pair[..., 1] - pair[..., 0], atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(output.label_maps, weights[..., 1:].reshape(5, len(LABELS), 4, 4))
    torch.testing.assert_close(moved.label_maps, output.label_maps)
    assert not torch.allclose(moved.logits, output.logits)


def test_winner_take_all_only_in_training(clip_dir, pixels):
    guide = torch.randn(2, 3, 5)
    shares = (guide / 0.5).softmax(dim=1)  # each region's share among the 3 labels
    expected = (guide.exp() * shares) / (guide.exp() * shares).sum(-1, keepdim=True)
    torch.testing.assert_close(winner_take_all(guide, 0.5).softmax(-1), expected)

    model = build(clip_dir, "dualcooppp")
    features = model.encode_image_features(pixels)
    label_embeds = model.eval().encode_labels(LABELS)
    eval_logits = model.score(features, label_embeds).logits
    model.train()
    train_logits = model.score(features, label_embeds).logits  # labels compete: depends on the others
    assert not torch.allclose(train_logits, eval_logits)
    alone = model.score(features, label_embeds[:2]).logits
    assert not torch.allclose(alone, train_logits[:, :2])
    with torch.no_grad():  # no gradient: inference behaviour even in training mode
        torch.testing.assert_close(model.score(features, label_embeds).logits, eval_logits)
    plain = build(clip_dir, "dualcooppp", winner_take_all=False).train()
    torch.testing.assert_close(plain.score(features, label_embeds).logits, eval_logits)


# ---------------------------------------------------------------------- loss
def official_two_way_asl(pair_logits, labels, gamma_pos=1.0, gamma_neg=2.0, clip=0.05, eps=1e-6):
    """DualCoOp's ASL written from its description (docs/methods.md): softmax over (neg, pos), entries with label -1
    removed, p- shifted by the clip, log clamped at eps, focal weights without gradient, summed."""
    probabilities = pair_logits.softmax(dim=1)
    positive, negative = probabilities[:, 1].reshape(-1), probabilities[:, 0].reshape(-1)
    labels = labels.reshape(-1)
    keep = labels != -1
    positive, negative, labels = positive[keep], negative[keep], labels[keep]
    negative = (negative + clip).clamp(max=1)
    loss = labels * torch.log(positive.clamp(min=eps)) + (1 - labels) * torch.log(negative.clamp(min=eps))
    with torch.no_grad():
        pt = positive * labels + negative * (1 - labels)
        weight = torch.pow(1 - pt, gamma_pos * labels + gamma_neg * (1 - labels))
    return -(loss * weight).sum()


@pytest.mark.parametrize("method", ["dualcoop", "dualcooppp"])
def test_loss_is_asl_on_the_two_way_softmax_summed_and_weighted(clip_dir, pixels, targets, method):
    labels, label_mask = targets
    model = build(clip_dir, method, loss_weight=0.01).eval()
    features = model.encode_image_features(pixels)
    label_embeds = model.encode_labels(LABELS).detach().requires_grad_(True)
    output = model(image_features=features, label_embeds=label_embeds, labels=labels, label_mask=label_mask)
    pair = torch.stack([torch.zeros_like(output.logits), output.logits], dim=1)  # only pos - neg matters
    code_labels = torch.where(label_mask > 0, labels, torch.full_like(labels, -1.0))
    expected = 0.01 * official_two_way_asl(pair, code_labels)
    torch.testing.assert_close(output.loss, expected, atol=1e-5, rtol=1e-5)
    (gradient,) = torch.autograd.grad(output.loss, label_embeds, retain_graph=True)
    (expected_gradient,) = torch.autograd.grad(expected, label_embeds)
    torch.testing.assert_close(gradient, expected_gradient, atol=1e-6, rtol=1e-4)
    per_image = build(clip_dir, method, loss_weight=0.01, asl_reduction="batch_mean").eval()
    mean_loss = per_image(image_features=features, label_embeds=label_embeds, labels=labels, label_mask=label_mask)
    torch.testing.assert_close(mean_loss.loss * 5, output.loss)


def test_bce_option_and_unannotated_entries(clip_dir, pixels, targets):
    labels, label_mask = targets
    model = build(clip_dir, "coop", loss="bce").eval()
    features, label_embeds = model.encode_image_features(pixels), model.encode_labels(LABELS)
    flipped = labels.clone()
    flipped[0, 1] = 1 - flipped[0, 1]
    with torch.no_grad():
        a = model(image_features=features, label_embeds=label_embeds, labels=labels, label_mask=label_mask)
        b = model(image_features=features, label_embeds=label_embeds, labels=flipped, label_mask=label_mask)
    torch.testing.assert_close(a.loss, b.loss)
    keep = label_mask > 0
    expected = F.binary_cross_entropy_with_logits(a.logits[keep], labels[keep])
    torch.testing.assert_close(a.loss, expected)


def test_num_train_cls_trains_on_a_random_label_subset(clip_dir, pixels, targets):
    labels, label_mask = targets
    model = build(clip_dir, num_train_cls=3).train()
    features = model.encode_image_features(pixels)
    torch.manual_seed(7)
    output = model(image_features=features, label_names=LABELS, labels=labels, label_mask=label_mask)
    assert output.logits.shape == (5, 3)
    torch.manual_seed(7)
    columns = torch.randperm(len(LABELS))[:3].sort().values.tolist()  # the draw the model made
    subset = [LABELS[i] for i in columns]
    reference = model(
        image_features=features, label_names=subset, labels=labels[:, columns], label_mask=label_mask[:, columns]
    )
    torch.testing.assert_close(output.loss, reference.loss)
    torch.testing.assert_close(output.logits, reference.logits)
    model.eval()  # evaluation scores every label
    assert model(image_features=features, label_names=LABELS, labels=labels).logits.shape == (5, len(LABELS))


# ---------------------------------------------------------------------- class-specific prompts
def test_class_specific_prompts_for_seen_labels_and_the_unseen_fallback(clip_dir, pixels):
    model = build(clip_dir, seen_labels=SEEN, prompt_learning={"n_ctx": 4, "class_specific": True})
    assert model.prompt_learner.ctx_class.shape == (len(SEEN), 2, 4, 32)
    assert model.config.prompt_learning["class_names"] == SEEN
    assert {name for name, p in model.named_parameters() if p.requires_grad} == {"prompt_learner.ctx_class"}
    with torch.no_grad():
        scores = model.eval()(pixel_values=pixels, label_names=LABELS).logits  # unseen: the unified context
    assert scores.shape == (5, len(LABELS)) and bool(torch.isfinite(scores).all())
    strict = build(
        clip_dir, seen_labels=SEEN, prompt_learning={"n_ctx": 4, "class_specific": True, "csc_fallback": "error"}
    )
    with pytest.raises(ValueError, match="no class-specific context"):
        strict.eval()(pixel_values=pixels, label_names=LABELS)
    with pytest.raises(ValueError, match="seen_labels"):
        build(clip_dir, prompt_learning={"n_ctx": 4, "class_specific": True})


# ---------------------------------------------------------------------- saving, loading, inference API
@pytest.mark.parametrize("method", ["coop", "dualcoop", "dualcooppp"])
def test_save_load_round_trip_and_clean_weight_prefixes(clip_dir, pixels, tmp_path, method):
    model = build(clip_dir, method, seen_labels=SEEN)
    with torch.no_grad():
        model.prompt_learner.ctx.add_(0.5)  # trained-looking context
    model.config.label_names = LABELS
    model.save_pretrained(tmp_path)
    loaded = ovmlc.load_model(tmp_path)
    assert type(loaded) is type(model) and not loaded.training
    from safetensors import safe_open

    with safe_open(str(tmp_path / "model.safetensors"), framework="pt") as handle:
        own = {key for key in handle.keys() if not key.startswith("clip.")}
    assert own == {"prompt_learner.ctx"} | ({"logit_head.bias"} if method == "coop" else set())
    with torch.no_grad():
        expected = model.eval()(pixel_values=pixels, label_names=LABELS).logits
        torch.testing.assert_close(loaded(pixel_values=pixels, label_names=LABELS).logits, expected)
    predictions = loaded.predict(random_images(2, seed=4), LABELS, top_k=2)
    assert len(predictions) == 2 and all(len(row) == 2 for row in predictions)


def test_fresh_process_remote_code_load(clip_dir, pixels, tmp_path):
    model = build(clip_dir, "dualcooppp").eval()
    model.save_pretrained(tmp_path / "model")
    with torch.no_grad():
        expected = model(pixel_values=pixels, label_names=LABELS, return_label_maps=True)
    np.save(tmp_path / "pixels.npy", pixels.numpy())
    script = textwrap.dedent(
        f"""
        import sys, numpy as np, torch
        from transformers import AutoModel
        assert "ovmlc" not in sys.modules
        model = AutoModel.from_pretrained({str(tmp_path / "model")!r}, trust_remote_code=True)
        assert type(model).__name__ == "DualCoOpPPModel", type(model)
        pixels = torch.from_numpy(np.load({str(tmp_path / "pixels.npy")!r}))
        with torch.no_grad():
            output = model(pixel_values=pixels, label_names={LABELS!r}, return_label_maps=True)
        np.save({str(tmp_path / "logits.npy")!r}, output.logits.numpy())
        np.save({str(tmp_path / "maps.npy")!r}, output.label_maps.numpy())
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=os.environ.copy())
    assert result.returncode == 0, result.stderr[-3000:]
    np.testing.assert_allclose(np.load(tmp_path / "logits.npy"), expected.logits.numpy(), atol=1e-4)
    np.testing.assert_allclose(np.load(tmp_path / "maps.npy"), expected.label_maps.numpy(), atol=1e-5)


def test_scores_reject_features_and_embeddings_of_another_method(clip_dir, pixels):
    dualcoop = build(clip_dir)
    with pytest.raises(ValueError, match="dense_embeds"):
        dualcoop.score({"image_embeds": torch.zeros(1, 16)}, torch.zeros(2, 2, 16))
    with pytest.raises(ValueError, match=r"expected \[C, 2, D\]"):
        dualcoop.score(dualcoop.encode_image_features(pixels), torch.zeros(2, 16))
    with pytest.raises(ValueError, match="image_embeds"):
        build(clip_dir, "coop").score({"dense_embeds": torch.zeros(1, 17, 16)}, torch.zeros(2, 16))


@pytest.mark.parametrize(
    ("package", "own_paper"),
    [("coop", "Learning to Prompt"), ("dualcoop", "DualCoOp:"), ("dualcooppp", "DualCoOp++"), ("linear_probe", None)],
)
def test_method_card_and_example_config(clip_dir, pixels, package, own_paper):
    """One registered spec per method: its MethodCard (own paper first, BibTeX that names it, implementation notes)
    and tiny example settings that build and score."""
    from ovmlc.core.registry import MethodCard, get_method

    spec = get_method(package)
    card = spec.card
    assert isinstance(card, MethodCard) and card.summary and card.notes
    if own_paper is not None:
        assert card.papers[0].title.startswith(own_paper)
    for paper in card.papers:
        assert paper.bibtex.startswith("@") and paper.bibtex.count("{") == paper.bibtex.count("}")
        assert paper.title in paper.bibtex and " and " in paper.authors
    config_class, model_class = ovmlc.METHODS[package]
    assert (spec.config_class, spec.model_class) == (config_class, model_class)
    model = model_class.from_clip(str(clip_dir), **spec.example_config)
    model.set_label_cache(None)
    with torch.no_grad():
        assert model.eval()(pixel_values=pixels, label_names=LABELS).logits.shape == (5, len(LABELS))
    assert isinstance(model.config, config_class)
