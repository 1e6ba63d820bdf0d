"""Compare tab: detect faces in one photo, show every model's age/gender/ethnicity side by side, Grad-CAM on demand."""

from __future__ import annotations

import base64
import binascii
import functools
import json
from collections import Counter
from dataclasses import dataclass, field, replace
from typing import Any

import gradio as gr
import numpy as np
import plotly.graph_objects as go
import torch
from gradio.components.plot import PlotData
from PIL import Image

from agekit.data.transforms import resize_uint8
from agekit.explain import CAM_METHODS, CamResult, explain
from agekit.faces import FaceCrop, decode_factor, draw_boxes, load_image, to_rgb
from agekit.labels import ETHNICITY_NAMES, GENDER_NAMES, TASKS
from agekit.predict import Prediction
from agekit.ui.context import AppContext
from agekit.ui.guard import guarded

MAX_FACES_SHOWN = 8  # more boxes than this make the side-by-side panels unreadable
EXPLAIN_TASK_CHOICES = (*TASKS, "all")
# The annotated photo goes to the page (shown 360 px high) at most this long a side, as JPEG: a 1920x1280 PNG
# took longer to encode than detection plus every model (bench.e2e).
ANNOTATED_MAX_SIDE = 1024
# Models "disagree strongly" on a face when their expected ages span more than this (years) or their most
# likely genders differ: the page says so in one line.
AGE_SPREAD_YEARS = 15.0
PLOT_TOOLBAR_PX = 32  # top margin of the charts: plotly's toolbar (top right, ~25 px) sits there, not on the bars


@dataclass
class FaceAnalysis:
    """Faces found in one uploaded image and every model's predictions for them (kept in gr.State)."""

    annotated: Image.Image | None  # the photo with numbered boxes, at most ANNOTATED_MAX_SIDE px (None in gr.State)
    faces: list[FaceCrop]  # at most MAX_FACES_SHOWN (the largest), left to right (the numbers drawn on the boxes)
    predictions: dict[str, list[Prediction]]  # model name -> one Prediction per face
    detected: int = 0  # faces the detector found before capping
    notes: list[str] = field(default_factory=list)
    pixel_scale: float = 1.0  # photo px per px of the boxes: big JPEGs are decoded reduced (faces.decode_factor)

    def face_labels(self) -> list[str]:
        return [f"Face {i + 1}" for i in range(len(self.faces))]

    def for_state(self, crop_side: int) -> FaceAnalysis:
        """What a session keeps between events: no photo, each face crop at `crop_side` px (the largest model
        input; see AppContext.crop_side), so a session holds well under 1 MB whatever the upload's size."""
        faces = [replace(face, image=shrink_crop(face.image, crop_side)) for face in self.faces]
        return replace(self, annotated=None, faces=faces)

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

def detect_faces(ctx: AppContext, image: Image.Image) -> list[FaceCrop]:
    """The faces the app numbers: the MAX_FACES_SHOWN largest, numbered left to right by box centre (the page,
    "predict" and "explain" alike).

    An image in which no face is detected but that looks like a face crop already (square-ish, small,
    e.g. a UTKFace image) is used whole.
    """
    largest = ctx.require_detector().detect(image, assume_cropped=True)[:MAX_FACES_SHOWN]
    return sorted(largest, key=lambda face: (face.box[0] + face.box[2]) / 2)


def analyse_image(ctx: AppContext, value: Any, annotate: bool = True) -> FaceAnalysis:
    """Load the image, detect faces (`detect_faces`) and predict with every model; `annotate`: also draw the
    numbered boxes on a preview of the photo (the page shows it, the JSON API does not need it)."""
    image = load_image(image_source(value))
    faces = detect_faces(ctx, image)
    notes = []
    if len(faces) == 1 and faces[0].box == (0.0, 0.0, float(image.width), float(image.height)):
        notes.append("No face detected; the image looks like a face crop, so all of it is used as one face.")
    predictions = ctx.zoo.predict([f.image for f in faces]) if ctx.zoo.models else {}
    return FaceAnalysis(annotated=annotated_preview(image, faces) if annotate else None, faces=faces,
                        predictions=predictions, detected=max(f.faces_found for f in faces), notes=notes,
                        pixel_scale=decode_factor(image))


def annotated_preview(image: Image.Image, faces: list[FaceCrop], max_side: int = ANNOTATED_MAX_SIDE) -> Image.Image:
    """The photo shrunk to at most `max_side` px a side with the faces' numbered boxes drawn on it. First by the
    nearest whole factor with PIL's box filter (`reduce`, a few times faster than a resize) when that is 2 or more
    (a 1920 px photo becomes 960 px), then resized if it is still larger."""
    width = image.width
    factor = round(max(image.size) / max_side)
    if factor >= 2:
        image = image.reduce(factor)
    if max(image.size) > max_side:
        scale = max_side / max(image.size)
        image = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))),
                             Image.Resampling.BILINEAR, reducing_gap=2.0)
    scale = image.width / width
    return draw_boxes(image, [tuple(v * scale for v in face.box) for face in faces])


def shrink_crop(crop: Image.Image, side: int) -> Image.Image:
    """A face crop resized to side x side px the way the models resize their input (no-op when it fits)."""
    if crop.size == (side, side):
        return crop
    pixels = torch.from_numpy(np.array(to_rgb(crop))).permute(2, 0, 1).unsqueeze(0)
    return Image.fromarray(resize_uint8(pixels, side)[0].permute(1, 2, 0).numpy())


# ---------------------------------------------------------------- per-model panels

