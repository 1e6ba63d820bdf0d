"""agekit.training_log: the per-epoch CSV round trip and its errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from agekit.training_log import LOG_FILE, read_log, write_log


def test_write_then_read_round_trip_sorted_by_epoch(tmp_path: Path) -> None:
    history = [{"epoch": 2, "train_loss": 1.5}, {"epoch": 1, "train_loss": 2.0, "val_age_mae": 7.25}]
    write_log(tmp_path / LOG_FILE, history)
    log = read_log(tmp_path)
    assert list(log.columns) == ["epoch", "train_loss", "val_age_mae"]  # union of keys, first-seen order
    assert log["epoch"].tolist() == [1, 2] and log["train_loss"].tolist() == [2.0, 1.5]
    assert log["val_age_mae"].iloc[0] == 7.25 and log["val_age_mae"].isna().iloc[1]


def test_read_log_errors_name_the_problem(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"has no training log \(.*training_log.csv is missing\)"):
        read_log(tmp_path)
    (tmp_path / LOG_FILE).write_text("")
    with pytest.raises(ValueError, match="is not a readable CSV"):
        read_log(tmp_path)
    (tmp_path / LOG_FILE).write_text("lr,loss\n0.1,2.0\n")
    with pytest.raises(ValueError, match=r"has no epoch rows \(columns: \['lr', 'loss'\]\)"):
        read_log(tmp_path)
    (tmp_path / LOG_FILE).write_bytes(b"epoch\n\xff\xfe\x00garbage\n")
    with pytest.raises(ValueError, match="is not a readable CSV"):
        read_log(tmp_path)
