"""Evaluate every checkpoint on the one committed test split and write its eval artifacts.

    python -m evaluation.evaluate --checkpoints checkpoints/ --data PATH/TO/UTKFace [--models a,b]

Per model, checkpoints/<model>/eval/ gets predictions.csv (one row per test face, columns in
`agekit.metrics`) and metrics.json (every metric + model size, FLOPs, split provenance, skipped
files; timings only under "speed"). checkpoints/leaderboard.csv is rebuilt from every model's
metrics.json. The test images are decoded once and shared by all models. metrics.json is rewritten whole, so a
model's wild-photo section goes with it: re-run `python -m evaluation.wild` afterwards.
"""

from __future__ import annotations

import os

# As in training/train.py: passive OpenMP waits keep 2-thread inference fast when other processes share the
# cores (spinning waits made batch-1 latency seconds instead of milliseconds here). Set before torch loads.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import hashlib
import json
import platform
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils.flop_counter import FlopCounterMode

from agekit.card import ModelCard
from agekit.checkpoint import (
    CheckpointError,
    LoadedModel,
    list_checkpoints,
    load_checkpoint,
)
from agekit.data import FaceTensors, SplitManifest, load_folder, load_manifest, load_pack, resolve_data_root
from agekit.eval_artifacts import EVAL_DIR, METRICS_FILE, PREDICTIONS_FILE, metrics_path, wild_headline
from agekit.metrics import CS_YEARS, compute_metrics, predictions_frame
from agekit.models import age_probabilities
from agekit.predict import FLIP_AVERAGE, model_logits

LEADERBOARD = "leaderboard.csv"
SPLIT = "test"
# UTKFace's aligned crops are 200x200: decoding at that size keeps every pixel, and each model
# then resizes from the same pixels, so a model's metrics do not depend on which others run with it.
DECODE_SIZE = 200
LEADERBOARD_COLUMNS = (
    "name", "family", "architecture", "params", "flops", "input_size", "init_source", "mae", f"cs{CS_YEARS}",
    "age_bin_macro_f1", "gender_accuracy", "ethnicity_accuracy", "ethnicity_macro_f1", "wild_detection_rate",
    "wild_mae", "wild_age_bin_macro_f1", "wild_gender_accuracy", "wild_ethnicity_accuracy", "latency_ms",
    "n_test", "split_hash",
)


class EvaluationError(ValueError):
    """Evaluation cannot run as asked; the message says what to change."""


@dataclass
class EvalOptions:
    """What to evaluate and how (the command-line flags)."""

    checkpoints: Path = Path("checkpoints")  # folder holding one sub-folder per model
    data: str | None = None  # UTKFace folder; None: environment variable AGEKIT_UTKFACE
    pack: str | None = None  # read the test faces from this face pack instead of the folder (e.g. on the GPU machine)
    models: list[str] | None = None  # sub-folder names; None: every checkpoint found
    manifest: str | None = None  # split manifest CSV; None: the committed one
    batch_size: int = 64
    threads: int = 2  # torch CPU threads for inference and for the latency measurement
    device: str = "cpu"  # where the test predictions run ("cuda" on the GPU machine); latency is always CPU
    allow_hash_mismatch: bool = False  # evaluate checkpoints trained on another split (experiments only)
    latency_runs: int = 30  # timed batch-1 forward passes (median reported)
    latency_warmup: int = 5
    decode_size: int = DECODE_SIZE  # square side (px) the test images are decoded at, once for all models
    flip_average: bool = FLIP_AVERAGE  # average each face with its mirror image, as the app does


@dataclass
class ModelEvaluation:
    """One model's evaluation: what was written to checkpoints/<model>/eval/."""

    name: str
    folder: Path
    report: dict[str, Any]  # the content of metrics.json
    predictions: pd.DataFrame = field(repr=False)


