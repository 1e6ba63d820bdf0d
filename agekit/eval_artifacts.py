"""Where a model's evaluation lives: checkpoints/<model>/eval/ holds metrics.json and predictions.csv.

`python -m evaluation.evaluate` writes them; `python -m evaluation.wild` adds metrics.json's "wild" section and
predictions_wild.csv; the app, the report and the significance tables read them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

EVAL_DIR = "eval"
METRICS_FILE = "metrics.json"
PREDICTIONS_FILE = "predictions.csv"
WILD_SECTION = "wild"  # metrics.json key of the wild-photo evaluation (test faces rendered as photos)
WILD_PREDICTIONS_FILE = "predictions_wild.csv"  # one row per detected face, columns as predictions.csv


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


def write_wild(checkpoint_folder: str | Path, section: dict[str, Any], predictions: pd.DataFrame) -> Path:
    """Put the wild-photo evaluation into checkpoints/<model>/eval/metrics.json (replacing an older one) and
    write predictions_wild.csv; the clean evaluation must exist (it owns the rest of metrics.json)."""
    path = Path(checkpoint_folder) / EVAL_DIR / METRICS_FILE
    if not path.is_file():
        raise ValueError(f"{path} does not exist: run `python -m evaluation.evaluate` before the wild evaluation")
    report = json.loads(path.read_text())
    report[WILD_SECTION] = section
    path.write_text(json.dumps(report, indent=2, allow_nan=False) + "\n")
    predictions.to_csv(path.parent / WILD_PREDICTIONS_FILE, index=False)
    return path


def wild_headline(report: dict[str, Any]) -> dict[str, Any] | None:
    """From a metrics.json dict: the wild evaluation's headline metrics plus "detection_rate", or None if the
    model has no wild evaluation (`python -m evaluation.wild` adds it)."""
    section = report.get(WILD_SECTION)
    if not isinstance(section, dict):
        return None
    return {**((section.get("metrics") or {}).get("headline") or {}), "detection_rate": section.get("detection_rate")}
