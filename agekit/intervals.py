"""80 % age intervals by split conformal prediction, calibrated on validation faces only.

A face's interval is its predicted (expected) age ± q·scale, clipped to AGE_MIN..AGE_MAX years. The scale is
either the spread of the model's own predicted age distribution ("scaled": its standard deviation in years,
floored at MIN_SPREAD) or 1 ("constant": the same width for every face). q is the conformal quantile of the
validation scores |true age − predicted age| / scale: the ⌈(n+1)·level⌉-th smallest of n scores, which gives
coverage ≥ level on fresh faces from the same distribution as the calibration faces.

    sources = [CalibrationSource.from_probabilities("utkface_clean", "val", ages, age_probs), ...]
    choice = choose_interval(sources)          # fits both methods on the pooled val faces, keeps one
    lo, hi = choice.chosen.bounds(pred_age, age_probs)

The rule lives in the model's config.json (`ModelCard.age_interval`, `AgeInterval.to_dict`); `agekit.predict`
fills `Prediction.age_lo/age_hi` from it. `interval_metrics` reports coverage and mean width of a predictions
table (columns age_lo, age_hi), overall, by true age bin and by ethnicity.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from agekit.labels import AGE_MAX, AGE_MIN, ETHNICITY_NAMES, NUM_AGES, AgeBins

LEVEL = 0.8  # nominal coverage of the shipped intervals
METHODS = ("scaled", "constant")
MIN_SPREAD = 0.5  # years: floor of the per-face scale, so a very peaked distribution still gets an interval
CALIBRATION_SPLIT = "val"  # the only split a rule may be calibrated on
_AGES = np.arange(AGE_MIN, AGE_MAX + 1, dtype=np.float64)


def expected_ages(age_probs: np.ndarray) -> np.ndarray:
    """Expected age (years) of (N, NUM_AGES) age distributions."""
    return _check_age_probs(age_probs) @ _AGES


def age_spread(age_probs: np.ndarray) -> np.ndarray:
    """Standard deviation (years) of each (N, NUM_AGES) age distribution, floored at MIN_SPREAD."""
    probs = _check_age_probs(age_probs)
    mean = probs @ _AGES
    variance = probs @ (_AGES**2) - mean**2
    return np.maximum(np.sqrt(np.maximum(variance, 0.0)), MIN_SPREAD)


def _check_age_probs(age_probs: np.ndarray) -> np.ndarray:
    probs = np.asarray(age_probs, dtype=np.float64)
    if probs.ndim != 2 or probs.shape[1] != NUM_AGES:
        raise ValueError(f"age distributions must have shape (N, {NUM_AGES}), got {probs.shape}")
    return probs


def interval_scale(method: str, spread: np.ndarray) -> np.ndarray:
    """Per-face scale (years) of a method: the distribution's spread ("scaled") or 1 ("constant")."""
    spread = np.asarray(spread, dtype=np.float64)
    if method == "scaled":
        return spread
    if method == "constant":
        return np.ones_like(spread)
    raise ValueError(f"unknown interval method {method!r}; choose one of {METHODS}")


def conformal_quantile(scores: np.ndarray, level: float = LEVEL) -> float:
    """The ⌈(n+1)·level⌉-th smallest of n calibration scores (split conformal); too few scores raise."""
    scores = np.sort(np.asarray(scores, dtype=np.float64))
    n = len(scores)
    rank = math.ceil((n + 1) * level)
    if not 0 < level < 1:
        raise ValueError(f"interval level must be between 0 and 1, got {level}")
    if rank > n:
        needed = next(m for m in range(1, 10**6) if math.ceil((m + 1) * level) <= m)
        raise ValueError(f"a {level:.0%} conformal interval needs at least {needed} calibration faces, got {n}")
    return float(scores[rank - 1])


def interval_bounds(pred_age: np.ndarray, scale: np.ndarray, q: float) -> tuple[np.ndarray, np.ndarray]:
    """(lower, upper) years: pred_age ± q·scale clipped to AGE_MIN..AGE_MAX; always contains pred_age."""
    pred_age = np.clip(np.asarray(pred_age, dtype=np.float64), AGE_MIN, AGE_MAX)
    half = q * np.asarray(scale, dtype=np.float64)
    return np.clip(pred_age - half, AGE_MIN, pred_age), np.clip(pred_age + half, pred_age, AGE_MAX)


@dataclass(frozen=True)
class CalibrationSource:
    """One set of validation faces a model predicted: true ages, expected ages and distribution spreads (years)."""

    name: str  # e.g. "utkface_clean", "utkface_rendered", "aaf"
    split: str  # must be CALIBRATION_SPLIT: the fit refuses anything else
    true_age: np.ndarray
    pred_age: np.ndarray
    spread: np.ndarray

    def __post_init__(self) -> None:
        n = len(self.true_age)
        if len(self.pred_age) != n or len(self.spread) != n:
            raise ValueError(f"calibration source {self.name!r}: true ages, predictions and spreads differ in length")

    @classmethod
    def from_probabilities(cls, name: str, split: str, true_age: np.ndarray, age_probs: np.ndarray
                           ) -> CalibrationSource:
        """A source from true ages (years) and the model's (N, NUM_AGES) age distributions."""
        return cls(name, split, np.asarray(true_age, dtype=np.float64), expected_ages(age_probs),
                   age_spread(age_probs))


