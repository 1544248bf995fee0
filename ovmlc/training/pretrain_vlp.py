"""Contrastive vision-language pretraining of a small `CLIPModel` or `SiglipModel` on a synthetic world (shapes-64 or
shapes-clutter).

This is the engine of `ovmlc pretrain-vlp`. It builds, from nothing and offline:

* a CLIP-style BPE tokenizer trained on the world's caption words (one token per word), saved as a `CLIPTokenizer`
  (for SigLIP: with SigLIP's text canonicalisation in its normalizer, saved as the generic `tokenizers` backend);
* a `CLIPImageProcessorPil` (64x64, no crop, mean 0.5, std 0.25) or a `SiglipImageProcessorPil` (64x64 squash, mean
  and std 0.5, SigLIP's convention);
* a small model trained in two stages (see `docs/synthetic.md`):
  0. text warm-up: the text tower learns to predict the bag of words of a caption from its embedding (a random text
     tower embeds prompts that differ in one word almost identically, which starves the image tower of gradient);
  1. the contrastive stage on (image, fresh caption) pairs, with the text tower frozen for the first steps, then
     joint: CLIP's InfoNCE, or SigLIP's pairwise sigmoid loss with its learned bias (`backbone_family: siglip`;
     captions padded to the fixed context and pooled at its last position, as SigLIP does).

The output is a folder laid out like a Hub CLIP repo (`openai/clip-vit-base-patch16`) or SigLIP repo
(`google/siglip-base-patch16-224`) plus a model card with the recipe and the measured zero-shot quality.
"""

from __future__ import annotations

import json
import math
import os
import platform
import shutil
import sys
import textwrap
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
import yaml
from tqdm.auto import tqdm

from ovmlc.core.backbones import BACKBONE_FAMILIES, SIGLIP_FAMILY, backbone_family
from ovmlc.data.pretraining_worlds import CaptionSource, PretrainingWorld, get_pretraining_world
from ovmlc.data.synthetic import (
    BACKGROUNDS,
    COLOUR_NAMES,
    SHAPE_NAMES,
    background_label,
    caption_words,
)
from ovmlc.training import release_accelerator_state
from ovmlc.yaml_schema import (
    Bounds,
    Check,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    SchemaError,
    Seed,
    UnitFloat,
    from_data,
    load,
    to_data,
)

PIXEL_MEAN = 0.5
PIXEL_STD = 0.25  # CLIP folders; SigLIP folders use SigLIP's own 0.5
SIGLIP_PIXEL_STD = 0.5
# SigLIP's initial temperature and bias (Zhai et al. 2023: t' = log 10, b = -10: the many negative pairs start near 0)
SIGLIP_INIT_LOGIT_SCALE = 10.0
SIGLIP_INIT_LOGIT_BIAS = -10.0
BOS_TOKEN = "<|startoftext|>"
EOS_TOKEN = "<|endoftext|>"
EVAL_TEMPLATE = "a photo of a {}."
# The CLIP tokenizer's pre-tokenisation pattern (transformers/models/clip/tokenization_clip.py).
CLIP_SPLIT_PATTERN = r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""


class PretrainConfigError(SchemaError):
    """A pretraining recipe is invalid (a `ValueError`); the message names the file and the key."""


Beta = Annotated[float, Bounds(ge=0, lt=1)]
PatchSize = Annotated[int, Check(lambda size: size >= 1 and 64 % size == 0, "a divisor of the 64-px image size")]


