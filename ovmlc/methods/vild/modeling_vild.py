"""ViLD (Vision and Language knowledge Distillation) for open-vocabulary tagging with boxes.

Gu, Lin, Kuo, Cui, "Open-vocabulary Object Detection via Vision and Language Knowledge Distillation", ICLR 2022.
Written from the paper and the notes in `docs/methods.md`; no code copied from the official repository.
"""

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from transformers import initialization as init

from ovmlc.core.backbones import backbone_family, embedding_dim, image_features, patch_grid_size, vision_tokens
from ovmlc.core.images import ImageInput, load_images
from ovmlc.core.losses import asymmetric_loss, masked_bce_with_logits
from ovmlc.core.modeling_base import MultiLabelOutput, OVMLCPreTrainedModel
from ovmlc.core.regions import (
    box_iou,
    crop_regions,
    expand_boxes,
    multiscale_windows,
    per_label_nms,
    processor_geometry,
    roi_align,
)
from ovmlc.core.vocabulary import LabelVocabulary

from .configuration_vild import ViLDConfig

# Region log-odds are clamped here: a softmax with a single column (or an underflowing one) has infinite odds.
MAX_LOG_ODDS = 1.0e4
# Region embeddings are distilled / cropped in chunks of this many regions (bounds the memory of teacher crops).
CROP_CHUNK_REGIONS = 8


@dataclass
class ViLDOutput(MultiLabelOutput):
    """`MultiLabelOutput` plus the regions behind every score.

    region_boxes: `[B, R, 4]` normalised boxes of the model input frame; region_valid: `[B, R]` bool.
    region_log_odds: `[B, R, C]` log-odds of each region's (ensembled) probability of each label.
    label_boxes: `[B, C, 4]` the best region of each label (normalised); label_regions: `[B, C]` its index.
    region_text_logits: `[B, R, C]` `cos(e_r, t_c) / tau` of the text head; region_background_logits: `[B, R]`.
    region_text_embeds, region_image_embeds: `[B, R, D]` (the same tensor without `double_branch`).
    """

    region_boxes: torch.FloatTensor | None = None
    region_valid: torch.BoolTensor | None = None
    region_log_odds: torch.FloatTensor | None = None
    label_boxes: torch.FloatTensor | None = None
    label_regions: torch.LongTensor | None = None
    region_text_logits: torch.FloatTensor | None = None
    region_background_logits: torch.FloatTensor | None = None
    region_text_embeds: torch.FloatTensor | None = None
    region_image_embeds: torch.FloatTensor | None = None


class ViLDRegionHead(nn.Module):
    """RoI features `[..., S * S * H_v]` → `head_num_layers` fc + ReLU → projection → L2-normalised `[..., D]`."""

    def __init__(self, in_features: int, hidden_size: int, num_layers: int, out_features: int):
        super().__init__()
        layers: list[nn.Module] = []
        size = in_features
        for _ in range(num_layers):
            layers += [nn.Linear(size, hidden_size), nn.ReLU()]
            size = hidden_size
        self.layers = nn.Sequential(*layers)
        self.projection = nn.Linear(size, out_features)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.projection(self.layers(features)), dim=-1)


class ViLDBackground(nn.Module):
    """The learnable background embedding `b` (ViLD-text), used normalised."""

    def __init__(self, dim: int):
        super().__init__()
        self.embedding = nn.Parameter(torch.zeros(dim))

    def forward(self) -> torch.Tensor:
        return F.normalize(self.embedding, dim=-1)


