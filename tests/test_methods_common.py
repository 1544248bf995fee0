"""The common method test suite: every registered method, in each of its example configs (`MethodSpec.example_config`
and `variant_configs`), must pass these checks. A new method gets them by registering.

Built on a tiny CLIP saved in the Hub layout (tests/helpers.py); trainable weights are perturbed before saving so
that loading has something to restore.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from helpers import random_images, save_hub_layout_clip
from safetensors.torch import load_file, save_file

import ovmlc
from ovmlc.core.backbones import patch_grid_size
from ovmlc.core.registry import method_specs

LABELS = ["cat", "dog", "red car", "tree"]
EXTRA_LABELS = ["boat", "blue sky"]
TARGETS = torch.tensor([[1.0, 0.0, 1.0, 0.0], [0.0, 1.0, 0.0, 1.0]])  # every image has a positive and a negative
MASK = torch.ones_like(TARGETS)

ovmlc.METHODS  # noqa: B018 - imports ovmlc.methods: registers every method


def _case_id(name: str, variant: dict) -> str:
    return "-".join([name, *(f"{key}={value}" for key, value in variant.items())])


CASES = [
    pytest.param(spec.name, config, id=_case_id(spec.name, variant))
    for spec in method_specs()
    for config, variant in zip(spec.example_configs(), [{}, *spec.variant_configs])
]


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    return save_hub_layout_clip(tmp_path_factory.mktemp("clip") / "tiny-clip")


@pytest.fixture(scope="module")
def images():
    return random_images(2, seed=7)


def build(name: str, config: dict, clip_dir, perturb: bool = False):
    torch.manual_seed(0)
    model = ovmlc.get_method(name).model_class.from_clip(str(clip_dir), **config)
    if perturb:  # as if trained: the saved folder must restore these weights
        with torch.no_grad():
            for parameter in model.parameters():
                if parameter.requires_grad:
                    parameter.add_(0.05 * torch.randn_like(parameter))
    return model.eval()


@contextlib.contextmanager
def transformers_warnings():
    """The messages transformers logs while the block runs (its load report is a warning of its logger)."""
    messages: list[str] = []
    handler = logging.Handler(level=logging.WARNING)
    handler.emit = lambda record: messages.append(record.getMessage())
    logger = logging.getLogger("transformers")
    logger.addHandler(handler)
    try:
        yield messages
    finally:
        logger.removeHandler(handler)


_CACHE: dict[str, torch.nn.Module] = {}


def cached(name: str, config: dict, clip_dir, case_id: str):
    """One model per case for the read-only checks (built once per test session)."""
    if case_id not in _CACHE:
        _CACHE[case_id] = build(name, config, clip_dir)
    return _CACHE[case_id].eval()


def label_inputs(model, labels=LABELS) -> dict:
    """What the trainer passes: names (encoded with gradients) when the text side trains, else fixed embeddings."""
    if model.trains_text_side:
        return {"label_names": model.vocabulary(labels)}
    with torch.no_grad():
        return {"label_embeds": model.encode_labels(labels)}


def trainable(model) -> set[str]:
    return {name for name, parameter in model.named_parameters() if parameter.requires_grad}


def test_every_method_is_covered():
    assert {spec.name for spec in method_specs()} >= {"clip_zeroshot", "clipft", "mkt", "qks"}
    assert {param.id for param in CASES} >= {"mkt-stage=2", "clipft-finetune=lora-lora_r=2"}
    for spec in method_specs():
        assert spec.model_class.config_class is spec.config_class
        assert spec.config_class.model_type.startswith("ovmlc_") and ovmlc.METHODS[spec.name][0] is spec.config_class


@pytest.mark.parametrize("name, config", CASES)
def test_output_shapes(name, config, clip_dir, images, request):
    model = cached(name, config, clip_dir, request.node.callspec.id)
    pixel_values = model.preprocess(images)
    with torch.no_grad():
        output = model(pixel_values=pixel_values, label_embeds=model.encode_labels(LABELS), return_label_maps=True)
    assert output.logits.shape == (2, len(LABELS)) and torch.isfinite(output.logits).all()
    if output.label_maps is not None:
        assert output.label_maps.shape == (2, len(LABELS), *patch_grid_size(model.clip))
    scores = model.predict_scores(images, LABELS)
    assert scores.shape == (2, len(LABELS)) and scores.dtype == np.float32
    assert ((scores >= 0) & (scores <= 1)).all()
    ranked = model.predict(images[0], LABELS, top_k=2)
    assert len(ranked) == 2 and ranked[0][1] >= ranked[1][1]


@pytest.mark.parametrize("name, config", CASES)
def test_gradients_reach_exactly_the_trainable_parameters_and_frozen_weights_stay(name, config, clip_dir, images):
    model = build(name, config, clip_dir).train()
    pixel_values = model.preprocess(images)
    output = model(pixel_values=pixel_values, **label_inputs(model), labels=TARGETS, label_mask=MASK)
    if not trainable(model):
        assert not output.loss.requires_grad
        return
    frozen = {name: p.detach().clone() for name, p in model.named_parameters() if not p.requires_grad}
    before = {name: p.detach().clone() for name, p in model.named_parameters() if p.requires_grad}
    groups = model.parameter_groups(1e-2, weight_decay=0.1)
    in_groups = {id(p) for group in groups for p in group["params"]}
    assert in_groups == {id(p) for p in model.parameters() if p.requires_grad}
    optimizer = torch.optim.AdamW(groups)
    output.loss.backward()
    with_grad = {name for name, parameter in model.named_parameters() if parameter.grad is not None}
    assert with_grad == trainable(model)
    optimizer.step()
    for name, parameter in model.named_parameters():
        if name in frozen:
            assert torch.equal(parameter, frozen[name]), f"frozen weight {name} changed"
    assert any(not torch.equal(p, before[name]) for name, p in model.named_parameters() if name in before)


@pytest.fixture(scope="module")
def saved(clip_dir, images, tmp_path_factory):
    """Every case built with perturbed trainable weights, saved with its logits on fixed pixels and labels, and loaded
    back with `ovmlc.load_model` (AutoModel); what transformers logged while building and loading is kept."""
    root = tmp_path_factory.mktemp("saved-methods")
    cases = {}
    for param in CASES:
        name, config = param.values
        folder = root / param.id
        with transformers_warnings() as messages:
            model = build(name, config, clip_dir, perturb=True)
        model.save_pretrained(folder)
        pixel_values = model.preprocess(images)
        with torch.no_grad():
            logits = model(pixel_values=pixel_values, label_names=LABELS).logits
        save_file({"pixel_values": pixel_values.contiguous()}, str(folder / "test_io.safetensors"))
        with transformers_warnings() as load_messages:
            loaded = ovmlc.load_model(folder)
        with torch.no_grad():
            loaded_logits = loaded(pixel_values=pixel_values, label_names=LABELS).logits
        cases[param.id] = {
            "folder": folder,
            "logits": logits,
            "loaded": loaded,
            "loaded_logits": loaded_logits,
            "messages": messages + load_messages,
        }
    return cases


@pytest.mark.parametrize("name, config", CASES)
def test_save_load_gives_the_same_logits(name, config, clip_dir, saved, request):
    """`ovmlc.load_model(folder)` (AutoModel, i.e. the method's `from_pretrained`) restores the saved weights."""
    case = saved[request.node.callspec.id]
    loaded = case["loaded"]
    assert type(loaded) is ovmlc.get_method(name).model_class and not loaded.training
    torch.testing.assert_close(case["loaded_logits"], case["logits"], atol=1e-6, rtol=1e-6)
    # the same parts train after loading as after building
    assert trainable(loaded) == trainable(cached(name, config, clip_dir, request.node.callspec.id))


def test_fresh_process_remote_code_load_gives_the_same_logits(saved, tmp_path):
    """A fresh process loads every saved case from the folder's own code (`auto_map`), as
    `AutoModel.from_pretrained(folder, trust_remote_code=True)` does. Only the first load goes through AutoModel:
    the remote code imports ovmlc, whose methods then register with AutoModel, and transformers prefers explicitly
    registered classes over remote code for later loads in the same process. The first folder also serves the
    pipeline task from its own `pipeline.py` (`custom_pipelines`)."""
    folders = {case_id: str(case["folder"]) for case_id, case in saved.items()}
    script = textwrap.dedent(
        f"""
        import json, sys, numpy as np, torch
        from safetensors.torch import load_file, save_file
        from transformers import AutoModel, pipeline
        from transformers.dynamic_module_utils import get_class_from_dynamic_module
        assert "ovmlc" not in sys.modules
        for case_id, folder in json.loads({json.dumps(folders)!r}).items():
            if "ovmlc" not in sys.modules:
                model = AutoModel.from_pretrained(folder, trust_remote_code=True)
            else:
                auto_map = json.load(open(folder + "/config.json"))["auto_map"]
                model = get_class_from_dynamic_module(auto_map["AutoModel"], folder).from_pretrained(folder)
            assert type(model).__module__.startswith("transformers_modules"), (case_id, type(model).__module__)
            assert type(model.config).__module__.startswith("transformers_modules"), case_id
            pixel_values = load_file(folder + "/test_io.safetensors")["pixel_values"]
            with torch.no_grad():
                logits = model(pixel_values=pixel_values, label_names={LABELS!r}).logits
            save_file({{"logits": logits.contiguous()}}, folder + "/remote_logits.safetensors")
        first = next(iter(json.loads({json.dumps(folders)!r}).values()))
        pipe = pipeline(model=first, trust_remote_code=True)
        assert pipe.task == {ovmlc.PIPELINE_TASK!r} and type(pipe).__module__.startswith("transformers_modules")
        ranked = pipe(np.zeros((40, 40, 3), dtype=np.uint8), candidate_labels=["cat", "dog"])
        assert sorted(entry["label"] for entry in ranked) == ["cat", "dog"], ranked
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=os.environ.copy())
    assert result.returncode == 0, result.stderr[-3000:]
    for case_id, case in saved.items():
        logits = load_file(str(case["folder"] / "remote_logits.safetensors"))["logits"]
        message = lambda text, case_id=case_id: f"{case_id}: {text}"  # noqa: E731
        torch.testing.assert_close(logits, case["logits"], atol=1e-5, rtol=1e-5, msg=message)


@pytest.mark.parametrize("name, config", CASES)
def test_traits_are_consistent_with_behaviour(name, config, clip_dir, images, request):
    model = cached(name, config, clip_dir, request.node.callspec.id)
    pixel_values = model.preprocess(images)

    # trains_text_side <=> some parameter of the text side trains
    text_trainable = any(p.requires_grad for module in model.text_side_modules() for p in module.parameters())
    assert bool(model.trains_text_side) == text_trainable
    assert isinstance(model.augment_allowed, bool) and isinstance(model.uses_frozen_image_features, bool)

    if model.uses_frozen_image_features:
        # no gradient path from the features to a trainable parameter, and nothing of the image side trains
        model.train()
        with torch.enable_grad():
            features = model.encode_image_features(pixel_values)
        assert features and not any(value.requires_grad for value in features.values())
        assert not any(p.requires_grad for module in model.image_side_modules() for p in module.parameters())
        model.eval()

    with torch.no_grad():
        base = model(pixel_values=pixel_values, label_embeds=model.encode_labels(LABELS)).logits
        more = model(pixel_values=pixel_values, label_embeds=model.encode_labels(LABELS + EXTRA_LABELS)).logits
    same = torch.allclose(more[:, : len(LABELS)], base, atol=1e-5)
    assert same != model.scores_depend_on_label_set, (
        "scores_depend_on_label_set says the labels scored together "
        + ("matter, but adding labels changed nothing" if same else "do not matter, but adding labels changed logits")
    )


@pytest.mark.parametrize("name, config", CASES)
def test_no_missing_weights_report_for_modules_built_by_design(name, config, saved, request):
    """Neither building from a CLIP checkpoint (the method's new modules) nor loading the saved folder (LoRA: base CLIP
    + adapter) logs transformers' load report."""
    messages = saved[request.node.callspec.id]["messages"]
    assert not [message for message in messages if "LOAD REPORT" in message or "MISSING" in message], messages


def test_a_checkpoint_missing_part_of_a_built_module_is_still_reported(clip_dir, tmp_path):
    model = build("qks", dict(ovmlc.get_method("qks").example_config), clip_dir)
    model.save_pretrained(tmp_path)
    weights = load_file(str(tmp_path / "model.safetensors"))
    del weights["query_transformer.input_norm.weight"]  # the rest of query_transformer is there
    save_file(weights, str(tmp_path / "model.safetensors"), metadata={"format": "pt"})
    with transformers_warnings() as messages:
        ovmlc.QKSModel.from_pretrained(tmp_path)
    report = "\n".join(messages)
    assert "LOAD REPORT" in report and "query_transformer.input_norm.weight" in report


def test_stage_2_from_a_stage_1_folder_builds_the_prompt_learner_quietly(clip_dir, tmp_path):
    build("mkt", dict(ovmlc.get_method("mkt").example_config), clip_dir).save_pretrained(tmp_path)
    with transformers_warnings() as messages:
        model = ovmlc.MKTModel.from_pretrained(tmp_path, stage=2)
    assert model.prompt_learner is not None and model.trains_text_side
    assert not [message for message in messages if "LOAD REPORT" in message], messages
