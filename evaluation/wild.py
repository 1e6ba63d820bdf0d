"""Wild-photo evaluation: every face of a split re-rendered as a photo would present it, then put through the
app's own path (load_image → FaceDetector → aligned crop → the models, flip-averaged), clean vs wild.

Each face is rendered by `agekit.wild.render_wild` (seeded per face: size 40-400 px, tilt ±25°, position,
background, exposure, blur, JPEG 30-95) and decoded from its JPEG bytes like an upload. The detected face nearest
the known placement is the face's crop; a face with no detection there counts against the detection rate and is
left out of the wild metrics (`clean_same_faces` gives the clean metrics of exactly the faces that were detected).
Detection and crops are shared by all models and cached under runs/wild/ (both the aligned and the box crop of
the one detection), so re-runs cost only the models' forward passes.

`evaluation.run` runs it twice: step "wild_test" (the "wild" section of metrics.json and predictions_wild.csv) and
step "val_ranking" (the "val" section: clean and wild validation headline metrics, which the app ranks models by;
alignment, augmentation strength and the headline model are chosen on val, never on test).
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as in evaluation.evaluate; before torch loads

import hashlib
import itertools
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from PIL import Image
from tqdm import tqdm

from agekit import faces as face_module
from agekit import wild as wild_module
from agekit.artifacts import RENDERED
from agekit.checkpoint import LoadedModel
from agekit.data import FaceTensors
from agekit.faces import UTK_SIZE, FaceDetector, load_image
from agekit.metrics import CS_YEARS, compute_metrics, headline_metrics, predictions_frame
from agekit.wild import render_wild
from evaluation.evaluate import predict_probabilities

MATCH_DISTANCE = 0.5  # a detection is the rendered face when its box centre is within this x face width of it
FACE_WIDTH_BUCKETS = (40, 60, 100, 200, 400)  # px edges for the detection rate by face size
CACHE_DIR = Path("runs/wild")
MODES = {True: "align", False: "box"}
TABLE_METRICS = ("age_mae", f"age_cs{CS_YEARS}", "age_bin_macro_f1", "gender_accuracy", "ethnicity_accuracy",
                 "ethnicity_macro_f1")


@dataclass
class WildCrops:
    """The detection outcome for every face of a split, shared by all models."""

    files: list[str]
    detected: np.ndarray  # (N,) bool: a face was found at the rendered placement
    aligned: np.ndarray  # (N,) bool: the crop is landmark-aligned (False: box crop or not detected)
    crops: np.ndarray  # (N,S,S,3) uint8 RGB; zeros where not detected
    table: pd.DataFrame  # per face: render parameters, faces_found, score, detected, aligned
    seconds: float  # rendering + decoding + detection time (0 when read from the cache)


def cache_key(split: str, seed: int, manifest_hash: str, detector: FaceDetector) -> str:
    """A name for the cached crops that changes when anything they depend on changes."""
    parts = (split, seed, manifest_hash, wild_module.RENDER_VERSION, face_module.UTK_LANDMARKS.tobytes(),
             face_module.UTK_SIDE_PER_BOX_WIDTH, face_module.UTK_CENTRE_DX, face_module.UTK_CENTRE_DY,
             face_module.MAX_ALIGN_RESIDUAL, face_module.MAX_ALIGN_SIDE_RATIO,
             detector.max_side, detector.min_face_px, detector.min_score, detector.max_faces)
    return f"{split}_seed{seed}_{hashlib.sha256(repr(parts).encode()).hexdigest()[:12]}"


def nearest_face(boxes: np.ndarray, centre: tuple[float, float], face_width: float) -> int | None:
    """Index of the box whose centre is nearest the rendered face's centre, if within MATCH_DISTANCE widths."""
    if len(boxes) == 0:
        return None
    centres = (boxes[:, :2] + boxes[:, 2:]) / 2
    distances = np.hypot(*(centres - np.asarray(centre)).T)
    best = int(np.argmin(distances))
    return best if distances[best] <= MATCH_DISTANCE * face_width else None


