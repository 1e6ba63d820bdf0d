"""The benchmark helpers on known inputs: order statistics, tables, CSV, server lifecycle, load-test bookkeeping.

No timing assertions: what is checked is arithmetic, formatting and that servers are started and stopped.
"""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from agekit.faces import FaceDetector
from bench.big_photos import phone_jpeg
from bench.gradio_wire import app_events, event_index, event_inputs
from bench.load_test import (
    LoadResult,
    QueueSetting,
    RequestResult,
    best_setting,
    check_answer,
    result_row,
)
from bench.photos import LARGE_SIZE, SMALL_SIZE, group_photo, write_benchmark_photos
from bench.server import (
    AppDidNotStart,
    answers_http,
    app_environment,
    free_port,
    running_app,
)
from bench.speed import copy_checkpoints
from bench.table import BenchRow, bench_table, format_ms, markdown_table, write_csv
from bench.timing import Timing, median, percentile, time_calls

# ---------------------------------------------------------------- order statistics


def test_median_of_odd_and_even_counts() -> None:
    assert median([3.0, 1.0, 2.0]) == 2.0
    assert median([4.0, 1.0, 3.0, 2.0]) == 2.5
    assert median([7.0]) == 7.0


def test_percentile_interpolates_like_numpy() -> None:
    values = [10.0, 20.0, 30.0, 40.0, 50.0]
    assert percentile(values, 0) == 10.0 and percentile(values, 100) == 50.0
    assert percentile(values, 90) == pytest.approx(46.0)  # position 3.6 between 40 and 50
    assert percentile(list(range(1, 11)), 95) == pytest.approx(9.55)


def test_percentile_refuses_empty_input_and_bad_q() -> None:
    with pytest.raises(ValueError, match="no values"):
        percentile([], 50)
    with pytest.raises(ValueError, match="0..100"):
        percentile([1.0], 101)


def test_timing_reports_milliseconds() -> None:
    timing = Timing((0.010, 0.030, 0.020, 0.040, 0.100))
    assert timing.runs == 5
    assert timing.median_ms == pytest.approx(30.0)
    assert timing.p90_ms == pytest.approx(76.0)
    assert timing.max_ms == pytest.approx(100.0)


def test_time_calls_warms_up_then_times_each_call() -> None:
    calls = []
    timing = time_calls(lambda: calls.append(1), repeats=4, warmup=2)
    assert len(calls) == 6 and timing.runs == 4 and all(s >= 0 for s in timing.seconds)
    with pytest.raises(ValueError, match="at least 1"):
        time_calls(lambda: None, repeats=0)


# ---------------------------------------------------------------- rows and tables


def test_row_from_timing_divides_per_item_and_checks_the_goal() -> None:
    row = BenchRow.from_timing("model batch 32 (per face)", "m", Timing((0.32, 0.64, 0.32)), goal_ms=15.0, per=32)
    assert row.median_ms == pytest.approx(10.0) and row.min_ms == pytest.approx(10.0) and row.runs == 3
    assert row.meets_goal is True
    assert BenchRow("x", "y", 20.0, 30.0, 1, goal_ms=15.0).meets_goal is False
    assert BenchRow("x", "y", 20.0, 30.0, 1).meets_goal is None


@pytest.mark.parametrize(("ms", "text"), [(0.123, "0.12 ms"), (3.456, "3.46 ms"), (42.0, "42 ms"), (123.4, "123 ms"),
                                          (1534.0, "1.53 s"), (None, "")])
def test_format_ms(ms: float | None, text: str) -> None:
    assert format_ms(ms) == text


def test_markdown_table_pads_columns() -> None:
    table = markdown_table(["a", "long header"], [["xyz", 1], ["", 22]])
    assert table.splitlines() == [
        "| a   | long header |",
        "|-----|-------------|",
        "| xyz | 1           |",
        "|     | 22          |",
    ]
    with pytest.raises(ValueError, match="2 cells"):
        markdown_table(["a", "b"], [["only one"]])


def test_bench_table_marks_goals() -> None:
    rows = [BenchRow("face detection", "photo 1920x1280", 200.0, 250.0, 10, 180.0, 150.0, "1 face(s)"),
            BenchRow("predict", "photo", 100.0, 120.0, 10, 90.0, 300.0)]
    lines = bench_table(rows).splitlines()
    assert [cell.strip() for cell in lines[0].split("|")[1:-1]] == [
        "benchmark", "subject", "median", "p90", "min", "runs", "goal", "meets goal", "note"]
    assert "| NO " in lines[2] and "200 ms" in lines[2] and "150 ms" in lines[2]
    assert "| yes " in lines[3]


