"""Every recipe in hub_configs/ loads and names things that exist; failures name the recipe file.

Two kinds of recipes live there:
* training recipes (`ovmlc train --config`): a `method` key; they must load with the trainer's recipe loader, name a
  method of `ovmlc.METHODS`, a dataset converter (`dataset.source`, `ovmlc data prepare <source>`) and a protocol
  preset, and, when they publish a model, a `hub.repo_id`: every recipe on real (non-synthetic) data does, except
  intermediate stages that another recipe starts from (`init_from`, e.g. MKT stage 1);
* pretraining recipes (`ovmlc pretrain-vlp --config`): no `method` key; they must load as `VLPPretrainConfig`.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

import ovmlc
from ovmlc.data.converters import CONVERTERS
from ovmlc.evaluation.metrics import list_protocols, load_protocol

HUB_CONFIGS = Path(__file__).resolve().parents[1] / "hub_configs"
RECIPE_FILES = sorted(HUB_CONFIGS.glob("*.yaml"))
HUB_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def read_yaml(path: Path) -> dict:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert isinstance(data, dict), f"{path.name}: the top level must be a mapping"
    return data


def is_training_recipe(path: Path) -> bool:
    return "method" in read_yaml(path)


TRAINING_RECIPES = [path for path in RECIPE_FILES if is_training_recipe(path)]
PRETRAINING_RECIPES = [path for path in RECIPE_FILES if not is_training_recipe(path)]


def intermediate_outputs() -> set[str]:
    """Output folders that another recipe starts from (`init_from`), e.g. MKT stage 1: not published models."""
    targets = set()
    for path in TRAINING_RECIPES:
        init_from = read_yaml(path).get("init_from")
        if init_from:
            targets.add(str(init_from).rstrip("/"))
    return targets


def is_published(recipe: dict) -> bool:
    """A recipe publishes a model unless it trains on synthetic data or builds another recipe's starting point."""
    return not is_synthetic(recipe) and str(recipe.get("output_dir", "")).rstrip("/") not in intermediate_outputs()


# The offline generated worlds (`ovmlc data prepare <source>`): their recipes train demo models, not published ones.
SYNTHETIC_SOURCES = {"synthetic", "synthetic-single", "shapes-clutter"}


def is_synthetic(recipe: dict) -> bool:
    dataset = recipe.get("dataset") or {}
    return dataset.get("source") in SYNTHETIC_SOURCES or "synthetic" in str(dataset.get("path", "")).lower()


def load_training_recipe(path: Path):
    """The trainer's own loader (schema, types, semantics), as `ovmlc train --config` uses it."""
    from ovmlc.training.recipe import load_recipe

    return load_recipe(path)


def test_hub_configs_are_enumerated():
    assert RECIPE_FILES, f"no recipes in {HUB_CONFIGS}"
    assert len(TRAINING_RECIPES) + len(PRETRAINING_RECIPES) == len(RECIPE_FILES)
    names = [path.stem for path in RECIPE_FILES]
    assert len(set(names)) == len(names)


def check_training_recipe(path: Path) -> None:
    """Assert a training recipe is publishable; every message starts with the recipe file."""
    recipe = load_training_recipe(path)
    where = f"{path.parent.name}/{path.name}"
    assert recipe.method in ovmlc.METHODS, (
        f"{where}: method {recipe.method!r} is not one of ovmlc.METHODS ({', '.join(ovmlc.METHODS)})"
    )
    from ovmlc.training.recipe import validate_method_config

    validate_method_config(recipe, ovmlc.METHODS[recipe.method][0])  # raises RecipeError naming the key and file
    if "siglip" in str(recipe.backbone).lower():  # the Hub's SigLIP checkpoints (offline: `siglip-synthetic`)
        families = ovmlc.METHODS[recipe.method][1].supported_backbone_families
        assert "siglip" in families, f"{where}: method {recipe.method!r} does not take a SigLIP backbone ({families})"

    assert recipe.dataset.source, f"{where}: dataset.source must name the converter that builds the dataset"
    assert recipe.dataset.source in CONVERTERS, (
        f"{where}: dataset.source {recipe.dataset.source!r} is not a converter of `ovmlc data prepare` "
        f"({', '.join(sorted(CONVERTERS))})"
    )
    assert recipe.protocol, (
        f"{where}: set `protocol` (a preset of ovmlc/evaluation/protocols) so its numbers are comparable"
    )
    assert recipe.protocol in list_protocols(), (
        f"{where}: protocol {recipe.protocol!r} is not a preset ({', '.join(list_protocols())})"
    )
    load_protocol(recipe.protocol)

    if is_published(read_yaml(path)):
        assert recipe.hub.repo_id, (
            f"{where}: a published-model recipe (real data, not another recipe's init_from) must set hub.repo_id"
        )
    if recipe.hub.repo_id:
        assert HUB_REPO_ID.match(recipe.hub.repo_id), f"{where}: hub.repo_id {recipe.hub.repo_id!r} is not org/name"


@pytest.mark.parametrize("path", TRAINING_RECIPES, ids=[path.name for path in TRAINING_RECIPES])
def test_training_recipe_is_valid(path):
    check_training_recipe(path)


@pytest.mark.parametrize(
    "edit, message",
    [
        ({"method": "no-such-method"}, r"bad\.yaml: method 'no-such-method' is not one of ovmlc\.METHODS"),
        ({"dataset": {"path": "data/x", "source": "nope"}}, r"bad\.yaml: dataset\.source 'nope' is not a converter"),
        ({"protocol": "nope"}, r"bad\.yaml: protocol 'nope' is not a preset"),
        ({"hub": {}}, r"bad\.yaml: a published-model recipe .* must set hub\.repo_id"),
        (
            {"method": "mkt", "backbone": "google/siglip2-base-patch16-224"},
            r"bad\.yaml: method 'mkt' does not take a SigLIP backbone",
        ),
    ],
    ids=["method", "converter", "protocol", "repo-id", "siglip"],
)
def test_a_wrong_recipe_is_named(tmp_path, edit, message):
    recipe = {
        "method": "clip_zeroshot",
        "backbone": "openai/clip-vit-base-patch16",
        "dataset": {"path": "data/nus-wide", "source": "nus-wide"},
        "output_dir": "runs/x",
        "protocol": "nus-wide-qks",
        "hub": {"repo_id": "ovmlc/x"},
    }
    recipe.update(edit)
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(recipe), encoding="utf-8")
    with pytest.raises(AssertionError, match=message):
        check_training_recipe(path)


def test_hub_repo_ids_are_unique():
    owners: dict[str, str] = {}
    for path in TRAINING_RECIPES:
        repo_id = (read_yaml(path).get("hub") or {}).get("repo_id")
        if repo_id:
            assert repo_id not in owners, f"hub_configs/{path.name} and {owners[repo_id]} both push to {repo_id}"
            owners[repo_id] = f"hub_configs/{path.name}"


@pytest.mark.parametrize("path", PRETRAINING_RECIPES, ids=[path.name for path in PRETRAINING_RECIPES])
def test_pretraining_recipe_is_valid(path):
    from ovmlc.training.pretrain_vlp import VLPPretrainConfig

    config = VLPPretrainConfig.from_yaml(path)  # validates; errors name the file and the key
    assert config.output_dir, f"hub_configs/{path.name}: output_dir is empty"
