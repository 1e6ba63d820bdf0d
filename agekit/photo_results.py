"""One photo's faces and every model's predictions, and the results file formats (CSV rows, JSON) that the
page's downloads, the batch tab, the batch command and the API all write: one owner of those formats.

Faces are numbered left to right (by the centre of their box) everywhere: on the page, in the API and in the files.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from agekit.face_quality import QualityFlag, quality_flags
from agekit.faces import FaceCrop, FaceDetector, decode_factor
from agekit.labels import ETHNICITY_NAMES, GENDER_NAMES
from agekit.predict import ModelZoo, Prediction

MAX_FACES = 8  # the largest faces analysed per photo: more make the page unreadable and the photo slow


@dataclass
class PhotoResult:
    """The faces found in one photo and every model's predictions for them."""

    faces: list[FaceCrop]  # at most MAX_FACES (the largest), left to right
    predictions: dict[str, list[Prediction]]  # model name -> one Prediction per face
    detected: int = 0  # faces the detector found before capping at MAX_FACES
    flags: list[list[QualityFlag]] = field(default_factory=list)  # per face: why to distrust it (face_quality)
    pixel_scale: float = 1.0  # photo px per px of the boxes: big JPEGs are decoded reduced (faces.decode_factor)
    source: str = ""  # the photo's file name, for tables and files

    def box_in_photo(self, index: int) -> list[float]:
        """Face `index`'s box (x1, y1, x2, y2) in px of the uploaded photo, rounded to 0.1 px."""
        return [round(float(v) * self.pixel_scale, 1) for v in self.faces[index].box]


def numbered_faces(detector: FaceDetector, image: Image.Image, max_faces: int = MAX_FACES) -> list[FaceCrop]:
    """The `max_faces` largest faces, numbered left to right by box centre. An image in which no face is detected
    but that looks like a face crop already (square-ish, small, e.g. a UTKFace image) is used whole."""
    largest = detector.detect(image, assume_cropped=True)[:max_faces]
    return sorted(largest, key=lambda face: (face.box[0] + face.box[2]) / 2)


def analyse_photo(image: Image.Image, detector: FaceDetector, zoo: ModelZoo, source: str = "") -> PhotoResult:
    """Detect the faces of a loaded photo (agekit.faces.load_image), flag the poor ones and predict with every model;
    NoFaceFound when there is none."""
    faces = numbered_faces(detector, image)
    predictions = zoo.predict([face.image for face in faces]) if zoo.models else {}
    scale = decode_factor(image)
    return PhotoResult(faces=faces, predictions=predictions, detected=max(face.faces_found for face in faces),
                       flags=[quality_flags(face, image.size, scale) for face in faces], pixel_scale=scale,
                       source=source)


# ---------------------------------------------------------------- JSON

def prediction_json(pred: Prediction) -> dict[str, Any]:
    """One model's prediction for one face as JSON-ready values: age (years) with its interval when the model has
    one, the most likely age bin of the model's bin-aware decision and every bin's probability, gender, ethnicity."""
    out: dict[str, Any] = {}
    if pred.age is not None:
        out["age"] = round(float(pred.age), 2)
    if pred.age_lo is not None and pred.age_hi is not None:
        out["age_interval"] = [round(float(pred.age_lo), 1), round(float(pred.age_hi), 1)]
    if pred.age_bin_probs is not None:
        out["age_bin"] = pred.age_bin
        out["age_bin_probability"] = round(pred.age_bin_confidence, 4)
        out["age_bins"] = {n: round(float(p), 4) for n, p in zip(pred.age_bin_names, pred.age_bin_probs)}
    if pred.gender_probs is not None:
        out["gender"] = {n: round(float(p), 4) for n, p in zip(GENDER_NAMES, pred.gender_probs)}
    if pred.ethnicity_probs is not None:
        out["ethnicity"] = {n: round(float(p), 4) for n, p in zip(ETHNICITY_NAMES, pred.ethnicity_probs)}
    return out


def result_json(result: PhotoResult, models: list[str]) -> dict[str, Any]:
    """{"photo", "faces": [{"face": 1, "box": [x1, y1, x2, y2] (photo px), "score", "flags": [{"code", "message"}],
    "predictions": {model: prediction_json}}], "detected": faces found, "models": [names]}; models in `models` order."""
    faces = [{"face": i + 1, "box": result.box_in_photo(i), "score": round(float(face.score), 4),
              "flags": [{"code": f.code, "message": f.message} for f in (result.flags[i] if result.flags else [])],
              "predictions": {m: prediction_json(result.predictions[m][i]) for m in models if m in result.predictions}}
             for i, face in enumerate(result.faces)]
    return {"photo": result.source, "faces": faces, "detected": result.detected, "models": models}


# ---------------------------------------------------------------- CSV

def prediction_row(pred: Prediction) -> dict[str, Any]:
    """One model's prediction as flat CSV columns: age, age_lo, age_hi, age_bin, age_bin_p, p_age_<bin> per bin,
    gender, gender_p, p_<gender>, ethnicity, ethnicity_p, p_<ethnicity>; '' where the model lacks the task."""
    row: dict[str, Any] = {"age": "" if pred.age is None else round(float(pred.age), 2),
                           "age_lo": "" if pred.age_lo is None else round(float(pred.age_lo), 1),
                           "age_hi": "" if pred.age_hi is None else round(float(pred.age_hi), 1),
                           "age_bin": pred.age_bin or "",
                           "age_bin_p": "" if pred.age_bin_confidence is None else round(pred.age_bin_confidence, 4)}
    if pred.age_bin_probs is not None:
        row.update({f"p_age_{n}": round(float(p), 4) for n, p in zip(pred.age_bin_names, pred.age_bin_probs)})
    for task, names, probs in (("gender", GENDER_NAMES, pred.gender_probs),
                               ("ethnicity", ETHNICITY_NAMES, pred.ethnicity_probs)):
        row[task] = "" if probs is None else names[int(probs.argmax())]
        row[f"{task}_p"] = "" if probs is None else round(float(probs.max()), 4)
        if probs is not None:
            row.update({f"p_{n}": round(float(p), 4) for n, p in zip(names, probs)})
    return row


def result_rows(result: PhotoResult, models: list[str]) -> list[dict[str, Any]]:
    """One row per face × model (faces left to right, models in `models` order): photo, face, box (photo px),
    detector score, quality flags, model and prediction_row's columns."""
    rows = []
    for i, face in enumerate(result.faces):
        x1, y1, x2, y2 = result.box_in_photo(i)
        flags = ";".join(f.code for f in result.flags[i]) if result.flags else ""
        for model in models:
            if model in result.predictions:
                rows.append({"photo": result.source, "face": i + 1, "x1": x1, "y1": y1, "x2": x2, "y2": y2,
                             "score": round(float(face.score), 4), "flags": flags, "model": model,
                             **prediction_row(result.predictions[model][i])})
    return rows


def error_row(source: str, message: str) -> dict[str, Any]:
    """The row of a photo that gave no result (not an image, no face, too many pixels): why, in the error column."""
    return {"photo": source, "error": message}


def csv_text(rows: list[dict[str, Any]]) -> str:
    """Rows as CSV text; the columns are every key in order of first appearance (models with other age bins or
    fewer tasks leave their cells empty)."""
    columns = list(dict.fromkeys(key for row in rows for key in row))
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns, restval="", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def write_csv(rows: list[dict[str, Any]], path: str | Path) -> Path:
    """Write rows (result_rows, error_row) to a CSV file; returns its path."""
    path = Path(path)
    path.write_text(csv_text(rows), encoding="utf-8")
    return path
