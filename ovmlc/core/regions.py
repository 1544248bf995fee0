"""Regions over an image: candidate windows, box arithmetic, RoIAlign on dense ViT tokens, crops for a CLIP teacher,
and the geometry that maps boxes between an input image and the model's input frame.

Conventions used everywhere in ovmlc:

* a *box* is `(x0, y0, x1, y1)` (corners, `x1 > x0`, `y1 > y0`), in **normalised** coordinates of the model's input
  frame (`[0, 1]`, the preprocessed `pixel_values`) unless a name says `pixels`;
* datasets store boxes as **XYWH in pixels of the original image** (COCO convention, see docs/data.md); the geometry
  helpers (`BoxGeometry`) convert between the two through a processor's or a transform preset's resize/crop steps;
* a pixel `i` of a grid covers `[i, i + 1)`, so its centre is at `i + 0.5` (torchvision's `aligned=True`).

Only torch and numpy: this module is part of the code a Hub user runs (no torchvision).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

# ----------------------------------------------------------------------------------------------------------------------
# Candidate windows
# ----------------------------------------------------------------------------------------------------------------------


def _axis_starts(extent: float, stride: float) -> list[float]:
    """Start positions of windows of length `extent` over `[0, 1]`: spaced at most `stride` apart, the first at 0
    and the last touching 1 (so the windows tile the axis edge to edge)."""
    free = max(0.0, 1.0 - extent)
    if free <= 1e-9:
        return [0.0]
    count = math.ceil(free / stride - 1e-6) + 1
    return [free * index / (count - 1) for index in range(count)]


def multiscale_windows(
    sizes: Sequence[float], strides: Sequence[float], aspect_ratios: Sequence[float] = (1.0,)
) -> torch.Tensor:
    """Class-agnostic sliding windows `[R, 4]` (normalised boxes), coarse to fine in the order of `sizes`.

    `sizes[i]` is a window's side as a fraction of the image side (for aspect ratio 1), `strides[i]` the largest step
    between neighbouring windows of that size (same unit); `aspect_ratios` (width / height) stretch each size at
    constant area, clipped to the image. Duplicates (e.g. a full-image window at several ratios) are dropped.
    """
    if len(sizes) != len(strides):
        raise ValueError(f"window sizes {list(sizes)} and strides {list(strides)} must have the same length")
    boxes: list[tuple[float, float, float, float]] = []
    seen: set[tuple[float, ...]] = set()
    for size, stride in zip(sizes, strides):
        if not 0 < size <= 1 or stride <= 0:
            raise ValueError(f"window size must be in (0, 1] and stride > 0, got size {size}, stride {stride}")
        for ratio in aspect_ratios:
            if ratio <= 0:
                raise ValueError(f"window aspect ratios must be > 0, got {ratio}")
            width, height = min(1.0, size * math.sqrt(ratio)), min(1.0, size / math.sqrt(ratio))
            for top in _axis_starts(height, stride):
                for left in _axis_starts(width, stride):
                    box = (left, top, left + width, top + height)
                    key = tuple(round(value, 6) for value in box)
                    if key not in seen:
                        seen.add(key)
                        boxes.append(box)
    return torch.tensor(boxes, dtype=torch.float32)


# ----------------------------------------------------------------------------------------------------------------------
# Box arithmetic
# ----------------------------------------------------------------------------------------------------------------------


def box_area(boxes: torch.Tensor) -> torch.Tensor:
    """`[..., 4]` → `[...]` (0 for degenerate boxes)."""
    return (boxes[..., 2] - boxes[..., 0]).clamp(min=0) * (boxes[..., 3] - boxes[..., 1]).clamp(min=0)


def box_iou(boxes_a: torch.Tensor, boxes_b: torch.Tensor) -> torch.Tensor:
    """Pairwise IoU of `[..., N, 4]` and `[..., M, 4]` (leading dims broadcast) → `[..., N, M]`; 0 when both are
    empty."""
    top_left = torch.maximum(boxes_a[..., :, None, :2], boxes_b[..., None, :, :2])
    bottom_right = torch.minimum(boxes_a[..., :, None, 2:], boxes_b[..., None, :, 2:])
    intersection = (bottom_right - top_left).clamp(min=0).prod(dim=-1)  # [..., N, M]
    union = box_area(boxes_a)[..., :, None] + box_area(boxes_b)[..., None, :] - intersection
    return torch.where(union > 0, intersection / union.clamp(min=1e-12), torch.zeros_like(intersection))


def expand_boxes(boxes: torch.Tensor, factor: float, clip: bool = True) -> torch.Tensor:
    """Scale boxes `[..., 4]` by `factor` about their centres (ViLD's 1.5x context crops), clipped to `[0, 1]`."""
    centre = (boxes[..., :2] + boxes[..., 2:]) / 2
    half = (boxes[..., 2:] - boxes[..., :2]) * (factor / 2)
    expanded = torch.cat([centre - half, centre + half], dim=-1)
    return expanded.clamp(0.0, 1.0) if clip else expanded


def xywh_to_xyxy(boxes: torch.Tensor | np.ndarray) -> torch.Tensor | np.ndarray:
    """`(x, y, width, height)` → `(x0, y0, x1, y1)`, same type and shape `[..., 4]`."""
    if isinstance(boxes, np.ndarray):
        return np.concatenate([boxes[..., :2], boxes[..., :2] + boxes[..., 2:]], axis=-1)
    return torch.cat([boxes[..., :2], boxes[..., :2] + boxes[..., 2:]], dim=-1)


def nms_from_iou(iou: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Greedy non-maximum suppression over boxes whose pairwise IoU `[N, N]` is known (ViLD scores every label on the
    same regions, so one IoU matrix serves every label). Returns the kept indices, highest score first; a box is
    dropped when its IoU with a kept, higher-scoring box is above `iou_threshold`. Ties keep the lower index."""
    order = torch.sort(scores, descending=True, stable=True).indices.tolist()
    suppressed = torch.zeros(len(order), dtype=torch.bool)
    over = (iou > iou_threshold).cpu()
    keep = []
    for index in order:
        if suppressed[index]:
            continue
        keep.append(index)
        suppressed |= over[index]
    return torch.tensor(keep, dtype=torch.long)


def per_label_nms(
    boxes: torch.Tensor,
    scores: torch.Tensor,
    iou_threshold: float,
    max_detections: int,
    score_threshold: float | None = None,
) -> list[tuple[int, int, float]]:
    """Detections of one image from regions scored for every label.

    boxes: `[R, 4]`; scores: `[R, C]` (any monotone score; -inf marks an invalid region). Non-maximum suppression runs
    per label; the survivors of all labels are ranked by score and cut to `max_detections`. Returns
    `[(label index, region index, score), ...]`, highest score first.
    """
    iou = box_iou(boxes, boxes)  # [R, R], shared by every label
    candidates: list[tuple[int, int, float]] = []
    for label in range(scores.shape[1]):
        column = scores[:, label]
        usable = (
            torch.isfinite(column) if score_threshold is None else torch.isfinite(column) & (column >= score_threshold)
        )
        if not bool(usable.any()):
            continue
        indices = torch.nonzero(usable).flatten()
        kept = nms_from_iou(iou[indices][:, indices], column[indices], iou_threshold)
        candidates.extend((label, int(indices[k]), float(column[indices[k]])) for k in kept)
    candidates.sort(key=lambda item: (-item[2], item[0], item[1]))
    return candidates[:max_detections]


# ----------------------------------------------------------------------------------------------------------------------
# RoIAlign (torchvision's `roi_align(..., aligned=True)` semantics, in plain torch)
# ----------------------------------------------------------------------------------------------------------------------


def roi_align(features: torch.Tensor, boxes: torch.Tensor, output_size: int, sampling_ratio: int = 2) -> torch.Tensor:
    """Bilinear RoI pooling of feature maps.

    features: `[B, C, H, W]`; cell `(i, j)` covers `[j, j + 1) x [i, i + 1)` of the grid, its value sits at the centre.
    boxes: `[B, R, 4]` `(x0, y0, x1, y1)` in grid units (a normalised box times `(W, H)`).
    Returns `[B, R, C, output_size, output_size]`: each box is cut into `output_size x output_size` bins, each bin
    averages `sampling_ratio x sampling_ratio` evenly spaced bilinear samples (at the sub-bin centres). A sample more
    than one cell outside the grid reads 0; one within a cell of the border reads the border value (as torchvision).
    """
    if features.ndim != 4 or boxes.ndim != 3 or boxes.shape[-1] != 4 or boxes.shape[0] != features.shape[0]:
        raise ValueError(
            f"roi_align needs features [B, C, H, W] and boxes [B, R, 4]; got {tuple(features.shape)} and "
            f"{tuple(boxes.shape)}"
        )
    if output_size < 1 or sampling_ratio < 1:
        raise ValueError(f"output_size and sampling_ratio must be >= 1, got {output_size}, {sampling_ratio}")
    batch, channels, height, width = features.shape
    num_boxes = boxes.shape[1]
    steps = output_size * sampling_ratio
    # Sample positions along each axis: sub-bin centres, [B, R, steps], in grid units.
    offsets = (torch.arange(steps, device=boxes.device, dtype=boxes.dtype) + 0.5) / steps  # [steps]
    xs = boxes[..., 0:1] + (boxes[..., 2:3] - boxes[..., 0:1]) * offsets  # [B, R, steps]
    ys = boxes[..., 1:2] + (boxes[..., 3:4] - boxes[..., 1:2]) * offsets  # [B, R, steps]
    # Index space (cell centres at integers); torchvision zeroes samples beyond one cell outside the grid.
    x_index, y_index = xs - 0.5, ys - 0.5
    x_valid = (x_index >= -1.0) & (x_index <= width)
    y_valid = (y_index >= -1.0) & (y_index <= height)
    # grid_sample (align_corners=False, border padding) reads at normalised 2 * x / W - 1 with x in grid units.
    grid_x = (2.0 * xs / width - 1.0)[:, :, None, :].expand(batch, num_boxes, steps, steps)
    grid_y = (2.0 * ys / height - 1.0)[:, :, :, None].expand(batch, num_boxes, steps, steps)
    grid = torch.stack([grid_x, grid_y], dim=-1).reshape(batch, num_boxes * steps, steps, 2)
    sampled = F.grid_sample(
        features, grid.to(features.dtype), mode="bilinear", padding_mode="border", align_corners=False
    )  # [B, C, R * steps, steps]
    sampled = sampled.reshape(batch, channels, num_boxes, steps, steps)
    valid = (y_valid[:, :, :, None] & x_valid[:, :, None, :]).to(features.dtype)  # [B, R, steps, steps]
    sampled = sampled * valid[:, None]
    pooled = sampled.reshape(batch, channels, num_boxes, output_size, sampling_ratio, output_size, sampling_ratio)
    return pooled.mean(dim=(4, 6)).permute(0, 2, 1, 3, 4)  # [B, R, C, S, S]


# ----------------------------------------------------------------------------------------------------------------------
# Crops for a CLIP teacher
# ----------------------------------------------------------------------------------------------------------------------

CROP_MODES = ("resize", "mask")


def crop_regions(pixel_values: torch.Tensor, boxes: torch.Tensor, mode: str = "resize") -> torch.Tensor:
    """The image content of one normalised box per image, as a CLIP input of the same size `[B, 3, H, W]`.

    pixel_values: `[B, 3, H, W]` (normalised by the processor); boxes: `[B, 4]` or `[4]` (shared).
    `mode="resize"` (ViLD): the box is cut out and resized (bilinear) to `H x W`. `mode="mask"`: the image keeps its
    geometry and everything outside the box is set to 0, the processor's mean colour; each pixel is weighted by the
    fraction of it inside the box. `mask` suits backbones that only know objects at their native scale.
    """
    if mode not in CROP_MODES:
        raise ValueError(f"crop mode must be one of {CROP_MODES}, got {mode!r}")
    batch, _, height, width = pixel_values.shape
    boxes = boxes.to(pixel_values.device, torch.float32).expand(batch, 4) if boxes.ndim == 1 else boxes.float()
    if mode == "mask":
        # Coverage of each pixel column / row by the box: overlap of [i, i + 1) with [x0 * W, x1 * W).
        columns = torch.arange(width, device=pixel_values.device, dtype=torch.float32)
        rows = torch.arange(height, device=pixel_values.device, dtype=torch.float32)
        x0, y0, x1, y1 = (boxes[:, k : k + 1] for k in range(4))
        cover_x = (torch.minimum(columns + 1, x1 * width) - torch.maximum(columns, x0 * width)).clamp(0, 1)  # [B, W]
        cover_y = (torch.minimum(rows + 1, y1 * height) - torch.maximum(rows, y0 * height)).clamp(0, 1)  # [B, H]
        mask = cover_y[:, :, None] * cover_x[:, None, :]  # [B, H, W]
        return pixel_values * mask[:, None].to(pixel_values.dtype)
    positions_x = (torch.arange(width, device=pixel_values.device, dtype=torch.float32) + 0.5) / width  # [W]
    positions_y = (torch.arange(height, device=pixel_values.device, dtype=torch.float32) + 0.5) / height  # [H]
    xs = boxes[:, 0:1] + (boxes[:, 2:3] - boxes[:, 0:1]) * positions_x  # [B, W] normalised image x
    ys = boxes[:, 1:2] + (boxes[:, 3:4] - boxes[:, 1:2]) * positions_y  # [B, H]
    grid = torch.stack(
        [(2 * xs - 1)[:, None, :].expand(batch, height, width), (2 * ys - 1)[:, :, None].expand(batch, height, width)],
        dim=-1,
    )  # [B, H, W, 2]
    return F.grid_sample(
        pixel_values, grid.to(pixel_values.dtype), mode="bilinear", padding_mode="border", align_corners=False
    )


# ----------------------------------------------------------------------------------------------------------------------
# Geometry: original image pixels <-> model input frame
# ----------------------------------------------------------------------------------------------------------------------


class UnsupportedGeometryError(ValueError):
    """A resize/crop step whose effect on boxes is unknown (e.g. a random crop)."""


@dataclass(frozen=True)
class BoxGeometry:
    """Where an image of `width x height` pixels lands in a model input of `out_width x out_height`: input pixel
    coordinate `x` maps to `x * scale_x + offset_x` (same for y)."""

    width: int
    height: int
    out_width: int
    out_height: int
    scale_x: float = 1.0
    scale_y: float = 1.0
    offset_x: float = 0.0
    offset_y: float = 0.0

    def pixels_to_normalized(self, boxes: torch.Tensor) -> torch.Tensor:
        """Boxes `[..., 4]` (xyxy, original pixels) → normalised model-frame boxes (not clipped)."""
        scale = boxes.new_tensor([self.scale_x, self.scale_y, self.scale_x, self.scale_y])
        offset = boxes.new_tensor([self.offset_x, self.offset_y, self.offset_x, self.offset_y])
        size = boxes.new_tensor([self.out_width, self.out_height, self.out_width, self.out_height])
        return (boxes * scale + offset) / size

    def normalized_to_pixels(self, boxes: torch.Tensor, clip: bool = True) -> torch.Tensor:
        """Normalised model-frame boxes `[..., 4]` → xyxy pixels of the original image (clipped to it)."""
        scale = boxes.new_tensor([self.scale_x, self.scale_y, self.scale_x, self.scale_y])
        offset = boxes.new_tensor([self.offset_x, self.offset_y, self.offset_x, self.offset_y])
        size = boxes.new_tensor([self.out_width, self.out_height, self.out_width, self.out_height])
        pixels = (boxes * size - offset) / scale
        if clip:
            limit = boxes.new_tensor([self.width, self.height, self.width, self.height])
            pixels = torch.minimum(pixels.clamp(min=0), limit)
        return pixels


def _size_value(size: Any, key: str) -> int | None:
    value = size.get(key) if isinstance(size, Mapping) else getattr(size, key, None)
    return int(value) if value else None


def processor_steps(processor: Any) -> list[dict[str, Any]]:
    """The geometric steps of a CLIP-style image processor (`do_resize` with `shortest_edge` or `height`/`width`,
    `do_center_crop` with `crop_size`) as transform-preset steps (see `steps_geometry`)."""
    steps: list[dict[str, Any]] = []
    size = getattr(processor, "size", None) or {}
    if getattr(processor, "do_resize", True) and size:
        shortest = _size_value(size, "shortest_edge")
        if shortest:
            steps.append({"op": "resize_shortest_edge", "size": shortest})
        elif _size_value(size, "height") and _size_value(size, "width"):
            steps.append({"op": "resize", "width": _size_value(size, "width"), "height": _size_value(size, "height")})
        else:
            raise UnsupportedGeometryError(f"image processor size {size!r}: expected shortest_edge or height/width")
    crop = getattr(processor, "crop_size", None)
    if getattr(processor, "do_center_crop", False) and crop:
        height, width = _size_value(crop, "height"), _size_value(crop, "width")
        if height != width:
            raise UnsupportedGeometryError(f"non-square center crop {crop!r} is not supported")
        steps.append({"op": "center_crop", "size": height})
    return steps


def steps_geometry(steps: Sequence[Mapping[str, Any]], width: int, height: int) -> BoxGeometry:
    """The `BoxGeometry` of deterministic resize/crop steps (`resize_shortest_edge`, `center_crop`, `squash`, `resize`)
    applied to a `width x height` image, with the same rounding as `ovmlc.data.transforms` and CLIP processors.
    Photometric steps are ignored; a random geometric step raises `UnsupportedGeometryError`."""
    scale_x = scale_y = 1.0
    offset_x = offset_y = 0.0
    current_w, current_h = int(width), int(height)
    for step in steps:
        op = step.get("op")
        if op == "resize_shortest_edge":
            size = int(step["size"])
            if current_w <= current_h:
                new_w, new_h = size, int(size * current_h / current_w)
            else:
                new_w, new_h = int(size * current_w / current_h), size
        elif op in ("squash", "resize"):
            new_w = int(step.get("width", step.get("size")))
            new_h = int(step.get("height", step.get("size")))
        elif op == "center_crop":
            size = int(step["size"])
            # Zero padding first when the image is smaller (as ovmlc.data.transforms.center_crop), then the crop.
            pad_x = (max(current_w, size) - current_w + 1) // 2
            pad_y = (max(current_h, size) - current_h + 1) // 2
            canvas_w, canvas_h = max(current_w, size), max(current_h, size)
            left, top = (canvas_w - size) // 2, (canvas_h - size) // 2
            offset_x += pad_x - left
            offset_y += pad_y - top
            current_w = current_h = size
            continue
        elif op in ("random_resized_crop", "horizontal_flip", "cutout", "rand_augment"):
            raise UnsupportedGeometryError(
                f"transform step {op!r} moves objects at random: boxes cannot follow it (use a deterministic "
                "evaluation transform for box targets)"
            )
        else:
            continue  # photometric or unknown-but-geometry-free steps
        factor_x, factor_y = new_w / current_w, new_h / current_h
        scale_x, scale_y = scale_x * factor_x, scale_y * factor_y
        offset_x, offset_y = offset_x * factor_x, offset_y * factor_y
        current_w, current_h = new_w, new_h
    return BoxGeometry(int(width), int(height), current_w, current_h, scale_x, scale_y, offset_x, offset_y)


def processor_geometry(processor: Any, width: int, height: int) -> BoxGeometry:
    """`BoxGeometry` of a CLIP-style image processor for a `width x height` image."""
    return steps_geometry(processor_steps(processor), width, height)


__all__ = [
    "CROP_MODES",
    "BoxGeometry",
    "UnsupportedGeometryError",
    "box_area",
    "box_iou",
    "crop_regions",
    "expand_boxes",
    "multiscale_windows",
    "nms_from_iou",
    "per_label_nms",
    "processor_geometry",
    "processor_steps",
    "roi_align",
    "steps_geometry",
    "xywh_to_xyxy",
]
