"""Hostile clients against the real app, on 127.0.0.1 only: `python -m bench.hostile_load`.

    python -m bench.hostile_load [--checks sessions,uploads,burst] [--sessions 100] [--uploads 500]
                                 [--analyse-every 10] [--burst 40] [--workers 2] [--checkpoints DIR]

Each check starts `python app.py` with a fresh GRADIO_TEMP_DIR (deleted afterwards) and always stops it.

sessions  A 39-megapixel PNG (7200x5400, one face). One warm-up session, then the server's RSS is the baseline;
          then --sessions new sessions (fresh session hash each, --workers at a time) each upload the photo and
          call every event in the app's /config by fn_index — the page's private events and the named endpoints
          alike — with the photo in every image input (bench.gradio_wire). Bar: final RSS within +300 MB.
uploads   --uploads distinct 800x600 PNGs (~0.7 MB, noise over a face), each uploaded, every --analyse-every-th
          also sent through the page's photo event (annotated JPEG written); the temp folder's size right after and
          once the app's cache budget had time to act (agekit.ui.serving: CACHE_MIN_AGE_S + 2 x CACHE_SWEEP_S).
          Also: a file one byte over the upload limit gets HTTP 413.
burst     The page's photo event (1920x1280 photo), 5 times alone, then 5 times while --burst concurrent API
          clients each call "explain" on the same photo: the page's latency should barely move.
Exit code 1 when a bar is missed.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Self

import httpx
import numpy as np
from PIL import Image

from bench.gradio_wire import EventAnswer, EventInfo, WireClient, app_events, event_index, event_inputs
from bench.photos import LARGE_SIZE, portrait_photo
from bench.server import AppServer, running_app
from bench.table import format_ms, markdown_table
from bench.timing import median

BIG_SIZE = (7200, 5400)  # 38.9 MP, under agekit.faces.MAX_PIXELS
RSS_BAR_MB = 300.0
CHECKS = ("sessions", "uploads", "burst")


def rss_mb(pid: int) -> float:
    """Resident set size of process `pid`, MB (Linux /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def folder_mb(folder: Path) -> float:
    """Total size of the files under `folder`, MB."""
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 2**20


class PeakRss:
    """Samples a process's RSS every 0.25 s in a thread; `peak` is the largest seen (MB)."""

    def __init__(self, pid: int) -> None:
        self.pid, self.peak, self._stop = pid, 0.0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.25):
            self.peak = max(self.peak, rss_mb(self.pid))

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


# ---------------------------------------------------------------- sessions

def every_event_session(url: str, photo: Path) -> Counter:
    """One new session: upload `photo`, call every event of the app with it; Counter of 'ok' / error kinds."""
    outcomes: Counter = Counter()
    with WireClient(url) as client:
        config = client.config()
        image = client.upload(photo)
        for event in app_events(config):
            answer = client.call(event.fn_index, event_inputs(config, event, image))
            outcomes["ok" if answer.ok else f"{event.api_name}: {str(answer.error)[:80]}"] += 1
    return outcomes


def check_sessions(server: AppServer, photo: Path, sessions: int, workers: int) -> tuple[list[str], bool]:
    every_event_session(server.url, photo)  # warm-up: every code path once
    time.sleep(2.0)
    baseline = rss_mb(server.process.pid)
    outcomes: Counter = Counter()
    start = time.perf_counter()
    with PeakRss(server.process.pid) as peak, ThreadPoolExecutor(workers) as pool:
        for result in pool.map(lambda _: every_event_session(server.url, photo), range(sessions)):
            outcomes += result
    seconds = time.perf_counter() - start
    time.sleep(2.0)
    final = rss_mb(server.process.pid)
    growth = final - baseline
    row = [f"{sessions} sessions x every event, 39-MP PNG", f"{baseline:.0f} MB", f"{peak.peak:.0f} MB",
           f"{final:.0f} MB", f"{growth:+.0f} MB", f"≤ +{RSS_BAR_MB:.0f} MB", "yes" if growth <= RSS_BAR_MB else "NO",
           f"{seconds:.0f} s", "; ".join(f"{k} ({v}x)" for k, v in sorted(outcomes.items()))]
    return row, growth <= RSS_BAR_MB


