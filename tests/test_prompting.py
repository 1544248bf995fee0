"""The shared prompt-learning mechanism (`ovmlc.prompting`) on a tiny CLIP: spliced prompts equal the literal prompts,
gradients, the label cache, class-specific fallbacks, learnable label tokens, span detection and its errors."""

import pytest
import torch
import torch.nn.functional as F
from helpers import save_hub_layout_clip

from ovmlc.core.backbones import tokenize_prompts
from ovmlc.core.modeling_base import OVMLCConfig, OVMLCPreTrainedModel
from ovmlc.core.outputs import MultiLabelOutput
from ovmlc.core.vocabulary import LabelVocabulary
from ovmlc.prompting import PromptLearningConfig, PromptLearningMixin

SEEN = ["cat", "red car", "dotted background"]  # one-word and multi-word names (the tiny tokenizer: one token a char)
UNSEEN = ["sky", "boat"]
NAMES = SEEN + UNSEEN


class PromptProbeConfig(OVMLCConfig):
    model_type = "ovmlc_prompt_probe"
    prompt_learning: dict | None = None


class PromptProbeModel(PromptLearningMixin, OVMLCPreTrainedModel):
    """The smallest method on the mechanism: frozen CLIP, learned prompts, cosine scores of the first prompt set."""

    config: PromptProbeConfig

    def __init__(self, config: PromptProbeConfig):
        super().__init__(config)
        resolved = self.build_prompt_learner(PromptLearningConfig.from_dict(config.prompt_learning))
        config.prompt_learning = resolved.to_dict()
        self.post_init()
        self.post_load()

    def post_load(self) -> None:
        self.requires_grad_(False)
        self.prompt_learner.requires_grad_(True)

    def score(self, image_features, label_embeds, return_label_maps=False) -> MultiLabelOutput:
        label_embeds = label_embeds[:, 0] if label_embeds.dim() == 3 else label_embeds  # [C, D]
        image_embeds = F.normalize(image_features["image_embeds"], dim=-1)
        return MultiLabelOutput(logits=10 * image_embeds @ F.normalize(label_embeds, dim=-1).T)


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    return save_hub_layout_clip(tmp_path_factory.mktemp("clip"))


def build(clip_dir, **prompt_learning) -> PromptProbeModel:
    model = PromptProbeModel.from_clip(str(clip_dir), prompt_learning=prompt_learning)
    model.set_label_cache(None)  # memory only
    return model


def literal_embeddings(model: PromptProbeModel, names: list[str]) -> torch.Tensor:
    """The frozen text tower's embeddings `[C, D]` of the literal prompt strings."""
    prompts = [model.prompt_layout().literal(name) for name in names]
    with torch.no_grad():
        return model.clip.get_text_features(**tokenize_prompts(model.text_tokenizer, prompts)).pooler_output


# ---------------------------------------------------------------------- config
def test_config_validation_names_the_field():
    for bad, field in (
        ({"class_token_position": "left"}, "class_token_position"),
        ({"ctx_init": "a {} b {}"}, "ctx_init"),
        ({"ctx_init": "a photo of a {}", "class_token_position": "front"}, "class_token_position"),
        ({"ctx_init_mode": "word_mean"}, "ctx_init_mode"),
        ({"ctx_random_init": True}, "ctx_random_init"),
        ({"ctx_init": "there is a {} here", "ctx_init_mode": "word_mean", "n_ctx": 3}, "n_ctx"),
        ({"num_prompt_sets": 0}, "num_prompt_sets"),
        ({"min_len": 0}, "min_len"),
        ({"csc_fallback": "zero"}, "csc_fallback"),
        ({"label_tokens": "trainable"}, "label_tokens"),
        ({"init_std": 0}, "init_std"),
        ({"ctx_init": "{}"}, "ctx_init"),
    ):
        with pytest.raises(ValueError, match=f"PromptLearningConfig.{field}"):
            PromptLearningConfig(**bad)
    with pytest.raises(ValueError, match="unknown key.*'n_context'.*valid keys"):
        PromptLearningConfig.from_dict({"n_context": 4})
    config = PromptLearningConfig(ctx_init="a photo of a", class_token_position="middle")
    assert config.context_words() == (["a", "photo"], ["of", "a"])
    assert config.literal_parts() == ("a photo ", " of a.")
    assert PromptLearningConfig.from_dict(config.to_dict()) == config


