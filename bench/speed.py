"""CPU speed of everything a user waits for, against the issue's goals: `python -m bench.speed`.

    python -m bench.speed [--checkpoints checkpoints] [--data PATH/TO/UTKFace] [--repeats N]
                          [--cold-starts 3] [--threads 2] [--skip cold,eval] [--out bench/results/speed.csv]

Per shipped model: latency per face at batch 1 and throughput at batch 32 (`agekit.predict.predict_batch`, the
code the app runs). Face detection (`FaceDetector.detect`) on a 640x427 and a 1920x1280 photo composed from
examples/. End to end, the app's "predict" endpoint function (`agekit.ui.api.predict_json`: load, detect, every
model) and the same plus Grad-CAM of every model and task (the Compare tab's "explain: all"). App cold start
(`python app.py` until its port answers) and, with --data, `python -m evaluation.run --steps test` on the test split
(run on a temporary copy of the checkpoints so the committed eval/ folders are not rewritten).
Every row is the median and p90 of N runs after one warm-up run; torch uses --threads threads (a Space has 2).
OMP_WAIT_POLICY is taken from the environment (and passed on to the app subprocesses): with torch's default
(spinning OpenMP threads) 2-thread latencies explode when anything else uses the cores — see notes/bench.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import torch

from bench.photos import FACE_CROPS, write_benchmark_photos
from bench.server import LOCAL_ENV, REPO_ROOT, running_app
from bench.table import BenchRow, bench_table, write_csv
from bench.timing import Timing, time_calls

# The goals, ms (medians on the 2-vCPU Space).
GOAL_PREDICT_MS = 300.0  # one photo, every model
GOAL_PREDICT_WITH_CAMS_MS = 1500.0  # one photo, every model, Grad-CAM of every model and task
GOAL_DETECT_LARGE_MS = 150.0  # detection on 1920x1280
GOAL_COLD_START_MS = 10_000.0  # `python app.py` until it serves
GOAL_EVALUATE_MS = 60_000.0  # every model on the whole test split
THROUGHPUT_BATCH = 32
SECTIONS = ("models", "detection", "app", "cold", "eval")
CAM_METHOD = "GradCAM"


def load_zoo(checkpoints: Path):
    """Every checkpoint under `checkpoints` (agekit.predict.ModelZoo); SystemExit if none loads."""
    from agekit.predict import ModelZoo

    zoo = ModelZoo.load(checkpoints)
    if not zoo.models:
        reasons = "; ".join(f"{k}: {v}" for k, v in zoo.failures.items()) or "no checkpoint folders"
        raise SystemExit(f"no model loaded from {checkpoints} ({reasons}); train checkpoints or pass --checkpoints")
    return zoo


def face_batch(size: int) -> torch.Tensor:
    """A uint8 RGB (size,3,200,200) batch of the committed UTKFace-framed example faces, repeated."""
    from agekit.faces import load_image
    from agekit.predict import crops_to_batch

    crops = [load_image(path) for path in FACE_CROPS]
    return crops_to_batch([crops[i % len(crops)] for i in range(size)])


def model_rows(zoo, repeats: int) -> list[BenchRow]:
    """Per model: ms per face at batch 1, and ms per face / faces per second at batch THROUGHPUT_BATCH."""
    from agekit.predict import predict_batch

    one, many = face_batch(1), face_batch(THROUGHPUT_BATCH)
    rows = []
    for name, loaded in zoo.models.items():
        card = loaded.card
        shape = f"{card.architecture} {card.input_size}px {card.in_chans}ch" + (" NHWC" if zoo.channels_last else "")
        single = time_calls(partial(predict_batch, loaded, one, name, zoo.channels_last), repeats)
        rows.append(BenchRow.from_timing("model latency, batch 1 (per face)", name, single, note=shape))
        batch = time_calls(partial(predict_batch, loaded, many, name, zoo.channels_last), max(3, repeats // 3))
        rate = THROUGHPUT_BATCH / (batch.median_ms / 1000.0)
        rows.append(BenchRow.from_timing(f"model batch {THROUGHPUT_BATCH} (per face)", name, batch,
                                         per=THROUGHPUT_BATCH, note=f"{rate:.0f} faces/s"))
    return rows


def detection_rows(photos: dict[str, Path], repeats: int) -> list[BenchRow]:
    """load_image and FaceDetector.detect on each benchmark photo."""
    from agekit.faces import FaceDetector, load_image

    detector = FaceDetector()
    rows = []
    for label, path in photos.items():
        if label.startswith("group"):
            continue  # detection is timed on one-face photos; the group photo is used end to end
        decode = time_calls(partial(load_image, path), repeats)
        rows.append(BenchRow.from_timing("load_image (decode JPEG)", label, decode))
        image = load_image(path)
        faces = len(detector.detect(image))  # also the warm-up run
        detect = time_calls(partial(detector.detect, image), repeats, warmup=0)
        goal = GOAL_DETECT_LARGE_MS if label == "photo 1920x1280" else None
        rows.append(BenchRow.from_timing("face detection", label, detect, goal, note=f"{faces} face(s)"))
    return rows


def app_rows(checkpoints: Path, photos: dict[str, Path], repeats: int) -> list[BenchRow]:
    """The app's own functions on a photo: predict endpoint, Grad-CAM of every model x task, both together."""
    from agekit.faces import FaceDetector
    from agekit.ui import AppContext
    from agekit.ui.api import predict_json
    from agekit.ui.compare import analyse_image, explain_crop

    ctx = AppContext.create(checkpoints, examples_dir=None, detector=FaceDetector())
    rows = []
    for label, path in photos.items():
        faces = len(predict_json(ctx, str(path))["faces"])  # also the warm-up run
        timing = time_calls(partial(predict_json, ctx, str(path)), repeats, warmup=0)
        goal = GOAL_PREDICT_MS if faces == 1 else None
        rows.append(BenchRow.from_timing(f"predict endpoint, {len(ctx.model_names)} models", label, timing, goal,
                                         note=f"{faces} face(s)"))
    for label in ("photo 1920x1280", "astronaut 512x512"):
        path = photos[label]
        crop = analyse_image(ctx, str(path)).faces[0].image
        maps = len(explain_crop(ctx, crop, "all", CAM_METHOD))  # also the warm-up run
        cam_timing = time_calls(partial(explain_crop, ctx, crop, "all", CAM_METHOD), repeats, warmup=0)
        rows.append(BenchRow.from_timing(f"{CAM_METHOD} of every model x task", label, cam_timing,
                                         note=f"{maps} maps"))
        both = time_calls(partial(predict_and_explain_all, ctx, path), repeats)
        rows.append(BenchRow.from_timing(f"predict + {CAM_METHOD} of every model x task", label, both,
                                         GOAL_PREDICT_WITH_CAMS_MS, note=f"{maps} maps"))
    rows += cam_rows_per_model(ctx, analyse_image(ctx, str(photos["astronaut 512x512"])).faces[0].image, repeats)
    return rows


