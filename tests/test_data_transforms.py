"""Transform presets (data) and the PIL/numpy implementation: CLIP parity, sizes, seeded determinism."""

import numpy as np
import pytest
from PIL import Image

from ovmlc.data.transforms import (
    ImageTransform,
    TransformConfigError,
    list_transform_presets,
    load_transform,
    load_transform_config,
    rand_augment,
)


def random_image(height: int, width: int, seed: int = 0) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, size=(height, width, 3), dtype=np.uint8))


def test_shipped_presets_load_and_produce_normalised_chw_arrays():
    presets = list_transform_presets()
    shipped = {"clip-eval", "clip-squash-eval", "clip-train", "dualcoop-train", "imagenet-eval", "imagenet-train"}
    assert shipped | {"mkt-eval", "mkt-train"} <= set(presets)
    image = random_image(120, 200)
    for name in presets:
        transform = load_transform(name, seed=0)
        output = transform(image)
        assert output.shape == (3, 224, 224) and output.dtype == np.float32, name
        assert -3.0 < output.min() and output.max() < 3.0, name  # normalised, not 0..255
    assert load_transform("clip-eval", size=96)(image).shape == (3, 96, 96)
    assert not load_transform("clip-eval").is_random and load_transform("dualcoop-train").is_random


@pytest.mark.parametrize("shape", [(300, 451), (451, 300), (100, 150), (224, 224)])
def test_clip_eval_matches_the_clip_image_processor(shape):
    from transformers import CLIPImageProcessorPil

    image = random_image(*shape, seed=shape[0])
    expected = CLIPImageProcessorPil()(images=image, return_tensors="np")["pixel_values"][0]
    np.testing.assert_allclose(load_transform("clip-eval")(image), expected, atol=1e-6)


def test_squash_keeps_the_whole_image_and_imagenet_eval_resizes_to_256_first():
    image = Image.new("RGB", (400, 100), (255, 0, 0))
    image.paste((0, 0, 255), (0, 0, 40, 100))  # a blue band on the far left
    squashed = load_transform("clip-squash-eval").apply_pil(image)
    cropped = load_transform("clip-eval").apply_pil(image)
    assert squashed.getpixel((5, 112))[2] == 255  # the border object survives squashing ...
    assert cropped.getpixel((5, 112))[2] < 50  # ... and is cut by the centre crop
    steps = load_transform("imagenet-eval").steps
    assert steps[0]["op"] == "resize_shortest_edge" and steps[0]["size"] == 256
    # MKT's own presets: bicubic resampling (timm / the official eval transform), ImageNet statistics.
    mkt_eval, mkt_train = load_transform("mkt-eval"), load_transform("mkt-train")
    assert mkt_eval.steps[0]["size"] == 256 and mkt_eval.steps[0]["interpolation"] == "bicubic"
    assert mkt_train.steps[0]["op"] == "random_resized_crop" and mkt_train.steps[0]["interpolation"] == "bicubic"
    assert mkt_train.to_config()["normalize"] == load_transform("imagenet-train").to_config()["normalize"]


def test_random_transforms_are_deterministic_with_a_seed():
    image = random_image(160, 240)
    for name in ("clip-train", "dualcoop-train", "imagenet-train", "mkt-train"):
        first = load_transform(name, seed=7)
        second = load_transform(name, seed=7)
        outputs_first = [first(image) for _ in range(4)]
        outputs_second = [second(image) for _ in range(4)]
        for a, b in zip(outputs_first, outputs_second):
            np.testing.assert_array_equal(a, b)
        assert any(not np.array_equal(outputs_first[0], other) for other in outputs_first[1:]), name  # it varies
        other_seed = load_transform(name, seed=8)(image)
        assert not np.array_equal(outputs_first[0], other_seed), name
    rng_a, rng_b = np.random.default_rng(3), np.random.default_rng(3)
    transform = load_transform("dualcoop-train")
    np.testing.assert_array_equal(transform(image, rng=rng_a), transform(image, rng=rng_b))


def test_rand_augment_magnitude_zero_is_nearly_identity_for_photometric_ops():
    image = random_image(32, 32)
    rng = np.random.default_rng(0)
    out = rand_augment(image, rng, num_ops=3, magnitude=0, ops=["color", "contrast", "brightness"])
    np.testing.assert_array_equal(np.asarray(out), np.asarray(image))


def test_invalid_presets_name_the_problem(tmp_path):
    with pytest.raises(
        TransformConfigError, match=r"^mine: steps\[0\]\.op: expected one of 'resize_shortest_edge', .*got 'blur'"
    ):
        ImageTransform([{"op": "blur"}], [0.5] * 3, [0.5] * 3, 32, name="mine")
    with pytest.raises(TransformConfigError, match=r"steps\[0\]\.interpolation: expected one of .*got 'cubic'"):
        ImageTransform([{"op": "squash", "interpolation": "cubic"}], [0.5] * 3, [0.5] * 3, 32)
    with pytest.raises(FileNotFoundError, match="clip-eval"):
        load_transform("no-such-preset")
    custom = tmp_path / "mine.yaml"
    custom.write_text("size: 32\nsteps:\n  - op: squash\nnormalize: {mean: [0, 0, 0], std: [1, 1, 1]}\n")
    assert load_transform_config(custom)["name"] == "mine"
    assert load_transform(custom)(random_image(10, 20)).shape == (3, 32, 32)
    round_trip = load_transform(load_transform("dualcoop-train").to_config(), seed=1)
    np.testing.assert_array_equal(
        round_trip(random_image(50, 50)), load_transform("dualcoop-train", seed=1)(random_image(50, 50))
    )


@pytest.mark.parametrize("processor_kind", ["hub-clip", "offline-clip"])
def test_trainer_default_transform_reproduces_the_backbone_processor_on_non_square_images(processor_kind):
    """The recipe's default transform is read from the processor's `size`: a Hub CLIP's shortest edge + centre crop,
    or the offline CLIPs' `{height, width}` squash with BOX resampling (their processor squashes: resizing the
    shortest edge would give non-square tensors)."""
    import torch
    from helpers import tiny_image_processor
    from transformers import CLIPImageProcessorPil

    from ovmlc.data.transforms import load_transform
    from ovmlc.resources import SYNTHETIC_CLIP_DIR
    from ovmlc.training.transforms import processor_transform_config

    if processor_kind == "hub-clip":
        processor = tiny_image_processor(32)
        ops = ["resize_shortest_edge", "center_crop"]
    else:
        processor = CLIPImageProcessorPil.from_pretrained(SYNTHETIC_CLIP_DIR)
        ops = ["squash"]
    config = processor_transform_config(processor)
    assert [step["op"] for step in config["steps"]] == ops
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)) for h, w in ((40, 96), (130, 70))]
    transform = load_transform(config, size=config["size"])
    actual = torch.stack([torch.as_tensor(transform(image)) for image in images])
    expected = processor(images=images, return_tensors="pt")["pixel_values"]
    torch.testing.assert_close(actual, expected, atol=2e-5, rtol=1e-5)