def test_n_ctx_is_resolved_from_the_words_and_checked(clip_dir):
    model = build(clip_dir, ctx_init="a photo")
    assert model.prompt_learner.ctx.shape == (1, 6, 32)  # the tiny tokenizer has one token per character
    assert model.config.prompt_learning["n_ctx"] == 6
    assert build(clip_dir).prompt_learner.ctx.shape == (1, 16, 32)  # CoOp's default M without ctx_init
    with pytest.raises(ValueError, match="n_ctx=2 but ctx_init 'a photo' has 6 tokens"):
        build(clip_dir, ctx_init="a photo", n_ctx=2)


# ---------------------------------------------------------------------- the spliced prompt is the literal prompt
@pytest.mark.parametrize("position", ["end", "middle", "front"])
@pytest.mark.parametrize("num_prompt_sets", [1, 2, 3])
def test_context_from_words_equals_the_literal_prompt(clip_dir, position, num_prompt_sets):
    model = build(clip_dir, ctx_init="a photo of a", class_token_position=position, num_prompt_sets=num_prompt_sets)
    literal = {"end": "a photo of a red car.", "middle": "a photo red car of a.", "front": "red car a photo of a."}
    assert model.prompt_layout().literal("red car") == literal[position]
    with torch.no_grad():
        prompts = model.encode_prompts(NAMES)  # [C, S, D]
    assert prompts.shape == (len(NAMES), num_prompt_sets, 16)
    expected = literal_embeddings(model, NAMES)
    for prompt_set in range(num_prompt_sets):
        torch.testing.assert_close(prompts[:, prompt_set], expected, atol=2e-6, rtol=1e-5)
    embeddings = model.eval().encode_labels(NAMES)
    assert embeddings.shape == ((len(NAMES), 16) if num_prompt_sets == 1 else (len(NAMES), num_prompt_sets, 16))


@pytest.mark.parametrize(
    "settings",
    [
        {"ctx_init": "there is a {} in the scene"},  # template: the class position from "{}"
        {"ctx_init": "a photo of a", "class_specific": True, "class_names": SEEN},
        {"ctx_init": "a photo of a", "class_specific": True, "class_names": SEEN, "csc_fallback": "mean"},
        {"ctx_init": "a photo of a", "label_tokens": "learnable", "min_len": 3, "class_names": SEEN},
        {
            "ctx_init": "a photo of a",
            "class_specific": True,
            "label_tokens": "learnable",
            "class_names": SEEN,
            "num_prompt_sets": 2,
            "class_token_position": "middle",
        },
    ],  # fmt: skip
)
def test_csc_templates_and_label_tokens_start_at_the_literal_prompt(clip_dir, settings):
    model = build(clip_dir, **settings)
    with torch.no_grad():
        prompts = model.encode_prompts(NAMES)
    for prompt_set in range(prompts.shape[1]):
        torch.testing.assert_close(prompts[:, prompt_set], literal_embeddings(model, NAMES), atol=2e-6, rtol=1e-5)


def test_word_mean_context_is_one_vector_per_word(clip_dir):
    model = build(clip_dir, ctx_init="there is a {} in the scene", ctx_init_mode="word_mean")
    layout = model.prompt_layout()
    assert (layout.n_before, layout.n_after) == (3, 3)
    table = model.clip.text_model.embeddings.token_embedding.weight
    there = model.text_tokenizer("there", add_special_tokens=False)["input_ids"]
    assert len(there) == 5
    torch.testing.assert_close(model.prompt_learner.ctx[0, 0], table[there].mean(dim=0))
    # Single-token words: the word-mean prompt is the literal prompt.
    single = build(clip_dir, ctx_init="a {} b", ctx_init_mode="word_mean")
    with torch.no_grad():
        torch.testing.assert_close(
            single.encode_prompts(NAMES)[:, 0], literal_embeddings(single, NAMES), atol=2e-6, rtol=1e-5
        )


