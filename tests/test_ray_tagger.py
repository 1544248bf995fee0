"""The Ray Data recipe of docs/tagging.md on a local Ray instance: `read_images(...).map_batches(OVMLCTagger)` tags like
`model.predict` (skipped without the optional `ray` extra)."""

import numpy as np
import pytest
from helpers import random_images, save_hub_layout_clip

import ovmlc
from ovmlc.inference.ray_tagger import OVMLCTagger

LABELS = ["cat", "dog", "red car", "tree"]


def test_tagger_call_matches_predict(tmp_path):
    """The callable on its own (no Ray): a batch as Ray hands it over, variable image sizes."""
    clip_dir = save_hub_layout_clip(tmp_path / "clip")
    images = random_images(3, size=40, seed=5) + [random_images(1, size=64, seed=6)[0]]
    tagger = OVMLCTagger(str(clip_dir), LABELS, top_k=2, all_scores=True)
    batch = {"image": np.array([np.asarray(image) for image in images], dtype=object), "path": np.arange(4)}
    output = tagger(batch)
    expected = ovmlc.load_model(str(clip_dir)).predict(images, LABELS, top_k=2)
    assert [list(labels) for labels in output["labels"]] == [[label for label, _ in row] for row in expected]
    np.testing.assert_allclose(np.stack(output["scores"]), [[s for _, s in row] for row in expected], atol=2e-6)
    assert output["all_scores"].shape == (4, len(LABELS)) and list(output["path"]) == [0, 1, 2, 3]


@pytest.mark.slow
def test_ray_data_recipe_on_a_local_instance(tmp_path):
    ray = pytest.importorskip("ray", reason="the Ray recipe needs the optional extra: pip install 'ovmlc[ray]'")
    clip_dir = save_hub_layout_clip(tmp_path / "clip")
    folder = tmp_path / "photos"
    folder.mkdir()
    images = random_images(6, size=40, seed=7)
    for index, image in enumerate(images):
        image.save(folder / f"{index}.png")
    # Two logical CPUs: one for the tagger actor, one for the read tasks (with one, the actor starves the reads).
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        dataset = ray.data.read_images(str(folder), include_paths=True, mode="RGB")
        rows = dataset.map_batches(
            OVMLCTagger,
            fn_constructor_kwargs={"model": str(clip_dir), "labels": LABELS, "top_k": 3},
            batch_size=4,
            compute=ray.data.ActorPoolStrategy(size=1),
        ).take_all()
    finally:
        ray.shutdown()
    by_name = {row["path"].rsplit("/", 1)[-1]: row for row in rows}
    assert sorted(by_name) == [f"{index}.png" for index in range(6)]
    expected = ovmlc.load_model(str(clip_dir)).predict(images, LABELS, top_k=3)
    for index, ranked in enumerate(expected):
        row = by_name[f"{index}.png"]
        assert list(row["labels"]) == [label for label, _ in ranked]
        np.testing.assert_allclose(row["scores"], [score for _, score in ranked], atol=2e-6)
