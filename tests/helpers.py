"""Tiny CLIPs, tokenizers and Hub-layout folders built in code (no downloads)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image
from transformers import CLIPConfig, CLIPImageProcessorPil, CLIPModel, CLIPTokenizer


def _bytes_to_unicode() -> list[str]:
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), 256))
    codes, extra = printable[:], 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            codes.append(256 + extra)
            extra += 1
    return [chr(code) for code in codes]


def tiny_tokenizer() -> CLIPTokenizer:
    """Byte-level CLIP tokenizer (514 tokens, no merges): any text tokenizes, one token per character."""
    alphabet = _bytes_to_unicode()
    tokens = alphabet + [char + "</w>" for char in alphabet] + ["<|startoftext|>", "<|endoftext|>"]
    return CLIPTokenizer(vocab={token: index for index, token in enumerate(tokens)}, merges=[], model_max_length=77)


def tiny_clip(tokenizer: CLIPTokenizer | None = None, seed: int = 0, image_size: int = 32) -> CLIPModel:
    tokenizer = tokenizer or tiny_tokenizer()
    torch.manual_seed(seed)
    config = CLIPConfig(
        text_config=dict(
            vocab_size=len(tokenizer),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=77,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        ),
        vision_config=dict(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            image_size=image_size,
            patch_size=8,
        ),
        projection_dim=16,
    )
    return CLIPModel(config).eval()


def tiny_image_processor(image_size: int = 32) -> CLIPImageProcessorPil:
    return CLIPImageProcessorPil(
        size={"shortest_edge": image_size},
        crop_size={"height": image_size, "width": image_size},
        do_center_crop=True,
        resample=3,
        image_mean=[0.48145466, 0.4578275, 0.40821073],
        image_std=[0.26862954, 0.26130258, 0.27577711],
    )


def save_hub_layout_clip(directory: Path, seed: int = 0) -> Path:
    """A folder laid out like `openai/clip-vit-base-patch16` on the Hub, holding a tiny CLIP."""
    directory = Path(directory)
    tokenizer = tiny_tokenizer()
    tiny_clip(tokenizer, seed=seed).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    tiny_image_processor().save_pretrained(directory)
    return directory


def random_images(count: int, size: int = 40, seed: int = 0) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 255, (size, size + 8, 3), dtype=np.uint8)) for _ in range(count)]


# Python source that makes `import ovmlc` fail in a fresh interpreter (prepend it to a `python -c` script), as for a
# Hub user who only has transformers: models must then load from their folder's own flat code.
BLOCK_OVMLC = """
import importlib.abc as _abc, sys as _sys

class _BlockOVMLC(_abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "ovmlc" or name.startswith("ovmlc."):
            raise ImportError(f"ovmlc is not installed here ({name})")

_sys.meta_path.insert(0, _BlockOVMLC())
"""


def b16_shaped_clip(seed: int = 0, num_layers: int = 1) -> tuple[CLIPModel, CLIPTokenizer]:
    """A CLIP with ViT-B/16's widths (text 512, vision 768, patch 16 at 224 px, projection 512) but `num_layers` layers
    per tower and the byte tokenizer: what sizes per-method weights like the real B/16, at a fraction of its 150 M
    parameters."""
    tokenizer = tiny_tokenizer()
    torch.manual_seed(seed)
    config = CLIPConfig(
        text_config=dict(
            vocab_size=len(tokenizer),
            hidden_size=512,
            intermediate_size=2048,
            num_hidden_layers=num_layers,
            num_attention_heads=8,
            max_position_embeddings=77,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        ),
        vision_config=dict(
            hidden_size=768,
            intermediate_size=3072,
            num_hidden_layers=num_layers,
            num_attention_heads=12,
            image_size=224,
            patch_size=16,
        ),
        projection_dim=512,
    )
    return CLIPModel(config).eval(), tokenizer


def tiny_siglip_tokenizer():
    """A SigLIP 2-style tokenizer built in code: `GemmaTokenizer` (what the SigLIP 2 FixRes repos ship, saved as
    tokenizer.json + tokenizer_config.json naming `GemmaTokenizer`), without BOS and with EOS as those repos are set
    up, over a character vocabulary (printable ASCII, "▁" and byte fallback) without merges: any text tokenizes, one
    token per character. It does not lowercase by itself: ovmlc installs SigLIP's canonicalisation."""
    import string

    from transformers import GemmaTokenizer

    vocab = {"<pad>": 0, "<eos>": 1, "<bos>": 2, "<unk>": 3, "<mask>": 4}
    for byte in range(256):
        vocab[f"<0x{byte:02X}>"] = len(vocab)
    for char in ["▁", *(c for c in string.printable if not c.isspace())]:
        vocab.setdefault(char, len(vocab))
    return GemmaTokenizer(vocab=vocab, merges=[], add_bos_token=False, add_eos_token=True, model_max_length=64)


def tiny_siglip(tokenizer=None, seed: int = 0, image_size: int = 32, max_positions: int = 64):
    """A 2-layer SigLIP (`SiglipModel`, widths 32, patch 8 at 32 px: a 4x4 grid, 64 text positions) with a non-zero
    learned scale and bias, as a trained checkpoint has."""
    from transformers import SiglipConfig, SiglipModel

    tokenizer = tokenizer or tiny_siglip_tokenizer()
    torch.manual_seed(seed)
    config = SiglipConfig(
        text_config=dict(
            vocab_size=len(tokenizer),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=max_positions,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
            bos_token_id=tokenizer.bos_token_id,
        ),
        vision_config=dict(
            hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, image_size=image_size,
            patch_size=8,
        ),
    )  # fmt: skip
    model = SiglipModel(config).eval()
    with torch.no_grad():
        model.logit_scale.fill_(2.3)  # exp: ~10
        model.logit_bias.fill_(-1.5)
    return model


def tiny_siglip_image_processor(image_size: int = 32):
    from transformers import SiglipImageProcessorPil

    return SiglipImageProcessorPil(size={"height": image_size, "width": image_size})


def save_hub_layout_siglip(directory: Path, seed: int = 0) -> Path:
    """A folder laid out like `google/siglip2-base-patch16-224` on the Hub (config.json `model_type: siglip`,
    model.safetensors, tokenizer.json + tokenizer_config.json of a Gemma tokenizer, preprocessor_config.json of a
    `SiglipImageProcessor`), holding a tiny SigLIP."""
    directory = Path(directory)
    tokenizer = tiny_siglip_tokenizer()
    tiny_siglip(tokenizer, seed=seed).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    tiny_siglip_image_processor().save_pretrained(directory)
    return directory
