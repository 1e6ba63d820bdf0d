"""A bin-aware age-bin decision, chosen on the validation split (never the test split).

    python -m evaluation.bin_decision [--checkpoints checkpoints] [--data $AGEKIT_UTKFACE] [--models ...] [--write]

The age head predicts a distribution over ages; its 7-bin decision is the most probable bin. Rare bins (0-2,
3-6, 66-116) lose that argmax to their crowded neighbours, which costs macro-F1. A prior correction divides each
bin's probability by (train share of the bin)^tau, i.e. adds log offsets -tau*log(share) (agekit.labels
AgeBins.log_offsets). For every checkpoint this prints the validation 7-bin macro-F1 for each tau of the grid and
picks the best (ties go to the smaller tau); `--write` stores the chosen offsets in the checkpoint's config.json
(ModelCard.age_bin_log_offsets), which the app, the API and evaluation then use. Expected age (MAE) is unchanged.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import f1_score

from agekit.card import ModelCard
from agekit.checkpoint import load_checkpoint
from agekit.data import load_folder, load_manifest, resolve_data_root
from agekit.labels import AgeBins, get_age_bins
from evaluation.evaluate import DECODE_SIZE, predict_probabilities, select_checkpoints

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


def decide(folder: Path, faces, shares: np.ndarray, batch_size: int = 64) -> BinDecision:
    loaded = load_checkpoint(folder)
    bins = get_age_bins(loaded.card.age_bins)
    age_probs = predict_probabilities(loaded, faces.images, batch_size)["age"]
    scores, tau = choose_tau(age_probs, faces.age.numpy(), bins, shares)
    return BinDecision(loaded.card.name, scores, tau, prior_offsets(shares, tau) if tau > 0 else ())


def write_offsets(folder: Path, offsets: tuple[float, ...]) -> None:
    """Store the decision in the checkpoint's config.json (weights untouched)."""
    card = ModelCard.load(folder)
    card.age_bin_log_offsets = tuple(round(v, 6) for v in offsets)
    card.save(folder)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m evaluation.bin_decision", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoints", type=Path, default=Path("checkpoints"))
    parser.add_argument("--data", default=None, help="UTKFace folder (default: $AGEKIT_UTKFACE)")
    parser.add_argument("--manifest", default=None, help="split manifest CSV (default: the committed one)")
    parser.add_argument("--models", nargs="*", help="checkpoint names (default: all)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--write", action="store_true", help="store the chosen offsets in each config.json")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    try:
        manifest = load_manifest(args.manifest)
        folders = select_checkpoints(args.checkpoints, args.models)
        faces = load_folder(resolve_data_root(args.data), manifest, "val", DECODE_SIZE)
        train_ages = manifest.rows("train")["age"].to_numpy()
        decisions = []
        for folder in folders:
            shares = bin_shares(train_ages, get_age_bins(ModelCard.load(folder).age_bins))
            decisions.append(decide(folder, faces, shares))
            if args.write:
                write_offsets(folder, decisions[-1].log_offsets)
    except (ValueError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"val split, {len(faces)} faces: 7-bin macro-F1 of the prior-corrected decision per tau "
          f"(tau 0 = plain argmax)\n")
    shown = TAUS[::3]
    print("| model | " + " | ".join(f"tau {t:.1f}" for t in shown) + " | chosen tau | gain |")
    print("| --- |" + " ---: |" * (len(shown) + 2))
    for d in decisions:
        cells = " | ".join(f"{d.f1_by_tau[t]:.1%}" for t in shown)
        gain = d.f1_by_tau[d.tau] - d.f1_by_tau[0.0]
        print(f"| `{d.model}` | {cells} | {d.tau:.1f} | {gain * 100:+.1f} pt |")
    if args.write:
        print(f"\nwrote age_bin_log_offsets into {len(decisions)} config.json files")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
