"""What a visitor waits for, end to end over HTTP on 127.0.0.1: `python -m bench.e2e`.

    python -m bench.e2e [--repeats 20] [--cold-starts 3] [--checkpoints DIR] [--skip page,api,parts,cold]
                        [--out bench/results/e2e.csv]

`python app.py` is started as shipped, with every checkpoint under --checkpoints (a new one is picked up by
itself). Each row is the median / p90 of --repeats round trips after 2 warm-ups, a fresh session each time:
- page, the browser's steps in order: POST the photo to /gradio_api/upload; the page's photo event (load,
  detection, every model, the annotated JPEG written, every model's panel values back); GET of the annotated
  image. Spoken with bench.gradio_wire (Gradio's queue protocol, as the browser does;
  gradio_client refuses the page's private events). Each step is also timed on its own: where the time goes.
- API: gradio_client's predict (upload + detection + every model, JSON back).
Photos: 1920x1280 with 5 faces (bench.photos.group_photo) and with 1 face (portrait_photo), JPEG quality 90.
Parts: the photo event's parts timed in this process on the 5-face photo, beside what they replaced (every model
one after another; the full-size annotated photo as PNG). Cold start: process start of `python app.py` until
GET / answers 200, median of --cold-starts.
Goals: median page round trip ≤ 300 ms for the 5-face photo, cold start ≤ 10 s.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from bench.gradio_wire import WireClient, event_index
from bench.photos import LARGE_SIZE, group_photo, portrait_photo
from bench.server import LOCAL_ENV, running_app
from bench.table import BenchRow, bench_table, write_csv
from bench.timing import Timing

GOAL_ROUND_TRIP_MS = 300.0
GOAL_COLD_START_MS = 10_000.0
PAGE_STEPS = ("upload", "photo event", "GET annotated image")
SECTIONS = ("page", "api", "parts", "cold")


def page_round_trip(url: str, photo: Path, analyse_fn: int) -> dict[str, float]:
    """One visitor's photo, step by step as the browser does it: {step: seconds} plus "total"."""
    steps: dict[str, float] = {}

    def timed(step: str, fn: Callable[[], object]) -> object:
        start = time.perf_counter()
        result = fn()
        steps[step] = time.perf_counter() - start
        return result

    start = time.perf_counter()
    with WireClient(url) as client:
        image = timed("upload", lambda: client.upload(photo))
        answer = timed("photo event", lambda: client.call(analyse_fn, [image]))
        if not answer.ok:
            raise SystemExit(f"the page's photo event failed: {answer.error}")
        body = timed("GET annotated image", lambda: client.http.get(answer.output[0]["url"]).content)
    steps["total"] = time.perf_counter() - start
    steps["annotated bytes"] = float(len(body))
    return steps


def page_rows(url: str, photos: dict[str, Path], repeats: int) -> list[BenchRow]:
    with WireClient(url) as client:
        config = client.config()
    analyse_fn = event_index(config, "analyse_photo")
    rows = []
    for label, photo in photos.items():
        for _ in range(2):
            page_round_trip(url, photo, analyse_fn)
        runs = [page_round_trip(url, photo, analyse_fn) for _ in range(repeats)]
        size_kb = runs[0]["annotated bytes"] / 1024
        goal = GOAL_ROUND_TRIP_MS if label.startswith("5 faces") else None
        rows.append(BenchRow.from_timing("page round trip (upload → panels, annotated image)", label,
                                         Timing(tuple(r["total"] for r in runs)), goal,
                                         note=f"annotated JPEG {size_kb:.0f} KB"))
        for step in PAGE_STEPS:
            rows.append(BenchRow.from_timing(f"  step: {step}", label, Timing(tuple(r[step] for r in runs))))
    return rows


def api_rows(url: str, photos: dict[str, Path], repeats: int) -> list[BenchRow]:
    from gradio_client import Client, handle_file

    rows = []
    client = Client(url, verbose=False, analytics_enabled=False, download_files=False)
    try:
        for label, photo in photos.items():
            def predict(photo: Path = photo) -> object:
                return client.predict(handle_file(str(photo)), api_name="/predict")

            faces = len(predict()["faces"])
            predict()
            seconds = []
            for _ in range(repeats):
                start = time.perf_counter()
                predict()
                seconds.append(time.perf_counter() - start)
            rows.append(BenchRow.from_timing("API predict via gradio_client (upload → JSON)", label,
                                             Timing(tuple(seconds)), note=f"{faces} faces"))
    finally:
        client.close()
    return rows


