"""Hub integration offline: folder validation, generated model cards, `ovmlc push` / `push-dataset` against a local
stand-in of the Hub (tests/fake_hub.py), and loading back through `HF_ENDPOINT` in fresh processes."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
import yaml
from datasets import DatasetDict
from fake_hub import FakeHub
from helpers import BLOCK_OVMLC, random_images, save_hub_layout_clip
from huggingface_hub import CommitInfo, ModelCard, RepoUrl
from huggingface_hub.repocard_data import model_index_to_eval_results
from safetensors import safe_open

from ovmlc import CLIPZeroShotConfig, CLIPZeroShotModel
from ovmlc.cli import main as cli_main
from ovmlc.core.code_export import export_model_code
from ovmlc.evaluation import ScoresFile, calibrate_thresholds, evaluate_scores, save_scores, write_thresholds
from ovmlc.files import PIPELINE_MODULE
from ovmlc.hub import HubFolderError, plan_model_upload, push_pretrained_model, validate_dataset_folder
from ovmlc.hub.model_card import OVMLCModelCardData, build_model_card, write_model_card

REPO_ROOT = Path(__file__).resolve().parents[1]
SEEN = ["red circle", "blue square", "green triangle"]
UNSEEN = ["yellow star", "purple ring"]
TOKEN = "hf_test_token_ovmlc"
RECIPE = {
    "method": "clip_zeroshot",
    # A stand-in Hub id (the weights are a tiny random CLIP): what a published recipe records.
    "backbone": "openai/clip-vit-base-patch16",
    "dataset": {"path": "ovmlc/synthetic-tiny", "source": "synthetic"},
    "output_dir": "runs/clip-tiny",
    "protocol": "synthetic",
    "optimizer": {"name": "adamw", "lr": 1.0e-5},
    "training": {"epochs": 1, "batch_size": 4, "seed": 0},
    "hub": {"repo_id": "ovmlc/clip-tiny", "license": "apache-2.0", "tags": ["tiny"]},
}
# trainer_state.json as `ovmlc train` writes it (scalars, summaries, histories, environment).
TRAINER_STATE = {
    "method": "clip_zeroshot",
    "seed": 0,
    "global_step": 12,
    "total_steps": 12,
    "epochs_completed": 1,
    "stopped_early": False,
    "train_seconds": 3725.5,
    "selection_metric": "gzsl/mAP",
    "best_step": 12,
    "best_metric": 0.41,
    "loss": {"first": 0.9, "last": 0.4, "min": 0.38, "per_epoch": [0.52], "history": [[1, 0.9], [12, 0.4]]},
    "validation": [{"step": 12, "gzsl/mAP": 0.41}],
    "labels": {"train": 3, "evaluation": 5, "unseen": 2},
    "hardware": {"device": "cpu", "num_processes": 1},
    "versions": {"ovmlc": "0.1.0", "torch": "2.13.0"},
}
# The self-contained remote code of CLIP zero-shot: its files, the shared modules they import, the pipeline.
CODE_FILES = set(export_model_code(CLIPZeroShotModel, CLIPZeroShotConfig, PIPELINE_MODULE).files)
EXPECTED_RUN_FILES = {
    *CODE_FILES,
    "README.md",
    "config.json",
    "model.safetensors",
    "label_embeddings.safetensors",
    "preprocessor_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "recipe.yaml",
    "trainer_state.json",
    *(
        f"eval/{name}"
        for name in (
            "metrics.json",
            "results.md",
            "per_label_ap.csv",
            "thresholds.json",
            "per_label_ap.png",
            "pr_curves.png",
            "ap_distribution.png",
            "threshold_f1.png",
            "score_histograms.png",
        )
    ),
}


def recipe_yaml() -> str:
    """The recipe as `ovmlc train` writes it (the trainer's own serializer when present)."""
    try:
        from ovmlc.training.recipe import recipe_from_dict
    except ImportError:
        return yaml.safe_dump(RECIPE, sort_keys=False)
    return recipe_from_dict(RECIPE, source="tests/test_hub.py").to_yaml()


# ----------------------------------------------------------------------------------------------------------------------
# Fixtures: a bare saved model, a training-run folder, a canonical dataset, a running fake hub
# ----------------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory) -> Path:
    return save_hub_layout_clip(tmp_path_factory.mktemp("clip") / "tiny-clip")


@pytest.fixture(scope="module")
def bare_model_dir(tmp_path_factory, clip_dir) -> Path:
    """`from_clip(...)` + `save_pretrained(...)`: no labels, no training state."""
    folder = tmp_path_factory.mktemp("bare") / "clip-zeroshot"
    CLIPZeroShotModel.from_clip(str(clip_dir)).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def images_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("images")
    for index, image in enumerate(random_images(3, seed=3)):
        image.save(folder / f"image-{index}.png")
    return folder


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, clip_dir) -> Path:
    """The folder layout `ovmlc train` left in earlier versions: the saved model (label split and calibrated thresholds
    in its config), recipe.yaml, trainer_state.json (today ovmlc_trainer_state.json; the old name is still read), the
    evaluation report in eval/ (with scores.npz), resumable checkpoints (with pickles) and tracker logs; the last three
    must not be uploaded."""
    folder = tmp_path_factory.mktemp("run") / "clip-tiny"
    names = SEEN + UNSEEN
    unseen = np.array([False] * len(SEEN) + [True] * len(UNSEEN))
    model = CLIPZeroShotModel.from_clip(str(clip_dir))
    labels = np.array([[1, -1, -1, 1, -1], [-1, 1, -1, -1, 1], [1, 1, -1, -1, -1], [-1, -1, 1, 1, 1]] * 3, np.int8)
    scores = model.predict_scores(random_images(len(labels), seed=1), names).astype(np.float32)
    validation_labels = labels.copy()
    validation_labels[:, unseen] = 0  # calibration never sees unseen annotations
    thresholds = calibrate_thresholds(scores, validation_labels, names)
    eval_dir = folder / "eval"
    write_thresholds(thresholds, validation_labels, names, eval_dir, split="validation")
    save_scores(eval_dir / "scores.npz", scores, labels, names, unseen)
    provenance = {
        "model": str(folder),
        "dataset": "ovmlc/synthetic-tiny",
        "split": "test",
        "calibrate_split": "validation",
        "recipe": str(folder / "recipe.yaml"),
    }
    scores_file = ScoresFile(scores, labels, names, unseen, None)
    evaluate_scores(scores_file, "synthetic", output_dir=eval_dir, thresholds=thresholds, provenance=provenance)
    model.config.label_names, model.config.seen_labels, model.config.unseen_labels = names, SEEN, UNSEEN
    model.config.label_thresholds = thresholds["label_thresholds"]
    model.config.global_threshold = thresholds["global_threshold"]
    model.save_pretrained(folder)
    (folder / "recipe.yaml").write_text(recipe_yaml(), encoding="utf-8")
    (folder / "trainer_state.json").write_text(json.dumps(TRAINER_STATE, indent=2), encoding="utf-8")
    checkpoint = folder / "checkpoints" / "checkpoint-12"
    checkpoint.mkdir(parents=True)
    (checkpoint / "optimizer.bin").write_bytes(b"pickled optimizer state")
    (checkpoint / "trainer_state.json").write_text("{}", encoding="utf-8")
    (folder / "logs").mkdir()
    (folder / "logs" / "events.out.tfevents.1").write_bytes(b"tensorboard")
    return folder


