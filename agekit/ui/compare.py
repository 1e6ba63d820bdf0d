"""Compare tab: detect faces in one photo, show every model's age/gender/ethnicity side by side, Grad-CAM on demand."""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass, field
from typing import Any

import gradio as gr
import numpy as np
import plotly.graph_objects as go
from PIL import Image

from agekit.explain import CAM_METHODS, CamResult, explain
from agekit.faces import FaceCrop, draw_boxes, load_image
from agekit.labels import ETHNICITY_NAMES, GENDER_NAMES, TASKS
from agekit.predict import Prediction
from agekit.ui.context import AppContext
from agekit.ui.guard import guarded

MAX_FACES_SHOWN = 8  # more boxes than this make the side-by-side panels unreadable
EXPLAIN_TASK_CHOICES = (*TASKS, "all")


@dataclass
class FaceAnalysis:
    """Faces found in one uploaded image and every model's predictions for them (kept in gr.State)."""

    annotated: Image.Image  # the photo with numbered boxes
    faces: list[FaceCrop]  # at most MAX_FACES_SHOWN (the largest), left to right (the numbers drawn on the boxes)
    predictions: dict[str, list[Prediction]]  # model name -> one Prediction per face
    detected: int = 0  # faces the detector found before capping
    notes: list[str] = field(default_factory=list)

    def face_labels(self) -> list[str]:
        return [f"Face {i + 1}" for i in range(len(self.faces))]

    def summary(self) -> str:
        if self.detected > len(self.faces):
            text = f"Found {self.detected} faces: showing {len(self.faces)} of {self.detected} (the largest)."
        else:
            text = f"Found {len(self.faces)} face{'s' if len(self.faces) != 1 else ''}."
        return " ".join([text, *self.notes])


# ---------------------------------------------------------------- image input

def image_source(value: Any) -> str | bytes:
    """The uploaded image as a path or bytes, from a path string or a raw Gradio ImageData payload.

    Events that take an image run with `preprocess=False` so that `agekit.faces.load_image` (EXIF,
    GIF, 16-bit, bomb guard) sees the original file and a broken file gets its clear message.
    """
    if value is None or value == "":
        raise ValueError("no image: upload a photo, take one with the webcam, or click an example")
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        if value.get("path"):
            return str(value["path"])
        url = value.get("url") or ""
        if url.startswith("data:") and "," in url:
            try:
                return base64.b64decode(url.split(",", 1)[1], validate=False)
            except binascii.Error:
                raise ValueError("the image data sent by the browser is not valid base64; upload the file again") from None
    raise ValueError(f"unsupported image input {type(value).__name__}; upload a JPEG or PNG file")


# ---------------------------------------------------------------- detection + prediction

def analyse_image(ctx: AppContext, value: Any) -> FaceAnalysis:
    """Load the image, detect faces (the MAX_FACES_SHOWN largest, numbered left to right by box centre: the page
    and the API alike) and predict with every model.

    An image in which no face is detected but that looks like a face crop already (square-ish, small,
    e.g. a UTKFace image) is used whole, with a note saying so.
    """
    image = load_image(image_source(value))
    largest = ctx.require_detector().detect(image, assume_cropped=True)[:MAX_FACES_SHOWN]
    faces = sorted(largest, key=lambda face: (face.box[0] + face.box[2]) / 2)
    notes = []
    if len(faces) == 1 and faces[0].box == (0.0, 0.0, float(image.width), float(image.height)):
        notes.append("No face detected; the image looks like a face crop, so all of it is used as one face.")
    predictions = ctx.zoo.predict([f.image for f in faces]) if ctx.zoo.models else {}
    return FaceAnalysis(annotated=draw_boxes(image, faces), faces=faces, predictions=predictions,
                        detected=max(f.faces_found for f in faces), notes=notes)


# ---------------------------------------------------------------- per-model panels

def age_bin_figure(pred: Prediction | None) -> go.Figure | None:
    """Bar chart of the age-bin probabilities, bins in age order, the most likely one highlighted."""
    if pred is None or pred.age_bin_probs is None:
        return None
    probs = np.asarray(pred.age_bin_probs, dtype=float)
    names = list(pred.age_bin_names)
    colours = ["#f97316" if i == int(probs.argmax()) else "#94a3b8" for i in range(len(probs))]
    fig = go.Figure(go.Bar(x=names, y=probs, marker_color=colours,
                           hovertemplate="age %{x}: %{y:.1%}<extra></extra>"))
    fig.update_layout(height=220, margin={"l": 10, "r": 10, "t": 10, "b": 10},
                      yaxis={"range": [0, 1], "tickformat": ".0%", "title": "probability"},
                      xaxis={"type": "category", "title": "age bin (years)"})
    return fig


def class_probabilities(names: tuple[str, ...], probs: np.ndarray | None) -> dict[str, float] | None:
    """{class name: probability} for a gr.Label, or None when the model lacks the task."""
    if probs is None:
        return None
    return {name: float(p) for name, p in zip(names, np.asarray(probs, dtype=float))}


