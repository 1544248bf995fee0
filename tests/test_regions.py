"""Regions: windows, box arithmetic, RoIAlign against a literal computation, teacher crops, image geometry."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import tiny_image_processor
from PIL import Image

from ovmlc.core.regions import (
    UnsupportedGeometryError,
    box_iou,
    crop_regions,
    expand_boxes,
    multiscale_windows,
    nms_from_iou,
    per_label_nms,
    processor_geometry,
    roi_align,
    steps_geometry,
    xywh_to_xyxy,
)
from ovmlc.data.transforms import load_transform


def test_windows_tile_the_image_coarse_to_fine():
    windows = multiscale_windows([0.25, 0.5, 1.0], [0.25, 0.25, 0.25])
    assert windows.shape == (16 + 9 + 1, 4)
    cells = windows[:16]
    assert torch.allclose(cells[5], torch.tensor([0.25, 0.25, 0.5, 0.5]))  # row 1, column 1 of the 4x4 grid
    assert torch.allclose(windows[-1], torch.tensor([0.0, 0.0, 1.0, 1.0]))
    # A stride that does not divide the free space: windows still touch both edges, never further apart than it.
    windows = multiscale_windows([0.3], [0.25])
    starts = sorted({round(v, 6) for v in windows[:, 0].tolist()})
    assert starts[0] == 0.0 and math.isclose(starts[-1] + 0.3, 1.0) and max(np.diff(starts)) <= 0.25
    # Aspect ratios keep the area; the full-image window is not duplicated.
    wide = multiscale_windows([0.5, 1.0], [0.5, 0.5], aspect_ratios=[1.0, 2.0])
    widths, heights = wide[:, 2] - wide[:, 0], wide[:, 3] - wide[:, 1]
    assert torch.allclose((widths * heights)[:4], torch.full((4,), 0.25))
    assert int(((widths == 1) & (heights == 1)).sum()) == 1
    with pytest.raises(ValueError, match="same length"):
        multiscale_windows([0.5], [0.5, 0.25])
    with pytest.raises(ValueError, match="size"):
        multiscale_windows([1.5], [0.5])


def test_box_iou_expand_and_conversions():
    a = torch.tensor([[0.0, 0.0, 2.0, 2.0], [0.0, 0.0, 0.0, 0.0]])
    b = torch.tensor([[1.0, 1.0, 3.0, 3.0], [0.0, 0.0, 2.0, 2.0], [5.0, 5.0, 6.0, 6.0]])
    iou = box_iou(a, b)
    assert torch.allclose(iou[0], torch.tensor([1 / 7, 1.0, 0.0]))
    assert torch.equal(iou[1], torch.zeros(3))  # an empty box overlaps nothing
    assert box_iou(a[None].expand(3, 2, 4), b[None].expand(3, 3, 4)).shape == (3, 2, 3)  # batched
    expanded = expand_boxes(torch.tensor([0.25, 0.25, 0.5, 0.5]), 1.5)
    assert torch.allclose(expanded, torch.tensor([0.1875, 0.1875, 0.5625, 0.5625]))
    assert torch.allclose(expand_boxes(torch.tensor([0.0, 0.0, 0.5, 0.5]), 2.0), torch.tensor([0.0, 0.0, 0.75, 0.75]))
    assert np.array_equal(xywh_to_xyxy(np.array([[1.0, 2.0, 3.0, 4.0]])), np.array([[1.0, 2.0, 4.0, 6.0]]))
    assert torch.equal(xywh_to_xyxy(torch.tensor([1.0, 2.0, 3.0, 4.0])), torch.tensor([1.0, 2.0, 4.0, 6.0]))


def _bilinear(feature: torch.Tensor, y: float, x: float) -> torch.Tensor:
    """One bilinear sample of `[C, H, W]` at index-space `(y, x)` (cell centres at integers), torchvision's rules."""
    _, height, width = feature.shape
    if y < -1.0 or y > height or x < -1.0 or x > width:
        return torch.zeros(feature.shape[0], dtype=feature.dtype)
    y, x = max(y, 0.0), max(x, 0.0)
    y0, x0 = int(math.floor(y)), int(math.floor(x))
    if y0 >= height - 1:
        y0 = y1 = height - 1
        y = float(y0)
    else:
        y1 = y0 + 1
    if x0 >= width - 1:
        x0 = x1 = width - 1
        x = float(x0)
    else:
        x1 = x0 + 1
    ly, lx = y - y0, x - x0
    return (
        (1 - ly) * (1 - lx) * feature[:, y0, x0]
        + (1 - ly) * lx * feature[:, y0, x1]
        + ly * (1 - lx) * feature[:, y1, x0]
        + ly * lx * feature[:, y1, x1]
    )