def file_sha256(path: str | Path) -> str:
    """sha256 hex digest of a file's bytes."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def select_checkpoints(root: str | Path, names: Sequence[str] | None = None) -> list[Path]:
    """Checkpoint folders under `root`: all of them, or the named ones (in the given order)."""
    root = Path(root)
    if not root.is_dir():
        raise EvaluationError(f"checkpoint folder {root} does not exist; train a model first or pass --checkpoints")
    available = {folder.name: folder for folder in list_checkpoints(root)}
    if not names:
        if not available:
            raise EvaluationError(f"no checkpoints (folders with config.json) under {root}")
        return [available[name] for name in sorted(available)]
    unknown = [name for name in names if name not in available]
    if unknown:
        raise EvaluationError(f"no checkpoint named {unknown} under {root}; available: {sorted(available)}")
    return [available[name] for name in names]


def check_split_hash(card: ModelCard, manifest_hash: str, manifest_path: str | Path, allow_mismatch: bool) -> bool:
    """True when the checkpoint was trained on this split manifest; otherwise raise (or False if allowed)."""
    if card.split_hash == manifest_hash:
        return True
    if allow_mismatch:
        return False
    raise EvaluationError(
        f"checkpoint {card.name!r} was trained on split {card.split_hash or '(none recorded)'} but the manifest "
        f"{manifest_path} has hash {manifest_hash}: its test faces may overlap the model's training faces. "
        "Evaluate with the manifest it was trained on (--manifest), or pass --allow-hash-mismatch for an experiment."
    )


def predict_probabilities(loaded: LoadedModel, images: torch.Tensor, batch_size: int,
                          flip_average: bool = FLIP_AVERAGE, device: str = "cpu") -> dict[str, np.ndarray]:
    """Per-task probabilities (N, classes) for uint8 RGB images (N,3,H,W), run exactly as the app runs them
    (on `device`; the model is back on the CPU afterwards)."""
    loaded.model.eval()
    # channels_last: 2-3x faster CNN inference on CPU here (measured by bench.speed); same results to 1e-5.
    loaded.model.to(device=device, memory_format=torch.channels_last)
    chunks: dict[str, list[np.ndarray]] = {task: [] for task in loaded.card.tasks}
    try:
        for start in range(0, len(images), batch_size):
            logits = model_logits(loaded, images[start:start + batch_size].to(device), True, flip_average)
            for task, values in logits.items():
                probs = age_probabilities(values) if task == "age" else torch.softmax(values.float(), -1)
                chunks[task].append(probs.double().cpu().numpy())
    finally:
        loaded.model.to("cpu")
    return {task: np.concatenate(parts) for task, parts in chunks.items()}


def count_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_flops(loaded: LoadedModel) -> int:
    """FLOPs of one forward pass on one face at the model's input size (torch's counter: 2 per multiply-add).
    Flip averaging (metrics.json "inference") runs two passes per face."""
    card = loaded.card
    x = torch.zeros(1, card.in_chans, card.input_size, card.input_size)
    counter = FlopCounterMode(display=False)
    with torch.inference_mode(), counter:
        loaded.model(x)
    return int(counter.get_total_flops())


def cpu_name() -> str:
    """The CPU model (Linux /proc/cpuinfo), else the platform's machine type; latencies only compare on one CPU."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def measure_latency(loaded: LoadedModel, face: torch.Tensor, threads: int = 2, runs: int = 30,
                    warmup: int = 5, flip_average: bool = FLIP_AVERAGE) -> dict[str, Any]:
    """CPU latency (ms) of preprocessing + forward pass(es) for one face (uint8 (1,3,H,W)), batch 1, as served."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    timings = []
    try:
        for i in range(warmup + runs):
            start = time.perf_counter()
            model_logits(loaded, face, True, flip_average)
            if i >= warmup:
                timings.append((time.perf_counter() - start) * 1000.0)
    finally:
        torch.set_num_threads(previous)
    return {"latency_ms": float(np.median(timings)), "latency_ms_p90": float(np.percentile(timings, 90)),
            "runs": runs, "warmup": warmup, "threads": threads, "batch_size": 1,
            "cpu": cpu_name(), "torch": torch.__version__}


def evaluate_model(loaded: LoadedModel, faces: FaceTensors, provenance: dict[str, Any],
                   options: EvalOptions) -> ModelEvaluation:
    """Predict the test faces with one model, compute every metric, write eval/predictions.csv + metrics.json."""
    card, folder = loaded.card, Path(loaded.folder)
    started = time.perf_counter()
    outputs = predict_probabilities(loaded, faces.images, options.batch_size, options.flip_average, options.device)
    predict_s = time.perf_counter() - started
    age_bins = card.age_bin_scheme()
    truth = {task: values.numpy() for task, values in faces.targets.items()}
    frame = predictions_frame(faces.files, truth, outputs, age_bins)
    report = {
        "format_version": 1,
        "model": {
            "name": card.name, "family": card.family, "architecture": card.architecture, "tasks": list(card.tasks),
            "shared_backbone": card.shared_backbone, "input_size": card.input_size, "in_chans": card.in_chans,
            "init_source": card.init_source, "age_bins": age_bins.spec,
            "params": count_parameters(loaded.model), "flops": count_flops(loaded),
            "config_sha256": file_sha256(folder / "config.json"),
        },
        "data": {**provenance, "checkpoint_split_hash": card.split_hash,
                 "hash_match": card.split_hash == provenance["manifest_hash"]},
        "inference": {"flip_average": options.flip_average},
        "metrics": compute_metrics(frame, age_bins),
        "speed": {
            **measure_latency(loaded, faces.images[:1], options.threads, options.latency_runs, options.latency_warmup,
                              options.flip_average),
            "predict_s": predict_s, "faces_per_s": len(frame) / predict_s if predict_s > 0 else None,
            "eval_wall_s": time.perf_counter() - started,
        },
    }
    out = folder / EVAL_DIR
    out.mkdir(exist_ok=True)
    frame.to_csv(out / PREDICTIONS_FILE, index=False)
    (out / METRICS_FILE).write_text(json.dumps(report, indent=2, allow_nan=False) + "\n")
    return ModelEvaluation(card.name, folder, report, frame)


def leaderboard_row(report: dict[str, Any]) -> dict[str, Any]:
    """One leaderboard row from a metrics.json dict."""
    model, headline = report["model"], report["metrics"]["headline"]
    wild = wild_headline(report) or {}
    return {
        "name": model["name"], "family": model["family"], "architecture": model["architecture"],
        "params": model["params"], "flops": model["flops"], "input_size": model["input_size"],
        "init_source": model["init_source"], "mae": headline.get("age_mae"),
        f"cs{CS_YEARS}": headline.get(f"age_cs{CS_YEARS}"), "age_bin_macro_f1": headline.get("age_bin_macro_f1"),
        "gender_accuracy": headline.get("gender_accuracy"), "ethnicity_accuracy": headline.get("ethnicity_accuracy"),
        "ethnicity_macro_f1": headline.get("ethnicity_macro_f1"), "wild_detection_rate": wild.get("detection_rate"),
        "wild_mae": wild.get("age_mae"), "wild_age_bin_macro_f1": wild.get("age_bin_macro_f1"),
        "wild_gender_accuracy": wild.get("gender_accuracy"), "wild_ethnicity_accuracy": wild.get("ethnicity_accuracy"),
        "latency_ms": report["speed"]["latency_ms"],
        "n_test": report["metrics"]["n"], "split_hash": report["data"]["manifest_hash"],
    }


def write_leaderboard(root: str | Path) -> pd.DataFrame:
    """Rebuild root/leaderboard.csv from every root/<model>/eval/metrics.json (best MAE first)."""
    root = Path(root)
    rows = []
    for path in sorted(root.glob(f"*/{EVAL_DIR}/{METRICS_FILE}")):
        try:
            rows.append(leaderboard_row(json.loads(path.read_text())))
        except (ValueError, KeyError, TypeError) as err:  # a stale or damaged file must not hide the others
            print(f"warning: leaving {path} out of the leaderboard ({type(err).__name__}: {err}); "
                  "re-run the evaluation for that model", file=sys.stderr)
    board = pd.DataFrame(rows, columns=list(LEADERBOARD_COLUMNS))
    if len(board):
        board = board.sort_values(["mae", "name"], na_position="last", kind="stable").reset_index(drop=True)
    board.to_csv(root / LEADERBOARD, index=False)
    return board


def read_leaderboard(root: str | Path) -> pd.DataFrame:
    """checkpoints/leaderboard.csv as a DataFrame (empty with the right columns if not evaluated yet)."""
    path = Path(root) / LEADERBOARD
    return pd.read_csv(path) if path.is_file() else pd.DataFrame(columns=list(LEADERBOARD_COLUMNS))


def read_metrics(checkpoint_folder: str | Path) -> dict[str, Any]:
    """A checkpoint's eval/metrics.json; raises FileNotFoundError telling how to create it."""
    path = metrics_path(checkpoint_folder)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: run `python -m evaluation.evaluate` first")
    return json.loads(path.read_text())