@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory) -> Path:
    from ovmlc.data import canonical_features, save_canonical

    features = canonical_features(SEEN + UNSEEN)
    rows = {
        "train": [[0], [1, 2], [0, 2]],
        "validation": [[1], [0]],
        "test": [[0, 3], [1, 4], [2, 3, 4]],
    }
    splits = {}
    for split, positives in rows.items():
        images = random_images(len(positives), size=16, seed=len(split))
        data = {"image": images, "labels": positives, "image_id": [f"{split}-{i}" for i in range(len(positives))]}
        splits[split] = __import__("datasets").Dataset.from_dict(data, features=features)
    return save_canonical(
        DatasetDict(splits),
        tmp_path_factory.mktemp("dataset") / "synthetic-tiny",
        source="synthetic",
        converter_version="test",
        seen_labels=SEEN,
        unseen_labels=UNSEEN,
        annotation="full",
        description="A five-label toy dataset for the Hub tests.",
    )


@pytest.fixture(scope="module")
def fake_hub(tmp_path_factory):
    with FakeHub(tmp_path_factory.mktemp("fake-hub")) as hub:
        yield hub
    assert not hub.errors, "\n".join(hub.errors)


@pytest.fixture
def online(fake_hub, monkeypatch):
    """Point huggingface_hub (already imported, offline) at the fake hub with a token, for in-process pushes and
    downloads."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    # all three are derived from HF_ENDPOINT when huggingface_hub is imported
    monkeypatch.setattr(constants, "ENDPOINT", fake_hub.endpoint)
    monkeypatch.setattr(
        constants, "HUGGINGFACE_CO_URL_TEMPLATE", fake_hub.endpoint + "/{repo_id}/resolve/{revision}/{filename}"
    )
    monkeypatch.setattr(constants, "HF_URL_HOSTS", constants.HF_URL_HOSTS | {"127.0.0.1"})
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    return fake_hub


def run_python(code: str, hub: FakeHub, cwd: Path, timeout: int = 240) -> str:
    """Run `code` in a fresh interpreter that reaches the fake hub through HF_ENDPOINT with an empty cache."""
    env = dict(os.environ)
    env.update(
        HF_HUB_OFFLINE="0",
        HF_ENDPOINT=hub.endpoint,
        HF_HOME=str(cwd / "hf-home"),
        HF_TOKEN=TOKEN,
        PYTHONPATH=os.pathsep.join([str(REPO_ROOT), env.get("PYTHONPATH", "")]),
    )
    env.pop("OVMLC_CACHE", None)
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )
    assert result.returncode == 0, f"subprocess failed:\n{result.stdout}\n{result.stderr[-6000:]}"
    return result.stdout


# ----------------------------------------------------------------------------------------------------------------------
# Folder validation
# ----------------------------------------------------------------------------------------------------------------------


def _broken_copy(source: Path, destination: Path, edit) -> Path:
    shutil.copytree(source, destination, ignore=shutil.ignore_patterns("checkpoints"))
    edit(destination)
    return destination


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda d: (d / "config.json").unlink(), r"config\.json is missing"),
        (lambda d: (d / "model.safetensors").unlink(), r"model\.safetensors is missing"),
        (lambda d: (d / "pytorch_model.bin").write_bytes(b"\x80\x04pickle"), r"pytorch_model\.bin: pickle-based"),
        (lambda d: (d / "model.safetensors").write_bytes(b"\xff" * 16), r"model\.safetensors: not a readable"),
        (lambda d: (d / "pipeline.py").unlink(), r"pipeline\.py is missing"),
        (lambda d: (d / "modeling_clip_zeroshot.py").unlink(), r"modeling_clip_zeroshot\.py is missing"),
        (lambda d: (d / "preprocessor_config.json").unlink(), r"preprocessor_config\.json is missing"),
        (
            lambda d: (d / "config.json").write_text(json.dumps({"model_type": "clip"})),
            r"model_type 'clip' is not an ovmlc model",
        ),
        (
            lambda d: (d / "config.json").write_text(
                json.dumps({k: v for k, v in json.loads((d / "config.json").read_text()).items() if k != "auto_map"})
            ),
            r"no auto_map",
        ),
    ],
    ids=[
        "no-config",
        "no-weights",
        "pickle",
        "bad-safetensors",
        "no-pipeline",
        "no-code",
        "no-processor",
        "clip",
        "no-auto-map",
    ],
)
def test_model_folder_validation_names_the_file(tmp_path, bare_model_dir, edit, message):
    folder = _broken_copy(bare_model_dir, tmp_path / "model", edit)
    with pytest.raises(HubFolderError, match=message):
        plan_model_upload(folder, "org/model")


def test_cli_push_reports_validation_errors(tmp_path, bare_model_dir, capsys):
    folder = _broken_copy(bare_model_dir, tmp_path / "model", lambda d: (d / "weights.pt").write_bytes(b"x"))
    assert cli_main(["push", "--model", str(folder), "--repo", "org/model"]) == 2
    error = capsys.readouterr().err
    assert "ovmlc push: error:" in error and "weights.pt" in error and "Traceback" not in error
    assert cli_main(["push", "--model", str(tmp_path / "missing"), "--repo", "org/model"]) == 2
    assert "no such model folder" in capsys.readouterr().err


def test_upload_plan_skips_training_state(run_dir):
    plan = plan_model_upload(run_dir, "org/clip-tiny")
    assert set(plan.paths_in_repo) == EXPECTED_RUN_FILES
    assert {"eval/scores.npz", "checkpoints/checkpoint-12/optimizer.bin", "logs/events.out.tfevents.1"} <= set(
        plan.skipped
    )
    assert plan.generated["README.md"].decode().count('"org/clip-tiny"') >= 3  # snippets name the target repo


def test_cli_dry_run_uploads_nothing(run_dir, capsys):
    assert cli_main(["push", "--model", str(run_dir), "--repo", "org/clip-tiny", "--dry-run"]) == 0
    output = capsys.readouterr().out
    assert "model.safetensors" in output and "README.md  (generated)" in output
    assert "library_name: transformers" in output  # the card is shown for review


def test_cli_push_offline_is_a_clear_error(run_dir, capsys):
    # conftest keeps huggingface_hub offline: the upload must fail with a message, not a traceback.
    assert cli_main(["push", "--model", str(run_dir), "--repo", "org/clip-tiny"]) == 1
    error = capsys.readouterr().err
    assert "upload to org/clip-tiny failed" in error and "offline" in error


# ----------------------------------------------------------------------------------------------------------------------
# Model card
# ----------------------------------------------------------------------------------------------------------------------


def test_card_of_training_run_states_the_real_results(run_dir):
    card = build_model_card(run_dir, repo_id="org/clip-tiny", revision="v1")
    parsed = ModelCard(str(card))  # the YAML header parses as a Hub card
    data = parsed.data.to_dict()
    assert data["library_name"] == "transformers"
    assert data["pipeline_tag"] == "zero-shot-image-classification"
    assert {"ovmlc", "open-vocabulary", "multi-label-classification", "clip-zeroshot", "tiny"} <= set(data["tags"])
    assert data["datasets"] == ["ovmlc/synthetic-tiny"]
    assert data["base_model"] == "openai/clip-vit-base-patch16"
    assert data["license"] == "apache-2.0"

    metrics = json.loads((run_dir / "eval" / "metrics.json").read_text())
    results = model_index_to_eval_results(data["model-index"])[1]
    assert results == parsed.data.eval_results == OVMLCModelCardData.from_folder(run_dir).eval_results()
    by_name = {result.metric_name: result for result in results}
    zsl_map = by_name["ZSL mAP (synthetic)"]
    assert zsl_map.metric_value == round(100 * metrics["views"]["zsl"]["mAP"], 2)
    assert zsl_map.metric_args == {"protocol": "synthetic", "view": "zsl"}
    assert zsl_map.dataset_type == "ovmlc/synthetic-tiny" and zsl_map.dataset_split == "test"
    gzsl_f1 = by_name["GZSL F1@3 (synthetic)"]
    assert gzsl_f1.metric_value == round(100 * metrics["views"]["gzsl"]["top_k"]["3"]["f1"], 2)
    assert gzsl_f1.metric_args["top_k"] == 3

    body = parsed.text
    results = (run_dir / "eval" / "results.md").read_text().splitlines()
    assert next(line for line in results if line.startswith("| GZSL")) in body  # the run's own report, verbatim
    assert "| global step | 12 |" in body and "| train seconds | 3725.5 (1h 02m 06s) |" in body
    assert "| versions | ovmlc 0.1.0, torch 2.13.0 |" in body and "| loss | first 0.9, last 0.4, min 0.38 |" in body
    assert "](eval/per_label_ap.png)" in body and "[`eval/metrics.json`](eval/metrics.json)" in body
    assert 'threshold="calibrated"' in body
    assert "protocol: synthetic" in body  # the resolved recipe
    assert "arxiv.org/abs/2103.00020" in body and "@inproceedings{radford2021clip" in body
    assert "Seen (3):** red circle, blue square, green triangle" in body
    assert "pip install ovmlc" in body and 'revision="v1"' in body and 'code_revision="v1"' in body
    assert str(run_dir) not in body  # no local paths of the training machine


def test_card_of_an_evaluation_only_run_claims_no_training(run_dir, tmp_path):
    folder = tmp_path / "zero-shot"
    shutil.copytree(run_dir, folder, ignore=shutil.ignore_patterns("checkpoints", "logs"))
    recipe = yaml.safe_load((folder / "recipe.yaml").read_text())
    recipe["training"]["epochs"] = 0
    (folder / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    (folder / "trainer_state.json").write_text(json.dumps({**TRAINER_STATE, "global_step": 0}))
    card = build_model_card(folder)
    assert "Not trained: `ovmlc train` ran its recipe with no training steps" in card.text
    assert "Seen/unseen bias" not in card.text and card.data.eval_results  # its numbers are still reported


def test_card_without_training_state_claims_nothing(bare_model_dir, tmp_path):
    folder = tmp_path / "model"
    shutil.copytree(bare_model_dir, folder)
    path = write_model_card(folder)
    card = ModelCard.load(path)
    assert "model-index" not in card.data.to_dict() and not card.data.eval_results
    assert "base_model" not in card.data.to_dict()  # a local backbone folder is not a Hub model
    assert "claims no results" in card.text and "No training record" in card.text
    assert "mAP" not in card.text.split("## Limitations")[0].split("## Evaluation")[1]
    assert '"your-org/model"' in card.text  # no repo known yet: an obvious placeholder


def test_every_method_has_a_card_description_and_citation():
    import ovmlc
    from ovmlc.core.registry import get_method
    from ovmlc.hub.model_card import method_for_model_type

    for name, (config_class, _) in ovmlc.METHODS.items():
        assert method_for_model_type(config_class.model_type) == name
        card = get_method(name).card
        assert card.name and card.summary and card.papers, f"method {name!r}: empty MethodCard"
        for paper in card.papers:
            assert paper.bibtex.startswith("@") and paper.title in paper.bibtex, (name, paper.title)
            assert paper.short_authors and paper.year > 2000


def test_card_claims_label_independence_only_for_methods_that_have_it(tmp_path, clip_dir, bare_model_dir):
    from ovmlc import MKTModel

    independent = (bare_model_dir / "README.md").read_text()
    assert "adding labels to the list does not change the scores of the others" in independent
    assert "It scores any list of label texts independently" in independent

    folder = tmp_path / "mkt"
    MKTModel.from_clip(str(clip_dir), num_trainable_layers=1).save_pretrained(folder)
    text = (folder / "README.md").read_text()
    assert MKTModel.scores_depend_on_label_set
    assert "does not change the scores of the others" not in text and "independently" not in text
    assert "changes the scores of the others" in text
    assert "MKT (Multi-modal Knowledge Transfer)" in text and "@inproceedings{he2023mkt" in text
    assert "Implementation notes" in text and "token_table" in text  # the MethodCard's notes are rendered


def _python_blocks(markdown: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", markdown, flags=re.DOTALL)


def test_card_usage_snippets_run(run_dir, images_dir, tmp_path, monkeypatch, capsys):
    """Every python block of the card runs as written, with the repo id pointing at the local folder."""
    card = build_model_card(run_dir, repo_id="org/clip-tiny")
    blocks = _python_blocks(str(card))
    assert len(blocks) == 3
    shutil.copy(images_dir / "image-0.png", tmp_path / "example.jpg")  # the snippets' image file
    monkeypatch.chdir(tmp_path)
    outputs = []
    for block in blocks:
        assert "org/clip-tiny" in block
        exec(compile(block.replace("org/clip-tiny", str(run_dir)), "<card snippet>", "exec"), {})
        outputs.append(capsys.readouterr().out)
    assert all(output.strip() for output in outputs)
    assert "yellow star" in outputs[0] and "yellow star" in outputs[2]


# ----------------------------------------------------------------------------------------------------------------------
# Push to the fake hub and load back
# ----------------------------------------------------------------------------------------------------------------------


@pytest.fixture
def pushed_run(online, run_dir, capsys):
    assert cli_main(["push", "--model", str(run_dir), "--repo", "org/clip-tiny", "--private"]) == 0
    assert f"pushed {len(EXPECTED_RUN_FILES)} files to org/clip-tiny" in capsys.readouterr().out
    return "org/clip-tiny"


def test_push_uploads_the_model_folder(pushed_run, run_dir, fake_hub):
    assert set(fake_hub.list_files(pushed_run)) == EXPECTED_RUN_FILES
    assert fake_hub.repo(pushed_run).private
    for name in ("model.safetensors", "config.json", "eval/metrics.json", "recipe.yaml"):
        assert fake_hub.read_file(pushed_run, name) == (run_dir / name).read_bytes()
    config = json.loads(fake_hub.read_file(pushed_run, "config.json"))
    assert config["auto_map"]["AutoModel"] == "modeling_clip_zeroshot.CLIPZeroShotModel"
    assert "open-vocabulary-multi-label-classification" in config["custom_pipelines"]
    thresholds = json.loads((run_dir / "eval" / "thresholds.json").read_text())
    assert config["global_threshold"] == thresholds["global_threshold"]
    assert config["label_thresholds"] == thresholds["label_thresholds"]
    card = ModelCard(fake_hub.read_file(pushed_run, "README.md").decode())
    assert card.data.eval_results and 'load_model("org/clip-tiny"' in card.text
    writes = [request for request in fake_hub.requests if request.method == "POST"]
    assert writes and all(request.authorization == f"Bearer {TOKEN}" for request in writes)


def test_push_to_a_branch(online, bare_model_dir, fake_hub, capsys):
    assert cli_main(["push", "--model", str(bare_model_dir), "--repo", "org/bare"]) == 0
    main_commit = fake_hub.repo("org/bare").branches["main"]
    args = ["push", "--model", str(bare_model_dir), "--repo", "org/bare", "--revision", "dev", "--commit-message", "v2"]
    assert cli_main(args) == 0
    repo = fake_hub.repo("org/bare")
    assert repo.branches["main"] == main_commit and repo.branches["dev"] != main_commit
    assert repo.commit_messages[repo.branches["dev"]] == "v2"
    assert 'revision="dev"' in fake_hub.read_file("org/bare", "README.md", revision="dev").decode()


@pytest.mark.slow
def test_pushed_model_loads_back_through_the_hub(pushed_run, run_dir, images_dir, fake_hub, tmp_path):
    """A fresh process with only HF_ENDPOINT: remote code without `import ovmlc`, the pipeline, then ovmlc."""
    images = sorted(str(path) for path in images_dir.glob("*.png"))
    labels = ["green triangle", "yellow star", "a dog"]
    expected = CLIPZeroShotModel.from_pretrained(run_dir).predict_scores(images, labels)
    np.save(tmp_path / "expected.npy", expected)
    output = run_python(
        f"""
        import sys
        import numpy as np
        from transformers import AutoModel, pipeline

        images, labels = {images!r}, {labels!r}
        expected = np.load("expected.npy")
        assert "ovmlc" not in sys.modules
        model = AutoModel.from_pretrained("{pushed_run}", trust_remote_code=True, revision="main")
        assert type(model).__module__.startswith("transformers_modules."), type(model).__module__
        np.testing.assert_allclose(model.predict_scores(images, labels), expected, atol=1e-5)

        classifier = pipeline(model="{pushed_run}", trust_remote_code=True)
        ranked = classifier(images[0], candidate_labels=labels)
        np.testing.assert_allclose(sorted(r["score"] for r in ranked), sorted(expected[0]), atol=1e-5)

        import ovmlc

        native = ovmlc.load_model("{pushed_run}")
        assert type(native) is ovmlc.CLIPZeroShotModel
        np.testing.assert_allclose(native.predict_scores(images, labels), expected, atol=1e-5)
        print("loaded", type(model).__name__, native.config.global_threshold)
        """,
        fake_hub,
        tmp_path,
    )
    global_threshold = json.loads((run_dir / "config.json").read_text())["global_threshold"]
    assert f"loaded CLIPZeroShotModel {global_threshold}" in output
    downloads = {request.path.rsplit("/", 1)[-1] for request in fake_hub.requests if "/resolve/" in request.path}
    assert {"model.safetensors", "modeling_clip_zeroshot.py", "pipeline.py", "tokenizer.json"} <= downloads


@pytest.mark.slow
def test_trained_run_pushes_and_loads_back(online, tmp_path, monkeypatch):
    """The real `ovmlc train` output (a tiny QKS) -> `ovmlc push` -> `ovmlc.load_model(repo)` through the fake hub."""
    import torch
    from test_train_fixtures import SEEN as COLOURS_SEEN
    from test_train_fixtures import UNSEEN as COLOURS_UNSEEN
    from test_train_fixtures import make_tiny_backbone, make_tiny_dataset, write_recipe

    import ovmlc
    from ovmlc.training.trainer import train

    monkeypatch.setenv("OVMLC_CACHE", str(tmp_path / "ovmlc-cache"))
    recipe = write_recipe(
        tmp_path / "qks.yaml",
        make_tiny_dataset(tmp_path / "data"),
        make_tiny_backbone(tmp_path / "clip"),
        tmp_path / "run",
        method="qks",
        method_config={"num_queries": 4, "num_query_layers": 1, "templates": "single"},
        freeze=[],
        optimizer={"lr": 1.0e-3},
        training={"epochs": 1},
        hub={"repo_id": "org/qks-tiny", "license": "mit"},
    )
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny model on a shared machine: one thread is faster
    try:
        output = Path(train(recipe))
    finally:
        torch.set_num_threads(threads)
    assert 'load_model("org/qks-tiny"' in (output / "README.md").read_text()  # the trainer wrote the card

    assert cli_main(["push", "--model", str(output), "--repo", "org/qks-tiny"]) == 0
    uploaded = online.list_files("org/qks-tiny")
    assert {"modeling_qks.py", "configuration_qks.py", "eval/metrics.json", "ovmlc_trainer_state.json"} <= set(uploaded)
    assert not [name for name in uploaded if name.startswith("checkpoints/") or name.endswith((".bin", ".pkl", ".npz"))]
    card = ModelCard(online.read_file("org/qks-tiny", "README.md").decode())
    metrics = json.loads((output / "eval" / "metrics.json").read_text())
    zsl_map = next(result for result in card.data.eval_results if result.metric_name == "ZSL mAP (synthetic)")
    assert zsl_map.metric_value == round(100 * metrics["views"]["zsl"]["mAP"], 2)
    assert card.data.license == "mit" and "qks" in card.data.tags

    labels = COLOURS_SEEN + COLOURS_UNSEEN
    images = random_images(2, seed=5)
    from_hub = ovmlc.load_model("org/qks-tiny")
    assert type(from_hub) is ovmlc.QKSModel
    expected = ovmlc.load_model(str(output)).predict_scores(images, labels)
    np.testing.assert_allclose(from_hub.predict_scores(images, labels), expected, atol=1e-5)


# ----------------------------------------------------------------------------------------------------------------------
# Adapter-only models whose base model is on the Hub
# ----------------------------------------------------------------------------------------------------------------------


def _push_folder(repo_id: str, folder: Path, message: str = "upload") -> str:
    """Upload a folder as it is (e.g. a plain CLIP checkpoint) with the real client; returns the new commit id."""
    from huggingface_hub import HfApi

    api = HfApi()
    api.create_repo(repo_id, exist_ok=True)
    return api.upload_folder(repo_id=repo_id, folder_path=str(folder), commit_message=message).oid


def _perturbed(model, seed: int = 0):
    """As if trained: every trainable weight moved."""
    import torch

    torch.manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.requires_grad:
                parameter.add_(0.05 * torch.randn_like(parameter))
    return model.eval()


def _qks_on_hub_backbone(backbone_id: str, seed: int = 0):
    from ovmlc import QKSModel

    model = QKSModel.from_clip(backbone_id, num_queries=4, num_query_layers=1, templates="single")
    model.config.label_names = SEEN + UNSEEN
    return _perturbed(model, seed)


def _resolved(fake_hub: FakeHub, repo_id: str) -> list[str]:
    return [request.path for request in fake_hub.requests if request.path.startswith(f"/{repo_id}/resolve/")]


def test_adapter_only_model_and_its_backbone_on_the_hub_load_without_ovmlc(online, fake_hub, images_dir, tmp_path):
    """Built from a CLIP that is on the Hub, a model saves in the adapter-only layout by default (its own weights,
    the backbone pinned by commit); pushed, it loads in a fresh process where `import ovmlc` fails, with AutoModel and
    the pipeline, which fetch the model and its backbone and give the scores of the saved model."""
    backbone_id = "org/tiny-clip-a"
    backbone_commit = _push_folder(backbone_id, save_hub_layout_clip(tmp_path / "tiny-clip"))
    model = _qks_on_hub_backbone(backbone_id)
    folder = tmp_path / "qks-adapter"
    model.save_pretrained(folder)
    config = json.loads((folder / "config.json").read_text())
    assert config["weights_layout"] == "adapter_only" and config["base_model_modules"] == ["clip"]
    assert config["base_model_name_or_path"] == backbone_id == config["backbone_name_or_path"]
    assert config["base_model_revision"] == backbone_commit == config["backbone_revision"]
    with safe_open(str(folder / "model.safetensors"), framework="pt") as handle:
        assert handle.keys() and not [key for key in handle.keys() if key.startswith("clip.")]

    assert cli_main(["push", "--model", str(folder), "--repo", "org/qks-adapter"]) == 0
    card = ModelCard(fake_hub.read_file("org/qks-adapter", "README.md").decode())
    assert card.data.base_model == backbone_id
    assert "adapter-only" in card.text and backbone_commit in card.text and "works without ovmlc installed" in card.text

    images = sorted(str(path) for path in images_dir.glob("*.png"))
    labels = ["green triangle", "yellow star", "a dog"]
    np.save(tmp_path / "expected.npy", model.predict_scores(images, labels))
    before = len(_resolved(fake_hub, backbone_id))
    output = run_python(
        BLOCK_OVMLC
        + textwrap.dedent(
            f"""
            import numpy as np
            from transformers import AutoModel, pipeline

            images, labels = {images!r}, {labels!r}
            expected = np.load("expected.npy")
            model = AutoModel.from_pretrained("org/qks-adapter", trust_remote_code=True)
            assert type(model).__module__.startswith("transformers_modules."), type(model).__module__
            np.testing.assert_allclose(model.predict_scores(images, labels), expected, atol=1e-5)
            classifier = pipeline(model="org/qks-adapter", trust_remote_code=True)
            scores = {{entry["label"]: entry["score"] for entry in classifier(images[0], candidate_labels=labels)}}
            np.testing.assert_allclose([scores[label] for label in labels], expected[0], atol=1e-5)
            try:
                import ovmlc  # noqa: F401
            except ImportError:
                print("loaded without ovmlc")
            """
        ),
        fake_hub,
        tmp_path,
    )
    assert "loaded without ovmlc" in output
    assert f"/{backbone_id}/resolve/{backbone_commit}/model.safetensors" in _resolved(fake_hub, backbone_id)[before:]


def test_pinned_revisions_are_honoured(online, fake_hub, images_dir, tmp_path):
    """The backbone is loaded at the commit the folder pins even after its repo moves on, and `revision=` picks an
    earlier commit of the model repo itself."""
    backbone_id, repo_id = "org/tiny-clip-b", "org/qks-pinned"
    first = _push_folder(backbone_id, save_hub_layout_clip(tmp_path / "clip-0", seed=0))
    model = _qks_on_hub_backbone(backbone_id)
    model.save_pretrained(tmp_path / "v1")
    assert cli_main(["push", "--model", str(tmp_path / "v1"), "--repo", repo_id]) == 0
    model_commit = fake_hub.repo(repo_id).branches["main"]
    images = sorted(str(path) for path in images_dir.glob("*.png"))
    labels = ["green triangle", "yellow star", "a dog"]
    np.save(tmp_path / "expected.npy", model.predict_scores(images, labels))

    second = _push_folder(backbone_id, save_hub_layout_clip(tmp_path / "clip-1", seed=1), "other weights")
    _perturbed(model, seed=1).save_pretrained(tmp_path / "v2")
    assert cli_main(["push", "--model", str(tmp_path / "v2"), "--repo", repo_id]) == 0
    run_python(
        f"""
        import numpy as np
        import ovmlc

        images, labels = {images!r}, {labels!r}
        expected = np.load("expected.npy")
        pinned = ovmlc.load_model({repo_id!r}, revision={model_commit!r})
        assert pinned.config.base_model_revision == {first!r}
        np.testing.assert_allclose(pinned.predict_scores(images, labels), expected, atol=1e-5)
        latest = ovmlc.load_model({repo_id!r})
        assert not np.allclose(latest.predict_scores(images, labels), expected, atol=1e-3)
        """,
        fake_hub,
        tmp_path,
    )
    downloads = _resolved(fake_hub, backbone_id)
    assert f"/{backbone_id}/resolve/{first}/model.safetensors" in downloads
    assert f"/{backbone_id}/resolve/{second}/model.safetensors" not in downloads


def test_unresolvable_base_model_names_it_and_the_fixes(online, tmp_path, monkeypatch):
    from huggingface_hub import constants

    from ovmlc import QKSModel
    from ovmlc.core.backbones import BackboneNotFoundError

    backbone_id = "org/tiny-clip-c"
    commit = _push_folder(backbone_id, save_hub_layout_clip(tmp_path / "tiny-clip"))
    _qks_on_hub_backbone(backbone_id).save_pretrained(tmp_path / "model")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)  # offline, with a cache that does not hold the backbone
    with pytest.raises(BackboneNotFoundError) as error:
        QKSModel.from_pretrained(tmp_path / "model", cache_dir=str(tmp_path / "empty-cache"))
    message = str(error.value)
    assert f"'{backbone_id}' at revision {commit}" in message and "clip" in message
    assert "HF_HUB_OFFLINE (it is set now)" in message and "network access" in message
    assert "save_backbone=True" in message


def test_push_refuses_an_adapter_only_folder_whose_base_is_a_local_path(clip_dir, tmp_path, capsys):
    from ovmlc import QKSModel

    model = QKSModel.from_clip(str(clip_dir), num_queries=4, num_query_layers=1)
    model.save_pretrained(tmp_path / "default")  # a local backbone: the whole model by default
    assert json.loads((tmp_path / "default" / "config.json").read_text())["weights_layout"] == "whole_model"
    plan_model_upload(tmp_path / "default", "org/qks")
    model.save_pretrained(tmp_path / "adapter", save_backbone=False)
    with pytest.raises(HubFolderError, match=r"base model .*tiny-clip.*a local path.*save_backbone=True"):
        plan_model_upload(tmp_path / "adapter", "org/qks")
    assert cli_main(["push", "--model", str(tmp_path / "adapter"), "--repo", "org/qks", "--dry-run"]) == 2
    assert "a local path" in capsys.readouterr().err
    card = (tmp_path / "adapter" / "README.md").read_text()
    assert "adapter-only (peft-style)" in card and "(local)" in card


def test_adapter_only_sizes_on_a_b16_shaped_backbone(online, fake_hub, tmp_path):
    """Issue 15's size targets, on a backbone with ViT-B/16's widths (one layer per tower) pushed to the stand-in Hub:
    a CoOp-sized prompt (16 x 512 context vectors) saves <= 100 KB of weights; MKT stage 2 started from a stage-1 repo
    <= 1 MB (the prompt only: the student and the CLIP come from the stage-1 repo, which takes the CLIP from the
    backbone repo), and that chain of references loads back to the same logits."""
    import torch
    from helpers import b16_shaped_clip, tiny_image_processor
    from prompt_method import TinyPromptModel

    from ovmlc import MKTModel

    backbone = tmp_path / "clip-b16-shaped"
    clip, tokenizer = b16_shaped_clip()
    clip.save_pretrained(backbone)
    tokenizer.save_pretrained(backbone)
    tiny_image_processor(image_size=224).save_pretrained(backbone)
    backbone_id = "org/clip-b16-shaped"
    _push_folder(backbone_id, backbone)
    sizes = {"backbone (whole CLIP)": (backbone / "model.safetensors").stat().st_size}

    prompt = _perturbed(TinyPromptModel.from_clip(backbone_id, prompt_learning={"n_ctx": 16}))
    assert tuple(prompt.prompt_learner.ctx.shape) == (1, 16, 512)
    prompt.save_pretrained(tmp_path / "coop-sized")
    sizes["CoOp-sized prompt, adapter-only"] = (tmp_path / "coop-sized" / "model.safetensors").stat().st_size
    with safe_open(str(tmp_path / "coop-sized" / "model.safetensors"), framework="pt") as handle:
        assert set(handle.keys()) == {"prompt_learner.ctx"}

    stage1 = _perturbed(MKTModel.from_clip(backbone_id, num_trainable_layers=1))
    stage1.save_pretrained(tmp_path / "mkt-stage1")
    sizes["MKT stage 1, adapter-only (the student)"] = (tmp_path / "mkt-stage1" / "model.safetensors").stat().st_size
    assert cli_main(["push", "--model", str(tmp_path / "mkt-stage1"), "--repo", "org/mkt-stage1"]) == 0
    stage1_commit = fake_hub.repo("org/mkt-stage1").branches["main"]

    stage2 = _perturbed(MKTModel.from_pretrained("org/mkt-stage1", stage=2), seed=1)
    assert stage2.trains_text_side
    stage2.save_pretrained(tmp_path / "mkt-stage2")
    config = json.loads((tmp_path / "mkt-stage2" / "config.json").read_text())
    assert (config["base_model_name_or_path"], config["base_model_revision"]) == ("org/mkt-stage1", stage1_commit)
    assert config["base_model_modules"] == ["clip", "student"]
    sizes["MKT stage 2, adapter-only (the prompt)"] = (tmp_path / "mkt-stage2" / "model.safetensors").stat().st_size
    print("\n".join(f"{name}: {size:,} bytes" for name, size in sizes.items()))
    assert sizes["CoOp-sized prompt, adapter-only"] <= 100_000
    assert sizes["MKT stage 2, adapter-only (the prompt)"] <= 1_000_000
    assert sizes["backbone (whole CLIP)"] > 100 * sizes["MKT stage 2, adapter-only (the prompt)"]

    pixel_values = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    loaded = MKTModel.from_pretrained(tmp_path / "mkt-stage2")
    with torch.no_grad():
        expected = stage2(pixel_values=pixel_values, label_names=SEEN).logits
        torch.testing.assert_close(loaded(pixel_values=pixel_values, label_names=SEEN).logits, expected)
    assert [ref.name_or_path for ref in loaded._weights_provenance.chain] == [
        str(tmp_path / "mkt-stage2"),
        "org/mkt-stage1",
        backbone_id,
    ]


def test_prompt_family_adapter_only_on_a_b16_shaped_backbone(online, fake_hub, tmp_path):
    """Issue 19's size target with the real methods: CoOp, DualCoOp and DualCoOp++ with 16-vector contexts (512 wide)
    built on a Hub-id backbone save only their prompts (and CoOp's bias), <= 100 KB each, and load back to the same
    logits."""
    import torch
    from helpers import b16_shaped_clip, tiny_image_processor

    from ovmlc import CoOpModel, DualCoOpModel, DualCoOpPPModel

    backbone = tmp_path / "clip-b16-shaped"
    clip, tokenizer = b16_shaped_clip()
    clip.save_pretrained(backbone)
    tokenizer.save_pretrained(backbone)
    tiny_image_processor(image_size=224).save_pretrained(backbone)
    backbone_id = "org/clip-b16-shaped-prompts"
    _push_folder(backbone_id, backbone)
    pixel_values = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    sizes = {}
    for model_class, prompt_sets, keys in (
        (CoOpModel, 1, {"prompt_learner.ctx", "logit_head.bias"}),
        (DualCoOpModel, 2, {"prompt_learner.ctx"}),
        (DualCoOpPPModel, 3, {"prompt_learner.ctx"}),
    ):
        model = _perturbed(model_class.from_clip(backbone_id, prompt_learning={"n_ctx": 16}))
        assert tuple(model.prompt_learner.ctx.shape) == (prompt_sets, 16, 512)
        folder = tmp_path / model_class.__name__
        model.save_pretrained(folder)
        sizes[model_class.__name__] = (folder / "model.safetensors").stat().st_size
        with safe_open(str(folder / "model.safetensors"), framework="pt") as handle:
            assert set(handle.keys()) == keys
        loaded = model_class.from_pretrained(folder)
        with torch.no_grad():
            expected = model(pixel_values=pixel_values, label_names=SEEN).logits
            torch.testing.assert_close(loaded(pixel_values=pixel_values, label_names=SEEN).logits, expected)
    print(sizes)
    assert all(size <= 100_000 for size in sizes.values()), sizes


def _mock_hub_api():
    """`HfApi.create_repo` / `create_commit` replaced; returns (patches, captured operations)."""
    captured = {}

    def create_commit(self, repo_id, operations, **kwargs):
        captured["repo_id"] = repo_id
        # read now: push_to_hub deletes its temporary folder once the commit returns
        captured["files"] = {operation.path_in_repo: _operation_bytes(operation) for operation in operations}
        return CommitInfo(
            commit_url=f"https://huggingface.co/{repo_id}/commit/{'0' * 40}",
            commit_message=kwargs.get("commit_message", ""),
            commit_description="",
            oid="0" * 40,
        )

    patches = [
        mock.patch(
            "huggingface_hub.HfApi.create_repo",
            lambda self, repo_id, **kwargs: RepoUrl(f"https://huggingface.co/{repo_id}"),
        ),
        mock.patch("huggingface_hub.HfApi.create_commit", create_commit),
    ]
    return patches, captured


def _operation_bytes(operation) -> bytes:
    content = operation.path_or_fileobj
    if isinstance(content, (str, Path)):
        return Path(content).read_bytes()
    return content if isinstance(content, bytes) else content.read()


def test_push_pretrained_model_with_mocked_api(clip_dir):
    model = CLIPZeroShotModel.from_clip(str(clip_dir), label_names=SEEN)
    patches, captured = _mock_hub_api()
    with patches[0], patches[1]:
        commit = push_pretrained_model(model, "org/from-object", tags=["demo"])
    assert commit.commit_url.endswith("/commit/" + "0" * 40)
    assert {"README.md", "config.json", "model.safetensors", "modeling_clip_zeroshot.py", "pipeline.py"} <= set(
        captured["files"]
    )
    card = ModelCard(captured["files"]["README.md"].decode())
    assert "demo" in card.data.tags and "ovmlc" in card.data.tags and 'load_model("org/from-object"' in card.text


def test_model_push_to_hub_uploads_the_ovmlc_card(clip_dir):
    """`model.push_to_hub` (transformers' entry point) uploads the same files and the generated ovmlc card."""
    model = CLIPZeroShotModel.from_clip(str(clip_dir), label_names=SEEN)
    patches, captured = _mock_hub_api()
    with patches[0], patches[1]:
        model.push_to_hub("org/pushed")
    files = set(captured["files"])
    assert {"config.json", "model.safetensors", "configuration_clip_zeroshot.py", "modeling_clip_zeroshot.py"} <= files
    assert {"pipeline.py", "preprocessor_config.json", "tokenizer.json", "label_embeddings.safetensors"} <= files
    card = ModelCard(captured["files"]["README.md"].decode())
    assert card.data.library_name == "transformers" and "ovmlc" in card.data.tags
    assert 'load_model("org/pushed"' in card.text


# ----------------------------------------------------------------------------------------------------------------------
# Datasets
# ----------------------------------------------------------------------------------------------------------------------


def _edit_card(folder: Path, old: str, new: str) -> None:
    readme = folder / "README.md"
    readme.write_text(readme.read_text().replace(old, new, 1))


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda d: (d / "README.md").unlink(), r"README\.md is missing"),
        (lambda d: _edit_card(d, "configs:", "config_list:"), r"no 'configs'"),
        (lambda d: _edit_card(d, "path: data/test-*", "path: data/tests-*"), r"data/tests-\*.*matches no parquet"),
        (lambda d: _edit_card(d, "ovmlc:", "other:"), r"no 'ovmlc:' block"),
        (lambda d: [path.unlink() for path in (d / "data").glob("*.parquet")], r"no parquet files"),
    ],
    ids=["no-card", "no-configs", "bad-pattern", "no-ovmlc-block", "no-parquet"],
)
def test_dataset_folder_validation_names_the_problem(tmp_path, dataset_dir, edit, message):
    folder = tmp_path / "dataset"
    shutil.copytree(dataset_dir, folder)
    edit(folder)
    with pytest.raises(HubFolderError, match=message):
        validate_dataset_folder(folder)


@pytest.mark.slow
def test_push_dataset_and_load_it_back(online, dataset_dir, fake_hub, tmp_path, capsys):
    assert cli_main(["push-dataset", "--data", str(dataset_dir), "--repo", "org/synthetic-tiny"]) == 0
    assert "pushed" in capsys.readouterr().out
    uploaded = fake_hub.list_files("org/synthetic-tiny", repo_type="dataset")
    local = sorted(path.relative_to(dataset_dir).as_posix() for path in dataset_dir.rglob("*") if path.is_file())
    assert uploaded == local and "README.md" in uploaded
    output = run_python(
        """
        from datasets import load_dataset
        from ovmlc.data import load_canonical, read_label_split

        dataset = load_dataset("org/synthetic-tiny")
        print({split: len(rows) for split, rows in dataset.items()})
        print(read_label_split("org/synthetic-tiny"))
        print(load_canonical("org/synthetic-tiny")["test"].features["labels"].feature.names)
        """,
        fake_hub,
        tmp_path,
    )
    assert "{'train': 3, 'validation': 2, 'test': 3}" in output
    assert str((SEEN, UNSEEN)) in output and str(SEEN + UNSEEN) in output
