"""Single-label classification metrics (CoOp / CoCoOp / LAMM few-shot protocols): top-K accuracy, per-class
accuracy, and the base/new harmonic mean of base-to-new generalisation.

A single-label protocol is a YAML preset with `task: single-label` (e.g.
`ovmlc/evaluation/protocols/single-label.yaml`); it is loaded and dispatched by `ovmlc.evaluation.metrics.load_protocol`
/ `evaluate_protocol`, so `ovmlc evaluate --protocol single-label` and the trainer use it like any multi-label preset.
Inputs are those of the multi-label metrics: scores `[N, C]` (any monotone score; argmax over the view's columns is
the prediction) and labels `[N, C]` in {1, 0, -1}, where every image must have exactly one positive.

Each view (`labels: all | seen | unseen`) ranks only its own columns and keeps only the images whose label is among
them: with a base-to-new split ("seen" = base classes, "unseen" = new classes) the base view is the C_base-way task on
base images and the new view the C_new-way task on new images (CoCoOp's protocol), and the `base_new` block holds the
harmonic mean H = 2 B N / (B + N) of their accuracies. Ties among scores go to the earlier column (as `top_k_mask`).

Numbers per view: `top1`, `top5` (accuracy, in [0, 1]), `top_k[str(K)]["accuracy"]`, `mean_per_class_accuracy`
(the mean of per-class top-1 recall, classes without images left out), `mAP` (per-class AP of the scores over the
view's images, as in the multi-label metrics), and `per_label` rows (`accuracy`, `num_images`, `ap`).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np

from ..yaml_schema import INTERNAL, Check, KeyedBy, PositiveInt, SchemaError, from_data

TASK_SINGLE_LABEL = "single-label"
HARMONIC_MEAN_VIEW = "base_new"


@dataclass(frozen=True)
class SingleLabelView:
    """One view: its label set ranks only its own columns, on the images of those labels."""

    name: str  # in a protocol file: the key of the view under `views`
    labels: Literal["unseen", "seen", "all"]  # "seen" = base classes, "unseen" = new classes


@dataclass(frozen=True)
class SingleLabelProtocol:
    """A single-label evaluation preset (see the module docstring); the fields are the file's keys."""

    name: str
    task: Literal["single-label"]
    description: str
    citation: str
    top_k: Annotated[tuple[PositiveInt, ...], Check(len, "a non-empty list of positive integers")]
    views: Annotated[tuple[SingleLabelView, ...], KeyedBy("name"), Check(len, "a non-empty mapping of views")]
    source: str = field(default="", metadata=INTERNAL)

    def __post_init__(self) -> None:
        if any(view.name == HARMONIC_MEAN_VIEW for view in self.views):
            raise SchemaError(
                f"{HARMONIC_MEAN_VIEW!r} is computed from the seen and unseen views; do not define it",
                key=f"views.{HARMONIC_MEAN_VIEW}",
            )

    @property
    def ties(self) -> str:
        return "stable"

    def settings(self) -> dict[str, Any]:
        return {
            "task": TASK_SINGLE_LABEL,
            "top_k": list(self.top_k),
            "ties": self.ties,
            "views": {view.name: {"labels": view.labels} for view in self.views},
        }


def protocol_from_dict(
    data: Mapping[str, Any], source: str = "<protocol>", error: type[SchemaError] = SchemaError
) -> SingleLabelProtocol:
    """Validate a `task: single-label` preset through the one YAML validator (errors name the file and the key)."""
    protocol = from_data(SingleLabelProtocol, data, source=source, error=error)
    # Folded YAML text keeps line breaks; the report shows one paragraph.
    return dataclasses.replace(
        protocol,
        description=" ".join(protocol.description.split()),
        citation=" ".join(protocol.citation.split()),
        source=source,
    )


def _number(value: float) -> float | None:
    value = float(value)
    return None if math.isnan(value) else value


