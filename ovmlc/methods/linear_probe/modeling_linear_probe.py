"""The linear-probe baseline as a Hub-native model: per-label logistic regression on frozen CLIP image embeddings.

Its "label embeddings" are classifier rows `[C, D + 1]` (weight, then bias): learned rows for the labels it was trained
on, zero-shot text rows for any other label, so `predict`, the pipeline and the trainer's label handling work as for
every method.
"""

import torch
import torch.nn.functional as F
from torch import nn
from transformers import initialization as init

from ovmlc.core.backbones import dense_image_tokens, embedding_dim, text_fingerprint_extra, text_tower_modules
from ovmlc.core.losses import masked_bce_with_logits
from ovmlc.core.modeling_base import OVMLCPreTrainedModel
from ovmlc.core.outputs import MultiLabelOutput
from ovmlc.core.vocabulary import LabelVocabulary, normalize_label

from .configuration_linear_probe import LinearProbeConfig

# CLIP's temperature cap (the zero-shot text rows use CLIP's scale).
MAX_CLIP_LOGIT_SCALE = 100.0


class LinearProbeHead(nn.Module):
    """`weight [C, D]`, `bias [C]`: one logistic regression per probe label (keys `probe.*`)."""

    def __init__(self, num_labels: int, dim: int):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(num_labels, dim))
        self.bias = nn.Parameter(torch.zeros(num_labels))


