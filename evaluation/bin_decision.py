"""A bin-aware age-bin decision, chosen on the validation split (never the test split): `evaluation.run`'s first
step, "bin_decision".

The age head predicts a distribution over ages; its 7-bin decision is the most probable bin. Rare bins (0-2,
3-6, 66-116) lose that argmax to their crowded neighbours, which costs macro-F1. A prior correction divides each
bin's probability by (train share of the bin)^tau, i.e. adds log offsets -tau*log(share) (agekit.labels
AgeBins.log_offsets). For every checkpoint this prints the validation 7-bin macro-F1 for each tau of the grid and
picks the best (ties go to the smaller tau); the pipeline stores the chosen offsets in the checkpoint's config.json
(ModelCard.age_bin_log_offsets), which the app, the API and evaluation then use. Expected age (MAE) is unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from sklearn.metrics import f1_score

from agekit.labels import AgeBins

TAUS = tuple(round(0.1 * i, 1) for i in range(16))  # 0 (plain argmax) … 1.5


@dataclass
class BinDecision:
    """One model's grid: validation macro-F1 per tau, the chosen tau and its log offsets per bin."""

    model: str
    f1_by_tau: dict[float, float]
    tau: float
    log_offsets: tuple[float, ...]


def bin_shares(ages: np.ndarray, bins: AgeBins) -> np.ndarray:
    """Share of faces in each bin (a small floor keeps an empty bin finite)."""
    counts = np.maximum(np.bincount(np.asarray(bins.bin_of(ages)), minlength=len(bins)), 1).astype(np.float64)
    return counts / counts.sum()


def prior_offsets(shares: np.ndarray, tau: float) -> tuple[float, ...]:
    """Log offsets of the prior correction p_bin / share_bin**tau."""
    return tuple(float(v) for v in -tau * np.log(shares))


def choose_tau(age_probs: np.ndarray, true_ages: np.ndarray, bins: AgeBins, shares: np.ndarray,
               taus: Sequence[float] = TAUS) -> tuple[dict[float, float], float]:
    """Macro-F1 of the corrected bin decision for each tau, and the best tau (smallest among ties)."""
    truth = np.asarray(bins.bin_of(true_ages))
    labels = np.arange(len(bins))
    scores = {}
    for tau in taus:
        decided = bins.with_offsets(prior_offsets(shares, tau)).bin_probabilities(age_probs).argmax(axis=1)
        scores[tau] = float(f1_score(truth, decided, labels=labels, average="macro", zero_division=0))
    best = max(scores.values())
    return scores, min(tau for tau, score in scores.items() if score >= best - 1e-12)


def decide(model: str, age_probs: np.ndarray, true_ages: np.ndarray, bins: AgeBins,
           shares: np.ndarray) -> BinDecision:
    """The decision for one model from its age probabilities (N, ages) on the val faces."""
    scores, tau = choose_tau(age_probs, true_ages, bins, shares)
    return BinDecision(model, scores, tau, tuple(round(v, 6) for v in prior_offsets(shares, tau)) if tau > 0 else ())


def decision_table(decisions: Sequence[BinDecision], n_faces: int) -> str:
    """Markdown: validation 7-bin macro-F1 per tau (every third of the grid), the chosen tau and its gain."""
    shown = TAUS[::3]
    title = f"val split, {n_faces} faces: 7-bin macro-F1 of the prior-corrected decision per tau (tau 0 = plain argmax)"
    lines = [title, "",
             "| model | " + " | ".join(f"tau {t:.1f}" for t in shown) + " | chosen tau | gain |",
             "| --- |" + " ---: |" * (len(shown) + 2)]
    for d in decisions:
        cells = " | ".join(f"{d.f1_by_tau[t]:.1%}" for t in shown)
        gain = d.f1_by_tau[d.tau] - d.f1_by_tau[0.0]
        lines.append(f"| `{d.model}` | {cells} | {d.tau:.1f} | {gain * 100:+.1f} pt |")
    return "\n".join(lines)