SESSION_HEADERS = ("check", "warm RSS", "peak RSS", "final RSS", "growth", "bar", "met", "wall", "event answers")


# ---------------------------------------------------------------- uploads

def distinct_photo(base: np.ndarray, index: int, folder: Path) -> Path:
    """`base` with noise seeded by `index` in its top rows (distinct bytes, same face), as PNG."""
    pixels = base.copy()
    rng = np.random.default_rng(index)
    pixels[:, :] ^= rng.integers(0, 64, pixels.shape, dtype=np.uint8)
    path = folder / f"upload_{index:04d}.png"
    Image.fromarray(pixels).save(path, compress_level=1)
    return path


def upload_and_analyse(url: str, base: np.ndarray, index: int, folder: Path, fn_index: int, analyse: bool) -> bool:
    """Upload photo `index`; with `analyse`, also send it through the page's photo event (which writes the
    annotated JPEG). True when the server accepted it (and answered the event)."""
    path = distinct_photo(base, index, folder)
    try:
        with WireClient(url) as client:
            image = client.upload(path)
            return client.call(fn_index, [image]).ok if analyse else True
    finally:
        path.unlink()


def check_uploads(server: AppServer, temp_dir: Path, uploads: int, workers: int, settle_s: float,
                  work: Path, analyse_every: int) -> tuple[list[list[str]], bool]:
    from agekit.ui.serving import CACHE_BUDGET_BYTES, MAX_UPLOAD_BYTES

    with WireClient(server.url) as client:
        fn_index = event_index(client.config(), "analyse_photo")
        oversized = work / "oversized.bin"
        with oversized.open("wb") as handle:
            handle.truncate(MAX_UPLOAD_BYTES + 1)
        try:
            client.upload(oversized)
            refused = "accepted (NO)"
        except httpx.HTTPStatusError as err:
            refused = f"HTTP {err.response.status_code}"
        oversized.unlink()
    base = np.asarray(portrait_photo((800, 600)))
    start = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        answers = list(pool.map(lambda i: upload_and_analyse(server.url, base, i, work, fn_index,
                                                             i % analyse_every == 0), range(uploads)))
    seconds = time.perf_counter() - start
    right_after = folder_mb(temp_dir)
    time.sleep(settle_s)
    settled = folder_mb(temp_dir)
    budget = CACHE_BUDGET_BYTES / 2**20
    rows = [[f"{uploads} distinct 800x600 PNG uploads, every {analyse_every}th through the photo event",
             f"{sum(answers)} ok", f"{right_after:.0f} MB",
             f"{settled:.0f} MB (after {settle_s:.0f} s)", f"≤ {budget:.0f} MB", "yes" if settled <= budget else "NO",
             f"{seconds:.0f} s"],
            [f"one upload of {MAX_UPLOAD_BYTES + 1:,} bytes", refused, "", "", "HTTP 413",
             "yes" if refused == "HTTP 413" else "NO", ""]]
    return rows, settled <= budget and refused == "HTTP 413"


UPLOAD_HEADERS = ("check", "answers", "temp folder right after", "temp folder settled", "bar", "met", "wall")


# ---------------------------------------------------------------- explain burst

def timed_page_analyses(url: str, photo: Path, fn_index: int, times: int) -> list[float]:
    """Seconds of `times` page photo events (upload + analysis), one after another, in one session."""
    seconds = []
    with WireClient(url) as client:
        for _ in range(times):
            start = time.perf_counter()
            answer = client.call(fn_index, [client.upload(photo)])
            seconds.append(time.perf_counter() - start)
            if not answer.ok:
                raise SystemExit(f"the page's photo event failed: {answer.error}")
    return seconds


def api_explain(url: str, photo: Path, config: dict, event: EventInfo) -> tuple[float, EventAnswer]:
    """One API "explain" call with the endpoint's default arguments (face 1, first model, age, GradCAM)."""
    start = time.perf_counter()
    with WireClient(url) as client:
        answer = client.call(event.fn_index, event_inputs(config, event, client.upload(photo)))
    return time.perf_counter() - start, answer


