"""Test-set tab: a model's committed evaluation (confusion, per-class, MAE by age, fairness, calibration), leaderboard.

Everything is drawn from checkpoints/<model>/eval/metrics.json and checkpoints/leaderboard.csv;
no dataset is needed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr
import pandas as pd
import plotly.graph_objects as go

from agekit import plots
from agekit.artifacts import (
    AAF_TEST_SECTION,
    EVAL_DIR,
    TEST_SECTION,
    WILD_SECTION,
    ArtifactError,
    has_section,
    metrics_path,
    read_leaderboard,
    read_metrics,
    read_predictions,
    section_of,
    wild_headline,
)
from agekit.bootstrap import LEVEL, format_difference, paired_differences
from agekit.card import ModelCard
from agekit.training_log import read_log
from agekit.ui.guard import guarded
from agekit.ui.model_info import METRIC_NAMES, metrics_lines, metrics_section

# UI task name -> metrics.json section of that classification task
TASK_SECTIONS: dict[str, str] = {"age bins": "age_bin", "gender": "gender", "ethnicity": "ethnicity"}
CONFUSION_VIEWS = ("counts", "row-normalised")
FAIRNESS_ATTRIBUTES = ("gender", "ethnicity")
FAIRNESS_METRICS = ("age_mae", "age_cs5", "age_bin_accuracy", "gender_accuracy", "ethnicity_accuracy",
                    "ethnicity_macro_f1")
TRAINING_CURVE_METRICS = ("val_age_mae", "val_age_bin_f1", "val_gender_acc", "val_ethnicity_acc", "val_loss",
                          "train_loss", "images_per_s")
NO_SECOND_MODEL = "(none)"
DIFFERENCE_RESAMPLES = 1000
PANEL_OUTPUTS = 5  # headline markdown, confusion matrix, per-class bars, per-class table, reliability diagram
PER_CLASS_COLUMNS = ("class", "precision", "recall", "f1", "support", "predicted")


@dataclass
class ModelEval:
    """One model's committed evaluation artifacts."""

    name: str
    metrics: dict[str, Any]  # metrics.json's "metrics" block, as agekit.metrics.compute_metrics returns it
    folder: Path  # checkpoints/<name>/eval
    report: dict[str, Any]  # the whole metrics.json (model, data provenance, speed, metrics)


def read_model_eval(root: str | Path, name: str) -> ModelEval:
    """A model's committed test evaluation; ArtifactError (a ValueError) when it is missing or unreadable."""
    folder = Path(root) / name
    report = read_metrics(folder)
    if section_of(report, TEST_SECTION) is None:
        raise ArtifactError(f"model {name} has no test evaluation in {metrics_path(folder)}: run "
                            f"`python -m evaluation.run --models {name}`")
    return ModelEval(name=name, metrics=metrics_section(report), folder=metrics_path(folder).parent, report=report)


def model_choices(root: str | Path, loaded: list[str] | None = None) -> list[str]:
    """Checkpoint folders under `root` (with config.json or eval artifacts), loaded models first."""
    root = Path(root)
    names = list(loaded or [])
    if root.is_dir():
        for folder in sorted(p for p in root.iterdir() if p.is_dir()):
            if folder.name not in names and ((folder / "config.json").is_file() or (folder / EVAL_DIR).is_dir()):
                names.append(folder.name)
    return names


def has_eval(root: str | Path, name: str) -> bool:
    return has_section(Path(root) / name)


def default_model(root: str | Path, names: list[str]) -> str | None:
    """The model the tab opens on: the leaderboard's first (best age MAE) if it is listed, else the first
    model with eval artifacts, else the first model."""
    try:
        board = read_leaderboard(root)
        ranked = [n for n in board["name"].astype(str) if n in names]
    except (ValueError, KeyError):
        ranked = []
    evaluated = [n for n in names if has_eval(root, n)]
    return (ranked or evaluated or names or [None])[0]


# ---------------------------------------------------------------- one model's panel