@dataclass
class VLPPretrainConfig:
    """Every knob of a pretraining recipe (`hub_configs/clip-synthetic*.yaml`, `hub_configs/siglip-synthetic.yaml`)."""

    output_dir: str = "ovmlc/assets/clip-synthetic"
    seed: Seed = 0
    # the model built: a CLIPModel (InfoNCE) or a SiglipModel (pairwise sigmoid loss, attention-pooling image head)
    backbone_family: Literal["clip", "siglip"] = "clip"
    # world
    num_images: PositiveInt = 50_000
    labelset: str | None = None  # path of the label set JSON; None = the world's own (ovmlc/labelsets/<world>.json)
    world: Literal["shapes-64", "shapes-clutter"] = "shapes-64"  # ovmlc.data.synthetic / ovmlc.data.shapes_clutter
    # world-specific knobs, checked against the world's options schema (`ovmlc.data.pretraining_worlds`)
    world_options: dict[str, Any] = field(default_factory=dict)
    short_caption_prob: UnitFloat = 0.3  # shapes-64 only (shapes-clutter: world_options)
    num_workers: NonNegativeInt | None = None
    # tokenizer
    tokenizer_vocab_size: PositiveInt = 1000
    tokenizer_extra_words: list[str] = field(default_factory=list)
    max_text_length: PositiveInt = 32
    # model
    vision_hidden_size: PositiveInt = 128
    vision_layers: PositiveInt = 4
    vision_heads: PositiveInt = 4
    text_hidden_size: PositiveInt = 64
    text_layers: PositiveInt = 2
    text_heads: PositiveInt = 4
    projection_dim: PositiveInt = 128
    patch_size: PatchSize = 16
    # stage 0: text bag-of-words warm-up
    text_warmup_steps: NonNegativeInt = 600
    text_warmup_lr: PositiveFloat = 2e-3
    text_warmup_scale: PositiveFloat = 10.0
    # stage 1: contrastive
    clip_steps: NonNegativeInt = 2500
    batch_size: PositiveInt = 256
    learning_rate: PositiveFloat = 2e-3
    weight_decay: NonNegativeFloat = 0.1
    adam_beta1: Beta = 0.9
    adam_beta2: Beta = 0.98
    lr_warmup_ratio: UnitFloat = 0.05
    max_grad_norm: PositiveFloat = 1.0
    max_logit_scale: PositiveFloat = 100.0
    text_freeze_steps: NonNegativeInt = 500
    mixed_precision: Literal["bf16", "no"] = "bf16"
    # torch intra-op threads (None = torch's default); 1 is far faster on a busy machine
    num_threads: PositiveInt | None = None
    # evaluation
    eval_num_images: PositiveInt = 2000
    eval_seed: Seed = 0
    eval_every: NonNegativeInt = 500  # quick evaluation every N CLIP steps (0 = never)
    eval_quick_images: PositiveInt = 500
    # also save the folder at every quick evaluation after this many steps (0 = only at the end)
    save_every: NonNegativeInt = 0
    evaluate_random_init: bool = True

    def __post_init__(self) -> None:
        for tower in ("vision", "text"):
            hidden, heads = getattr(self, f"{tower}_hidden_size"), getattr(self, f"{tower}_heads")
            if isinstance(hidden, int) and isinstance(heads, int) and heads >= 1 and hidden % heads:
                raise SchemaError(
                    f"expected a divisor of {tower}_hidden_size {hidden}, got {heads}", key=f"{tower}_heads"
                )
        if self.backbone_family == "siglip" and self.projection_dim != self.vision_hidden_size:
            raise SchemaError(
                f"a SigLIP's joint space is its vision width (its pooling head has no projection): expected "
                f"vision_hidden_size {self.vision_hidden_size}, got {self.projection_dim}",
                key="projection_dim",
            )

    @classmethod
    def from_yaml(cls, path: str | os.PathLike) -> VLPPretrainConfig:
        """Read and validate a pretraining recipe; `PretrainConfigError` names the file and the key."""
        config = load(cls, path, error=PretrainConfigError)
        config.validate(path)
        return config

    def validate(self, source: str | os.PathLike = "<config>") -> None:
        """Check every field (also after changes made in code), the world's options and that the label set loads."""
        from_data(type(self), self.to_dict(), source=source, error=PretrainConfigError)
        try:
            self.pretraining_world()
        except SchemaError as error:  # world_options: names the key
            raise error.located(source, error=PretrainConfigError) from None
        except (OSError, ValueError) as error:
            raise PretrainConfigError(str(error), source=source, key="labelset") from None

    def pretraining_world(self) -> PretrainingWorld:
        return get_pretraining_world(self.world, self.labelset, self.world_options, self.short_caption_prob)

    def to_dict(self) -> dict:
        return to_data(self)


# ----------------------------------------------------------------------------------------------------------------------
# Tokenizer, image processor, model


def train_world_tokenizer(
    extra_words: list[str] | None = None,
    vocab_size: int = 1000,
    max_length: int = 32,
    world_words: list[str] | None = None,
):
    """Train a CLIP-style byte-level BPE on the world's caption words (`world_words`, default: shapes-64's), wrapped
    as a `CLIPTokenizer`.

    The BPE uses CLIP's normaliser, split pattern, byte-level alphabet and `</w>` end-of-word suffix, so every world
    word becomes exactly one token and any other text still tokenizes (into sub-word pieces).
    """
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import CLIPTokenizer

    words = sorted(set(caption_words() if world_words is None else world_words) | set(extra_words or []))
    bpe = Tokenizer(models.BPE(continuing_subword_prefix="", end_of_word_suffix="</w>", unk_token=EOS_TOKEN))
    bpe.normalizer = normalizers.Sequence(
        [normalizers.NFC(), normalizers.Replace(Regex(r"\s+"), " "), normalizers.Lowercase()]
    )
    bpe.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(CLIP_SPLIT_PATTERN), behavior="removed", invert=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False),
        ]
    )
    bpe.decoder = decoders.ByteLevel()
    # Every byte-level character also gets its word-final form ("r</w>"), as in CLIP's own vocabulary, so that any
    # text tokenizes without <unk> (which is also EOS here, where CLIP pools the text). Registering them up front,
    # sorted, also fixes their ids: the trainer would otherwise number them in hash-map order and, as it breaks ties
    # between equally frequent merges by symbol id, produce different merges and ids from run to run. (They become
    # ordinary vocabulary entries: CLIPTokenizer is built from the vocabulary and merges only.)
    word_final_symbols = [char + "</w>" for char in sorted(pre_tokenizers.ByteLevel.alphabet())]
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[BOS_TOKEN, EOS_TOKEN, *word_final_symbols],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        end_of_word_suffix="</w>",
        show_progress=False,
    )
    # Each word repeated so that every merge reaches the trainer's minimum frequency.
    bpe.train_from_iterator([" ".join(words)] * 4, trainer=trainer)
    model_json = json.loads(bpe.to_str())["model"]
    tokenizer = CLIPTokenizer(
        vocab=model_json["vocab"],
        merges=[tuple(pair) if not isinstance(pair, str) else tuple(pair.split()) for pair in model_json["merges"]],
        model_max_length=max_length,
    )
    split_words = [word for word in words if len(tokenizer.tokenize(word)) != 1]
    if split_words:
        raise RuntimeError(f"The world tokenizer splits words {split_words}; raise tokenizer_vocab_size.")
    return tokenizer