def test_synthetic_backbone_with_real_bpe_merges():
    model = PromptProbeModel.from_clip(
        "synthetic", prompt_learning={"ctx_init": "a photo of a", "class_token_position": "middle"}
    )
    model.set_label_cache(None)
    names = ["red car", "dotted background", "grid background", "u.s."]
    tokens = model.tokenize_label_prompts(names)
    assert [tokens.name_token_ids(row) for row in range(3)] == [
        model.text_tokenizer(name, add_special_tokens=False)["input_ids"] for name in names[:3]
    ]
    with torch.no_grad():
        torch.testing.assert_close(
            model.encode_prompts(names)[:, 0], literal_embeddings(model, names), atol=2e-6, rtol=1e-5
        )


def test_random_context_layout_and_batching(clip_dir):
    model = build(clip_dir, n_ctx=4, class_token_position="middle", num_prompt_sets=2)
    assert model.prompt_learner.ctx.shape == (2, 4, 32)
    assert model.prompt_learner.ctx.std().item() == pytest.approx(0.02, rel=0.3)
    assert not torch.equal(model.prompt_learner.ctx[0], model.prompt_learner.ctx[1])  # each set its own context
    layout = model.prompt_layout()
    assert (layout.n_before, layout.n_after, layout.literal("cat")) == (2, 2, "cat.")
    with torch.no_grad():
        whole = model.encode_prompts(NAMES)
        model.prompt_batch_size = 2  # without gradients: batches of 2, sorted by length
        torch.testing.assert_close(model.encode_prompts(NAMES), whole, atol=1e-6, rtol=1e-5)


# ---------------------------------------------------------------------- training
def test_gradients_reach_exactly_the_context_and_label_tokens(clip_dir):
    model = build(clip_dir, ctx_init="a photo of a", class_specific=True, label_tokens="learnable", class_names=SEEN)
    model.train()
    embeddings = model.encode_labels(["cat", "red car", "sky"])  # two seen labels, one fallback
    assert embeddings.requires_grad
    embeddings.pow(2).sum().backward()
    with_grad = {name for name, parameter in model.named_parameters() if parameter.grad is not None}
    assert with_grad == {"prompt_learner.ctx_class", "prompt_learner.label_tokens"}
    assert {name for name, _ in model.named_buffers() if name.startswith("prompt_learner.")} == {
        "prompt_learner.ctx",
        "prompt_learner.label_tokens_init",
    }
    # Only the rows of the labels in the batch get gradient ("dotted background" was not asked for).
    rows_with_grad = model.prompt_learner.ctx_class.grad.flatten(1).abs().sum(dim=1) > 0
    assert rows_with_grad.tolist() == [True, True, False]
    assert (model.prompt_learner.label_tokens.grad.flatten(1).abs().sum(dim=1) > 0).tolist() == [True, True, False]
    assert all(key.startswith("prompt_learner.") for key in model.state_dict() if "ctx" in key or "label_tok" in key)


