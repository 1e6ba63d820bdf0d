"""Plotly figures drawn from evaluation artifacts (metrics.json sections and leaderboard.csv).

Every function takes plain data as `agekit.metrics.compute_metrics` and `evaluation.evaluate`
write it, so the app can draw a model's evaluation without re-running anything.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go

COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f")
FAMILY_COLOURS = {"scratch": "#1f77b4", "pretrained": "#ff7f0e", "multitask": "#2ca02c", "consensus": "#9467bd"}
METRIC_LABELS = {
    "mae": "age MAE (years)", "age_mae": "age MAE (years)", "cs5": "CS@5", "age_cs5": "CS@5",
    "age_median_ae": "age median AE (years)", "age_bin_macro_f1": "age-bin macro-F1",
    "age_bin_accuracy": "age-bin accuracy", "gender_accuracy": "gender accuracy",
    "gender_macro_f1": "gender macro-F1", "ethnicity_accuracy": "ethnicity accuracy",
    "ethnicity_macro_f1": "ethnicity macro-F1", "latency_ms": "CPU latency per face (ms)",
    "params": "parameters", "flops": "FLOPs", "name": "model", "family": "family", "input_size": "input (px)",
    "wild_detection_rate": "wild: faces detected", "wild_mae": "wild: age MAE (years)",
    "wild_age_bin_macro_f1": "wild: age-bin macro-F1", "wild_gender_accuracy": "wild: gender accuracy",
    "wild_ethnicity_accuracy": "wild: ethnicity accuracy", "aaf_mae": "real photos (AAF): age MAE (years)",
    "aaf_age_bin_macro_f1": "real photos (AAF): age-bin macro-F1", "aaf_gender_accuracy": "real photos (AAF): gender accuracy",
    "val_age_mae": "validation age MAE (years)", "val_age_bin_f1": "validation age-bin macro-F1",
    "val_gender_acc": "validation gender accuracy", "val_ethnicity_acc": "validation ethnicity accuracy",
    "val_loss": "validation loss", "train_loss": "training loss", "images_per_s": "training images/s",
}
LOWER_IS_BETTER = {"mae", "age_mae", "age_median_ae", "wild_mae", "aaf_mae", "latency_ms", "params", "flops"}


def metric_label(metric: str) -> str:
    """A metric's name for people ("age_mae" → "age MAE (years)")."""
    return METRIC_LABELS.get(metric, metric.replace("_", " "))


def normalise_rows(matrix: Sequence[Sequence[float]] | np.ndarray) -> np.ndarray:
    """Divide each confusion-matrix row by its total; rows with no faces stay all zero."""
    counts = np.asarray(matrix, dtype=np.float64)
    totals = counts.sum(axis=1, keepdims=True)
    return np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0)


def confusion_matrix_figure(confusion: Mapping[str, Any], normalize: bool = False, title: str = "") -> go.Figure:
    """Heatmap of a confusion matrix {"labels", "matrix"} (rows true, columns predicted), cells annotated.

    normalize=True shows each row as shares of that true class (rows sum to 1); cell text then
    shows the share and the count.
    """
    labels = [str(name) for name in confusion["labels"]]
    counts = np.asarray(confusion["matrix"], dtype=np.int64)
    if counts.shape != (len(labels), len(labels)):
        raise ValueError(f"confusion matrix has shape {counts.shape} for {len(labels)} labels")
    if normalize:
        z = normalise_rows(counts)
        text = [[f"{share:.0%}<br>({count})" for share, count in zip(zr, cr)] for zr, cr in zip(z, counts)]
    else:
        z = counts
        text = [[str(count) for count in row] for row in counts]
    fig = go.Figure(go.Heatmap(
        z=z, x=labels, y=labels, text=text, texttemplate="%{text}", colorscale="Blues",
        zmin=0, zmax=1 if normalize else max(int(counts.max()), 1),
        hovertemplate="true %{y}<br>predicted %{x}<br>%{text}<extra></extra>",
    ))
    fig.update_layout(
        title=title or ("confusion matrix (row-normalised)" if normalize else "confusion matrix (counts)"),
        xaxis={"title": "predicted", "type": "category"},
        yaxis={"title": "true", "type": "category", "autorange": "reversed"},
    )
    return fig


