"""Model cards (README.md) generated from what a model folder actually holds.

`OVMLCModelCardData.from_folder(folder)` reads `config.json` (method, backbone, label split, calibrated thresholds),
`model.safetensors` (parameter count, from the header only), and, when the folder was written by `ovmlc train`,
`recipe.yaml`, `ovmlc_trainer_state.json` and the evaluation report (`metrics.json`, `results.md`, `per_label_ap.csv`,
plots). Nothing is invented: a fact that no file records is left out or said to be missing, so a model built with
`from_clip(...)` and saved without training gets a card that claims no results.

The card is rendered from the Jinja template `model_card_template.md` with `huggingface_hub.ModelCard.from_template`.
Its YAML metadata uses `library_name: transformers` (the Hub then shows the `AutoModel.from_pretrained(...,
trust_remote_code=True)` snippet, since `config.json` has an `auto_map`, and counts downloads), `pipeline_tag:
zero-shot-image-classification` (the closest Hub task) and a `model-index` with the evaluation report's mAP and
F1@K per view (ZSL / GZSL / seen), in percent, with the protocol preset in each metric's `metric_args`.
The method description, implementation notes and paper citations come from the method's `MethodCard` in the
method registry (`ovmlc/methods/<m>/__init__.py`), and what the card says about label independence from the
method's `scores_depend_on_label_set` trait.
"""

from __future__ import annotations

import json
import os
import re
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from huggingface_hub import EvalResult, ModelCard, ModelCardData

from ..core.registry import MethodCard, MethodSpec, Paper, UnknownMethodError, get_method
from ..evaluation.engine import VIEW_TITLES
from ..files import (
    ADAPTER_CONFIG_FILE,
    BACKBONE_ADAPTER_DIR,
    CARD_FILE,
    CONFIG_FILE,
    EVAL_DIR,
    LABEL_EMBEDDINGS_FILE,
    LEGACY_TRAINER_STATE_FILE,
    METRICS_FILE_NAME,
    PER_LABEL_FILE_NAME,
    PIPELINE_TASK,
    PLOT_FILE_NAMES,
    RECIPE_FILE,
    RESULTS_FILE_NAME,
    THRESHOLDS_FILE_NAME,
    TRAINER_STATE_FILE,
    WEIGHTS_FILE,
    WEIGHTS_INDEX_FILE,
)
from ..resources import MODEL_CARD_TEMPLATE

MODEL_CARD_FILE = CARD_FILE
THRESHOLDS_FILE = THRESHOLDS_FILE_NAME
# Where the evaluation report of a run lives: `eval/` (what `ovmlc train` writes), else the folder itself.
REPORT_DIRS = (EVAL_DIR, "")
LIBRARY_NAME = "transformers"
HUB_PIPELINE_TAG = "zero-shot-image-classification"
TASK_NAME = "Open-vocabulary multi-label image classification"
BASE_TAGS = ("ovmlc", "open-vocabulary", "multi-label-classification")
EXAMPLE_LABELS_FALLBACK = ("cat", "dog", "car")
PLOT_TITLES = {
    "per_label_ap": "Per-label average precision",
    "pr_curves": "Precision-recall curves",
    "ap_distribution": "Distribution of per-label AP",
    "threshold_f1": "F1 against the score threshold",
    "score_histograms": "Scores of seen vs unseen labels",
}
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_LOCAL_PATH_LINE = re.compile(r"^- [\w ]+: `(/|~|[A-Za-z]:[\\/])")


class ModelCardError(ValueError):
    """A model folder cannot be described (missing or unreadable config.json); the message names the file."""


def looks_like_hub_id(value: str | None) -> bool:
    """True for "org/name" strings that are not an existing local path."""
    return bool(value) and bool(_HUB_ID.match(str(value))) and not Path(str(value)).exists()


def method_spec(model_type: str) -> MethodSpec | None:
    """The registered method of a config's `model_type` (None for a method ovmlc does not know)."""
    from .. import methods  # noqa: F401 - registers the built-in methods

    try:
        return get_method(model_type)
    except UnknownMethodError:
        return None