class LinearProbeModel(OVMLCPreTrainedModel):
    """Linear probe: `logits [B, C] = normalize(image embedding) @ W.T + b` over a frozen CLIP.

    `encode_image_features` returns `{"image_embeds": [B, D]}` (frozen, cacheable). `encode_labels(names)` returns the
    rows `[C, D + 1]` the score uses (differentiable in training).
    """

    config: LinearProbeConfig
    uses_frozen_image_features = True
    # The per-label rows are the "label side" that trains (the trainer re-encodes labels every step).
    trains_text_side = True
    # The probe rows are built here (from the text classifier or zeros): new by design around a CLIP checkpoint.
    modules_created_on_load = ("probe",)
    # The frozen CLIP comes unchanged from its checkpoint: the adapter-only layout stores only the probe.
    inherited_modules = ("clip",)
    supported_backbone_families = ("clip", "siglip")

    def __init__(self, config: LinearProbeConfig):
        super().__init__(config)
        labels = config.probe_labels or config.seen_labels
        if not labels:
            raise ValueError(
                "LinearProbeModel needs the labels it learns rows for: pass probe_labels (or seen_labels) when "
                "building it (`ovmlc train` passes the training labels)"
            )
        config.probe_labels = list(labels)
        self._rows_of = {normalize_label(name): row for row, name in enumerate(config.probe_labels)}
        if len(self._rows_of) != len(config.probe_labels):
            raise ValueError(f"LinearProbeConfig.probe_labels has duplicates: {config.probe_labels}")
        self.probe = LinearProbeHead(len(config.probe_labels), embedding_dim(self.clip))
        self.post_init()
        self._freeze()

    def _freeze(self) -> None:
        self.requires_grad_(False)
        self.probe.requires_grad_(True)

    def post_load(self) -> None:
        self._freeze()

    def train(self, mode: bool = True):
        super().train(mode)
        self.clip.eval()
        return self

    def logit_scale_value(self) -> torch.Tensor:
        if self.config.logit_scale is not None:
            return torch.tensor(float(self.config.logit_scale), device=self.device)
        return self.clip.logit_scale.exp().clamp(max=MAX_CLIP_LOGIT_SCALE)

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        if module is not getattr(self, "probe", None) or getattr(module.weight, "_is_hf_initialized", False):
            return  # not the probe, or loaded from a checkpoint
        init.constant_(module.bias, float(self.config.logit_bias))
        if self.config.init == "zeros":
            init.zeros_(module.weight)
        else:
            init.copy_(module.weight, self.text_rows(self.config.probe_labels).to(module.weight.dtype))

    def text_rows(self, names) -> torch.Tensor:
        """Zero-shot classifier weights `[C, D]`: `scale * normalize(text embedding)` of the config's templates."""
        vocabulary = self.vocabulary(list(names))
        text = vocabulary.encode(
            self.clip, self.text_tokenizer, cache=self.label_cache, fingerprint=self.text_fingerprint()
        )
        return self.logit_scale_value().to(text.device) * F.normalize(text, dim=-1)

    # ------------------------------------------------------------------ label side: classifier rows
    def text_side_modules(self) -> tuple[nn.Module, ...]:
        return (*text_tower_modules(self.clip), self.probe)

    def text_fingerprint(self) -> str:
        """The text tower's digest: it keys the cached text embeddings of the zero-shot rows (the learned rows are
        read from the parameters every time, never cached)."""
        from ovmlc.core.backbones import module_fingerprint

        if self._text_fingerprint is None:
            extra = text_fingerprint_extra(self.clip, "text-tower")
            self._text_fingerprint = module_fingerprint(*text_tower_modules(self.clip), extra=extra)
        return self._text_fingerprint

    def probe_rows(self, names) -> torch.Tensor:
        """Row of each name in `probe_labels` `[C]` (long), -1 for labels without a learned row."""
        return torch.tensor([self._rows_of.get(normalize_label(name), -1) for name in names], dtype=torch.long)

    def encode_label_embeddings(self, vocabulary: LabelVocabulary) -> torch.Tensor:
        """Classifier rows `[C, D + 1]`: learned `[w_c, b_c]` for probe labels, `[scale * text_c, mean(b)]` else."""
        rows = self.probe_rows(vocabulary.names).to(self.probe.weight.device)
        known = rows >= 0  # [C]
        weight = self.probe.weight[rows.clamp(min=0)]  # [C, D]
        bias = self.probe.bias[rows.clamp(min=0)]  # [C]
        if not bool(known.all()):
            unknown = [name for name, ok in zip(vocabulary.names, known.tolist()) if not ok]
            text = self.text_rows(unknown).to(weight.device, weight.dtype)  # [C_u, D]
            fallback_weight = torch.zeros_like(weight)
            fallback_weight[~known] = text
            weight = torch.where(known[:, None], weight, fallback_weight)
            bias = torch.where(known, bias, self.probe.bias.mean().detach())
        return torch.cat([weight, bias[:, None]], dim=1)  # [C, D + 1]

    def load_label_embeddings(self, path) -> None:
        """Saved rows are not reused: learned rows come from the weights, text rows from the text tower's cache."""

    # ------------------------------------------------------------------ image side and scoring
    def encode_image_features(self, pixel_values: torch.Tensor) -> dict[str, torch.Tensor]:
        with torch.no_grad():
            tokens = dense_image_tokens(self.clip, pixel_values.to(self.dtype), value_path=False)  # [B, 1 + N, D]
        return {"image_embeds": tokens[:, 0]}

    def score(self, image_features, label_embeds, return_label_maps=False) -> MultiLabelOutput:
        if "image_embeds" not in image_features:
            raise ValueError(
                f"LinearProbeModel.score needs image_features['image_embeds'], got keys {sorted(image_features)}"
            )
        image_embeds = F.normalize(image_features["image_embeds"], dim=-1)  # [B, D]
        if label_embeds.dim() != 2 or label_embeds.shape[1] != image_embeds.shape[1] + 1:
            raise ValueError(
                f"LinearProbeModel scores classifier rows [C, D + 1] from model.encode_labels(names), got label "
                f"embeddings of shape {tuple(label_embeds.shape)}"
            )
        rows = label_embeds.to(image_embeds.dtype)
        logits = image_embeds @ rows[:, :-1].T + rows[:, -1]  # [B, C]
        return MultiLabelOutput(logits=logits, image_embeds=image_embeds)

    def compute_loss(self, outputs, labels, label_mask, image_features) -> torch.Tensor:
        return masked_bce_with_logits(outputs.logits, labels, label_mask)


LinearProbeConfig.register_for_auto_class()
LinearProbeModel.register_for_auto_class("AutoModel")

__all__ = ["LinearProbeModel"]