def per_class_figure(per_class: Sequence[Mapping[str, Any]], title: str = "per-class precision / recall / F1") -> go.Figure:
    """Grouped bars of precision, recall and F1 per class; hover shows support (true faces)."""
    classes = [str(row["class"]) for row in per_class]
    support = [int(row["support"]) for row in per_class]
    fig = go.Figure([
        go.Bar(name=metric, x=classes, y=[float(row[metric]) for row in per_class], customdata=support,
               hovertemplate=f"%{{x}}<br>{metric} %{{y:.3f}}<br>support %{{customdata}}<extra></extra>")
        for metric in ("precision", "recall", "f1")
    ])
    fig.update_layout(title=title, barmode="group", yaxis={"range": [0, 1], "title": "score"},
                      xaxis={"type": "category", "title": "class"})
    return fig


def mae_by_age_figure(curves: Mapping[str, Sequence[Mapping[str, Any]]], title: str = "age MAE by true age") -> go.Figure:
    """MAE per true age (lines, one per model) over the number of test faces per age (grey bars, right axis).

    curves: model name -> metrics["age"]["mae_by_age"] rows {"age", "count", "mae"}. Counts are
    drawn from the first model (all models share the test split).
    """
    if not curves:
        raise ValueError("no MAE-by-age curves to draw: pass {model name: metrics['age']['mae_by_age']}")
    first = next(iter(curves.values()))
    traces: list[go.BaseTraceType] = [go.Bar(
        name="test faces", x=[row["age"] for row in first], y=[row["count"] for row in first],
        yaxis="y2", marker_color="rgba(150,150,150,0.35)",
        hovertemplate="age %{x}: %{y} faces<extra></extra>",
    )]
    for name, rows in curves.items():
        traces.append(go.Scatter(
            name=name, x=[row["age"] for row in rows], y=[row["mae"] for row in rows], mode="lines+markers",
            customdata=[row["count"] for row in rows],
            hovertemplate=f"{name}<br>age %{{x}}: MAE %{{y:.2f}} years (%{{customdata}} faces)<extra></extra>",
        ))
    fig = go.Figure(traces)
    fig.update_layout(
        title=title, xaxis={"title": "true age (years)"},
        yaxis={"title": "MAE (years)", "rangemode": "tozero"},
        yaxis2={"title": "test faces", "overlaying": "y", "side": "right", "showgrid": False, "rangemode": "tozero"},
        legend={"orientation": "h"},
    )
    return fig


def reliability_figure(calibration: Mapping[str, Any], title: str = "reliability diagram") -> go.Figure:
    """Accuracy vs mean confidence per confidence bin, with the diagonal of perfect calibration.

    calibration: a metrics.json "calibration" block {"ece", "bins": [{"lower", "upper", "count",
    "confidence", "accuracy"}]}. Empty bins are left out.
    """
    filled = [b for b in calibration["bins"] if b["count"] > 0]
    centres = [(b["lower"] + b["upper"]) / 2 for b in filled]
    width = [b["upper"] - b["lower"] for b in filled]
    fig = go.Figure([
        go.Bar(name="accuracy", x=centres, y=[b["accuracy"] for b in filled], width=width,
               customdata=[[b["count"], b["confidence"]] for b in filled], marker_color="#1f77b4",
               hovertemplate=("confidence %{customdata[1]:.2f}<br>accuracy %{y:.2f}"
                              "<br>%{customdata[0]} faces<extra></extra>")),
        go.Scatter(name="mean confidence", x=centres, y=[b["confidence"] for b in filled], mode="markers",
                   marker={"color": "#d62728", "symbol": "line-ew-open", "size": 14}),
        go.Scatter(name="perfect calibration", x=[0, 1], y=[0, 1], mode="lines",
                   line={"dash": "dash", "color": "grey"}),
    ])
    fig.update_layout(title=f"{title} (ECE {calibration['ece']:.3f})",
                      xaxis={"title": "confidence (top-1 probability)", "range": [0, 1]},
                      yaxis={"title": "accuracy", "range": [0, 1]}, bargap=0)
    return fig