def load_selected(folders: Sequence[Path], manifest: SplitManifest, allow_mismatch: bool) -> list[LoadedModel]:
    """Load the checkpoint folders, each checked to be trained on `manifest`'s split (see check_split_hash)."""
    models = []
    for folder in folders:
        try:
            loaded = load_checkpoint(folder)
        except (CheckpointError, FileNotFoundError) as err:
            raise EvaluationError(f"cannot load checkpoint {folder}: {err} (leave it out with --models)") from None
        if not check_split_hash(loaded.card, manifest.hash, manifest.path, allow_mismatch):
            print(f"warning: {loaded.card.name} was trained on split {loaded.card.split_hash or '(none)'}, "
                  f"evaluating on {manifest.hash} (--allow-hash-mismatch)", file=sys.stderr)
        models.append(loaded)
    return models


def evaluate_checkpoints(options: EvalOptions) -> list[ModelEvaluation]:
    """Evaluate the selected checkpoints on the test split; writes per-model artifacts and the leaderboard."""
    manifest = load_manifest(options.manifest)  # None: the committed manifest
    models = load_selected(select_checkpoints(options.checkpoints, options.models), manifest,
                           options.allow_hash_mismatch)

    started = time.perf_counter()
    if options.pack:  # the same split as stored in a pack: resized once to the pack's size, then encoded
        source = options.pack
        faces = load_pack(options.pack, SPLIT, expected_manifest_hash=manifest.hash)
    else:
        source = resolve_data_root(options.data)
        faces = load_folder(source, manifest, SPLIT, options.decode_size)
    n_test = len(manifest.rows(SPLIT))
    print(f"decoded {len(faces)} of {n_test} {SPLIT} faces from {source} in {time.perf_counter() - started:.1f} s"
          + (f"; skipped {len(faces.skipped)} unreadable" if faces.skipped else ""))
    if len(faces) == 0:
        raise EvaluationError(f"none of the {n_test} {SPLIT} files could be read from {source}: "
                              f"first problems {faces.skipped[:3]}")
    provenance = {
        "split": SPLIT, "manifest": str(manifest.path), "manifest_hash": manifest.hash,
        **({"pack": str(options.pack)} if options.pack else {}),
        "decode_size": int(faces.images.shape[-1]), "n_test_files": n_test, "n_evaluated": len(faces),
        "n_skipped": len(faces.skipped),
        "skipped": [{"file": file, "reason": reason} for file, reason in faces.skipped],
    }
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(options.threads)
    results = []
    try:
        for loaded in models:
            result = evaluate_model(loaded, faces, provenance, options)
            print(f"{result.name}: {summary_line(result.report)}")
            results.append(result)
    finally:
        torch.set_num_threads(previous_threads)
    write_leaderboard(options.checkpoints)
    return results


