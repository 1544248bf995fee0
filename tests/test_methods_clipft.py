import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from helpers import random_images, save_hub_layout_clip
from safetensors import safe_open
from safetensors.torch import load_file, save_file

import ovmlc
from ovmlc import CLIPFTConfig, CLIPFTModel

DATA = Path(__file__).resolve().parent / "data"

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
    with safe_open(str(tmp_path / "model.safetensors"), framework="pt") as handle:
        weights = set(handle.keys())
    if finetune == "full":
        assert "adapter_config.json" not in files and "backbone_adapter" not in files
        assert "clip.vision_model.encoder.layers.0.self_attn.q_proj.weight" in weights
        return
    # The whole-model layout (the tiny CLIP is a local folder): the CLIP under its own names plus the logit head in
    # model.safetensors; the LoRA adapter, a peft adapter of the CLIP, in backbone_adapter/ (not at the top, where
    # transformers' AutoModel would load the adapter's base instead of this model).
    assert "adapter_config.json" not in files and {"model.safetensors", "backbone_adapter"} <= files
    assert {
        "logit_head.log_scale",
        "logit_head.bias",
        "clip.vision_model.encoder.layers.0.self_attn.q_proj.weight",
    } <= (weights)
    assert not [key for key in weights if "lora_" in key or "base_layer" in key]
    adapter_dir = tmp_path / "backbone_adapter"
    adapter_config = json.loads((adapter_dir / "adapter_config.json").read_text())
    assert adapter_config["peft_type"] == "LORA" and adapter_config["r"] == 8
    assert adapter_config["base_model_name_or_path"] == str(clip_dir)
    with safe_open(str(adapter_dir / "adapter_model.safetensors"), framework="pt") as handle:
        keys = list(handle.keys())
    assert len(keys) == 2 * 2 * 2  # 2 layers x (q, v) x (A, B), relative to the CLIP, in peft's key format
    assert all(key.startswith("base_model.model.vision_model.encoder.layers.") and ".lora_" in key for key in keys)


def test_lora_adapter_is_a_peft_adapter_of_the_clip(clip_dir, batch, tmp_path):
    """peft itself loads the saved adapter onto the plain CLIP named in adapter_config.json and gives the fine-tuned
    image tower; `load_adapter` is transformers' own method (not shadowed)."""
    from peft import PeftModel
    from transformers import CLIPModel, PreTrainedModel

    model = CLIPFTModel.from_clip(str(clip_dir), finetune="lora", lora_r=2)
    pixel_values = model.preprocess(batch["images"])
    model, _ = _train(model, pixel_values, batch, steps=3, lr=1e-2)
    model.save_pretrained(tmp_path)
    base = json.loads((tmp_path / "backbone_adapter" / "adapter_config.json").read_text())["base_model_name_or_path"]
    clip = PeftModel.from_pretrained(CLIPModel.from_pretrained(base), str(tmp_path), subfolder="backbone_adapter")
    with torch.no_grad():
        torch.testing.assert_close(
            clip.get_image_features(pixel_values=pixel_values).pooler_output,
            model.clip.get_image_features(pixel_values=pixel_values).pooler_output,
        )
    assert "load_adapter" not in CLIPFTModel.__dict__ and CLIPFTModel.load_adapter is PreTrainedModel.load_adapter


