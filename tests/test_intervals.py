"""Age intervals: split-conformal coverage on synthetic data with known noise, clipping, val-only calibration."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from agekit.card import ModelCard
from agekit.intervals import (
    MIN_SPREAD,
    AgeInterval,
    CalibrationSource,
    age_spread,
    choose_interval,
    conformal_quantile,
    fit_interval,
    interval_bounds,
    interval_metrics,
)
from agekit.labels import AGE_MAX, NUM_AGES, UTK7


def synthetic(n: int, seed: int, name: str = "synthetic", split: str = "val", noise: float = 1.0
              ) -> CalibrationSource:
    """Faces whose true age is the prediction plus Gaussian noise with a known per-face sd (1-12 years, times
    `noise`), and whose predicted spread is 1-12 years: with noise 1 the setting where the "scaled" interval is
    the right one; noise > 1 is a source whose errors the model underestimates (e.g. real photos)."""
    rng = np.random.default_rng(seed)
    pred = rng.uniform(20, 80, n)
    sd = rng.uniform(1, 12, n)
    return CalibrationSource(name, split, pred + rng.normal(0, sd * noise), pred, sd)


def covered(rule: AgeInterval, source: CalibrationSource) -> np.ndarray:
    lo, hi = rule.bounds_from_spread(source.pred_age, source.spread)
    return (source.true_age >= lo) & (source.true_age <= hi)


@pytest.mark.parametrize("method", ["scaled", "constant"])
def test_calibrated_intervals_reach_nominal_coverage_on_fresh_data(method: str) -> None:
    rule = fit_interval([synthetic(2000, seed=0)], method, level=0.8)
    fresh = synthetic(20000, seed=1)
    # 2,000 calibration faces: the conformal coverage is Beta-distributed with sd ~ sqrt(.8*.2/2000) = 0.9 pt;
    # 20,000 fresh faces add 0.3 pt. 3 pt is > 3 sd of both together.
    assert abs(covered(rule, fresh).mean() - 0.8) < 0.03


def test_scaled_intervals_cover_every_noise_level_and_win_on_width() -> None:
    choice = choose_interval([synthetic(2000, seed=0)])
    assert choice.chosen.method == "scaled"
    assert choice.val["scaled"]["mean_width"] < choice.val["constant"]["mean_width"]
    fresh = synthetic(20000, seed=2)
    quiet, noisy = fresh.spread < 4, fresh.spread > 9
    scaled, constant = covered(choice.candidates["scaled"], fresh), covered(choice.candidates["constant"], fresh)
    assert abs(scaled[quiet].mean() - 0.8) < 0.04 and abs(scaled[noisy].mean() - 0.8) < 0.04
    assert constant[quiet].mean() > 0.95 and constant[noisy].mean() < 0.7  # one width for all cannot


def test_gaussian_quantile_is_recovered() -> None:
    # |N(0, sd)| / sd has its 80 % quantile at 1.2816 (the normal 90 % point)
    rule = fit_interval([synthetic(20000, seed=3)], "scaled")
    assert rule.q == pytest.approx(1.2816, abs=0.04)


def test_conformal_quantile_rank() -> None:
    scores = np.arange(1.0, 10.0)  # 9 scores: rank ceil(10 * 0.8) = 8
    assert conformal_quantile(scores, 0.8) == 8.0
    with pytest.raises(ValueError, match="at least 4 calibration faces"):
        conformal_quantile(np.ones(3), 0.8)


def test_interval_contains_the_point_and_is_clipped() -> None:
    pred = np.array([0.0, 1.0, 50.0, 115.5, 116.0])
    lo, hi = interval_bounds(pred, np.array([3.0, 3.0, 3.0, 3.0, 3.0]), q=2.0)
    assert np.all(lo <= pred) and np.all(pred <= hi)
    assert lo.min() >= 0 and hi.max() <= AGE_MAX
    assert lo.tolist() == [0.0, 0.0, 44.0, 109.5, 110.0] and hi.tolist() == [6.0, 7.0, 56.0, 116.0, 116.0]
    lo0, hi0 = interval_bounds(pred, np.ones(5), q=0.0)  # q = 0: a zero-width interval at the point
    assert np.array_equal(lo0, pred) and np.array_equal(hi0, pred)


def test_spread_of_a_distribution_and_its_floor() -> None:
    probs = np.zeros((2, NUM_AGES))
    probs[0, [30, 40]] = 0.5  # sd 5 years
    probs[1, 30] = 1.0  # a point mass: floored
    assert age_spread(probs).tolist() == [5.0, MIN_SPREAD]
    rule = AgeInterval(0.8, "scaled", 2.0)
    lo, hi = rule.bounds(probs)
    assert lo.tolist() == [25.0, 29.0] and hi.tolist() == [45.0, 31.0]


def test_calibration_refuses_anything_but_val() -> None:
    with pytest.raises(ValueError, match="val split only.*test_clean"):
        fit_interval([synthetic(100, 0, "val_clean"), synthetic(100, 1, "test_clean", split="test")], "scaled")
    rule = fit_interval([synthetic(100, 0, "utkface_clean"), synthetic(50, 1, "utkface_rendered")], "constant")
    assert rule.calibrated_on == (("utkface_clean", 100), ("utkface_rendered", 50))


def test_each_source_gets_its_own_quantile_and_unknown_photos_the_widest() -> None:
    chips, photos = synthetic(3000, 0, "utkface_clean"), synthetic(3000, 1, "aaf", noise=1.5)
    rule = fit_interval([chips, photos], "scaled")
    by_source = dict(rule.q_by_source)
    assert by_source["utkface_clean"] == pytest.approx(1.2816, abs=0.06)
    assert by_source["aaf"] == pytest.approx(1.5 * 1.2816, abs=0.09)
    assert rule.q == by_source["aaf"]  # served: the widest calibrated source
    fresh_chips, fresh_photos = synthetic(20000, 2, "utkface_clean"), synthetic(20000, 3, "aaf", noise=1.5)
    # each source at its nominal coverage with its own q; one pooled q would miss both (over / under)
    assert abs(covered(rule.for_source("utkface_clean"), fresh_chips).mean() - 0.8) < 0.03
    assert abs(covered(rule.for_source("aaf"), fresh_photos).mean() - 0.8) < 0.03
    pooled = conformal_quantile(np.concatenate([np.abs(s.true_age - s.pred_age) / s.spread for s in (chips, photos)]))
    pooled_rule = AgeInterval(0.8, "scaled", pooled)
    assert covered(pooled_rule, fresh_chips).mean() > 0.85 and covered(pooled_rule, fresh_photos).mean() < 0.75
    assert rule.for_source("somewhere_else").q == rule.q  # an uncalibrated source gets the served q
    few = synthetic(3, 4, "tiny")  # fewer than the 4 faces an 80 % quantile needs: left out, gets the served q
    assert fit_interval([chips, few], "scaled").calibrated_on == (("utkface_clean", 3000),)
    with pytest.raises(ValueError, match="no calibration source has the 4 val faces"):
        fit_interval([few], "scaled")
    with pytest.raises(ValueError, match="must be distinct"):
        fit_interval([chips, chips], "scaled")


def test_rule_round_trips_through_the_card() -> None:
    rule = choose_interval([synthetic(500, seed=0, name="utkface_clean")]).chosen
    card = ModelCard(name="m", family="scratch", architecture="facecnn", tasks=("age",),
                     age_interval=rule.to_dict())
    assert ModelCard.from_json(card.to_json()).interval() == rule
    two = fit_interval([synthetic(500, 0, "utkface_clean"), synthetic(500, 1, "aaf", noise=2.0)], "scaled")
    card.age_interval = two.to_dict()
    loaded = ModelCard.from_json(card.to_json())
    assert loaded.interval() == two and loaded.interval("aaf").q == two.q > loaded.interval("utkface_clean").q
    assert loaded.interval("utkface_clean").q == dict(two.q_by_source)["utkface_clean"]
    assert ModelCard(name="m", family="scratch", architecture="facecnn", tasks=("age",)).interval() is None
    with pytest.raises(ValueError, match="unknown interval method"):
        ModelCard(name="m", family="scratch", architecture="facecnn", tasks=("age",),
                  age_interval={"level": 0.8, "method": "wide", "q": 1.0})


def test_interval_metrics_by_bin_and_ethnicity() -> None:
    frame = pd.DataFrame({"age": [1, 1, 35, 70], "ethnicity": [0, 1, 0, 0],
                          "age_lo": [0.0, 2.0, 30.0, 60.0], "age_hi": [2.0, 4.0, 40.0, 80.0]})
    report = interval_metrics(frame, UTK7)
    assert report["coverage"] == 0.75 and report["mean_width"] == pytest.approx(8.5) and report["n"] == 4
    by_bin = {row["bin"]: row for row in report["by_age_bin"]}
    assert by_bin["0-2"]["coverage"] == 0.5 and by_bin["66-116"]["coverage"] == 1.0
    assert by_bin["3-6"]["n"] == 0 and by_bin["3-6"]["coverage"] is None
    by_group = {row["group"]: row for row in report["by_ethnicity"]}
    assert by_group["White"]["coverage"] == 1.0 and by_group["Black"]["coverage"] == 0.0
    assert not math.isnan(report["mean_width"])
    with pytest.raises(ValueError, match="fit the model's interval first"):
        interval_metrics(frame.drop(columns=["age_lo"]), UTK7)
