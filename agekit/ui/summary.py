"""The Compare tab's results as HTML: per face, one compact table of every model (the summary) and, on demand,
every probability. Plain HTML tables: the browser draws them in milliseconds, where 18 plotly charts took over a
second, and at phone width the rows fold into cards (PAGE_CSS) so nothing scrolls sideways."""

from __future__ import annotations

from html import escape

import numpy as np

from agekit.face_quality import QualityFlag
from agekit.labels import ETHNICITY_NAMES, GENDER_NAMES
from agekit.predict import Prediction

SUMMARY_COLUMNS = ("model", "age (years)", "most likely age bin", "gender", "ethnicity")
# Page CSS of these tables (passed to launch with the rest of the page's CSS).
SUMMARY_CSS = """
.agekit-table table { width: 100%; border-collapse: collapse; font-size: 0.95em; }
.agekit-table th, .agekit-table td { padding: 4px 8px; text-align: left; border-bottom: 1px solid #e5e7eb; }
.agekit-table th { font-weight: 600; white-space: nowrap; }
.agekit-table tr.headline td { background: #fff7ed; font-weight: 600; }
.agekit-table .family { color: #6b7280; font-weight: normal; font-size: 0.85em; }
.agekit-table .missing { color: #9ca3af; }
.agekit-flags { margin: 4px 0 8px; padding: 6px 10px; background: #fef3c7; border-radius: 6px; }
.agekit-probs table { table-layout: fixed; font-size: 0.85em; }
.agekit-probs td, .agekit-probs th { padding: 3px 4px; text-align: center; overflow-wrap: anywhere; }
.agekit-probs td:first-child, .agekit-probs th:first-child { text-align: left; width: 24%; }
.agekit-probs td.top { font-weight: 700; }
@media (max-width: 640px) {
  .agekit-summary thead { display: none; }
  .agekit-summary tr { display: grid; grid-template-columns: 1fr 1fr; border-bottom: 1px solid #e5e7eb; }
  .agekit-summary td { border: none; padding: 2px 6px; }
  .agekit-summary td:first-child { grid-column: 1 / -1; }
  .agekit-summary td[data-label]::before { content: attr(data-label) ": "; color: #6b7280; font-size: 0.85em; }
  .agekit-probs table { font-size: 0.62em; }
  .agekit-probs td, .agekit-probs th { padding: 2px 1px; white-space: nowrap; }
  .agekit-probs td:first-child, .agekit-probs th:first-child { white-space: normal; width: 22%; }
}
"""
MISSING = '<span class="missing">—</span>'
TOP_CLASS = ' class="top"'


def percent(p: float) -> str:
    return f"{p:.0%}".replace("%", " %")


def bin_label(name: str) -> str:
    """'31-40' → '31–40' (an en dash: a range, not a minus)."""
    return name.replace("-", "–")


def age_text(pred: Prediction) -> str:
    """'31 years, 26–38' (expected age and, when the model has one, its age interval) or '31 years'."""
    text = f"{pred.age:.0f} years"
    if pred.age_lo is not None and pred.age_hi is not None:
        text += f", {pred.age_lo:.0f}–{pred.age_hi:.0f}"
    return text


def top_class(names: tuple[str, ...], probs: np.ndarray | None) -> str:
    """'female 92 %': the most likely class with its probability, or the missing mark."""
    if probs is None:
        return MISSING
    k = int(np.argmax(probs))
    return f"{escape(names[k])} {percent(float(probs[k]))}"


def model_cell(title: str, family: str) -> str:
    """The model's title with its family in small print (left out where the name says it: "consensus")."""
    if title.removeprefix("★ ") == family:
        return escape(title)
    return f'{escape(title)} <span class="family">{escape(family)}</span>'