def phase_rows(checkpoints: Path | None, photo: Path, label: str, repeats: int) -> list[BenchRow]:
    """The photo event's parts in this process (1 torch thread, as app.py): where a round trip's time goes, and
    what the old path cost (every model one after another; the full-size annotated photo as PNG)."""
    import io
    from functools import partial

    import torch

    from agekit.faces import draw_boxes, load_image
    from agekit.predict import ModelZoo
    from agekit.ui import AppContext, compare
    from bench.timing import time_calls

    torch.set_num_threads(1)
    ctx = AppContext.create(checkpoints or Path("checkpoints"), examples_dir=None)
    image = load_image(photo)
    faces = compare.detect_faces(ctx, image)
    crops = [face.image for face in faces]
    one_by_one = ModelZoo(ctx.zoo.models, channels_last=ctx.zoo.channels_last, flip_average=ctx.zoo.flip_average)
    preview = compare.annotated_preview(image, faces)
    parts = {
        "load_image (decode)": partial(load_image, photo),
        "detect_faces": partial(compare.detect_faces, ctx, image),
        f"every model, {ctx.zoo.workers} at once (app)": partial(ctx.zoo.predict, crops),
        "every model, one after another (before)": partial(one_by_one.predict, crops),
        "annotated preview + JPEG encode (app)": lambda: compare.annotated_preview(image, faces).save(
            io.BytesIO(), "JPEG"),
        "full-size annotated photo + PNG encode (before)": lambda: draw_boxes(image, faces).save(io.BytesIO(), "PNG"),
        "the face's summary and probability tables": partial(compare.on_face, ctx, compare.analyse_image(ctx, str(photo)), "Face 1"),
    }
    note = f"{len(faces)} faces, {len(ctx.zoo.models)} models; preview {preview.width}x{preview.height}"
    return [BenchRow.from_timing(f"  part: {name}", label, time_calls(fn, repeats), note=note if i == 0 else "")
            for i, (name, fn) in enumerate(parts.items())]


def first_200(url: str, deadline: float) -> bool:
    """Poll GET `url` until it answers 200 (True) or `deadline` (monotonic seconds) passes (False)."""
    with httpx.Client(trust_env=False, timeout=2.0) as http:
        while time.monotonic() < deadline:
            try:
                if http.get(url).status_code == 200:
                    return True
            except httpx.TransportError:
                pass
            time.sleep(0.05)
    return False


def cold_start_row(checkpoints: Path | None, starts: int) -> BenchRow:
    """Process start of `python app.py` → first 200 on GET /, `starts` times (each a fresh process)."""
    from bench.server import start_app, stop_app

    seconds = []
    for _ in range(starts):
        start = time.perf_counter()
        server = start_app(checkpoints=checkpoints)
        try:
            if not first_200(server.url, time.monotonic() + 300.0):
                raise SystemExit(f"app.py did not answer 200 within 300 s:\n{server.log_tail()}")
            seconds.append(time.perf_counter() - start)
        finally:
            stop_app(server)
    return BenchRow.from_timing("cold start: process start → first HTTP 200", "python app.py",
                                Timing(tuple(seconds)), GOAL_COLD_START_MS)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.e2e", description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=20, help="timed round trips per photo (after 2 warm-ups)")
    parser.add_argument("--cold-starts", type=int, default=3, help="app.py starts timed (0: skip)")
    parser.add_argument("--checkpoints", type=Path, default=None,
                        help="checkpoint folder (default: $AGEKIT_CHECKPOINTS, else app.py's ./checkpoints)")
    parser.add_argument("--out", type=Path, default=Path("bench/results/e2e.csv"), help="CSV of every row")
    parser.add_argument("--skip", default="", help=f"comma-separated sections to skip: {','.join(SECTIONS)}")
    args = parser.parse_args(argv)
    args.skip = {section for section in args.skip.split(",") if section}
    if args.skip - set(SECTIONS):
        parser.error(f"unknown --skip sections {sorted(args.skip - set(SECTIONS))}; choose from {SECTIONS}")
    if args.repeats < 1 or args.cold_starts < 0:
        parser.error("--repeats must be at least 1 and --cold-starts at least 0")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    os.environ.update(LOCAL_ENV)
    rows: list[BenchRow] = []
    with tempfile.TemporaryDirectory(prefix="agekit_e2e_") as tmp:
        photos = {f"5 faces {LARGE_SIZE[0]}x{LARGE_SIZE[1]}": Path(tmp) / "group.jpg",
                  f"1 face {LARGE_SIZE[0]}x{LARGE_SIZE[1]}": Path(tmp) / "portrait.jpg"}
        group_photo().save(photos[f"5 faces {LARGE_SIZE[0]}x{LARGE_SIZE[1]}"], quality=90)
        portrait_photo().save(photos[f"1 face {LARGE_SIZE[0]}x{LARGE_SIZE[1]}"], quality=90)
        if not {"page", "api"} <= args.skip:
            with running_app(checkpoints=args.checkpoints, timeout=300.0,
                             extra_env={"GRADIO_TEMP_DIR": str(Path(tmp) / "gradio")}) as server:
                if "page" not in args.skip:
                    rows += page_rows(server.url, photos, args.repeats)
                if "api" not in args.skip:
                    rows += api_rows(server.url, photos, args.repeats)
                print(bench_table(rows), flush=True)
        if "parts" not in args.skip:
            label = next(iter(photos))
            rows += phase_rows(args.checkpoints, photos[label], label, args.repeats)
    if args.cold_starts and "cold" not in args.skip:
        rows.append(cold_start_row(args.checkpoints, args.cold_starts))
    load = os.getloadavg()[0]
    print(f"\n## end to end on 127.0.0.1 ({os.cpu_count()} CPUs, 1-min load average {load:.1f}, "
          f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')})\n{bench_table(rows)}")
    print(f"\nwrote {write_csv(rows, args.out)}")


if __name__ == "__main__":
    main()
