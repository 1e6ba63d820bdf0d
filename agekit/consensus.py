"""A consensus of checkpoints: a zoo member with no weights of its own that averages its members' outputs.

Its config.json is an ordinary ModelCard with family and architecture "consensus" and
`architecture_kwargs = {"members": [...], "weights": {task: [...], ...}}` (one weight per member and task; a plain
list, as older cards have, weighs every task alike); its age bins, bin-aware decision and age interval are its own,
chosen on val like any model's. For each face the members' age distributions (NUM_AGES ages) and class
probabilities (gender, ethnicity) are averaged with that task's weights; the age is the expected age of the
averaged distribution, and the bins come from the averaged distribution through the card's AgeBins.

Weights are chosen by greedy forward selection on the validation split (`select_members`), for each task on its
own objective: age MAE for the age, log loss for a class task.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from agekit.card import ModelCard
from agekit.checkpoint import list_checkpoints
from agekit.labels import AGE_MAX, AGE_MIN, TASKS

CONSENSUS = "consensus"  # the family and architecture of a consensus card
SELECTION_SPLIT = "val"  # the only split members may be chosen on
MAX_STEPS = 20  # greedy additions at most (weights are multiples of 1/steps)
MIN_GAIN = 1e-4  # years: an addition must lower the objective by more than this


@dataclass(frozen=True)
class ConsensusSpec:
    """Which checkpoints a consensus averages, with what weights for each task (one per member, non-negative,
    summing to 1); every member weighs in at least one task."""

    members: tuple[str, ...]
    weights: Mapping[str, tuple[float, ...]]  # task → one weight per member

    def __post_init__(self) -> None:
        if not self.members or len(set(self.members)) != len(self.members) or not self.weights:
            raise ValueError(f"a consensus needs distinct members and weights for its tasks: {self.members} "
                             f"{dict(self.weights)}")
        for task, weights in self.weights.items():
            if len(weights) != len(self.members) or any(w < 0 for w in weights) or abs(sum(weights) - 1) > 1e-4:
                raise ValueError(f"consensus weights for {task} must be one non-negative weight per member of "
                                 f"{self.members}, summing to 1, got {weights}")
        idle = [m for i, m in enumerate(self.members) if all(w[i] == 0 for w in self.weights.values())]
        if idle:
            raise ValueError(f"consensus members {idle} have no weight in any task")

    @classmethod
    def shared(cls, members: Sequence[str], weights: Sequence[float], tasks: Sequence[str]) -> ConsensusSpec:
        """One set of weights for every task."""
        return cls(tuple(members), {task: tuple(weights) for task in tasks})

    def weights_for(self, task: str) -> tuple[float, ...]:
        if task not in self.weights:
            raise ValueError(f"the consensus has no weights for {task} (it has {sorted(self.weights)})")
        return self.weights[task]

    @classmethod
    def from_card(cls, card: ModelCard) -> ConsensusSpec:
        """The members and weights of a consensus card (architecture_kwargs); ValueError for any other card."""
        if not is_consensus(card):
            raise ValueError(f"{card.name} is a {card.architecture} network, not a consensus")
        kwargs = card.architecture_kwargs
        try:
            stored = kwargs["weights"]
            by_task = stored if isinstance(stored, Mapping) else {task: stored for task in card.tasks}
            weights = {}
            for task, values in by_task.items():
                values = [float(w) for w in values]
                weights[str(task)] = tuple(w / sum(values) for w in values)  # stored rounded to 6 decimals
            return cls(tuple(str(m) for m in kwargs["members"]), weights)
        except (KeyError, TypeError, ZeroDivisionError) as err:
            raise ValueError(f"consensus {card.name}: config.json architecture_kwargs needs members and "
                             f"weights ({err})") from None


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
        architecture_kwargs={"members": list(spec.members),
                             "weights": {task: [round(w, 6) for w in weights] for task, weights in spec.weights.items()}},
        input_size=max(card.input_size for card in member_cards), age_bins=schemes.pop(), split_hash=splits.pop(),
        init_source="none: averages " + ", ".join(spec.members),
        description=description or f"Consensus of {len(spec.members)} models: " + describe_weights(spec),
        params=sum(card.params for card in member_cards))


def describe_weights(spec: ConsensusSpec) -> str:
    """"age: a ×0.67, b ×0.33; gender: ..." (members with no weight in a task left out); one list when every task
    has the same weights."""
    def listed(weights: Sequence[float]) -> str:
        return ", ".join(f"{m} ×{w:.2f}" for m, w in zip(spec.members, weights) if w > 0)

    distinct = {tuple(weights) for weights in spec.weights.values()}
    if len(distinct) == 1:
        return listed(distinct.pop())
    return "; ".join(f"{task}: {listed(weights)}" for task, weights in spec.weights.items())


def average_outputs(member_outputs: Sequence[Mapping[str, np.ndarray]], spec: ConsensusSpec,
                    tasks: Sequence[str]) -> dict[str, np.ndarray]:
    """Each task's weighted average (`spec.weights_for(task)`) of the members' probabilities {task: (N, classes)};
    `member_outputs` in the order of spec.members. A member with no weight in a task may lack that task."""
    if len(member_outputs) != len(spec.members):
        raise ValueError(f"{len(member_outputs)} members' outputs for {len(spec.members)} members")
    averaged = {}
    for task in tasks:
        pairs = [(w, out[task]) for w, out in zip(spec.weights_for(task), member_outputs) if w > 0]
        averaged[task] = sum(w * np.asarray(p, dtype=np.float64) for w, p in pairs)
    return averaged


@dataclass(frozen=True)
class SelectionSource:
    """One validation face set for member selection: true ages (years) and each candidate's expected ages."""

    name: str  # e.g. "utkface_clean", "utkface_rendered"
    split: str  # must be SELECTION_SPLIT
    true_age: np.ndarray  # (N,)
    expected_age: Mapping[str, np.ndarray]  # candidate model → (N,) expected age of its age distribution


