"""The Gradio demo (ovmlc/demo.py, spaces/ovmlc-demo/): service logic, HTTP API via gradio_client, a real browser."""

import csv
import importlib.util
import os
import re
import shutil
import socket
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

os.environ.setdefault("GRADIO_TEMP_DIR", tempfile.mkdtemp(prefix="ovmlc-gradio-"))
gr = pytest.importorskip("gradio")
gradio_client = pytest.importorskip("gradio_client")

from helpers import random_images, save_hub_layout_clip  # noqa: E402

from ovmlc.core.vocabulary import LabelVocabulary  # noqa: E402
from ovmlc.space.demo import (  # noqa: E402
    DemoInputError,
    DemoLimits,
    DemoModelError,
    TaggingService,
    build_demo,
    heatmap_masks,
    load_examples,
    load_models,
    load_presets,
    processor_view_box,
)

SPACE_DIR = Path(__file__).resolve().parents[1] / "spaces" / "ovmlc-demo"
CHROMIUM = Path("/usr/bin/chromium")
LABELS = ["red", "green", "blue", "star", "circle", "heart", "striped background", "dotted background"]
# Small limits so the "too large" paths are cheap to hit.
LIMITS = DemoLimits(max_pixels=300 * 300, max_file_size=200_000, max_labels=40, max_batch_images=6)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("space")


@pytest.fixture(scope="module")
def models(workdir):
    """Two tiny CLIP models loaded the way the app loads them; the second has calibrated thresholds."""
    loaded = load_models([str(save_hub_layout_clip(workdir / "tiny-a", seed=0))])
    second = load_models([str(save_hub_layout_clip(workdir / "tiny-b", seed=1))])
    ((name_b, model_b),) = second.items()
    model_b.config.label_thresholds = {label: 0.5 for label in LABELS}
    model_b.config.global_threshold = 0.5
    return {**loaded, name_b: model_b}


@pytest.fixture(scope="module")
def image_files(workdir) -> list[Path]:
    paths = []
    for index, image in enumerate(random_images(6, size=48, seed=3)):
        paths.append(workdir / f"image-{index}.png")
        image.save(paths[-1])
    return paths


@pytest.fixture(scope="module")
def server(models):
    demo = build_demo(
        models,
        presets=load_presets(SPACE_DIR / "presets.json"),
        examples=load_examples(SPACE_DIR / "examples") if (SPACE_DIR / "examples").is_dir() else None,
        limits=LIMITS,
    )
    port = free_port()
    demo.launch(
        server_name="127.0.0.1",
        server_port=port,
        prevent_thread_lock=True,
        quiet=True,
        max_file_size=LIMITS.max_file_size,
    )
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        demo.close()


@pytest.fixture(scope="module")
def client(server):
    return gradio_client.Client(server, verbose=False)


def expected_ranking(model, image_path, labels, top_k=None, threshold=None):
    return model.predict(str(image_path), labels, top_k=top_k, threshold=threshold)


def confidences(result) -> list[tuple[str, float]]:
    return [(entry["label"], entry["confidence"]) for entry in result.get("confidences") or []]


# ---------------------------------------------------------------------------------------------------- service logic
def test_parse_vocabulary_limits_and_dedupe(models):
    service = TaggingService(models, LIMITS)
    assert service.parse_vocabulary("red, Green\nred ,  blue  sky,,") == ["red", "Green", "blue sky"]
    with pytest.raises(DemoInputError, match="No labels"):
        service.parse_vocabulary(" , \n ")
    with pytest.raises(DemoInputError, match="Too many labels: 41"):
        service.parse_vocabulary(",".join(f"label {i}" for i in range(41)))
    with pytest.raises(DemoInputError, match="too long"):
        service.parse_vocabulary("x" * 101)
    with pytest.raises(DemoInputError, match="top_k"):
        service.check_top_k(0)
    with pytest.raises(DemoInputError, match="threshold"):
        service.check_threshold(1.5)


