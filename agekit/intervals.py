"""80 % age intervals by split conformal prediction, calibrated on validation faces only.

A face's interval is its predicted (expected) age ± q·scale, clipped to AGE_MIN..AGE_MAX years. The scale is
either the spread of the model's own predicted age distribution ("scaled": its standard deviation in years,
floored at MIN_SPREAD) or 1 ("constant": the same width for every face). q is the conformal quantile of the
validation scores |true age − predicted age| / scale: the ⌈(n+1)·level⌉-th smallest of n scores, which gives
coverage ≥ level on fresh faces from the same distribution as the calibration faces.

q is fitted per calibration source (group-conditional, "Mondrian" split conformal): UTKFace's chips, the same
faces in rendered photos and All-Age-Faces' real photos are different distributions, and one q pooled over them
over-covers the easy source and under-covers the hard one. A face from a known source gets its source's q
(`AgeInterval.for_source`); a photo of unknown source (the app, `agekit.predict`) gets the served q, the largest
source's: the widest interval val calibrated.

    sources = [CalibrationSource.from_probabilities("utkface_clean", "val", ages, age_probs), ...]
    choice = choose_interval(sources)          # fits both methods per val source, keeps the narrower one
    lo, hi = choice.chosen.bounds(age_probs)                                    # served (unknown source)
    lo, hi = choice.chosen.for_source("utkface_clean").bounds(age_probs)        # a known source

The rule lives in the model's config.json (`ModelCard.age_interval`, `AgeInterval.to_dict`); `agekit.predict`
fills `Prediction.age_lo/age_hi` from it. `interval_metrics` reports coverage and mean width of a predictions
table (columns age_lo, age_hi), overall, by true age bin and by ethnicity.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
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


def min_calibration_faces(level: float = LEVEL) -> int:
    """The fewest calibration scores whose ⌈(n+1)·level⌉-th smallest exists (4 at 80 %)."""
    if not 0 < level < 1:
        raise ValueError(f"interval level must be between 0 and 1, got {level}")
    return next(m for m in range(1, 10**6) if math.ceil((m + 1) * level) <= m)


def conformal_quantile(scores: np.ndarray, level: float = LEVEL) -> float:
    """The ⌈(n+1)·level⌉-th smallest of n calibration scores (split conformal); too few scores raise."""
    scores = np.sort(np.asarray(scores, dtype=np.float64))
    needed = min_calibration_faces(level)
    if len(scores) < needed:
        raise ValueError(f"a {level:.0%} conformal interval needs at least {needed} calibration faces, "
                         f"got {len(scores)}")
    return float(scores[math.ceil((len(scores) + 1) * level) - 1])


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
    q: float  # served half-width in units of the scale (years for "constant", spreads for "scaled")
    calibrated_on: tuple[tuple[str, int], ...] = ()  # (source name, faces) of the validation faces used
    q_by_source: tuple[tuple[str, float], ...] = ()  # (source name, its own q); q is the largest of them

    def __post_init__(self) -> None:
        interval_scale(self.method, np.ones(1))  # validates the method
        object.__setattr__(self, "q_by_source", tuple(sorted(self.q_by_source)))  # as config.json stores them
        for q in (self.q, *(q for _, q in self.q_by_source)):
            if not 0 < self.level < 1 or not math.isfinite(q) or q < 0:
                raise ValueError(f"bad age interval: level {self.level}, q {q}")

    def for_source(self, source: str) -> AgeInterval:
        """This rule with `source`'s own q, for faces known to come from that source; a source it was not
        calibrated on keeps the served q."""
        return replace(self, q=dict(self.q_by_source).get(source, self.q))

    def bounds_from_spread(self, pred_age: np.ndarray, spread: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(lower, upper) years for expected ages and distribution spreads (years)."""
        return interval_bounds(pred_age, interval_scale(self.method, spread), self.q)

    def bounds(self, age_probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(lower, upper) years for (N, NUM_AGES) age distributions (around their expected ages)."""
        return self.bounds_from_spread(expected_ages(age_probs), age_spread(age_probs))

    def to_dict(self) -> dict[str, Any]:
        return {"level": self.level, "method": self.method, "q": self.q,
                "calibrated_on": [{"source": name, "n": n} for name, n in self.calibrated_on],
                "q_by_source": dict(self.q_by_source)}

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> AgeInterval:
        """From config.json's "age_interval" object; a malformed one raises ValueError."""
        try:
            sources = tuple((str(s["source"]), int(s["n"])) for s in raw.get("calibrated_on", ()))
            q_by_source = tuple((str(name), float(q)) for name, q in raw.get("q_by_source", {}).items())
            return cls(float(raw["level"]), str(raw["method"]), float(raw["q"]), sources, q_by_source)
        except (KeyError, TypeError) as err:
            raise ValueError(f"age_interval {raw!r} needs level, method and q ({err})") from None


def fit_interval(sources: Sequence[CalibrationSource], method: str, level: float = LEVEL) -> AgeInterval:
    """Fit one method's q on each validation source (its own conformal quantile); the served q is the largest.
    Only split CALIBRATION_SPLIT is accepted and source names must be distinct; a source with fewer faces than
    min_calibration_faces(level) is left out (its faces get the served q), and no source big enough raises."""
    wrong = [f"{s.name} ({s.split})" for s in sources if s.split != CALIBRATION_SPLIT]
    if wrong:
        raise ValueError(f"intervals are calibrated on the {CALIBRATION_SPLIT} split only, got {wrong}")
    names = [s.name for s in sources]
    if len(set(names)) != len(names):
        raise ValueError(f"calibration source names must be distinct, got {names}")
    usable = [s for s in sources if len(s.true_age) >= min_calibration_faces(level)]
    if not usable:
        raise ValueError(f"no calibration source has the {min_calibration_faces(level)} val faces a {level:.0%} "
                         f"interval needs (got {[(s.name, len(s.true_age)) for s in sources]}): predict the "
                         "validation split first")
    q_by_source = tuple((s.name, conformal_quantile(np.abs(s.true_age - s.pred_age) / interval_scale(method, s.spread),
                                                    level)) for s in usable)
    return AgeInterval(level, method, max(q for _, q in q_by_source),
                       tuple((s.name, len(s.true_age)) for s in usable), q_by_source)


@dataclass
class IntervalChoice:
    """Both methods fitted on the same validation faces, their val coverage and width, and the one kept."""

    chosen: AgeInterval
    candidates: dict[str, AgeInterval]
    # method → {"coverage", "mean_width"} over all val faces, each with its source's q
    val: dict[str, dict[str, Any]] = field(default_factory=dict)


def choose_interval(sources: Sequence[CalibrationSource], level: float = LEVEL) -> IntervalChoice:
    """Fit "scaled" and "constant" per validation source and keep the narrower one.

    Rule: both reach the nominal coverage on every val source by construction, so val prefers the smaller mean
    width (years) over all validation faces, each with its source's q — a tighter interval with the same
    guarantee; a tie keeps "scaled".
    """
    candidates = {method: fit_interval(sources, method, level) for method in METHODS}
    true_age = np.concatenate([s.true_age for s in sources])  # every source: a left-out one with the served q
    val = {}
    for method, rule in candidates.items():
        bounds = [rule.for_source(s.name).bounds_from_spread(s.pred_age, s.spread) for s in sources]
        lo, hi = (np.concatenate(side) for side in zip(*bounds, strict=True))
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
    "interval_bounds", "interval_metrics", "interval_scale", "min_calibration_faces",
]