def test_lora_adapter_only_layout_and_merge(clip_dir, batch, tmp_path):
    """`save_backbone=False`: only the logit head in model.safetensors, the CLIP from its reference. `merge_lora=True`:
    a plain full-fine-tuning folder with the same outputs (no adapter, no peft needed), the model keeping its adapter;
    the merged folder's remote code runs where peft and ovmlc cannot be imported."""
    model = CLIPFTModel.from_clip(str(clip_dir), finetune="lora", lora_r=2)
    pixel_values = model.preprocess(batch["images"])
    model, _ = _train(model, pixel_values, batch, steps=3, lr=1e-2)
    with torch.no_grad():
        expected = model(pixel_values=pixel_values, label_names=LABELS).logits
    model.save_pretrained(tmp_path / "adapter", save_backbone=False)
    with safe_open(str(tmp_path / "adapter" / "model.safetensors"), framework="pt") as handle:
        assert set(handle.keys()) == {"logit_head.log_scale", "logit_head.bias"}
    config = json.loads((tmp_path / "adapter" / "config.json").read_text())
    assert config["weights_layout"] == "adapter_only" and config["base_model_modules"] == ["clip"]
    loaded = CLIPFTModel.from_pretrained(tmp_path / "adapter")
    assert loaded.has_lora and {name for name, p in loaded.named_parameters() if p.requires_grad} == {
        name for name, p in model.named_parameters() if p.requires_grad
    }
    with torch.no_grad():
        torch.testing.assert_close(loaded(pixel_values=pixel_values, label_names=LABELS).logits, expected)

    merged_dir = tmp_path / "merged"
    model.save_pretrained(merged_dir, merge_lora=True)
    assert model.has_lora and model.config.finetune == "lora"  # the model itself is unchanged
    assert "backbone_adapter" not in os.listdir(merged_dir)
    merged = CLIPFTModel.from_pretrained(merged_dir)
    assert merged.config.finetune == "full" and not merged.has_lora
    with torch.no_grad():
        torch.testing.assert_close(merged(pixel_values=pixel_values, label_names=LABELS).logits, expected)
    save_file({"pixel_values": pixel_values, "logits": expected}, str(tmp_path / "io.safetensors"))
    script = textwrap.dedent(
        f"""
        import sys

        # not installed, as far as Python (and transformers' availability checks) can tell
        sys.modules["peft"] = None
        sys.modules["ovmlc"] = None
        import torch
        from safetensors.torch import load_file
        from transformers import AutoModel

        io = load_file({str(tmp_path / "io.safetensors")!r})
        model = AutoModel.from_pretrained({str(merged_dir)!r}, trust_remote_code=True)
        with torch.no_grad():
            logits = model(pixel_values=io["pixel_values"], label_names={LABELS!r}).logits
        torch.testing.assert_close(logits, io["logits"], atol=1e-5, rtol=1e-5)
        assert sys.modules["peft"] is None and sys.modules["ovmlc"] is None
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=os.environ.copy())
    assert result.returncode == 0, result.stderr[-3000:]


def test_lora_folder_saved_by_ovmlc_0_1_still_loads(tmp_path):
    """tests/data/clipft-lora-main: a LoRA folder of main before peft-native saving (adapter files at the top, keys
    relative to CLIP-FT, the logit head inside; backbone "synthetic"): same logits, and saved again it loads in the
    current layout."""
    folder = DATA / "clipft-lora-main"
    expected = load_file(str(folder / "expected_outputs.safetensors"))
    labels = ["cat", "dog", "red car", "tree"]
    model = ovmlc.load_model(folder)
    assert model.has_lora and model.config.finetune == "lora"
    with torch.no_grad():
        logits = model(pixel_values=expected["pixel_values"], label_names=labels).logits
    torch.testing.assert_close(logits, expected["logits"], rtol=0, atol=1e-6)
    model.save_pretrained(tmp_path)
    assert (tmp_path / "backbone_adapter" / "adapter_config.json").is_file()
    with torch.no_grad():
        again = ovmlc.load_model(tmp_path)(pixel_values=expected["pixel_values"], label_names=labels).logits
    torch.testing.assert_close(again, expected["logits"], rtol=0, atol=1e-6)


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
    files = set(os.listdir(output))  # a local backbone: the whole-model layout, with the adapter beside it
    assert {"model.safetensors", "backbone_adapter"} <= files
    assert {"adapter_config.json", "adapter_model.safetensors"} <= set(os.listdir(output / "backbone_adapter"))
    loaded = CLIPFTModel.from_pretrained(output)
    assert loaded.has_lora and loaded.config.lora_r == 4


def test_logit_parameters_get_their_own_learning_rate(clip_dir):
    model = CLIPFTModel.from_clip(str(clip_dir), logit_lr_multiplier=50.0)
    groups = model.parameter_groups(1e-4, 0.05)
    head = [group for group in groups if any(p is model.logit_head.bias for p in group["params"])]
    assert len(head) == 1 and head[0]["lr"] == pytest.approx(5e-3) and head[0]["weight_decay"] == 0.0
    assert sum(len(group["params"]) for group in groups) == sum(p.requires_grad for p in model.parameters())
