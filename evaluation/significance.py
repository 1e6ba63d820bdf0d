"""Which differences between the shipped models are real? Bootstrap intervals from the committed predictions.

    python -m evaluation.significance [--checkpoints checkpoints] [--pair A B ...] [--resamples 2000] [--seed 0]

Prints two markdown tables from checkpoints/<model>/eval/predictions.csv (no model is run):
  1. every model's test metrics with 95% percentile-bootstrap intervals over the test faces;
  2. paired differences A - B (same resampled faces for both) with their intervals, ✔ where the interval
     excludes zero. Without --pair, the controlled pairs the zoo was built for are compared: two models of the
     same architecture that differ only in their initialisation (what pretraining bought) or only in sharing
     the backbone (one net vs three).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from agekit.artifacts import read_leaderboard, read_predictions
from agekit.bootstrap import LEVEL, RESAMPLES, format_difference, format_metric, metric_intervals, paired_differences
from agekit.card import ModelCard

COLUMNS = {  # metric -> column title; the README table's metrics
    "age_mae": "age MAE", "age_cs5": "CS@5", "age_bin_macro_f1": "7-bin macro-F1",
    "gender_accuracy": "gender acc.", "ethnicity_accuracy": "ethnicity acc.", "ethnicity_macro_f1": "ethnicity macro-F1",
}


def controlled_pairs(cards: dict[str, ModelCard]) -> list[tuple[str, str]]:
    """(A, B) pairs of one architecture, input and task set that differ in exactly one of: initialisation,
    backbone sharing. A is the pretrained / shared one."""
    pairs = []
    names = sorted(cards)
    for a in names:
        for b in names:
            ca, cb = cards[a], cards[b]
            if a == b or (ca.architecture, ca.input_size, ca.tasks) != (cb.architecture, cb.input_size, cb.tasks):
                continue
            pretraining = (ca.shared_backbone == cb.shared_backbone
                           and ca.init_source != "random" and cb.init_source == "random")
            sharing = ca.init_source == cb.init_source and ca.shared_backbone and not cb.shared_backbone
            if pretraining or sharing:
                pairs.append((a, b))
    return pairs


def table_header(first: str) -> list[str]:
    """The two markdown header lines of a table with `first` then one column per metric in COLUMNS."""
    return [f"| {first} | " + " | ".join(COLUMNS.values()) + " |", "| --- |" + " ---: |" * len(COLUMNS)]


def intervals_table(root: Path, names: Sequence[str], resamples: int, seed: int) -> str:
    lines = table_header("model")
    for name in names:
        intervals = metric_intervals(read_predictions(root, name), resamples, seed)
        lines.append(f"| `{name}` | " + " | ".join(format_metric(m, intervals[m]) if m in intervals else "–"
                                                   for m in COLUMNS) + " |")
    return "\n".join(lines)


def differences_table(root: Path, pairs: Sequence[tuple[str, str]], resamples: int, seed: int) -> str:
    lines = table_header("A − B")
    for a, b in pairs:
        deltas = paired_differences(read_predictions(root, a), read_predictions(root, b), resamples, seed)
        cells = [format_difference(m, deltas[m]) if m in deltas else "–" for m in COLUMNS]
        lines.append(f"| `{a}` − `{b}` | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def significance_tables(root: Path, pairs: Sequence[tuple[str, str]] | None = None, resamples: int = RESAMPLES,
                        seed: int = 0) -> str:
    """Both markdown tables for the leaderboard's models (pairs: the controlled pairs unless given)."""
    names = [str(n) for n in read_leaderboard(root)["name"]]
    if not names:
        raise ValueError(f"no evaluated models in {root}/leaderboard.csv: run `python -m evaluation.run`")
    if pairs is None:
        pairs = controlled_pairs({n: ModelCard.load(root / n) for n in names})
    text = (f"{LEVEL:.0%} percentile-bootstrap intervals, {resamples} resamples of the test faces, seed {seed}\n\n"
            + intervals_table(root, names, resamples, seed))
    if pairs:
        text += ("\n\nPaired differences (✔: the interval excludes 0; MAE lower is better, the rest higher)\n\n"
                 + differences_table(root, pairs, resamples, seed))
    return text


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m evaluation.significance", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoints", type=Path, default=Path("checkpoints"))
    parser.add_argument("--pair", nargs=2, action="append", metavar=("A", "B"), help="compare A - B (repeatable)")
    parser.add_argument("--resamples", type=int, default=RESAMPLES)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        print(significance_tables(args.checkpoints, [tuple(p) for p in args.pair] if args.pair else None,
                                  args.resamples, args.seed))
    except (ValueError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
