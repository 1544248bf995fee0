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
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from helpers import BLOCK_OVMLC, random_images, save_hub_layout_clip, save_hub_layout_siglip
from safetensors import safe_open
from safetensors.torch import load_file, save_file

import ovmlc
import ovmlc.files
from ovmlc.core.backbones import patch_grid_size
from ovmlc.core.registry import method_specs
from ovmlc.core.weights_layout import WeightsLayoutError

LABELS = ["cat", "dog", "red car", "tree"]
EXTRA_LABELS = ["boat", "blue sky"]
TARGETS = torch.tensor([[1.0, 0.0, 1.0, 0.0], [0.0, 1.0, 0.0, 1.0]])  # every image has a positive and a negative
MASK = torch.ones_like(TARGETS)

ovmlc.METHODS  # noqa: B018 - imports ovmlc.methods: registers every method


def _case_id(name: str, variant: dict) -> str:
    return "-".join([name, *(f"{key}={value}" for key, value in variant.items())])


# Every case on the tiny CLIP; the methods that support SigLIP (`supported_backbone_families`) again on a tiny SigLIP
# 2-style checkpoint (ids `siglip-...`); the others must refuse it (test_siglip.py).
CASES = [
    pytest.param(
        spec.name, config, backbone, id=("" if backbone == "clip" else f"{backbone}-") + _case_id(spec.name, variant)
    )
    for backbone in ("clip", "siglip")
    for spec in method_specs()
    if backbone in spec.model_class.supported_backbone_families
    for config, variant in zip(spec.example_configs(), [{}, *spec.variant_configs])
]


@pytest.fixture(scope="module")
def backbone_dirs(tmp_path_factory):
    return {
        "clip": save_hub_layout_clip(tmp_path_factory.mktemp("clip") / "tiny-clip"),
        "siglip": save_hub_layout_siglip(tmp_path_factory.mktemp("siglip") / "tiny-siglip"),
    }


@pytest.fixture(scope="module")
def clip_dir(backbone_dirs):
    return backbone_dirs["clip"]


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
    assert {param.id for param in CASES} >= {
        "siglip-clip_zeroshot",
        "siglip-coop",
        "siglip-clipft-finetune=lora-lora_r=2",
    }
    for spec in method_specs():
        assert spec.model_class.config_class is spec.config_class
        assert spec.config_class.model_type.startswith("ovmlc_") and ovmlc.METHODS[spec.name][0] is spec.config_class


@pytest.mark.parametrize("name, config, backbone", CASES)
def test_output_shapes(name, config, backbone, backbone_dirs, images, request):
    model = cached(name, config, backbone_dirs[backbone], request.node.callspec.id)
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


@pytest.mark.parametrize("name, config, backbone", CASES)
def test_gradients_reach_exactly_the_trainable_parameters_and_frozen_weights_stay(
    name, config, backbone, backbone_dirs, images
):
    model = build(name, config, backbone_dirs[backbone]).train()
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


def inherited_module_trains(model) -> bool:
    """Whether a parameter of a module the method declares as inherited (taken unchanged from its base checkpoint)
    trains: perturbing the trainable weights changes it, and the adapter-only layout must refuse to leave it out."""
    saved_names = set(model.weights_for_saving())  # peft adapter weights are saved apart, not as inherited modules
    return any(
        parameter.requires_grad and name in saved_names
        for module in model.inherited_modules
        for name, parameter in model.named_parameters()
        if name == module or name.startswith(module + ".")
    )


@pytest.fixture(scope="module")
def saved(backbone_dirs, images, tmp_path_factory):
    """Every case built with perturbed trainable weights, saved with its logits on fixed pixels and labels, and loaded
    back with `ovmlc.load_model` (AutoModel); what transformers logged while building and loading is kept. Cases whose
    inherited modules stay unchanged are also saved in the adapter-only layout (`save_backbone=False`: the tiny CLIP
    is a local folder, where the default is the whole model)."""
    root = tmp_path_factory.mktemp("saved-methods")
    image = images[0]
    cases = {}
    for index, param in enumerate(CASES):
        name, config, backbone = param.values
        # Short folder names: remote code is imported as `transformers_modules.<folder>`, and a case id spelled out
        # there (every `-`, `.` escaped) passes the file system's 255-character limit.
        folder = root / f"{backbone}-{name}-{index:02d}"
        with transformers_warnings() as messages:
            model = build(name, config, backbone_dirs[backbone], perturb=True)
        model.save_pretrained(folder)
        adapter_folder = None
        if not inherited_module_trains(model):
            adapter_folder = root / f"{folder.name}-adapter"
            model.save_pretrained(adapter_folder, save_backbone=False)
        pixel_values = model.preprocess(images)
        with torch.no_grad():
            logits = model(pixel_values=pixel_values, label_names=LABELS).logits
        save_file({"pixel_values": pixel_values.contiguous()}, str(folder / "test_io.safetensors"))
        image.save(folder / "test_io.png")
        with transformers_warnings() as load_messages:
            loaded = ovmlc.load_model(folder)
        with torch.no_grad():
            loaded_logits = loaded(pixel_values=pixel_values, label_names=LABELS).logits
        cases[param.id] = {
            "folder": folder,
            "adapter_folder": adapter_folder,
            "model": model,
            "logits": logits,
            "loaded": loaded,
            "loaded_logits": loaded_logits,
            "image_scores": loaded.predict_scores([folder / "test_io.png"], LABELS)[0],
            "messages": messages + load_messages,
        }
    return cases