@dataclass(frozen=True)
class AgeInterval:
    """A calibrated interval rule (see the module docstring); stored in config.json as `to_dict()`."""

    level: float
    method: str  # one of METHODS
    q: float  # half-width in units of the scale (years for "constant", spreads for "scaled")
    calibrated_on: tuple[tuple[str, int], ...] = ()  # (source name, faces) of the validation faces used

    def __post_init__(self) -> None:
        interval_scale(self.method, np.ones(1))  # validates the method
        if not 0 < self.level < 1 or not math.isfinite(self.q) or self.q < 0:
            raise ValueError(f"bad age interval: level {self.level}, q {self.q}")

    def bounds_from_spread(self, pred_age: np.ndarray, spread: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(lower, upper) years for expected ages and distribution spreads (years)."""
        return interval_bounds(pred_age, interval_scale(self.method, spread), self.q)

    def bounds(self, age_probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(lower, upper) years for (N, NUM_AGES) age distributions (around their expected ages)."""
        return self.bounds_from_spread(expected_ages(age_probs), age_spread(age_probs))

    def to_dict(self) -> dict[str, Any]:
        return {"level": self.level, "method": self.method, "q": self.q,
                "calibrated_on": [{"source": name, "n": n} for name, n in self.calibrated_on]}

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> AgeInterval:
        """From config.json's "age_interval" object; a malformed one raises ValueError."""
        try:
            sources = tuple((str(s["source"]), int(s["n"])) for s in raw.get("calibrated_on", ()))
            return cls(float(raw["level"]), str(raw["method"]), float(raw["q"]), sources)
        except (KeyError, TypeError) as err:
            raise ValueError(f"age_interval {raw!r} needs level, method and q ({err})") from None


def fit_interval(sources: Sequence[CalibrationSource], method: str, level: float = LEVEL) -> AgeInterval:
    """Fit one method's q on the pooled validation sources. Only split CALIBRATION_SPLIT is accepted."""
    if not sources:
        raise ValueError("no calibration faces: predict the validation split first")
    wrong = [f"{s.name} ({s.split})" for s in sources if s.split != CALIBRATION_SPLIT]
    if wrong:
        raise ValueError(f"intervals are calibrated on the {CALIBRATION_SPLIT} split only, got {wrong}")
    scores = np.concatenate([np.abs(s.true_age - s.pred_age) / interval_scale(method, s.spread) for s in sources])
    return AgeInterval(level, method, conformal_quantile(scores, level),
                       tuple((s.name, len(s.true_age)) for s in sources))


@dataclass
class IntervalChoice:
    """Both methods fitted on the same validation faces, their val coverage and width, and the one kept."""

    chosen: AgeInterval
    candidates: dict[str, AgeInterval]
    val: dict[str, dict[str, Any]] = field(default_factory=dict)  # method → {"coverage", "mean_width"} pooled


def choose_interval(sources: Sequence[CalibrationSource], level: float = LEVEL) -> IntervalChoice:
    """Fit "scaled" and "constant" on the pooled validation faces and keep the narrower one.

    Rule: both reach the nominal coverage on val by construction, so val prefers the smaller mean width (years)
    over the pooled validation faces — a tighter interval with the same guarantee; a tie keeps "scaled".
    """
    candidates = {method: fit_interval(sources, method, level) for method in METHODS}
    true_age = np.concatenate([s.true_age for s in sources])
    pred_age = np.concatenate([s.pred_age for s in sources])
    spread = np.concatenate([s.spread for s in sources])
    val = {}
    for method, rule in candidates.items():
        lo, hi = rule.bounds_from_spread(pred_age, spread)
        val[method] = {"coverage": float(np.mean((true_age >= lo) & (true_age <= hi))),
                       "mean_width": float(np.mean(hi - lo))}
    chosen = min(METHODS, key=lambda m: (val[m]["mean_width"], METHODS.index(m)))
    return IntervalChoice(candidates[chosen], candidates, val)


def coverage_summary(true_age: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> dict[str, Any]:
    """{"n", "coverage" (share of true ages inside [lo, hi]), "mean_width" (years)}; None values when empty."""
    true_age, lo, hi = (np.asarray(a, dtype=np.float64) for a in (true_age, lo, hi))
    n = len(true_age)
    return {"n": n, "coverage": float(np.mean((true_age >= lo) & (true_age <= hi))) if n else None,
            "mean_width": float(np.mean(hi - lo)) if n else None}


def interval_metrics(frame: pd.DataFrame, age_bins: AgeBins) -> dict[str, Any]:
    """Coverage and mean width of a predictions table's age_lo/age_hi: overall, by true age bin, by ethnicity."""
    missing = [c for c in ("age", "age_lo", "age_hi") if c not in frame.columns]
    if missing:
        raise ValueError(f"the predictions table has no {missing} columns: fit the model's interval first "
                         "(python -m evaluation.intervals)")

    def summary(rows: pd.DataFrame) -> dict[str, Any]:
        return coverage_summary(rows["age"].to_numpy(), rows["age_lo"].to_numpy(), rows["age_hi"].to_numpy())

    bins = np.asarray(age_bins.bin_of(frame["age"].to_numpy())).reshape(len(frame))
    result = {**summary(frame),
              "by_age_bin": [{"bin": name, **summary(frame[bins == i])} for i, name in enumerate(age_bins.names)]}
    if "ethnicity" in frame.columns:
        result["by_ethnicity"] = [{"group": name, **summary(frame[frame["ethnicity"] == code])}
                                  for code, name in enumerate(ETHNICITY_NAMES)]
    return result


__all__ = [
    "CALIBRATION_SPLIT", "LEVEL", "METHODS", "MIN_SPREAD", "AgeInterval", "CalibrationSource", "IntervalChoice",
    "age_spread", "choose_interval", "conformal_quantile", "coverage_summary", "expected_ages", "fit_interval",
    "interval_bounds", "interval_metrics", "interval_scale",
]