def test_label_embeddings_come_from_the_models_small_memory_cache(models, monkeypatch):
    """No second cache: the service reads the model's own label cache, which it caps small and keeps in memory."""
    name = next(iter(models))
    model = models[name]
    service = TaggingService(models, DemoLimits(max_labels=3, label_cache_size=3))
    assert model.label_cache.max_labels == 3 and model.label_cache.directory is None
    text_forwards = []
    original = LabelVocabulary._encode_labels
    monkeypatch.setattr(
        LabelVocabulary, "_encode_labels", lambda self, *a, **kw: text_forwards.append(1) or original(self, *a, **kw)
    )
    first, cached = service.label_embeddings(name, ["red", "star"])
    assert not cached and first.shape == (2, model.config.clip_config.projection_dim) and text_forwards
    forwards = len(text_forwards)
    again, cached = service.label_embeddings(name, ["red", "star"])
    assert cached and torch.equal(again, first) and len(text_forwards) == forwards  # no text forward
    torch.testing.assert_close(first, model.encode_labels(["red", "star"]))
    service.label_embeddings(name, ["a", "b"])  # 4 labels > 3: "red", the least recently used, is dropped
    _, cached = service.label_embeddings(name, ["star"])
    assert cached
    _, cached = service.label_embeddings(name, ["red", "star"])
    assert not cached
    with pytest.raises(ValueError, match="label_cache_size"):
        TaggingService(models, DemoLimits(max_labels=10, label_cache_size=5))


def test_labels_cut_at_the_text_context_reach_the_user_as_warnings(models, image_files):
    """A browser user never sees the server log: the truncation warning comes back with the result (the UI shows it
    with `gr.Warning`), for one image and for a batch; short labels give none."""
    service = TaggingService(models, DemoLimits(max_labels=40, max_label_chars=400))
    long_label = "red " * 90 + "cat"
    result = service.tag(str(image_files[0]), [long_label, "star"], top_k=2)
    assert len(result.warnings) == 1 and "context of" in result.warnings[0] and "'red red" in result.warnings[0]
    batch = service.tag_batch([str(image_files[0])], [long_label, "star"], top_k=2)
    assert len(batch.warnings) == 1 and "context of" in batch.warnings[0]
    assert service.tag(str(image_files[0]), ["red", "star"], top_k=2).warnings == []


def test_tag_matches_model_predict_and_calibrated(models, image_files):
    service = TaggingService(models, LIMITS)
    name_a, name_b = list(models)
    result = service.tag(str(image_files[0]), ", ".join(LABELS), top_k=3, threshold=0.0, model_name=name_a)
    expected = expected_ranking(models[name_a], image_files[0], LABELS, top_k=3)
    assert [label for label, _ in result.ranked] == [label for label, _ in expected]
    np.testing.assert_allclose([s for _, s in result.ranked], [s for _, s in expected], rtol=1e-4, atol=1e-6)
    assert {"input", "labels", "model", "heatmap"} <= set(result.timings)
    image, annotations = result.heatmap
    assert [label for _, label in annotations] == [label for label, _ in result.ranked]
    for mask, _ in annotations:
        assert mask.shape == (image.height, image.width) and 0.0 <= mask.min() and mask.max() <= 1.0
        assert mask.max() > 0.9  # the peak survives upsampling
    calibrated = service.tag(str(image_files[0]), LABELS, top_k=None, model_name=name_b, calibrated=True)
    assert calibrated.ranked == expected_ranking(models[name_b], image_files[0], LABELS, threshold="calibrated")
    assert service.has_thresholds(name_b) and not service.has_thresholds(name_a)
    with pytest.raises(DemoInputError, match="Calibrated thresholds"):
        service.tag(str(image_files[0]), "red", model_name=name_a, calibrated=True)
    with pytest.raises(DemoInputError, match="unknown model"):
        service.tag(str(image_files[0]), "red", model_name="nope")