def headline_markdown(ev: ModelEval) -> str:
    """Model name, test-set size, headline metrics, size and CPU speed."""
    n = ev.metrics.get("n")
    head = f"#### {ev.name}" + (f" — {n:,} test faces" if isinstance(n, int) else "")
    lines = [head, " · ".join(metrics_lines(ev.metrics, limit=10))]
    model, speed = ev.report.get("model", {}), ev.report.get("speed", {})
    facts = []
    if isinstance(model.get("params"), int):
        facts.append(f"{model['params']:,} parameters")
    if isinstance(model.get("flops"), (int, float)):
        facts.append(f"{model['flops'] / 1e6:.0f} MFLOPs")
    if isinstance(speed.get("latency_ms"), (int, float)):
        facts.append(f"{speed['latency_ms']:.1f} ms per face on CPU")
    if facts:
        lines.append(" · ".join(facts))
    lines += [line for line in (wild_markdown(ev.report), aaf_markdown(ev.report)) if line]
    return "\n\n".join(lines)


def aaf_markdown(report: dict[str, Any]) -> str:
    """'Real photos (All-Age-Faces test)' line of the headline ("" for a model without the aaf step)."""
    section = section_of(report, AAF_TEST_SECTION)
    if section is None:
        return ""
    metrics = section.get("metrics") or {}
    headline, interval = metrics.get("headline") or {}, metrics.get("interval") or {}
    parts = [f"{label} {fmt.format(headline[key])}" for key, label, fmt in WILD_SHOWN if headline.get(key) is not None]
    if interval.get("coverage") is not None:
        parts.append(f"80 % interval covers {interval['coverage']:.1%}")
    return (f"**Real photos** (All-Age-Faces test, {metrics.get('n', 0):,} faces as the app crops them; no "
            "ethnicity label): " + " · ".join(parts))


WILD_SHOWN = (("age_mae", "age MAE", "{:.2f}"), ("age_bin_macro_f1", "age-bin macro-F1", "{:.1%}"),
              ("gender_accuracy", "gender", "{:.1%}"), ("ethnicity_accuracy", "ethnicity", "{:.1%}"))


def wild_markdown(report: dict[str, Any]) -> str:
    """'Clean → wild photos' line of the headline ("" for a model without `python -m evaluation.wild`)."""
    wild = wild_headline(report)
    if wild is None:
        return ""
    clean = metrics_section(report).get("headline", {})
    crops = "aligned" if report[WILD_SECTION].get("align") else "box"
    parts = [f"detection {wild['detection_rate']:.1%}"] if wild.get("detection_rate") is not None else []
    parts += [f"{label} {fmt.format(clean[key])} → {fmt.format(wild[key])}" for key, label, fmt in WILD_SHOWN
              if clean.get(key) is not None and wild.get(key) is not None]
    return (f"**Clean → wild photos** (each test face re-rendered as a photo and run through the app's detector, "
            f"{crops} crops): " + " · ".join(parts))


def per_class_frame(section: dict[str, Any]) -> pd.DataFrame:
    """Per-class precision / recall / F1 / support table of one task."""
    frame = pd.DataFrame(section["per_class"])
    columns = [c for c in PER_CLASS_COLUMNS if c in frame.columns]
    return frame[columns].round(3)


def model_panel(ev: ModelEval, task: str, view: str) -> list[Any]:
    """[headline markdown, confusion figure, per-class figure, per-class table, reliability figure] for one task."""
    section_name = TASK_SECTIONS.get(task)
    if section_name is None:
        raise ValueError(f"unknown task {task!r}; choose one of {list(TASK_SECTIONS)}")
    section = ev.metrics.get(section_name)
    if not section:
        return [headline_markdown(ev) + f"\n\n{ev.name} does not predict {task}.", None, None, None, None]
    normalize = view == CONFUSION_VIEWS[1]
    title = f"{ev.name}: {task}"
    return [
        headline_markdown(ev),
        plots.confusion_matrix_figure(section["confusion"], normalize=normalize,
                                      title=f"{title} confusion ({view})"),
        plots.per_class_figure(section["per_class"], title=f"{title} precision / recall / F1"),
        per_class_frame(section),
        plots.reliability_figure(section["calibration"], title=f"{title} reliability"),
    ]


def empty_panel(message: str = "") -> list[Any]:
    return [message, None, None, None, None]