def fairness_figure(groups_by_model: Mapping[str, Sequence[Mapping[str, Any]]], metric: str = "age_mae",
                    title: str = "") -> go.Figure:
    """Bars of one headline metric per demographic group, one bar series per model.

    groups_by_model: model name -> metrics["fairness"][attribute]["groups"] rows {"group", "count", metric...}.
    Groups with no faces (None) are drawn as gaps.
    """
    if not groups_by_model:
        raise ValueError("no fairness slices to draw: pass {model name: metrics['fairness'][attribute]['groups']}")
    fig = go.Figure([
        go.Bar(name=name, x=[row["group"] for row in rows], y=[row.get(metric) for row in rows],
               customdata=[row["count"] for row in rows],
               hovertemplate=f"{name}<br>%{{x}}: %{{y:.3f}} (%{{customdata}} faces)<extra></extra>")
        for name, rows in groups_by_model.items()
    ])
    fig.update_layout(title=title or f"{metric_label(metric)} per group", barmode="group",
                      yaxis={"title": metric_label(metric), "rangemode": "tozero"}, xaxis={"type": "category"})
    return fig


def leaderboard_figure(leaderboard: pd.DataFrame, metric: str = "mae") -> go.Figure:
    """Horizontal bars of one leaderboard column per model, best at the top, coloured by family."""
    if metric not in leaderboard.columns:
        raise ValueError(f"leaderboard has no column {metric!r}; columns: {list(leaderboard.columns)}")
    rows = leaderboard.dropna(subset=[metric]).sort_values(metric, ascending=metric in LOWER_IS_BETTER)
    families = rows["family"].astype(str) if "family" in rows else pd.Series([""] * len(rows), index=rows.index)
    # one trace per family, so the legend says what the colours mean; the y order stays the ranking
    fig = go.Figure([go.Bar(
        name=family or "unknown family", x=rows.loc[families == family, metric].tolist(),
        y=rows.loc[families == family, "name"].tolist(), orientation="h",
        marker_color=FAMILY_COLOURS.get(family, "#7f7f7f"), text=[f"{v:.3g}" for v in rows.loc[families == family, metric]],
        textposition="auto", hovertemplate=f"%{{y}} ({family})<br>%{{x}}<extra></extra>",
    ) for family in dict.fromkeys(families)])
    fig.update_layout(title=f"leaderboard: {metric_label(metric)}", xaxis={"title": metric_label(metric)},
                      yaxis={"type": "category", "autorange": "reversed", "categoryorder": "array",
                             "categoryarray": rows["name"].tolist()},
                      legend={"title": {"text": "family"}}, barmode="overlay")
    return fig


def training_curves_figure(logs: Mapping[str, pd.DataFrame], metric: str = "val_age_mae",
                           families: Mapping[str, str] | None = None) -> go.Figure:
    """One line per model of a training_log.csv column over epochs; each model's best epoch is starred.

    logs: model name -> its training log (agekit.training_log.read_log). Models without the column are left
    out; families (model name -> scratch / pretrained / multitask) picks each line's dash style.
    """
    drawn = {name: log for name, log in logs.items() if metric in log.columns and log[metric].notna().any()}
    if not drawn:
        raise ValueError(f"no training log has a {metric!r} column to draw")
    lower = metric in LOWER_IS_BETTER or metric.endswith(("_loss", "_mae"))
    dashes = {"scratch": "dot", "pretrained": "solid", "multitask": "dash"}
    traces: list[go.BaseTraceType] = []
    for index, (name, log) in enumerate(drawn.items()):
        rows = log.dropna(subset=[metric])
        colour = COLOURS[index % len(COLOURS)]
        best = rows[metric].idxmin() if lower else rows[metric].idxmax()
        traces.append(go.Scatter(
            name=name, x=rows["epoch"].tolist(), y=rows[metric].tolist(), mode="lines+markers",
            line={"color": colour, "dash": dashes.get((families or {}).get(name, ""), "solid")},
            hovertemplate=f"{name}<br>epoch %{{x}}: %{{y:.4g}}<extra></extra>", legendgroup=name,
        ))
        traces.append(go.Scatter(
            name=f"{name} best", x=[int(rows.at[best, "epoch"])], y=[float(rows.at[best, metric])], mode="markers",
            marker={"symbol": "star", "size": 14, "color": colour}, showlegend=False, legendgroup=name,
            hovertemplate=f"{name}: best epoch %{{x}}, %{{y:.4g}}<extra></extra>",
        ))
    fig = go.Figure(traces)
    # the legend under the "epoch" axis title, not over it
    fig.update_layout(title=f"training curves: {metric_label(metric)}", xaxis={"title": "epoch", "dtick": 1},
                      yaxis={"title": metric_label(metric)},
                      legend={"orientation": "h", "yanchor": "top", "y": -0.22}, margin={"b": 110})
    return fig