def test_write_csv_round_trips(tmp_path: Path) -> None:
    rows = [BenchRow("face detection", "photo", 123.456, 150.0, 5, 100.0, 150.0, "1 face(s)"),
            BenchRow("model", "m", 2.0, 3.0, 5)]
    path = write_csv(rows, tmp_path / "nested" / "speed.csv")
    with path.open() as handle:
        records = list(csv.DictReader(handle))
    assert records[0]["benchmark"] == "face detection" and records[0]["median_ms"] == "123.46"
    assert records[0]["meets_goal"] == "True" and records[0]["goal_ms"] == "150.0"
    assert records[1]["meets_goal"] == "" and records[1]["goal_ms"] == ""


# ---------------------------------------------------------------- load-test bookkeeping


def test_queue_setting_parsing() -> None:
    assert QueueSetting.parse("app") == QueueSetting("app", None)
    assert QueueSetting.parse(" 2 ") == QueueSetting("2", 2)
    assert QueueSetting.parse("2/1") == QueueSetting("2/1", 2, 1)
    assert QueueSetting.parse("app").environment() == {}
    assert QueueSetting.parse("3").environment() == {"AGEKIT_CONCURRENCY": "3"}
    assert QueueSetting.parse("2/1").environment() == {"AGEKIT_CONCURRENCY": "2", "AGEKIT_TORCH_THREADS": "1"}
    for bad in ("fast", "0", "2/0", "2/x"):
        with pytest.raises(ValueError, match="queue setting"):
            QueueSetting.parse(bad)


def test_check_answer() -> None:
    good = {"faces": [{"face": 1, "predictions": {"m": {"age": 30.0}}}], "models": ["m"]}
    assert check_answer(good) == ""
    assert "no face" in check_answer({"faces": []})
    assert "no model prediction" in check_answer({"faces": [{"predictions": {}}]})
    assert "not the predict JSON" in check_answer("oops")


def test_load_result_statistics_and_best_setting() -> None:
    slow = LoadResult("app", 2, [RequestResult(1.0, True), RequestResult(3.0, True)], wall_seconds=4.0)
    fast = LoadResult("2", 2, [RequestResult(0.5, True), RequestResult(0.7, True)], wall_seconds=1.0)
    broken = LoadResult("4", 2, [RequestResult(0.1, True), RequestResult(0.0, False, "boom")], wall_seconds=0.1)
    assert slow.throughput == pytest.approx(0.5) and fast.throughput == pytest.approx(2.0)
    assert broken.errors == 1 and broken.error_examples() == ["boom"]
    assert best_setting([slow, fast, broken]) is fast
    assert best_setting([broken]) is None
    assert result_row(slow) == ["app", "2", "0", "2.00 s", "2.90 s", "3.00 s", "0.50 req/s", "4.0 s"]
    assert result_row(LoadResult("x", 1, [RequestResult(0.0, False, "e")]))[3:6] == ["", "", ""]


# ---------------------------------------------------------------- server lifecycle

# A stand-in "app": serves HTTP on $GRADIO_SERVER_PORT like app.py does, in a fraction of a second.
TINY_SERVER = [sys.executable, "-c", (
    "import os, http.server as h; "
    "h.ThreadingHTTPServer((os.environ['GRADIO_SERVER_NAME'], int(os.environ['GRADIO_SERVER_PORT'])), "
    "h.SimpleHTTPRequestHandler).serve_forever()")]


def test_app_environment_sets_port_host_and_checkpoints(tmp_path: Path) -> None:
    env = app_environment(1234, tmp_path, {"AGEKIT_TORCH_THREADS": "2"})
    assert env["GRADIO_SERVER_PORT"] == "1234" and env["GRADIO_SERVER_NAME"] == "127.0.0.1"
    assert env["AGEKIT_CHECKPOINTS"] == str(tmp_path.resolve()) and env["AGEKIT_TORCH_THREADS"] == "2"
    assert "127.0.0.1" in env["NO_PROXY"]


def test_running_app_serves_and_is_always_stopped() -> None:
    with running_app(TINY_SERVER, timeout=30) as server:
        assert answers_http(server.url)
        process = server.process
    assert process.poll() is not None, "the server process outlived the context"
    assert not answers_http(server.url)