def difference_markdown(root: str | Path, model_a: str, model_b: str) -> str:
    """A − B on every metric both models have, with paired-bootstrap intervals over the same test faces."""
    deltas = paired_differences(read_predictions(root, model_a), read_predictions(root, model_b),
                                resamples=DIFFERENCE_RESAMPLES)
    cells = [f"{METRIC_NAMES.get(m, m)} {format_difference(m, d)}" for m, d in deltas.items()]
    return (f"**{model_a} − {model_b}** on the same test faces, with {LEVEL:.0%} paired-bootstrap intervals "
            f"({DIFFERENCE_RESAMPLES:,} resamples; ✔ = the interval excludes 0, so the gap is not luck of the "
            "split):\n\n" + " · ".join(cells))


# ---------------------------------------------------------------- figures across models

def mae_by_age(evals: list[ModelEval]) -> go.Figure | None:
    curves = {ev.name: ev.metrics["age"]["mae_by_age"] for ev in evals if "age" in ev.metrics}
    return plots.mae_by_age_figure(curves) if curves else None


def fairness(evals: list[ModelEval], attribute: str, metric: str) -> tuple[go.Figure | None, pd.DataFrame | None]:
    """Bars of `metric` per `attribute` group for each model, and the same numbers as a table (with gaps)."""
    groups = {ev.name: ev.metrics["fairness"][attribute]["groups"] for ev in evals
              if attribute in ev.metrics.get("fairness", {})}
    groups = {name: rows for name, rows in groups.items() if any(row.get(metric) is not None for row in rows)}
    if not groups:
        return None, None
    figure = plots.fairness_figure(groups, metric=metric, title=f"{METRIC_NAMES.get(metric, metric)} per {attribute}")
    records = []
    for ev in evals:
        if ev.name not in groups:
            continue
        record: dict[str, Any] = {"model": ev.name}
        for row in groups[ev.name]:
            value = row.get(metric)
            record[f"{row['group']} ({row['count']})"] = None if value is None else round(float(value), 3)
        gap = ev.metrics["fairness"][attribute].get("gaps", {}).get(metric)
        record["largest gap"] = None if gap is None else round(float(gap), 3)
        records.append(record)
    return figure, pd.DataFrame(records)


# ---------------------------------------------------------------- training curves

def model_family(root: str | Path, name: str) -> str:
    """scratch / pretrained / multitask from the model's config.json; "" when it has none."""
    try:
        return ModelCard.load(Path(root) / name).family
    except (ValueError, OSError):
        return ""


def training_curves(root: str | Path, names: list[str], metric: str) -> tuple[go.Figure | None, list[str]]:
    """(figure of `metric` per epoch for every model with a training log, one note per model without one)."""
    if metric not in TRAINING_CURVE_METRICS:
        raise ValueError(f"unknown training metric {metric!r}; choose one of {list(TRAINING_CURVE_METRICS)}")
    logs: dict[str, pd.DataFrame] = {}
    notes: list[str] = []
    for name in names:
        try:
            logs[name] = read_log(Path(root) / name)
        except ValueError as err:
            notes.append(str(err))
    drawn = {name: log for name, log in logs.items() if metric in log.columns}
    if not drawn:
        return None, [*notes, f"no training log has {metric}"]
    families = {name: model_family(root, name) for name in drawn}
    return plots.training_curves_figure(drawn, metric, families), notes


# ---------------------------------------------------------------- leaderboard

def leaderboard_metrics(frame: pd.DataFrame) -> list[str]:
    """Numeric leaderboard columns a user may rank by, age MAE first."""
    numeric = [c for c in frame.columns if pd.api.types.is_numeric_dtype(frame[c]) and frame[c].notna().any()]
    return sorted(numeric, key=lambda c: c != "mae")


# Leaderboard columns the table shows, in order: what fits a laptop screen uncut. The rest (macro-F1s, every wild
# metric, weight files, split hashes) stays in checkpoints/leaderboard.csv and each model's headline above.
LEADERBOARD_SHOWN = ("name", "family", "params", "mae", "cs5", "age_bin_macro_f1", "gender_accuracy",
                     "ethnicity_accuracy", "wild_mae", "aaf_mae", "aaf_gender_accuracy", "latency_ms")