def summary_line(report: dict[str, Any]) -> str:
    headline = report["metrics"]["headline"]
    parts = [f"{key}={value:.3f}" for key, value in headline.items() if value is not None]
    return ", ".join(parts + [f"latency={report['speed']['latency_ms']:.2f} ms"])


def summary_table(results: Sequence[ModelEvaluation]) -> str:
    """The evaluated models' leaderboard rows as aligned text."""
    board = pd.DataFrame([leaderboard_row(r.report) for r in results])
    shown = ["name", "params", "input_size", "mae", f"cs{CS_YEARS}", "age_bin_macro_f1", "gender_accuracy",
             "ethnicity_accuracy", "ethnicity_macro_f1", "latency_ms"]
    return board[shown].to_string(index=False, float_format=lambda v: f"{v:.3f}")


def parse_args(argv: Sequence[str] | None = None) -> EvalOptions:
    parser = argparse.ArgumentParser(prog="python -m evaluation.evaluate", description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoints", type=Path, default=Path("checkpoints"), help="folder of checkpoint folders")
    parser.add_argument("--data", default=None, help="UTKFace folder (default: $AGEKIT_UTKFACE)")
    parser.add_argument("--pack", default=None,
                        help="read the test faces from this face pack instead of the folder (GPU machine runs)")
    parser.add_argument("--models", default=None, help="comma-separated checkpoint names (default: all)")
    parser.add_argument("--manifest", default=None, help="split manifest CSV (default: the committed one)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2, help="CPU threads for inference and latency")
    parser.add_argument("--latency-runs", type=int, default=30, help="timed batch-1 runs (median reported)")
    parser.add_argument("--decode-size", type=int, default=DECODE_SIZE,
                        help="side (px) the test images are decoded at, once for all models")
    parser.add_argument("--no-flip", dest="flip_average", action="store_false",
                        help="do not average each face with its mirror image (the app does; ablations only)")
    parser.add_argument("--allow-hash-mismatch", action="store_true",
                        help="evaluate checkpoints trained on another split manifest (experiments only)")
    args = parser.parse_args(argv)
    models = [m.strip() for m in args.models.split(",") if m.strip()] if args.models else None
    return EvalOptions(checkpoints=args.checkpoints, data=args.data, pack=args.pack, models=models,
                       manifest=args.manifest,
                       batch_size=args.batch_size, threads=args.threads, latency_runs=args.latency_runs,
                       decode_size=args.decode_size, allow_hash_mismatch=args.allow_hash_mismatch,
                       flip_average=args.flip_average)


def main(argv: Sequence[str] | None = None) -> int:
    options = parse_args(argv)
    started = time.perf_counter()
    try:
        results = evaluate_checkpoints(options)
    except (ValueError, FileNotFoundError) as err:  # EvaluationError, DataRootError, ManifestError, ...
        print(f"error: {err}", file=sys.stderr)
        return 2
    print()
    print(summary_table(results))
    print(f"\nleaderboard: {Path(options.checkpoints) / LEADERBOARD}")
    print(f"total wall time {time.perf_counter() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