@pytest.mark.parametrize("name, config, backbone", CASES)
def test_save_load_gives_the_same_logits(name, config, backbone, backbone_dirs, saved, request):
    """`ovmlc.load_model(folder)` (AutoModel, i.e. the method's `from_pretrained`) restores the saved weights."""
    case = saved[request.node.callspec.id]
    loaded = case["loaded"]
    assert type(loaded) is ovmlc.get_method(name).model_class and not loaded.training
    torch.testing.assert_close(case["loaded_logits"], case["logits"], atol=1e-6, rtol=1e-6)
    # the same parts train after loading as after building
    assert trainable(loaded) == trainable(cached(name, config, backbone_dirs[backbone], request.node.callspec.id))
    saved_config = json.loads((case["folder"] / "config.json").read_text())
    assert saved_config["ovmlc_version"] == ovmlc.__version__ and saved_config["weights_layout"] == "whole_model"
    assert isinstance(saved_config["templates"], list)  # a Hub user has no template files: names resolved


@pytest.mark.parametrize("name, config, backbone", CASES)
def test_adapter_only_layout_round_trip(name, config, backbone, saved, request):
    """The adapter-only layout: `model.safetensors` holds exactly the weights outside the inherited modules, the config
    pins the base, and loading rebuilds the base and gives the same logits. A method whose inherited modules trained
    cannot be saved that way (the layout would lose the change), and says which module changed."""
    case = saved[request.node.callspec.id]
    model = case["model"]
    if case["adapter_folder"] is None:
        with pytest.raises(WeightsLayoutError, match="changed since it was loaded"):
            model.save_pretrained(case["folder"].parent / "refused", save_backbone=False)
        assert model.weights_layout_plan().layout == "whole_model"
        return
    folder = case["adapter_folder"]
    saved_config = json.loads((folder / "config.json").read_text())
    modules = tuple(saved_config["base_model_modules"])
    assert saved_config["weights_layout"] == "adapter_only" and set(modules) <= set(model.inherited_modules)
    assert saved_config["base_model_name_or_path"] == str(model.config.backbone_name_or_path)
    with safe_open(str(folder / "model.safetensors"), framework="pt") as handle:
        stored = set(handle.keys())
    expected = {key for key in model.weights_for_saving() if not any(key.startswith(m + ".") for m in modules)}
    assert stored == expected
    loaded = ovmlc.load_model(folder)
    with torch.no_grad():
        logits = loaded(
            pixel_values=load_file(str(case["folder"] / "test_io.safetensors"))["pixel_values"], label_names=LABELS
        ).logits
    torch.testing.assert_close(logits, case["logits"], atol=1e-6, rtol=1e-6)
    assert loaded.weights_layout_plan(save_backbone=False).base_modules == modules  # saves the same way again


