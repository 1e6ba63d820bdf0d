"""Benchmark rows and how they are printed (markdown) and stored (CSV)."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from bench.timing import Timing


@dataclass
class BenchRow:
    """One measured quantity: median and p90 of its runs, milliseconds, and the goal it is held against."""

    benchmark: str  # what was timed, e.g. "model batch 1 (per face)", "detection 1920x1280"
    subject: str  # which model / photo / command
    median_ms: float
    p90_ms: float
    runs: int
    min_ms: float | None = None  # fastest run: the machine's speed when other processes compete for the cores
    goal_ms: float | None = None  # the target for the median, if it has one
    note: str = ""  # derived values such as throughput (faces/s)

    @classmethod
    def from_timing(cls, benchmark: str, subject: str, timing: Timing, goal_ms: float | None = None,
                    note: str = "", per: int = 1) -> BenchRow:
        """A row from repeated runs; `per` divides each duration (e.g. a batch of 32 → ms per face)."""
        return cls(benchmark, subject, timing.median_ms / per, timing.p90_ms / per, timing.runs,
                   min(timing.seconds) * 1000.0 / per, goal_ms, note)

    @property
    def meets_goal(self) -> bool | None:
        """Whether the median is within the goal (None when there is no goal)."""
        return None if self.goal_ms is None else self.median_ms <= self.goal_ms


CSV_COLUMNS = (*(f.name for f in fields(BenchRow)), "meets_goal")


def format_ms(value: float | None) -> str:
    """Milliseconds for a table cell: '3.42 ms', '123 ms', '1.53 s'; '' for None."""
    if value is None:
        return ""
    if value >= 1000.0:
        return f"{value / 1000.0:.2f} s"
    if value >= 100.0:
        return f"{value:.0f} ms"
    return f"{value:.3g} ms" if value >= 1.0 else f"{value:.2f} ms"


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A GitHub-flavoured markdown table, columns padded to equal width; cells are str()-ed."""
    cells = [[str(c) for c in headers]] + [[str(c) for c in row] for row in rows]
    if any(len(row) != len(headers) for row in cells):
        raise ValueError(f"every row needs {len(headers)} cells, one per header {list(headers)}")
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]

    def line(row: list[str]) -> str:
        return "| " + " | ".join(cell.ljust(width) for cell, width in zip(row, widths)) + " |"

    return "\n".join([line(cells[0]), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, cells[1:])])


def goal_mark(row: BenchRow) -> str:
    """'yes' / 'NO' / '' for the goal column."""
    return {None: "", True: "yes", False: "NO"}[row.meets_goal]


def bench_table(rows: Sequence[BenchRow]) -> str:
    """Markdown table of benchmark rows: median, p90, fastest run, runs, goal and whether the median meets it."""
    headers = ("benchmark", "subject", "median", "p90", "min", "runs", "goal", "meets goal", "note")
    body = [(r.benchmark, r.subject, format_ms(r.median_ms), format_ms(r.p90_ms), format_ms(r.min_ms), r.runs,
             format_ms(r.goal_ms), goal_mark(r), r.note) for r in rows]
    return markdown_table(headers, body)


def write_csv(rows: Sequence[BenchRow], path: str | Path) -> Path:
    """Write the rows (CSV_COLUMNS, ms rounded to 0.01 ms) to `path`, creating its folder; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        for row in rows:
            record = asdict(row)
            for key in ("median_ms", "p90_ms", "min_ms", "goal_ms"):
                if record[key] is not None:
                    record[key] = round(record[key], 2)
            writer.writerow({**record, "meets_goal": "" if row.meets_goal is None else row.meets_goal})
    return path
