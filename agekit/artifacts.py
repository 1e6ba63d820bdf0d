"""Every evaluation file of a checkpoints folder, each with one writer and one reader.

    checkpoints/leaderboard.csv               one row per evaluated model      write_leaderboard / read_leaderboard
    checkpoints/<model>/eval/metrics.json     sections "test", "wild", "val"   write_section / read_metrics
    checkpoints/<model>/eval/predictions.csv  clean test faces, one row each   write_predictions / read_predictions
    checkpoints/<model>/eval/predictions_wild.csv  test faces in rendered photos (same reader and writer)
    checkpoints/<model>/README.md             the Hugging Face model card      write_model_card / read_model_card

The rest of a checkpoint folder has its own owner: `config.json` is `agekit.card.ModelCard`, the weights are
`agekit.checkpoint`, `training_log.csv` is `agekit.training_log`. Every reader raises `ArtifactError` (a
ValueError) naming the file and the command that makes it; no reader falls back to another number. Every writer
replaces the file atomically (a temporary file in the same folder, then `os.replace`), and `write_section`
replaces one section of metrics.json and keeps the others, so the evaluation steps can run in any order.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd

from agekit.metrics import CS_YEARS

REPO_ROOT = Path(__file__).resolve().parents[1]
EVAL_DIR = "eval"
METRICS_FILE = "metrics.json"
MODEL_CARD_FILE = "README.md"
LEADERBOARD_FILE = "leaderboard.csv"
# metrics.json's sections. "test" is the clean test-split evaluation; it is stored as the top-level keys below (the
# layout the committed files have), the others under their own key.
TEST_SECTION = "test"
TEST_KEYS = ("format_version", "model", "data", "inference", "metrics", "speed")
WILD_SECTION = "wild"  # the test faces rendered as photos and put through the app's detector
VAL_SECTION = "val"  # validation headline metrics, clean and wild: what the app ranks models by, never test
# All-Age-Faces (real photos, cropped by the app's face path): its test split beside UTKFace's, its val split a
# third ranking source; age and gender only (AAF has no ethnicity label)
AAF_TEST_SECTION, AAF_VAL_SECTION = "aaf_test", "aaf_val"
# face-set sources (evaluation.model_outputs): UTKFace's chips as cropped, the same faces in rendered photos, and
# All-Age-Faces' photos; config.json's age_interval keeps one q per source under these names
CLEAN, RENDERED, AAF = "utkface_clean", "utkface_rendered", "aaf"
SECTIONS = (TEST_SECTION, WILD_SECTION, VAL_SECTION, AAF_TEST_SECTION, AAF_VAL_SECTION)
PREDICTION_TABLES = {TEST_SECTION: "predictions.csv", WILD_SECTION: "predictions_wild.csv",
                     AAF_TEST_SECTION: "predictions_aaf.csv"}
PREDICTION_NAMES = {TEST_SECTION: "test-set predictions", WILD_SECTION: "wild-photo predictions",
                    AAF_TEST_SECTION: "All-Age-Faces test predictions"}
RUN_COMMAND = "python -m evaluation.run --models {model}"
PREDICTION_DIGITS = 7  # float32 outputs carry ~7 significant digits; --check compares to 1e-4 of a number's size
LEADERBOARD_COLUMNS = (
    "name", "family", "architecture", "params", "flops", "input_size", "init_source", "mae", f"cs{CS_YEARS}",
    "age_bin_macro_f1", "gender_accuracy", "ethnicity_accuracy", "ethnicity_macro_f1", "wild_detection_rate",
    "wild_mae", "wild_age_bin_macro_f1", "wild_gender_accuracy", "wild_ethnicity_accuracy", "aaf_mae",
    "aaf_age_bin_macro_f1", "aaf_gender_accuracy", "latency_ms",
    "n_test", "split_hash",
)


class ArtifactError(ValueError):
    """An evaluation file is missing or unreadable; the message names it and the command that writes it."""


def file_sha256(path: str | os.PathLike[str]) -> str:
    """sha256 hex digest of a file's bytes, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def repo_relative(path: str | os.PathLike[str]) -> str:
    """`path` relative to the repository (POSIX separators) when it lies inside it, else absolute; what the
    artifacts record, so that they do not depend on where the repository was checked out."""
    resolved = Path(path).resolve()
    try:
        return resolved.relative_to(REPO_ROOT).as_posix()
    except ValueError:
        return str(resolved)