def detect_wild(faces: FaceTensors, detector: FaceDetector, seed: int) -> dict[bool, WildCrops]:
    """Render every face, decode it as an upload, detect once, and crop the matched face both aligned and not."""
    n = len(faces)
    crops = {align: np.zeros((n, UTK_SIZE, UTK_SIZE, 3), np.uint8) for align in MODES}
    aligned = {align: np.zeros(n, bool) for align in MODES}
    detected = np.zeros(n, bool)
    rows = []
    started = time.perf_counter()
    for i in tqdm(range(n), desc="render + detect", unit="face", mininterval=10):
        chip = Image.fromarray(faces.images[i].permute(1, 2, 0).numpy())
        render = render_wild(chip, seed, i)
        params = render.params
        image = load_image(render.jpeg)
        boxes, probs, points = detector.find_faces(image)
        match = nearest_face(boxes, params.face_centre, params.face_width)
        row = {"file": faces.files[i], **params.as_dict(), "faces_found": len(boxes), "score": None}
        if match is not None:
            detected[i] = True
            row["score"] = float(probs[match])
            keep = slice(match, match + 1)
            for align in MODES:
                [crop] = detector.crops(image, boxes[keep], probs[keep], points[keep], align=align)
                crops[align][i] = np.asarray(crop.image)  # UTK_SIZE x UTK_SIZE
                aligned[align][i] = crop.aligned
        rows.append(row)
    seconds = time.perf_counter() - started
    table = pd.DataFrame(rows).assign(detected=detected)
    return {align: WildCrops(list(faces.files), detected, aligned[align], crops[align],
                             table.assign(aligned=aligned[align]), seconds) for align in MODES}


def load_or_detect(faces: FaceTensors, detector: FaceDetector, split: str, seed: int, align: bool,
                   cache_dir: Path | None = CACHE_DIR) -> WildCrops:
    """The crops (aligned or box) of `faces`, from `cache_dir` when this split, seed and code were detected
    before; written there otherwise (None: no cache)."""
    key = cache_key(split, seed, faces.manifest_hash, detector)
    if cache_dir is not None:
        path = Path(cache_dir) / f"{key}_{MODES[align]}.npz"
        if path.is_file():
            with np.load(path, allow_pickle=False) as cached:
                table = pd.read_csv(path.with_suffix(".csv"))
                if list(cached["files"]) == list(faces.files):
                    print(f"crops read from {path}")
                    return WildCrops(list(faces.files), cached["detected"], cached["aligned"], cached["crops"],
                                     table, 0.0)
    both = detect_wild(faces, detector, seed)
    if cache_dir is not None:
        Path(cache_dir).mkdir(parents=True, exist_ok=True)
        for mode, result in both.items():
            path = Path(cache_dir) / f"{key}_{MODES[mode]}.npz"
            np.savez(path, files=np.array(result.files), detected=result.detected, aligned=result.aligned,
                     crops=result.crops)
            result.table.to_csv(path.with_suffix(".csv"), index=False)
    return both[align]


def detection_summary(crops: WildCrops) -> dict[str, Any]:
    """Detection rate overall and by face width, the share of detected faces aligned, and the missed files."""
    widths = crops.table["face_width"].to_numpy()
    by_width = []
    for low, high in itertools.pairwise(FACE_WIDTH_BUCKETS):
        members = (widths >= low) & (widths < high) if high < FACE_WIDTH_BUCKETS[-1] else (widths >= low)
        by_width.append({"face_width_px": [low, high], "faces": int(members.sum()),
                         "detection_rate": float(crops.detected[members].mean()) if members.any() else None})
    n_detected = int(crops.detected.sum())
    return {"n_faces": len(crops.files), "n_detected": n_detected,
            "detection_rate": n_detected / len(crops.files) if crops.files else None,
            "aligned_share": float(crops.aligned[crops.detected].mean()) if n_detected else None,
            "detection_by_face_width": by_width,
            "missed": [f for f, hit in zip(crops.files, crops.detected) if not hit]}


