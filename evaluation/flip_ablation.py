"""Does averaging each face with its mirror image help? Measured on the validation split, never the test split.

    python -m evaluation.flip_ablation [--checkpoints checkpoints] [--data $AGEKIT_UTKFACE] [--split val|train]

For every checkpoint: the validation metrics without and with flip averaging (agekit.predict.model_logits), and
the paired difference flip − plain with a 95% bootstrap interval (✔ where it excludes 0). This is the measurement
behind agekit.predict.FLIP_AVERAGE; nothing is written.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import torch

from agekit.bootstrap import format_difference, paired_differences
from agekit.checkpoint import load_checkpoint
from agekit.data import load_folder, load_manifest, resolve_data_root
from agekit.metrics import headline_metrics, predictions_frame
from evaluation.evaluate import DECODE_SIZE, predict_probabilities, select_checkpoints
from evaluation.significance import COLUMNS, table_header


def ablation_rows(folders: Sequence[Path], faces, batch_size: int = 64) -> list[str]:
    """Markdown rows: model, then per metric 'plain value: flip − plain [interval]' (✔ where it excludes 0)."""
    rows = []
    truth = {task: values.numpy() for task, values in faces.targets.items()}
    for folder in folders:
        loaded = load_checkpoint(folder)
        bins = loaded.card.age_bin_scheme()
        frames = {flip: predictions_frame(faces.files, truth, predict_probabilities(loaded, faces.images, batch_size,
                                                                                     flip), bins)
                  for flip in (False, True)}
        plain, deltas = headline_metrics(frames[False]), paired_differences(frames[True], frames[False])
        cells = []
        for metric in COLUMNS:
            if metric not in deltas:
                cells.append("–")
                continue
            delta = deltas[metric]
            value = f"{plain[metric]:.2f}" if metric == "age_mae" else f"{plain[metric]:.1%}"
            cells.append(f"{value}: {format_difference(metric, delta)}")
        rows.append(f"| `{loaded.card.name}` | " + " | ".join(cells) + " |")
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m evaluation.flip_ablation", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoints", type=Path, default=Path("checkpoints"))
    parser.add_argument("--data", default=None, help="UTKFace folder (default: $AGEKIT_UTKFACE)")
    parser.add_argument("--manifest", default=None, help="split manifest CSV (default: the committed one)")
    parser.add_argument("--split", default="val", choices=("train", "val"), help="never the test split")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--decode-size", type=int, default=DECODE_SIZE, help="as evaluation.evaluate")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    try:
        folders = select_checkpoints(args.checkpoints)
        faces = load_folder(resolve_data_root(args.data), load_manifest(args.manifest), args.split, args.decode_size)
        rows = ablation_rows(folders, faces)
    except (ValueError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"{args.split} split, {len(faces)} faces: plain value, then flip − plain [95% paired-bootstrap interval]\n")
    print("\n".join(table_header("model")))
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
