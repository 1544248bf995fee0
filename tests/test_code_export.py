"""The remote-code exporter (ovmlc/core/code_export.py) on a small stand-in package, and folders saved by the current
main (whole-model layout) still loading. Every registered method's export is checked by the common suite
(tests/test_methods_common.py)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import ovmlc
from ovmlc.core.code_export import HEADER_MARKER, CodeExportError, ModuleSource, export_modules

DATA = Path(__file__).resolve().parent / "data"

MODELING = '''\
"""A method's modeling file."""

from __future__ import annotations

import torch

from fakepkg.shared import helper_value
from .configuration_m import CConfig


def names():
    from fakepkg.shared.names import NAME as N, OTHER

    try:
        import peft  # noqa: F401 - only for adapters
    except ImportError:
        pass
    return N, OTHER, helper_value


class MModel:
    config_class = CConfig
'''
FILES = {
    "__init__.py": "",
    "shared/__init__.py": "from .helpers import helper_value\n",
    "shared/helpers.py": "import numpy as np\n\nhelper_value = np.int64(1)\n",
    "shared/names.py": "NAME = 'x'\nOTHER = 'y'\n",
    "m/__init__.py": "",
    "m/configuration_m.py": "from ..shared.names import NAME\n\n\nclass CConfig:\n    name = NAME\n",
    "m/modeling_m.py": MODELING,
    "inference/__init__.py": "",
    "inference/pipeline.py": "from fakepkg.shared.helpers import helper_value\n\n\nclass P:\n    value = 1\n",
}


def make_package(root: Path, **changes: str) -> Path:
    """`root/fakepkg/...` from FILES, with `changes` ({"m/modeling_m.py": text}, "/" written as "__")."""
    files = {**FILES, **{name.replace("__", "/"): text for name, text in changes.items()}}
    for name, text in files.items():
        path = root / "fakepkg" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root / "fakepkg"


def export(package: Path, names=("m.modeling_m", "m.configuration_m", "inference.pipeline")):
    roots = [ModuleSource(f"fakepkg.{name}", package.joinpath(*name.split(".")).with_suffix(".py")) for name in names]
    return export_modules(roots, {"fakepkg": package}, {"fakepkg"})


def test_closure_is_flat_with_relative_imports_only(tmp_path):
    code = export(make_package(tmp_path))
    assert set(code.files) == {"modeling_m.py", "configuration_m.py", "helpers.py", "names.py", "pipeline.py"}
    modeling = code.files["modeling_m.py"]
    assert modeling.startswith(HEADER_MARKER) and "fakepkg/m/modeling_m.py" not in modeling.splitlines()[1:]
    assert "from .helpers import helper_value\n" in modeling  # resolved through the package's __init__
    assert "from .configuration_m import CConfig\n" in modeling
    assert "    from .names import NAME as N, OTHER\n" in modeling  # inside a function, indentation kept
    assert "from .names import NAME\n" in code.files["configuration_m.py"]  # `from ..shared.names`
    assert "fakepkg" not in "".join(line for text in code.files.values() for line in text.splitlines()[1:])
    assert code.requirements == {"torch", "numpy"} and code.optional_requirements == {"peft"}
    for name, text in code.files.items():
        compile(text, name, "exec")


def test_exporting_an_exported_copy_gives_the_same_files(tmp_path):
    """Re-saving a model loaded from remote code: the flat files export to themselves."""
    code = export(make_package(tmp_path / "source"))
    flat = tmp_path / "flat"
    flat.mkdir()
    code.write(flat)
    roots = [
        ModuleSource(f"flatpkg.{name}", flat / f"{name}.py") for name in ("modeling_m", "configuration_m", "pipeline")
    ]
    again = export_modules(roots, {"flatpkg": flat}, {"flatpkg"})
    assert again.files == code.files


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"shared__names.py": "import yaml\nNAME = OTHER = 'x'\n"}, r"names\.py:1: imports 'yaml'; Hub remote code"),
        ({"shared__names.py": "import peft\nNAME = OTHER = 'x'\n"}, r"names\.py:1: imports peft outside a `try:`"),
        (
            {"m__configuration_m.py": "import fakepkg.shared.names\n\n\nclass CConfig:\n    pass\n"},
            r"configuration_m\.py:1: `import fakepkg\.shared\.names` imports a module object",
        ),
        (
            {"m__configuration_m.py": "from fakepkg.shared import names\n\n\nclass CConfig:\n    pass\n"},
            r"`from fakepkg\.shared import names` imports a module object",
        ),
        (
            {"m__configuration_m.py": '"""Usage:\n\n    from .missing import x\n"""\n\n\nclass CConfig:\n    pass\n'},
            r"configuration_m\.py:4 \(of the exported copy\): transformers reads `from \.missing import` as a file",
        ),
        (
            {
                "m__configuration_m.py": "from fakepkg.other.names import LABEL\n\n\nclass CConfig:\n    pass\n",
                "other____init__.py": "",
                "other__names.py": "LABEL = 'z'\n",
            },
            r"share the name names\.py",
        ),
    ],
    ids=["not-allowed", "peft-outside-try", "import-module", "from-package-import-module", "docstring", "basenames"],
)
def test_what_a_hub_user_could_not_run_fails_at_save_time_naming_file_and_line(tmp_path, changes, message):
    with pytest.raises(CodeExportError, match=message):
        export(make_package(tmp_path, **changes))


def test_package_data_names_fail_clearly_in_a_flat_copy(tmp_path):
    """A flat copy has no template / label-set files: asking for one by name says so (configs hold the lists)."""
    import ovmlc.core.vocabulary as vocabulary

    original = vocabulary.TEMPLATES_DIR
    vocabulary.TEMPLATES_DIR = tmp_path / "templates"  # as in a flat copy: the folder does not exist
    try:
        with pytest.raises(FileNotFoundError, match=r"prompt templates 'imagenet80' is a name of ovmlc's package data"):
            vocabulary.load_templates("imagenet80")
        assert vocabulary.load_templates(["a {}."]) == ["a {}."]
    finally:
        vocabulary.TEMPLATES_DIR = original


def test_whole_model_folder_saved_by_main_still_loads(tmp_path):
    """tests/data/qks-whole-main: a QKS folder saved by main before this layout work (template name in config.json,
    no weights_layout): the same logits, and saved again it records the new fields."""
    folder = DATA / "qks-whole-main"
    expected = load_file(str(folder / "expected_outputs.safetensors"))
    labels = ["cat", "dog", "red car", "tree"]
    model = ovmlc.load_model(folder)
    assert type(model) is ovmlc.QKSModel and model.config.weights_layout == "whole_model"
    with torch.no_grad():
        logits = model(pixel_values=expected["pixel_values"], label_names=labels).logits
    torch.testing.assert_close(logits, expected["logits"], rtol=0, atol=1e-6)
    model.save_pretrained(tmp_path)
    again = ovmlc.load_model(tmp_path)
    assert again.config.ovmlc_version == ovmlc.__version__ and isinstance(again.config.templates, list)
    with torch.no_grad():
        torch.testing.assert_close(again(pixel_values=expected["pixel_values"], label_names=labels).logits, logits)


def test_the_flat_code_of_a_method_outside_ovmlc(tmp_path):
    """A method defined in a user's module (here tests/prompt_method.py) exports the same way: its module plus the
    ovmlc modules it imports."""
    from prompt_method import TinyPromptConfig, TinyPromptModel

    from ovmlc.core.code_export import export_model_code
    from ovmlc.files import PIPELINE_MODULE

    code = export_model_code(TinyPromptModel, TinyPromptConfig, PIPELINE_MODULE)
    assert {"prompt_method.py", "prompt_mixin.py", "prompt_learner.py", "modeling_base.py", "pipeline.py"} <= set(
        code.files
    )
    assert "from .prompt_mixin import PromptLearningMixin" in code.files["prompt_method.py"]
    assert textwrap.dedent(code.files["prompt_method.py"]).count("ovmlc.") == 0
