"""evaluation.bin_decision: the prior-corrected age-bin decision chosen on validation predictions."""

from __future__ import annotations

import numpy as np
import pytest

from agekit.card import ModelCard
from agekit.labels import NUM_AGES, UTK7
from evaluation.bin_decision import bin_shares, choose_tau, prior_offsets


def test_bin_shares_and_offsets():
    ages = np.array([1, 1, 20, 20, 20, 20, 35, 50])
    shares = bin_shares(ages, UTK7)
    assert shares.sum() == pytest.approx(1.0)
    assert shares[3] == pytest.approx(4 / 11)  # 8 faces + 3 empty bins floored at one face each
    offsets = prior_offsets(shares, 1.0)
    assert offsets[0] > offsets[3]  # the rarer bin is pushed up
    assert prior_offsets(shares, 0.0) == (0.0,) * len(UTK7)


def test_choose_tau_finds_the_correction_a_biased_model_needs():
    # A model that puts 40 % of a 0-2 face's mass on 0-2 and 60 % on 15-30: plain argmax never says 0-2.
    rng = np.random.default_rng(0)
    true_ages = np.array([1] * 20 + [25] * 80)
    probs = np.zeros((100, NUM_AGES))
    probs[:20, 1], probs[:20, 25] = 0.4, 0.6
    probs[20:, 25], probs[20:, 1] = 0.9 + rng.uniform(0, 0.05, 80), 0.0
    probs[20:, 40] = 1 - probs[20:, 25]
    shares = bin_shares(true_ages, UTK7)
    scores, tau = choose_tau(probs, true_ages, UTK7, shares)
    assert scores[0.0] < scores[tau] and tau > 0
    # The chosen decision now labels every 0-2 face correctly without losing a 15-30 face.
    decided = UTK7.with_offsets(prior_offsets(shares, tau)).bin_probabilities(probs).argmax(axis=1)
    assert (decided[:20] == 0).all() and (decided[20:] == 3).all()


def test_card_round_trips_offsets_and_checks_their_length(tmp_path):
    card = ModelCard(name="m", family="scratch", architecture="facecnn", tasks=("age",),
                     age_bin_log_offsets=(0.5, 0, 0, 0, 0, 0, -0.5))
    card.save(tmp_path)
    loaded = ModelCard.load(tmp_path)
    assert loaded.age_bin_log_offsets == (0.5, 0, 0, 0, 0, 0, -0.5)
    assert loaded.age_bin_scheme().log_offsets == (0.5, 0, 0, 0, 0, 0, -0.5)
    with pytest.raises(ValueError, match="log offsets"):
        ModelCard(name="m", family="scratch", architecture="facecnn", tasks=("age",), age_bin_log_offsets=(1.0,))