def test_cache_in_eval_none_in_training_and_never_stale(clip_dir, monkeypatch):
    model = build(clip_dir, ctx_init="a photo of a")
    calls = []
    original = PromptProbeModel.encode_prompts
    monkeypatch.setattr(
        PromptProbeModel,
        "encode_prompts",
        lambda self, names, **kw: calls.append(list(names)) or original(self, names, **kw),
    )
    model.eval()
    first = model.encode_labels(NAMES)
    assert not first.requires_grad and calls == [NAMES]
    again = model.encode_labels(NAMES[:2] + ["new label"])
    assert calls[-1] == ["new label"]  # only the missing label is encoded
    torch.testing.assert_close(again[:2], first[:2], rtol=0, atol=0)

    model.train()
    optimizer = torch.optim.SGD(model.prompt_learner.parameters(), lr=0.1)
    calls.clear()
    for _ in range(2):
        loss = model.encode_labels(NAMES).sum()  # no cache in training: encoded every step, with gradients
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert calls == [NAMES, NAMES]
    model.eval()
    after = model.encode_labels(NAMES)  # new weights → new fingerprint → re-encoded
    assert calls[-1] == NAMES and not torch.allclose(after, first, atol=1e-4)
    with torch.no_grad():
        torch.testing.assert_close(after, original(model, NAMES)[:, 0], atol=1e-6, rtol=1e-5)

    # An in-place edit in eval mode (no train()/eval() call) also changes the fingerprint.
    fingerprint = model.text_fingerprint()
    with torch.no_grad():
        model.prompt_learner.ctx.mul_(-1.0)  # (adding a constant would cancel in the LayerNorms)
    assert model.text_fingerprint() != fingerprint
    assert not torch.allclose(model.encode_labels(NAMES), after, atol=1e-4)


def test_label_cache_stores_every_prompt_set(clip_dir):
    model = build(clip_dir, n_ctx=2, num_prompt_sets=3).eval()
    vocabulary = LabelVocabulary(NAMES, pool="normalized")
    embeddings = model.encode_labels(vocabulary)
    assert embeddings.shape == (len(NAMES), 3, 16)
    torch.testing.assert_close(embeddings.norm(dim=-1), torch.ones(len(NAMES), 3))
    torch.testing.assert_close(model.encode_labels(vocabulary), embeddings, rtol=0, atol=0)


# ---------------------------------------------------------------------- class-specific context
def train_steps(model, names, steps=3, lr=0.5):
    model.train()
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=lr)
    for _ in range(steps):
        loss = model.encode_labels(names).pow(2).sum()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()


def test_csc_unseen_labels_fall_back_to_the_unified_context(clip_dir):
    model = train_steps(build(clip_dir, ctx_init="a photo of a", class_specific=True, class_names=SEEN), SEEN)
    assert model.learned_label_mask(NAMES).tolist() == [True, True, True, False, False]
    embeddings = model.encode_labels(NAMES)
    # Seen labels moved; unseen ones use the unified context, the frozen initial one: the zero-shot prompt.
    literal = literal_embeddings(model, NAMES)
    assert not torch.allclose(embeddings[:3], literal[:3], atol=1e-3)
    torch.testing.assert_close(embeddings[3:], literal[3:], atol=2e-6, rtol=1e-5)


def test_csc_mean_fallback_and_refusal(clip_dir):
    model = train_steps(build(clip_dir, n_ctx=3, class_specific=True, class_names=SEEN, csc_fallback="mean"), SEEN)
    learner = model.prompt_learner
    assert "ctx" not in dict(model.named_buffers(prefix="")) and not hasattr(learner, "ctx")
    context = learner.context_for(["sky", "cat"])
    torch.testing.assert_close(context[0], learner.ctx_class.mean(dim=0))
    torch.testing.assert_close(context[1], learner.ctx_class[0])
    refusing = build(clip_dir, n_ctx=3, class_specific=True, class_names=SEEN, csc_fallback="error")
    assert refusing.encode_labels(SEEN).shape == (3, 16)
    with pytest.raises(ValueError, match=r"labels \['sky', 'boat'\] have no class-specific context"):
        refusing.encode_labels(NAMES)
    with pytest.raises(ValueError, match="class_names"):
        build(clip_dir, class_specific=True)  # no class names, no seen_labels


def test_class_names_default_to_the_seen_labels(clip_dir):
    model = PromptProbeModel.from_clip(
        str(clip_dir), seen_labels=SEEN, prompt_learning={"n_ctx": 2, "class_specific": True}
    )
    assert model.prompt_learner.class_names == tuple(SEEN)
    assert model.config.prompt_learning["class_names"] == SEEN