def method_for_model_type(model_type: str) -> str:
    """The method name (`ovmlc.METHODS` key) of a config's `model_type` (e.g. "ovmlc_qks" -> "qks")."""
    spec = method_spec(model_type)
    return spec.name if spec is not None else model_type.removeprefix("ovmlc_")


def count_safetensors_parameters(folder: Path) -> int | None:
    """Number of weights in `model.safetensors` (or its shards), read from the headers without loading tensors."""
    index_file = folder / WEIGHTS_INDEX_FILE
    if index_file.is_file():
        shards = sorted(set(json.loads(index_file.read_text(encoding="utf-8")).get("weight_map", {}).values()))
        files = [folder / shard for shard in shards]
    else:
        files = [folder / WEIGHTS_FILE]
    total = 0
    for path in files:
        if not path.is_file():
            return None
        with path.open("rb") as handle:
            (header_size,) = struct.unpack("<Q", handle.read(8))
            header = json.loads(handle.read(header_size))
        for name, tensor in header.items():
            if name == "__metadata__":
                continue
            count = 1
            for size in tensor["shape"]:
                count *= size
            total += count
    return total


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise ModelCardError(f"{path}: cannot read JSON ({error})") from error


def _read_yaml(path: Path) -> Any:
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as error:
        raise ModelCardError(f"{path}: cannot read YAML ({error})") from error


def _get(mapping: Any, *keys: str, default: Any = None) -> Any:
    """`mapping[k1][k2]...` or `default` when any level is missing or not a mapping."""
    for key in keys:
        if not isinstance(mapping, dict) or key not in mapping:
            return default
        mapping = mapping[key]
    return mapping


def _format_value(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, (list, dict)):
        return f"`{json.dumps(value)}`"
    return f"`{value}`" if isinstance(value, str) else str(value)


def _format_duration(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    return f"{hours}h {minutes:02d}m {seconds:02d}s" if hours else f"{minutes}m {seconds:02d}s"


def _preview(names: list[str], limit: int = 30) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f", … ({len(names) - limit} more)" if len(names) > limit else "")


def _percent(value: Any) -> float | None:
    return None if value is None else round(100.0 * float(value), 2)