# Zooming and panning seven bars helps nobody, and with all its buttons plotly's toolbar wraps to two rows in a
# ~150 px wide column, covering the top of the chart (seen in the app's screenshot): keep the download button.
MODEBAR_REMOVE = ["zoom", "pan", "select", "lasso", "zoomIn", "zoomOut", "autoScale", "resetScale",
                  "hoverClosestCartesian", "hoverCompareCartesian", "toggleSpikelines"]
AGE_BIN_LAYOUT = {"height": 220 + PLOT_TOOLBAR_PX, "margin": {"l": 10, "r": 10, "t": PLOT_TOOLBAR_PX, "b": 10},
                  "yaxis": {"range": [0, 1], "tickformat": ".0%", "title": {"text": "probability"}},
                  "xaxis": {"type": "category", "title": {"text": "age bin (years)"}},
                  "modebar": {"remove": MODEBAR_REMOVE}}


def age_bin_bars(pred: Prediction) -> dict[str, Any]:
    """The bar trace of the age-bin chart: bins in age order, the most likely one highlighted."""
    probs = np.asarray(pred.age_bin_probs, dtype=float)
    top = int(probs.argmax())
    return {"type": "bar", "x": list(pred.age_bin_names), "y": probs.tolist(),
            "marker": {"color": ["#f97316" if i == top else "#94a3b8" for i in range(len(probs))]},
            "hovertemplate": "age %{x}: %{y:.1%}<extra></extra>"}


@functools.cache
def _age_bin_layout_json() -> str:
    """AGE_BIN_LAYOUT with plotly's template filled in, as JSON: most of a chart's bytes, and of its build time."""
    return json.dumps(json.loads(go.Figure(layout=AGE_BIN_LAYOUT).to_json())["layout"])


def age_bin_plot(pred: Prediction | None) -> PlotData | None:
    """Bar chart of the age-bin probabilities (age_bin_bars in AGE_BIN_LAYOUT, plotly's default template) as
    gr.Plot's payload: the JSON of that plotly figure, built without plotly's validation (the layout is serialised
    once): six panels' go.Figure charts took 20 ms of each photo, most of it validating the same layout."""
    if pred is None or pred.age_bin_probs is None:
        return None
    return PlotData(type="plotly", plot=f'{{"data":[{json.dumps(age_bin_bars(pred))}],"layout":{_age_bin_layout_json()}}}')


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
        values.append(age_bin_plot(pred))
    if "gender" in tasks:
        values.append(class_probabilities(GENDER_NAMES, None if pred is None else pred.gender_probs))
    if "ethnicity" in tasks:
        values.append(class_probabilities(ETHNICITY_NAMES, None if pred is None else pred.ethnicity_probs))
    return values


def disagreement_note(predictions: list[Prediction], face_number: int) -> str:
    """One line when the models disagree strongly on a face (expected ages spread over more than AGE_SPREAD_YEARS,
    or different most likely genders), else ''."""
    ages = [p.age for p in predictions if p.age is not None]
    genders = Counter(p.gender for p in predictions if p.gender is not None)
    problems = []
    if len(ages) > 1 and max(ages) - min(ages) > AGE_SPREAD_YEARS:
        problems.append(f"their ages range from {min(ages):.0f} to {max(ages):.0f} years")
    if len(genders) > 1:
        problems.append("gender is split (" + ", ".join(f"{n} say {g}" for g, n in genders.most_common()) + ")")
    if not problems:
        return ""
    return f"⚠️ The models disagree strongly on face {face_number}: {' and '.join(problems)}; trust none of them here."


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
            analysis.for_state(ctx.crop_side), analysis.summary())


def on_photo(ctx: AppContext, value: Any) -> tuple[Any, ...]:
    """Photo changed → on_image's 4 outputs, then on_face's for the first face: one event, one round trip."""
    annotated, face_update, state, status = on_image(ctx, value)
    return (annotated, face_update, state, status, *on_face(ctx, state, face_update.get("value")))


def face_number(face: str | None) -> int | None:
    """The number in a face selector value ("Face 2" → 2); None when there is none."""
    words = str(face or "").split()
    return int(words[-1]) if words and words[-1].isdigit() and len(words[-1]) <= 3 else None


def on_face(ctx: AppContext, analysis: FaceAnalysis | None, face: str | None) -> list[Any]:
    """Face selector (or analysis) changed → [disagreement line, every model panel's values]."""
    index = None
    if analysis is not None and analysis.faces:
        number = face_number(face)
        index = number - 1 if number is not None and 1 <= number <= len(analysis.faces) else 0
    note = ""
    if analysis is not None and index is not None:
        per_model = [preds[index] for preds in analysis.predictions.values() if 0 <= index < len(preds)]
        note = disagreement_note(per_model, index + 1)
    return [note, *panels_for_face(ctx, analysis, index)]


def _explain_failed(status: str) -> tuple[Any, ...]:
    return ([], status)


@guarded(_explain_failed)
def on_explain(ctx: AppContext, analysis: FaceAnalysis | None, face: str | None, method: str,
               task: str) -> tuple[Any, ...]:
    """Grad-CAM button → (gallery of (overlay, caption), status)."""
    if analysis is None or not analysis.faces:
        raise ValueError("no face to explain yet: upload a photo with a face first")
    number = face_number(face) or 1
    if not 1 <= number <= len(analysis.faces):
        raise ValueError(f"face {number} does not exist: the photo has faces 1..{len(analysis.faces)}")
    index = number - 1
    gallery = explain_crop(ctx, analysis.faces[index].image, task, method)
    return (gallery, f"Grad-CAM ({method}) of face {index + 1}:\n\n{caption_list(gallery)}")


def caption_list(gallery: list[tuple[np.ndarray, str]]) -> str:
    """The overlays' captions as a numbered Markdown list (thumbnails cut long captions short)."""
    return "\n".join(f"{i}. {caption}" for i, (_, caption) in enumerate(gallery, start=1))
