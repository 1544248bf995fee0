"""Evaluation layer: exact ZSL/GZSL metrics and protocol presets (`metrics.py`, `protocols/*.yaml`) and the engine of
`ovmlc evaluate` (`engine.py`: scores file, reports, plots, threshold calibration).

The engine's public names are re-exported here, so `from ovmlc import evaluation; evaluation.evaluate_scores(...)`
keeps working (this package replaced the former `ovmlc/evaluation.py` module).
"""

from ..files import (
    METRICS_FILE_NAME,
    PER_LABEL_FILE_NAME,
    PLOT_FILE_NAMES,
    RESULTS_FILE_NAME,
    SCORES_FILE_NAME,
    THRESHOLDS_FILE_NAME,
)
from .engine import (
    OPTIONAL_SCORES_FILE_KEYS,
    SCORES_FILE_KEYS,
    TIE_WARNING_FRACTION,
    VIEW_TITLES,
    ScoresFile,
    ScoresFileError,
    TiedScoresWarning,
    best_f1_threshold,
    calibrate_thresholds,
    dataset_batches,
    default_output_dir,
    evaluate_model,
    evaluate_scores,
    load_scores,
    render_results_markdown,
    save_scores,
    score_dataset,
    write_per_label_csv,
    write_plots,
    write_report,
    write_thresholds,
)

__all__ = [
    "METRICS_FILE_NAME",
    "OPTIONAL_SCORES_FILE_KEYS",
    "PER_LABEL_FILE_NAME",
    "PLOT_FILE_NAMES",
    "RESULTS_FILE_NAME",
    "SCORES_FILE_KEYS",
    "SCORES_FILE_NAME",
    "THRESHOLDS_FILE_NAME",
    "TIE_WARNING_FRACTION",
    "VIEW_TITLES",
    "ScoresFile",
    "ScoresFileError",
    "TiedScoresWarning",
    "best_f1_threshold",
    "calibrate_thresholds",
    "dataset_batches",
    "default_output_dir",
    "evaluate_model",
    "evaluate_scores",
    "load_scores",
    "render_results_markdown",
    "save_scores",
    "score_dataset",
    "write_per_label_csv",
    "write_plots",
    "write_report",
    "write_thresholds",
]
