"""A light `import ovmlc` and a fast, quiet CLI: what gets imported (not wall time), `--version`, `python -m ovmlc`,
the transformers registration in both import orders (fresh processes), and transformers' progress bars only with -v.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
from helpers import random_images, save_hub_layout_clip

import ovmlc
from ovmlc.cli import COMMANDS, build_parser, main

HEAVY = ("torch", "transformers", "numpy", "datasets", "huggingface_hub", "accelerate", "peft", "PIL", "yaml")


def run_python(code: str, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [sys.executable, *args, "-c", textwrap.dedent(code)] if code else [sys.executable, *args],
        capture_output=True,
        text=True,
        env=env or os.environ.copy(),
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def test_import_ovmlc_and_parsing_help_import_nothing_heavy():
    commands = [name.rpartition(".")[2].replace("_", "-") for name in COMMANDS]
    result = run_python(
        f"""
        import sys
        import ovmlc
        from ovmlc.cli import build_parser

        heavy = {HEAVY!r}
        assert not [name for name in heavy if name in sys.modules], [name for name in heavy if name in sys.modules]
        for argv in [["--help"], *([command, "--help"] for command in {commands!r})]:
            try:
                build_parser(argv).parse_args(argv)
            except SystemExit as exit:
                assert exit.code == 0, argv
            loaded = [name for name in heavy if name in sys.modules]
            assert not loaded, (argv, loaded)
        print("ok", ovmlc.__version__)
        """
    )
    assert result.stdout.splitlines()[-1].split() == ["ok", ovmlc.__version__]


def test_version_and_python_dash_m():
    assert run_python("", "-m", "ovmlc", "--version").stdout.strip() == f"ovmlc {ovmlc.__version__}"
    help_text = run_python("", "-m", "ovmlc", "--help").stdout
    assert "quickstart" in help_text and "--verbose" in help_text
    with pytest.raises(SystemExit) as exit:
        main(["train", "--help"])
    assert exit.value.code == 0


def test_public_names_load_lazily_and_methods_derive_from_the_registry():
    assert {"QKSModel", "load_model", "METHODS", "LabelVocabulary"} <= set(dir(ovmlc))
    assert list(ovmlc.METHODS) == ovmlc.list_methods()
    assert ovmlc.METHODS["qks"] == (ovmlc.QKSConfig, ovmlc.QKSModel)
    with pytest.raises(AttributeError, match="no attribute 'NoSuchName'"):
        ovmlc.NoSuchName  # noqa: B018


def test_old_module_paths_still_import():
    import ovmlc.clip_utils
    from ovmlc.modeling_base import PIPELINE_TASK, MultiLabelOutput, OVMLCPreTrainedModel  # noqa: F401
    from ovmlc.vocabulary import LabelEmbeddingCache, LabelVocabulary, write_embeddings_file  # noqa: F401

    import ovmlc.core.backbones
    from ovmlc.evaluation.metrics import evaluate_protocol

    assert ovmlc.clip_utils is ovmlc.core.backbones and ovmlc.core.backbones.__spec__.name == "ovmlc.core.backbones"
    assert evaluate_protocol.__module__ == "ovmlc.evaluation.metrics"
    assert PIPELINE_TASK == ovmlc.PIPELINE_TASK


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory):
    clip_dir = save_hub_layout_clip(tmp_path_factory.mktemp("clip") / "tiny-clip")
    folder = tmp_path_factory.mktemp("saved") / "qks"
    ovmlc.QKSModel.from_clip(str(clip_dir), num_queries=2, num_query_layers=1).save_pretrained(folder)
    return folder


def test_auto_classes_and_pipeline_after_import_ovmlc_first(saved_model):
    """`import ovmlc` first (transformers not loaded): the import hook registers when transformers loads. peft imports
    transformers while its own `__init__` runs: registration waits until peft is complete (it imports the CLIP-FT
    method, which needs peft)."""
    run_python(
        f"""
        import sys
        import ovmlc
        assert "transformers" not in sys.modules and not ovmlc._registration.status()["methods"]
        import peft
        assert "transformers.models.auto.modeling_auto" in sys.modules and ovmlc._registration.status()["methods"]
        from transformers import AutoConfig
        config = AutoConfig.from_pretrained({str(saved_model)!r})
        assert type(config).__module__ == "ovmlc.methods.qks.configuration_qks", type(config).__module__
        from transformers import AutoModel, pipeline
        model = AutoModel.from_pretrained({str(saved_model)!r})
        assert type(model) is ovmlc.QKSModel, type(model)
        pipe = pipeline(ovmlc.PIPELINE_TASK, model=model)
        assert type(pipe).__name__ == "OpenVocabularyMultiLabelPipeline"
        assert ovmlc._registration.status() == {{"methods": True, "pipeline": True, "hook": False}}
        """
    )


def test_auto_classes_after_import_transformers_first(saved_model):
    run_python(
        f"""
        from transformers import AutoModel
        import ovmlc
        assert ovmlc._registration.status()["methods"]  # registered at once: the auto module was loaded
        model = AutoModel.from_pretrained({str(saved_model)!r})
        assert type(model) is ovmlc.QKSModel, type(model)
        """
    )


@pytest.mark.filterwarnings("ignore:Cannot enable progress bars")  # the tests' HF_HUB_DISABLE_PROGRESS_BARS
def test_transformers_progress_bars_only_with_verbose(tmp_path, capfd):
    from transformers.utils import logging as transformers_logging

    was_enabled = transformers_logging.is_progress_bar_enabled()
    clip_dir = save_hub_layout_clip(tmp_path / "clip")
    image = tmp_path / "image.png"
    random_images(1)[0].save(image)
    command = ["predict", str(image), "--model", str(clip_dir), "--labels", "cat, dog", "--json"]
    try:
        transformers_logging.enable_progress_bar()  # as without HF_HUB_DISABLE_PROGRESS_BARS (tests set it)
        capfd.readouterr()
        assert main(command) == 0
        quiet = capfd.readouterr()
        assert "Loading weights" not in quiet.err and '"label": "cat"' in quiet.out.replace("dog", "cat")
        assert main(["-v", *command]) == 0
        assert "Loading weights" in capfd.readouterr().err
        after = [*command[:1], "-v", *command[1:]]  # -v after the command works too
        assert build_parser(after).parse_args(after).verbose and not build_parser(command).parse_args(command).verbose
    finally:
        (transformers_logging.enable_progress_bar if was_enabled else transformers_logging.disable_progress_bar)()