@dataclass
class OVMLCModelCardData:
    """The facts a model card states, each read from a file of the model folder (missing facts stay `None`).

    `to_model_card_data()` gives the Hub YAML metadata (`huggingface_hub.ModelCardData`, with the `model-index`
    built by `eval_results()`); `template_kwargs()` gives the variables of `model_card_template.md`.
    """

    model_name: str
    repo_id: str
    revision: str
    config: dict[str, Any]
    method: str
    license: str | None = None
    extra_tags: list[str] = field(default_factory=list)
    num_parameters: int | None = None
    code_files: list[str] = field(default_factory=list)
    has_label_embeddings: bool = False
    recipe: dict[str, Any] | None = None
    recipe_text: str | None = None
    trainer_state: dict[str, Any] | None = None
    trainer_state_file: str = TRAINER_STATE_FILE
    metrics: dict[str, Any] | None = None
    results_markdown: str | None = None
    evaluation_files: list[str] = field(default_factory=list)
    plot_files: list[str] = field(default_factory=list)
    backbone_adapter: dict[str, Any] | None = None  # backbone_adapter/adapter_config.json (CLIP-FT LoRA)

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_folder(
        cls,
        folder: str | os.PathLike,
        repo_id: str | None = None,
        revision: str | None = None,
        license: str | None = None,  # noqa: A002 - the Hub metadata key
        tags: list[str] | None = None,
    ) -> OVMLCModelCardData:
        """Read a folder written by `save_pretrained` or `ovmlc train`. `repo_id` (default: the recipe's
        `hub.repo_id`, else `your-org/<folder name>`) and `revision` (default `main`) go into the usage snippets;
        `license` overrides the recipe's `hub.license`, `tags` add to its `hub.tags`."""
        folder = Path(folder)
        config_file = folder / CONFIG_FILE
        if not config_file.is_file():
            raise ModelCardError(f"{config_file} is missing: not a model folder written by save_pretrained/ovmlc train")
        config = _read_json(config_file)
        model_type = config.get("model_type") if isinstance(config, dict) else None
        if not str(model_type or "").startswith("ovmlc"):
            raise ModelCardError(f"{config_file}: model_type {model_type!r} is not an ovmlc model")

        recipe, recipe_text = None, None
        if (folder / RECIPE_FILE).is_file():
            recipe = _read_yaml(folder / RECIPE_FILE)
            if not isinstance(recipe, dict):
                raise ModelCardError(f"{folder / RECIPE_FILE}: the recipe must be a YAML mapping")
            # without the header comment, which names the recipe's path on the training machine
            lines = (folder / RECIPE_FILE).read_text(encoding="utf-8").strip().splitlines()
            while lines and lines[0].startswith("#"):
                lines.pop(0)
            recipe_text = "\n".join(lines)
        # The run record (`ovmlc_trainer_state.json`; folders of earlier versions: `trainer_state.json`).
        state_name = next(
            (name for name in (TRAINER_STATE_FILE, LEGACY_TRAINER_STATE_FILE) if (folder / name).is_file()), None
        )
        trainer_state = _read_json(folder / state_name) if state_name is not None else None
        report_dir = next((name for name in REPORT_DIRS if (folder / name / METRICS_FILE_NAME).is_file()), None)
        metrics, results_markdown, report_files = None, None, []
        if report_dir is not None:
            metrics_file = folder / report_dir / METRICS_FILE_NAME
            metrics = _read_json(metrics_file)
            if not isinstance(_get(metrics, "views"), dict):
                raise ModelCardError(f"{metrics_file}: no 'views' mapping (not an ovmlc evaluation report)")
            if (folder / report_dir / RESULTS_FILE_NAME).is_file():
                results_markdown = (folder / report_dir / RESULTS_FILE_NAME).read_text(encoding="utf-8")
            report_files = [
                Path(report_dir, name).as_posix()
                for name in (METRICS_FILE_NAME, PER_LABEL_FILE_NAME, THRESHOLDS_FILE, *PLOT_FILE_NAMES.values())
                if (folder / report_dir / name).is_file()
            ]

        adapter_config_file = folder / BACKBONE_ADAPTER_DIR / ADAPTER_CONFIG_FILE
        backbone_adapter = _read_json(adapter_config_file) if adapter_config_file.is_file() else None
        repo_id = repo_id or _get(recipe, "hub", "repo_id") or f"your-org/{folder.resolve().name}"
        auto_map = config.get("auto_map") or {}
        code_files = sorted(
            {f"{reference.split('--')[-1].rsplit('.', 1)[0]}.py" for reference in auto_map.values()}
            | {path.name for path in folder.glob("*.py")}
        )
        return cls(
            model_name=repo_id.split("/")[-1],
            repo_id=repo_id,
            revision=revision or "main",
            config=config,
            method=method_for_model_type(config["model_type"]),
            license=license or _get(recipe, "hub", "license"),
            extra_tags=[*(_get(recipe, "hub", "tags", default=[]) or []), *(tags or [])],
            num_parameters=count_safetensors_parameters(folder),
            code_files=code_files,
            has_label_embeddings=(folder / LABEL_EMBEDDINGS_FILE).is_file(),
            recipe=recipe,
            recipe_text=recipe_text,
            trainer_state=trainer_state if isinstance(trainer_state, dict) else None,
            trainer_state_file=state_name or TRAINER_STATE_FILE,
            metrics=metrics,
            results_markdown=results_markdown,
            evaluation_files=[name for name in report_files if not name.endswith(".png")],
            plot_files=[name for name in report_files if name.endswith(".png")],
            backbone_adapter=backbone_adapter if isinstance(backbone_adapter, dict) else None,
        )

    # ------------------------------------------------------------------ derived facts
    @property
    def backbone(self) -> str | None:
        return _get(self.recipe, "backbone") or self.config.get("backbone_name_or_path")

    @property
    def backbone_description(self) -> str | None:
        """The backbone as a reader can find it: a Hub id, the shipped offline CLIP, or (local) a folder name only."""
        backbone = self.backbone
        if not backbone:
            return None
        if backbone == "synthetic":
            return "`synthetic`, the small offline CLIP shipped with ovmlc"
        revision = self.config.get("backbone_revision")
        if looks_like_hub_id(backbone) or not Path(backbone).is_absolute():
            return f"`{backbone}`" + (f" (revision `{revision}`)" if revision else "")
        return f"a local CLIP folder `{Path(backbone).name}`, not on the Hub"

    @property
    def is_adapter_only(self) -> bool:
        return self.config.get("weights_layout") == "adapter_only"

    @property
    def layout_description(self) -> str:
        """Which weights the folder holds and what a load fetches besides (config.json's `weights_layout`)."""
        if self.is_adapter_only:
            base = self.config.get("base_model_name_or_path")
            revision = self.config.get("base_model_revision")
            modules = ", ".join(f"`{name}`" for name in self.config.get("base_model_modules") or [])
            where = f"[`{base}`](https://huggingface.co/{base})" if looks_like_hub_id(base) else f"`{base}` (local)"
            text = (
                f"adapter-only (peft-style): `model.safetensors` holds only the method's own weights; {modules} "
                f"come from the base model {where} at revision `{revision}`, which loading downloads (network access, "
                "or a Hub cache that already holds it)"
            )
        else:
            text = "whole model: `model.safetensors` holds every weight, the backbone included; nothing else is fetched"
        if self.backbone_adapter:
            base = self.backbone_adapter.get("base_model_name_or_path")
            shown = f"`{base}`" if looks_like_hub_id(base) else "its CLIP"
            text += (
                f". The fine-tuned image tower is a peft LoRA adapter of {shown} in `{BACKBONE_ADAPTER_DIR}/` "
                "(loading it needs `peft`)"
            )
        return text + "."

    @property
    def base_model(self) -> str | None:
        """A Hub model id this model derives from (an adapter-only folder's base, the recipe's `init_from`, else the
        backbone), if any."""
        base = self.config.get("base_model_name_or_path") if self.is_adapter_only else None
        for candidate in (base, _get(self.recipe, "init_from"), self.backbone):
            if looks_like_hub_id(candidate):
                return candidate
        return None

    @property
    def dataset_path(self) -> str | None:
        return _get(self.recipe, "dataset", "path") or _get(self.metrics, "provenance", "dataset")

    @property
    def dataset_id(self) -> str | None:
        """The Hub dataset id the model was trained/evaluated on, when it is one."""
        return self.dataset_path if looks_like_hub_id(self.dataset_path) else None

    @property
    def dataset_name(self) -> str | None:
        source = _get(self.recipe, "dataset", "source")
        if source:
            return str(source)
        return Path(str(self.dataset_path)).name if self.dataset_path else None

    @property
    def seen_labels(self) -> list[str]:
        return list(self.config.get("seen_labels") or [])

    @property
    def unseen_labels(self) -> list[str]:
        return list(self.config.get("unseen_labels") or [])

    @property
    def label_names(self) -> list[str]:
        return list(self.config.get("label_names") or [])

    @property
    def tags(self) -> list[str]:
        tags = [*BASE_TAGS, self.method.replace("_", "-"), *self.extra_tags]
        return list(dict.fromkeys(tags))

    @property
    def scores_depend_on_label_set(self) -> bool:
        """The method's trait: a label's score depends on the other labels scored with it (e.g. MKT)."""
        spec = method_spec(self.config["model_type"])
        return bool(spec is not None and spec.model_class.scores_depend_on_label_set)

    @property
    def is_synthetic(self) -> bool:
        names = [self.dataset_name, self.dataset_path, _get(self.metrics, "protocol")]
        return any("synthetic" in str(name).lower() for name in names if name)

    @property
    def was_trained(self) -> bool:
        """False for recipes that only evaluate (`training.epochs: 0`, no `max_steps`) or runs that made no step."""
        if self.recipe is None:
            return False
        if _get(self.trainer_state, "global_step") == 0:
            return False
        epochs, max_steps = _get(self.recipe, "training", "epochs"), _get(self.recipe, "training", "max_steps")
        return not (epochs == 0 and not max_steps)

    def example_labels(self) -> list[str]:
        """Labels for the usage snippets: a few unseen and seen labels of the model, when it has them."""
        if self.unseen_labels or self.seen_labels:
            return (self.unseen_labels[:2] + self.seen_labels[:3])[:5]
        return self.label_names[:5] or list(EXAMPLE_LABELS_FALLBACK)

    # ------------------------------------------------------------------ Hub metadata
    def eval_results(self) -> list[EvalResult]:
        """One `EvalResult` per (view, metric) of `metrics.json`: mAP, WmAP (when reported) and F1@K, in percent."""
        if not self.metrics:
            return []
        protocol = str(self.metrics.get("protocol"))
        dataset_type = self.dataset_id or self.dataset_name or "unknown"
        dataset_name = self.dataset_name or dataset_type
        split = _get(self.metrics, "provenance", "split")
        results = []
        for view, numbers in self.metrics["views"].items():
            title = VIEW_TITLES.get(view, view)
            entries = [("mAP", "mAP", None, numbers.get("mAP"))]
            if numbers.get("top1") is not None:  # single-label protocols
                entries.append(("accuracy", "top-1 accuracy", None, numbers["top1"]))
            if numbers.get("WmAP") is not None:
                entries.append(("WmAP", "WmAP", None, numbers["WmAP"]))
            for k, top_k in (numbers.get("top_k") or {}).items():
                entries.append(("f1", f"F1@{k}", int(k), _get(top_k, "f1")))
            for metric_type, metric_label, k, value in entries:
                if value is None:
                    continue
                metric_args = {"protocol": protocol, "view": view}
                if k is not None:
                    metric_args["top_k"] = k
                results.append(
                    EvalResult(
                        task_type=HUB_PIPELINE_TAG,
                        task_name=TASK_NAME,
                        dataset_type=dataset_type,
                        dataset_name=dataset_name,
                        dataset_split=split,
                        metric_type=metric_type,
                        metric_name=f"{title} {metric_label} ({protocol})",
                        metric_value=_percent(value),
                        metric_args=metric_args,
                    )
                )
        return results

    def to_model_card_data(self) -> ModelCardData:
        eval_results = self.eval_results()
        return ModelCardData(
            library_name=LIBRARY_NAME,
            pipeline_tag=HUB_PIPELINE_TAG,
            license=self.license,
            tags=self.tags,
            datasets=[self.dataset_id] if self.dataset_id else None,
            base_model=self.base_model,
            model_name=self.model_name if eval_results else None,  # names the model-index entry
            eval_results=eval_results or None,
        )

    # ------------------------------------------------------------------ body
    def template_kwargs(self) -> dict[str, Any]:
        spec = method_spec(self.config["model_type"])
        card = spec.card if spec is not None else None
        papers = list(card.papers) if card is not None else []
        state_rows = self._state_rows()
        training_rows = self._training_rows()
        return {
            "summary": self._summary(card),
            "model_name": self.model_name,
            "repo_id": self.repo_id,
            "revision": self.revision,
            "has_recipe": self.recipe is not None,
            "has_trainer_state": self.trainer_state is not None,
            "trainer_state_file": self.trainer_state_file,
            "has_metrics": self.metrics is not None,
            "method_name": card.name if card is not None else f"`{self.method}`",
            "method_summary": card.summary if card is not None else "no description is registered for this method.",
            "method_papers": [_paper_view(paper) for paper in papers[:1]],
            "method_notes": list(card.notes) if card is not None else [],
            "scores_depend_on_label_set": self.scores_depend_on_label_set,
            "model_type": self.config["model_type"],
            "model_class": (self.config.get("architectures") or [None])[0],
            "backbone": self.backbone_description,
            "templates_description": self._templates_description(),
            "num_parameters": f"{self.num_parameters:,}" if self.num_parameters else None,
            "parameters_note": (
                "(the method's own weights, in `model.safetensors`; the base model's are not counted)"
                if self.is_adapter_only
                else "(all weights in `model.safetensors`, including the CLIP backbone)"
            ),
            "layout_description": self.layout_description,
            "needs_peft": bool(self.backbone_adapter),
            "thresholds_description": self._thresholds_description(),
            "license": self.license,
            "labels_description": self._labels_description(),
            "num_seen": len(self.seen_labels),
            "num_unseen": len(self.unseen_labels),
            "seen_preview": _preview(self.seen_labels) if self.seen_labels else None,
            "unseen_preview": _preview(self.unseen_labels) if self.unseen_labels else None,
            "has_label_embeddings": self.has_label_embeddings and bool(self.label_names),
            "code_files": self.code_files or ["(none)"],
            "example_labels": json.dumps(self.example_labels(), ensure_ascii=False),
            "pipeline_task": PIPELINE_TASK,
            "training_rows": training_rows,
            "no_training_note": (
                "This folder holds no training record (`recipe.yaml`, `trainer_state.json`): it is the method as "
                "built, e.g. a zero-shot wrapper around the backbone or weights saved outside `ovmlc train`. No "
                "training is claimed."
            ),
            "state_rows": state_rows,
            "recipe_yaml": self.recipe_text,
            "results_markdown": self._results_markdown(),
            "protocol": _get(self.metrics, "protocol"),
            "eval_dataset": _get(self.metrics, "provenance", "dataset"),
            "eval_split": _get(self.metrics, "provenance", "split"),
            "evaluation_files": self.evaluation_files,
            "plots": [(name, PLOT_TITLES.get(Path(name).stem, name)) for name in self.plot_files],
            "no_evaluation_note": (
                "This folder holds no evaluation report (`metrics.json`), so this card claims no results. Measure "
                "them with `ovmlc evaluate` on a dataset with a seen/unseen split and push the report with the model."
            ),
            "limitations": self._limitations(),
            "bibtex": "\n\n".join(paper.bibtex for paper in papers) or "% no citation registered for this method",
        }

    def _summary(self, card: MethodCard | None) -> str:
        name = card.name if card is not None else self.method
        backbone = f" (backbone: {self.backbone_description})" if self.backbone else ""
        text = f"An open-vocabulary multi-label image classifier: {name}{backbone}, packaged with [ovmlc]"
        if self.scores_depend_on_label_set:
            text += (
                "(https://github.com/ovmlc/ovmlc). It scores any list of label texts with a sigmoid per label; the "
                "scores depend on which labels are scored together (see Usage)."
            )
        else:
            text += (
                "(https://github.com/ovmlc/ovmlc). It scores any list of label texts independently (a sigmoid per "
                "label)."
            )
        dataset = f" on `{self.dataset_path}`" if self.dataset_path else ""
        if self.recipe is not None and self.was_trained:
            text += f" Trained with `ovmlc train`{dataset}"
            if self.unseen_labels:
                text += f" with {len(self.seen_labels)} seen labels; {len(self.unseen_labels)} labels were held out"
                text += " of training and are recognised zero-shot"
            text += "."
        elif self.recipe is not None:
            text += f" Not trained: `ovmlc train` ran its recipe with no training steps and evaluated it{dataset}."
        else:
            text += " No training record comes with this checkpoint."
        return text

    def _templates_description(self) -> str:
        from ..core.vocabulary import list_templates, load_templates

        templates = self.config.get("templates") or "single"
        if isinstance(templates, list):  # saved configs hold the list: name it when it is a shipped set
            templates = next((name for name in list_templates() if load_templates(name) == templates), templates)
        pooling = (
            "raw embeddings averaged" if self.config.get("prompt_pool", "raw") == "raw" else "normalised, averaged"
        )
        if isinstance(templates, str):
            try:
                count = len(load_templates(templates))
            except (OSError, ValueError, KeyError):
                return f"`{templates}` ({pooling})"
            return f"`{templates}` ({count} template{'s' if count != 1 else ''}, {pooling})"
        return (
            f"{len(templates)} custom template{'s' if len(templates) != 1 else ''} ({pooling}), stored in config.json"
        )

    def _thresholds_description(self) -> str:
        per_label = self.config.get("label_thresholds") or {}
        global_threshold = self.config.get("global_threshold")
        if not per_label and global_threshold is None:
            return "none (use `top_k` or an explicit `threshold=`)"
        parts = []
        if per_label:
            parts.append(f"per-label thresholds for {len(per_label)} labels")
        if global_threshold is not None:
            parts.append(f"a global threshold of {float(global_threshold):.4g} for other labels")
        return " and ".join(parts) + ' in `config.json` (use `threshold="calibrated"`)'

    def _labels_description(self) -> str:
        if self.seen_labels or self.unseen_labels:
            return (
                f"The training/evaluation label set has {len(self.seen_labels) + len(self.unseen_labels)} labels: "
                f"{len(self.seen_labels)} seen (the split's training labels) and {len(self.unseen_labels)} unseen "
                "(held out of training, evaluated zero-shot)."
            )
        if self.label_names:
            return f"The model records a label set of {len(self.label_names)} labels, without a seen/unseen split."
        return "The model records no label set: it was not trained or evaluated on a fixed vocabulary."

    def _training_rows(self) -> list[tuple[str, str]]:
        recipe = self.recipe
        if recipe is None:
            return []

        def get(*keys: str) -> Any:
            return _get(recipe, *keys)

        rows: list[tuple[str, Any]] = [
            ("method", get("method")),
            ("backbone", get("backbone")),
            ("initialised from", get("init_from")),
            ("dataset", get("dataset", "path")),
            ("dataset source", get("dataset", "source")),
            ("training split / labels", _join(get("dataset", "train_split"), get("dataset", "train_labels"))),
            ("validation split", get("dataset", "validation_split")),
            ("test split", get("dataset", "test_split")),
            ("protocol", get("protocol")),
            ("method config", get("method_config") or None),
            ("optimizer", _join(get("optimizer", "name"), get("optimizer", "lr"), prefix=("", "lr "))),
            ("weight decay", get("optimizer", "weight_decay")),
            ("schedule", get("schedule", "name")),
            ("warm-up ratio", get("schedule", "warmup_ratio") or None),
            ("layer decay", get("layer_decay")),
            ("frozen (patterns)", get("freeze") or None),
            ("epochs", get("training", "epochs")),
            ("max steps", get("training", "max_steps")),
            ("batch size", get("training", "batch_size")),
            ("gradient accumulation", get("training", "gradient_accumulation_steps")),
            ("mixed precision", get("training", "mixed_precision")),
            ("seed", get("training", "seed")),
            ("model selection", _join(get("training", "selection_metric"), get("training", "selection_mode"))),
            ("early stopping patience", get("training", "early_stopping_patience")),
            ("augmentation", get("training", "augment")),
            ("transforms", get("transforms") or None),
        ]
        return [(name, _format_value(value)) for name, value in rows if value is not None]

    def _state_rows(self) -> list[tuple[str, str]]:
        """What trainer_state.json records: every scalar, and the scalar entries of its mappings (versions, hardware,
        loss summary, test numbers); lists (loss and validation histories) are left to the file."""
        if not self.trainer_state:
            return []
        rows = []
        for key, value in self.trainer_state.items():
            name = key.replace("_", " ")
            if isinstance(value, dict):
                scalars = [(item, entry) for item, entry in value.items() if _is_scalar(entry) and entry is not None]
                if scalars:
                    rows.append((name, ", ".join(f"{item} {_plain(entry)}" for item, entry in scalars)))
            elif _is_scalar(value) and isinstance(value, (int, float)) and not isinstance(value, bool):
                duration = f" ({_format_duration(float(value))})" if re.search(r"(time|seconds)", key) else ""
                rows.append((name, _format_value(value) + duration))
            elif _is_scalar(value):
                rows.append((name, "–" if value is None else _format_value(value)))
        return rows

    def _results_markdown(self) -> str | None:
        """The run's results.md under this card's headings: its title dropped, headings demoted, and provenance lines
        holding local absolute paths (model folder, scores file, recipe) dropped."""
        if not self.results_markdown:
            return None
        lines = []
        for line in self.results_markdown.strip().splitlines():
            if line.startswith("# ") or _LOCAL_PATH_LINE.match(line):
                continue  # the title, and provenance lines naming files of the machine that ran the evaluation
            lines.append("##" + line if line.startswith("#") else line)
        return "\n".join(lines).strip()

    def _limitations(self) -> list[str]:
        items = []
        if self.metrics:
            settings = self.metrics.get("settings") or {}
            views = settings.get("views") or {}
            filters = "; ".join(
                f"{VIEW_TITLES.get(name, name)}: image filter `{view.get('image_filter')}`, class filter "
                f"`{view.get('class_filter')}`"
                if "image_filter" in view
                else f"{VIEW_TITLES.get(name, name)}: {view.get('labels')} classes on their images"  # single-label
                for name, view in views.items()
            )
            items.append(
                f"The results hold for the `{self.metrics.get('protocol')}` protocol preset only ({filters}; ties "
                f"`{settings.get('ties')}`, classes without positives `{settings.get('no_positive_class')}`). Papers "
                "differ in these choices, so compare only with numbers computed under the same preset."
            )
            limit = _get(self.metrics, "provenance", "limit")
            if limit:
                items.append(f"The evaluation used only the first {limit} images of the split, not all of it.")
        if self.unseen_labels and self.was_trained:
            items.append(
                "Seen/unseen bias: the model was trained on the seen labels only, so seen labels tend to score higher "
                "than unseen ones. In GZSL (all labels ranked together) unseen labels are pushed down, and ZSL numbers "
                "(unseen labels ranked alone) overstate what you get when you mix trained and new labels."
            )
        if self.config.get("label_thresholds") or self.config.get("global_threshold") is not None:
            items.append(
                "Calibrated thresholds were fitted on a validation split with the unseen labels masked out; for labels "
                "outside the training vocabulary only the global threshold applies, and it may not transfer."
            )
        else:
            items.append(
                "Scores are independent sigmoids but not calibrated probabilities; choose a threshold on your own data "
                "or use `top_k`."
            )
        if self.is_synthetic:
            items.append(
                "Trained/evaluated on the synthetic shapes world of ovmlc: this checkpoint exercises the pipeline and "
                "is not meant for real photographs."
            )
        if self.recipe is None:
            items.append("No training record: nothing in this card describes how (or whether) the weights were tuned.")
        items.append(
            "The model inherits the biases of its CLIP backbone's web image-text data; label wording and prompt "
            "templates change the scores."
        )
        items.append(
            "`trust_remote_code=True` executes this repository's Python files; review them and pin `revision` / "
            "`code_revision` to a commit hash."
        )
        return items