def single_label_targets(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The class index `[N]` of each row of `labels [N, C]` and the rows `[N]` (bool) that have a positive among these
    columns (images of labels outside them cannot be evaluated and are left out); several positives are an error."""
    positives = labels == 1
    counts = positives.sum(axis=1)
    bad = np.flatnonzero(counts > 1)
    if bad.size:
        raise ValueError(
            f"single-label evaluation needs exactly one positive label per image; {bad.size} image(s) have more "
            f"(first: image {int(bad[0])} with {int(counts[bad[0]])})"
        )
    return positives.argmax(axis=1), counts == 1


def top_k_correct(scores: np.ndarray, targets: np.ndarray, k: int) -> np.ndarray:
    """`[N]` bool: the target is among the `k` best-scored columns (ties: the earlier column ranks first)."""
    target_scores = scores[np.arange(len(targets)), targets][:, None]  # [N, 1]
    columns = np.arange(scores.shape[1])[None, :]
    above = (scores > target_scores) | ((scores == target_scores) & (columns < targets[:, None]))  # [N, C]
    return above.sum(axis=1) < k


def evaluate_single_label(
    scores: Any,
    labels: Any,
    label_names: Sequence[str],
    unseen: Any,
    protocol: SingleLabelProtocol,
    unseen_scores: Any = None,
) -> dict[str, Any]:
    """Every number of a single-label protocol (see the module docstring); JSON-ready, undefined numbers None.

    Images without a positive among the given columns (e.g. new-class images when only base labels are scored) are
    left out (`num_images_without_label`). `unseen_scores [N, C_unseen]` (the unseen labels scored on their own, for
    models whose scores depend on the scored label set) replace the unseen columns in the views over unseen labels.
    """
    from .metrics import to_label_matrix, to_score_matrix

    scores = to_score_matrix(scores)
    labels = to_label_matrix(labels)
    if scores.shape != labels.shape:
        raise ValueError(f"`scores` has shape {scores.shape} but `labels` has shape {labels.shape}.")
    label_names = [str(name) for name in label_names]
    unseen = np.asarray(unseen).astype(bool).reshape(-1)
    num_images, num_labels = scores.shape
    if len(label_names) != num_labels or unseen.shape[0] != num_labels:
        raise ValueError(f"{len(label_names)} label names / {unseen.shape[0]} unseen flags for {num_labels} columns.")
    targets, has_label = single_label_targets(labels)
    unseen_view_scores = scores
    if unseen_scores is not None:
        unseen_scores = to_score_matrix(unseen_scores, name="unseen_scores")
        if unseen_scores.shape != (num_images, int(unseen.sum())):
            raise ValueError(
                f"`unseen_scores` has shape {unseen_scores.shape}; expected {(num_images, int(unseen.sum()))}."
            )
        unseen_view_scores = scores.astype(np.result_type(scores, unseen_scores))
        unseen_view_scores[:, unseen] = unseen_scores
    report: dict[str, Any] = {
        "protocol": protocol.name,
        "task": TASK_SINGLE_LABEL,
        "description": protocol.description,
        "citation": protocol.citation,
        "settings": protocol.settings(),
        "num_images": num_images,
        "num_labels": num_labels,
        "num_unseen_labels": int(unseen.sum()),
        "num_images_without_label": int((~has_label).sum()),
        "views": {},
        "skipped_views": {},
    }
    for view in protocol.views:
        columns = {"all": np.ones(num_labels, bool), "seen": ~unseen, "unseen": unseen}[view.labels]
        if view.labels != "all" and not unseen.any():
            report["skipped_views"][view.name] = "no base/new (seen/unseen) split"
            continue
        column_index = np.flatnonzero(columns)
        rows = np.flatnonzero(columns[targets] & has_label)
        if column_index.size == 0 or rows.size == 0:
            report["skipped_views"][view.name] = f"no {view.labels} labels or no image of them"
            continue
        position = np.full(num_labels, -1)
        position[column_index] = np.arange(column_index.size)
        view_scores = unseen_view_scores if view.labels == "unseen" else scores
        report["views"][view.name] = _evaluate_view(
            protocol,
            view,
            view_scores[np.ix_(rows, column_index)],  # [n, c]
            position[targets[rows]],  # [n] class index within the view
            labels[np.ix_(rows, column_index)],
            [label_names[c] for c in column_index],
            unseen[column_index],
            num_images,
        )
    seen_views = [view.name for view in protocol.views if view.labels == "seen" and view.name in report["views"]]
    unseen_views = [view.name for view in protocol.views if view.labels == "unseen" and view.name in report["views"]]
    if seen_views and unseen_views:
        base, new = report["views"][seen_views[0]], report["views"][unseen_views[0]]
        block = {"base_view": seen_views[0], "new_view": unseen_views[0]}
        for key in ("top1", "top5", "mean_per_class_accuracy"):
            if base.get(key) is not None and new.get(key) is not None:
                block[key] = _harmonic_mean(base[key], new[key])
        report["views"][HARMONIC_MEAN_VIEW] = block
    return report


def _harmonic_mean(first: float, second: float) -> float:
    return 0.0 if first + second == 0 else 2 * first * second / (first + second)


def _evaluate_view(
    protocol: SingleLabelProtocol,
    view: SingleLabelView,
    scores: np.ndarray,
    targets: np.ndarray,
    labels: np.ndarray,
    names: list[str],
    unseen: np.ndarray,
    total_images: int,
) -> dict[str, Any]:
    from .metrics import average_precision

    num_images, num_labels = scores.shape
    result: dict[str, Any] = {
        "protocol": protocol.name,
        "labels": view.labels,
        "num_images": num_images,
        "num_images_dropped": total_images - num_images,
        "num_labels": num_labels,
        "top_k": {},
    }
    correct_top1 = None
    for k in protocol.top_k:
        if k > num_labels:
            result["top_k"][str(k)] = {"accuracy": None, "note": f"K={k} exceeds the {num_labels} labels of this view"}
            continue
        correct = top_k_correct(scores, targets, k)
        result["top_k"][str(k)] = {"accuracy": float(correct.mean()), "num_correct": int(correct.sum())}
        if k == 1:
            correct_top1 = correct
    for k in (1, 5):
        block = result["top_k"].get(str(k))
        result[f"top{k}"] = None if block is None else block["accuracy"]
    if correct_top1 is None:
        correct_top1 = top_k_correct(scores, targets, 1)
    per_class_images = np.bincount(targets, minlength=num_labels)
    per_class_correct = np.bincount(targets, weights=correct_top1, minlength=num_labels)
    with np.errstate(invalid="ignore", divide="ignore"):
        per_class_accuracy = per_class_correct / per_class_images  # NaN for classes without images
    kept = per_class_images > 0
    result["mean_per_class_accuracy"] = float(per_class_accuracy[kept].mean()) if kept.any() else None
    ap = average_precision(scores, labels, ties=protocol.ties, no_positive="exclude")
    result["mAP"] = _number(np.nanmean(ap)) if (~np.isnan(ap)).any() else None
    result["per_label"] = [
        {
            "label": name,
            "unseen": bool(unseen[position]),
            "accuracy": _number(per_class_accuracy[position]),
            "num_images": int(per_class_images[position]),
            "ap": _number(ap[position]),
        }
        for position, name in enumerate(names)
    ]
    return result


# ----------------------------------------------------------------------------------------------------------------------
# Report files (the single-label counterparts of `ovmlc.evaluation.render_results_markdown` / `write_per_label_csv`)
# ----------------------------------------------------------------------------------------------------------------------

VIEW_TITLES = {"all": "All classes", "base": "Base", "new": "New", HARMONIC_MEAN_VIEW: "Harmonic mean (base, new)"}


def _percent(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.2f}"


def render_results_markdown(report: Mapping[str, Any]) -> str:
    """A paper-style table (views x top-1, top-5, mean per-class accuracy, mAP), in percent."""
    provenance = report.get("provenance", {})
    lines = [f"# Evaluation results: protocol `{report['protocol']}` (single-label)", ""]
    for key in ("model", "dataset", "split", "scores_file", "limit", "created"):
        if provenance.get(key) is not None:
            lines.append(f"- {key.replace('_', ' ')}: `{provenance[key]}`")
    lines += [
        f"- protocol `{report['protocol']}`: {report['description']}",
        f"- definitions from: {report['citation']}",
        "",
        "All numbers in %. Each view ranks only its own classes, on the images of those classes.",
        "",
        "| View | Classes | Images | Top-1 | Top-5 | Mean per-class acc. | mAP |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, view in report["views"].items():
        if name == HARMONIC_MEAN_VIEW:
            continue
        lines.append(
            f"| {VIEW_TITLES.get(name, name)} | {view['num_labels']} | {view['num_images']} | {_percent(view['top1'])} "
            f"| {_percent(view['top5'])} | {_percent(view['mean_per_class_accuracy'])} | {_percent(view['mAP'])} |"
        )
    block = report["views"].get(HARMONIC_MEAN_VIEW)
    if block:
        lines += [
            "",
            f"Harmonic mean of {block['base_view']} and {block['new_view']}: top-1 H = {_percent(block.get('top1'))}, "
            f"top-5 H = {_percent(block.get('top5'))}.",
        ]
    for name, reason in report.get("skipped_views", {}).items():
        lines.append(f"- {VIEW_TITLES.get(name, name)}: skipped ({reason})")
    lines.append("")
    return "\n".join(lines)


def write_report_files(report: Mapping[str, Any], output_dir: str | Path) -> dict[str, Path]:
    """`metrics.json`, `results.md` and `per_label_ap.csv` (per class: accuracy, images, AP) of a single-label
    report."""
    import csv
    import json

    from ..files import METRICS_FILE_NAME, PER_LABEL_FILE_NAME, RESULTS_FILE_NAME
    from .engine import _json_ready

    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    written = {
        "metrics": output_dir / METRICS_FILE_NAME,
        "results": output_dir / RESULTS_FILE_NAME,
        "per_label": output_dir / PER_LABEL_FILE_NAME,
    }
    written["metrics"].write_text(json.dumps(_json_ready(report), indent=2) + "\n", encoding="utf-8")
    written["results"].write_text(render_results_markdown(report), encoding="utf-8")
    columns = ["protocol", "view", "label", "unseen", "accuracy", "num_images", "ap"]
    with written["per_label"].open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        for view_name, view in report["views"].items():
            for row in view.get("per_label", []):
                values = {"protocol": report["protocol"], "view": view_name, **row}
                writer.writerow({key: "" if values.get(key) is None else values[key] for key in columns})
    return written


__all__ = [
    "HARMONIC_MEAN_VIEW",
    "TASK_SINGLE_LABEL",
    "SingleLabelProtocol",
    "evaluate_single_label",
    "protocol_from_dict",
    "render_results_markdown",
    "single_label_targets",
    "top_k_correct",
    "write_report_files",
]
