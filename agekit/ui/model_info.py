"""What the app says about a checkpoint: its card, its committed test metrics and its rank."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from agekit.artifacts import metrics_path, read_metrics, val_age_mae
from agekit.card import ModelCard

# The headline numbers shown next to each model, in this order, when metrics.json has them.
HEADLINE_METRICS = ("age_mae", "age_cs5", "age_bin_accuracy", "gender_accuracy", "ethnicity_accuracy",
                    "ethnicity_macro_f1")
METRIC_NAMES = {"age_mae": "age MAE (years)", "age_median_ae": "age median AE (years)", "age_cs5": "age CS@5",
                "age_bin_accuracy": "age-bin accuracy", "age_bin_macro_f1": "age-bin macro-F1",
                "gender_accuracy": "gender accuracy", "gender_macro_f1": "gender macro-F1",
                "ethnicity_accuracy": "ethnicity accuracy", "ethnicity_macro_f1": "ethnicity macro-F1"}


def committed_metrics(folder: str | Path) -> dict[str, Any] | None:
    """A model's metrics.json (`agekit.artifacts.read_metrics`), or None when it has not been evaluated: the page
    then says so. A damaged file raises ArtifactError, as everywhere."""
    return read_metrics(folder) if metrics_path(folder).is_file() else None


def ranking_mae(metrics: dict[str, Any] | None) -> float | None:
    """The number models are ranked by on the page, best first (years): the validation age MAE, mean of clean
    faces and faces in rendered photos (`artifacts.val_age_mae`), so that picking the headline model never looks
    at the test split. None when the model has no val section: it is then listed as not ranked, after the ranked
    ones; there is no fallback to a test number."""
    return val_age_mae(metrics) if metrics else None


def metrics_section(report: dict[str, Any]) -> dict[str, Any]:
    """The compute_metrics part of metrics.json (evaluation nests it under "metrics" beside model/data/speed)."""
    inner = report.get("metrics")
    return inner if isinstance(inner, dict) else report


def flat_scalars(data: dict[str, Any], prefix: str = "") -> dict[str, float]:
    """Numeric leaves of a nested dict as {"a.b": value} (lists are skipped)."""
    out: dict[str, float] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, bool):
            continue
        if isinstance(value, (int, float)):
            out[name] = float(value)
        elif isinstance(value, dict):
            out.update(flat_scalars(value, prefix=f"{name}."))
    return out


def metrics_lines(metrics: dict[str, Any] | None, limit: int = 8) -> list[str]:
    """A few "name: value" lines of test metrics, headline metrics first."""
    if not metrics:
        return ["no test-set evaluation committed for this model"]
    section = metrics_section(metrics)
    scalars = flat_scalars(section.get("headline", section))
    ordered = [k for k in HEADLINE_METRICS if k in scalars]
    ordered += [k for k in scalars if k not in ordered and any(s in k for s in ("mae", "accuracy", "f1"))]
    if not ordered:
        ordered = list(scalars)
    return [f"{METRIC_NAMES.get(k, k)} {scalars[k]:.3g}" for k in ordered[:limit]]


def model_card_markdown(card: ModelCard, metrics: dict[str, Any] | None) -> str:
    """Markdown for the "about this model" accordion: identity, provenance and test metrics."""
    rows = [
        f"**{card.name}** — {card.family} · `{card.architecture}` · {card.params:,} parameters",
        (f"tasks: {', '.join(card.tasks)} · input {card.input_size}px{' grayscale' if card.in_chans == 1 else ''}"
         f"{' · one backbone per task' if not card.shared_backbone else ''}"),
        f"initial weights: {card.init_source}",
    ]
    if card.description:
        rows.append(card.description)
    rows.append("test set: " + " · ".join(metrics_lines(metrics)))
    return "\n\n".join(rows)
