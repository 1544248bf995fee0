import pytest
import torch
from helpers import tiny_clip, tiny_tokenizer

from ovmlc import LabelVocabulary, list_templates, load_templates
from ovmlc.core.backbones import tokenize_prompts
from ovmlc.core.label_cache import LabelEmbeddingCache
from ovmlc.core.vocabulary import validate_labels


@pytest.fixture(scope="module")
def clip_and_tokenizer():
    tokenizer = tiny_tokenizer()
    return tiny_clip(tokenizer), tokenizer


def test_shipped_templates():
    assert {"single", "imagenet80", "scene5", "qks-pool85", "mkt"} <= set(list_templates())
    assert len(load_templates("imagenet80")) == 80
    assert len(load_templates("scene5")) == 5
    assert load_templates("qks-pool85") == load_templates("imagenet80") + load_templates("scene5")
    assert load_templates("a {} here") == ["a {} here"]


@pytest.mark.parametrize(
    "labels, message",
    [
        ([], "no labels"),
        (["cat", " Cat "], "duplicate labels"),
        (["cat", "big  dog", "Big dog"], "'Big dog' \\(same as 'big dog'\\)"),
        (["cat", "  "], "empty label names at positions \\[1\\]"),
        (["cat", 3, None], "offenders \\(index, value\\): \\[\\(1, 3\\), \\(2, None\\)\\]"),
        ("cat,dog", "single string"),
    ],
)
def test_label_validation_names_the_offenders(labels, message):
    with pytest.raises(ValueError, match=message):
        validate_labels(labels)


def test_bad_templates():
    with pytest.raises(ValueError, match="exactly one"):
        load_templates(["no placeholder"])
    with pytest.raises(ValueError, match="unknown prompt templates"):
        load_templates("not-a-template-name")


def test_vocabulary_basics():
    vocab = LabelVocabulary(["cat", "red  car"], templates="scene5")
    assert vocab.names == ["cat", "red car"] and len(vocab) == 2
    assert "Red Car" in vocab and vocab.index("CAT") == 0
    assert vocab.prompts("cat")[0] == "there is a cat in the scene."
    bigger = vocab.add(["dog"])
    assert bigger.names == ["cat", "red car", "dog"] and bigger.templates == vocab.templates
    with pytest.raises(ValueError, match="duplicate"):
        vocab.add(["Cat"])


def test_padding_to_longest_matches_padding_to_77(clip_and_tokenizer):
    clip, tokenizer = clip_and_tokenizer
    prompts = ["a photo of a cat.", "a photo of a very large red car on the road."]
    short = tokenize_prompts(tokenizer, prompts)
    full = tokenizer(prompts, padding="max_length", max_length=77, return_tensors="pt")
    assert short["input_ids"].shape[1] < 77
    with torch.no_grad():
        a = clip.get_text_features(**short).pooler_output
        b = clip.get_text_features(**full).pooler_output
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_encode_pools_templates_raw_and_normalized(clip_and_tokenizer):
    clip, tokenizer = clip_and_tokenizer
    raw = LabelVocabulary(["cat", "dog"], templates="scene5", pool="raw").encode(clip, tokenizer, fingerprint="f")
    tokens = tokenize_prompts(tokenizer, [t.format("dog") for t in load_templates("scene5")])
    with torch.no_grad():
        per_template = clip.get_text_features(**tokens).pooler_output
    torch.testing.assert_close(raw[1], per_template.mean(0), atol=1e-5, rtol=1e-5)
    normalized = LabelVocabulary(["cat", "dog"], "scene5", pool="normalized").encode(clip, tokenizer, fingerprint="f")
    expected = torch.nn.functional.normalize(torch.nn.functional.normalize(per_template, dim=-1).mean(0), dim=0)
    torch.testing.assert_close(normalized[1], expected, atol=1e-5, rtol=1e-5)


def test_cache_encodes_only_new_labels_and_persists(clip_and_tokenizer, tmp_path, monkeypatch):
    clip, tokenizer = clip_and_tokenizer
    encoded: list[str] = []
    original = LabelVocabulary._encode_labels

    def counting(self, clip, tokenizer, labels, *args):
        encoded.extend(labels)
        return original(self, clip, tokenizer, labels, *args)

    monkeypatch.setattr(LabelVocabulary, "_encode_labels", counting)
    cache = LabelEmbeddingCache(tmp_path)
    vocab = LabelVocabulary(["cat", "dog"])
    first = vocab.encode(clip, tokenizer, cache=cache, fingerprint="abc")
    assert encoded == ["cat", "dog"]
    second = vocab.add(["bird"]).encode(clip, tokenizer, cache=cache, fingerprint="abc")
    assert encoded == ["cat", "dog", "bird"]  # only the new label was encoded
    torch.testing.assert_close(second[:2], first)
    # A fresh cache over the same directory reads the safetensors file instead of encoding.
    again = LabelVocabulary(["bird", "cat"]).encode(
        clip, tokenizer, cache=LabelEmbeddingCache(tmp_path), fingerprint="abc"
    )
    assert encoded == ["cat", "dog", "bird"]
    torch.testing.assert_close(again, second[[2, 0]])
    assert len(list(tmp_path.glob("abc-*.safetensors"))) == 1
    # Other weights (fingerprint) or other templates never reuse these embeddings.
    LabelVocabulary(["cat"]).encode(clip, tokenizer, cache=cache, fingerprint="other")
    LabelVocabulary(["cat"], templates="scene5").encode(clip, tokenizer, cache=cache, fingerprint="abc")
    assert encoded == ["cat", "dog", "bird", "cat", "cat"]


