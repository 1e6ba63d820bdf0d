"""What a split that ignores duplicate groups leaks: copies of one photograph on both sides of train and test.

    split = random_file_split(files, report.duplicate_groups, test=0.2, seed=0)   # the naive split
    split.leaked_test        # test files whose copy (byte-identical or near-duplicate) is in train
    split.grouped_train()    # the same train files without those copies: what a grouped split allows

`straddling_groups` checks any assignment (e.g. the committed manifest) for groups spread over several splits.
Used by the walkthrough notebook to measure the leak instead of asserting it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np


def straddling_groups(assignment: Mapping[str, str], groups: Iterable[Sequence[str]],
                      splits: Sequence[str] = ("train", "val", "test")) -> list[list[str]]:
    """Duplicate groups whose files sit in more than one of `splits` (files assigned elsewhere, e.g.
    'excluded', or not assigned at all are ignored). Each returned group keeps only its assigned files."""
    out = []
    for group in groups:
        placed = [f for f in group if assignment.get(f) in splits]
        if len({assignment[f] for f in placed}) > 1:
            out.append(placed)
    return out


@dataclass(frozen=True)
class LeakySplit:
    """A file-by-file random train/test split and what it leaks through duplicate groups."""

    train: list[str]
    test: list[str]
    leaked_test: list[str]  # test files with a copy of the same photograph in train
    train_twins: list[str]  # train files with a copy of the same photograph in test

    def grouped_train(self) -> list[str]:
        """The train files without the copies of test photographs: the leak removed, all else equal."""
        twins = set(self.train_twins)
        return [f for f in self.train if f not in twins]


def random_file_split(files: Sequence[str], groups: Iterable[Sequence[str]], test: float = 0.2,
                      seed: int = 0) -> LeakySplit:
    """Put each file in test with probability `test`, ignoring duplicate groups (the mistake to demonstrate).

    groups: duplicate groups (e.g. AuditReport.duplicate_groups); names not in `files` are ignored.
    Lists keep the order of `files`; the same files, groups and seed give the same split.
    """
    if not 0 < test < 1:
        raise ValueError(f"test must be a fraction between 0 and 1, got {test}")
    in_test = np.random.default_rng(seed).random(len(files)) < test
    assignment = {f: "test" if t else "train" for f, t in zip(files, in_test)}
    leaked: set[str] = set()
    for group in straddling_groups(assignment, groups, ("train", "test")):
        leaked.update(group)
    return LeakySplit(
        train=[f for f in files if assignment[f] == "train"],
        test=[f for f in files if assignment[f] == "test"],
        leaked_test=[f for f in files if f in leaked and assignment[f] == "test"],
        train_twins=[f for f in files if f in leaked and assignment[f] == "train"],
    )
