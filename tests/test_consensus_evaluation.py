"""evaluation.consensus and evaluation.intervals on synthetic outputs: fitted on val only, written, served, ranked."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from agekit.artifacts import (
    TEST_SECTION,
    WILD_SECTION,
    file_sha256,
    leaderboard_row,
    read_metrics,
    read_predictions,
    write_predictions,
    write_section,
)
from agekit.card import ModelCard
from agekit.data.aaf import PACK_ENV_VAR as AAF_PACK_ENV
from agekit.labels import NUM_AGES
from agekit.metrics import predictions_frame
from agekit.predict import ConsensusModel, ModelZoo
from evaluation.consensus import evaluate_consensus, fit_consensus, write_card, write_results
from evaluation.intervals import fit_model_interval, write_test_intervals
from evaluation.model_outputs import CLEAN, RENDERED, FaceSetOutputs, build_face_sets

AGES = np.arange(NUM_AGES)


def distributions(centres: np.ndarray, sd: float) -> np.ndarray:
    probs = np.exp(-0.5 * ((AGES[None, :] - centres[:, None]) / sd) ** 2)
    return probs / probs.sum(axis=1, keepdims=True)


def face_set(source: str, split: str, n: int, seed: int) -> FaceSetOutputs:
    """'low' guesses 4 years young, 'high' 4 years old (their average is right), 'noisy' is right ± 10 years."""
    rng = np.random.default_rng(seed)
    age = rng.integers(20, 70, n)
    truth = {"age": age, "gender": rng.integers(0, 2, n), "ethnicity": rng.integers(0, 5, n)}
    centres = {"low": age - 4.0, "high": age + 4.0, "noisy": age + rng.normal(0, 10, n)}
    probs = {}
    for name, centre in centres.items():
        gender = np.full((n, 2), 0.2)
        gender[np.arange(n), truth["gender"]] = 0.8
        probs[name] = {"age": distributions(np.clip(centre, 0, 116), 3.0), "gender": gender,
                       "ethnicity": np.full((n, 5), 0.2)}
    return FaceSetOutputs(source, split, [f"{split}_{i}.jpg" for i in range(n)], truth, probs)  # rendered ⊂ clean


@pytest.fixture
def zoo_root(tmp_path: Path, save_tiny) -> Path:
    for seed, name in enumerate(("high", "low", "noisy")):
        folder = save_tiny(tmp_path / name, seed=seed)
        write_section(folder, TEST_SECTION, {
            "format_version": 1, "data": {"split": "test", "manifest_hash": ""}, "speed": {"latency_ms": 2.0},
            "model": {"name": name, "family": "scratch", "architecture": "facecnn", "params": 100, "flops": 1000,
                      "input_size": 32, "init_source": "random"},
            "metrics": {"n": 500, "headline": {"age_mae": 4.0}}})
        write_section(folder, WILD_SECTION, {"split": "test", "detection_rate": 0.99, "metrics": None,
                                             "detect_s": 1.0, "predict_s": 1.0})
    return tmp_path


def test_consensus_is_fitted_on_val_written_and_served(zoo_root: Path) -> None:
    val = [face_set(CLEAN, "val", 400, 0), face_set(RENDERED, "val", 300, 1)]
    fit = fit_consensus(zoo_root, "consensus", val, train_ages=np.arange(1, 90))
    assert not (zoo_root / "consensus").exists()  # fitting writes nothing
    write_card(zoo_root, fit.card)
    assert fit.selection.spec.members == ("high", "low") and fit.selection.spec.weights_for("age") == (0.5, 0.5)
    card = ModelCard.load(zoo_root / "consensus")
    assert card.family == "consensus" and card.architecture_kwargs["members"] == ["high", "low"]
    interval = card.interval()
    assert interval is not None and interval.calibrated_on == ((CLEAN, 400), (RENDERED, 300))
    zoo = ModelZoo.load(zoo_root)
    assert isinstance(zoo.models["consensus"], ConsensusModel) and not zoo.failures

    test = [face_set(CLEAN, "test", 500, 2), face_set(RENDERED, "test", 450, 3)]
    results = evaluate_consensus(zoo_root, card, val, test)
    assert results.sections[TEST_SECTION]["metrics"]["headline"]["age_mae"] < 1.0  # the two biases cancel
    write_results(zoo_root, "consensus", results)
    report = read_metrics(zoo_root / "consensus")
    assert report["model"]["config_sha256"] == file_sha256(zoo_root / "consensus" / "config.json")
    assert report["metrics"]["interval"]["n"] == 500 and 0.7 < report["metrics"]["interval"]["coverage"] < 0.9
    assert report["wild"]["metrics"]["n"] == 450 and report["val"]["clean"]["age_mae"] < 1.0
    row = leaderboard_row(report)
    assert row["name"] == "consensus" and row["params"] == 200 and row["latency_ms"] == 4.0
    board = pd.read_csv(zoo_root / "leaderboard.csv")  # rebuilt with the consensus, best test MAE first
    assert list(board["name"]) == ["consensus", "high", "low", "noisy"]
    table = read_predictions(zoo_root, "consensus")
    assert {"age_lo", "age_hi"} <= set(table.columns)
    assert (table["age_lo"] <= table["pred_age"]).all() and (table["pred_age"] <= table["age_hi"]).all()


def test_interval_fit_reads_val_only_and_updates_the_test_tables(zoo_root: Path) -> None:
    with pytest.raises(ValueError, match="val split only"):
        fit_model_interval(zoo_root / "noisy", [face_set(CLEAN, "test", 50, 0)])
    val = [face_set(CLEAN, "val", 400, 0)]
    choice = fit_model_interval(zoo_root / "noisy", val)
    stored = json.loads((zoo_root / "noisy" / "config.json").read_text())["age_interval"]
    assert stored["method"] == choice.chosen.method and stored["calibrated_on"] == [{"source": CLEAN, "n": 400}]

    test = [face_set(CLEAN, "test", 500, 2)]
    card = ModelCard.load(zoo_root / "noisy")
    with pytest.raises(ValueError, match="predictions"):  # nothing committed yet to add the interval to
        write_test_intervals(zoo_root, card, test)
    committed = predictions_frame(test[0].files, test[0].truth, test[0].probs["noisy"], card.age_bin_scheme())
    write_predictions(zoo_root, "noisy", committed, TEST_SECTION)
    coverage = write_test_intervals(zoo_root, card, test)
    assert coverage[TEST_SECTION]["n"] == 500 and 0.7 < coverage[TEST_SECTION]["coverage"] < 0.9
    assert "age_lo" in read_predictions(zoo_root, "noisy").columns
    assert read_metrics(zoo_root / "noisy")["metrics"]["interval"]["coverage"] == coverage[TEST_SECTION]["coverage"]


def test_face_sources_are_checked_and_a_missing_aaf_pack_says_how_to_build_it(monkeypatch, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown face sources \\['flickr'\\]"):
        build_face_sets("val", ["flickr"])
    monkeypatch.setenv(AAF_PACK_ENV, str(tmp_path / "missing.safetensors"))
    with pytest.raises(ValueError, match="python -m agekit.data aaf-pack"):
        build_face_sets("val", ["aaf"])


def test_weights_ablation_scores_on_the_half_it_did_not_fit() -> None:
    from agekit.consensus import ConsensusSpec
    from evaluation.consensus_ablation import ablation_rows, class_accuracy, split_halves

    val = [face_set(CLEAN, "val", 41, 0), face_set(RENDERED, "val", 30, 1)]
    fit, score = split_halves(val, np.random.default_rng(0))
    for whole, a, b in zip(val, fit, score):
        assert sorted(a.files + b.files) == sorted(whole.files) and not set(a.files) & set(b.files)
        row = whole.files.index(b.files[0])
        assert b.truth["age"][0] == whole.truth["age"][row]
        assert np.array_equal(b.probs["low"]["age"][0], whole.probs["low"]["age"][row])
    spec = ConsensusSpec.shared(("high", "low"), (0.5, 0.5), ("age", "gender", "ethnicity"))
    assert class_accuracy(spec, val[0], "gender") == 1.0  # every model puts 0.8 on the true gender
    gender_rows = [r for r in ablation_rows(val, repeats=2) if "| gender |" in r]
    assert len(gender_rows) == 2 * 2 + 1 and gender_rows[-1].startswith("| mean | gender |")
