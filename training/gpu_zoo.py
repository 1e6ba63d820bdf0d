"""Train and evaluate the whole model zoo on one GPU in one command, within a wall-time budget.

    python -m training.gpu_zoo --export-weights  # float16 pretrained backbones in .weights/gpu/ (to carry)
    python -m training.gpu_zoo --check-carry packs/utkface_128_q50_trainval.safetensors .weights/gpu  # fits?
    python -m training.gpu_zoo --pack packs/utkface_128_q50_trainval.safetensors --bundle $OUT [--budget-s 480]
    python -m training.gpu_zoo --smoke          # the same code on CPU: tiny synthetic pack, one epoch per model

For each config of ZOO, in order, it applies GPU_COMMON and the config's own GpuSettings on top of its YAML file
(exactly as `python -m training.train --config ... key=value` would), measures training throughput on a few
batches of a throw-away model, plans the epochs that fit the config's share of the time left, and trains with
training.train.train_and_save; engine.fit stops at the share if the estimate was off and keeps the best
validation epoch. A config whose file or pretrained-weights file is missing is skipped with one line. Then
evaluation.run (steps test and leaderboard) scores every checkpoint on the pack's test split or, for a train+val pack (`python -m
agekit.data pack ... --splits train,val`, smaller to carry), on the shipped test-face pack (the same test faces
of the committed split manifest); the log says which.

--out (an empty folder; default runs/gpu_zoo, a temporary one for --smoke) receives checkpoints/<name>/
(fp16 model.safetensors, config.json, training_log.csv, eval/), checkpoints/leaderboard.csv and throughput.csv /
throughput.md. --bundle DIR (the
device's $OUT) also gets that folder as results.tar.gz cut into 15 MiB parts plus throughput.md, because the
device returns at most 8 files of at most 16 MiB each; join them with `cat results.tar.gz.part* | tar -xz`.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as in training/train.py; before torch is imported

import argparse
import json
import statistics
import subprocess
import tarfile
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from PIL import Image
from safetensors.torch import save_file

from agekit.checkpoint import storage_state_dict
from agekit.data import FaceTensors, load_manifest, load_pack, read_pack, write_manifest, write_pack
from agekit.data.pack import SPLIT_CODES, PackError
from agekit.data.test_faces import TEST_FACES_PACK, TEST_SPLIT
from agekit.engine import (
    TrainConfig,
    build_criterion,
    build_model,
    build_optimizer,
    build_scheduler,
    images_on_device,
    setup_runtime,
    train_one_epoch,
)
from evaluation.run import RunOptions, run_pipeline
from training.train import load_run_config, parse_args, train_and_save

CONFIG_DIR = Path("training/configs")
MIB = 1 << 20
DEVICE_CARRY_LIMIT = 64 * MIB  # working tree + carried paths that travel to the device machine
DEVICE_FILE_LIMIT, DEVICE_FILES, DEVICE_RETURN_LIMIT = 16 * MIB, 8, 64 * MIB  # what comes back from its $OUT
PART_BYTES = 15 * MIB
BUNDLE_NAME = "results.tar.gz"
PROBE_STEPS, PROBE_WARMUP = 20, 3  # timed / untimed batches of the throughput probe
# One epoch = the training images + the validation pass (forward only: about a third of a training step per image),
# plus the per-epoch log and metric bookkeeping (the 1.15).
EPOCH_OVERHEAD = 1.15


@dataclass(frozen=True)
class GpuSettings:
    """How one config trains in the zoo: YAML keys overridden, the most epochs worth running, and its weight in
    the split of the time budget (weight 2 gets twice the seconds of weight 1)."""

    overrides: dict[str, Any] = field(default_factory=dict)
    max_epochs: int = 60
    weight: float = 1.0


# Every GPU run: bf16 autocast, channels_last, cuDNN autotuning (engine.setup_runtime), no early stopping (the
# best validation epoch is kept anyway), no resume.pt (a rerun is cheaper than the write), no progress bars.
GPU_COMMON: dict[str, Any] = {"device": "cuda", "amp": True, "channels_last": True, "patience": 0,
                              "save_resume": False, "progress": False}
# Pretrained backbones travel as float16 state dicts written by --export-weights (the device's 64 MiB hold the
# working tree, the pack and these): RetinaFace 1.7 → 0.4 MiB, O-Net 1.5 → 0.8 MiB (the device has no
# facenet-pytorch).
COMPACT_DIR = Path(".weights/gpu")
RETINAFACE = str(COMPACT_DIR / "retinaface_mobilenet0.25_widerface.fp16.safetensors")
ONET = str(COMPACT_DIR / "onet.fp16.safetensors")
# dlib's backbone comes from the committed CPU-trained checkpoint (already in the working tree, so it costs no
# carry; dlib's own .dat would add 10.7 MiB as float16): its backbone continues training, its heads start afresh.
DLIB_CHECKPOINT = "checkpoints/multitask_dlib/model.safetensors"
# The recipes (batch, lr, schedule) stay as in the YAML files; the GPU buys epochs and, for the 64 px scratch
# nets, the pack's full resolution. Small, fast models first: what they leave unused flows to the big ones.
ZOO: dict[str, GpuSettings] = {
    "scratch_facecnn": GpuSettings({"input_size": 112}),
    "agecnn_baseline": GpuSettings({"input_size": 112}, max_epochs=40),
    "pretrained_onet": GpuSettings({"pretrained_weights": ONET}),  # 48 px is the only size O-Net takes
    "scratch_mobilenet": GpuSettings(),
    "pretrained_mobilenet": GpuSettings({"pretrained_weights": RETINAFACE}),
    "multitask_mobilenet": GpuSettings({"pretrained_weights": RETINAFACE}),
    "scratch_resnet18": GpuSettings({"batch_size": 512}, max_epochs=40, weight=2.0),
    # dlib keeps its config's input size.
    "multitask_dlib": GpuSettings({"pretrained_weights": DLIB_CHECKPOINT}, max_epochs=30, weight=2.0),
}
# --smoke: the same path on CPU, small enough for CI. Input sizes stay the configs' own (the code path is the point).
SMOKE_COMMON: dict[str, Any] = {"device": "cpu", "amp": False, "channels_last": True, "patience": 0,
                                "save_resume": False, "progress": False, "batch_size": 8, "num_threads": 1}
SMOKE_SPLITS = {"train": 24, "val": 8, "test": 8}


@dataclass
class ZooEntry:
    """One config on its way through the zoo: its resolved TrainConfig, run info and zoo settings."""

    name: str
    argv: list[str]  # the equivalent `python -m training.train` arguments
    config: TrainConfig
    run: dict[str, Any]
    settings: GpuSettings


def override_args(overrides: dict[str, Any]) -> list[str]:
    """{'lr': 0.003, 'pretrained_weights': None} → ['lr=0.003', 'pretrained_weights='] (values as JSON ⊂ YAML)."""
    return [f"{key}=" if value is None else f"{key}={json.dumps(value)}" for key, value in overrides.items()]


def resolve_zoo(names: list[str], pack: str, common: dict[str, Any], max_epochs: int | None = None
                ) -> tuple[list[ZooEntry], list[str]]:
    """The runnable configs (overrides applied) and one 'skip' line per config that cannot run here."""
    entries, skipped = [], []
    for name in names:
        settings = ZOO.get(name, GpuSettings())
        path = CONFIG_DIR / f"{name}.yaml"
        if not path.is_file():
            skipped.append(f"skip {name}: {path} not found")
            continue
        # one carried pack is every model's only source: a config's extra_packs (All-Age-Faces) do not fit the carry
        argv = ["--config", str(path), "--pack", pack,
                *override_args({**settings.overrides, **common, "extra_packs": []})]
        weights = settings.overrides.get("pretrained_weights")
        if weights and not Path(weights).is_file():
            how = ("write it with python -m training.gpu_zoo --export-weights (needs the original weights here)"
                   if str(weights).startswith(str(COMPACT_DIR)) else "it belongs to the working tree (git status)")
            skipped.append(f"skip {name}: {weights} not found; {how}")
            continue
        try:
            config, run = load_run_config(parse_args(argv))
        except SystemExit as err:  # load_run_config's one-line errors (bad key or value)
            skipped.append(f"skip {name}: {err}")
            continue
        if max_epochs is not None:
            settings = GpuSettings(settings.overrides, min(settings.max_epochs, max_epochs), settings.weight)
        entries.append(ZooEntry(name, argv, config, run, settings))
    return entries, skipped


def export_compact_weights(names: list[str]) -> list[str]:
    """For each zoo config that starts from a COMPACT_DIR file: build its backbone from the config's own
    pretrained source (through the registry, so any format a builder reads is converted) and save it there as a
    float16 state dict, which the builder reads back as a plain state dict. Files in COMPACT_DIR that no ZOO
    config reads (an earlier export, such as dlib's) are removed, since the whole folder is carried. Returns one
    line per config written or file removed."""
    lines = []
    wanted = {Path(s.overrides["pretrained_weights"]) for s in ZOO.values() if s.overrides.get("pretrained_weights")}
    for stale in sorted(COMPACT_DIR.glob("*")) if COMPACT_DIR.is_dir() else []:
        if stale.is_file() and stale not in wanted:
            stale.unlink()
            lines.append(f"removed {stale}: no zoo config reads it (it would only add to the carry)")
    for name in names:
        target = ZOO.get(name, GpuSettings()).overrides.get("pretrained_weights")
        path = CONFIG_DIR / f"{name}.yaml"
        if not target or not str(target).startswith(str(COMPACT_DIR)) or not path.is_file():
            continue
        try:
            config, _ = load_run_config(parse_args(["--config", str(path), "device=cpu", "tasks=[age]",
                                                    "shared_backbone=true"]))
        except SystemExit as err:
            lines.append(f"skip {name}: {err}")
            continue
        torch.manual_seed(config.seed)
        backbone = build_model(config).backbone
        COMPACT_DIR.mkdir(parents=True, exist_ok=True)
        save_file(storage_state_dict(backbone), str(target))
        lines.append(f"{name}: {config.pretrained_weights or 'shipped weights'} → {target} "
                     f"({Path(target).stat().st_size / MIB:.2f} MiB)")
    return lines


def choose_test_pack(pack: str, fallback: str | Path = TEST_FACES_PACK) -> tuple[str, str]:
    """The pack the evaluation reads the test split from, and a line saying which: `pack` itself when it holds
    test faces, else `fallback` (the shipped test-face pack: the committed manifest's test faces). Raises PackError
    when the fallback is needed but was built from another split manifest than `pack`."""
    contents = read_pack(pack)
    if (contents.split == SPLIT_CODES[TEST_SPLIT]).any():
        return pack, f"test faces: the {TEST_SPLIT} split of {pack}"
    shipped = read_pack(fallback)
    if shipped.manifest_hash != contents.manifest_hash:
        raise PackError(f"{pack} has no {TEST_SPLIT} split and the test-face pack {fallback} was built from another "
                        f"split manifest ({shipped.manifest_hash[:12]}… vs {contents.manifest_hash[:12]}…): "
                        f"rebuild the pack with the test split (--splits train,val,test)")
    return str(fallback), (f"test faces: {len(shipped):,} from the shipped test-face pack {fallback} "
                           f"({pack} holds no {TEST_SPLIT} split)")


# ---------------------------------------------------------------- throughput and the epoch plan
def measure_images_per_s(config: TrainConfig, train_set: FaceTensors, steps: int = PROBE_STEPS,
                         warmup: int = PROBE_WARMUP) -> float:
    """Training images/s of `config` on its device: `steps` timed batches of the engine's own step
    (augmentation, autocast, optimizer included) after `warmup` batches, on a throw-away model."""
    device = setup_runtime(config.device).device
    torch.manual_seed(config.seed)
    model = build_model(config).to(device)
    if config.channels_last:
        model.to(memory_format=torch.channels_last)
    train_model = torch.compile(model) if config.compile else model
    criterion = build_criterion(config).to(device)
    optimizer = build_optimizer(model, criterion, config)
    scheduler = build_scheduler(optimizer, config, steps_per_epoch=steps + warmup)
    n = min(len(train_set), config.batch_size * (steps + warmup))
    images = images_on_device(train_set.images[:n], config.input_size, device)
    targets = {task: train_set.targets[task][:n].to(device) for task in config.tasks}
    generator = torch.Generator().manual_seed(config.seed)
    card = config.preprocessing_card()

    def run(batches: int) -> float:
        start = time.perf_counter()
        indices = torch.randint(n, (batches * config.batch_size,), generator=generator)
        train_one_epoch(train_model, criterion, optimizer, scheduler, images, targets, indices, card, config,
                        generator)  # ends with .item(): the GPU has finished when it returns
        return time.perf_counter() - start

    run(warmup)
    return steps * config.batch_size / run(steps)


def plan_epochs(share_s: float, images_per_s: float, n_train: int, n_val: int, max_epochs: int,
                min_epochs: int = 1) -> int:
    """Epochs that fit in `share_s` seconds at `images_per_s` (validation pass and bookkeeping included)."""
    epoch_s = EPOCH_OVERHEAD * (n_train + n_val / 3) / images_per_s
    return max(min_epochs, min(max_epochs, int(share_s / epoch_s)))


def share_of(remaining_s: float, weight: float, weights_left: float) -> float:
    """This model's seconds: the time left split in proportion to the weights of the models still to train."""
    return max(0.0, remaining_s) * weight / weights_left


def summarise_history(history: list[dict[str, float]]) -> dict[str, float]:
    """Median images/s and seconds per epoch (epoch 1 left out when there are more: it holds the warm-up)."""
    steady = history[1:] or history
    return {"images_per_s": statistics.median(r["images_per_s"] for r in steady),
            "seconds_per_epoch": statistics.median(r["seconds"] for r in steady),
            "best_val_age_mae": min((r["val_age_mae"] for r in history if "val_age_mae" in r), default=float("nan"))}


# ---------------------------------------------------------------- outputs
def write_throughput(rows: list[dict[str, Any]], out: Path, device_name: str) -> Path:
    """throughput.csv (every column) and throughput.md (the table a README can quote) under `out`."""
    frame = pd.DataFrame(rows)
    frame.to_csv(out / "throughput.csv", index=False)
    shown = ["name", "architecture", "params_m", "input_size", "batch_size", "compile", "probe_images_per_s",
             "images_per_s", "seconds_per_epoch", "epochs_planned", "epochs_run", "out_of_time", "share_s",
             "train_s", "best_val_age_mae", "checkpoint_mib"]
    lines = [f"device: {device_name}; torch {torch.__version__}", "",
             "| " + " | ".join(shown) + " |", "|" + " --- |" * len(shown)]
    for row in rows:
        lines.append("| " + " | ".join(_cell(row.get(key)) for key in shown) + " |")
    path = out / "throughput.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 100 else f"{value:.0f}"
    return str(value)


def write_bundle(out: Path, bundle: Path, part_bytes: int = PART_BYTES) -> list[Path]:
    """`out` as bundle/results.tar.gz.partNN (each ≤ part_bytes) plus a readable copy of throughput.md."""
    bundle.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        archive = Path(tmp) / BUNDLE_NAME
        with tarfile.open(archive, "w:gz", compresslevel=6) as tar:
            tar.add(out, arcname=".")
        parts = []
        with archive.open("rb") as handle:
            while chunk := handle.read(part_bytes):
                parts.append(bundle / f"{BUNDLE_NAME}.part{len(parts):02d}")
                parts[-1].write_bytes(chunk)
    if (out / "throughput.md").is_file():
        (bundle / "throughput.md").write_bytes((out / "throughput.md").read_bytes())
    files = sorted(bundle.iterdir())
    total = sum(p.stat().st_size for p in files)
    if len(files) > DEVICE_FILES or total > DEVICE_RETURN_LIMIT:
        print(f"warning: {bundle} holds {len(files)} files, {total / MIB:.1f} MiB: more than the device returns "
              f"({DEVICE_FILES} files, {DEVICE_RETURN_LIMIT // MIB} MiB); train fewer configs (--configs)")
    return parts


def carry_report(carry: list[str]) -> tuple[int, str]:
    """Bytes that would travel to the device (tracked + untracked-not-ignored files, plus `carry`) and a summary."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                            capture_output=True, check=True).stdout.decode().split("\0")
    tree = sum(Path(f).stat().st_size for f in listed if f and Path(f).is_file())
    sizes = {}
    for path in map(Path, carry):
        files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
        if not files:
            raise SystemExit(f"carry path {path} does not exist")
        sizes[str(path)] = sum(p.stat().st_size for p in files)
    total = tree + sum(sizes.values())
    lines = [f"working tree {tree / MIB:6.2f} MiB"] + [f"{name:<60} {size / MIB:6.2f} MiB" for name, size in sizes.items()]
    verdict = "fits" if total <= DEVICE_CARRY_LIMIT else "DOES NOT FIT"
    lines.append(f"total {total / MIB:.2f} MiB of {DEVICE_CARRY_LIMIT // MIB} MiB: {verdict}")
    return total, "\n".join(lines)


# ---------------------------------------------------------------- smoke data
def write_smoke_pack(folder: Path, size: int = 48, counts: dict[str, int] = SMOKE_SPLITS) -> Path:
    """A tiny pack of synthetic faces (smooth random colour fields with UTKFace names) and its own manifest."""
    rng = np.random.default_rng(0)
    rows = []
    for split, count in counts.items():
        for i in range(count):
            age, gender, ethnicity = int(rng.integers(1, 90)), int(rng.integers(0, 2)), int(rng.integers(0, 5))
            file = f"{age}_{gender}_{ethnicity}_{20170101000000000 + len(rows)}.jpg.chip.jpg"
            coarse = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
            Image.fromarray(coarse).resize((64, 64), Image.Resampling.BICUBIC).save(folder / file, quality=90)
            rows.append({"file": file, "age": age, "gender": gender, "ethnicity": ethnicity, "split": split,
                         "dup_group": -1, "note": ""})
    write_manifest(pd.DataFrame(rows).sort_values("file"), folder / "manifest.csv")
    pack = folder / "smoke.safetensors"
    write_pack(folder, load_manifest(folder / "manifest.csv"), pack, size=size, workers=1, progress=False)
    return pack


# ---------------------------------------------------------------- the zoo
def train_one(entry: ZooEntry, share: float, train_set: FaceTensors, val_set: FaceTensors, folder: Path,
              probe_steps: int) -> dict[str, Any]:
    """Probe, plan and train one config within `share` seconds; its throughput-table row."""
    model_start = time.perf_counter()
    rate = measure_images_per_s(entry.config, train_set, steps=probe_steps, warmup=min(PROBE_WARMUP, probe_steps))
    train_s = share - (time.perf_counter() - model_start)
    epochs = plan_epochs(train_s, rate, len(train_set), len(val_set), entry.settings.max_epochs,
                         min_epochs=entry.config.frozen_epochs + 1)
    entry.config.epochs, entry.config.time_limit_s = epochs, max(train_s, 1.0)
    print(f"\n== {entry.name}: probe {rate:.0f} images/s → {epochs} epoch(s) in its {share:.0f} s share "
          f"(python -m training.train {' '.join(entry.argv)} --epochs {epochs})")
    fit_start = time.perf_counter()
    result = train_and_save(entry.config, entry.run, train_set, val_set, folder)
    size = (folder / "model.safetensors").stat().st_size
    if size > DEVICE_FILE_LIMIT:
        print(f"note: {entry.name}'s model.safetensors is {size / MIB:.1f} MiB (> 16 MiB); it travels in the bundle")
    return {"name": entry.name, "architecture": entry.config.architecture,
            "params_m": sum(p.numel() for p in result.model.parameters()) / 1e6,
            "input_size": entry.config.input_size, "batch_size": entry.config.batch_size,
            "compile": entry.config.compile, "amp": entry.config.amp, "probe_images_per_s": rate,
            **summarise_history(result.history), "epochs_planned": epochs, "epochs_run": len(result.history),
            "out_of_time": result.out_of_time, "share_s": share, "train_s": time.perf_counter() - fit_start,
            "checkpoint_mib": size / MIB}


def train_zoo(entries: list[ZooEntry], pack: str, out: Path, deadline: float, eval_reserve_s: float,
              probe_steps: int, workers: int) -> list[dict[str, Any]]:
    """Train every entry within its share of the time before `deadline` − eval_reserve_s; rows for the table
    (a config that fails is reported in one line and left out)."""
    started = time.perf_counter()
    train_set, val_set = load_pack(pack, "train", workers=workers), load_pack(pack, "val", workers=workers)
    print(f"decoded {len(train_set)} train / {len(val_set)} val faces from {pack} in "
          f"{time.perf_counter() - started:.1f} s")
    rows = []
    for i, entry in enumerate(entries):
        share = share_of(deadline - eval_reserve_s - time.perf_counter(), entry.settings.weight,
                         sum(e.settings.weight for e in entries[i:]))
        try:
            rows.append(train_one(entry, share, train_set, val_set, out / "checkpoints" / entry.name, probe_steps))
        except Exception as err:  # noqa: BLE001 — one config's failure (weights, memory) must not sink the others
            print(f"failed {entry.name}: {type(err).__name__}: {err}")
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
    return rows


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pack", help="face pack with train and val splits (and test; without it the shipped "
                        "test-face pack is evaluated); --smoke builds a tiny one")
    parser.add_argument("--out", type=Path, help="empty folder for checkpoints and tables (default runs/gpu_zoo; "
                        "--smoke: a temporary one)")
    parser.add_argument("--bundle", type=Path, help="also write the results as ≤ 15 MiB parts here (the device's $OUT)")
    parser.add_argument("--configs", default=",".join(ZOO), help="comma-separated config names (default: the zoo)")
    parser.add_argument("--budget-s", type=float, default=480.0, help="wall seconds for everything (default 480)")
    parser.add_argument("--eval-reserve-s", type=float, default=60.0, help="seconds kept for the evaluation")
    parser.add_argument("--compile", default="", help="comma-separated config names to train under torch.compile")
    parser.add_argument("--smoke", action="store_true", help="CPU, tiny synthetic pack, one epoch per model")
    parser.add_argument("--export-weights", action="store_true",
                        help=f"write the pretrained backbones as float16 files under {COMPACT_DIR}/ and stop")
    parser.add_argument("--check-carry", nargs="*", metavar="PATH",
                        help="print whether the working tree plus these carried paths fit the device's 64 MiB")
    return parser


@dataclass(frozen=True)
class RunMode:
    """What differs between the GPU run and its CPU smoke: settings, epoch cap, probe length, threads."""

    common: dict[str, Any]
    max_epochs: int | None
    probe_steps: int
    workers: int  # pack-decoding threads and evaluation threads
    latency_runs: int


def run_zoo(args: argparse.Namespace, names: list[str], pack: str, manifest: str | None, out: Path,
            mode: RunMode) -> int:
    """Resolve, train, tabulate, evaluate and (with --bundle) bundle into the empty folder `out`; returns the
    number of configs trained."""
    if out.is_dir() and any(out.iterdir()):  # stale checkpoints would join the leaderboard and the bundle
        raise SystemExit(f"--out {out} is not empty (an earlier run?): remove it or pass another --out")
    deadline = time.perf_counter() + args.budget_s
    # a missing or foreign pack, or one without test faces nor a matching test-face pack, fails here before training
    test_pack, test_line = choose_test_pack(pack)
    print(test_line)
    entries, skipped = resolve_zoo(names, pack, mode.common, mode.max_epochs)
    if skipped:
        print("\n".join(skipped))
    compiled = {n.strip() for n in args.compile.split(",") if n.strip()}
    for entry in entries:
        entry.config.compile = entry.name in compiled
    out.mkdir(parents=True, exist_ok=True)
    rows = train_zoo(entries, pack, out, deadline, args.eval_reserve_s, mode.probe_steps, mode.workers)
    if not rows:
        raise SystemExit("no config trained; see the skip / failed lines above")
    device_name = torch.cuda.get_device_name() if mode.common["device"] == "cuda" else "cpu"
    print("\n" + write_throughput(rows, out, device_name).read_text())
    print(f"\n{test_line}")
    run_pipeline(RunOptions(  # its leaderboard step prints the table
        checkpoints=out / "checkpoints", pack=test_pack, manifest=manifest, models=[row["name"] for row in rows],
        steps=["test", "leaderboard"], threads=mode.workers, device=mode.common["device"],
        latency_runs=mode.latency_runs, latency_warmup=min(2, mode.latency_runs)))
    print(f"\ngpu_zoo: {len(rows)} trained, {len(entries) - len(rows)} failed, {len(skipped)} skipped; "
          f"{args.budget_s - (deadline - time.perf_counter()):.0f} s of the {args.budget_s:.0f} s budget")
    if args.bundle:
        parts = write_bundle(out, args.bundle)
        print(f"bundle: {len(parts)} part(s) in {args.bundle}; join with "
              f"cat {BUNDLE_NAME}.part* | tar -xz -C runs/gpu_zoo")
    return len(rows)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    names = [n.strip() for n in args.configs.split(",") if n.strip()]
    if args.export_weights:
        print("\n".join(export_compact_weights(names)))
        return 0
    if args.check_carry is not None:
        total, report = carry_report(args.check_carry)
        print(report)
        return 0 if total <= DEVICE_CARRY_LIMIT else 1
    if args.smoke:
        with tempfile.TemporaryDirectory(prefix="gpu_zoo_smoke_") as tmp:
            pack = args.pack or str(write_smoke_pack(Path(tmp)))
            manifest = None if args.pack else str(Path(tmp) / "manifest.csv")
            out = args.out or Path(tmp) / "out"  # a smoke leaves nothing behind unless asked to
            run_zoo(args, names, pack, manifest, out, RunMode(SMOKE_COMMON, 1, 1, 1, 1))
    else:
        if not args.pack:
            raise SystemExit("--pack is required (or --smoke); see the README section 'Training on a GPU'")
        if not torch.cuda.is_available():
            raise SystemExit("no CUDA GPU visible; use --smoke for the CPU check")
        run_zoo(args, names, args.pack, None, args.out or Path("runs/gpu_zoo"),
                RunMode(GPU_COMMON, None, PROBE_STEPS, os.cpu_count() or 1, 5))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
