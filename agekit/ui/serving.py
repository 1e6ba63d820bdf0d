"""How the app is served: queue slots, limits and clean-up that keep one process's memory and disk bounded
whatever clients send (measured with `python -m bench.load_test --mode sessions,uploads,burst`).

- Every event a client can reach by `fn_index` keeps little: sessions keep face crops and predictions only
  (compare.FaceAnalysis.for_state), at most SESSION_CAPACITY sessions, each for STATE_TTL_S.
- Uploads are refused above MAX_UPLOAD_BYTES; files the app received or wrote (uploads, annotated photos,
  Grad-CAM PNGs) are deleted oldest first once they pass CACHE_BUDGET_BYTES, after DELETE_CACHE's age (the
  Blocks' delete_cache) and all of them at shutdown.
- Results files offered for download (CSV, JSON) are written under DOWNLOAD_DIR; each write removes those over
  DOWNLOAD_TTL_S old (Gradio has copied them into its cache by then).
- glibc hands big freed buffers back at once and, when the app is idle and well above its starting memory, the
  rest of the free heap (limit_heap_fragmentation, trim_memory_when_idle); ordinary requests reuse warm memory.
- The page's model events and the API endpoints have separate queue slots, so an API burst queues behind
  itself, not in front of a visitor; the queue looks for new events every QUEUE_POLL_S.
- Gradio's own errors (a bad file path, a malformed argument) reach API callers as a short message.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import shutil
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import gradio as gr
import gradio.queueing

from agekit.faces import MAX_FILE_BYTES
from agekit.ui.guard import capped

log = logging.getLogger("agekit.ui")

PAGE_MODELS = "page-models"  # concurrency id of the page's detection / model / Grad-CAM events
API_MODELS = "api-models"  # concurrency id of the "predict" and "explain" endpoints
API_CONCURRENCY = 1  # API requests served at once; the page keeps its own AGEKIT_CONCURRENCY slots
QUEUE_SIZE = 64  # events waiting at most (page and API together); more get "queue is full"
SESSION_CAPACITY = 500  # sessions whose state is kept, oldest dropped first (Gradio's default: 10,000)
STATE_TTL_S = 3600  # a session's face crops are dropped this long after its last analysis
MAX_UPLOAD_BYTES = MAX_FILE_BYTES  # Gradio refuses larger uploads (HTTP 413) before they reach a callback
CACHE_BUDGET_BYTES = 256 * 1024**2  # files the app received or wrote, at most (older ones deleted first)
CACHE_MIN_AGE_S = 60.0  # younger files are never deleted: a queued event may still read them
CACHE_SWEEP_S = 10.0  # how often the cache is checked against the budget
DELETE_CACHE = (600, 3600)  # Gradio's own clean-up: every 10 min, files older than 1 h; all at shutdown
# Results files (CSV, JSON) are written here and copied by Gradio into its cache when the event returns; each
# write removes the ones older than DOWNLOAD_TTL_S, so the folder holds only the last minute's.
DOWNLOAD_DIR = Path(tempfile.gettempdir()) / f"agekit_downloads_{os.getpid()}"
DOWNLOAD_TTL_S = 60.0
# Gradio's queue loop checks for new events every 1 ms when it has nothing to start (`sleep_when_free`): on 2 vCPUs
# those wake-ups, each taking the GIL, slow the model events down; every 5 ms is enough (docs/experiments.md, "End
# to end"). Gradio has no public setting for it: tests/test_serving.py fails if a Gradio version drops it.
QUEUE_POLL_S = 0.005
# Free heap memory goes back to the system (glibc malloc_trim) once the app has been idle this long and its resident
# memory is this far above what it was when it started serving: giant photos leave fragmented heap behind, while
# ordinary photos stay well below the mark (docs/experiments.md, "End to end"), so their requests keep reusing
# warm memory (no page faults).
TRIM_IDLE_S = 1.0
TRIM_ABOVE_MB = 300


def launch(demo: gr.Blocks, port: int, page_concurrency: int, host: str | None = None, css: str | None = None,
           **launch_kwargs: Any) -> gr.Blocks:
    """Queue and launch `demo` with every limit above; starts the cache-budget thread. Blocks unless
    launch_kwargs has prevent_thread_lock=True (tests)."""
    show_short_errors()
    limit_heap_fragmentation()
    demo.queue(default_concurrency_limit=page_concurrency, max_size=QUEUE_SIZE)
    poll_queue_every(demo, QUEUE_POLL_S)
    sweeper = threading.Thread(target=keep_cache_within_budget, args=(demo,), daemon=True, name="cache-budget")
    sweeper.start()
    trimmer = threading.Thread(target=trim_memory_when_idle, args=(demo,), daemon=True, name="memory-trim")
    trimmer.start()
    demo.launch(server_name=host, server_port=port, max_file_size=MAX_UPLOAD_BYTES, show_error=True,
                state_session_capacity=SESSION_CAPACITY, css=css, **launch_kwargs)
    return demo


def poll_queue_every(demo: gr.Blocks, seconds: float) -> bool:
    """Set how often the queue of a queued `demo` looks for new events when idle (a private Gradio attribute:
    returns False, and logs, where this Gradio has no such setting)."""
    queue = getattr(demo, "_queue", None)
    if queue is None or not hasattr(queue, "sleep_when_free"):
        log.warning("this Gradio's queue has no sleep_when_free; the queue polls at Gradio's default rate")
        return False
    queue.sleep_when_free = seconds
    return True


# ---------------------------------------------------------------- disk

def write_download(name: str, text: str) -> Path:
    """Write a results file for the page to offer as a download: DOWNLOAD_DIR/<unique folder>/<name>."""
    now = time.time()
    if DOWNLOAD_DIR.is_dir():
        for folder in DOWNLOAD_DIR.iterdir():
            try:
                if now - folder.stat().st_mtime > DOWNLOAD_TTL_S:
                    shutil.rmtree(folder, ignore_errors=True)
            except OSError:
                continue  # removed by a concurrent write
    folder = DOWNLOAD_DIR / uuid.uuid4().hex
    folder.mkdir(parents=True)
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


def app_files(demo: gr.Blocks) -> list[Path]:
    """Files Gradio recorded as received or written by this app (uploads, outputs), minus those it must keep
    (default values, examples)."""
    keep: set[str] = set()
    for block in list(demo.blocks.values()):
        keep.update(getattr(block, "keep_in_cache", ()))
    files: set[str] = set()
    for file_set in list(demo.temp_file_sets):
        files.update(list(file_set))
    return [Path(f) for f in files - keep]


def trim_cache(demo: gr.Blocks, budget_bytes: int = CACHE_BUDGET_BYTES,
               min_age_s: float = CACHE_MIN_AGE_S) -> int:
    """Delete the app's files, oldest first, until they total at most `budget_bytes` (files younger than
    `min_age_s` are kept whatever the total). Returns the bytes freed."""
    now = time.time()
    stats = []
    for path in app_files(demo):
        try:
            stat = path.stat()
        except OSError:
            continue
        stats.append((stat.st_mtime, stat.st_size, path))
    total = sum(size for _, size, _ in stats)
    freed = 0
    for mtime, size, path in sorted(stats, key=lambda item: item[0]):
        if total - freed <= budget_bytes or now - mtime < min_age_s:
            break
        try:
            path.unlink()
            freed += size
            path.parent.rmdir()  # Gradio stores each file in its own folder; fails harmlessly if not empty
        except OSError:
            pass
    return freed


def keep_cache_within_budget(demo: gr.Blocks, interval_s: float = CACHE_SWEEP_S) -> None:
    """Forever: trim_cache every `interval_s` seconds (the cache-budget daemon thread)."""
    while True:
        time.sleep(interval_s)
        try:
            freed = trim_cache(demo)
        except Exception:  # the sweeper must outlive any one bad file
            log.exception("cache trim failed")
            continue
        if freed:
            log.info("cache over its %d MB budget: deleted %.1f MB of the oldest files",
                     CACHE_BUDGET_BYTES // 2**20, freed / 2**20)


# ---------------------------------------------------------------- memory

M_TRIM_THRESHOLD = -1  # glibc mallopt parameter numbers (malloc.h)
M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8
MMAP_THRESHOLD_BYTES = 32 * 1024**2  # glibc's own ceiling for its dynamic threshold
TRIM_THRESHOLD_BYTES = 64 * 1024**2


def _glibc() -> ctypes.CDLL | None:
    """The C library, for mallopt / malloc_trim; None off POSIX or where it cannot be loaded."""
    libc_name = ctypes.util.find_library("c")
    if os.name != "posix" or not libc_name:
        return None
    try:
        return ctypes.CDLL(libc_name)
    except OSError:
        return None


def limit_heap_fragmentation() -> bool:
    """glibc: allocations of 32 MB and more (decoded photos of ~11 MP and up, their copies) come from mmap and go
    back to the system when freed, free memory above 64 MB at the top of the heap is given back, and threads
    share 2 malloc arenas. By default glibc raises its mmap threshold after each freed big block and gives every
    thread its own arena, so freed photo buffers can stay in the process as fragmented heap. The threshold is not
    lower on purpose: at 1 MB every activation tensor of detection and the models was a fresh mmap whose pages
    fault in again on each request (docs/experiments.md, "End to end"). Returns
    whether it applied (False off glibc). Memory under hostile sessions: bench.hostile_load."""
    libc = _glibc()
    try:
        return libc is not None and (bool(libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES))
                                     and bool(libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES))
                                     and bool(libc.mallopt(M_ARENA_MAX, 2)))
    except AttributeError:  # a C library without mallopt
        return False


def resident_mb() -> float | None:
    """This process's resident memory (MB), or None where /proc is missing."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def release_free_heap() -> bool:
    """glibc's malloc_trim(0): free memory of every arena, fragmented pages included, goes back to the system.
    Returns whether anything was released (False off glibc)."""
    libc = _glibc()
    try:
        return libc is not None and bool(libc.malloc_trim(0))
    except AttributeError:  # a C library without malloc_trim
        return False