def check_burst(server: AppServer, photo: Path, burst: int) -> tuple[list[list[str]], bool]:
    with WireClient(server.url) as client:
        config = client.config()
    page_fn = event_index(config, "analyse_photo")
    explain = next(e for e in app_events(config) if e.api_name == "explain")
    timed_page_analyses(server.url, photo, page_fn, 1)  # warm-up
    alone = timed_page_analyses(server.url, photo, page_fn, 5)
    with ThreadPoolExecutor(burst) as pool:
        futures = [pool.submit(api_explain, server.url, photo, config, explain) for _ in range(burst)]
        time.sleep(1.0)  # the burst is queued before the page asks
        during = timed_page_analyses(server.url, photo, page_fn, 5)
        explains = [f.result() for f in futures]
    explain_s = [s for s, _ in explains]
    errors = Counter(a.error for _, a in explains if not a.ok)
    ratio = median(during) / median(alone)
    rows = [["page photo event alone (5 runs)", format_ms(median(alone) * 1000), format_ms(max(alone) * 1000), ""],
            [f"page photo event during {burst} API explain calls", format_ms(median(during) * 1000),
             format_ms(max(during) * 1000), f"{ratio:.1f}x the median alone"],
            [f"API explain, {burst} concurrent callers", format_ms(median(explain_s) * 1000),
             format_ms(max(explain_s) * 1000),
             f"{burst - sum(errors.values())} ok" + "".join(f"; {n}x {e}" for e, n in errors.items())]]
    return rows, not errors


BURST_HEADERS = ("what", "median", "max", "note")


# ---------------------------------------------------------------- main

def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.hostile_load", description=__doc__.split("\n")[0])
    parser.add_argument("--checks", default=",".join(CHECKS), help=f"comma-separated, from {CHECKS}")
    parser.add_argument("--sessions", type=int, default=100, help="new sessions sending the 39-MP photo")
    parser.add_argument("--uploads", type=int, default=500, help="distinct uploads")
    parser.add_argument("--analyse-every", type=int, default=10,
                        help="uploads check: every Nth upload also goes through the page's photo event")
    parser.add_argument("--burst", type=int, default=40, help="concurrent API explain callers")
    parser.add_argument("--workers", type=int, default=2, help="sessions / uploads sent at a time")
    parser.add_argument("--checkpoints", type=Path, default=None,
                        help="checkpoint folder (default: $AGEKIT_CHECKPOINTS, else app.py's ./checkpoints)")
    args = parser.parse_args(argv)
    args.checks = [c for c in args.checks.split(",") if c]
    if set(args.checks) - set(CHECKS):
        parser.error(f"unknown checks {sorted(set(args.checks) - set(CHECKS))}; choose from {CHECKS}")
    if min(args.sessions, args.uploads, args.burst, args.workers, args.analyse_every) < 1:
        parser.error("--sessions, --uploads, --analyse-every, --burst and --workers must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    from agekit.ui.serving import CACHE_MIN_AGE_S, CACHE_SWEEP_S

    args = parse_args(argv)
    passed = True
    with tempfile.TemporaryDirectory(prefix="agekit_hostile_") as tmp:
        work = Path(tmp)
        for check in args.checks:
            temp_dir = work / f"gradio_{check}"
            temp_dir.mkdir()
            with running_app(checkpoints=args.checkpoints, timeout=300.0,
                             extra_env={"GRADIO_TEMP_DIR": str(temp_dir)}) as server:
                print(f"[{check}] serving at {server.url}", flush=True)
                if check == "sessions":
                    photo = work / "big_39mp.png"
                    portrait_photo(BIG_SIZE).save(photo, compress_level=1)
                    row, ok = check_sessions(server, photo, args.sessions, args.workers)
                    print(markdown_table(SESSION_HEADERS, [row]), flush=True)
                elif check == "uploads":
                    rows, ok = check_uploads(server, temp_dir, args.uploads, args.workers,
                                             CACHE_MIN_AGE_S + 2 * CACHE_SWEEP_S, work, args.analyse_every)
                    print(markdown_table(UPLOAD_HEADERS, rows), flush=True)
                else:
                    photo = work / "photo_1920x1280.jpg"
                    portrait_photo(LARGE_SIZE).save(photo, quality=90)
                    rows, ok = check_burst(server, photo, args.burst)
                    print(markdown_table(BURST_HEADERS, rows), flush=True)
                passed &= ok
    print(f"machine: {os.cpu_count()} CPUs, 1-min load average {os.getloadavg()[0]:.1f}")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
