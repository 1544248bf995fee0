"""The trainer with the prompt-learning family and the linear probe: labels passed at construction (class-specific
prompts, probe rows), `dataset.partial_label` masking, the constant warm-up, and short end-to-end runs."""

import json

import numpy as np
import pytest
from test_train_fixtures import SEEN, UNSEEN, write_recipe

import ovmlc
from ovmlc.data import label_matrix, load_canonical
from ovmlc.data.splits import mask_partial_label_rows, partial_keep_mask
from ovmlc.files import TRAINER_STATE_FILE
from ovmlc.training.recipe import RecipeError, load_recipe
from ovmlc.training.trainer import Trainer, build_schedule_lambda, train

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def recipe_file(tmp_path, train_world, name="recipe", **sections):
    base = {
        "method": "dualcoop",
        "method_config": {"prompt_learning": {"n_ctx": 4}, "loss_weight": 0.1},
        "freeze": [],
        "optimizer": {"name": "sgd", "lr": 0.01, "momentum": 0.9, "weight_decay": 5.0e-4},
        "schedule": {"name": "cosine", "warmup_steps": 2, "warmup_lr": 1.0e-5},
        "training": {"epochs": 2},
    }
    for key, value in sections.items():  # method_config replaces the default; other sections are merged
        merge = isinstance(value, dict) and isinstance(base.get(key), dict) and key != "method_config"
        base[key] = {**base[key], **value} if merge else value
    return write_recipe(
        tmp_path / f"{name}.yaml", train_world["dataset"], train_world["backbone"], tmp_path / name, **base
    )


# ---------------------------------------------------------------------- partial labels
def test_partial_label_rows_equal_the_prepared_mask():
    rows = np.where(np.random.default_rng(0).random((50, 6)) < 0.3, 1, -1).astype(np.int8)
    ids = [f"img-{i}" for i in range(50)]
    label_ids = [4, 0, 5, 2, 1, 3]  # column order differs from the dataset's label order
    masked = mask_partial_label_rows(rows, ids, label_ids, 0.4, seed=3)
    order = np.argsort(label_ids)
    for row, image_id in enumerate(ids):
        keep = partial_keep_mask(image_id, 6, 0.4, seed=3)  # what `ovmlc data prepare --partial-ratio` draws
        np.testing.assert_array_equal(masked[row, order], np.where(keep, rows[row, order], 0))
    assert (masked[rows == 0] == 0).all() and not np.shares_memory(masked, rows)
    with pytest.raises(ValueError, match="partial-ratio"):
        mask_partial_label_rows(rows, ids, label_ids, 1.0, seed=0)


def test_recipe_partial_label_masks_train_and_validation_only(tmp_path, train_world):
    recipe = load_recipe(
        recipe_file(tmp_path, train_world), ["dataset.partial_label=0.5", "dataset.partial_label_seed=2"]
    )
    trainer = Trainer(recipe)
    trainer._setup_accelerator()
    trainer._load_data()
    dataset = load_canonical(train_world["dataset"])
    for split in ("train", "validation"):
        full = label_matrix(dataset[split], SEEN)
        masked = trainer.data.label_rows[split] if split == "train" else trainer.data.label_rows[split][:, : len(SEEN)]
        kept = masked != 0
        assert 0.3 < kept.mean() < 0.7
        np.testing.assert_array_equal(masked[kept], full[kept])  # kept entries keep their label
        expected = mask_partial_label_rows(full, dataset[split]["image_id"], [0, 1, 2, 3], 0.5, seed=2)
        np.testing.assert_array_equal(masked, expected)
    assert (trainer.data.label_rows["test"] != 0).all()
    with pytest.raises(RecipeError, match="partial_label"):
        load_recipe(recipe_file(tmp_path, train_world), ["dataset.partial_label=1.5"])


def test_partial_label_refuses_an_already_masked_dataset(tmp_path, train_world):
    from ovmlc.data.storage import save_canonical

    masked_dir = tmp_path / "masked"
    save_canonical(
        load_canonical(train_world["dataset"]),
        masked_dir,
        source="test-colours",
        converter_version="1",
        seen_labels=SEEN,
        unseen_labels=UNSEEN,
        annotation="full",
        description="already masked",
        extra_metadata={"partial_label_proportion": 0.3},
    )
    recipe = load_recipe(
        recipe_file(tmp_path, train_world), [f"dataset.path={masked_dir}", "dataset.partial_label=0.5"]
    )
    trainer = Trainer(recipe)
    trainer._setup_accelerator()
    with pytest.raises(RecipeError, match="already keeps only 0.3"):
        trainer._load_data()


# ---------------------------------------------------------------------- schedule
def test_constant_warmup_at_an_absolute_learning_rate():
    multiplier = build_schedule_lambda("cosine", 4, 20, 0.0, 1, 0.1, warmup_multiplier=1e-5 / 2e-3)
    assert [multiplier(step) for step in range(4)] == [0.005] * 4
    assert multiplier(4) == pytest.approx(1.0) and multiplier(20) == pytest.approx(0.0, abs=1e-9)
    with pytest.raises(RecipeError, match="warmup_lr"):
        load_recipe_from_sections({"schedule": {"name": "cosine", "warmup_lr": 1.0e-5}})


def load_recipe_from_sections(sections):
    from ovmlc.training.recipe import recipe_from_dict

    base = {"method": "coop", "backbone": "synthetic", "dataset": {"path": "x"}, "output_dir": "o", "protocol": "p"}
    return recipe_from_dict({**base, **sections})


# ---------------------------------------------------------------------- end to end
@pytest.mark.parametrize(
    "method, method_config",
    [
        ("dualcoop", {"prompt_learning": {"n_ctx": 4, "class_specific": True}, "num_train_cls": 3}),
        ("dualcooppp", {"prompt_learning": {"n_ctx": 4}}),
        ("coop", {"prompt_learning": {"ctx_init": "a photo of a"}, "logit_bias": -2.0}),
        ("linear_probe", {"templates": "single"}),
    ],
)
def test_short_runs_train_and_save_a_loadable_model(tmp_path, train_world, method, method_config):
    output = train(
        recipe_file(
            tmp_path,
            train_world,
            method=method,
            method_config=method_config,
            training={"epochs": 2, "feature_cache": "auto"},
        ),
        ["dataset.partial_label=0.7"],
    )
    state = json.loads((output / TRAINER_STATE_FILE).read_text())
    assert state["feature_cache"] and state["global_step"] == 12
    assert np.isfinite(state["loss"]["per_epoch"]).all()
    model = ovmlc.load_model(output)
    config = json.loads((output / "config.json").read_text())
    if method == "dualcoop":  # class-specific contexts sized from the training labels passed at construction
        assert model.prompt_learner.ctx_class.shape[0] == len(SEEN)
        assert config["prompt_learning"]["class_names"] == SEEN
    if method == "linear_probe":
        assert config["probe_labels"] == SEEN and model.probe.weight.shape[0] == len(SEEN)
    scores = model.predict_scores([np.zeros((32, 32, 3), dtype=np.uint8)], SEEN + UNSEEN)
    assert scores.shape == (1, len(SEEN + UNSEEN)) and np.isfinite(scores).all()
    metrics = json.loads((output / "eval" / "metrics.json").read_text())
    assert {"zsl", "gzsl", "seen"} <= set(metrics["views"])