def _canonicalizing_tokenizer(tokenizer):
    """The world tokenizer with SigLIP's text canonicalisation installed, as the generic `tokenizers`-backed class: a
    saved `CLIPTokenizer` rebuilds its own normalizer on load, which would drop the canonicalisation for a user of
    plain transformers (captions are tokenized through it during pretraining too)."""
    from transformers import PreTrainedTokenizerFast

    backend = SIGLIP_FAMILY.prepare_tokenizer(tokenizer).backend_tokenizer
    special = {name: getattr(tokenizer, name) for name in ("bos_token", "eos_token", "pad_token", "unk_token")}
    return PreTrainedTokenizerFast(tokenizer_object=backend, model_max_length=tokenizer.model_max_length, **special)


def build_image_processor(family: str = "clip"):
    """64x64 input, no crop; pixels normalised as (x / 255 - 0.5) / 0.25 (CLIP) or / 0.5 (SigLIP, squashed to the
    square as SigLIP does). BOX resampling makes integer upscales of world images (e.g. the x4 examples) map back
    exactly to their 64-px originals."""
    from transformers import CLIPImageProcessorPil, SiglipImageProcessorPil

    if family == "siglip":
        return SiglipImageProcessorPil(
            size={"height": 64, "width": 64},
            resample=4,  # PIL.Image.BOX
            image_mean=[PIXEL_MEAN] * 3,
            image_std=[SIGLIP_PIXEL_STD] * 3,
        )
    return CLIPImageProcessorPil(
        size={"height": 64, "width": 64},
        do_center_crop=False,
        crop_size={"height": 64, "width": 64},
        resample=4,  # PIL.Image.BOX
        image_mean=[PIXEL_MEAN] * 3,
        image_std=[PIXEL_STD] * 3,
    )


def _tower_configs(config: VLPPretrainConfig, vocab_size: int, bos_token_id: int, eos_token_id: int):
    """The `text_config` and `vision_config` of the recipe's widths (the same keys for CLIP and SigLIP)."""
    text = {
        "vocab_size": vocab_size,
        "hidden_size": config.text_hidden_size,
        "intermediate_size": 4 * config.text_hidden_size,
        "num_hidden_layers": config.text_layers,
        "num_attention_heads": config.text_heads,
        "max_position_embeddings": config.max_text_length,
        "bos_token_id": bos_token_id,
        "eos_token_id": eos_token_id,
        "pad_token_id": eos_token_id,
    }
    vision = {
        "hidden_size": config.vision_hidden_size,
        "intermediate_size": 4 * config.vision_hidden_size,
        "num_hidden_layers": config.vision_layers,
        "num_attention_heads": config.vision_heads,
        "image_size": 64,
        "patch_size": config.patch_size,
    }
    return text, vision


def build_clip_model(config: VLPPretrainConfig, vocab_size: int, bos_token_id: int, eos_token_id: int):
    from transformers import CLIPConfig, CLIPModel

    text, vision = _tower_configs(config, vocab_size, bos_token_id, eos_token_id)
    clip_config = CLIPConfig(text_config=text, vision_config=vision, projection_dim=config.projection_dim)
    return CLIPModel._from_config(clip_config, attn_implementation="sdpa")


def build_siglip_model(config: VLPPretrainConfig, vocab_size: int, bos_token_id: int, eos_token_id: int):
    """A `SiglipModel` of the recipe's widths: text context `max_text_length` (every caption padded to it), text head
    projecting to the vision width, SigLIP's initial temperature 10 and bias -10."""
    from transformers import SiglipConfig, SiglipModel

    text, vision = _tower_configs(config, vocab_size, bos_token_id, eos_token_id)
    text["projection_size"] = config.vision_hidden_size  # the joint width is the vision width (no CLIP projection)
    siglip_config = SiglipConfig(text_config=text, vision_config=vision)
    model = SiglipModel._from_config(siglip_config, attn_implementation="sdpa")
    with torch.no_grad():
        model.logit_scale.fill_(math.log(SIGLIP_INIT_LOGIT_SCALE))
        model.logit_bias.fill_(SIGLIP_INIT_LOGIT_BIAS)
    return model


def build_model(config: VLPPretrainConfig, tokenizer):
    build = build_siglip_model if config.backbone_family == "siglip" else build_clip_model
    return build(config, len(tokenizer), tokenizer.bos_token_id, tokenizer.eos_token_id)


def images_to_pixel_values(images: np.ndarray, std: float = PIXEL_STD) -> torch.Tensor:
    """uint8 [B, 64, 64, 3] -> float32 [B, 3, 64, 64], as the shipped image processor does on 64-px input (`std`:
    0.25 for CLIP folders, 0.5 for SigLIP ones)."""
    pixels = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float()
    return (pixels / 255.0 - PIXEL_MEAN) / std


def _pixel_std_of(family: str) -> float:
    return SIGLIP_PIXEL_STD if family == "siglip" else PIXEL_STD


def _pixel_std(model) -> float:
    return _pixel_std_of(backbone_family(model).name)


