"""Per-task consensus weights against one set of weights for every task, measured on val only (split halves).

    python -m evaluation.consensus_ablation [--checkpoints checkpoints] [--repeats 5] [--sources utkface aaf]

Each repeat splits every val face set (UTKFace clean, UTKFace rendered as photos, AAF) into two random halves, fits
the consensus weights on one half twice — the age's weights for every task (`select_members` without class
sources), and gender and ethnicity each on their own val log loss — and scores both on the other half. This is the
measurement behind `evaluation.consensus` fitting a weight set per task; the test split is never read and nothing
is written.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from agekit.consensus import ConsensusSpec, average_outputs, select_members
from agekit.labels import CLASS_NAMES
from agekit.metrics import labelled_accuracy
from evaluation.consensus import candidate_networks, class_selection_sources, selection_sources
from evaluation.model_outputs import CACHE_DIR, FaceSetOutputs, collect_outputs, source_face_sets


def half(face_set: FaceSetOutputs, rows: np.ndarray) -> FaceSetOutputs:
    """The face set's `rows` (outputs and labels alike)."""
    return FaceSetOutputs(face_set.source, face_set.split, [face_set.files[i] for i in rows],
                          {task: values[rows] for task, values in face_set.truth.items()},
                          {name: {task: p[rows] for task, p in probs.items()} for name, probs in face_set.probs.items()})


def split_halves(val_sets: Sequence[FaceSetOutputs], rng: np.random.Generator
                 ) -> tuple[list[FaceSetOutputs], list[FaceSetOutputs]]:
    """Every face set cut into two random halves: (fit halves, score halves)."""
    fit, score = [], []
    for face_set in val_sets:
        order = rng.permutation(len(face_set.files))
        fit.append(half(face_set, order[: len(order) // 2]))
        score.append(half(face_set, order[len(order) // 2:]))
    return fit, score


def class_accuracy(spec: ConsensusSpec, face_set: FaceSetOutputs, task: str) -> float | None:
    """Accuracy of the consensus `spec` on one face set's labelled faces for `task` (None: no labels)."""
    if task not in face_set.truth:
        return None
    probs = average_outputs([face_set.probs[m] for m in spec.members], spec, [task])[task]
    return labelled_accuracy(probs, face_set.truth[task])


def ablation_rows(val_sets: Sequence[FaceSetOutputs], repeats: int, seed: int = 0) -> list[str]:
    """Markdown rows: repeat, task, face set, accuracy with shared weights → with the task's own weights."""
    rng = np.random.default_rng(seed)
    rows, gains = [], {task: [] for task in CLASS_NAMES}
    for repeat in range(repeats):
        fit, score = split_halves(val_sets, rng)
        shared = select_members(selection_sources(fit)).spec
        own = select_members(selection_sources(fit), class_selection_sources(fit)).spec
        for task in CLASS_NAMES:
            for face_set in score:
                before, after = class_accuracy(shared, face_set, task), class_accuracy(own, face_set, task)
                if before is None or after is None:
                    continue
                gains[task].append(after - before)
                rows.append(f"| {repeat + 1} | {task} | {face_set.source} | {before:.2%} | {after:.2%} | "
                            f"{after - before:+.2%} |")
    for task, values in gains.items():
        if values:
            rows.append(f"| mean | {task} | every face set | | | {np.mean(values):+.2%} "
                        f"({sum(v > 0 for v in values)} up, {sum(v < 0 for v in values)} down of {len(values)}) |")
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m evaluation.consensus_ablation", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoints", type=Path, default=Path("checkpoints"))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--sources", nargs="+", default=["utkface", "aaf"], help="face sources of the val sets")
    parser.add_argument("--data", default=None, help="UTKFace folder (default: $AGEKIT_UTKFACE)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    try:
        networks = candidate_networks(args.checkpoints, None)
        val_sets = collect_outputs(args.checkpoints, networks, source_face_sets(args.sources, args.data)("val"),
                                   cache_dir=CACHE_DIR)
    except (ValueError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"\nval halves, {args.repeats} repeats, {len(networks)} candidate networks: held-out half accuracy, "
          "age weights for every task → each task's own weights\n")
    print("| repeat | task | face set | shared weights | own weights | difference |\n| --- | --- | --- | ---: | ---: | ---: |")
    print("\n".join(ablation_rows(val_sets, args.repeats)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