def queue_busy(demo: gr.Blocks) -> bool:
    """Whether any queued event of `demo` is running now."""
    queue = getattr(demo, "_queue", None)
    return any(job is not None for job in getattr(queue, "active_jobs", None) or [])


def trim_memory_when_idle(demo: gr.Blocks, idle_s: float = TRIM_IDLE_S, above_mb: float = TRIM_ABOVE_MB,
                          poll_s: float = 0.25, rounds: int | None = None) -> int:
    """Every `poll_s`: once no event has run for `idle_s` and resident memory is more than `above_mb` over the
    level at the first check, release_free_heap(). `rounds`: stop after that many checks (tests); returns how
    many times it trimmed."""
    baseline, last_busy, trims = resident_mb(), time.monotonic(), 0
    while rounds is None or rounds > 0:
        rounds = None if rounds is None else rounds - 1
        time.sleep(poll_s)
        now = time.monotonic()
        if queue_busy(demo):
            last_busy = now
            continue
        resident = resident_mb()
        if baseline is None or resident is None or now - last_busy < idle_s or resident - baseline <= above_mb:
            continue
        if release_free_heap():
            trims += 1
            after = resident_mb() or resident
            log.info("idle: resident memory %.0f MB → %.0f MB after returning free heap", resident, after)
            baseline = max(baseline, after - above_mb)  # what could not be returned is not trimmed for again
        last_busy = now  # not again before the next idle spell
    return trims


# ---------------------------------------------------------------- errors

_gradio_error_payload = gradio.queueing.error_payload


def short_error_payload(error: BaseException | None, show_error: bool) -> dict[str, Any]:
    """Gradio's error payload with the message cut to guard.MAX_MESSAGE_CHARS (Gradio's own messages may
    quote a whole argument back)."""
    content = _gradio_error_payload(error, show_error)
    if isinstance(content.get("error"), str):
        content["error"] = capped(content["error"])
    return content


def show_short_errors() -> None:
    """Route the queue's error payloads through short_error_payload (with launch(show_error=True), Gradio's own
    errors reach API callers as a message instead of {"error": null})."""
    gradio.queueing.error_payload = short_error_payload