def prediction_summary(title: str, pred: Prediction | None) -> str:
    """Markdown headline of one model's panel: its title and, for age models, the expected age."""
    lines = [f"#### {title}"]
    if pred is not None and pred.age is not None:
        line = f"**age ≈ {pred.age:.1f} years** (expected value)"
        if pred.age_bin_probs is not None:
            k = int(np.argmax(pred.age_bin_probs))
            line += f" · most likely bin {pred.age_bin_names[k]} ({float(pred.age_bin_probs[k]):.0%})"
        lines.append(line)
    return "\n\n".join(lines)


def model_panel_values(title: str, tasks: tuple[str, ...], pred: Prediction | None) -> list[Any]:
    """Values of one model's panel: summary markdown, then age-bin bar / gender / ethnicity for the tasks it has."""
    values: list[Any] = [prediction_summary(title, pred)]
    if "age" in tasks:
        values.append(age_bin_figure(pred))
    if "gender" in tasks:
        values.append(class_probabilities(GENDER_NAMES, None if pred is None else pred.gender_probs))
    if "ethnicity" in tasks:
        values.append(class_probabilities(ETHNICITY_NAMES, None if pred is None else pred.ethnicity_probs))
    return values


def panels_for_face(ctx: AppContext, analysis: FaceAnalysis | None, face_index: int | None) -> list[Any]:
    """Panel values for every model (in ctx.model_names order) for face `face_index` (0-based)."""
    values: list[Any] = []
    for model in ctx.model_names:
        pred = None
        if analysis is not None and face_index is not None and model in analysis.predictions:
            per_face = analysis.predictions[model]
            pred = per_face[face_index] if 0 <= face_index < len(per_face) else None
        values += model_panel_values(ctx.model_title(model), ctx.zoo.models[model].card.tasks, pred)
    return values


# ---------------------------------------------------------------- Grad-CAM

def cam_caption(model: str, task: str, result: CamResult) -> str:
    """What a Grad-CAM overlay explains, e.g. "m · age: probability of the predicted age bin 15-30 (62%)"."""
    if task == "age":
        what = f"probability of the predicted age bin {result.explained} ({result.probability:.0%})"
    else:
        what = f"score of the predicted class {result.explained} ({result.probability:.0%})"
    if result.method == "EigenCAM":
        what += "; EigenCAM ignores the class and shows the main activation pattern"
    return f"{model} · {task}: {what}"


def explain_crop(ctx: AppContext, crop: Image.Image, task: str, method: str,
                 models: list[str] | None = None) -> list[tuple[np.ndarray, str]]:
    """Grad-CAM overlays of one face crop for every model × task ("all" = every task the model has)."""
    if method not in CAM_METHODS:
        raise ValueError(f"unknown CAM method {method!r}; choose one of {sorted(CAM_METHODS)}")
    if task not in EXPLAIN_TASK_CHOICES:
        raise ValueError(f"unknown task {task!r}; choose one of {list(EXPLAIN_TASK_CHOICES)}")
    gallery: list[tuple[np.ndarray, str]] = []
    for name in models or ctx.model_names:
        loaded = ctx.zoo.models[name]
        for t in (loaded.card.tasks if task == "all" else (task,)):
            if t not in loaded.card.tasks:
                continue
            result = explain(loaded, crop, t, method=method)
            gallery.append((result.overlay, cam_caption(name, t, result)))
    if not gallery:
        raise ValueError(f"no loaded model predicts {task}; choose another task")
    return gallery


# ---------------------------------------------------------------- callbacks (wired in agekit.ui.blocks)

def _analysis_failed(status: str) -> tuple[Any, ...]:
    return (None, gr.update(choices=[], value=None, visible=False), None, status)


@guarded(_analysis_failed)
def on_image(ctx: AppContext, value: Any) -> tuple[Any, ...]:
    """Image changed → (annotated image, face selector update, FaceAnalysis state, status)."""
    if value is None:
        return (None, gr.update(choices=[], value=None, visible=False), None, "")
    analysis = analyse_image(ctx, value)
    labels = analysis.face_labels()
    return (analysis.annotated, gr.update(choices=labels, value=labels[0], visible=len(labels) > 1),
            analysis, analysis.summary())


def on_face(ctx: AppContext, analysis: FaceAnalysis | None, face: str | None) -> list[Any]:
    """Face selector (or analysis) changed → every model panel's values."""
    try:
        index = int(str(face).split()[-1]) - 1 if face else None
    except ValueError:
        index = None
    if analysis is not None and analysis.faces and index is None:
        index = 0
    return panels_for_face(ctx, analysis, index)


def _explain_failed(status: str) -> tuple[Any, ...]:
    return ([], status)


@guarded(_explain_failed)
def on_explain(ctx: AppContext, analysis: FaceAnalysis | None, face: str | None, method: str,
               task: str) -> tuple[Any, ...]:
    """Grad-CAM button → (gallery of (overlay, caption), status)."""
    if analysis is None or not analysis.faces:
        raise ValueError("no face to explain yet: upload a photo with a face first")
    index = int(str(face).split()[-1]) - 1 if face else 0
    gallery = explain_crop(ctx, analysis.faces[index].image, task, method)
    return (gallery, f"Grad-CAM ({method}) of face {index + 1}:\n\n{caption_list(gallery)}")


def caption_list(gallery: list[tuple[np.ndarray, str]]) -> str:
    """The overlays' captions as a numbered Markdown list (thumbnails cut long captions short)."""
    return "\n".join(f"{i}. {caption}" for i, (_, caption) in enumerate(gallery, start=1))
