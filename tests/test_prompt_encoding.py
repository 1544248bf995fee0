"""Label prompts with the template's shared start encoded once equal CLIP's own text features."""

import pytest
import torch
from helpers import tiny_clip, tiny_tokenizer

from ovmlc.core.backbones import (
    encode_prompts_plain,
    encode_prompts_sharing_prefix,
    load_clip_backbone,
    pooled_positions,
    supports_prefix_sharing,
    tokenize_prompts,
)
from ovmlc.core.vocabulary import LabelVocabulary, load_templates

LABELS = ["cat", "red car", "a very long label name with many words in it", "x", "dog house", "traffic light"]


def _reference(clip, tokenizer, prompts):
    with torch.no_grad():
        return clip.get_text_features(**tokenize_prompts(tokenizer, prompts)).pooler_output


@pytest.mark.parametrize("template", ["a photo of a {}.", "{} in the scene", "there is a {} here", "{}"])
def test_shared_prefix_equals_get_text_features(template):
    tokenizer = tiny_tokenizer()
    clip = tiny_clip(tokenizer)
    assert supports_prefix_sharing(clip)
    prompts = [template.format(label) for label in LABELS]
    shared = encode_prompts_sharing_prefix(clip, tokenizer, prompts, batch_size=4)  # several batches, padded
    torch.testing.assert_close(shared, _reference(clip, tokenizer, prompts), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(encode_prompts_plain(clip, tokenizer, prompts, batch_size=4), shared, atol=1e-5, rtol=0)


def test_shared_prefix_with_the_shipped_bpe_clip_and_bf16():
    backbone = load_clip_backbone("synthetic")
    prompts = [template.format(label) for template in load_templates("qks-pool85")[:3] for label in LABELS]
    reference = _reference(backbone.model, backbone.tokenizer, prompts)
    for template_prompts, expected in zip(
        [prompts[i : i + len(LABELS)] for i in range(0, len(prompts), len(LABELS))], reference.split(len(LABELS))
    ):
        shared = encode_prompts_sharing_prefix(backbone.model, backbone.tokenizer, template_prompts)
        torch.testing.assert_close(shared, expected, atol=1e-5, rtol=1e-5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        half = encode_prompts_sharing_prefix(backbone.model, backbone.tokenizer, prompts[: len(LABELS)])
    torch.testing.assert_close(half, reference[: len(LABELS)], atol=0.1, rtol=0.05)


def test_vocabulary_encode_uses_prefix_sharing_and_keeps_the_embeddings():
    tokenizer = tiny_tokenizer()
    clip = tiny_clip(tokenizer)
    vocabulary = LabelVocabulary(LABELS, templates=["a photo of a {}.", "art of the {}."], pool="normalized")
    encoded = vocabulary.encode(clip, tokenizer)
    per_template = torch.stack(
        [_reference(clip, tokenizer, [t.format(label) for label in LABELS]) for t in vocabulary.templates], dim=1
    )  # [C, T, D]
    expected = torch.nn.functional.normalize(torch.nn.functional.normalize(per_template, dim=-1).mean(dim=1), dim=-1)
    torch.testing.assert_close(encoded, expected, atol=1e-5, rtol=1e-5)


def test_pooled_positions_follow_transformers_rules():
    assert pooled_positions([[5, 7, 9, 9], [5, 9, 9, 9]], eos_token_id=9) == [2, 1]  # first EOS (pad == EOS)
    assert pooled_positions([[0, 7, 49407, 3]], eos_token_id=2) == [2]  # legacy configs: the highest id
    with pytest.raises(ValueError, match="EOS"):
        pooled_positions([[5, 7]], eos_token_id=9)
