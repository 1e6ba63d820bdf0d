"""Loss values on hand-computed cases, age decoding helpers, uncertainty weighting gradients."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from agekit.labels import NUM_AGES
from agekit.losses import (
    AgeDistributionLoss,
    MultiTaskLoss,
    age_probabilities,
    expected_age,
    gaussian_age_targets,
)


def test_gaussian_targets_are_distributions_peaking_at_the_age() -> None:
    ages = torch.tensor([0, 26, 40, 116])
    targets = gaussian_age_targets(ages, sigma=2.0)
    assert targets.shape == (4, NUM_AGES)
    torch.testing.assert_close(targets.sum(1), torch.ones(4))
    assert targets.argmax(1).tolist() == [0, 26, 40, 116]
    # symmetric around an interior age, ratio exp(-1/2) one sigma away
    assert targets[2, 38].item() == pytest.approx(targets[2, 42].item())
    assert (targets[2, 42] / targets[2, 40]).item() == pytest.approx(math.exp(-0.5), rel=1e-5)
    with pytest.raises(ValueError, match="positive"):
        gaussian_age_targets(ages, sigma=0)


def test_expected_age_of_a_one_hot_is_that_age() -> None:
    probs = F.one_hot(torch.tensor([0, 7, 116]), NUM_AGES).float()
    assert expected_age(probs).tolist() == [0.0, 7.0, 116.0]
    logits = torch.randn(5, NUM_AGES)
    torch.testing.assert_close(age_probabilities(logits).sum(1), torch.ones(5))
    assert expected_age(age_probabilities(torch.zeros(1, NUM_AGES))).item() == pytest.approx(58.0)


def test_age_loss_on_uniform_logits_is_entropy_gap_plus_l1() -> None:
    age = torch.tensor([40])
    target = gaussian_age_targets(age, 2.0)[0]
    entropy = -torch.special.xlogy(target, target).sum().item()
    # KL(q || uniform) = log 117 - H(q); expected age of uniform = 58, so L1 = 18 years
    expected = math.log(NUM_AGES) - entropy + 0.5 * 18.0
    loss = AgeDistributionLoss(sigma=2.0, l1_weight=0.5)(torch.zeros(1, NUM_AGES), age)
    assert loss.item() == pytest.approx(expected, rel=1e-5)


def test_age_loss_is_zero_for_the_target_distribution() -> None:
    age = torch.tensor([40, 60])
    logits = gaussian_age_targets(age, 3.0).clamp_min(1e-30).log()  # finite logits
    assert AgeDistributionLoss(sigma=3.0)(logits, age).item() == pytest.approx(0.0, abs=1e-4)


def test_cross_entropy_with_label_smoothing_by_hand() -> None:
    loss = MultiTaskLoss(tasks=("gender",), label_smoothing=0.1)
    total, parts = loss({"gender": torch.tensor([[2.0, 0.0]])}, {"gender": torch.tensor([0])})
    p0 = math.exp(2) / (math.exp(2) + 1)
    assert total.item() == pytest.approx(-(0.95 * math.log(p0) + 0.05 * math.log(1 - p0)), rel=1e-6)
    assert parts["gender"].item() == pytest.approx(total.item())


def test_class_weights_match_weighted_cross_entropy() -> None:
    weight = torch.tensor([1.0, 3.0, 1.0, 1.0, 0.5])
    logits, target = torch.randn(6, 5), torch.tensor([0, 1, 1, 2, 4, 3])
    loss = MultiTaskLoss(tasks=("ethnicity",), class_weights={"ethnicity": weight})
    total, _ = loss({"ethnicity": logits}, {"ethnicity": target})
    torch.testing.assert_close(total, F.cross_entropy(logits, target, weight=weight))


def test_fixed_weighting_sums_weighted_task_losses() -> None:
    loss = MultiTaskLoss(task_weights={"age": 0.5, "gender": 2.0})
    logits = {"age": torch.zeros(2, NUM_AGES), "gender": torch.zeros(2, 2), "ethnicity": torch.zeros(2, 5)}
    targets = {"age": torch.tensor([40, 50]), "gender": torch.tensor([0, 1]), "ethnicity": torch.tensor([1, 2])}
    total, parts = loss(logits, targets)
    assert parts["gender"].item() == pytest.approx(math.log(2))
    assert parts["ethnicity"].item() == pytest.approx(math.log(5))
    assert total.item() == pytest.approx(0.5 * parts["age"].item() + 2 * math.log(2) + math.log(5), rel=1e-6)


def test_uncertainty_weighting_learns_log_variances() -> None:
    loss = MultiTaskLoss(tasks=("gender", "ethnicity"), weighting="uncertainty")
    assert [name for name, _ in loss.named_parameters()] == ["log_vars"]
    targets = {"gender": torch.tensor([0, 1]), "ethnicity": torch.tensor([1, 2])}
    # first training batch: s_t starts at log L_t, so each weighted loss is 1 and d/ds = 1 - exp(-s) L = 0
    total, _ = loss({"gender": torch.zeros(2, 2), "ethnicity": torch.zeros(2, 5)}, targets)
    torch.testing.assert_close(loss.log_vars.detach(), torch.tensor([math.log(math.log(2)), math.log(math.log(5))]))
    assert total.item() == pytest.approx(2 + math.log(math.log(2)) + math.log(math.log(5)), rel=1e-6)
    # later batches: gradients reach both the log-variances and the logits
    logits = {"gender": torch.tensor([[1.0, 0.0], [0.0, 1.0]], requires_grad=True),
              "ethnicity": torch.zeros(2, 5, requires_grad=True)}
    total, parts = loss(logits, targets)
    total.backward()
    expected_grad = torch.tensor([1 - parts["gender"].item() / math.log(2), 0.0])
    torch.testing.assert_close(loss.log_vars.grad, expected_grad)
    assert logits["gender"].grad is not None and logits["gender"].grad.abs().sum() > 0
    with torch.no_grad():
        loss.log_vars.fill_(math.log(2.0))
    assert loss.current_weights() == pytest.approx({"gender": 0.5, "ethnicity": 0.5})


def test_unknown_weighting_is_rejected() -> None:
    with pytest.raises(ValueError, match="uncertainty"):
        MultiTaskLoss(weighting="magic")
