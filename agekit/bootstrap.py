"""Bootstrap confidence intervals for test metrics, and for the difference between two models on the same faces.

    intervals = metric_intervals(frame)                        # {"age_mae": Interval(5.38, 5.19, 5.57), ...}
    delta = paired_differences(frame_a, frame_b)["age_mae"]    # a - b, resampling the same faces for both

`frame` is a predictions table (agekit.metrics). Every resample draws the test faces with replacement
(percentile bootstrap); a paired difference uses the same draw for both models, so it measures whether one
model beats the other on these faces rather than how lucky the split was for each.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from agekit.metrics import CLASSIFICATION_TASKS, CS_YEARS

RESAMPLES = 2000
LEVEL = 0.95


@dataclass(frozen=True)
class Interval:
    """A point estimate on all faces and its bootstrap percentile interval."""

    estimate: float
    low: float
    high: float

    def excludes_zero(self) -> bool:
        return self.low > 0 or self.high < 0

    def format(self, percent: bool = False, signed: bool = False) -> str:
        scale, unit, digits = (100.0, " pt" if signed else "%", 1) if percent else (1.0, "", 2)
        sign = "+" if signed else ""
        return (f"{self.estimate * scale:{sign}.{digits}f}{unit} "
                f"[{self.low * scale:{sign}.{digits}f}, {self.high * scale:{sign}.{digits}f}]")


def format_metric(metric: str, interval: Interval, signed: bool = False) -> str:
    """Years for age MAE, percent (points when signed) for the rates."""
    return interval.format(percent=metric != "age_mae", signed=signed)


def format_difference(metric: str, delta: Interval) -> str:
    """A signed difference with its interval, ✔ when the interval excludes 0: "-1.07 [-1.28, -0.87] ✔"."""
    return format_metric(metric, delta, signed=True) + (" ✔" if delta.excludes_zero() else "")


# A statistic maps an index matrix of shape (resamples, faces) into one table to one value per resample.
Statistic = Callable[[np.ndarray], np.ndarray]


def _mean_of(values: np.ndarray, index: np.ndarray) -> np.ndarray:
    return values[index].mean(axis=1)


def _macro_f1(truth: np.ndarray, pred: np.ndarray, n_classes: int, index: np.ndarray) -> np.ndarray:
    """Macro-F1 of every resample at once, as scikit-learn computes it (zero_division=0, averaged over the
    classes present in the resample's truth or predictions)."""
    resamples = index.shape[0]
    cells = (np.arange(resamples)[:, None] * n_classes * n_classes
             + truth[index] * n_classes + pred[index])
    confusion = np.bincount(cells.ravel(), minlength=resamples * n_classes * n_classes)
    confusion = confusion.reshape(resamples, n_classes, n_classes)
    hits = np.diagonal(confusion, axis1=1, axis2=2)
    true_counts, pred_counts = confusion.sum(axis=2), confusion.sum(axis=1)
    present = (true_counts + pred_counts) > 0
    f1 = np.divide(2 * hits, true_counts + pred_counts, out=np.zeros(hits.shape), where=present)
    return (f1 * present).sum(axis=1) / present.sum(axis=1)


def statistics(frame: pd.DataFrame) -> dict[str, Statistic]:
    """The headline metrics of the tasks present in `frame`, named as in metrics.json's "headline"."""
    stats: dict[str, Statistic] = {}
    if "pred_age" in frame.columns:
        errors = frame["age_abs_error"].to_numpy(dtype=np.float64)
        stats["age_mae"] = lambda index: _mean_of(errors, index)
        stats[f"age_cs{CS_YEARS}"] = lambda index: _mean_of((errors <= CS_YEARS).astype(np.float64), index)
    for columns in CLASSIFICATION_TASKS:
        if columns.pred not in frame.columns:
            continue
        truth, pred = frame[columns.truth].to_numpy(np.int64), frame[columns.pred].to_numpy(np.int64)
        n_classes = sum(1 for c in frame.columns if c.startswith(columns.prob_prefix))
        n_classes = max(n_classes, int(truth.max()) + 1, int(pred.max()) + 1)
        correct = (truth == pred).astype(np.float64)
        stats[f"{columns.task}_accuracy"] = lambda index, correct=correct: _mean_of(correct, index)
        stats[f"{columns.task}_macro_f1"] = (
            lambda index, truth=truth, pred=pred, k=n_classes: _macro_f1(truth, pred, k, index))
    return stats


def resample_index(n_faces: int, resamples: int = RESAMPLES, seed: int = 0) -> np.ndarray:
    """(resamples, n_faces) face indices drawn with replacement; row 0 onwards, reproducible from the seed."""
    if n_faces < 1:
        raise ValueError("cannot bootstrap an empty predictions table")
    if resamples < 1:
        raise ValueError(f"resamples must be at least 1, got {resamples}")
    return np.random.default_rng(seed).integers(0, n_faces, size=(resamples, n_faces))


def _interval(estimate: float, draws: np.ndarray, level: float) -> Interval:
    if not 0 < level < 1:
        raise ValueError(f"level must be between 0 and 1, got {level}")
    low, high = np.quantile(draws, [(1 - level) / 2, (1 + level) / 2])
    return Interval(float(estimate), float(low), float(high))


def metric_intervals(frame: pd.DataFrame, resamples: int = RESAMPLES, seed: int = 0,
                     level: float = LEVEL) -> dict[str, Interval]:
    """Each headline metric on all faces with its `level` bootstrap interval."""
    index = resample_index(len(frame), resamples, seed)
    everything = np.arange(len(frame))[None, :]
    return {name: _interval(stat(everything)[0], stat(index), level)
            for name, stat in statistics(frame).items()}


def align(frame_a: pd.DataFrame, frame_b: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Both tables in the same face order; a ValueError when they were not evaluated on the same faces."""
    files_a, files_b = set(frame_a["file"]), set(frame_b["file"])
    if files_a != files_b or len(frame_a) != len(files_a) or len(frame_b) != len(files_b):
        raise ValueError(f"the two models were not evaluated on the same test faces ({len(files_a - files_b)} "
                         f"only in the first, {len(files_b - files_a)} only in the second, or repeated files): "
                         "re-run `python -m evaluation.evaluate` for both")
    order = frame_a["file"].to_numpy()
    return frame_a.reset_index(drop=True), frame_b.set_index("file").loc[order].reset_index()


def paired_differences(frame_a: pd.DataFrame, frame_b: pd.DataFrame, resamples: int = RESAMPLES, seed: int = 0,
                       level: float = LEVEL) -> dict[str, Interval]:
    """metric(a) - metric(b) with its bootstrap interval, for the metrics both models have, same draws for both."""
    frame_a, frame_b = align(frame_a, frame_b)
    stats_a, stats_b = statistics(frame_a), statistics(frame_b)
    index = resample_index(len(frame_a), resamples, seed)
    everything = np.arange(len(frame_a))[None, :]
    result = {}
    for name in stats_a.keys() & stats_b.keys():
        estimate = stats_a[name](everything)[0] - stats_b[name](everything)[0]
        result[name] = _interval(estimate, stats_a[name](index) - stats_b[name](index), level)
    return {name: result[name] for name in stats_a if name in result}