def predict_and_explain_all(ctx, path: Path) -> None:
    """What a user of the Compare tab waits for: analyse the photo, then Grad-CAM of every model x task."""
    from agekit.ui.compare import analyse_image, explain_crop

    analysis = analyse_image(ctx, str(path))
    explain_crop(ctx, analysis.faces[0].image, "all", CAM_METHOD)


def explain_all_tasks(loaded, crop) -> None:
    """Grad-CAM of every task of one model on one crop."""
    from agekit.explain import explain

    for task in loaded.card.tasks:
        explain(loaded, crop, task, CAM_METHOD)


def cam_rows_per_model(ctx, crop, repeats: int) -> list[BenchRow]:
    """Grad-CAM time of each model, all its tasks, on one crop: which model makes 'explain all' slow."""
    rows = []
    for name in ctx.model_names:
        loaded = ctx.zoo.models[name]
        timing = time_calls(partial(explain_all_tasks, loaded, crop), max(3, repeats // 2))
        rows.append(BenchRow.from_timing(f"{CAM_METHOD}, all tasks of one model", name, timing,
                                         note=f"{len(loaded.card.tasks)} tasks"))
    return rows


def cold_start_rows(checkpoints: Path, starts: int) -> list[BenchRow]:
    """`python app.py` until its port answers HTTP (median of `starts`), and one start-up phase breakdown."""
    seconds = []
    for _ in range(starts):
        start = time.perf_counter()
        with running_app(checkpoints=checkpoints, timeout=300.0):
            seconds.append(time.perf_counter() - start)
    rows = [BenchRow.from_timing("cold start: python app.py until it serves", "app.py", Timing(tuple(seconds)),
                                 GOAL_COLD_START_MS)]
    phases = startup_phases(checkpoints)
    models = int(phases.pop("models loaded", 0))
    for phase, value in phases.items():
        rows.append(BenchRow("cold start phase (1 run, fresh interpreter)", phase, value * 1000, value * 1000, 1,
                             value * 1000, note=f"{models} models" if phase == "ModelZoo.load" else ""))
    return rows


def startup_phases(checkpoints: Path) -> dict[str, float]:
    """`python -m bench.startup_phases` in a fresh interpreter: {phase: seconds}."""
    env = {**os.environ, **LOCAL_ENV, "AGEKIT_CHECKPOINTS": str(checkpoints.resolve())}
    output = subprocess.run([sys.executable, "-m", "bench.startup_phases"], cwd=REPO_ROOT, capture_output=True,
                            text=True, timeout=600, env=env, check=True)
    return json.loads(output.stdout.strip().splitlines()[-1])


def evaluation_rows(checkpoints: Path, data: str, threads: int) -> list[BenchRow]:
    """Wall time of the clean test step (`python -m evaluation.run --steps test`) over every model, on a temporary
    copy of the checkpoints."""
    with tempfile.TemporaryDirectory(prefix="agekit_eval_bench_") as tmp:
        copied = copy_checkpoints(checkpoints, Path(tmp))
        command = [sys.executable, "-m", "evaluation.run", "--steps", "test", "--checkpoints", tmp, "--data", data,
                   "--threads", str(threads)]
        start = time.perf_counter()
        run = subprocess.run(command, check=False, cwd=REPO_ROOT, capture_output=True, text=True, timeout=3600)
        seconds = time.perf_counter() - start
        if run.returncode != 0:
            raise SystemExit(f"evaluation failed ({' '.join(command)}):\n{run.stdout[-2000:]}\n{run.stderr[-3000:]}")
        print(run.stdout.strip()[-3000:])
    return [BenchRow("evaluate every model on the test split", f"{copied} models", seconds * 1000, seconds * 1000,
                     1, seconds * 1000, GOAL_EVALUATE_MS, note="python -m evaluation.run --steps test, 1 run")]


def copy_checkpoints(source: Path, target: Path) -> int:
    """Copy each checkpoint folder's config.json and *.safetensors into `target`; returns how many."""
    count = 0
    for folder in sorted(p for p in source.iterdir() if (p / "config.json").is_file()):
        (target / folder.name).mkdir(parents=True)
        for file in [folder / "config.json", *folder.glob("*.safetensors")]:
            shutil.copy2(file, target / folder.name / file.name)
        count += 1
    return count


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.speed", description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoints", type=Path, default=Path("checkpoints"), help="folder of checkpoint folders")
    parser.add_argument("--data", default=None, help="UTKFace folder: also time the test-split evaluation")
    parser.add_argument("--repeats", type=int, default=10, help="timed runs per measurement (after 1 warm-up)")
    parser.add_argument("--cold-starts", type=int, default=3, help="app.py starts timed")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (a CPU Space has 2 vCPUs)")
    parser.add_argument("--skip", default="", help=f"comma-separated sections to skip: {','.join(SECTIONS)}")
    parser.add_argument("--out", type=Path, default=Path("bench/results/speed.csv"), help="CSV of every row")
    args = parser.parse_args(argv)
    args.skip = {s for s in args.skip.split(",") if s}
    if args.skip - set(SECTIONS):
        parser.error(f"unknown --skip sections {sorted(args.skip - set(SECTIONS))}; choose from {SECTIONS}")
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    return args


def run_section(name: str, args: argparse.Namespace, measure: Callable[[], list[BenchRow]],
                rows: list[BenchRow]) -> None:
    """Run one section unless skipped, printing its rows as they come."""
    if name in args.skip:
        return
    start = time.perf_counter()
    new = measure()
    rows += new
    print(f"\n## {name} ({time.perf_counter() - start:.0f} s)\n{bench_table(new)}", flush=True)


def run_conditions(args: argparse.Namespace) -> str:
    """What the numbers depend on besides the code: threads, OpenMP wait policy, runs, machine load."""
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (f"torch threads={args.threads}, OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')}, "
            f"{args.repeats} runs per row after a warm-up, {os.cpu_count()} CPUs, 1-min load average {load:.1f}")


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    rows: list[BenchRow] = []
    with tempfile.TemporaryDirectory(prefix="agekit_bench_photos_") as tmp:
        photos = write_benchmark_photos(tmp)
        if not {"models", "app"} <= args.skip:
            zoo = load_zoo(args.checkpoints)
            print(f"models: {', '.join(zoo.models)}" + (f"; failed: {zoo.failures}" if zoo.failures else ""))
            run_section("models", args, lambda: model_rows(zoo, args.repeats), rows)
            del zoo
        run_section("detection", args, lambda: detection_rows(photos, args.repeats), rows)
        run_section("app", args, lambda: app_rows(args.checkpoints, photos, args.repeats), rows)
    run_section("cold", args, lambda: cold_start_rows(args.checkpoints, args.cold_starts), rows)
    if args.data:
        run_section("eval", args, lambda: evaluation_rows(args.checkpoints, args.data, args.threads), rows)
    print(f"\n## all ({run_conditions(args)})\n{bench_table(rows)}")
    print(f"\nwrote {write_csv(rows, args.out)}")


if __name__ == "__main__":
    main()
