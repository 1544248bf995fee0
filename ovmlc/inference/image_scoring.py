"""The one place where the tagging runner, `ovmlc evaluate`, the ONNX parity check and the Ray tagger turn pixels into
scores (to be pointed at the shared `Scorer` once it exists): the image side under the requested dtype, the scoring
head in float32, float32 logits and sigmoid scores back."""

from __future__ import annotations

from dataclasses import dataclass

import torch

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass
class BatchScores:
    logits: torch.Tensor  # [B, C] float32
    scores: torch.Tensor  # [B, C] float32, sigmoid(logits)
    label_maps: torch.Tensor | None = None  # [B, C, h, w] float32, when asked for and the method has them


def parse_dtype(name: str | torch.dtype | None) -> torch.dtype | None:
    """`"bfloat16"` / `"bf16"` / `torch.bfloat16` ... → a torch dtype (None stays None)."""
    if name is None or isinstance(name, torch.dtype):
        return name
    aliases = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16", "half": "float16", "float": "float32"}
    key = aliases.get(str(name).lower(), str(name).lower().removeprefix("torch."))
    if key not in DTYPES:
        raise ValueError(f"unknown dtype {name!r}: use one of {', '.join(DTYPES)}")
    return DTYPES[key]


def resolve_device(name: str | torch.device | None) -> torch.device:
    """`"auto"`/None → cuda if available, else mps, else cpu; anything else as `torch.device`, checked to exist."""
    if name is None or str(name) == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError as error:
        raise ValueError(f"unknown device {name!r} ({error})") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} asked for, but torch sees no CUDA device (torch {torch.__version__})")
    return device


def _float32(features: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {key: value.float() if value.is_floating_point() else value for key, value in features.items()}


@torch.no_grad()
def score_pixel_batch(
    model,
    pixel_values: torch.Tensor,
    label_embeds: torch.Tensor,
    image_dtype: torch.dtype | None = None,
    return_label_maps: bool = False,
) -> BatchScores:
    """Logits and sigmoid scores `[B, C]` (float32) of `pixel_values [B, 3, H, W]` against `label_embeds [C, D]`.

    The image side (`model.encode_image_features`) runs under autocast to `image_dtype` when it is not float32 (the
    weights stay as loaded, so one model serves both); the head (`model.score`) runs outside autocast on float32
    features, like the label embeddings it compares with (in the weights' dtype for a model loaded in bf16).
    no_grad rather than inference_mode: label embeddings may be cached and reused by a training step.
    """
    device = model.device
    pixel_values = pixel_values.to(device=device, dtype=model.dtype, non_blocking=True)
    low_precision = image_dtype is not None and image_dtype != torch.float32
    with torch.autocast(device.type, dtype=image_dtype, enabled=low_precision):
        features = model.encode_image_features(pixel_values)
    if low_precision and model.dtype == torch.float32:
        features = _float32(features)  # a model loaded in bf16 keeps its head in bf16: its weights are bf16
    with torch.autocast(device.type, enabled=False):
        outputs = model.score(features, label_embeds.float(), return_label_maps=return_label_maps)
    logits = outputs.logits.float()
    label_maps = outputs.label_maps.float() if return_label_maps and outputs.label_maps is not None else None
    return BatchScores(logits=logits, scores=torch.sigmoid(logits), label_maps=label_maps)
