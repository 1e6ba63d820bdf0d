"""Consensus: the weighted average by hand, greedy member selection on val only, loading and serving in the zoo."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from agekit.card import ModelCard
from agekit.consensus import (
    ClassSelectionSource,
    ConsensusSpec,
    SelectionSource,
    average_outputs,
    class_objective,
    consensus_card,
    describe_weights,
    select_members,
    selection_objective,
)
from agekit.labels import NUM_AGES, TASKS, UTK7
from agekit.predict import ConsensusModel, ModelZoo, decode_probabilities


def shared(members: tuple[str, ...], weights: tuple[float, ...], tasks: tuple[str, ...] = TASKS) -> ConsensusSpec:
    return ConsensusSpec.shared(members, weights, tasks)


def point_mass(*ages_and_probs: tuple[int, float]) -> np.ndarray:
    probs = np.zeros(NUM_AGES)
    for age, p in ages_and_probs:
        probs[age] = p
    return probs


def test_consensus_is_the_hand_computed_weighted_average() -> None:
    a = {"age": point_mass((20, 0.5), (30, 0.5))[None], "gender": np.array([[0.9, 0.1]]),
         "ethnicity": np.array([[0.6, 0.1, 0.1, 0.1, 0.1]])}
    b = {"age": point_mass((40, 1.0))[None], "gender": np.array([[0.3, 0.7]]),
         "ethnicity": np.array([[0.0, 0.0, 1.0, 0.0, 0.0]])}
    averaged = average_outputs([a, b], shared(("a", "b"), (0.75, 0.25)), TASKS)
    # age distribution: 0.75 * (20: .5, 30: .5) + 0.25 * (40: 1) = 20: .375, 30: .375, 40: .25
    assert np.allclose(averaged["age"][0], point_mass((20, 0.375), (30, 0.375), (40, 0.25)))
    assert np.allclose(averaged["gender"], [[0.75 * 0.9 + 0.25 * 0.3, 0.75 * 0.1 + 0.25 * 0.7]])  # .75, .25
    assert np.allclose(averaged["ethnicity"], [[0.45, 0.075, 0.325, 0.075, 0.075]])
    [pred] = decode_probabilities("consensus", averaged, UTK7)
    assert pred.age == pytest.approx(0.375 * 20 + 0.375 * 30 + 0.25 * 40)  # 28.75 years
    assert pred.age_bin == "15-30" and pred.age_bin_probs[UTK7.names.index("15-30")] == pytest.approx(0.75)
    assert pred.gender == "male" and pred.ethnicity == "White"


def toy_sources(split: str = "val") -> list[SelectionSource]:
    """Truth 30 years. 'low' says 26, 'high' says 34 (their average is exact), 'bad' says 50, 'near' says 31."""
    truth = np.full(10, 30.0)
    guesses = {"low": 26.0, "high": 34.0, "bad": 50.0, "near": 31.0}
    return [SelectionSource("clean", split, truth, {m: np.full(10, v) for m, v in guesses.items()})]


def test_greedy_selection_finds_the_complementary_pair() -> None:
    selection = select_members(toy_sources())
    # 'near' alone has MAE 1; no addition helps ({near, near} 1.0, {near, low} 1.5, {near, high} 2.5), so greedy
    # stops there: it cannot see that low + high would be exact
    assert selection.spec == shared(("near",), (1.0,))
    assert selection.objective == pytest.approx(1.0) and selection.single_best == ("near", pytest.approx(1.0))
    without_near = [SelectionSource(s.name, s.split, s.true_age,
                                    {m: v for m, v in s.expected_age.items() if m != "near"}) for s in toy_sources()]
    selection = select_members(without_near)
    assert selection.spec.members == ("high", "low") and selection.spec.weights_for("age") == (0.5, 0.5)
    assert selection.objective == pytest.approx(0.0)
    assert [name for name, _ in selection.steps] in (["high", "low"], ["low", "high"])


def test_selection_with_replacement_gives_weights_in_steps() -> None:
    truth = np.full(4, 30.0)  # 2/3 of 27 + 1/3 of 36 = 30
    source = SelectionSource("clean", "val", truth, {"a": np.full(4, 27.0), "b": np.full(4, 36.0)})
    selection = select_members([source])
    assert dict(zip(selection.spec.members, selection.spec.weights_for("gender"))) == pytest.approx({"a": 2 / 3, "b": 1 / 3})
    assert selection_objective([source], {"a": 2, "b": 1}) == pytest.approx(0.0)


def test_selection_never_reads_test_faces() -> None:
    with pytest.raises(ValueError, match="val split only.*clean \\(test\\)"):
        select_members(toy_sources(split="test"))


def test_spec_validation_and_card_round_trip() -> None:
    with pytest.raises(ValueError, match="weights for age must be .*summing to 1, got \\(0.5, 0.6\\)"):
        shared(("a", "b"), (0.5, 0.6))
    with pytest.raises(ValueError, match="distinct members"):
        shared(("a", "a"), (0.5, 0.5))
    with pytest.raises(ValueError, match="members \\['b'\\] have no weight in any task"):
        ConsensusSpec(("a", "b"), {"age": (1.0, 0.0), "gender": (1.0, 0.0)})
    with pytest.raises(ValueError, match="no weights for ethnicity"):
        shared(("a",), (1.0,), ("age",)).weights_for("ethnicity")
    members = [ModelCard(name=n, family="scratch", architecture="facecnn", tasks=t, params=10)
               for n, t in (("a", ("age", "gender")), ("b", ("age", "gender", "ethnicity")))]
    card = consensus_card("consensus", shared(("a", "b"), (1 / 3, 2 / 3), ("age", "gender")), members)
    assert card.family == "consensus" and card.tasks == ("age", "gender") and card.params == 20
    again = ModelCard.from_json(card.to_json())
    assert ConsensusSpec.from_card(again).weights_for("gender") == pytest.approx((1 / 3, 2 / 3))
    older = ModelCard.from_json(card.to_json())  # cards written before per-task weights hold one plain list
    older.architecture_kwargs = {"members": ["a", "b"], "weights": [0.25, 0.75]}
    assert ConsensusSpec.from_card(older) == shared(("a", "b"), (0.25, 0.75), ("age", "gender"))


def test_each_task_is_averaged_with_its_own_weights() -> None:
    a = {"age": point_mass((20, 1.0))[None], "gender": np.array([[0.9, 0.1]])}
    b = {"age": point_mass((40, 1.0))[None], "gender": np.array([[0.3, 0.7]])}
    spec = ConsensusSpec(("a", "b"), {"age": (1.0, 0.0), "gender": (0.5, 0.5)})
    averaged = average_outputs([a, {"gender": b["gender"]}], spec, ("age", "gender"))  # b has no weight for age
    assert np.allclose(averaged["age"], point_mass((20, 1.0))[None])
    assert np.allclose(averaged["gender"], [[0.6, 0.4]])
    assert describe_weights(spec) == "age: a ×1.00; gender: a ×0.50, b ×0.50"


def test_class_tasks_get_their_own_weights_chosen_on_their_log_loss() -> None:
    """'old' guesses ages well but is unsure about gender, 'sharp' is the reverse: each task picks its own."""
    truth = np.array([0, 1, 0, 1])
    ages = SelectionSource("clean", "val", np.full(4, 30.0), {"old": np.full(4, 30.0), "sharp": np.full(4, 45.0)})
    unsure, sure = np.full((4, 2), 0.5), np.eye(2)[truth] * 0.9 + 0.05
    gender = ClassSelectionSource("clean", "val", "gender", truth, {"old": unsure, "sharp": sure})
    selection = select_members([ages], [gender])
    assert selection.spec.members == ("old", "sharp")
    assert selection.spec.weights == {"age": (1.0, 0.0), "gender": (0.0, 1.0), "ethnicity": (1.0, 0.0)}
    assert class_objective([gender], {"sharp": 1}) == pytest.approx(-np.log(0.95))
    assert [name for name, _ in selection.task_steps["gender"]] == ["sharp"]
    with pytest.raises(ValueError, match="val split only.*clean \\(test\\)"):
        select_members([ages], [ClassSelectionSource("clean", "test", "gender", truth, {"old": unsure})])


@pytest.fixture(scope="module")
def consensus_root(tmp_path_factory: pytest.TempPathFactory, save_tiny) -> Path:
    root = tmp_path_factory.mktemp("checkpoints")
    member_cards = [ModelCard.load(save_tiny(root / name, seed=seed)) for name, seed in (("a", 0), ("b", 1))]
    spec = ConsensusSpec(("a", "b"), {"age": (0.25, 0.75), "gender": (0.6, 0.4), "ethnicity": (0.25, 0.75)})
    card = consensus_card("consensus", spec, member_cards)
    card.age_interval = {"level": 0.8, "method": "constant", "q": 5.0}
    (root / "consensus").mkdir()
    card.save(root / "consensus")
    orphan = consensus_card("orphan", shared(("a", "gone"), (0.5, 0.5)), member_cards)
    (root / "orphan").mkdir()
    orphan.save(root / "orphan")
    return root


def test_zoo_serves_the_consensus_from_its_members_outputs(consensus_root: Path) -> None:
    zoo = ModelZoo.load(consensus_root)
    assert list(zoo.models) == ["a", "b", "consensus"] and set(zoo.networks) == {"a", "b"}
    assert isinstance(zoo.models["consensus"], ConsensusModel) and zoo.models["consensus"].model is None
    rng = np.random.default_rng(0)
    crops = [Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)) for _ in range(3)]
    results = zoo.predict(crops)
    assert list(results) == ["a", "b", "consensus"]
    for i, pred in enumerate(results["consensus"]):
        a, b = results["a"][i], results["b"][i]
        assert np.allclose(pred.age_probs, 0.25 * a.age_probs + 0.75 * b.age_probs)
        assert pred.age == pytest.approx(0.25 * a.age + 0.75 * b.age, abs=1e-4)
        assert np.allclose(pred.gender_probs, 0.6 * a.gender_probs + 0.4 * b.gender_probs)  # gender's own weights
        assert np.allclose(pred.ethnicity_probs, 0.25 * a.ethnicity_probs + 0.75 * b.ethnicity_probs)
        assert pred.age_lo == pytest.approx(max(pred.age - 5, 0)) and pred.age_hi == pytest.approx(pred.age + 5)
        assert a.age_lo is None and a.age_hi is None  # the members have no calibrated interval
    assert zoo.predict([])["consensus"] == []


def test_a_consensus_with_a_missing_member_is_a_failure_and_the_rest_load(consensus_root: Path) -> None:
    zoo = ModelZoo.load(consensus_root)
    assert "orphan" not in zoo.models and "consensus" in zoo.models
    assert "needs member checkpoint(s) ['gone']" in zoo.failures["orphan"]