def test_running_app_stops_the_server_when_the_body_raises() -> None:
    with pytest.raises(RuntimeError, match="client failed"), running_app(TINY_SERVER, timeout=30) as server:
        raise RuntimeError("client failed")
    assert server.process.poll() is not None


def test_an_app_that_exits_reports_its_log() -> None:
    command = [sys.executable, "-c", "import sys; print('no checkpoints here'); sys.exit(3)"]
    with pytest.raises(AppDidNotStart, match="(?s)code 3.*no checkpoints here"), running_app(command, timeout=30):
        pass


def test_free_port_is_bindable() -> None:
    port = free_port()
    assert 0 < port < 65536 and not answers_http(f"http://127.0.0.1:{port}/", timeout=0.5)


# ---------------------------------------------------------------- photos and checkpoint copies


def test_benchmark_photos_have_the_promised_sizes(tmp_path: Path) -> None:
    photos = write_benchmark_photos(tmp_path)
    with Image.open(photos["photo 1920x1280"]) as large, Image.open(photos["photo 640x427"]) as small:
        assert large.size == LARGE_SIZE and small.size == SMALL_SIZE and large.format == "JPEG"


def test_phone_photo_is_a_grainy_jpeg_of_the_asked_size(tmp_path: Path) -> None:
    path = phone_jpeg((800, 600), tmp_path / "phone.jpg")
    with Image.open(path) as image:
        assert image.format == "JPEG" and image.size == (800, 600)
        pixels = np.asarray(image.convert("L"), dtype=float)
    assert np.abs(np.diff(pixels, axis=1)).mean() > 2  # grain: neighbouring pixels differ, as in a real photo


def test_copy_checkpoints_takes_only_weights_and_config(tmp_path: Path) -> None:
    source, target = tmp_path / "src", tmp_path / "dst"
    for name in ("a", "b"):
        (source / name / "eval").mkdir(parents=True)
        (source / name / "config.json").write_text("{}")
        (source / name / "model.safetensors").write_bytes(b"weights")
        (source / name / "eval" / "metrics.json").write_text("{}")
    (source / "not_a_checkpoint").mkdir()
    assert copy_checkpoints(source, target) == 2
    assert sorted(p.relative_to(target).as_posix() for p in target.rglob("*") if p.is_file()) == [
        "a/config.json", "a/model.safetensors", "b/config.json", "b/model.safetensors"]


def test_cli_help_runs() -> None:
    for module in ("bench.speed", "bench.load_test", "bench.smoke_app", "bench.big_photos"):
        done = subprocess.run([sys.executable, "-m", module, "--help"], capture_output=True, text=True, check=False,
                              cwd=Path(__file__).resolve().parents[1], timeout=60)
        assert done.returncode == 0 and "usage:" in done.stdout, done.stderr


def test_wire_client_calls_every_event_with_the_photo_in_image_inputs() -> None:
    config = {"components": [{"id": 1, "type": "image", "props": {}}, {"id": 2, "type": "state", "props": {}},
                             {"id": 3, "type": "textbox", "props": {"value": "age"}}],
              "dependencies": [{"id": 1, "inputs": [3], "api_name": "panels", "api_visibility": "private"},
                               {"id": 0, "inputs": [1, 2, 3], "api_name": "analyse"}]}
    events = app_events(config)
    assert [(e.fn_index, e.api_visibility) for e in events] == [(0, "public"), (1, "private")]
    photo = {"path": "/tmp/gradio/abc/photo.png", "meta": {"_type": "gradio.FileData"}}
    # the photo in image inputs, null for State (the server fills it), defaults elsewhere
    assert event_inputs(config, events[0], photo) == [photo, None, "age"]
    assert event_index(config, "panels") == 1
    with pytest.raises(SystemExit, match="no event named 'nope'"):
        event_index(config, "nope")


def test_group_photo_has_five_faces_at_full_size() -> None:
    photo = group_photo()
    assert photo.size == LARGE_SIZE and photo.mode == "RGB"
    boxes, _, _ = FaceDetector().find_faces(photo)
    assert len(boxes) == 5  # the four of the multi-face example and the pasted corner face
    centres = (boxes[:, :2] + boxes[:, 2:]) / 2
    width, height = LARGE_SIZE
    corner = (centres[:, 0] > width - 270) & (centres[:, 0] < width - 50) & (centres[:, 1] > height - 240)
    assert corner.sum() == 1 and (boxes[:, 2] - boxes[:, 0]).min() >= 80  # every face big enough to read