def leaderboard_cell(column: str, value: Any) -> str:
    """One leaderboard value as the table shows it: counts with thousands separators, FLOPs in millions, MAE and
    latency to 2 decimals, rates as percentages."""
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return ""
    if column == "params":
        return f"{int(value):,}"
    if column == "flops":
        return f"{value / 1e6:,.1f} M"
    if column in ("mae", "wild_mae", "aaf_mae", "latency_ms"):
        return f"{value:.2f}"
    if isinstance(value, float):
        return f"{value:.1%}"
    return str(value)


def leaderboard_display(frame: pd.DataFrame) -> pd.DataFrame:
    """The leaderboard for the page: LEADERBOARD_SHOWN columns with readable names (plots.metric_label) and values
    (leaderboard_cell)."""
    columns = [c for c in LEADERBOARD_SHOWN if c in frame.columns]
    return pd.DataFrame({plots.metric_label(c): [leaderboard_cell(c, v) for v in frame[c]] for c in columns})


def leaderboard_outputs(root: str | Path, metric: str | None) -> tuple[go.Figure | None, pd.DataFrame | None, str]:
    """(bar figure of `metric`, the whole table rounded, message) from checkpoints/leaderboard.csv."""
    try:
        frame = read_leaderboard(root)
    except ValueError as err:
        return None, None, str(err)
    metrics = leaderboard_metrics(frame)
    if not metrics:
        return None, leaderboard_display(frame), ""
    metric = metric if metric in metrics else metrics[0]
    return plots.leaderboard_figure(frame, metric), leaderboard_display(frame), ""


# ---------------------------------------------------------------- callbacks (wired in agekit.ui.blocks)

def _testset_failed(status: str) -> list[Any]:
    return [*empty_panel(), *empty_panel(), gr.update(visible=False), None, None, None, status]


@guarded(_testset_failed)
def on_testset(root: str | Path, model_a: str | None, model_b: str | None, task: str, view: str,
               attribute: str, metric: str) -> list[Any]:
    """Model / task / view changed → [panel A (5), panel B (5), panel B visibility, MAE by age, fairness figure,
    fairness table, status]."""
    notes: list[str] = []
    evals: list[ModelEval] = []
    panels: list[Any] = []
    for name in (model_a, model_b):
        if not name or name == NO_SECOND_MODEL:
            panels += empty_panel()
            continue
        try:
            ev = read_model_eval(root, name)
        except ValueError as err:
            notes.append(str(err))
            panels += empty_panel(f"#### {name}\n\n{err}")
            continue
        evals.append(ev)
        panels += model_panel(ev, task, view)
    if attribute not in FAIRNESS_ATTRIBUTES:
        raise ValueError(f"unknown group attribute {attribute!r}; choose one of {list(FAIRNESS_ATTRIBUTES)}")
    fairness_figure, fairness_table = fairness(evals, attribute, metric)
    second_visible = gr.update(visible=bool(model_b) and model_b != NO_SECOND_MODEL)
    return [*panels, second_visible, mae_by_age(evals), fairness_figure, fairness_table,
            "\n\n".join(f"⚠️ {n}" for n in notes)]


@guarded(lambda status: status)
def on_difference(root: str | Path, model_a: str | None, model_b: str | None) -> str:
    """Either model changed → the A − B markdown ("" without two different models). Its own event, so the
    bootstrap (~0.2 s) runs when the pair changes, not on every task / view / fairness change."""
    if not model_a or not model_b or model_b == NO_SECOND_MODEL or model_a == model_b:
        return ""
    return difference_markdown(root, model_a, model_b)


def _leaderboard_failed(status: str) -> list[Any]:
    return [None, None, status]


@guarded(_leaderboard_failed)
def on_leaderboard(root: str | Path, metric: str | None) -> list[Any]:
    """Leaderboard metric changed → [figure, table, status]."""
    figure, table, message = leaderboard_outputs(root, metric)
    return [figure, table, f"⚠️ {message}" if message else ""]


def _curves_failed(status: str) -> list[Any]:
    return [None, status]


@guarded(_curves_failed)
def on_training_curves(root: str | Path, names: list[str], metric: str) -> list[Any]:
    """Training metric changed → [figure, status]."""
    figure, notes = training_curves(root, names, metric)
    return [figure, "\n\n".join(f"⚠️ {n}" for n in notes)]