def _literal_roi_align(feature: torch.Tensor, box, size: int, ratio: int) -> torch.Tensor:
    """RoIAlign (aligned=True) written out loop by loop, as in the Mask R-CNN paper and torchvision's kernel."""
    x0, y0, x1, y1 = (value - 0.5 for value in box)
    bin_w, bin_h = (x1 - x0) / size, (y1 - y0) / size
    out = torch.zeros(feature.shape[0], size, size, dtype=feature.dtype)
    for i in range(size):
        for j in range(size):
            total = torch.zeros(feature.shape[0], dtype=feature.dtype)
            for a in range(ratio):
                for b in range(ratio):
                    y = y0 + i * bin_h + (a + 0.5) * bin_h / ratio
                    x = x0 + j * bin_w + (b + 0.5) * bin_w / ratio
                    total = total + _bilinear(feature, y, x)
            out[:, i, j] = total / (ratio * ratio)
    return out


@pytest.mark.parametrize(("size", "ratio"), [(1, 1), (2, 2), (3, 2)])
def test_roi_align_matches_the_literal_computation(size, ratio):
    generator = torch.Generator().manual_seed(size + ratio)
    features = torch.randn(2, 3, 5, 7, generator=generator)
    boxes = torch.tensor(
        [
            [[0.3, 0.2, 4.1, 3.7], [-1.7, -0.4, 2.0, 6.5], [6.0, 4.0, 8.9, 7.5]],  # inside, across and beyond edges
            [[0.0, 0.0, 7.0, 5.0], [2.5, 1.5, 2.6, 1.6], [1.0, 1.0, 3.0, 2.0]],  # whole map, tiny, cell-aligned
        ]
    )
    pooled = roi_align(features, boxes, size, ratio)
    assert pooled.shape == (2, 3, 3, size, size)
    for image in range(2):
        for region in range(3):
            expected = _literal_roi_align(features[image], boxes[image, region].tolist(), size, ratio)
            assert torch.allclose(pooled[image, region], expected, atol=1e-5), (image, region)


def test_roi_align_of_one_cell_is_that_cell_and_carries_gradients():
    features = torch.arange(16.0).reshape(1, 1, 4, 4).requires_grad_(True)
    pooled = roi_align(features, torch.tensor([[[1.0, 2.0, 2.0, 3.0]]]), output_size=1, sampling_ratio=1)
    assert pooled.item() == features[0, 0, 2, 1].item()  # the sample sits exactly at the cell centre
    pooled.sum().backward()
    assert features.grad[0, 0, 2, 1] == 1.0 and features.grad.sum() == 1.0
    with pytest.raises(ValueError, match=r"\[B, R, 4\]"):
        roi_align(features, torch.zeros(1, 4), 1)


def test_crop_regions_mask_and_resize():
    pixels = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).reshape(2, 3, 8, 8)
    box = torch.tensor([0.25, 0.5, 0.75, 1.0])
    masked = crop_regions(pixels, box, "mask")
    inside = torch.zeros(8, 8, dtype=torch.bool)
    inside[4:8, 2:6] = True
    assert torch.equal(masked[:, :, inside], pixels[:, :, inside]) and (masked[:, :, ~inside] == 0).all()
    partial = crop_regions(torch.ones(1, 3, 8, 8), torch.tensor([0.0, 0.0, 0.1875, 1.0]), "mask")
    assert torch.allclose(partial[0, 0, 0, :2], torch.tensor([1.0, 0.5]))  # pixel 1 is half inside the box
    whole = crop_regions(pixels, torch.tensor([0.0, 0.0, 1.0, 1.0]), "resize")
    assert torch.allclose(whole, pixels, atol=1e-4)  # the full box resized to the input size is the image
    quarter = crop_regions(pixels, torch.tensor([[0.0, 0.0, 0.5, 0.5], [0.5, 0.5, 1.0, 1.0]]), "resize")
    # A 2x bilinear upsample of each corner (the crop reads the real neighbours at its inner edges, where a resize of
    # the cut-out alone would repeat its border: compare away from those edges).
    upsampled = F.interpolate(pixels[:, :, :4, :4], size=8, mode="bilinear", align_corners=False)
    assert torch.allclose(quarter[0, :, :7, :7], upsampled[0, :, :7, :7], atol=1e-4)
    upsampled = F.interpolate(pixels[:, :, 4:, 4:], size=8, mode="bilinear", align_corners=False)
    assert torch.allclose(quarter[1, :, 1:, 1:], upsampled[1, :, 1:, 1:], atol=1e-4)
    with pytest.raises(ValueError, match="crop mode"):
        crop_regions(pixels, box, "paste")