def test_open_image_limits_and_models_without_maps(models, image_files, workdir):
    service = TaggingService(models, DemoLimits(max_file_size=100))
    with pytest.raises(DemoInputError, match="file too large"):
        service.open_image(str(image_files[0]))
    with pytest.raises(DemoInputError, match="No image"):
        service.open_image({"path": None})
    name, model = next(iter(models.items()))
    model.config.dense_maps = False  # as a method that returns no label_maps
    try:
        result = TaggingService(models, LIMITS).tag(str(image_files[0]), "red, star", model_name=name)
    finally:
        model.config.dense_maps = True
    image, annotations = result.heatmap
    assert annotations == [] and "no per-label maps" in result.heatmap_note and len(result.ranked) == 2


def test_vild_models_get_boxes_instead_of_heatmaps(workdir, image_files):
    from ovmlc import ViLDModel

    torch.manual_seed(0)
    backbone = save_hub_layout_clip(workdir / "tiny-vild", seed=0)
    model = ViLDModel.from_clip(str(backbone), templates="single", head_hidden_size=16, head_num_layers=1).eval()
    result = TaggingService({"vild": model}, LIMITS).tag(str(image_files[0]), "red, star, heart", top_k=2)
    display, annotations = result.heatmap
    assert [name for _, name in annotations] == [label for label, _ in result.ranked][: LIMITS.heatmap_labels]
    detections = model.detect(str(image_files[0]), ["red", "star", "heart"], max_detections=100)
    scale = display.width / Image.open(image_files[0]).width  # 1: smaller than the display size, shown as is
    for (x0, y0, x1, y1), name in annotations:
        best = next(d for d in detections if d["label"] == name)["box"]  # the label's best region
        assert (x0, y0, x1, y1) == tuple(round(v * scale) for v in best)
        assert 0 <= x0 < x1 <= display.width and 0 <= y0 < y1 <= display.height


def test_heatmap_geometry():
    # A 2x2 map whose top-left cell is hottest lands in the top-left of the region the processor saw.
    label_maps = torch.tensor([[[4.0, 1.0], [1.0, 0.0]]])  # [K=1, h=2, w=2]
    masks = heatmap_masks(label_maps, canvas_size=(40, 20), view_box=(10, 0, 30, 20), gamma=1.0)
    assert masks.shape == (1, 20, 40)
    assert masks[0, :, :10].max() == 0 and masks[0, :, 30:].max() == 0  # outside the center crop
    assert masks[0, 2, 12] > 0.9 and masks[0, 18, 28] < 0.1

    class Processor:  # resize shortest edge to 32, center-crop 32x32 (CLIP's default pipeline)
        do_resize, do_center_crop = True, True
        size, crop_size = {"shortest_edge": 32}, {"height": 32, "width": 32}

    assert processor_view_box(Processor(), 200, 100) == (50.0, 0.0, 150.0, 100.0)
    Processor.do_center_crop = False
    assert processor_view_box(Processor(), 200, 100) == (0.0, 0.0, 200.0, 100.0)


def test_presets_examples_and_missing_models(tmp_path, monkeypatch):
    presets = load_presets(SPACE_DIR / "presets.json")
    titles = [preset.title for preset in presets]
    assert titles == [
        "NUS-WIDE 81 concepts",
        "COCO 80",
        "VOC 20",
        "Open Images 400 unseen (LESA/BiAM)",
        "Shapes-clutter world (76 labels)",
        "Synthetic shapes-64 world (38 labels)",
    ]
    assert [len(preset.labels) for preset in presets] == [81, 80, 20, 400, 76, 38]
    presets_file = tmp_path / "presets.json"
    presets_file.write_text(
        '{"presets": [{"title": "unseen", "labelset": "synthetic", "subset": "unseen"},'
        ' {"title": "absent", "labelset": "no-such-labelset"}]}'
    )
    (unseen,) = load_presets(presets_file)
    assert unseen.labels and "circle" not in unseen.labels and "square" in unseen.labels

    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    assert load_examples(tmp_path) == [(str(tmp_path / "a.png"), "")]

    with pytest.raises(DemoModelError, match="no-such-model-folder"):
        load_models([str(tmp_path / "no-such-model-folder")])
    import ovmlc.core.backbones

    monkeypatch.setitem(ovmlc.core.backbones.BACKBONE_ALIASES, "synthetic", tmp_path / "missing-clip-synthetic")
    with pytest.raises(DemoModelError, match="shipped offline model is missing.*--model"):
        load_models(["synthetic"])