def _is_scalar(value: Any) -> bool:
    return value is None or isinstance(value, (str, int, float, bool))


def _plain(value: Any) -> str:
    return f"{value:.6g}" if isinstance(value, float) else str(value)


def _join(*values: Any, prefix: tuple[str, ...] = ()) -> str | None:
    parts = [f"{prefix[i] if i < len(prefix) else ''}{value}" for i, value in enumerate(values) if value is not None]
    return " / ".join(parts) if parts else None


def _paper_view(paper: Paper) -> dict[str, Any]:
    return {
        "title": paper.title,
        "url": paper.url,
        "authors_short": paper.short_authors,
        "venue_short": paper.short_venue,
        "year": paper.year,
    }


def build_model_card(
    folder: str | os.PathLike,
    repo_id: str | None = None,
    revision: str | None = None,
    license: str | None = None,  # noqa: A002 - the Hub metadata key
    tags: list[str] | None = None,
) -> ModelCard:
    """The model card of a model folder (see `OVMLCModelCardData.from_folder` for the arguments)."""
    card_data = OVMLCModelCardData.from_folder(folder, repo_id=repo_id, revision=revision, license=license, tags=tags)
    return ModelCard.from_template(
        card_data.to_model_card_data(), template_path=str(MODEL_CARD_TEMPLATE), **card_data.template_kwargs()
    )


def write_model_card(
    output_dir: str | os.PathLike,
    repo_id: str | None = None,
    revision: str | None = None,
    license: str | None = None,  # noqa: A002 - the Hub metadata key
) -> Path:
    """Write `README.md` into a model folder (called by `ovmlc train` at the end of a run); returns its path."""
    card = build_model_card(output_dir, repo_id=repo_id, revision=revision, license=license)
    path = Path(output_dir) / MODEL_CARD_FILE
    path.write_text(str(card), encoding="utf-8")
    return path


__all__ = [
    "ModelCardError",
    "OVMLCModelCardData",
    "build_model_card",
    "write_model_card",
]