def test_bf16_encoding_close_to_fp32(clip_and_tokenizer):
    clip, tokenizer = clip_and_tokenizer
    vocab = LabelVocabulary(["cat", "dog", "red car"])
    fp32 = vocab.encode(clip, tokenizer, fingerprint="x")
    bf16 = vocab.encode(clip, tokenizer, cache=LabelEmbeddingCache(), fingerprint="y", dtype=torch.bfloat16)
    assert torch.nn.functional.cosine_similarity(fp32, bf16).min() > 0.99


def test_memory_only_capped_cache(clip_and_tokenizer, tmp_path):
    clip, tokenizer = clip_and_tokenizer
    cache = LabelEmbeddingCache(None, max_labels=3)
    first = LabelVocabulary(["cat", "dog"]).encode(clip, tokenizer, cache=cache, fingerprint="m")
    both = LabelVocabulary(["bird", "tree", "cat"]).encode(clip, tokenizer, cache=cache, fingerprint="m")
    torch.testing.assert_close(both[2], first[0])
    assert cache.labels("m", LabelVocabulary(["x"]).templates_key) == ["bird", "tree", "cat"]  # "dog" dropped (LRU)
    assert not list(tmp_path.iterdir())


def rows(names, dim=2):
    """Distinct fake embeddings `[M, dim]` (a label's row depends only on its name)."""
    return torch.stack([torch.full((dim,), float(sum(map(ord, name)))) for name in names])


def test_label_cache_lru_order_and_cap():
    cache = LabelEmbeddingCache(None, max_labels=4)
    calls = []

    def encode(names):
        calls.append(list(names))
        return rows(names)

    torch.testing.assert_close(cache.lookup("f", "t", ["a", "b", "c"], encode), rows(["a", "b", "c"]))
    cache.lookup("f", "t", ["a"], encode)  # a hit: "a" becomes the most recently used
    cache.lookup("f", "t", ["d", "e"], encode)  # 5 labels > cap 4: the least recently used ("b") goes
    assert cache.labels("f", "t") == ["c", "a", "d", "e"]
    cache.lookup("g", "t", ["a"], encode)  # the cap counts every table together: "c" goes
    assert cache.labels("f", "t") == ["a", "d", "e"] and cache.labels("g", "t") == ["a"]
    assert len(cache) == 4
    assert calls == [["a", "b", "c"], ["d", "e"], ["a"]]
    assert (cache.hits, cache.encoded, cache.evicted) == (1, 6, 2)
    # Repeated names are encoded once; an evicted label is encoded again when asked for.
    out = cache.lookup("f", "t", ["b", "b", "a"], encode)
    torch.testing.assert_close(out, rows(["b", "b", "a"]))
    assert calls[-1] == ["b"] and cache.last_lookup_encoded == 1


def test_label_cache_vocabulary_larger_than_cap_still_correct():
    cache = LabelEmbeddingCache(None, max_labels=2)
    with pytest.warns(UserWarning, match="exceeds the cache's cap of 2"):
        out = cache.lookup("f", "t", ["a", "b", "c"], rows)
    torch.testing.assert_close(out, rows(["a", "b", "c"]))
    assert cache.labels("f", "t") == ["b", "c"]


def test_label_cache_persists_atomically_and_reloads_evicted_tables(tmp_path):
    cache = LabelEmbeddingCache(tmp_path, max_labels=3)
    cache.lookup("f", "t", ["a", "b"], rows)
    assert [path.name for path in tmp_path.iterdir()] == ["f-t.safetensors"]  # no temporary file left behind
    cache.lookup("g", "t", ["x", "y", "z"], rows)  # evicts table f from memory (the file stays)
    assert cache.labels("f", "t") == []
    encoded = []
    again = cache.lookup("f", "t", ["a"], lambda names: encoded.append(names) or rows(names))
    assert encoded == [] and torch.equal(again, rows(["a"]))  # read back from the file, not re-encoded
    with pytest.raises(ValueError, match="max_labels must be >= 1"):
        LabelEmbeddingCache(None, max_labels=0)
