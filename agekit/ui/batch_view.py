"""Batch tab: several photos (files or a zip) → one table of every face × model and its CSV (agekit.batch)."""

from __future__ import annotations

from typing import Any

import gradio as gr
import pandas as pd

from agekit.batch import analyse_batch, batch_inputs
from agekit.photo_results import csv_text
from agekit.ui import serving
from agekit.ui.context import AppContext
from agekit.ui.guard import guarded

TABLE_COLUMNS = ("photo", "face", "model", "age", "age bin", "gender", "ethnicity", "flags", "error")


def table_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """The CSV rows as the page's table: one short text per task, percentages rounded."""
    records = []
    for row in rows:
        record = {column: row.get(column, "") for column in ("photo", "face", "model", "flags", "error")}
        age = row.get("age", "")
        if age != "":
            interval = f", {row['age_lo']:.0f}–{row['age_hi']:.0f}" if row.get("age_lo", "") != "" else ""
            record["age"] = f"{age:.0f}{interval}"
        if row.get("age_bin"):
            record["age bin"] = f"{row['age_bin']} ({row['age_bin_p']:.0%})"
        for task in ("gender", "ethnicity"):
            if row.get(task):
                record[task] = f"{row[task]} ({row[f'{task}_p']:.0%})"
        records.append(record)
    return pd.DataFrame(records, columns=list(TABLE_COLUMNS)).fillna("")


def _batch_failed(status: str) -> tuple[Any, ...]:
    return (None, gr.update(value=None, visible=False), status)


@guarded(_batch_failed)
def on_batch(ctx: AppContext, files: list[str] | None, progress: gr.Progress = gr.Progress()) -> tuple[Any, ...]:  # noqa: B008 — Gradio's way to ask for a progress bar
    """Analyse button → (table, CSV download, status)."""
    photos = batch_inputs(files or [])
    detector = ctx.require_detector()
    rows = analyse_batch(photos, detector, ctx.zoo, ctx.model_names,
                         progress=lambda i, name: progress((i, len(photos)), desc=f"photo {i + 1}: {name}"))
    path = serving.write_download("agekit_batch.csv", csv_text(rows))
    failed = sum(1 for row in rows if "error" in row)
    faces = len({(row["photo"], row["face"]) for row in rows if "face" in row})
    status = f"{len(photos)} photos: {faces} faces" + (f"; {failed} photos gave no result (see the error column)"
                                                        if failed else "")
    return table_frame(rows), gr.update(value=str(path), visible=True), status