def test_processor_geometry_follows_the_pixels():
    """A box drawn on an image lands where the processor puts its pixels (shortest-edge resize + centre crop)."""
    processor = tiny_image_processor(32)  # shortest edge 32, centre crop 32
    image = np.zeros((60, 40, 3), dtype=np.uint8)  # height 60, width 40: resized to 32 x 48, crop rows 8..40
    image[30:45, 10:20] = 255
    geometry = processor_geometry(processor, 40, 60)
    box = geometry.pixels_to_normalized(torch.tensor([10.0, 30.0, 20.0, 45.0]))
    assert torch.allclose(box, torch.tensor([8.0, 16.0, 16.0, 28.0]) / 32)
    pixels = processor(images=[Image.fromarray(image)], return_tensors="pt")["pixel_values"][0, 0]
    bright = (pixels > pixels.mean()).nonzero()
    assert (
        bright[:, 0].min() >= 15 and bright[:, 0].max() <= 28 and bright[:, 1].min() >= 7 and bright[:, 1].max() <= 16
    )
    back = geometry.normalized_to_pixels(box)
    assert torch.allclose(back, torch.tensor([10.0, 30.0, 20.0, 45.0]), atol=1e-4)
    # Outside the crop: clipped to the image.
    assert geometry.normalized_to_pixels(torch.tensor([0.0, 0.0, 1.0, 1.0])).tolist() == [0.0, 10.0, 40.0, 50.0]


def test_steps_geometry_matches_transform_presets_and_refuses_random_steps():
    transform = load_transform("clip-eval", size=32)
    image = Image.new("RGB", (20, 50))
    geometry = steps_geometry(transform.to_config()["steps"], 20, 50)
    assert (geometry.out_width, geometry.out_height) == (32, 32)
    assert transform.apply_pil(image).size == (32, 32)
    assert math.isclose(geometry.scale_x, 32 / 20) and math.isclose(geometry.offset_y, -(80 - 32) // 2)
    padded = steps_geometry([{"op": "center_crop", "size": 10}], 6, 12)  # padded left/right by 2, cropped 1 row
    assert (padded.offset_x, padded.offset_y) == (2, -1)
    squash = steps_geometry([{"op": "squash", "size": 8}], 16, 4)
    assert (squash.scale_x, squash.scale_y) == (0.5, 2.0)
    with pytest.raises(UnsupportedGeometryError, match="random_resized_crop"):
        steps_geometry([{"op": "random_resized_crop", "size": 8}], 16, 16)


def test_nms_keeps_the_best_of_overlapping_boxes_per_label():
    boxes = torch.tensor([[0.0, 0.0, 1.0, 1.0], [0.0, 0.0, 1.0, 0.9], [2.0, 2.0, 3.0, 3.0]])
    scores = torch.tensor([0.5, 0.9, 0.1])
    keep = nms_from_iou(box_iou(boxes, boxes), scores, 0.5)
    assert keep.tolist() == [1, 2]  # box 0 overlaps the better box 1 (IoU 0.9)
    assert nms_from_iou(box_iou(boxes, boxes), scores, 0.95).tolist() == [1, 0, 2]
    region_scores = torch.tensor([[0.5, 3.0], [0.9, -math.inf], [0.1, 2.0]])  # [R, C]; -inf: not a candidate
    detections = per_label_nms(boxes, region_scores, 0.5, max_detections=3)
    assert detections == [(1, 0, 3.0), (1, 2, 2.0), (0, 1, pytest.approx(0.9))]
    assert per_label_nms(boxes, region_scores, 0.5, max_detections=10, score_threshold=1.0) == [
        (1, 0, 3.0),
        (1, 2, 2.0),
    ]