def test_app_cli_reports_missing_model(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("ovmlc_demo_app", SPACE_DIR / "app.py")
    app = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(app)
    assert app.main(["--model", str(tmp_path / "absent"), "--port", "0"]) == 2
    assert "cannot load model" in capsys.readouterr().err


def test_space_readme_front_matter():
    from huggingface_hub import SpaceCard

    data = SpaceCard.load(SPACE_DIR / "README.md").data
    assert data.sdk == "gradio" and data.sdk_version == gr.__version__ and data.app_file == "app.py"
    for key in ("title", "emoji", "colorFrom", "colorTo", "license", "short_description"):
        assert data.get(key), key
    assert len(data.short_description) <= 60


# ---------------------------------------------------------------------------------------------------- HTTP API
def test_api_signature(client):
    info = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    assert set(info) == {"/predict", "/predict_batch"}  # the UI's own events are undocumented
    predict = info["/predict"]
    assert [p["parameter_name"] for p in predict["parameters"]] == ["image", "vocabulary", "top_k", "threshold"]
    assert [p["parameter_has_default"] for p in predict["parameters"]][2:] == [True, True]
    assert predict["returns"][0]["component"] == "Label"
    batch = info["/predict_batch"]
    assert [p["parameter_name"] for p in batch["parameters"]] == ["images", "vocabulary", "top_k", "threshold"]
    assert [r["component"] for r in batch["returns"]] == ["Dataframe", "File"]


def test_api_predict(client, models, image_files):
    model = next(iter(models.values()))  # /predict uses the first (default) model
    handle = gradio_client.handle_file(str(image_files[1]))
    scores, info = client.predict(handle, "\n".join(LABELS), 4, 0.0, api_name="/predict")
    expected = expected_ranking(model, image_files[1], LABELS, top_k=4)
    assert [label for label, _ in confidences(scores)] == [label for label, _ in expected]
    np.testing.assert_allclose([s for _, s in confidences(scores)], [s for _, s in expected], rtol=1e-4, atol=1e-6)
    assert info["num_labels"] == len(LABELS) and info["latency_ms"] > 0
    # Defaults: top_k=10 and threshold=0; a threshold above every score gives no labels, not an error.
    scores, _ = client.predict(handle, "red, star", api_name="/predict")
    assert len(confidences(scores)) == 2
    scores, _ = client.predict(handle, "red, star", 10, 1.0, api_name="/predict")
    assert confidences(scores) == []


def test_api_predict_batch(client, models, image_files):
    model = next(iter(models.values()))
    handles = [gradio_client.handle_file(str(path)) for path in image_files[:3]]
    table, csv_file = client.predict(handles, "red, star, circle", 2, 0.0, api_name="/predict_batch")
    assert table["headers"] == ["image", "tags", "red", "star", "circle"]
    assert [row[0] for row in table["data"]] == [path.name for path in image_files[:3]]
    expected = model.predict_scores([str(p) for p in image_files[:3]], ["red", "star", "circle"])
    np.testing.assert_allclose([row[2:] for row in table["data"]], expected, atol=1e-4)
    with open(csv_file, newline="") as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == table["headers"] and len(rows) == 4 and rows[1][0] == image_files[0].name


@pytest.mark.parametrize(
    "case, message",
    [
        ("no labels", "No labels"),
        ("too many labels", "Too many labels"),
        ("not an image", "not an image"),
        ("too many pixels", "image too large"),
        ("file too large", "file too large|exceeds|size"),
        ("no image", "No image"),
    ],
)
def test_api_bad_inputs(client, image_files, workdir, case, message):
    vocabulary, upload = "red, star", str(image_files[0])
    if case == "no labels":
        vocabulary = " ,, "
    elif case == "too many labels":
        vocabulary = ", ".join(f"thing {i}" for i in range(LIMITS.max_labels + 1))
    elif case == "not an image":
        upload = workdir / "notes.png"
        upload.write_text("this is text, not a PNG")
    elif case == "too many pixels":
        upload = workdir / "big.png"
        Image.new("RGB", (400, 300), "white").save(upload)  # 120k pixels > 90k, tiny file
    elif case == "file too large":
        upload = workdir / "heavy.png"
        Image.fromarray(np.random.default_rng(0).integers(0, 255, (290, 290, 3), dtype=np.uint8)).save(upload)
        assert upload.stat().st_size > LIMITS.max_file_size
    image = None if case == "no image" else gradio_client.handle_file(str(upload))
    with pytest.raises(Exception, match=message) as caught:
        client.predict(image, vocabulary, 5, 0.0, api_name="/predict")
    assert "Traceback" not in str(caught.value) and 'File "' not in str(caught.value)


def test_api_concurrent_requests(client, models, image_files):
    """20 requests from 8 threads, each with its own image and vocabulary, all answered with their own result."""
    model = next(iter(models.values()))
    jobs = [(image_files[i % len(image_files)], LABELS[i % 4 : i % 4 + 3 + i % 3]) for i in range(20)]

    def call(job):
        path, labels = job
        scores, _ = client.predict(
            gradio_client.handle_file(str(path)), ", ".join(labels), 10, 0.0, api_name="/predict"
        )
        return confidences(scores)

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(call, jobs, timeout=120))
    for (path, labels), result in zip(jobs, results):
        expected = expected_ranking(model, path, labels)
        assert [label for label, _ in result] == [label for label, _ in expected]
        np.testing.assert_allclose([s for _, s in result], [s for _, s in expected], rtol=1e-4, atol=1e-6)