def write_atomic(path: str | os.PathLike[str], text: str) -> Path:
    """Replace `path` with `text` (UTF-8) in one step: a reader sees the old file or the new one, never half."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8", newline="") as handle:
            handle.write(text)
        os.chmod(temporary, 0o644)  # mkstemp makes the file private; artifacts are ordinary files
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


# ---------------------------------------------------------------- metrics.json

def metrics_path(checkpoint_folder: str | os.PathLike[str]) -> Path:
    """checkpoints/<model>/eval/metrics.json of a checkpoint folder."""
    return Path(checkpoint_folder) / EVAL_DIR / METRICS_FILE


def _missing(path: Path, what: str, model: str) -> ArtifactError:
    return ArtifactError(f"model {model} has no {what} ({path} is missing): run `{RUN_COMMAND.format(model=model)}`")


def read_metrics(checkpoint_folder: str | os.PathLike[str]) -> dict[str, Any]:
    """The whole metrics.json of a checkpoint folder; ArtifactError when it is missing or not a JSON object."""
    path = metrics_path(checkpoint_folder)
    model = Path(checkpoint_folder).name
    if not path.is_file():
        raise _missing(path, "evaluation", model)
    try:
        report = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ArtifactError(f"{path} is not readable JSON ({err}); re-run `{RUN_COMMAND.format(model=model)}`") from None
    if not isinstance(report, dict):
        raise ArtifactError(f"{path} does not hold a JSON object; re-run `{RUN_COMMAND.format(model=model)}`")
    return report


def section_of(report: dict[str, Any], name: str) -> dict[str, Any] | None:
    """One section of a metrics.json dict, or None when that step has not run for the model."""
    if name == TEST_SECTION:
        return {key: report[key] for key in TEST_KEYS if key in report} if "metrics" in report else None
    if name not in SECTIONS:
        raise ValueError(f"unknown metrics.json section {name!r}; choose one of {list(SECTIONS)}")
    section = report.get(name)
    return section if isinstance(section, dict) else None


def with_section(report: dict[str, Any], name: str, section: dict[str, Any]) -> dict[str, Any]:
    """A copy of a metrics.json dict with one section replaced (the test section's keys, or report[name])."""
    if name == TEST_SECTION:
        unknown = set(section) - set(TEST_KEYS)
        if unknown or "metrics" not in section:
            raise ValueError(f"a test section holds {list(TEST_KEYS)} (with 'metrics'), not {sorted(section)}")
        others = {key: value for key, value in report.items() if key not in TEST_KEYS}
        return {**section, **others}
    if name not in SECTIONS:
        raise ValueError(f"unknown metrics.json section {name!r}; choose one of {list(SECTIONS)}")
    return {**report, name: section}


def metrics_json(report: dict[str, Any]) -> str:
    """The exact text of a metrics.json file."""
    return json.dumps(report, indent=2, allow_nan=False) + "\n"


def write_section(checkpoint_folder: str | os.PathLike[str], name: str, section: dict[str, Any]) -> Path:
    """Set one section of checkpoints/<model>/eval/metrics.json, keeping the others (the file is created when
    missing); atomic."""
    path = metrics_path(checkpoint_folder)
    report = read_metrics(checkpoint_folder) if path.is_file() else {}
    return write_atomic(path, metrics_json(with_section(report, name, section)))


def has_section(checkpoint_folder: str | os.PathLike[str], name: str = TEST_SECTION) -> bool:
    """Whether metrics.json exists and holds that section (default: the clean test evaluation)."""
    try:
        return section_of(read_metrics(checkpoint_folder), name) is not None
    except ArtifactError:
        return False


def val_age_mae(report: dict[str, Any]) -> float | None:
    """Mean validation age MAE (years) over UTKFace's clean faces, the same faces in rendered photos and, when the
    model has an aaf_val section, All-Age-Faces' real photos; None without a val section. The app ranks models by
    it and by nothing else (`evaluation.run` writes aaf_val for every model whenever the AAF pack exists)."""
    section = section_of(report, VAL_SECTION)
    if section is None:
        return None
    values = [(section.get(part) or {}).get("age_mae") for part in ("clean", "wild")]
    aaf = section_of(report, AAF_VAL_SECTION)
    if aaf is not None:
        values.append(aaf.get("age_mae"))
    return None if None in values else sum(values) / len(values)


def aaf_headline(report: dict[str, Any]) -> dict[str, Any]:
    """The All-Age-Faces test headline metrics (age, gender), or {} when the model has no aaf_test section."""
    section = section_of(report, AAF_TEST_SECTION)
    return {} if section is None else dict((section.get("metrics") or {}).get("headline") or {})


def wild_headline(report: dict[str, Any]) -> dict[str, Any] | None:
    """From a metrics.json dict: the wild evaluation's headline metrics plus "detection_rate", or None if the
    model has no wild section."""
    section = section_of(report, WILD_SECTION)
    if section is None:
        return None
    return {**((section.get("metrics") or {}).get("headline") or {}), "detection_rate": section.get("detection_rate")}


# ---------------------------------------------------------------- prediction tables

def predictions_path(root: str | os.PathLike[str], model: str, section: str = TEST_SECTION) -> Path:
    """checkpoints/<model>/eval/predictions.csv (section "test") or predictions_wild.csv (section "wild")."""
    return Path(root) / model / EVAL_DIR / PREDICTION_TABLES[section]


def write_predictions(root: str | os.PathLike[str], model: str, frame: pd.DataFrame,
                      section: str = TEST_SECTION) -> Path:
    """One row per face, columns as `agekit.metrics.predictions_frame`, numbers to PREDICTION_DIGITS significant
    digits (the files travel with the working tree: full float text doubled their size); atomic."""
    return write_atomic(predictions_path(root, model, section),
                        frame.to_csv(index=False, float_format=f"%.{PREDICTION_DIGITS}g"))


def read_predictions(root: str | os.PathLike[str], model: str, section: str = TEST_SECTION) -> pd.DataFrame:
    """A model's prediction table; ArtifactError when the model has none."""
    path = predictions_path(root, model, section)
    if not path.is_file():
        raise _missing(path, PREDICTION_NAMES[section], model)
    return pd.read_csv(path)


# ---------------------------------------------------------------- leaderboard.csv

def leaderboard_row(report: dict[str, Any]) -> dict[str, Any]:
    """One leaderboard row from a metrics.json dict (test headline metrics, wild columns when present)."""
    model, headline = report["model"], report["metrics"]["headline"]
    wild, aaf = wild_headline(report) or {}, aaf_headline(report)
    return {
        "name": model["name"], "family": model["family"], "architecture": model["architecture"],
        "params": model["params"], "flops": model["flops"], "input_size": model["input_size"],
        "init_source": model["init_source"], "mae": headline.get("age_mae"),
        f"cs{CS_YEARS}": headline.get(f"age_cs{CS_YEARS}"), "age_bin_macro_f1": headline.get("age_bin_macro_f1"),
        "gender_accuracy": headline.get("gender_accuracy"), "ethnicity_accuracy": headline.get("ethnicity_accuracy"),
        "ethnicity_macro_f1": headline.get("ethnicity_macro_f1"), "wild_detection_rate": wild.get("detection_rate"),
        "wild_mae": wild.get("age_mae"), "wild_age_bin_macro_f1": wild.get("age_bin_macro_f1"),
        "wild_gender_accuracy": wild.get("gender_accuracy"), "wild_ethnicity_accuracy": wild.get("ethnicity_accuracy"),
        "aaf_mae": aaf.get("age_mae"), "aaf_age_bin_macro_f1": aaf.get("age_bin_macro_f1"),
        "aaf_gender_accuracy": aaf.get("gender_accuracy"), "latency_ms": report["speed"]["latency_ms"],
        "n_test": report["metrics"]["n"], "split_hash": report["data"]["manifest_hash"],
    }


def leaderboard_frame(reports: Iterable[dict[str, Any]]) -> pd.DataFrame:
    """The leaderboard of these metrics.json dicts (those with a test section), best test age MAE first."""
    rows = [leaderboard_row(report) for report in reports if section_of(report, TEST_SECTION) is not None]
    board = pd.DataFrame(rows, columns=list(LEADERBOARD_COLUMNS))
    return board.sort_values(["mae", "name"], na_position="last", kind="stable").reset_index(drop=True)


def leaderboard_path(root: str | os.PathLike[str]) -> Path:
    return Path(root) / LEADERBOARD_FILE


def write_leaderboard(root: str | os.PathLike[str], board: pd.DataFrame) -> Path:
    """checkpoints/leaderboard.csv; atomic."""
    return write_atomic(leaderboard_path(root), board.to_csv(index=False))


def read_leaderboard(root: str | os.PathLike[str]) -> pd.DataFrame:
    """checkpoints/leaderboard.csv; ArtifactError when no model has been evaluated yet."""
    path = leaderboard_path(root)
    if not path.is_file():
        raise ArtifactError(f"no leaderboard yet ({path} is missing): `python -m evaluation.run` writes it")
    return pd.read_csv(path)


# ---------------------------------------------------------------- model card (README.md)

def model_card_path(checkpoint_folder: str | os.PathLike[str]) -> Path:
    return Path(checkpoint_folder) / MODEL_CARD_FILE


def write_model_card(checkpoint_folder: str | os.PathLike[str], text: str) -> Path:
    """checkpoints/<model>/README.md, the Hugging Face model card (`evaluation.model_card` writes the text)."""
    return write_atomic(model_card_path(checkpoint_folder), text)


def read_model_card(checkpoint_folder: str | os.PathLike[str]) -> str:
    path = model_card_path(checkpoint_folder)
    if not path.is_file():
        raise _missing(path, "model card", Path(checkpoint_folder).name)
    return path.read_text()