# ---------------------------------------------------------------------- LAMM label tokens
def test_label_tokens_train_their_frozen_copy_stays(clip_dir):
    model = build(clip_dir, ctx_init="a photo of a", label_tokens="learnable", min_len=2, class_names=SEEN)
    learner = model.prompt_learner
    table = model.clip.text_model.embeddings.token_embedding.weight
    red = model.tokenize_label_prompts(["red car"]).name_token_ids(0)
    torch.testing.assert_close(learner.label_tokens[1], table[red[:2]])
    assert model.label_token_penalty().item() == 0.0
    model.prompt_learner.ctx.requires_grad_(False)  # "LAMM alone": only the label tokens train
    initial = learner.label_tokens_init.clone()
    original_before = model.original_name_embeddings(NAMES).detach()
    train_steps(model, SEEN)
    assert torch.equal(learner.label_tokens_init, initial)
    assert not torch.allclose(learner.label_tokens, initial)
    torch.testing.assert_close(model.label_token_penalty(), (learner.label_tokens - initial).pow(2).sum())
    # Original names with the (frozen) context: unchanged; unseen labels keep their name embeddings.
    with torch.no_grad():
        torch.testing.assert_close(model.original_name_embeddings(NAMES), original_before, rtol=0, atol=0)
        embeddings = model.encode_labels(NAMES)
    torch.testing.assert_close(embeddings[3:], original_before[3:, 0], atol=1e-6, rtol=1e-5)
    assert not torch.allclose(embeddings[:3], original_before[:3, 0], atol=1e-3)


def test_label_tokens_random_init_and_short_names(clip_dir):
    model = build(clip_dir, n_ctx=2, label_tokens="learnable", label_tokens_random_init=True, class_names=SEEN)
    torch.testing.assert_close(model.prompt_learner.label_tokens_init, model.prompt_learner.label_tokens)
    assert model.prompt_learner.label_tokens.std().item() == pytest.approx(0.02, rel=0.3)
    with pytest.raises(ValueError, match="min_len=4"):
        build(clip_dir, n_ctx=2, label_tokens="learnable", min_len=4, class_names=["cat", "dog"])


# ---------------------------------------------------------------------- saving
def test_save_load_round_trip_keeps_every_learner_tensor(clip_dir, tmp_path):
    model = build(
        clip_dir, ctx_init="a photo of a", class_specific=True, label_tokens="learnable", class_names=SEEN,
        num_prompt_sets=2,
    )  # fmt: skip
    train_steps(model, SEEN)
    model.save_pretrained(tmp_path)
    loaded = PromptProbeModel.from_pretrained(tmp_path)
    loaded.set_label_cache(None)
    for key, value in model.prompt_learner.state_dict().items():
        torch.testing.assert_close(loaded.prompt_learner.state_dict()[key], value, rtol=0, atol=0)
    assert loaded.config.prompt_learning == model.config.prompt_learning
    with torch.no_grad():
        torch.testing.assert_close(loaded.encode_labels(NAMES), model.encode_labels(NAMES), rtol=0, atol=0)


# ---------------------------------------------------------------------- span detection errors
def test_a_label_merging_with_the_template_is_a_clear_error(clip_dir):
    model = build(clip_dir, ctx_init="a photo of a{} here")  # no space: "a" and the label form one word
    with pytest.raises(ValueError, match="merges the label with the text around it.*'cat'"):
        model.encode_labels(["cat"])


def test_a_prompt_longer_than_the_text_tower_is_a_clear_error(clip_dir):
    model = build(clip_dir, n_ctx=8)
    long_label = "x" * 70  # one token per character: 1 + 8 + 70 + 1 + 1 > 77
    with pytest.raises(ValueError, match=r"longer than the text tower's 77 tokens.*'x{70}' \(81\)"):
        model.encode_labels([long_label, "cat"])
