"""MKT stage 2 on the shared prompting mechanism gives the numbers of the code before it (golden folders saved by that
code, see tests/data/README.md), and those folders still load."""

from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from ovmlc import MKTModel

DATA = Path(__file__).resolve().parent / "data"
FOLDERS = ["mkt-stage2-legacy-context", "mkt-stage2-legacy-token-table"]
# The golden numbers were saved on another CPU: fp32 kernels of another instruction set (AVX2 vs AVX-512/AMX) sum in
# another order, measured up to 1.1e-6 apart on embeddings of size ~0.1; a wrong prompt path is off by orders more.
GOLDEN = {"rtol": 1e-5, "atol": 2e-6}


def expected_outputs(folder: Path) -> tuple[dict[str, torch.Tensor], list[str], list[str]]:
    path = folder / "expected_outputs.safetensors"
    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata()
    return load_file(str(path)), metadata["labels"].split(","), metadata["unseen"].split(",")


@pytest.mark.parametrize("name", FOLDERS)
def test_legacy_stage2_folder_loads_with_identical_numbers(name, tmp_path):
    folder = DATA / name
    expected, labels, unseen = expected_outputs(folder)
    model = MKTModel.from_pretrained(folder)
    model.set_label_cache(None)  # memory only: nothing from other tests
    assert model.config.stage == 2
    with torch.no_grad():
        embeddings = model.encode_labels(labels)
        logits = model(pixel_values=expected["pixel_values"], label_names=labels).logits
        logits_unseen = model(pixel_values=expected["pixel_values"], label_names=unseen).logits
    torch.testing.assert_close(embeddings, expected["label_embeddings"], **GOLDEN)
    torch.testing.assert_close(logits, expected["logits"], **GOLDEN)
    torch.testing.assert_close(logits_unseen, expected["logits_unseen"], **GOLDEN)

    # Saved again by the current code, the folder loads to the same numbers.
    model.save_pretrained(tmp_path)
    again = MKTModel.from_pretrained(tmp_path)
    with torch.no_grad():
        torch.testing.assert_close(again.encode_labels(labels), embeddings, rtol=0, atol=1e-6)


@pytest.mark.parametrize("name", FOLDERS)
def test_legacy_stage2_numbers_in_training_mode(name):
    """The differentiable path (training) gives the same embeddings as the cached eval path."""
    folder = DATA / name
    expected, labels, _ = expected_outputs(folder)
    model = MKTModel.from_pretrained(folder).train()
    embeddings = model.encode_labels(labels)
    assert embeddings.requires_grad
    torch.testing.assert_close(embeddings.detach(), expected["label_embeddings"], **GOLDEN)
