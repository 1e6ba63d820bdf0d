"""Tasks, class names and age-bin schemes: the single source of truth for every label in agekit."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

TASKS: tuple[str, ...] = ("age", "gender", "ethnicity")

AGE_MIN, AGE_MAX = 0, 116  # UTKFace's age range, in years
NUM_AGES = AGE_MAX - AGE_MIN + 1  # the age head predicts a distribution over these 117 integer ages

GENDER_NAMES: tuple[str, ...] = ("male", "female")  # UTKFace codes 0, 1
ETHNICITY_NAMES: tuple[str, ...] = ("White", "Black", "Asian", "Indian", "Others")  # codes 0..4
# Label code of a face whose class is not known (All-Age-Faces has no ethnicity): its loss and metrics skip it.
ETHNICITY_UNKNOWN = -1

CLASS_NAMES: dict[str, tuple[str, ...]] = {"gender": GENDER_NAMES, "ethnicity": ETHNICITY_NAMES}
NUM_OUTPUTS: dict[str, int] = {"age": NUM_AGES, "gender": len(GENDER_NAMES), "ethnicity": len(ETHNICITY_NAMES)}


def check_tasks(tasks: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """Validate a task list against TASKS; returns it as a tuple in canonical order."""
    unknown = [t for t in tasks if t not in TASKS]
    if unknown or not tasks:
        raise ValueError(f"unknown or empty task list {list(tasks)!r}; choose from {list(TASKS)}")
    return tuple(t for t in TASKS if t in tasks)


@dataclass(frozen=True)
class AgeBins:
    """Contiguous, inclusive integer age ranges covering AGE_MIN..AGE_MAX (years)."""

    name: str
    lower: tuple[int, ...]  # first age of each bin
    upper: tuple[int, ...]  # last age of each bin (inclusive)
    # Bin-aware decision: bin probabilities are re-weighted by exp(offset) and renormalised, e.g. a prior
    # correction -tau*log(train bin share) chosen on the validation split (evaluation.bin_decision). () = none.
    log_offsets: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        if not self.lower or len(self.lower) != len(self.upper):
            raise ValueError(f"age bins {self.name!r}: need as many lower as upper bounds")
        if self.lower[0] != AGE_MIN or self.upper[-1] != AGE_MAX:
            raise ValueError(f"age bins {self.name!r} must cover {AGE_MIN}-{AGE_MAX}, got {self.spec}")
        for lo, hi, nxt in zip(self.lower, self.upper, self.lower[1:] + (AGE_MAX + 1,)):
            if lo > hi or nxt != hi + 1:
                raise ValueError(f"age bins {self.name!r} must be contiguous and increasing, got {self.spec}")
        if self.log_offsets and len(self.log_offsets) != len(self.lower):
            raise ValueError(f"age bins {self.name!r}: {len(self.log_offsets)} log offsets for {len(self.lower)} bins")

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(f"{lo}-{hi}" for lo, hi in zip(self.lower, self.upper))

    @property
    def spec(self) -> str:
        """Round-trippable text form, e.g. '0-2,3-6,7-14'."""
        return ",".join(self.names)

    def __len__(self) -> int:
        return len(self.lower)

    def bin_of(self, age: int | np.ndarray) -> int | np.ndarray:
        """Bin index of an age in years (scalar or array); ages outside AGE_MIN..AGE_MAX raise."""
        ages = np.asarray(age)
        if np.any(ages < AGE_MIN) or np.any(ages > AGE_MAX):
            raise ValueError(f"age out of range {AGE_MIN}-{AGE_MAX}: {age}")
        idx = np.searchsorted(np.asarray(self.upper), ages, side="left")
        return int(idx) if idx.ndim == 0 else idx

    def age_to_bin_matrix(self) -> np.ndarray:
        """(NUM_AGES, n_bins) 0/1 matrix: age probabilities @ matrix = bin probabilities."""
        matrix = np.zeros((NUM_AGES, len(self)), dtype=np.float32)
        matrix[np.arange(NUM_AGES), self.bin_of(np.arange(AGE_MIN, AGE_MAX + 1))] = 1.0
        return matrix

    def bin_probabilities(self, age_probs: np.ndarray) -> np.ndarray:
        """Sum a (..., NUM_AGES) age distribution into (..., n_bins) bin probabilities (re-weighted by
        exp(log_offsets) and renormalised when the scheme has offsets)."""
        probs = np.asarray(age_probs) @ self.age_to_bin_matrix()
        if not self.log_offsets:
            return probs
        weighted = probs * np.exp(np.asarray(self.log_offsets, dtype=probs.dtype))
        return weighted / weighted.sum(axis=-1, keepdims=True)

    def with_offsets(self, log_offsets: tuple[float, ...] | list[float]) -> AgeBins:
        """The same bins with a bin-aware decision (see `log_offsets`)."""
        return replace(self, log_offsets=tuple(float(v) for v in log_offsets))


def parse_age_bins(spec: str, name: str = "custom") -> AgeBins:
    """Parse '0-2,3-6,...,66-116' into AgeBins."""
    lower, upper = [], []
    for part in spec.replace(" ", "").split(","):
        try:
            lo, hi = (int(v) for v in part.split("-"))
        except ValueError:
            raise ValueError(f"bad age bin {part!r} in {spec!r}: write bins as 'lo-hi,lo-hi,...'") from None
        lower.append(lo)
        upper.append(hi)
    return AgeBins(name, tuple(lower), tuple(upper))


# 7 bins widely used for UTKFace age classification (the default everywhere in agekit).
UTK7 = parse_age_bins("0-2,3-6,7-14,15-30,31-40,41-65,66-116", name="utk7")
DECADES = parse_age_bins(
    ",".join(f"{lo}-{lo + 9}" for lo in range(0, 90, 10)) + ",90-116", name="decades"
)
AGE_BIN_SCHEMES: dict[str, AgeBins] = {b.name: b for b in (UTK7, DECADES)}
DEFAULT_AGE_BINS = UTK7


def get_age_bins(name_or_spec: str) -> AgeBins:
    """A scheme by name ('utk7', 'decades') or a custom 'lo-hi,...' list."""
    if name_or_spec in AGE_BIN_SCHEMES:
        return AGE_BIN_SCHEMES[name_or_spec]
    if "-" in name_or_spec:
        custom = parse_age_bins(name_or_spec)
        known = [b for b in AGE_BIN_SCHEMES.values() if b.spec == custom.spec]
        return known[0] if known else custom
    raise ValueError(f"unknown age-bin scheme {name_or_spec!r}; use one of {sorted(AGE_BIN_SCHEMES)} or 'lo-hi,...'")
