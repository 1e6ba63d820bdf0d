"""A consensus of checkpoints: a zoo member with no weights of its own that averages its members' outputs.

Its config.json is an ordinary ModelCard with family and architecture "consensus" and
`architecture_kwargs = {"members": [...], "weights": [...]}`; its age bins, bin-aware decision and age interval
are its own, chosen on val like any model's. For each face the members' age distributions (NUM_AGES ages) and
class probabilities (gender, ethnicity) are averaged with the weights; the age is the expected age of the averaged
distribution, and the bins come from the averaged distribution through the card's AgeBins.

Members are chosen by greedy forward selection on the validation split (`select_members`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from agekit.card import ModelCard
from agekit.checkpoint import list_checkpoints
from agekit.labels import AGE_MAX, AGE_MIN

CONSENSUS = "consensus"  # the family and architecture of a consensus card
SELECTION_SPLIT = "val"  # the only split members may be chosen on
MAX_STEPS = 20  # greedy additions at most (weights are multiples of 1/steps)
MIN_GAIN = 1e-4  # years: an addition must lower the objective by more than this


@dataclass(frozen=True)
class ConsensusSpec:
    """Which checkpoints a consensus averages, with what weights (positive, summing to 1)."""

    members: tuple[str, ...]
    weights: tuple[float, ...]

    def __post_init__(self) -> None:
        if not self.members or len(self.members) != len(self.weights) or len(set(self.members)) != len(self.members):
            raise ValueError(f"a consensus needs distinct members, one weight each: {self.members} {self.weights}")
        if any(w <= 0 for w in self.weights) or abs(sum(self.weights) - 1) > 1e-4:
            raise ValueError(f"consensus weights must be positive and sum to 1, got {self.weights}")

    @classmethod
    def from_card(cls, card: ModelCard) -> ConsensusSpec:
        """The members and weights of a consensus card (architecture_kwargs); ValueError for any other card."""
        if not is_consensus(card):
            raise ValueError(f"{card.name} is a {card.architecture} network, not a consensus")
        kwargs = card.architecture_kwargs
        try:
            weights = [float(w) for w in kwargs["weights"]]
            total = sum(weights)  # stored rounded to 6 decimals: renormalise
            return cls(tuple(str(m) for m in kwargs["members"]), tuple(w / total for w in weights))
        except (KeyError, TypeError, ZeroDivisionError) as err:
            raise ValueError(f"consensus {card.name}: config.json architecture_kwargs needs members and "
                             f"positive weights ({err})") from None


def is_consensus(card: ModelCard) -> bool:
    return card.architecture == CONSENSUS


def consensus_folders(root: str | Path) -> list[Path]:
    """Sub-folders of `root` whose config.json declares a consensus, sorted (a broken config.json is skipped: it is
    the loader's to report)."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = []
    for folder in sorted(p for p in root.iterdir() if (p / "config.json").is_file()):
        try:
            if is_consensus(ModelCard.load(folder)):
                found.append(folder)
        except (ValueError, OSError):
            continue
    return found


def zoo_folders(root: str | Path) -> list[Path]:
    """Every zoo member's folder under `root`: the networks (agekit.checkpoint.list_checkpoints), then the
    consensuses."""
    return [*list_checkpoints(root), *consensus_folders(root)]


def consensus_card(name: str, spec: ConsensusSpec, member_cards: Sequence[ModelCard], description: str = ""
                   ) -> ModelCard:
    """A consensus card: the tasks every member has, the members' age-bin scheme (they must share one) and split."""
    schemes = {card.age_bins for card in member_cards}
    splits = {card.split_hash for card in member_cards}
    if len(schemes) != 1 or len(splits) != 1:
        raise ValueError(f"consensus members must share one age-bin scheme and split, got {schemes} and {splits}")
    tasks = tuple(t for t in member_cards[0].tasks if all(t in card.tasks for card in member_cards))
    return ModelCard(
        name=name, family=CONSENSUS, architecture=CONSENSUS, tasks=tasks,
        architecture_kwargs={"members": list(spec.members), "weights": [round(w, 6) for w in spec.weights]},
        input_size=max(card.input_size for card in member_cards), age_bins=schemes.pop(), split_hash=splits.pop(),
        init_source="none: averages " + ", ".join(spec.members),
        description=description or f"Consensus of {len(spec.members)} models: " + ", ".join(
            f"{m} ×{w:.2f}" for m, w in zip(spec.members, spec.weights)),
        params=sum(card.params for card in member_cards))


def average_outputs(member_outputs: Sequence[Mapping[str, np.ndarray]], weights: Sequence[float],
                    tasks: Sequence[str]) -> dict[str, np.ndarray]:
    """Weighted average of the members' per-task probabilities {task: (N, classes)} for the given tasks."""
    if len(member_outputs) != len(weights):
        raise ValueError(f"{len(member_outputs)} members' outputs for {len(weights)} weights")
    w = np.asarray(weights, dtype=np.float64)
    return {task: np.tensordot(w, np.stack([np.asarray(out[task], dtype=np.float64) for out in member_outputs]),
                               axes=1)
            for task in tasks}


@dataclass(frozen=True)
class SelectionSource:
    """One validation face set for member selection: true ages (years) and each candidate's expected ages."""

    name: str  # e.g. "utkface_clean", "utkface_rendered"
    split: str  # must be SELECTION_SPLIT
    true_age: np.ndarray  # (N,)
    expected_age: Mapping[str, np.ndarray]  # candidate model → (N,) expected age of its age distribution


@dataclass
class MemberSelection:
    """The outcome of greedy forward selection: members, weights and the val objective after each step."""

    spec: ConsensusSpec
    objective: float  # mean over sources of the consensus' val age MAE, years
    steps: list[tuple[str, float]] = field(default_factory=list)  # (model added, objective after adding it)
    single_best: tuple[str, float] = ("", float("nan"))  # best single candidate and its objective


def selection_objective(sources: Sequence[SelectionSource], counts: Mapping[str, int]) -> float:
    """Mean over sources of the age MAE (years) of the consensus weighting each candidate by its count.

    The expected age of an averaged distribution is the weighted average of the members' expected ages, so the
    consensus' age needs only each member's expected age."""
    total = sum(counts.values())
    maes = []
    for source in sources:
        ages = sum(count * source.expected_age[name] for name, count in counts.items()) / total
        maes.append(float(np.mean(np.abs(np.clip(ages, AGE_MIN, AGE_MAX) - source.true_age))))
    return float(np.mean(maes))


def select_members(sources: Sequence[SelectionSource], max_steps: int = MAX_STEPS,
                   min_gain: float = MIN_GAIN) -> MemberSelection:
    """Greedy forward selection with replacement (Caruana et al., 2004) on validation faces only.

    Starting from nothing, each step adds the candidate (one already in may be added again, raising its weight)
    that gives the lowest `selection_objective` — the mean over sources of the val age MAE; it stops after
    `max_steps` additions or when no addition lowers the objective by more than `min_gain` years. Weights are
    each member's share of the additions. Ties go to the candidate first in sorted-name order.
    """
    if not sources:
        raise ValueError("no validation faces to choose consensus members on")
    wrong = [f"{s.name} ({s.split})" for s in sources if s.split != SELECTION_SPLIT]
    if wrong:
        raise ValueError(f"consensus members are chosen on the {SELECTION_SPLIT} split only, got {wrong}")
    candidates = sorted(set.intersection(*(set(s.expected_age) for s in sources)))
    if not candidates:
        raise ValueError("no candidate model has predictions on every validation source")
    singles = {name: selection_objective(sources, {name: 1}) for name in candidates}
    counts: dict[str, int] = {}
    steps: list[tuple[str, float]] = []
    current = float("inf")
    for _ in range(max_steps):
        scores = {name: selection_objective(sources, {**counts, name: counts.get(name, 0) + 1})
                  for name in candidates}
        best = min(candidates, key=lambda name: scores[name])
        if current - scores[best] <= min_gain:
            break
        counts[best] = counts.get(best, 0) + 1
        current = scores[best]
        steps.append((best, current))
    total = sum(counts.values())
    members = tuple(name for name in candidates if name in counts)
    spec = ConsensusSpec(members, tuple(counts[name] / total for name in members))
    best_single = min(candidates, key=lambda name: singles[name])
    return MemberSelection(spec, current, steps, (best_single, singles[best_single]))


__all__ = [
    "CONSENSUS", "ConsensusSpec", "MemberSelection", "SelectionSource", "average_outputs", "consensus_card",
    "consensus_folders", "is_consensus", "select_members", "selection_objective", "zoo_folders",
]
