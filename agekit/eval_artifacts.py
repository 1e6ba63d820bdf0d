"""Where a model's evaluation lives: checkpoints/<model>/eval/ holds metrics.json and predictions.csv.

`python -m evaluation.evaluate` writes them; the app, the report and the significance tables read them.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

EVAL_DIR = "eval"
METRICS_FILE = "metrics.json"
PREDICTIONS_FILE = "predictions.csv"


def eval_folder(root: str | Path, model: str) -> Path:
    return Path(root) / model / EVAL_DIR


def predictions_path(root: str | Path, model: str) -> Path:
    return eval_folder(root, model) / PREDICTIONS_FILE


def read_predictions(root: str | Path, model: str) -> pd.DataFrame:
    """checkpoints/<model>/eval/predictions.csv; a clear ValueError when the model has none."""
    path = predictions_path(root, model)
    if not path.is_file():
        raise ValueError(f"model {model} has no test-set predictions ({path} is missing): run "
                         f"`python -m evaluation.evaluate --models {model}`")
    return pd.read_csv(path)
