import json
import os

import pytest
import torch
from helpers import random_images, save_hub_layout_clip
from safetensors import safe_open

from ovmlc import CLIPFTConfig, CLIPFTModel

LABELS = ["cat", "dog", "red car", "tree"]


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    return save_hub_layout_clip(tmp_path_factory.mktemp("clip"))


@pytest.fixture(scope="module")
def batch():
    generator = torch.Generator().manual_seed(0)
    labels = (torch.rand(6, len(LABELS), generator=generator) > 0.6).long()
    return {"images": random_images(6, seed=3), "labels": labels, "label_mask": torch.ones_like(labels)}


def _train(model, pixel_values, batch, steps=8, lr=3e-3):
    model.train()
    optimizer = torch.optim.AdamW(model.parameter_groups(lr, 0.0))
    losses = []
    for _ in range(steps):
        output = model(
            pixel_values=pixel_values, label_names=LABELS, labels=batch["labels"], label_mask=batch["label_mask"]
        )
        optimizer.zero_grad()
        output.loss.backward()
        optimizer.step()
        losses.append(output.loss.item())
    return model.eval(), losses


def test_config_validation():
    assert CLIPFTConfig().lora_target_modules == ["q_proj", "v_proj"]
    with pytest.raises(ValueError, match="finetune"):
        CLIPFTConfig(finetune="partial")
    with pytest.raises(ValueError, match="lora_target_modules"):
        CLIPFTConfig(lora_target_modules="q_proj")


@pytest.mark.parametrize("finetune", ["full", "lora"])
def test_trainable_parameters_gradients_and_frozen_weights(clip_dir, batch, finetune):
    model = CLIPFTModel.from_clip(str(clip_dir), finetune=finetune)
    assert model.logit_head.log_scale.exp().item() == pytest.approx(10.0)
    assert model.logit_head.bias.item() == pytest.approx(-10.0)
    trainable = {name for name, parameter in model.named_parameters() if parameter.requires_grad}
    assert {"logit_head.log_scale", "logit_head.bias"} <= trainable
    if finetune == "full":
        assert "clip.visual_projection.weight" in trainable
        assert all(
            name.startswith(("clip.vision_model.", "clip.visual_projection.", "logit_head.")) for name in trainable
        )
    else:
        lora = trainable - {"logit_head.log_scale", "logit_head.bias"}
        assert lora and all(".lora_" in name and "vision_model" in name for name in lora)
        assert all(name.split(".self_attn.")[1].startswith(("q_proj", "v_proj")) for name in lora)
    pixel_values = model.preprocess(batch["images"])
    frozen = {name: parameter.detach().clone() for name, parameter in model.named_parameters() if name not in trainable}
    model.train()
    optimizer = torch.optim.AdamW(model.parameter_groups(1e-3, 0.01))
    output = model(
        pixel_values=pixel_values, label_names=LABELS, labels=batch["labels"], label_mask=batch["label_mask"]
    )
    output.loss.backward()
    with_grad = {name for name, parameter in model.named_parameters() if parameter.grad is not None}
    assert with_grad == trainable
    optimizer.step()
    for name, parameter in model.named_parameters():
        if name in frozen:
            assert torch.equal(parameter, frozen[name]), f"frozen weight {name} changed"


def test_lora_starts_equal_to_the_base_model(clip_dir, batch):
    full = CLIPFTModel.from_clip(str(clip_dir))
    lora = CLIPFTModel.from_clip(str(clip_dir), finetune="lora")
    pixel_values = full.preprocess(batch["images"])
    with torch.no_grad():
        torch.testing.assert_close(
            lora(pixel_values=pixel_values, label_names=LABELS).logits,
            full(pixel_values=pixel_values, label_names=LABELS).logits,
        )


@pytest.mark.parametrize("finetune", ["full", "lora"])
def test_loss_decreases_and_save_load_round_trip(clip_dir, batch, tmp_path, finetune):
    model = CLIPFTModel.from_clip(str(clip_dir), finetune=finetune)
    pixel_values = model.preprocess(batch["images"])
    model, losses = _train(model, pixel_values, batch, steps=10, lr=1e-2)
    assert losses[-1] < 0.8 * losses[0]
    model.config.label_names = LABELS
    model.save_pretrained(tmp_path)
    with torch.no_grad():
        expected = model(pixel_values=pixel_values, label_names=LABELS, return_label_maps=True)
    assert expected.label_maps.shape == (6, len(LABELS), 4, 4)
    loaded = CLIPFTModel.from_pretrained(tmp_path)
    with torch.no_grad():
        torch.testing.assert_close(loaded(pixel_values=pixel_values, label_names=LABELS).logits, expected.logits)
    files = set(os.listdir(tmp_path))
    if finetune == "full":
        assert "model.safetensors" in files and "adapter_config.json" not in files
    else:
        # PEFT layout: the adapter config + only the trainable weights; no full weights file.
        assert {"adapter_config.json", "adapter_model.safetensors"} <= files and "model.safetensors" not in files
        adapter_config = json.loads((tmp_path / "adapter_config.json").read_text())
        assert adapter_config["peft_type"] == "LORA" and adapter_config["r"] == 8
        assert adapter_config["base_model_name_or_path"] == str(clip_dir)
        with safe_open(str(tmp_path / "adapter_model.safetensors"), framework="pt") as handle:
            keys = list(handle.keys())
        assert all(key.startswith("base_model.model.") for key in keys)
        assert {key for key in keys if "lora_" not in key} == {
            "base_model.model.logit_head.log_scale",
            "base_model.model.logit_head.bias",
        }
        assert len(keys) == 2 + 2 * 2 * 2  # 2 layers x (q, v) x (A, B) + logit head


def test_lora_target_that_matches_nothing_is_a_clear_error(clip_dir):
    with pytest.raises(ValueError, match="matched no layer"):
        CLIPFTModel.from_clip(str(clip_dir), finetune="lora", lora_target_modules=["query"])


def test_lora_training_with_the_trainer_writes_the_peft_layout(tmp_path):
    from test_train_fixtures import make_tiny_backbone, make_tiny_dataset, write_recipe

    from ovmlc.training.trainer import train

    dataset, backbone = make_tiny_dataset(tmp_path / "data"), make_tiny_backbone(tmp_path / "clip")
    recipe = write_recipe(
        tmp_path / "lora.yaml",
        dataset,
        backbone,
        tmp_path / "out",
        method="clipft",
        method_config={"finetune": "lora", "lora_r": 4},
        freeze=[],
        training={"epochs": 1},
    )
    output = train(recipe)
    files = set(os.listdir(output))
    assert {"adapter_config.json", "adapter_model.safetensors"} <= files and "model.safetensors" not in files
    loaded = CLIPFTModel.from_pretrained(output)
    assert loaded.has_lora and loaded.config.lora_r == 4


def test_logit_parameters_get_their_own_learning_rate(clip_dir):
    model = CLIPFTModel.from_clip(str(clip_dir), logit_lr_multiplier=50.0)
    groups = model.parameter_groups(1e-4, 0.05)
    head = [group for group in groups if any(p is model.logit_head.bias for p in group["params"])]
    assert len(head) == 1 and head[0]["lr"] == pytest.approx(5e-3) and head[0]["weight_decay"] == 0.0
    assert sum(len(group["params"]) for group in groups) == sum(p.requires_grad for p in model.parameters())