def render_settings() -> dict[str, Any]:
    """The renderer's ranges, recorded with the results."""
    return {"version": wild_module.RENDER_VERSION, "face_width_px": list(wild_module.FACE_WIDTH_PX),
            "frame_per_face": list(wild_module.FRAME_PER_FACE), "rotation_deg": wild_module.ROTATION_DEG,
            "exposure_ev": list(wild_module.EXPOSURE_EV), "blur_sigma_px": list(wild_module.BLUR_SIGMA_PX),
            "jpeg_quality": list(wild_module.JPEG_QUALITY), "backgrounds": list(wild_module.BACKGROUNDS)}


def wild_section(loaded: LoadedModel, faces: FaceTensors, clean: dict[str, np.ndarray], crops: WildCrops,
                 split: str, seed: int, align: bool, batch_size: int = 64
                 ) -> tuple[dict[str, Any], pd.DataFrame, dict[str, Any]]:
    """One model, from its clean probabilities on `faces` and the split's crops: (the wild section for
    metrics.json, the wild predictions table, the clean metrics of every face)."""
    started = time.perf_counter()
    age_bins = loaded.card.age_bin_scheme()
    truth = {task: values.numpy() for task, values in faces.targets.items()}
    clean_frame = predictions_frame(faces.files, truth, clean, age_bins)
    hits = np.flatnonzero(crops.detected)
    images = torch.from_numpy(crops.crops[hits]).permute(0, 3, 1, 2).contiguous()
    wild = predict_probabilities(loaded, images, batch_size) if len(hits) else {}
    wild_frame = predictions_frame([faces.files[i] for i in hits],
                                   {task: values[hits] for task, values in truth.items()}, wild, age_bins,
                                   loaded.card.interval(RENDERED))
    section = {
        "format_version": 1, "split": split, "seed": seed, "align": align,
        "render": render_settings(), **detection_summary(crops),
        "metrics": compute_metrics(wild_frame, age_bins) if len(hits) else None,
        "clean_same_faces": headline_metrics(clean_frame.iloc[hits]) if len(hits) else None,
        # seconds this run spent rendering + detecting (0: crops from the runs/wild cache) and predicting
        "detect_s": crops.seconds, "predict_s": time.perf_counter() - started,
    }
    return section, wild_frame, compute_metrics(clean_frame, age_bins)


def val_section(clean: dict[str, Any], wild: dict[str, Any]) -> dict[str, Any]:
    """metrics.json's "val" section from the val split's clean metrics and wild section: the headline metrics of
    clean faces and of the same faces in rendered photos, and the detection rate."""
    return {"clean": clean["headline"], "wild": (wild["metrics"] or {}).get("headline"),
            "detection_rate": wild["detection_rate"]}


def comparison_rows(name: str, clean: dict[str, Any], section: dict[str, Any]) -> dict[str, Any]:
    """One table row: clean and wild headline metrics side by side, and the detection rate."""
    wild = (section["metrics"] or {}).get("headline", {})
    row: dict[str, Any] = {"model": name, "detection": section["detection_rate"]}
    for metric in TABLE_METRICS:
        row[f"clean_{metric}"] = clean["headline"].get(metric)
        row[f"wild_{metric}"] = wild.get(metric)
    return row


def format_table(table: pd.DataFrame) -> str:
    """Clean vs wild, one line per model: MAE in years, the rest in %."""
    lines = ["model | detection | " + " | ".join(f"{m} clean → wild" for m in TABLE_METRICS)]
    for row in table.to_dict("records"):
        cells = [row["model"], f"{row['detection']:.1%}"]
        for metric in TABLE_METRICS:
            clean, wild = row[f"clean_{metric}"], row[f"wild_{metric}"]
            fmt = (lambda v: f"{v:.2f}") if metric == "age_mae" else (lambda v: f"{v:.1%}")
            cells.append(" → ".join("–" if v is None or pd.isna(v) else fmt(v) for v in (clean, wild)))
        lines.append(" | ".join(cells))
    return "\n".join(lines)
