"""Phone-size JPEGs through `agekit.faces.load_image`, which decodes them reduced: `python -m bench.big_photos`.

    python -m bench.big_photos [--repeats 5] [--out bench/results/big_photos.csv]

Photos: the benchmark portrait (bench.photos.portrait_photo, one face) at 8064x6048 (48 MP, a phone's full-sensor
mode) and 12000x8400 (100.8 MP), with film grain added so that the JPEG (quality 90) is about as large as a phone's.
Rows per photo: `load_image` (decode at 1/2, 1/4 or 1/8 scale, EXIF, RGB), the same file fully decoded by PIL
for comparison (what loading cost without the reduction), and `load_image` + `FaceDetector.detect` (the face is
still found). One thread (torch and PIL), median / p90 / min wall time of N runs after a warm-up, and the median
CPU time of the calling thread ("CPU" in the note): on a shared machine the wall time mostly measures the other
jobs, the CPU time what the work costs.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np
from PIL import Image

from bench.photos import portrait_photo
from bench.table import BenchRow, bench_table, write_csv
from bench.timing import Timing

SIZES = ((8064, 6048), (12000, 8400))  # px: 48 MP and 100.8 MP
GRAIN = 6  # ± grey levels of uniform noise: brings a 48-MP JPEG (quality 90) to a phone's ~10 MB
STRIP_ROWS = 512  # grain is added this many rows at a time, so a 100-MP photo needs no 1-GB temporary


def phone_jpeg(size: tuple[int, int], path: Path, seed: int = 0) -> Path:
    """Write the benchmark portrait at `size` (px) with film grain as a quality-90 JPEG at `path`."""
    width, height = size
    pixels = np.asarray(portrait_photo((width // 4, height // 4), seed=seed).resize(size, Image.Resampling.BICUBIC))
    pixels = pixels.copy()
    rng = np.random.default_rng(seed)
    for top in range(0, height, STRIP_ROWS):
        strip = pixels[top:top + STRIP_ROWS].astype(np.int16)
        strip += rng.integers(-GRAIN, GRAIN + 1, strip.shape, dtype=np.int16)
        pixels[top:top + STRIP_ROWS] = np.clip(strip, 0, 255).astype(np.uint8)
    Image.fromarray(pixels).save(path, "JPEG", quality=90)
    return path


def full_decode(path: Path) -> Image.Image:
    """PIL's plain decode of every pixel (no reduction), as loading worked before."""
    with Image.open(path) as image:
        image.load()
        return image.convert("RGB")


def timed_row(benchmark: str, subject: str, fn: Callable[[], object], repeats: int, note: str = "") -> BenchRow:
    """A row of `repeats` wall-clock timings of `fn` after one warm-up, its median CPU time added to the note."""
    fn()
    wall, cpu = [], []
    for _ in range(repeats):
        wall_start, cpu_start = time.perf_counter(), time.thread_time()
        fn()
        cpu.append(time.thread_time() - cpu_start)
        wall.append(time.perf_counter() - wall_start)
    cpu_note = f"CPU {statistics.median(cpu) * 1000:.0f} ms"
    return BenchRow.from_timing(benchmark, subject, Timing(tuple(wall)), note=f"{cpu_note}; {note}" if note else cpu_note)


def photo_rows(path: Path, label: str, detector, repeats: int) -> list[BenchRow]:
    from agekit.faces import load_image

    loaded = load_image(path)
    faces = len(detector.detect(loaded))
    note = f"{path.stat().st_size / 1e6:.1f} MB file, decoded to {loaded.width}x{loaded.height}"
    return [
        timed_row("load_image (reduced JPEG decode)", label, partial(load_image, path), repeats, note),
        timed_row("PIL full decode, for comparison", label, partial(full_decode, path), repeats),
        timed_row("load_image + face detection", label, lambda: detector.detect(load_image(path)), repeats,
                  f"{faces} face(s)"),
    ]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.big_photos", description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per row (after 1 warm-up)")
    parser.add_argument("--out", type=Path, default=Path("bench/results/big_photos.csv"), help="CSV of every row")
    args = parser.parse_args(argv)
    import torch  # heavy: only once the arguments are good

    from agekit.faces import FaceDetector

    torch.set_num_threads(1)

    detector = FaceDetector()
    rows: list[BenchRow] = []
    with tempfile.TemporaryDirectory(prefix="agekit_big_photos_") as tmp:
        for width, height in SIZES:
            started = time.perf_counter()
            path = phone_jpeg((width, height), Path(tmp) / f"phone_{width}x{height}.jpg")
            print(f"made {path.name} ({path.stat().st_size / 1e6:.1f} MB) in {time.perf_counter() - started:.0f} s",
                  flush=True)
            rows += photo_rows(path, f"{width}x{height} ({width * height / 1e6:.1f} MP)", detector, args.repeats)
            path.unlink()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"\n1 thread, {args.repeats} runs per row after a warm-up, {os.cpu_count()} CPUs, 1-min load average "
          f"{load:.1f}\n{bench_table(rows)}")
    print(f"\nwrote {write_csv(rows, args.out)}")


if __name__ == "__main__":
    main()
