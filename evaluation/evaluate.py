"""The clean test step: every model's predictions and metrics on the test faces of the committed split.

`evaluation.run` runs it (step "test") and hands its result to the artifact files (`agekit.artifacts`): the test
section of metrics.json (every metric, model size, FLOPs, split provenance, skipped files; timings only under
"speed") and eval/predictions.csv. The test images are decoded once and shared by all models.
"""

from __future__ import annotations

import os

# As in training/train.py: passive OpenMP waits keep 2-thread inference fast when other processes share the
# cores (spinning waits made batch-1 latency seconds instead of milliseconds here). Set before torch loads.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import platform
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils.flop_counter import FlopCounterMode

from agekit.artifacts import CLEAN, file_sha256, repo_relative
from agekit.card import ModelCard
from agekit.checkpoint import CONFIG_FILE, CheckpointError, LoadedModel, list_checkpoints, load_checkpoint
from agekit.data import FaceTensors, SplitManifest
from agekit.metrics import CS_YEARS, compute_metrics, predictions_frame
from agekit.models import age_probabilities
from agekit.predict import FLIP_AVERAGE, model_logits

SPLIT = "test"
# UTKFace's aligned crops are 200x200: decoding at that size keeps every pixel, and each model
# then resizes from the same pixels, so a model's metrics do not depend on which others run with it.
DECODE_SIZE = 200


class EvaluationError(ValueError):
    """Evaluation cannot run as asked; the message says what to change."""


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


def clean_section(loaded: LoadedModel, faces: FaceTensors, probabilities: dict[str, np.ndarray],
                 predict_s: float, provenance: dict[str, Any], threads: int, latency_runs: int = 30,
                 latency_warmup: int = 5) -> tuple[dict[str, Any], pd.DataFrame]:
    """One model's clean test evaluation from its flip-averaged probabilities on `faces` (predict_probabilities,
    which took `predict_s` seconds): (the test section of metrics.json, the predictions table)."""
    card = loaded.card
    started = time.perf_counter()
    age_bins = card.age_bin_scheme()
    truth = {task: values.numpy() for task, values in faces.targets.items()}
    frame = predictions_frame(faces.files, truth, probabilities, age_bins, card.interval(CLEAN))
    section = {
        "format_version": 1,
        "model": {
            "name": card.name, "family": card.family, "architecture": card.architecture, "tasks": list(card.tasks),
            "shared_backbone": card.shared_backbone, "input_size": card.input_size, "in_chans": card.in_chans,
            "init_source": card.init_source, "age_bins": age_bins.spec,
            "params": count_parameters(loaded.model), "flops": count_flops(loaded),
            "config_sha256": file_sha256(Path(loaded.folder) / CONFIG_FILE),
        },
        "data": {**provenance, "checkpoint_split_hash": card.split_hash,
                 "hash_match": card.split_hash == provenance["manifest_hash"]},
        "inference": {"flip_average": FLIP_AVERAGE},
        "metrics": compute_metrics(frame, age_bins),
        "speed": {
            **measure_latency(loaded, faces.images[:1], threads, latency_runs, latency_warmup),
            "predict_s": predict_s, "faces_per_s": len(frame) / predict_s if predict_s > 0 else None,
            "eval_wall_s": predict_s + time.perf_counter() - started,
        },
    }
    return section, frame


def clean_provenance(manifest: SplitManifest, faces: FaceTensors, pack: str | None) -> dict[str, Any]:
    """Where the test faces came from, recorded in the test section ("data"); paths relative to the repository."""
    return {
        "split": SPLIT, "manifest": repo_relative(manifest.path), "manifest_hash": manifest.hash,
        **({"pack": repo_relative(pack)} if pack else {}),
        "decode_size": int(faces.images.shape[-1]), "n_test_files": len(manifest.rows(SPLIT)),
        "n_evaluated": len(faces), "n_skipped": len(faces.skipped),
        "skipped": [{"file": file, "reason": reason} for file, reason in faces.skipped],
    }


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


def summary_line(report: dict[str, Any]) -> str:
    headline = report["metrics"]["headline"]
    parts = [f"{key}={value:.3f}" for key, value in headline.items() if value is not None]
    return ", ".join(parts + [f"latency={report['speed']['latency_ms']:.2f} ms"])


def summary_table(board: pd.DataFrame) -> str:
    """Leaderboard rows as aligned text."""
    shown = ["name", "params", "input_size", "mae", f"cs{CS_YEARS}", "age_bin_macro_f1", "gender_accuracy",
             "ethnicity_accuracy", "ethnicity_macro_f1", "latency_ms"]
    return board[shown].to_string(index=False, float_format=lambda v: f"{v:.3f}")
