"""Markdown tables of the shipped models for the README: `python -m evaluation.report [--checkpoints checkpoints]`.

Reads checkpoints/leaderboard.csv (test metrics and wild-photo columns, written by `python -m evaluation.run`) and
each model's config.json + training_log.csv (epochs, wall time, throughput), so the README's numbers come from
the artifacts. `evaluation.run` prints it as its last step.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from agekit.artifacts import read_leaderboard
from agekit.card import ModelCard
from agekit.consensus import is_consensus
from agekit.training_log import read_log


def init_label(init_source: str) -> str:
    """'file.pth sha256:abcd…' → 'file.pth'; 'random' stays."""
    return init_source.split(" sha256:")[0]


def training_summary(folder: Path) -> dict[str, float]:
    """Epochs run, total training seconds and median images/s from training_log.csv."""
    log = read_log(folder)
    return {"epochs": len(log), "minutes": log["seconds"].sum() / 60, "images_per_s": log["images_per_s"].median()}


def results_table(root: Path) -> str:
    """One row per model: family, architecture, params, input, training data, init, UTKFace test metrics, All-Age-Faces
    test age MAE and gender, training time."""
    board = read_leaderboard(root)
    lines = [
        ("| model | family | architecture | params | input | trained on | initialised from | age MAE | CS@5 "
         "| 7-bin macro-F1 | gender acc. | ethnicity acc. | AAF age MAE | AAF gender acc. | epochs | CPU train time |"),
        "| --- | --- | --- | ---: | ---: | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in board.to_dict("records"):
        card = ModelCard.load(root / row["name"])
        if is_consensus(card):  # no training of its own
            epochs, train_time, data = "–", "– (averages its members)", "its members'"
        else:
            train = training_summary(root / row["name"])
            epochs, train_time, data = train["epochs"], f"{train['minutes']:.0f} min", " + ".join(card.data_sources()).replace("All-Age-Faces", "AAF")
        shape = ("averaged" if is_consensus(card) else
                 "one net per task" if not card.shared_backbone else "one shared net")
        chans = "gray " if card.in_chans == 1 else ""
        aaf = ["–" if pd.isna(row.get(key)) else fmt.format(row[key])
               for key, fmt in (("aaf_mae", "{:.2f}"), ("aaf_gender_accuracy", "{:.1%}"))]
        lines.append(
            f"| `{row['name']}` | {row['family']} | {row['architecture']} ({shape}) | {row['params'] / 1e6:.2f} M "
            f"| {chans}{row['input_size']} px | {data} | {init_label(row['init_source'])} | {row['mae']:.2f} "
            f"| {row['cs5']:.1%} | {row['age_bin_macro_f1']:.1%} | {row['gender_accuracy']:.1%} "
            f"| {row['ethnicity_accuracy']:.1%} | {aaf[0]} | {aaf[1]} | {epochs} | {train_time} |")
    return "\n".join(lines)


WILD_COLUMNS = (("mae", "age MAE", "{:.2f}"), ("age_bin_macro_f1", "7-bin macro-F1", "{:.1%}"),
                ("gender_accuracy", "gender acc.", "{:.1%}"), ("ethnicity_accuracy", "ethnicity acc.", "{:.1%}"))


def wild_table(root: Path) -> str:
    """One row per model: wild-photo detection rate and the headline metrics clean → wild (test split), from the
    leaderboard's wild_* columns; models without a wild evaluation show '–'."""
    board = read_leaderboard(root)
    lines = ["| model | detection | " + " | ".join(f"{label} clean → wild" for _, label, _ in WILD_COLUMNS) + " |",
             "| --- | ---: | " + " | ".join("---:" for _ in WILD_COLUMNS) + " |"]
    for row in board.to_dict("records"):
        detection = row.get("wild_detection_rate")
        cells = [f"`{row['name']}`", "–" if pd.isna(detection) else f"{detection:.1%}"]
        for column, _, fmt in WILD_COLUMNS:
            clean, wild = row.get(column), row.get(f"wild_{column}")
            cells.append(" → ".join("–" if pd.isna(v) else fmt.format(v) for v in (clean, wild)))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def report_tables(root: Path) -> str:
    """The README's model table and the clean → wild table."""
    return results_table(root) + "\n\n" + wild_table(root)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoints", type=Path, default=Path("checkpoints"))
    args = parser.parse_args(argv)
    print(report_tables(args.checkpoints))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