def log_probabilities(
    logits: torch.Tensor,
    background: torch.Tensor | None,
    scoring: str,
    extra_zero_columns: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """`(log p, log(1 - p))`, each `[..., C]`, of regions' label probabilities, accurate even when p is within 1e-30
    of 0 or 1 (ViLD's temperature 0.01 saturates softmaxes; float32 `log(softmax)` would tie them at 0).

    logits: `[..., C]` `cos / tau`; background: `[...]` or None. `softmax`: over [background, labels, and
    `extra_zero_columns` constant-0 logits (the masked unseen rows of training)]; `sigmoid`: `sigmoid(z_c - z_bg)`.
    """
    if scoring == "sigmoid":
        log_odds = logits if background is None else logits - background[..., None]
        return -F.softplus(-log_odds), -F.softplus(log_odds)
    columns = [logits]
    if background is not None:
        columns.insert(0, background[..., None])
    if extra_zero_columns:
        columns.append(logits.new_zeros((*logits.shape[:-1], extra_zero_columns)))
    everything = torch.cat(columns, dim=-1)  # [..., K]
    log_p = everything - torch.logsumexp(everything, dim=-1, keepdim=True)
    # p <= 1/2 for every column but the largest: log(1 - p) = log1p(-p) is accurate there.
    log_not = torch.log1p(-torch.exp(log_p).clamp(max=0.5))
    # For the largest column, log p = -softplus(o - z) and log(1 - p) = (o - z) - softplus(o - z), where o is the
    # log-sum-exp of the other columns.
    top = everything.argmax(dim=-1, keepdim=True)
    others = torch.logsumexp(everything.scatter(-1, top, float("-inf")), dim=-1, keepdim=True)
    gap = others - everything.gather(-1, top)  # [..., 1]
    log_p = log_p.scatter(-1, top, -F.softplus(gap))
    log_not = log_not.scatter(-1, top, gap - F.softplus(gap))
    start = 1 if background is not None else 0
    return log_p[..., start : start + logits.shape[-1]], log_not[..., start : start + logits.shape[-1]]


class ViLDModel(OVMLCPreTrainedModel):
    """ViLD: regions of each image (windows over the patch grid, or given boxes) → RoIAlign on the frozen CLIP's
    dense tokens → trainable head(s) → region embeddings scored against frozen label embeddings and a learned
    background; an image's score of a label is its best region's probability, and `detect()` returns the boxes.

    `encode_image_features` returns `{"patch_tokens": [B, N, H_v]}` (post-LayerNorm ViT patch tokens, the global
    token left out, frozen, so the trainer caches them); `encode_training_features` adds `teacher_embeds [B, R_w, D]`,
    the frozen CLIP embeddings of every window's crops (1x and 1.5x ensembled), the ViLD-image distillation targets,
    cached with them. With `region_encoder="clip_crops"` the region embeddings are those crop embeddings themselves
    (`region_embeds`).
    """

    config: ViLDConfig
    uses_frozen_image_features = True
    # Box targets and distillation targets are tied to the fixed geometry of the evaluation transform.
    augment_allowed = False
    # Traits of region-based methods (docs/architecture.md): the trainer feeds object boxes; outputs carry boxes.
    uses_object_boxes = True
    produces_boxes = True
    # Built by the method (a CLIP checkpoint has none of them); the frozen CLIP is the one inherited module.
    modules_created_on_load = ("text_head", "image_head", "background")
    # SigLIP: the teacher embeds crops with the pooled embedding (`image_features`), the student's heads read the
    # post-LayerNorm patch tokens and learn their own projection to the joint space (docs/siglip.md).
    supported_backbone_families = ("clip", "siglip")

    def __init__(self, config: ViLDConfig):
        super().__init__(config)
        vision_config = self.clip.config.vision_config
        dim = embedding_dim(self.clip)
        in_features = vision_config.hidden_size * config.roi_output_size**2
        self.text_head = self.image_head = None
        if config.region_encoder == "head":
            self.text_head = ViLDRegionHead(in_features, config.head_hidden_size, config.head_num_layers, dim)
            if config.double_branch:
                self.image_head = ViLDRegionHead(in_features, config.head_hidden_size, config.head_num_layers, dim)
        self.background = ViLDBackground(dim)
        self._windows: torch.Tensor | None = None
        self._seen_reference: tuple[tuple, torch.Tensor] | None = None
        self.post_init()
        self._freeze()

    # ------------------------------------------------------------------ set-up
    def _freeze(self) -> None:
        self.clip.requires_grad_(False)

    def post_load(self) -> None:
        self._freeze()

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        # Head layers get the default normal(0, initializer_range) init; the background its own std.
        if isinstance(module, ViLDBackground):
            init.normal_(module.embedding, mean=0.0, std=self.config.background_init_std)

    def train(self, mode: bool = True):
        super().train(mode)
        self.clip.eval()  # frozen backbone and teacher
        return self

    # ViLD's protocol (LVIS / COCO generalized detection) scores novel classes within the whole vocabulary: the ZSL
    # views use the unseen columns of the all-label scores, even though a softmax makes them depend on the label set.
    zsl_scores_unseen_alone = False

    @property
    def scores_depend_on_label_set(self) -> bool:  # type: ignore[override]
        """True with `region_scoring="softmax"` (ViLD): a region's probabilities are normalised over the scored
        labels, so a label's score changes with the labels scored next to it. (Read on the class, the property
        object is truthy: the conservative answer.)"""
        return self.config.region_scoring == "softmax"

    @property
    def uses_background(self) -> bool:
        """The background embedding is learned by the ViLD-text loss only; without it, regions are scored against
        the labels alone."""
        return self.config.region_encoder == "head" and float(self.config.text_weight) > 0

    @property
    def distills(self) -> bool:
        return self.config.region_encoder == "head" and float(self.config.distillation_weight) > 0

    def windows(self, device: torch.device | None = None) -> torch.Tensor:
        """The default regions `[R_w, 4]` (normalised), from the config's window sizes, strides and ratios."""
        if self._windows is None:
            config = self.config
            self._windows = multiscale_windows(config.window_sizes, config.window_strides, config.window_aspect_ratios)
        return self._windows.to(device or self.device)

    def image_feature_settings(self) -> dict[str, Any]:
        """The config fields that determine (training) image features, for the trainer's feature-cache key: the
        distillation variants (ensemble, ViLD-image, any w > 0) share one teacher cache."""
        config = self.config
        return {
            "region_encoder": config.region_encoder,
            "distillation_targets": self.distills,
            "windows": [config.window_sizes, config.window_strides, config.window_aspect_ratios],
            "crop_mode": config.crop_mode,
            "crop_context": config.crop_context,
        }

    # ------------------------------------------------------------------ image side
    @torch.no_grad()
    def crop_embeddings(self, pixel_values: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        """Frozen CLIP embeddings `[B, R, D]` of regions: each box `[R, 4]` (shared) or `[B, R, 4]` is cropped at every
        `crop_context` scale (`crop_mode`), embedded, L2-normalised; the scales are averaged and renormalised."""
        batch = pixel_values.shape[0]
        boxes = boxes.to(pixel_values.device).float()
        boxes = boxes.expand(batch, *boxes.shape) if boxes.ndim == 2 else boxes  # [B, R, 4]
        embeddings = []
        for region in range(boxes.shape[1]):
            crops = [
                crop_regions(pixel_values, expand_boxes(boxes[:, region], factor), self.config.crop_mode)
                for factor in self.config.crop_context
            ]  # each [B, 3, H, W]
            embeds = image_features(self.clip, torch.cat(crops))["image_embeds"]  # [S * B, D]
            embeds = F.normalize(embeds.float(), dim=-1).reshape(len(crops), batch, -1)
            embeddings.append(F.normalize(embeds.mean(dim=0), dim=-1))  # [B, D]
        return torch.stack(embeddings, dim=1)  # [B, R, D]

    def encode_image_features(self, pixel_values: torch.Tensor) -> dict[str, torch.Tensor]:
        pixel_values = pixel_values.to(self.dtype)
        if self.config.region_encoder == "clip_crops":
            return {"region_embeds": self.crop_embeddings(pixel_values, self.windows(pixel_values.device))}
        with torch.no_grad():
            tokens = vision_tokens(self.clip, pixel_values)  # [B, G + N, H_v]
        # the patch grid only: CLIP's CLS token (G = 1) left out; SigLIP has no global token (G = 0)
        return {"patch_tokens": tokens[:, backbone_family(self.clip).global_tokens :]}

    def encode_training_features(self, pixel_values: torch.Tensor) -> dict[str, torch.Tensor]:
        """`encode_image_features` plus the distillation targets of the windows (the trainer caches both)."""
        features = self.encode_image_features(pixel_values)
        if self.distills:
            features["teacher_embeds"] = self.crop_embeddings(pixel_values.to(self.dtype), self.windows())
        return features

    # ------------------------------------------------------------------ regions
    def _regions(self, image_features: dict[str, torch.Tensor], batch: int, device) -> tuple[torch.Tensor, ...]:
        """Boxes `[B, R, 4]`, validity `[B, R]` and the number of leading default windows (0 with caller boxes)."""
        given = image_features.get("region_boxes")
        if given is not None:
            boxes = given.to(device).float()
            valid = image_features.get("region_valid")
            valid = torch.ones(boxes.shape[:2], dtype=torch.bool, device=device) if valid is None else valid.bool()
            num_windows = 0
        else:
            windows = self.windows(device)
            boxes = windows.expand(batch, *windows.shape)
            valid = torch.ones(boxes.shape[:2], dtype=torch.bool, device=device)
            num_windows = windows.shape[0]
        objects = image_features.get("object_boxes")
        box_supervised = self.config.train_on_object_boxes and self.config.text_supervision != "image"
        if self.training and box_supervised and objects is not None and given is None:
            object_valid = image_features["object_labels"].to(device) >= 0  # [B, K]
            boxes = torch.cat([boxes, objects.to(device).float()], dim=1)
            valid = torch.cat([valid, object_valid], dim=1)
        return boxes, valid, num_windows

    def _head_inputs(self, patch_tokens: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        """RoIAlign of the patch grid `[B, N, H_v]` over boxes `[B, R, 4]` → flattened `[B, R, S * S * H_v]`."""
        batch, num_patches, width = patch_tokens.shape
        height_cells, width_cells = patch_grid_size(self.clip)
        if height_cells * width_cells != num_patches:
            raise ValueError(f"{num_patches} patch tokens do not form the {height_cells}x{width_cells} grid")
        grid = patch_tokens.transpose(1, 2).reshape(batch, width, height_cells, width_cells)  # [B, H_v, h, w]
        scale = boxes.new_tensor([width_cells, height_cells, width_cells, height_cells])
        pooled = roi_align(grid, boxes * scale, self.config.roi_output_size, self.config.roi_sampling_ratio)
        return pooled.flatten(2)  # [B, R, H_v * S * S]

    def _seen_mask(self, label_embeds: torch.Tensor) -> torch.Tensor:
        """`[C]` bool: which scored labels are seen. A label is seen when its embedding is that of one of
        `config.seen_labels` (the same name through the same frozen text tower and templates gives the same
        embedding), so every caller (trainer, evaluation, pipeline) gets the ensemble's weights without passing names.
        Without `config.seen_labels` (an untrained model) every label is unseen."""
        seen = list(self.config.seen_labels or [])
        if not seen:
            return torch.zeros(label_embeds.shape[0], dtype=torch.bool, device=label_embeds.device)
        vocabulary = self.vocabulary(seen)
        key = (tuple(seen), vocabulary.templates_key, self.text_fingerprint())
        if self._seen_reference is None or self._seen_reference[0] != key:
            with torch.no_grad():
                reference = F.normalize(self.encode_labels(vocabulary).float(), dim=-1)
            self._seen_reference = (key, reference)
        reference = self._seen_reference[1].to(label_embeds.device)
        similarity = F.normalize(label_embeds.float(), dim=-1) @ reference.T  # [C, S]
        return similarity.max(dim=1).values > 1.0 - 1e-5

    # ------------------------------------------------------------------ scoring
    def score(self, image_features, label_embeds, return_label_maps=False) -> ViLDOutput:
        config = self.config
        if config.region_encoder == "clip_crops":
            if "region_embeds" not in image_features:
                raise ValueError(
                    "ViLDModel.score (region_encoder='clip_crops') needs image_features['region_embeds'] from "
                    f"encode_image_features, got keys {sorted(image_features)}"
                )
            text_embeds = image_features["region_embeds"].float()  # [B, R, D]
            batch, device = text_embeds.shape[0], text_embeds.device
        else:
            if "patch_tokens" not in image_features:
                raise ValueError(
                    "ViLDModel.score needs image_features['patch_tokens'] (from encode_image_features), got keys "
                    f"{sorted(image_features)}"
                )
            batch, device = image_features["patch_tokens"].shape[0], image_features["patch_tokens"].device
        boxes, valid, _ = self._regions(image_features, batch, device)
        if config.region_encoder == "clip_crops" and text_embeds.shape[1] != boxes.shape[1]:
            raise ValueError(
                f"{text_embeds.shape[1]} region embeddings for {boxes.shape[1]} regions: with region_encoder="
                "'clip_crops', pass pixel_values with region_boxes (the crops are embedded for those boxes)"
            )
        if config.region_encoder == "head":
            head_inputs = self._head_inputs(
                image_features["patch_tokens"].to(self.text_head.projection.weight.dtype), boxes
            )
            text_embeds = self.text_head(head_inputs)  # [B, R, D]
            image_embeds = self.image_head(head_inputs) if self.image_head is not None else text_embeds
        else:
            image_embeds = text_embeds
        labels = F.normalize(label_embeds.to(text_embeds.dtype), dim=-1)  # [C, D]
        temperature = float(config.temperature)
        text_logits = text_embeds @ labels.T / temperature  # [B, R, C]
        background_logits = text_embeds @ self.background().to(text_embeds.dtype) / temperature  # [B, R]
        background = background_logits if self.uses_background else None
        log_p, log_not = log_probabilities(text_logits, background, config.region_scoring)
        # The ensemble is an inference-time combination: training steps only need each head's own outputs.
        if self.image_head is not None and not self.training:
            image_background = (
                (image_embeds @ self.background().to(image_embeds.dtype) / temperature)
                if background is not None
                else None
            )
            image_log_p, _ = log_probabilities(
                image_embeds @ labels.T / temperature, image_background, config.region_scoring
            )
            weight = float(config.ensemble_weight)
            seen = self._seen_mask(label_embeds)  # [C]
            lam = torch.where(
                seen,
                torch.full_like(seen, weight, dtype=log_p.dtype),
                torch.full_like(seen, 1 - weight, dtype=log_p.dtype),
            )
            # p = p_text^lambda * p_image^(1 - lambda); 1 - p = -expm1(log p) stays accurate when p is close to 1.
            log_p = lam * log_p + (1 - lam) * image_log_p
            log_not = torch.log(-torch.expm1(log_p))
        region_log_odds = (log_p - log_not).clamp(-MAX_LOG_ODDS, MAX_LOG_ODDS)
        region_log_odds = region_log_odds.masked_fill(~valid[..., None], -MAX_LOG_ODDS)
        logits, label_regions = region_log_odds.max(dim=1)  # [B, C]: the best region of each label
        label_boxes = boxes.gather(1, label_regions[..., None].expand(-1, -1, 4))  # [B, C, 4]
        label_maps = self._label_maps(boxes, valid, region_log_odds) if return_label_maps else None
        return ViLDOutput(
            logits=logits,
            label_maps=label_maps,
            region_boxes=boxes,
            region_valid=valid,
            region_log_odds=region_log_odds,
            label_boxes=label_boxes,
            label_regions=label_regions,
            region_text_logits=text_logits,
            region_background_logits=background_logits,
            region_text_embeds=text_embeds,
            region_image_embeds=image_embeds,
        )

    def _label_maps(self, boxes: torch.Tensor, valid: torch.Tensor, region_log_odds: torch.Tensor) -> torch.Tensor:
        """`[B, C, h, w]` probability maps over the patch grid: per cell, the best region containing its centre."""
        height, width = patch_grid_size(self.clip)
        ys = (torch.arange(height, device=boxes.device, dtype=boxes.dtype) + 0.5) / height
        xs = (torch.arange(width, device=boxes.device, dtype=boxes.dtype) + 0.5) / width
        centre_y, centre_x = (v.reshape(-1) for v in torch.meshgrid(ys, xs, indexing="ij"))  # [h * w]
        inside = (
            (boxes[..., 0:1] <= centre_x)
            & (centre_x <= boxes[..., 2:3])
            & (boxes[..., 1:2] <= centre_y)
            & (centre_y <= boxes[..., 3:4])
            & valid[..., None]
        )  # [B, R, h * w]
        masked = torch.where(
            inside[..., None],
            region_log_odds[:, :, None, :],
            torch.full_like(region_log_odds[:, :, None, :], -MAX_LOG_ODDS),
        )
        best = masked.max(dim=1).values  # [B, h * w, C]
        return torch.sigmoid(best).permute(0, 2, 1).reshape(boxes.shape[0], -1, height, width)

    # ------------------------------------------------------------------ training
    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        image_features: dict[str, torch.Tensor] | None = None,
        label_embeds: torch.Tensor | None = None,
        label_names: Sequence[str] | LabelVocabulary | None = None,
        labels: torch.Tensor | None = None,
        label_mask: torch.Tensor | None = None,
        return_label_maps: bool = False,
        object_boxes: torch.Tensor | None = None,
        object_labels: torch.Tensor | None = None,
        region_boxes: torch.Tensor | None = None,
        region_valid: torch.Tensor | None = None,
        **kwargs,
    ) -> ViLDOutput:
        r"""
        Same as `OVMLCPreTrainedModel.forward`, plus:
        object_boxes (`[B, K, 4]`), object_labels (`[B, K]`): ground-truth boxes (normalised) and their label columns
            (-1 = padding) for the region-level ViLD-text loss (the trainer passes them when the data has boxes).
        region_boxes (`[B, R, 4]`), region_valid (`[B, R]`): score these regions instead of the default windows.
        """
        if image_features is None and pixel_values is not None:
            training_step = self.training and labels is not None
            image_features = (
                self.encode_training_features(pixel_values)
                if training_step
                else self.encode_image_features(pixel_values)
            )
            if region_boxes is not None and self.config.region_encoder == "clip_crops":
                image_features = {"region_embeds": self.crop_embeddings(pixel_values.to(self.dtype), region_boxes)}
        if image_features is not None:
            extra = {
                key: value
                for key, value in (
                    ("object_boxes", object_boxes),
                    ("object_labels", object_labels),
                    ("region_boxes", region_boxes),
                    ("region_valid", region_valid),
                )
                if value is not None
            }
            image_features = {**image_features, **extra} if extra else image_features
        return super().forward(
            image_features=image_features,
            label_embeds=label_embeds,
            label_names=label_names,
            labels=labels,
            label_mask=label_mask,
            return_label_maps=return_label_maps,
        )

    def _num_masked_unseen_rows(self) -> int:
        if not self.config.mask_unseen_text_rows or self.config.region_scoring != "softmax":
            return 0
        return len(self.config.unseen_labels or [])

    def compute_loss(self, outputs, labels, label_mask, image_features) -> torch.Tensor:
        config = self.config
        if config.region_encoder != "head":
            raise ValueError(
                "ViLDModel with region_encoder='clip_crops' has nothing to train (it is the zero-shot teacher)"
            )
        loss = outputs.logits.new_zeros(())
        if float(config.text_weight) > 0:
            has_boxes = image_features.get("object_boxes") is not None
            if config.text_supervision == "boxes" and not has_boxes:
                raise ValueError(
                    "ViLDConfig.text_supervision='boxes' but the training batch has no object boxes (the dataset needs "
                    "an `objects` column; see docs/data.md)"
                )
            use_boxes = has_boxes and config.text_supervision != "image"
            text_loss = (
                self._box_text_loss(outputs, labels, image_features)
                if use_boxes
                else self._image_text_loss(outputs, labels, label_mask)
            )
            loss = loss + float(config.text_weight) * text_loss
        if self.distills:
            loss = loss + float(config.distillation_weight) * self._distillation_loss(outputs, image_features)
        return loss

    def _box_text_loss(self, outputs: ViLDOutput, labels: torch.Tensor, image_features) -> torch.Tensor:
        """Region-level softmax cross-entropy over [background, training labels, masked unseen rows] on regions
        matched to object boxes (IoU >= positive_iou: the object's labels; < background_iou with every box:
        background). An object with several labels (a red star: `star`, `red`) spreads its target evenly over them.
        Labels positive on an image without a box of their own (scene labels such as a background pattern) count as
        an object covering the whole image."""
        config = self.config
        boxes, valid = outputs.region_boxes, outputs.region_valid  # [B, R, 4], [B, R]
        object_boxes = image_features["object_boxes"].to(boxes.device).float()  # [B, K, 4]
        object_labels = image_features["object_labels"].to(boxes.device).long()  # [B, K]
        batch, num_labels = labels.shape
        present = (object_labels >= 0).to(boxes.dtype)
        box_counts = torch.zeros_like(labels, dtype=boxes.dtype).scatter_add_(1, object_labels.clamp(min=0), present)
        has_box = box_counts > 0  # [B, C]
        scene = (labels > 0.5) & ~has_box  # [B, C] positives without a box
        whole_image = boxes.new_tensor([0.0, 0.0, 1.0, 1.0]).expand(batch, num_labels, 4)
        label_ids = torch.arange(num_labels, device=boxes.device).expand(batch, num_labels)
        all_boxes = torch.cat([object_boxes, whole_image], dim=1)  # [B, K + C, 4]
        all_labels = torch.cat([object_labels, torch.where(scene, label_ids, torch.full_like(label_ids, -1))], dim=1)
        object_valid = all_labels >= 0  # [B, K']
        overlap = box_iou(boxes, all_boxes).masked_fill(~object_valid[:, None, :], -1.0)  # [B, R, K']
        best_iou, best = overlap.max(dim=-1)  # [B, R]
        best_box = all_boxes.gather(1, best[..., None].expand(-1, -1, 4))  # [B, R, 4]
        same_box = ((all_boxes[:, None] - best_box[:, :, None]).abs().amax(dim=-1) < 1e-6) & object_valid[:, None]
        one_hot = F.one_hot(all_labels.clamp(min=0), num_labels).to(boxes.dtype) * object_valid[..., None]  # [B, K', C]
        multi_hot = (same_box.to(boxes.dtype) @ one_hot).clamp(max=1.0)  # [B, R, C]
        positive = valid & (best_iou >= config.positive_iou) & (multi_hot.sum(dim=-1) > 0)
        background = valid & (best_iou < config.background_iou)
        extra = self._num_masked_unseen_rows()
        columns = [outputs.region_background_logits[..., None], outputs.region_text_logits]
        if extra:
            columns.append(outputs.region_text_logits.new_zeros((*best_iou.shape, extra)))
        log_softmax = torch.log_softmax(torch.cat(columns, dim=-1), dim=-1)  # [B, R, 1 + C + U]
        target = torch.zeros_like(log_softmax)
        share = multi_hot / multi_hot.sum(dim=-1, keepdim=True).clamp(min=1.0)
        target[..., 1 : 1 + num_labels] = share * positive[..., None]  # background regions learn background only
        target[..., 0] = background.to(target.dtype)
        used = positive | background
        per_region = -(target * log_softmax).sum(dim=-1)  # [B, R]
        return (per_region * used).sum() / used.sum().clamp(min=1)

    def _image_text_loss(
        self, outputs: ViLDOutput, labels: torch.Tensor, label_mask: torch.Tensor | None
    ) -> torch.Tensor:
        """Image-level labels only: a label's image logit aggregates its text-head region log-odds (max, or the
        log-mean-exp), under masked BCE or ASL."""
        config = self.config
        background = outputs.region_background_logits if self.uses_background else None
        log_p, log_not = log_probabilities(
            outputs.region_text_logits, background, config.region_scoring, self._num_masked_unseen_rows()
        )
        region_log_odds = (log_p - log_not).clamp(-MAX_LOG_ODDS, MAX_LOG_ODDS)
        valid = outputs.region_valid[..., None]
        if config.image_aggregation == "max":
            image_logits = region_log_odds.masked_fill(~valid, -MAX_LOG_ODDS).max(dim=1).values
        else:
            summed = torch.logsumexp(region_log_odds.masked_fill(~valid, float("-inf")), dim=1)
            image_logits = summed - torch.log(valid.sum(dim=1).clamp(min=1).to(summed.dtype))
        if config.image_loss == "asl":
            return asymmetric_loss(
                image_logits,
                labels,
                label_mask,
                gamma_neg=config.asl_gamma_neg,
                gamma_pos=config.asl_gamma_pos,
                clip=config.asl_clip,
            )
        return masked_bce_with_logits(image_logits, labels, label_mask)

    def _distillation_loss(self, outputs: ViLDOutput, image_features) -> torch.Tensor:
        """ViLD-image: `(1 / M) sum_r ||e_r - v_r||_1` between the (image head's) embeddings of the windows and their
        cached CLIP crop embeddings."""
        teacher = image_features.get("teacher_embeds")
        if teacher is None:
            raise ValueError(
                "ViLD distillation needs image_features['teacher_embeds'] (from encode_training_features: the trainer "
                "caches them; set distillation_weight=0 to train ViLD-text alone)"
            )
        if image_features.get("region_boxes") is not None:
            raise ValueError("ViLD distillation runs on the default windows; do not pass region_boxes while training")
        student = outputs.region_image_embeds[:, : teacher.shape[1]]  # the leading regions are the windows
        return (student - teacher.to(student.dtype)).abs().sum(dim=-1).mean()

    # ------------------------------------------------------------------ boxes
    def detect(
        self,
        images: ImageInput | Sequence[ImageInput],
        labels: Sequence[str] | LabelVocabulary,
        score_threshold: float | None = None,
        max_detections: int | None = None,
        nms_iou: float | None = None,
        boxes: Sequence[Sequence[Sequence[float]]] | None = None,
        batch_size: int = 32,
    ) -> list[list[dict[str, Any]]] | list[dict[str, Any]]:
        """Localise labels: per image, `[{"label", "score", "box": (x0, y0, x1, y1)}, ...]` in the input image's pixels,
        highest score first, after per-label NMS (`nms_iou`, default `config.nms_iou`), keeping scores
        `>= score_threshold` (default `config.detection_score_threshold`) and at most `max_detections` per image.
        `boxes` (per image, a list of `(x0, y0, x1, y1)` pixels) replaces the default windows as candidate regions.
        A single image (not in a list) gives a single list."""
        single = not isinstance(images, (list, tuple)) and not (isinstance(images, np.ndarray) and images.ndim == 4)
        image_list = load_images(images)
        if boxes is not None and len(boxes) != len(image_list):
            raise ValueError(f"detect(): {len(boxes)} box lists for {len(image_list)} images (one list per image)")
        threshold = self.config.detection_score_threshold if score_threshold is None else float(score_threshold)
        limit = self.config.max_detections if max_detections is None else int(max_detections)
        iou = self.config.nms_iou if nms_iou is None else float(nms_iou)
        vocabulary = self.vocabulary(labels)
        was_training = self.training
        self.eval()
        results = []
        try:
            with torch.inference_mode():
                label_embeds = self.encode_labels(vocabulary)
                for start in range(0, len(image_list), batch_size):
                    chunk = image_list[start : start + batch_size]
                    geometries = [processor_geometry(self.processor, *image.size) for image in chunk]
                    region_inputs = {}
                    if boxes is not None:
                        region_inputs = self._caller_regions(boxes[start : start + batch_size], geometries)
                    outputs = self(pixel_values=self.preprocess(chunk), label_embeds=label_embeds, **region_inputs)
                    for index, geometry in enumerate(geometries):
                        results.append(
                            self._detections(outputs, index, geometry, vocabulary.names, threshold, limit, iou)
                        )
        finally:
            self.train(was_training)
        return results[0] if single else results

    def _caller_regions(self, boxes, geometries) -> dict[str, torch.Tensor]:
        """Caller boxes (pixels, per image) → padded normalised `region_boxes [B, R, 4]` and `region_valid [B, R]`."""
        longest = max((len(image_boxes) for image_boxes in boxes), default=0)
        if longest == 0:
            raise ValueError("detect(boxes=...): every image needs at least one box")
        region_boxes = torch.zeros(len(boxes), longest, 4)
        region_valid = torch.zeros(len(boxes), longest, dtype=torch.bool)
        for row, (image_boxes, geometry) in enumerate(zip(boxes, geometries)):
            if len(image_boxes) == 0:
                raise ValueError(f"detect(boxes=...): image #{row} has no box")
            pixels = torch.as_tensor(np.asarray(image_boxes, dtype=np.float32).reshape(-1, 4))
            if bool((pixels[:, 2:] <= pixels[:, :2]).any()):
                raise ValueError(
                    f"detect(boxes=...): image #{row} has a box with x1 <= x0 or y1 <= y0: {pixels.tolist()}"
                )
            region_boxes[row, : len(pixels)] = geometry.pixels_to_normalized(pixels).clamp(0.0, 1.0)
            region_valid[row, : len(pixels)] = True
        return {"region_boxes": region_boxes.to(self.device), "region_valid": region_valid.to(self.device)}

    def _detections(self, outputs: ViLDOutput, index: int, geometry, names, threshold, limit, iou) -> list[dict]:
        log_odds = outputs.region_log_odds[index].float()  # [R, C]
        log_odds = log_odds.masked_fill(~outputs.region_valid[index][:, None], float("-inf"))
        if threshold <= 0:
            min_log_odds = None
        elif threshold >= 1:  # p = 1 only where the log-odds saturate; nothing passes a threshold above 1
            min_log_odds = MAX_LOG_ODDS if threshold == 1 else math.inf
        else:
            min_log_odds = math.log(threshold) - math.log1p(-threshold)
        kept = per_label_nms(outputs.region_boxes[index].float(), log_odds, iou, limit, min_log_odds)
        pixels = geometry.normalized_to_pixels(outputs.region_boxes[index].float().cpu())
        return [
            {
                "label": names[label],
                "score": float(torch.sigmoid(torch.tensor(score))),
                "box": tuple(round(float(v), 2) for v in pixels[region]),
            }
            for label, region, score in kept
        ]


ViLDConfig.register_for_auto_class()
ViLDModel.register_for_auto_class("AutoModel")

__all__ = ["ViLDModel", "ViLDOutput", "log_probabilities"]
