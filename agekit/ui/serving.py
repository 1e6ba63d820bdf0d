"""How the app is served: queue slots, limits and clean-up that keep one process's memory and disk bounded
whatever clients send (measured with `python -m bench.load_test --mode sessions,uploads,burst`).

- Every event a client can reach by `fn_index` keeps little: sessions keep face crops and predictions only
  (compare.FaceAnalysis.for_state), at most SESSION_CAPACITY sessions, each for STATE_TTL_S.
- Uploads are refused above MAX_UPLOAD_BYTES; files the app received or wrote (uploads, annotated photos,
  Grad-CAM PNGs) are deleted oldest first once they pass CACHE_BUDGET_BYTES, after DELETE_CACHE's age (the
  Blocks' delete_cache) and all of them at shutdown.
- The page's model events and the API endpoints have separate queue slots, so an API burst queues behind
  itself, not in front of a visitor.
- Gradio's own errors (a bad file path, a malformed argument) reach API callers as a short message.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import threading
import time
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


def launch(demo: gr.Blocks, port: int, page_concurrency: int, host: str | None = None, css: str | None = None,
           **launch_kwargs: Any) -> gr.Blocks:
    """Queue and launch `demo` with every limit above; starts the cache-budget thread. Blocks unless
    launch_kwargs has prevent_thread_lock=True (tests)."""
    show_short_errors()
    limit_heap_fragmentation()
    demo.queue(default_concurrency_limit=page_concurrency, max_size=QUEUE_SIZE)
    sweeper = threading.Thread(target=keep_cache_within_budget, args=(demo,), daemon=True, name="cache-budget")
    sweeper.start()
    demo.launch(server_name=host, server_port=port, max_file_size=MAX_UPLOAD_BYTES, show_error=True,
                state_session_capacity=SESSION_CAPACITY, css=css, **launch_kwargs)
    return demo


# ---------------------------------------------------------------- disk

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

M_MMAP_THRESHOLD = -3  # glibc mallopt parameter numbers (malloc.h)
M_ARENA_MAX = -8
MMAP_THRESHOLD_BYTES = 1024 * 1024


def limit_heap_fragmentation() -> bool:
    """glibc: allocations of 1 MB and more (decoded photos, their copies) come from mmap and go back to the
    system when freed, and threads share 2 malloc arenas. By default glibc raises its mmap threshold after each
    freed big block (up to 32 MB) and gives every thread its own arena, so freed photo buffers can stay in the
    process as fragmented heap. Returns whether it applied (False off glibc). Not measured on its own: the
    sessions check of bench.hostile_load measures the whole app with it."""
    libc_name = ctypes.util.find_library("c")
    if os.name != "posix" or not libc_name:
        return False
    try:
        libc = ctypes.CDLL(libc_name)
        return bool(libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)) and bool(libc.mallopt(M_ARENA_MAX, 2))
    except (OSError, AttributeError):
        return False


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