def tokenize_texts(model, tokenizer, texts: list[str], max_length: int | None = None) -> dict[str, torch.Tensor]:
    """What `get_text_features` takes: CLIP pads to the longest text (its causal tower pools the EOS token), SigLIP
    to its fixed context without an attention mask (its family's rule, `ovmlc.core.backbones`)."""
    family = backbone_family(model)
    if family.causal_text:
        return tokenizer(texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
    return family.text_inputs(model, tokenizer, texts)


# ----------------------------------------------------------------------------------------------------------------------
# Zero-shot evaluation


@torch.no_grad()
def encode_texts(model, tokenizer, texts: list[str], batch_size: int = 256) -> torch.Tensor:
    """L2-normalised text embeddings [T, D]."""
    embeds = []
    for start in range(0, len(texts), batch_size):
        out = model.get_text_features(**tokenize_texts(model, tokenizer, texts[start : start + batch_size]))
        embeds.append(F.normalize(out.pooler_output.float(), dim=-1))
    return torch.cat(embeds)


@torch.no_grad()
def encode_images(model, images: np.ndarray, batch_size: int = 256) -> torch.Tensor:
    """L2-normalised global image embeddings [N, D] of uint8 world images [N, 64, 64, 3]."""
    embeds, std = [], _pixel_std(model)
    for start in range(0, len(images), batch_size):
        out = model.get_image_features(pixel_values=images_to_pixel_values(images[start : start + batch_size], std))
        embeds.append(F.normalize(out.pooler_output.float(), dim=-1))
    return torch.cat(embeds)


def zero_shot_scores(model, tokenizer, images: np.ndarray, label_names: list[str], template: str = EVAL_TEMPLATE):
    """Cosine between each image's global embedding and each label's prompt embedding: float32 [N, C]."""
    model.eval()
    label_embeds = encode_texts(model, tokenizer, [template.format(name) for name in label_names])  # [C, D]
    image_embeds = encode_images(model, images)  # [N, D]
    return (image_embeds @ label_embeds.T).numpy().astype(np.float32)


def _mean_average_precision(scores: np.ndarray, targets: np.ndarray) -> float:
    """mAP (%) of full annotations `targets` {0, 1}; labels without a positive are left out of the mean."""
    from ovmlc.evaluation.metrics import mean_average_precision

    if scores.size == 0:
        return float("nan")
    return 100.0 * mean_average_precision(scores, np.where(targets > 0, 1, -1), no_positive="exclude")


def _f1_at_k(scores: np.ndarray, targets: np.ndarray, k: int = 3) -> float:
    """Overall (pooled) F1 of each image's top-k labels, in %."""
    from ovmlc.evaluation.metrics import top_k_metrics

    if scores.size == 0:
        return float("nan")
    return 100.0 * top_k_metrics(scores, np.where(targets > 0, 1, -1), min(k, scores.shape[1]))["f1"]


def zero_shot_report(
    scores: np.ndarray,
    targets: np.ndarray,
    label_names: list[str],
    unseen: list[str],
    groups: dict[str, Sequence[str]] | None = None,
) -> dict:
    """ZSL (unseen labels, images with >= 1 unseen positive), GZSL (all labels, all images) and seen-label metrics,
    plus per-group mAP over all images (`groups`: name -> labels; default shapes-64's shapes / colours /
    backgrounds)."""
    unseen_mask = np.array([name in set(unseen) for name in label_names])
    zsl_images = targets[:, unseen_mask].any(axis=1)
    zsl_scores, zsl_targets = scores[zsl_images][:, unseen_mask], targets[zsl_images][:, unseen_mask]
    if groups is None:
        groups = {
            "shapes": set(SHAPE_NAMES),
            "colours": set(COLOUR_NAMES),
            "backgrounds": {background_label(b) for b in BACKGROUNDS},
        }
    groups = {name: set(members) for name, members in groups.items()}
    report = {
        "zsl_map": _mean_average_precision(zsl_scores, zsl_targets),
        "zsl_f1_at_3": _f1_at_k(zsl_scores, zsl_targets),
        "gzsl_map": _mean_average_precision(scores, targets),
        "gzsl_f1_at_3": _f1_at_k(scores, targets),
        "seen_map": _mean_average_precision(scores[:, ~unseen_mask], targets[:, ~unseen_mask]),
        "zsl_images": int(zsl_images.sum()),
        "num_images": len(scores),
    }
    for group, members in groups.items():
        columns = np.array([name in members for name in label_names])
        if columns.any():
            report[f"{group}_map"] = _mean_average_precision(scores[:, columns], targets[:, columns])
    unseen_names = [name for name, is_unseen in zip(label_names, unseen_mask) if is_unseen]
    report["unseen_ap"] = {
        name: _mean_average_precision(zsl_scores[:, [c]], zsl_targets[:, [c]]) for c, name in enumerate(unseen_names)
    }  # within the ZSL images, so that their mean is zsl_map
    return report


def evaluate_zero_shot(
    model, tokenizer, images: np.ndarray, targets: np.ndarray, labelset: dict, groups: dict | None = None
) -> dict:
    scores = zero_shot_scores(model, tokenizer, images, labelset["labels"])
    return zero_shot_report(scores, targets, labelset["labels"], labelset["unseen"], groups)


def _evaluate_sets(model, tokenizer, sets: dict, labelset: dict, groups: dict, rows: slice | None = None) -> dict:
    """The headline report (first evaluation set) with the other sets' reports under `eval_sets` (multi-set worlds)."""
    rows = rows or slice(None)
    reports = {
        name: evaluate_zero_shot(model, tokenizer, s.images[rows], s.targets[rows], labelset, groups)
        for name, s in sets.items()
    }
    headline = dict(reports[next(iter(sets))])
    if len(sets) > 1:
        headline["eval_sets"] = reports
    return headline


# ----------------------------------------------------------------------------------------------------------------------
# Pretraining


def _bag_of_words(input_ids: torch.Tensor, vocab_size: int, special_ids: list[int]) -> torch.Tensor:
    """Multi-hot [B, V] of the tokens of each caption, special tokens excluded."""
    bag = torch.zeros(input_ids.shape[0], vocab_size)
    bag.scatter_(1, input_ids, 1.0)
    bag[:, special_ids] = 0.0
    return bag


def _contrastive_loss(image_embeds: torch.Tensor, text_embeds: torch.Tensor, logit_scale: torch.Tensor):
    """Symmetric InfoNCE over a batch of normalised [B, D] image / text embeddings."""
    logits = logit_scale.exp() * image_embeds @ text_embeds.T  # [B, B]
    target = torch.arange(len(logits))
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2


def _sigmoid_loss(
    image_embeds: torch.Tensor, text_embeds: torch.Tensor, logit_scale: torch.Tensor, logit_bias: torch.Tensor
):
    """SigLIP's pairwise sigmoid loss over a batch of normalised [B, D] embeddings: every (image, text) pair is a
    binary problem (the B matching pairs positive, the B^2 - B others negative), summed and divided by B."""
    logits = logit_scale.exp() * image_embeds @ text_embeds.T + logit_bias  # [B, B]
    signs = 2 * torch.eye(len(logits), device=logits.device) - 1  # +1 on the diagonal, -1 elsewhere
    return -F.logsigmoid(signs * logits).sum() / len(logits)


def _text_parameters(model) -> list[torch.nn.Parameter]:
    return [p for module in backbone_family(model).text_tower_modules(model) for p in module.parameters()]


class _Batches:
    """Epoch-wise shuffled indices of the world, with a fresh caption drawn at every visit."""

    def __init__(self, world, model, tokenizer, sampler: CaptionSource, batch_size: int, seed: int, max_length: int):
        self.world, self.model, self.tokenizer, self.sampler = world, model, tokenizer, sampler
        self.batch_size, self.max_length = batch_size, max_length
        self.rng = np.random.default_rng([seed, 77])
        self.order = np.zeros(0, dtype=np.int64)

    def indices(self) -> np.ndarray:
        while len(self.order) < self.batch_size:
            self.order = np.concatenate([self.order, self.rng.permutation(len(self.world))])
        batch, self.order = self.order[: self.batch_size], self.order[self.batch_size :]
        return batch

    def captions(self, indices: np.ndarray) -> dict[str, torch.Tensor]:
        texts = [self.sampler.sample(self.world.scenes, int(i), self.rng) for i in indices]
        return tokenize_texts(self.model, self.tokenizer, texts, self.max_length)


def _save_folder(model, tokenizer, image_processor, output_dir: Path, card: str) -> None:
    """Write a Hub-layout folder next to `output_dir`, then swap it in (readers never see a half-written one)."""
    staging = output_dir.with_name(output_dir.name + ".staging")
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    model.save_pretrained(staging)
    tokenizer.save_pretrained(staging)
    _write_bpe_files(tokenizer, staging)
    image_processor.save_pretrained(staging)
    _mark_pil_image_processor(staging / "preprocessor_config.json", type(image_processor).__name__)
    (staging / "README.md").write_text(card)
    for path in staging.iterdir():
        path.chmod(0o644)  # safetensors writes 0600; the folder is a shipped, shared asset
    if output_dir.exists():
        previous = output_dir.with_name(output_dir.name + ".previous")
        if previous.exists():
            shutil.rmtree(previous)
        output_dir.rename(previous)
        staging.rename(output_dir)
        shutil.rmtree(previous)
    else:
        staging.rename(output_dir)


def _write_bpe_files(tokenizer, folder: Path) -> None:
    """`vocab.json` + `merges.txt` as in Hub CLIP repos (transformers 5 only writes `tokenizer.json`)."""
    bpe = json.loads(tokenizer.backend_tokenizer.to_str())["model"]
    (folder / "vocab.json").write_text(json.dumps(bpe["vocab"], ensure_ascii=False) + "\n")
    merges = [" ".join(pair) if not isinstance(pair, str) else pair for pair in bpe["merges"]]
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")


def _mark_pil_image_processor(path: Path, class_name: str = "CLIPImageProcessorPil") -> None:
    """Record the PIL backend explicitly (it is what the checkpoint is meant for: no torchvision needed)."""
    config = json.loads(path.read_text())
    config["image_processor_type"] = class_name
    path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def pretrain_vlp(config: VLPPretrainConfig, recipe_path: str | None = None, show_progress: bool = True) -> dict:
    """Run the whole recipe and write the Hub-layout folder to `config.output_dir`. Returns the measured numbers."""
    from accelerate import Accelerator
    from accelerate.utils import set_seed
    from transformers import get_cosine_schedule_with_warmup

    start = time.time()
    config.validate(recipe_path or "<config>")
    if config.num_threads:
        torch.set_num_threads(config.num_threads)
    set_seed(config.seed)
    release_accelerator_state()  # settings left by an earlier run in this process
    accelerator = Accelerator(cpu=True, mixed_precision=config.mixed_precision)
    pretraining_world = config.pretraining_world()
    labelset, groups = pretraining_world.labelset, pretraining_world.label_groups
    output_dir = Path(config.output_dir)

    tokenizer = train_world_tokenizer(
        config.tokenizer_extra_words,
        config.tokenizer_vocab_size,
        config.max_text_length,
        world_words=pretraining_world.caption_words,
    )
    family = BACKBONE_FAMILIES[config.backbone_family]
    if family.name == "siglip":
        tokenizer = _canonicalizing_tokenizer(tokenizer)
    image_processor = build_image_processor(family.name)
    vocab_size = len(tokenizer)
    special_ids = [tokenizer.bos_token_id, tokenizer.eos_token_id]
    model = accelerator.prepare(build_model(config, tokenizer))
    pixel_std = _pixel_std(model)

    world = pretraining_world.generate_corpus(config.num_images, config.seed, config.num_workers)
    # Evaluation sets: images [N, 64, 64, 3] with targets [N, C] int8; the first gives the headline numbers.
    eval_sets = pretraining_world.generate_evaluation(config.eval_num_images, config.eval_seed, config.num_workers)
    quick = slice(0, min(config.eval_quick_images, config.eval_num_images))
    timings = {"generate_s": time.time() - start}

    random_report = None
    if config.evaluate_random_init:
        random_report = _evaluate_sets(model, tokenizer, eval_sets, labelset, groups)
        model.train()

    sampler = pretraining_world.sampler
    batches = _Batches(world, model, tokenizer, sampler, config.batch_size, config.seed, config.max_text_length)
    log: list[dict] = []

    # Stage 0: text bag-of-words warm-up. The head is thrown away afterwards.
    bow_head = torch.nn.Linear(config.projection_dim, vocab_size)
    warmup_optimizer = torch.optim.AdamW([*_text_parameters(model), *bow_head.parameters()], lr=config.text_warmup_lr)
    bow_head_w, warmup_optimizer = accelerator.prepare(bow_head, warmup_optimizer)
    stage_start = time.time()
    progress = tqdm(range(config.text_warmup_steps), desc="text warm-up", disable=not show_progress)
    bow_loss = float("nan")
    for _ in progress:
        tokens = batches.captions(batches.indices())
        targets = _bag_of_words(tokens["input_ids"], vocab_size, special_ids)  # [B, V]
        with accelerator.autocast():
            text = model.get_text_features(**tokens)
            logits = bow_head_w(config.text_warmup_scale * F.normalize(text.pooler_output.float(), dim=-1))
        loss = F.binary_cross_entropy_with_logits(logits.float(), targets)
        warmup_optimizer.zero_grad(set_to_none=True)
        accelerator.backward(loss)
        warmup_optimizer.step()
        bow_loss = loss.item()
        progress.set_postfix(bow_loss=f"{bow_loss:.3f}")
    timings["text_warmup_s"] = time.time() - stage_start
    del bow_head, bow_head_w, warmup_optimizer

    # Stage 1: CLIP InfoNCE or SigLIP's sigmoid loss; weight decay on matrices only.
    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=config.learning_rate,
        betas=(config.adam_beta1, config.adam_beta2),
    )
    scheduler = get_cosine_schedule_with_warmup(
        optimizer, int(config.lr_warmup_ratio * config.clip_steps), max(config.clip_steps, 1)
    )
    optimizer, scheduler = accelerator.prepare(optimizer, scheduler)
    unwrapped = accelerator.unwrap_model(model, keep_fp32_wrapper=False)
    max_log_scale = math.log(config.max_logit_scale)
    text_params = _text_parameters(unwrapped)
    stage_start = time.time()
    progress = tqdm(range(config.clip_steps), desc=family.name, disable=not show_progress)
    for step in progress:
        text_frozen = step < config.text_freeze_steps
        for p in text_params:
            p.requires_grad_(not text_frozen)
        indices = batches.indices()
        tokens = batches.captions(indices)
        pixel_values = images_to_pixel_values(world.images[indices], pixel_std)  # [B, 3, 64, 64]
        with accelerator.autocast():
            image_embeds = unwrapped.get_image_features(pixel_values=pixel_values).pooler_output
            with torch.set_grad_enabled(not text_frozen):
                text_embeds = unwrapped.get_text_features(**tokens).pooler_output
        image_embeds, text_embeds = F.normalize(image_embeds.float(), dim=-1), F.normalize(text_embeds.float(), dim=-1)
        if family.name == "siglip":
            loss = _sigmoid_loss(image_embeds, text_embeds, unwrapped.logit_scale, unwrapped.logit_bias)
        else:
            loss = _contrastive_loss(image_embeds, text_embeds, unwrapped.logit_scale)
        optimizer.zero_grad(set_to_none=True)
        accelerator.backward(loss)
        accelerator.clip_grad_norm_(model.parameters(), config.max_grad_norm)
        optimizer.step()
        scheduler.step()
        with torch.no_grad():
            unwrapped.logit_scale.clamp_(0.0, max_log_scale)
        progress.set_postfix(loss=f"{loss.item():.3f}", frozen_text=text_frozen)
        done = step + 1
        if config.eval_every and (done % config.eval_every == 0) and done < config.clip_steps:
            report = _evaluate_sets(unwrapped, tokenizer, eval_sets, labelset, groups, quick)
            unwrapped.train()
            entry = {"step": done, "loss": round(loss.item(), 4), "elapsed_s": round(time.time() - start, 1)}
            entry.update({k: round(v, 2) for k, v in report.items() if k.endswith("_map")})
            for set_name, set_report in list(report.get("eval_sets", {}).items())[1:]:
                entry.update({f"{set_name}_{k}": round(v, 2) for k, v in set_report.items() if k.endswith("_map")})
            log.append(entry)
            tqdm.write(f"[pretrain-vlp] {json.dumps(entry)}", file=sys.stderr)
            if config.save_every and done >= config.save_every:
                interim = {"step": done, "of": config.clip_steps, "quick_eval": entry}
                card = render_model_card(config, None, None, interim, timings, log, recipe_path, bow_loss)
                _save_folder(unwrapped, tokenizer, image_processor, output_dir, card)
    timings["clip_s"] = time.time() - stage_start

    unwrapped.eval()
    report = _evaluate_sets(unwrapped, tokenizer, eval_sets, labelset, groups)
    timings["total_s"] = time.time() - start
    num_parameters = sum(p.numel() for p in unwrapped.parameters())
    card = render_model_card(
        config, report, random_report, None, timings, log, recipe_path, bow_loss, num_parameters=num_parameters
    )
    _save_folder(unwrapped, tokenizer, image_processor, output_dir, card)
    results = {
        "num_parameters": num_parameters,
        "zero_shot": report,
        "random_init": random_report,
        "timings": timings,
        "log": log,
        "text_warmup_final_loss": bow_loss,
        "output_dir": str(output_dir),
        "safetensors_bytes": (output_dir / "model.safetensors").stat().st_size,
    }
    (output_dir / "pretraining_results.json").write_text(json.dumps(results, indent=2) + "\n")
    return results


