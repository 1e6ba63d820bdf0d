"""agekit.ui.serving: the cache budget, the short error payloads and the heap setting (no server needed)."""

from __future__ import annotations

import inspect
import os
import re
import time
from pathlib import Path
from types import SimpleNamespace

import gradio as gr
import gradio.queueing
import pytest

from agekit.ui import serving
from agekit.ui.guard import MAX_MESSAGE_CHARS


def app_with_files(tmp_path: Path, ages_s: list[float], size: int = 1000, kept: tuple[int, ...] = ()) -> tuple:
    """A stand-in for a Blocks whose temp-file set holds one `size`-byte file per age (seconds old), each in its
    own folder as Gradio stores them; files with an index in `kept` are marked keep_in_cache (examples)."""
    now = time.time()
    files = []
    for i, age in enumerate(ages_s):
        folder = tmp_path / f"hash{i}"
        folder.mkdir()
        path = folder / "photo.png"
        path.write_bytes(b"x" * size)
        os.utime(path, (now - age, now - age))
        files.append(path)
    keep = SimpleNamespace(keep_in_cache={str(files[i]) for i in kept})
    return SimpleNamespace(blocks={1: keep}, temp_file_sets=[{str(f) for f in files}]), files


def test_trim_cache_deletes_the_oldest_files_down_to_the_budget(tmp_path: Path) -> None:
    demo, files = app_with_files(tmp_path, [500, 400, 300, 200, 100])
    freed = serving.trim_cache(demo, budget_bytes=2500, min_age_s=60)
    assert freed == 3000
    assert [f.exists() for f in files] == [False, False, False, True, True]
    assert not files[0].parent.exists()  # Gradio's per-file folder goes too


def test_trim_cache_keeps_young_and_example_files(tmp_path: Path) -> None:
    demo, files = app_with_files(tmp_path, [500, 400, 30, 20, 10], kept=(0,))
    freed = serving.trim_cache(demo, budget_bytes=0, min_age_s=60)
    # the example (kept) and the three files younger than a minute stay, over budget or not
    assert freed == 1000 and [f.exists() for f in files] == [True, False, True, True, True]
    assert serving.trim_cache(demo, budget_bytes=10_000, min_age_s=0) == 0  # within budget: nothing to do


def test_gradio_error_payloads_are_shown_and_short() -> None:
    long = serving.short_error_payload(ValueError("could not convert " + "9" * 100_000), show_error=True)
    assert long["error"].startswith("could not convert 999") and len(long["error"]) < MAX_MESSAGE_CHARS + 60
    app_error = serving.short_error_payload(gr.Error("no face found"), show_error=False)
    assert app_error["error"] == "no face found"


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="glibc mallopt is Linux-only here")
def test_the_gradio_internals_serving_sets_are_still_there() -> None:
    """No public Gradio API sets the queue's poll interval, its error payload or lists its running jobs, so
    serving.py reaches into them. This fails, loudly, on a Gradio that renames or stops using them (and on any
    Gradio other than the pinned one, which has to be checked by hand): without it the app would quietly lose a
    limit or its short error messages."""
    requirements = (Path(__file__).resolve().parents[1] / "requirements.txt").read_text()
    pinned = re.search(r"^gradio==(\S+)", requirements, re.MULTILINE)
    assert gr.__version__ == pinned.group(1), "check serving.py's use of Gradio internals, then update this pin"
    queue_source = inspect.getsource(gradio.queueing.Queue)
    assert "self.sleep_when_free" in queue_source and "self.active_jobs" in queue_source
    module_source = inspect.getsource(gradio.queueing)
    assert len(re.findall(r"= error_payload\(", module_source)) >= 2  # called through the module global we replace
    assert list(inspect.signature(gradio.queueing.error_payload).parameters) == ["error", "show_error"]
    demo = gr.Blocks()
    demo.queue()
    assert isinstance(demo._queue.sleep_when_free, float) and isinstance(demo._queue.active_jobs, list)


def test_heap_setting_applies_on_glibc() -> None:
    assert serving.limit_heap_fragmentation() is True


def test_the_queue_polls_every_5_ms_not_every_1() -> None:
    with gr.Blocks() as demo:
        gr.Markdown("x")
    demo.queue()
    assert serving.poll_queue_every(demo, serving.QUEUE_POLL_S) is True
    assert demo._queue.sleep_when_free == serving.QUEUE_POLL_S == 0.005
    assert serving.poll_queue_every(SimpleNamespace(), 0.005) is False  # a Gradio without the setting: left as is


class ScriptedQueue:
    """A stand-in for Gradio's queue whose `active_jobs` says busy or idle from a script, one entry per look."""

    def __init__(self, busy: list[bool]) -> None:
        self.busy = iter(busy)

    @property
    def active_jobs(self) -> list:
        return [[object()]] if next(self.busy, False) else [None]


def test_free_heap_is_returned_only_when_idle_and_well_above_the_start(monkeypatch: pytest.MonkeyPatch) -> None:
    # MB at each look: the start, then per check (and once more after each trim)
    resident = iter([1000.0, 1100.0, 1400.0, 1010.0, 1400.0, 1400.0])
    released = []
    monkeypatch.setattr(serving, "resident_mb", lambda: next(resident))
    monkeypatch.setattr(serving, "release_free_heap", lambda: released.append(True) or True)
    demo = SimpleNamespace(_queue=ScriptedQueue([True, False, False, False]))
    trims = serving.trim_memory_when_idle(demo, idle_s=0.0, above_mb=150, poll_s=0.0, rounds=4)
    # check 1: an event runs; 2: only +100 MB; 3: +400 → trimmed (1010 MB after); 4: +400 again → trimmed again
    assert trims == len(released) == 2


def test_no_trim_while_events_run_or_before_the_idle_time(monkeypatch: pytest.MonkeyPatch) -> None:
    readings = iter([1000.0] + [5000.0] * 20)  # far above the start at every check
    monkeypatch.setattr(serving, "resident_mb", lambda: next(readings))
    monkeypatch.setattr(serving, "release_free_heap", lambda: True)
    busy = SimpleNamespace(_queue=ScriptedQueue([True] * 5))
    assert serving.trim_memory_when_idle(busy, idle_s=0.0, poll_s=0.0, rounds=5) == 0
    readings = iter([1000.0] + [5000.0] * 20)
    idle = SimpleNamespace(_queue=ScriptedQueue([]))
    assert serving.trim_memory_when_idle(idle, idle_s=60.0, poll_s=0.0, rounds=5) == 0  # not idle for long enough


def test_download_files_are_kept_a_minute_then_removed_by_the_next_write(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(serving, "DOWNLOAD_DIR", tmp_path / "downloads")
    old = serving.write_download("agekit_a.csv", "photo,face\n")
    recent = serving.write_download("agekit_a.csv", "photo,face\na.jpg,1\n")
    assert old != recent and old.name == recent.name == "agekit_a.csv"  # one folder per write: names stay plain
    aged = time.time() - serving.DOWNLOAD_TTL_S - 5
    os.utime(old.parent, (aged, aged))
    serving.write_download("agekit_b.json", "{}")
    assert not old.parent.exists() and recent.read_text() == "photo,face\na.jpg,1\n"