@dataclass(frozen=True)
class ClassSelectionSource:
    """One validation face set for one class task's weights: true classes and each candidate's probabilities."""

    name: str
    split: str  # must be SELECTION_SPLIT
    task: str  # e.g. "gender"
    truth: np.ndarray  # (N,) class codes
    probs: Mapping[str, np.ndarray]  # candidate model → (N, classes)


@dataclass
class MemberSelection:
    """The outcome of greedy forward selection: members, weights and each task's val objective after each step."""

    spec: ConsensusSpec
    objective: float  # mean over sources of the consensus' val age MAE, years
    steps: list[tuple[str, float]] = field(default_factory=list)  # (model added, objective after adding it)
    single_best: tuple[str, float] = ("", float("nan"))  # best single candidate and its objective
    # class task → its greedy steps (model added, mean val log loss after adding it)
    task_steps: dict[str, list[tuple[str, float]]] = field(default_factory=dict)


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


def class_objective(sources: Sequence[ClassSelectionSource], counts: Mapping[str, int]) -> float:
    """Mean over sources of the log loss (nats) of the averaged class probabilities, each candidate weighted by its
    count."""
    total = sum(counts.values())
    losses = []
    for source in sources:
        probs = sum(count * source.probs[name] for name, count in counts.items()) / total
        picked = probs[np.arange(len(source.truth)), source.truth]
        losses.append(float(-np.mean(np.log(np.clip(picked, 1e-12, None)))))
    return float(np.mean(losses))


def greedy_counts(candidates: Sequence[str], objective: Callable[[Mapping[str, int]], float], max_steps: int,
                  min_gain: float) -> tuple[dict[str, int], list[tuple[str, float]], float]:
    """Greedy forward selection with replacement (Caruana et al., 2004): starting from nothing, each step adds the
    candidate (one already in may be added again) that gives the lowest `objective`; it stops after `max_steps`
    additions or when no addition lowers it by more than `min_gain`. Ties go to the candidate first in `candidates`.
    Returns the counts, the steps (model added, objective after) and the final objective."""
    counts: dict[str, int] = {}
    steps: list[tuple[str, float]] = []
    current = float("inf")
    for _ in range(max_steps):
        scores = {name: objective({**counts, name: counts.get(name, 0) + 1}) for name in candidates}
        best = min(candidates, key=lambda name: scores[name])
        if current - scores[best] <= min_gain:
            break
        counts[best] = counts.get(best, 0) + 1
        current = scores[best]
        steps.append((best, current))
    return counts, steps, current


def select_members(sources: Sequence[SelectionSource], class_sources: Sequence[ClassSelectionSource] = (),
                   tasks: Sequence[str] = TASKS, max_steps: int = MAX_STEPS, min_gain: float = MIN_GAIN
                   ) -> MemberSelection:
    """Each task's weights by greedy forward selection (`greedy_counts`) on validation faces only.

    The age: the mean over `sources` of the val age MAE (`selection_objective`), down by more than `min_gain`
    years a step. A class task with `class_sources`: the mean over its sources of the val log loss
    (`class_objective`), down by more than `min_gain` nats a step. A task of `tasks` without sources takes the age's
    weights. Weights are each candidate's share of a task's additions; members are every candidate with a weight,
    in sorted-name order (which also breaks ties).
    """
    if not sources:
        raise ValueError("no validation faces to choose consensus members on")
    wrong = [f"{s.name} ({s.split})" for s in [*sources, *class_sources] if s.split != SELECTION_SPLIT]
    if wrong:
        raise ValueError(f"consensus members are chosen on the {SELECTION_SPLIT} split only, got {wrong}")
    candidates = sorted(set.intersection(*(set(s.expected_age) for s in sources)))
    if not candidates:
        raise ValueError("no candidate model has predictions on every validation source")
    singles = {name: selection_objective(sources, {name: 1}) for name in candidates}
    age_counts, steps, current = greedy_counts(candidates, lambda c: selection_objective(sources, c), max_steps,
                                               min_gain)
    counts_by_task = {task: age_counts for task in tasks}
    task_steps = {}
    for task in sorted({s.task for s in class_sources} & set(tasks)):
        own = [s for s in class_sources if s.task == task]
        counts_by_task[task], task_steps[task], _ = greedy_counts(
            [c for c in candidates if all(c in s.probs for s in own)], lambda c, own=own: class_objective(own, c),
            max_steps, min_gain)
    members = tuple(name for name in candidates if any(name in counts for counts in counts_by_task.values()))
    spec = ConsensusSpec(members, {task: tuple(counts.get(name, 0) / sum(counts.values()) for name in members)
                                   for task, counts in counts_by_task.items()})
    best_single = min(candidates, key=lambda name: singles[name])
    return MemberSelection(spec, current, steps, (best_single, singles[best_single]), task_steps)


__all__ = [
    "CONSENSUS", "ClassSelectionSource", "ConsensusSpec", "MemberSelection", "SelectionSource", "average_outputs",
    "class_objective", "consensus_card", "consensus_folders", "describe_weights", "greedy_counts", "is_consensus",
    "select_members", "selection_objective", "zoo_folders",
]
