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
# metrics.json key of the validation headline metrics, clean and wild (evaluation.wild --split val): what the app
# ranks models by, so that choosing the headline model never looks at the test split.
VAL_SECTION = "val"


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


def metrics_path(checkpoint_folder: str | Path) -> Path:
    """checkpoints/<model>/eval/metrics.json of a checkpoint folder."""
    return Path(checkpoint_folder) / EVAL_DIR / METRICS_FILE


def has_metrics(checkpoint_folder: str | Path) -> bool:
    """Whether the clean evaluation (metrics.json) exists for this checkpoint folder."""
    return metrics_path(checkpoint_folder).is_file()


def _write_section(checkpoint_folder: str | Path, key: str, section: dict[str, Any]) -> Path:
    """Set metrics.json[key] (replacing an older one); the clean evaluation must exist (it owns the rest)."""
    path = metrics_path(checkpoint_folder)
    if not path.is_file():
        raise ValueError(f"{path} does not exist: run `python -m evaluation.evaluate` before the wild evaluation")
    report = json.loads(path.read_text())
    report[key] = section
    path.write_text(json.dumps(report, indent=2, allow_nan=False) + "\n")
    return path


def write_wild(checkpoint_folder: str | Path, section: dict[str, Any], predictions: pd.DataFrame) -> Path:
    """Put the wild-photo evaluation into checkpoints/<model>/eval/metrics.json (replacing an older one) and
    write predictions_wild.csv; the clean evaluation must exist (it owns the rest of metrics.json)."""
    path = _write_section(checkpoint_folder, WILD_SECTION, section)
    predictions.to_csv(path.parent / WILD_PREDICTIONS_FILE, index=False)
    return path


def write_val(checkpoint_folder: str | Path, clean: dict[str, Any], wild: dict[str, Any] | None,
              detection_rate: float) -> Path:
    """Store the validation headline metrics (clean faces, and the same faces rendered as photos) in metrics.json."""
    return _write_section(checkpoint_folder, VAL_SECTION,
                          {"clean": clean, "wild": wild, "detection_rate": detection_rate})


def val_age_mae(report: dict[str, Any]) -> float | None:
    """Mean of the validation age MAE on clean faces and on faces in rendered photos (years), or None without a
    val section (`python -m evaluation.wild --split val` adds it)."""
    section = report.get(VAL_SECTION)
    if not isinstance(section, dict):
        return None
    values = [(section.get(part) or {}).get("age_mae") for part in ("clean", "wild")]
    return None if None in values else sum(values) / 2


def wild_headline(report: dict[str, Any]) -> dict[str, Any] | None:
    """From a metrics.json dict: the wild evaluation's headline metrics plus "detection_rate", or None if the
    model has no wild evaluation (`python -m evaluation.wild` adds it)."""
    section = report.get(WILD_SECTION)
    if not isinstance(section, dict):
        return None
    return {**((section.get("metrics") or {}).get("headline") or {}), "detection_rate": section.get("detection_rate")}
