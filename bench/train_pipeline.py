"""Training throughput: the packed in-memory pipeline against a plain JPEG-per-epoch DataLoader.

    python -m bench.train_pipeline --config training/configs/multitask_mobilenet.yaml \
        --pack packs/utkface_128.safetensors --data $AGEKIT_UTKFACE [--steps 20] [--device cpu|cuda] [--workers 2]

Both arms run the same model, loss, optimizer and training step (`agekit.engine.train_one_epoch`, augmentation
included) for --steps batches after one warm-up batch; only where the batches come from differs:
  packed  — the pack decoded once into a uint8 tensor, resized once and kept on the device (what training uses);
  jpeg    — a torch DataLoader whose workers open, decode and resize the UTKFace JPEGs for every batch.
Prints images/s for each and their ratio, and appends the rows to --out (CSV).
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as in training/train.py

import argparse
import csv
import time
from collections.abc import Iterator
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset

from agekit.data import SplitManifest, load_manifest, load_pack, read_face, resolve_data_root
from agekit.engine import (
    build_criterion,
    build_model,
    build_optimizer,
    build_scheduler,
    images_on_device,
    setup_runtime,
    train_one_epoch,
)
from agekit.labels import TASKS
from training.train import load_run_config
from training.train import parse_args as parse_train_args


class JpegFaces(Dataset):
    """The manifest's files of one split, decoded from JPEG and resized on every access (the baseline)."""

    def __init__(self, root: Path, split: str, size: int, manifest: SplitManifest | None = None) -> None:
        rows = (manifest or load_manifest()).rows(split)
        self.paths = [root / name for name in rows["file"]]
        self.labels = torch.tensor(rows[list(TASKS)].to_numpy(), dtype=torch.int64)
        self.size = size

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        pixels = torch.from_numpy(read_face(self.paths[index], self.size).copy()).permute(2, 0, 1).contiguous()
        return pixels, self.labels[index]


def timed_steps(batches: Iterator[tuple[torch.Tensor, dict[str, torch.Tensor]]], steps: int, step) -> float:
    """Seconds for `steps` calls of step(images, targets) after one warm-up call (batch fetching included)."""
    step(*next(batches))
    start = time.perf_counter()
    for _ in range(steps):
        step(*next(batches))
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, type=Path)
    parser.add_argument("--pack", default="packs/utkface_128.safetensors")
    parser.add_argument("--data", help="UTKFace folder (default: $AGEKIT_UTKFACE)")
    parser.add_argument("--steps", type=int, default=20, help="timed batches per arm")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers of the JPEG arm")
    parser.add_argument("--out", type=Path, default=Path("bench/results/train_pipeline.csv"))
    args = parser.parse_args(argv)

    config, run = load_run_config(parse_train_args(["--config", str(args.config), "--device", args.device]))
    runtime = setup_runtime(config.device)
    device, card = runtime.device, config.preprocessing_card()
    torch.manual_seed(config.seed)
    model = build_model(config).to(device)
    if config.channels_last:
        model.to(memory_format=torch.channels_last)
    criterion = build_criterion(config).to(device)
    optimizer = build_optimizer(model, criterion, config)
    scheduler = build_scheduler(optimizer, config, steps_per_epoch=1000)
    generator = torch.Generator().manual_seed(config.seed)

    def step(images: torch.Tensor, targets: dict[str, torch.Tensor]) -> None:
        # One batch through the engine's own loop: the images are the whole "set" and every index is used once.
        train_one_epoch(model, criterion, optimizer, scheduler, images, targets, torch.arange(len(images)), card,
                        config, generator)

    load_start = time.perf_counter()
    packed = load_pack(run["pack"], "train")
    images = images_on_device(packed.images, config.input_size, device)
    targets = {task: packed.targets[task].to(device) for task in config.tasks}
    decode_seconds = time.perf_counter() - load_start

    def packed_batches() -> Iterator[tuple[torch.Tensor, dict[str, torch.Tensor]]]:
        while True:
            idx = torch.randint(len(images), (config.batch_size,), generator=generator).to(device)
            yield images[idx], {task: values[idx] for task, values in targets.items()}

    def jpeg_batches() -> Iterator[tuple[torch.Tensor, dict[str, torch.Tensor]]]:
        dataset = JpegFaces(resolve_data_root(args.data), "train", config.input_size)
        loader = DataLoader(dataset, batch_size=config.batch_size, shuffle=True, num_workers=args.workers,
                            drop_last=True, persistent_workers=args.workers > 0)
        while True:
            for pixels, labels in loader:
                yield pixels.to(device), {task: labels[:, TASKS.index(task)].to(device) for task in config.tasks}

    rows = []
    for arm, batches in (("packed", packed_batches()), ("jpeg", jpeg_batches())):
        seconds = timed_steps(batches, args.steps, step)
        rows.append({"config": run["name"], "arm": arm, "device": str(device), "steps": args.steps,
                     "batch_size": config.batch_size, "input_size": config.input_size,
                     "images_per_s": round(args.steps * config.batch_size / seconds, 1),
                     "threads": torch.get_num_threads(), "workers": args.workers if arm == "jpeg" else 0})
    ratio = rows[0]["images_per_s"] / rows[1]["images_per_s"]
    for row in rows:
        row["packed_over_jpeg"] = round(ratio, 2)
        print(f"{row['arm']:>6}: {row['images_per_s']:.1f} images/s ({row['config']}, {row['device']}, "
              f"batch {row['batch_size']}, {row['input_size']} px)")
    print(f"packed / jpeg = {ratio:.2f}x; pack decoded and resized once in {decode_seconds:.1f} s")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    new = not args.out.is_file()
    with args.out.open("a", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        if new:
            writer.writeheader()
        writer.writerows(rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
