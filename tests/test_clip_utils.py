import torch
from helpers import tiny_clip, tiny_tokenizer

from ovmlc.core.backbones import eos_positions, image_features, text_features_from_embeddings, tokenize_prompts


def test_text_forward_from_embeddings_equals_get_text_features():
    tokenizer = tiny_tokenizer()
    clip = tiny_clip(tokenizer)
    tokens = tokenize_prompts(tokenizer, ["a photo of a cat.", "there is a red car in the scene.", "dog"])
    with torch.no_grad():
        expected = clip.get_text_features(**tokens).pooler_output
        embeds = clip.text_model.embeddings.token_embedding(tokens["input_ids"])
        got = text_features_from_embeddings(
            clip, embeds, eos_positions(tokens["input_ids"], tokenizer.eos_token_id), tokens["attention_mask"]
        )
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_text_forward_from_embeddings_is_differentiable_wrt_context():
    tokenizer = tiny_tokenizer()
    clip = tiny_clip(tokenizer)
    tokens = tokenize_prompts(tokenizer, ["x cat.", "x dog."])
    embeds = clip.text_model.embeddings.token_embedding(tokens["input_ids"]).detach()
    context = torch.zeros(1, embeds.shape[-1], requires_grad=True)
    embeds = torch.cat([embeds[:, :1], embeds[:, 1:2] + context, embeds[:, 2:]], dim=1)
    out = text_features_from_embeddings(clip, embeds, eos_positions(tokens["input_ids"], tokenizer.eos_token_id))
    out.sum().backward()
    assert context.grad is not None and context.grad.abs().sum() > 0


def test_image_features_global_and_dense():
    clip = tiny_clip()
    pixel_values = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        features = image_features(clip, pixel_values)
        expected = clip.get_image_features(pixel_values=pixel_values).pooler_output
    torch.testing.assert_close(features["image_embeds"], expected, atol=1e-5, rtol=1e-5)
    assert features["patch_embeds"].shape == (2, 16, 16)  # (32 / 8)^2 patches, projection_dim 16
