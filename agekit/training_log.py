"""training_log.csv: one row per epoch (epoch, lr, train losses, val metrics, seconds, images_per_s).

The engine writes it next to each checkpoint; the README report and the app's training-curve plot read it.
"""

from __future__ import annotations

import csv
from pathlib import Path

import pandas as pd

LOG_FILE = "training_log.csv"


def write_log(path: Path, history: list[dict[str, float]]) -> None:
    """Write the per-epoch rows; columns are the union of the rows' keys in first-seen order."""
    columns = list(dict.fromkeys(key for row in history for key in row))
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(history)


def read_log(folder: str | Path) -> pd.DataFrame:
    """A checkpoint folder's training log, sorted by epoch; a clear ValueError when it is missing or unreadable."""
    path = Path(folder) / LOG_FILE
    if not path.is_file():
        raise ValueError(f"{Path(folder).name} has no training log ({path} is missing)")
    try:
        log = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise ValueError(f"{path} is not a readable CSV ({err})") from None
    if "epoch" not in log.columns or log.empty:
        raise ValueError(f"{path} has no epoch rows (columns: {list(log.columns)})")
    return log.sort_values("epoch").reset_index(drop=True)