# ---------------------------------------------------------------------------------------------------- real browser
@pytest.mark.slow
def test_browser_tags_example_image(server, tmp_path):
    if not CHROMIUM.is_file():
        pytest.skip("Debian's chromium is not installed (/usr/bin/chromium): apt-get install -y chromium")
    sync_api = pytest.importorskip("playwright.sync_api")
    example = sorted((SPACE_DIR / "examples").glob("example-*[0-9].png"))
    if example:
        upload = example[0]
    else:  # the rendered world examples are not there: any small image will do
        upload = tmp_path / "example.png"
        random_images(1, size=96)[0].save(upload)
    screenshot = tmp_path / "demo.png"
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM),
            headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"],
        )
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1200})
            page.goto(server, wait_until="networkidle")
            page.locator("#image input[type=file]").set_input_files(str(upload))
            page.locator("#vocabulary textarea").fill("red, green, star, plus, grid background")
            page.locator("#tag-button").click()
            sync_api.expect(page.locator("#scores")).to_contain_text("grid background", timeout=30_000)
            sync_api.expect(page.locator("#heatmap img").first).to_be_visible(timeout=30_000)
            legend = re.compile("red|green|star|plus|grid background")
            sync_api.expect(page.locator("#heatmap")).to_contain_text(legend)  # the legend of the heatmaps
            sync_api.expect(page.locator("#latency")).to_contain_text("ms")
            page.screenshot(path=str(screenshot), full_page=True)
        finally:
            browser.close()
    assert screenshot.stat().st_size > 10_000
    if os.environ.get("OVMLC_KEEP_SCREENSHOTS"):
        shutil.copy(screenshot, Path(os.environ["OVMLC_KEEP_SCREENSHOTS"]) / "space-demo.png")