def test_adapter_only_loading_is_strict(saved, tmp_path):
    """A key missing from an adapter-only folder, or one it should not hold, is an error naming the key."""
    source = saved["qks"]["adapter_folder"]
    weights = load_file(str(source / "model.safetensors"))
    missing, unexpected = tmp_path / "missing", tmp_path / "unexpected"
    for folder, edit in (
        (missing, lambda w: w.pop("query_transformer.input_norm.weight")),
        (unexpected, lambda w: w.update({"clip.logit_scale": torch.zeros(())})),
    ):
        shutil.copytree(source, folder)
        changed = dict(weights)
        edit(changed)
        save_file(changed, str(folder / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(WeightsLayoutError, match=r"missing keys \['query_transformer.input_norm.weight'\]"):
        ovmlc.load_model(missing)
    with pytest.raises(WeightsLayoutError, match=r"unexpected keys \['clip.logit_scale'\]"):
        ovmlc.load_model(unexpected)


def test_fresh_process_without_ovmlc_loads_every_folder_from_its_own_code(saved, tmp_path):
    """In one fresh process where `import ovmlc` raises, each saved folder (whole-model and adapter-only) loads with
    `AutoModel.from_pretrained(folder, trust_remote_code=True)` from its own flat code (`transformers_modules.<folder>`,
    so different methods loaded one after the other each use their own classes), gives the logits of the model that
    was saved, and `pipeline(model=folder, trust_remote_code=True)` gives the scores of `ovmlc.load_model(folder)`."""
    folders = {
        case_id: [str(case["folder"]), str(case["adapter_folder"]) if case["adapter_folder"] else None]
        for case_id, case in saved.items()
    }
    script = BLOCK_OVMLC + textwrap.dedent(
        f"""
        import json, sys, torch
        from safetensors.torch import load_file, save_file
        from transformers import AutoModel, pipeline

        modules = {{}}
        for case_id, (folder, adapter_folder) in json.loads({json.dumps(folders)!r}).items():
            pixel_values = load_file(folder + "/test_io.safetensors")["pixel_values"]
            outputs = {{}}
            for kind, path in (("whole", folder), ("adapter", adapter_folder)):
                if path is None:
                    continue
                model = AutoModel.from_pretrained(path, trust_remote_code=True)
                modules[path] = type(model).__module__
                with torch.no_grad():
                    outputs[kind] = model(pixel_values=pixel_values, label_names={LABELS!r}).logits.contiguous()
            pipe = pipeline(model=folder, trust_remote_code=True)
            assert pipe.task == {ovmlc.PIPELINE_TASK!r} and type(pipe).__module__.startswith("transformers_modules")
            ranked = pipe(folder + "/test_io.png", candidate_labels={LABELS!r})
            by_label = {{entry["label"]: entry["score"] for entry in ranked}}
            outputs["pipeline"] = torch.tensor([by_label[label] for label in {LABELS!r}])
            save_file(outputs, folder + "/remote_outputs.safetensors")
        assert "ovmlc" not in sys.modules
        print(json.dumps(modules))
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=os.environ.copy())
    assert result.returncode == 0, result.stderr[-3000:]
    modules = json.loads(result.stdout.strip().splitlines()[-1])
    assert len(set(modules.values())) == len(modules)  # one flat copy per folder, never a shared class
    for case_id, case in saved.items():
        assert modules[str(case["folder"])].startswith(
            f"transformers_modules.{case['folder'].name.replace('-', '_hyphen_').replace('.', '_dot_')}"
        )
        outputs = load_file(str(case["folder"] / "remote_outputs.safetensors"))
        message = lambda text, case_id=case_id: f"{case_id}: {text}"  # noqa: E731
        torch.testing.assert_close(outputs["whole"], case["logits"], atol=1e-5, rtol=1e-5, msg=message)
        if case["adapter_folder"] is not None:
            torch.testing.assert_close(outputs["adapter"], case["logits"], atol=1e-5, rtol=1e-5, msg=message)
        expected = torch.from_numpy(case["image_scores"])
        torch.testing.assert_close(outputs["pipeline"], expected, atol=1e-5, rtol=1e-5, msg=message)


def test_exported_code_is_the_flat_closure_of_every_method():
    """What `save_pretrained` writes as remote code, for every registered method: the method's files, the shared
    modules they import (computed from the imports, so a new shared module joins by being imported) and the pipeline,
    each importing only the allowed packages (peft only inside `try:`)."""
    from ovmlc.core.code_export import REMOTE_CODE_PACKAGES, export_model_code

    for spec in method_specs():
        code = export_model_code(spec.model_class, spec.config_class, ovmlc.files.PIPELINE_MODULE)
        module = spec.model_class.__module__.rpartition(".")[2]
        assert {f"{module}.py", f"{spec.config_class.__module__.rpartition('.')[2]}.py", "pipeline.py"} <= set(
            code.files
        )
        assert {"modeling_base.py", "backbones.py", "code_export.py", "weights_layout.py"} <= set(code.files)
        assert code.requirements <= REMOTE_CODE_PACKAGES and code.optional_requirements <= {"peft"}
        for name, text in code.files.items():
            assert "ovmlc." not in "".join(
                line for line in text.splitlines() if line.lstrip().startswith(("from ", "import "))
            ), name


def test_once_ovmlc_is_imported_its_registered_classes_win(saved):
    """Documented behaviour (docs/hub.md): a process that loaded a folder's own code keeps it for that model, but after
    `import ovmlc` the registered classes are preferred by AutoModel even with `trust_remote_code=True`."""
    folder = str(saved["qks"]["folder"])
    script = textwrap.dedent(
        f"""
        from transformers import AutoModel
        remote = AutoModel.from_pretrained({folder!r}, trust_remote_code=True)
        assert type(remote).__module__.startswith("transformers_modules"), type(remote).__module__
        import ovmlc
        local = AutoModel.from_pretrained({folder!r}, trust_remote_code=True)
        assert type(local) is ovmlc.QKSModel, type(local).__module__
        assert type(remote).__module__.startswith("transformers_modules")
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=os.environ.copy())
    assert result.returncode == 0, result.stderr[-3000:]


@pytest.mark.parametrize("name, config, backbone", CASES)
def test_traits_are_consistent_with_behaviour(name, config, backbone, backbone_dirs, images, request):
    model = cached(name, config, backbone_dirs[backbone], request.node.callspec.id)
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
    assert same != model.scores_depend_on_label_set, "scores_depend_on_label_set says the labels scored together " + (
        "matter, but adding labels changed nothing" if same else "do not matter, but adding labels changed logits"
    )


@pytest.mark.parametrize("name, config, backbone", CASES)
def test_no_missing_weights_report_for_modules_built_by_design(name, config, backbone, saved, request):
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