def summary_row(title: str, family: str, pred: Prediction | None, headline: bool) -> str:
    """One model's row of the summary table."""
    cells = [model_cell(title, family), MISSING, MISSING, MISSING, MISSING]
    if pred is not None:
        if pred.age is not None:
            cells[1] = age_text(pred)
        if pred.age_bin is not None:
            cells[2] = f"{bin_label(pred.age_bin)} · {percent(pred.age_bin_confidence)}"
        cells[3] = top_class(GENDER_NAMES, pred.gender_probs)
        cells[4] = top_class(ETHNICITY_NAMES, pred.ethnicity_probs)
    tds = [f"<td>{cells[0]}</td>"] + [f'<td data-label="{label}">{cell}</td>'
                                      for label, cell in zip(SUMMARY_COLUMNS[1:], cells[1:])]
    row_class = ' class="headline"' if headline else ""
    return f"<tr{row_class}>{''.join(tds)}</tr>"


def flags_html(flags: list[QualityFlag], note: str = "") -> str:
    """The face's quality warnings and the models' disagreement line (disagreement_note), as one highlighted block
    ('' when there is neither)."""
    lines = [f"⚠️ {escape(flag.message[0].upper() + flag.message[1:])}." for flag in flags]
    if note:
        lines.append(escape(note))
    return f'<div class="agekit-flags">{"<br>".join(lines)}</div>' if lines else ""


def summary_html(face_number: int, rows: list[tuple[str, str, Prediction | None]], headline: str | None,
                 flags: list[QualityFlag], note: str = "", photo: str = "") -> str:
    """Face `face_number`'s summary: warnings, then one row per model (title, family, prediction) in `rows` order;
    the row titled `headline` is highlighted. `photo` (the file name) is kept in a data attribute for tests."""
    head = "".join(f"<th>{escape(c)}</th>" for c in SUMMARY_COLUMNS)
    body = "".join(summary_row(title, family, pred, title == headline) for title, family, pred in rows)
    return (f'<div class="agekit-table agekit-summary" data-face="{face_number}" data-photo="{escape(photo)}">'
            f"<h3>Face {face_number}</h3>"
            f"{flags_html(flags, note)}<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>")


def probability_table(caption: str, columns: tuple[str, ...], rows: list[tuple[str, np.ndarray]]) -> str:
    """A table of probabilities (rows: models; columns: classes), each cell shaded by its value, the top one bold."""
    head = "".join(f"<th>{escape(c)}</th>" for c in ("model", *columns))
    body = []
    for title, probs in rows:
        top = int(np.argmax(probs))
        cells = "".join(f'<td{TOP_CLASS if k == top else ""} style="background: rgba(249, 115, 22, '
                        f'{0.75 * float(p):.2f})">{float(p):.0%}</td>' for k, p in enumerate(probs))
        body.append(f"<tr><td>{escape(title)}</td>{cells}</tr>")
    return f"<table><caption>{escape(caption)}</caption><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def probabilities_html(rows: list[tuple[str, Prediction | None]]) -> str:
    """Every model's age-bin (one table per bin scheme), gender and ethnicity probabilities for one face."""
    tables = []
    schemes: dict[tuple[str, ...], list[tuple[str, np.ndarray]]] = {}
    for title, pred in rows:
        if pred is not None and pred.age_bin_probs is not None:
            schemes.setdefault(tuple(pred.age_bin_names), []).append((title, pred.age_bin_probs))
    for names, scheme_rows in schemes.items():
        tables.append(probability_table("age bin (years), after each model's bin-aware decision",
                                        tuple(map(bin_label, names)), scheme_rows))
    for task, names in (("gender", GENDER_NAMES), ("ethnicity", ETHNICITY_NAMES)):
        task_rows = [(title, getattr(pred, f"{task}_probs")) for title, pred in rows
                     if pred is not None and getattr(pred, f"{task}_probs") is not None]
        if task_rows:
            tables.append(probability_table(task, names, task_rows))
    return f'<div class="agekit-table agekit-probs">{"".join(tables)}</div>' if tables else ""
