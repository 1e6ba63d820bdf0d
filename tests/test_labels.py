"""Tests for agekit.labels: tasks, age-bin schemes, custom specs, bin probabilities."""

from __future__ import annotations

import numpy as np
import pytest

from agekit.labels import (
    AGE_MAX,
    AGE_MIN,
    DECADES,
    NUM_AGES,
    NUM_OUTPUTS,
    TASKS,
    UTK7,
    AgeBins,
    check_tasks,
    get_age_bins,
    parse_age_bins,
)


def test_constants() -> None:
    assert TASKS == ("age", "gender", "ethnicity")
    assert (AGE_MIN, AGE_MAX, NUM_AGES) == (0, 116, 117)
    assert NUM_OUTPUTS == {"age": 117, "gender": 2, "ethnicity": 5}


@pytest.mark.parametrize("bins", [UTK7, DECADES], ids=lambda b: b.name)
def test_every_bin_edge(bins: AgeBins) -> None:
    for index, (lo, hi) in enumerate(zip(bins.lower, bins.upper)):
        assert bins.bin_of(lo) == index
        assert bins.bin_of(hi) == index
        if index + 1 < len(bins):
            assert bins.bin_of(hi + 1) == index + 1
    assert bins.bin_of(AGE_MIN) == 0 and bins.bin_of(AGE_MAX) == len(bins) - 1


def test_known_bins() -> None:
    assert UTK7.names == ("0-2", "3-6", "7-14", "15-30", "31-40", "41-65", "66-116")
    assert [UTK7.bin_of(a) for a in (0, 2, 3, 6, 7, 14, 15, 30, 31, 40, 41, 65, 66, 116)] == \
        [0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6]
    assert len(DECADES) == 10 and DECADES.names[0] == "0-9" and DECADES.names[-1] == "90-116"
    assert [DECADES.bin_of(a) for a in (9, 10, 89, 90, 116)] == [0, 1, 8, 9, 9]


def test_bin_of_arrays_and_range() -> None:
    ages = np.array([0, 3, 26, 66, 116])
    assert UTK7.bin_of(ages).tolist() == [0, 1, 3, 6, 6]
    assert isinstance(UTK7.bin_of(26), int)
    for bad in (-1, 117, np.array([5, 200])):
        with pytest.raises(ValueError, match="age out of range 0-116"):
            UTK7.bin_of(bad)


def test_spec_round_trip_and_lookup() -> None:
    assert parse_age_bins(UTK7.spec).spec == UTK7.spec
    assert get_age_bins("utk7") is UTK7 and get_age_bins("decades") is DECADES
    assert get_age_bins(UTK7.spec) is UTK7  # a custom spec equal to a named scheme resolves to it
    custom = get_age_bins("0-17, 18-64, 65-116")
    assert custom.name == "custom" and custom.names == ("0-17", "18-64", "65-116")
    assert custom.bin_of(17) == 0 and custom.bin_of(18) == 1 and custom.bin_of(65) == 2
    single = parse_age_bins("0-116")
    assert len(single) == 1 and single.bin_of(50) == 0


@pytest.mark.parametrize(("spec", "message"), [
    ("0-10,12-116", "contiguous"),  # gap at 11
    ("0-10,10-116", "contiguous"),  # overlap at 10
    ("0-50,40-30,31-116", "contiguous"),  # reversed bin
    ("1-116", "must cover 0-116"),
    ("0-100", "must cover 0-116"),
    ("0-10,11-120", "must cover 0-116"),
    ("0-a,11-116", "bad age bin"),
    ("0-10,,11-116", "bad age bin"),
    ("0-5-9,10-116", "bad age bin"),
])
def test_custom_spec_errors(spec: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        get_age_bins(spec)


def test_unknown_scheme_name() -> None:
    with pytest.raises(ValueError, match="unknown age-bin scheme 'fivers'"):
        get_age_bins("fivers")


def test_agebins_constructor_validation() -> None:
    with pytest.raises(ValueError, match="as many lower as upper"):
        AgeBins("x", (0, 10), (116,))
    with pytest.raises(ValueError, match="as many lower as upper"):
        AgeBins("x", (), ())


@pytest.mark.parametrize("bins", [UTK7, DECADES, parse_age_bins("0-50,51-116")], ids=lambda b: b.name)
def test_bin_probabilities(bins: AgeBins) -> None:
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(4, NUM_AGES))
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    binned = bins.bin_probabilities(probs)
    assert binned.shape == (4, len(bins))
    np.testing.assert_allclose(binned.sum(axis=1), 1.0, rtol=1e-5)
    for index, (lo, hi) in enumerate(zip(bins.lower, bins.upper)):
        np.testing.assert_allclose(binned[:, index], probs[:, lo:hi + 1].sum(axis=1), rtol=1e-5)
    matrix = bins.age_to_bin_matrix()
    assert matrix.shape == (NUM_AGES, len(bins)) and (matrix.sum(axis=1) == 1).all()


def test_one_hot_age_gives_one_hot_bin() -> None:
    for age in (0, 2, 3, 30, 31, 116):
        one_hot = np.zeros(NUM_AGES)
        one_hot[age] = 1.0
        binned = UTK7.bin_probabilities(one_hot)
        assert binned.shape == (len(UTK7),) and binned[UTK7.bin_of(age)] == 1.0 and binned.sum() == 1.0


def test_check_tasks() -> None:
    assert check_tasks(["ethnicity", "age"]) == ("age", "ethnicity")
    with pytest.raises(ValueError, match="unknown or empty task list"):
        check_tasks(["age", "emotion"])
    with pytest.raises(ValueError, match="unknown or empty task list"):
        check_tasks([])


def test_bin_log_offsets_reweight_and_renormalise() -> None:
    probs = np.zeros((1, NUM_AGES))
    probs[0, 1], probs[0, 30] = 0.3, 0.7  # 30 % in 0-2, 70 % in 15-30
    plain = UTK7.bin_probabilities(probs)
    offsets = [0.0] * len(UTK7)
    offsets[0] = float(np.log(4.0))  # weigh 0-2 four times
    corrected = UTK7.with_offsets(offsets).bin_probabilities(probs)
    assert plain.argmax() == 3 and corrected.argmax() == 0
    np.testing.assert_allclose(corrected[0, [0, 3]], [1.2 / 1.9, 0.7 / 1.9])
    assert corrected.sum() == pytest.approx(1.0)
    assert UTK7.with_offsets(offsets).spec == UTK7.spec  # same bins, only the decision differs
    with pytest.raises(ValueError, match="3 log offsets for 7 bins"):
        UTK7.with_offsets([0.0, 0.0, 0.0])
