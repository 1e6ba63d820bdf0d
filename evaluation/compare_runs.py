"""Training runs side by side on every val source: how a controlled pair is judged.

    python -m evaluation.compare_runs runs/pair_a runs/pair_b [--sources utkface aaf] [--data $AGEKIT_UTKFACE]

Each argument is a checkpoint folder (model.safetensors + config.json, as `training.train --out` writes it). Every
run is put through the app's own inference (flip averaging) on each val face set of `evaluation.model_outputs` —
UTKFace's chips, the same faces rendered as photos and found by the app's detector, All-Age-Faces' real photos —
and the table gives per source: age MAE, children 0-12 MAE, gender and ethnicity accuracy, then the mean of the
age MAEs (the app's ranking). A training log only has the pooled val; real photos and children can move apart from
it. The test split is never read and nothing is written except the output cache (runs/outputs).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from agekit.intervals import expected_ages
from agekit.metrics import labelled_accuracy
from evaluation.model_outputs import CACHE_DIR, FaceSet, network_outputs, source_face_sets

CHILD_MAX_AGE = 12


@dataclass(frozen=True)
class SourceScores:
    """One run on one val face set."""

    age_mae: float
    child_mae: float | None  # faces aged 0-12; None when there are none
    gender_acc: float | None  # None when the source has no such label
    ethnicity_acc: float | None


def source_scores(truth: Mapping[str, np.ndarray], probs: Mapping[str, np.ndarray]) -> SourceScores:
    """Age MAE (expected age of the age distribution), children's MAE and class accuracies on one face set; a
    class accuracy is None when the source lacks the label or the model the task."""
    errors = np.abs(expected_ages(probs["age"]) - truth["age"])
    children = truth["age"] <= CHILD_MAX_AGE
    accuracies = [labelled_accuracy(probs[task], truth[task]) if task in probs and task in truth else None
                  for task in ("gender", "ethnicity")]
    return SourceScores(float(errors.mean()), float(errors[children].mean()) if children.any() else None,
                        *accuracies)


def _cell(value: float | None, percent: bool = False) -> str:
    if value is None:
        return "–"
    return f"{value:.1%}" if percent else f"{value:.2f}"


def comparison_table(scores: Mapping[str, Mapping[str, SourceScores]]) -> str:
    """Markdown: one row per run and source (age MAE, children's MAE, gender, ethnicity), then each run's mean age
    MAE over the sources."""
    lines = ["| run | val source | age MAE | ages 0-12 MAE | gender | ethnicity |",
             "| --- | --- | ---: | ---: | ---: | ---: |"]
    for run, by_source in scores.items():
        for source, s in by_source.items():
            lines.append(f"| {run} | {source} | {_cell(s.age_mae)} | {_cell(s.child_mae)} | "
                         f"{_cell(s.gender_acc, True)} | {_cell(s.ethnicity_acc, True)} |")
        mean = np.mean([s.age_mae for s in by_source.values()])
        lines.append(f"| {run} | **mean of the sources (ranking)** | **{mean:.3f}** | | | |")
    return "\n".join(lines)


def compare(folders: Sequence[Path], face_sets: Sequence[FaceSet], cache_dir: Path | None = CACHE_DIR
            ) -> dict[str, dict[str, SourceScores]]:
    """Every run's scores on every face set, keyed by folder name then source."""
    return {folder.name: {face_set.source: source_scores(face_set.truth, network_outputs(folder, face_set,
                                                                                          cache_dir=cache_dir))
                          for face_set in face_sets}
            for folder in folders}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m evaluation.compare_runs", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path, help="checkpoint folders")
    parser.add_argument("--sources", nargs="+", default=["utkface", "aaf"], help="face sources of the val sets")
    parser.add_argument("--data", default=None, help="UTKFace folder (default: $AGEKIT_UTKFACE)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    missing = [str(run) for run in args.runs if not (run / "model.safetensors").is_file()]
    if missing:
        print(f"error: no model.safetensors in {', '.join(missing)} (a run writes it when it ends)", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    try:
        face_sets = source_face_sets(args.sources, args.data)("val")
    except (ValueError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(comparison_table(compare(args.runs, face_sets)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