# ----------------------------------------------------------------------------------------------------------------------
# Model card

_METRIC_ROWS = (
    ("ZSL mAP", "zsl_map"),
    ("ZSL F1@3", "zsl_f1_at_3"),
    ("GZSL mAP", "gzsl_map"),
    ("GZSL F1@3", "gzsl_f1_at_3"),
    ("seen-label mAP", "seen_map"),
)  # followed by one row per label group of the world ("shapes mAP (all images)", ...)


def _fmt(value) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.1f}"


def _paragraph(text: str) -> str:
    text = " ".join(text.split())
    return textwrap.fill(text, width=118, subsequent_indent="  " if text.startswith("* ") else "")


def render_model_card(
    config: VLPPretrainConfig,
    report: dict | None,
    random_report: dict | None,
    interim: dict | None,
    timings: dict,
    log: list[dict],
    recipe_path: str | None,
    bow_loss: float,
    num_parameters: int | None = None,
) -> str:
    """The model card (README.md) of a pretrained folder: recipe, seed, wall time and measured numbers."""
    import transformers

    nan = float("nan")
    world = config.pretraining_world()
    labelset = world.labelset
    metric_rows = [*_METRIC_ROWS, *((f"{group} mAP (all images)", f"{group}_map") for group in world.label_groups)]
    unseen = labelset["unseen"]
    seen = [name for name in labelset["labels"] if name not in set(unseen)]
    recipe = recipe_path or world.card["recipe"]
    parameters = f"{num_parameters / 1e6:.2f} M parameters, " if num_parameters else ""
    siglip = config.backbone_family == "siglip"
    # The world's card texts describe its shipped CLIP; a SigLIP gets its own header.
    title, summary, path = world.card["title"], world.card["summary"], world.card["path"]
    model_class, processor_class, stage = "CLIPModel", "CLIPImageProcessorPil", "CLIP"
    if siglip:
        model_class, processor_class, stage = "SiglipModel", "SiglipImageProcessorPil", "SigLIP"
        path = config.output_dir
        title = f"{Path(path).name}: a small SigLIP pretrained on the ovmlc {config.world} world"
        summary = (
            "A small `SiglipModel` (attention-pooling image head, bidirectional text tower pooled at the last "
            "position of its fixed context, pairwise sigmoid loss with a learned bias) trained from scratch, offline, "
            f"on the same world and schedule as ovmlc's CLIP of this world (`{world.card['recipe']}`), so that "
            "SigLIP-specific behaviour (sigmoid scores, value-path patch tokens) can be measured offline."
        )
    lines = [
        "---",
        "library_name: transformers",
        "license: apache-2.0",
        "pipeline_tag: zero-shot-image-classification",
        f"tags: [{config.backbone_family}, ovmlc, synthetic, open-vocabulary, multi-label]",
        "---",
        "",
        f"# {title}",
        "",
        _paragraph(summary),
        "",
    ]
    if interim is not None:
        lines += [
            _paragraph(
                f"**Interim checkpoint** at {stage} step {interim['step']} of {interim['of']} (training in progress); "
                f"quick evaluation on {config.eval_quick_images} test images: `{json.dumps(interim['quick_eval'])}`."
            ),
            "",
        ]
    lines += [
        "## Load",
        "",
        "```python",
        f"from transformers import AutoTokenizer, {processor_class}, {model_class}",
        "",
        f'path = "{path}"',
        f"model = {model_class}.from_pretrained(path)",
        "tokenizer = AutoTokenizer.from_pretrained(path)  # CLIP-style BPE, one token per world word"
        + (", SigLIP canonicalisation" if siglip else ""),
        f"image_processor = {processor_class}.from_pretrained(path)  # 64x64, no crop, mean 0.5, "
        f"std {_pixel_std_of(config.backbone_family):g}",
        "```",
        "",
        "## Recipe",
        "",
        _paragraph(
            f"`ovmlc pretrain-vlp --config {recipe}` (seed {config.seed}); re-running it reproduces this checkpoint "
            f"up to CPU floating-point noise. Architecture: ViT {config.vision_hidden_size}x{config.vision_layers} "
            f"(patch {config.patch_size}, 64 px, {(64 // config.patch_size) ** 2 + (0 if siglip else 1)} tokens), "
            f"text transformer {config.text_hidden_size}x{config.text_layers} "
            f"({'always padded to ' if siglip else 'max '}{config.max_text_length} tokens), "
            f"{'attention-pooling head, joint width' if siglip else 'projection'} {config.projection_dim}; "
            f"{parameters}fp32 safetensors."
        ),
        "",
        _paragraph(
            f"* World: {config.num_images:,} images (seed {config.seed}, stream `pretrain`), captions drawn afresh at "
            f"every visit, {world.card['captions']}."
        ),
        _paragraph(
            f"* Stage 0, text warm-up: {config.text_warmup_steps} steps, batch {config.batch_size}, AdamW "
            f"{config.text_warmup_lr:g}: the normalised text embedding x{config.text_warmup_scale:g} predicts the "
            f"caption's bag of words (BCE over the vocabulary; final loss {bow_loss:.4f})."
        ),
        _paragraph(
            f"* Stage 1, {'SigLIP sigmoid loss (temperature 10, bias -10 at the start)' if siglip else 'CLIP InfoNCE'}:"
            f" {config.clip_steps} steps, batch {config.batch_size}, AdamW lr "
            f"{config.learning_rate:g}, betas ({config.adam_beta1}, {config.adam_beta2}), weight decay "
            f"{config.weight_decay:g} on matrices, {config.lr_warmup_ratio:.0%} warm-up then cosine, grad-clip "
            f"{config.max_grad_norm:g}, logit scale clamped at {config.max_logit_scale:g}, text tower frozen for the "
            f"first {config.text_freeze_steps} steps, {config.mixed_precision} autocast on CPU (`accelerate`)."
        ),
        "",
        "Full recipe:",
        "",
        "```yaml",
        yaml.safe_dump(config.to_dict(), sort_keys=False, width=118, default_flow_style=None).strip(),
        "```",
        "",
    ]
    if report is not None:
        lines += [
            "## Zero-shot multi-label quality",
            "",
            _paragraph(
                f"Test set: {report['num_images']:,} freshly generated images (seed {config.eval_seed}, stream "
                f"`test`: the images of the `test` split of `{world.card['prepare']}`). Label set "
                f"`{labelset['name']}` ({len(labelset['labels'])} labels, {len(unseen)} unseen). Score = cosine "
                f"between the global image embedding and the prompt `{EVAL_TEMPLATE}`. ZSL = unseen labels on the "
                f"{report['zsl_images']:,} images with at least one unseen label; GZSL = all labels on all images. "
                "mAP = mean per-label average precision; F1@3 = overall (pooled) F1 of each image's top-3 labels "
                f"(`ovmlc.evaluation.metrics`). {world.card['test_description']}"
            ),
            "",
        ]
        other_sets = list(report.get("eval_sets", {}).items())[1:]  # e.g. shapes-clutter's web-style test images
        other_titles = "".join(f" {name}-style test images |" for name, _ in other_sets)
        lines += [
            f"| metric | this checkpoint |{other_titles} same architecture, random weights |",
            "| --- | --- |" + " --- |" * len(other_sets) + " --- |",
        ]
        for title, key in metric_rows:
            others = "".join(f" {_fmt(other.get(key))} |" for _, other in other_sets)
            lines.append(f"| {title} | {_fmt(report.get(key))} |{others} {_fmt((random_report or {}).get(key))} |")
        lines.append("")
        if report.get("unseen_ap"):
            lines += [
                "ZSL AP of each unseen label: "
                + ", ".join(f"{name} {_fmt(ap)}" for name, ap in report["unseen_ap"].items())
                + ".",
                "",
            ]
        if log:
            lines += [
                f"Learning curve (quick evaluation on the first {config.eval_quick_images} test images):",
                "",
            ]
            columns = [("ZSL mAP", "zsl_map"), ("GZSL mAP", "gzsl_map")]
            columns += [(group, f"{group}_map") for group in world.label_groups]
            columns += [(f"{name} {title}", f"{name}_{key}") for name, _ in other_sets for title, key in columns[:2]]
            lines += [
                f"| {stage} step | " + " | ".join(title for title, _ in columns) + " |",
                "| --- |" + " --- |" * len(columns),
            ]
            for entry in log:
                lines.append(f"| {entry['step']} | " + " | ".join(_fmt(entry.get(key)) for _, key in columns) + " |")
            lines.append("")
    lines += [
        "## Training cost",
        "",
        _paragraph(
            f"Wall time {timings.get('total_s', nan) / 60:.1f} min in all (world generation "
            f"{timings.get('generate_s', nan):.0f} s, text warm-up {timings.get('text_warmup_s', nan):.0f} s, {stage} "
            f"stage {timings.get('clip_s', nan) / 60:.1f} min) on {os.cpu_count()} CPU cores shared with other jobs "
            f"({platform.machine()}), torch {torch.__version__}, transformers {transformers.__version__}."
        ),
        "",
        "## Labels seen by downstream training",
        "",
        _paragraph(f"Seen ({len(seen)}): {', '.join(seen)}."),
        "",
        _paragraph(f"Unseen ({len(unseen)}): {', '.join(unseen)}."),
        "",
        _paragraph(
            "Pretraining itself uses captions only (no labels); the seen/unseen split matters for the downstream "
            "open-vocabulary recipes, which train on seen labels and are evaluated zero-shot on the unseen ones."
        ),
        "",
    ]
    return "\n".join(lines)
