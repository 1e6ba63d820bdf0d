"""agekit.bootstrap and `python -m evaluation.significance`: intervals, paired differences, the controlled pairs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import f1_score

from agekit.bootstrap import (
    Interval,
    align,
    metric_intervals,
    paired_differences,
    resample_index,
    statistics,
)
from agekit.card import ModelCard
from agekit.metrics import headline_metrics
from evaluation import significance


def predictions(n: int = 300, seed: int = 0, skill: float = 0.7) -> pd.DataFrame:
    """A predictions table with age, 7 age bins, gender and 5 ethnicities; `skill` = share predicted right."""
    rng = np.random.default_rng(seed)
    age = rng.integers(1, 90, n)
    pred_age = age + rng.normal(0, 6, n)
    frame = pd.DataFrame({"file": [f"f{i}.jpg" for i in range(n)], "age": age, "pred_age": pred_age,
                          "age_abs_error": np.abs(pred_age - age)})
    for task, truth_col, pred_col, prefix, k in (("bins", "true_age_bin", "pred_age_bin", "age_bin_p", 7),
                                                 ("gender", "gender", "pred_gender", "gender_p", 2),
                                                 ("eth", "ethnicity", "pred_ethnicity", "ethnicity_p", 5)):
        truth = rng.integers(0, k, n)
        frame[truth_col] = truth
        frame[pred_col] = np.where(rng.random(n) < skill, truth, rng.integers(0, k, n))
        for i in range(k):
            frame[f"{prefix}{i}"] = 1.0 / k
    return frame


def test_estimates_are_the_headline_metrics_and_intervals_contain_them() -> None:
    frame = predictions()
    intervals = metric_intervals(frame, resamples=500)
    headline = headline_metrics(frame)
    assert list(intervals) == ["age_mae", "age_cs5", "age_bin_accuracy", "age_bin_macro_f1", "gender_accuracy",
                               "gender_macro_f1", "ethnicity_accuracy", "ethnicity_macro_f1"]
    for name, interval in intervals.items():
        assert interval.estimate == pytest.approx(headline[name], abs=1e-12)
        assert interval.low < interval.estimate < interval.high
    # about ±2 standard errors: the MAE interval of 300 faces is roughly 4 * sd / sqrt(300) wide
    width = intervals["age_mae"].high - intervals["age_mae"].low
    expected = 4 * frame["age_abs_error"].std() / np.sqrt(len(frame))
    assert 0.7 * expected < width < 1.3 * expected
    assert metric_intervals(frame, resamples=500) == intervals  # same seed, same draws


def test_vectorised_macro_f1_matches_scikit_learn_per_resample() -> None:
    frame = predictions(n=60, seed=3, skill=0.4)
    index = resample_index(len(frame), resamples=25, seed=7)
    draws = statistics(frame)["ethnicity_macro_f1"](index)
    truth, pred = frame["ethnicity"].to_numpy(), frame["pred_ethnicity"].to_numpy()
    expected = [f1_score(truth[row], pred[row], average="macro", zero_division=0) for row in index]
    np.testing.assert_allclose(draws, expected, atol=1e-12)


def test_constant_errors_give_a_zero_width_interval() -> None:
    frame = predictions(n=50)
    frame["age_abs_error"] = 3.0
    assert metric_intervals(frame, resamples=100)["age_mae"] == Interval(3.0, 3.0, 3.0)


def test_paired_difference_aligns_faces_and_is_zero_against_itself() -> None:
    a = predictions(seed=1)
    shuffled = a.sample(frac=1.0, random_state=0)
    for name, delta in paired_differences(a, shuffled, resamples=200).items():
        assert delta == Interval(0.0, 0.0, 0.0), name
        assert not delta.excludes_zero()
    better = a.copy()
    better["age_abs_error"] = a["age_abs_error"] * 0.5
    mae = paired_differences(better, a, resamples=200)["age_mae"]
    assert mae.estimate == pytest.approx(-0.5 * a["age_abs_error"].mean())
    assert mae.high < 0 and mae.excludes_zero()


def test_paired_difference_keeps_only_the_metrics_both_models_have() -> None:
    full = predictions()
    gender_only = full[["file", "gender", "pred_gender", "gender_p0", "gender_p1"]]
    assert list(paired_differences(full, gender_only, resamples=50)) == ["gender_accuracy", "gender_macro_f1"]


def test_errors_name_the_problem() -> None:
    a = predictions(n=20)
    with pytest.raises(ValueError, match=r"not evaluated on the same test faces \(1 only in the first, 1 only"):
        align(a, a.assign(file=[*a["file"][:-1], "other.jpg"]))
    with pytest.raises(ValueError, match="repeated files"):
        align(pd.concat([a, a.iloc[:1]]), pd.concat([a, a.iloc[:1]]))
    with pytest.raises(ValueError, match="empty predictions table"):
        resample_index(0)
    with pytest.raises(ValueError, match="resamples must be at least 1"):
        resample_index(5, resamples=0)
    with pytest.raises(ValueError, match="level must be between 0 and 1"):
        metric_intervals(a, resamples=10, level=95)


def test_interval_format() -> None:
    assert Interval(5.379, 5.151, 5.625).format() == "5.38 [5.15, 5.62]"
    assert Interval(0.612, 0.591, 0.630).format(percent=True) == "61.2% [59.1, 63.0]"
    assert Interval(-0.026, -0.045, -0.008).format(percent=True, signed=True) == "-2.6 pt [-4.5, -0.8]"
    assert Interval(0.14, -0.02, 0.29).format(signed=True) == "+0.14 [-0.02, +0.29]"


# ---------------------------------------------------------------- python -m evaluation.significance

def card(name: str, shared: bool, init: str, architecture: str = "mobilenetv1_025") -> ModelCard:
    return ModelCard(name=name, family="scratch" if init == "random" else "multitask" if shared else "pretrained",
                     architecture=architecture, tasks=("age", "gender", "ethnicity"), shared_backbone=shared,
                     init_source=init, input_size=112)


def test_controlled_pairs_differ_in_exactly_one_thing() -> None:
    cards = {c.name: c for c in (
        card("bundle", shared=False, init="retina.pth"), card("multi", shared=True, init="retina.pth"),
        card("scratch", shared=False, init="random"), card("multi_scratch", shared=True, init="random"),
        card("onet", shared=False, init="onet.pt", architecture="mtcnn_onet"))}
    assert significance.controlled_pairs(cards) == [
        ("bundle", "scratch"), ("multi", "bundle"), ("multi", "multi_scratch"), ("multi_scratch", "scratch")]


def write_model(root: Path, model_card: ModelCard, frame: pd.DataFrame) -> None:
    (root / model_card.name / "eval").mkdir(parents=True)
    model_card.save(root / model_card.name)
    frame.to_csv(root / model_card.name / "eval" / "predictions.csv", index=False)


def test_cli_prints_intervals_and_the_controlled_pair(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = predictions(seed=5)
    better = base.assign(age_abs_error=base["age_abs_error"] * 0.5)
    write_model(tmp_path, card("bundle", shared=False, init="retina.pth"), better)
    write_model(tmp_path, card("scratch", shared=False, init="random"), base)
    pd.DataFrame({"name": ["bundle", "scratch"]}).to_csv(tmp_path / "leaderboard.csv", index=False)
    assert significance.main(["--checkpoints", str(tmp_path), "--resamples", "200"]) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("| `")]
    mae = base["age_abs_error"].mean()
    assert rows[0].startswith(f"| `bundle` | {mae / 2:.2f} [") and rows[1].startswith(f"| `scratch` | {mae:.2f} [")
    assert rows[2].startswith(f"| `bundle` − `scratch` | {-mae / 2:+.2f} [") and rows[2].count("✔") == 2  # MAE and CS@5
    assert "200 resamples of the test faces, seed 0" in out


def test_cli_errors_exit_2_with_the_fix(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert significance.main(["--checkpoints", str(tmp_path)]) == 2
    assert "no leaderboard yet" in (err := capsys.readouterr().err) and "python -m evaluation.run" in err
    pd.DataFrame({"name": []}).to_csv(tmp_path / "leaderboard.csv", index=False)
    assert significance.main(["--checkpoints", str(tmp_path)]) == 2
    assert "no evaluated models in" in capsys.readouterr().err
    write_model(tmp_path, card("bundle", shared=False, init="retina.pth"), predictions())
    pd.DataFrame({"name": ["bundle", "gone"]}).to_csv(tmp_path / "leaderboard.csv", index=False)
    assert significance.main(["--checkpoints", str(tmp_path), "--pair", "bundle", "gone"]) == 2
    assert "model gone has no test-set predictions (" in capsys.readouterr().err
