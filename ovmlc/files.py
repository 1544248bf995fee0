"""Every name ovmlc writes into or reads from a folder (model, training run, evaluation report, dataset), once.

Layer 0: standard library only, so any layer (and the light CLI) can import it. Other modules import these constants
instead of spelling the names again.
"""

from __future__ import annotations

# ---------------------------------------------------------------------------------------------- model folders
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
WEIGHTS_INDEX_FILE = "model.safetensors.index.json"
# Text embeddings of `config.label_names` (so a loaded model does not re-encode its label set).
LABEL_EMBEDDINGS_FILE = "label_embeddings.safetensors"
# The pipeline class copied next to saved models (`custom_pipelines` in config.json).
PIPELINE_FILE = "pipeline.py"
# The class of `PIPELINE_FILE` that implements the task, as transformers' `custom_pipelines` names it.
PIPELINE_IMPL = "pipeline.OpenVocabularyMultiLabelPipeline"
# The module of the installed package that `PIPELINE_FILE` is exported from (with the modules it imports).
PIPELINE_MODULE = "ovmlc.inference.pipeline"
# The task id under which the pipeline is registered (transformers' `pipeline(task)` and config.json).
PIPELINE_TASK = "open-vocabulary-multi-label-classification"
PREPROCESSOR_FILE = "preprocessor_config.json"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json")
# LoRA (CLIP-FT `finetune="lora"`): PEFT's file names, so peft tools read the adapter. A peft adapter of the backbone
# lives in `BACKBONE_ADAPTER_DIR/` of a model folder: an adapter_config.json at the top would make transformers'
# AutoModel load the adapter's base (the CLIP) instead of the ovmlc model. (Folders of ovmlc 0.1 hold the two files at
# the top, with the logit head inside the adapter weights; they still load.)
ADAPTER_CONFIG_FILE = "adapter_config.json"
ADAPTER_WEIGHTS_FILE = "adapter_model.safetensors"
BACKBONE_ADAPTER_DIR = "backbone_adapter"
# The card of a Hub repository (model or dataset).
CARD_FILE = "README.md"

# ---------------------------------------------------------------------------------------------- training runs
RECIPE_FILE = "recipe.yaml"
# The run record of `ovmlc train` (output folder) and the resume state of a checkpoint. Not transformers'
# `trainer_state.json` (another layout: `TrainerState.load_from_json` cannot read it), hence its own name.
TRAINER_STATE_FILE = "ovmlc_trainer_state.json"
# The name earlier ovmlc versions used: still read (model cards of old folders, resuming old checkpoints).
LEGACY_TRAINER_STATE_FILE = "trainer_state.json"
CHECKPOINTS_DIR = "checkpoints"
# Trainable parameters + buffers of a checkpoint (`checkpoint-*/`, `best-*/`): what resuming and restoring load.
TRAINABLE_WEIGHTS_FILE = "trainable_weights.safetensors"
BEST_WEIGHTS_FILE = TRAINABLE_WEIGHTS_FILE
# Optimizer state tensors (its param groups and scalars in the file's metadata), LR schedule, gradient scaler, and the
# RNG states of process <rank>: what a checkpoint stores to resume a run, never as pickles.
OPTIMIZER_STATE_FILE = "optimizer.safetensors"
SCHEDULER_STATE_FILE = "scheduler.json"
SCALER_STATE_FILE = "scaler.json"
RNG_STATE_FILE_PATTERN = "rng_state_{rank}.safetensors"
# Held (flock) by the main process of a run for its whole duration: one run per output folder.
RUN_LOCK_FILE = ".ovmlc-run.lock"
LOGS_DIR = "logs"
# The test-split report of `ovmlc train` (an evaluation report folder inside the model folder).
EVAL_DIR = "eval"

# ---------------------------------------------------------------------------------------------- evaluation reports
SCORES_FILE_NAME = "scores.npz"
METRICS_FILE_NAME = "metrics.json"
RESULTS_FILE_NAME = "results.md"
PER_LABEL_FILE_NAME = "per_label_ap.csv"
THRESHOLDS_FILE_NAME = "thresholds.json"
PLOT_FILE_NAMES = {
    "per_label_ap": "per_label_ap.png",
    "pr_curves": "pr_curves.png",
    "ap_distribution": "ap_distribution.png",
    "threshold_f1": "threshold_f1.png",
    "score_histograms": "score_histograms.png",
}

# ---------------------------------------------------------------------------------------------- canonical datasets
# Parquet shards live under this folder of a dataset folder; the card is `CARD_FILE`.
DATASET_DATA_DIR = "data"

__all__ = [
    "ADAPTER_CONFIG_FILE",
    "ADAPTER_WEIGHTS_FILE",
    "BACKBONE_ADAPTER_DIR",
    "BEST_WEIGHTS_FILE",
    "CARD_FILE",
    "CHECKPOINTS_DIR",
    "CONFIG_FILE",
    "DATASET_DATA_DIR",
    "EVAL_DIR",
    "LABEL_EMBEDDINGS_FILE",
    "LEGACY_TRAINER_STATE_FILE",
    "LOGS_DIR",
    "METRICS_FILE_NAME",
    "OPTIMIZER_STATE_FILE",
    "PER_LABEL_FILE_NAME",
    "PIPELINE_FILE",
    "PIPELINE_IMPL",
    "PIPELINE_MODULE",
    "PIPELINE_TASK",
    "PLOT_FILE_NAMES",
    "PREPROCESSOR_FILE",
    "RECIPE_FILE",
    "RESULTS_FILE_NAME",
    "RNG_STATE_FILE_PATTERN",
    "RUN_LOCK_FILE",
    "SCALER_STATE_FILE",
    "SCHEDULER_STATE_FILE",
    "SCORES_FILE_NAME",
    "THRESHOLDS_FILE_NAME",
    "TOKENIZER_FILES",
    "TRAINABLE_WEIGHTS_FILE",
    "TRAINER_STATE_FILE",
    "WEIGHTS_FILE",
    "WEIGHTS_INDEX_FILE",
]
