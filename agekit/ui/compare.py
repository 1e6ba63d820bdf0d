"""Compare tab: detect faces in one photo; per face, a summary table of every model (agekit.ui.summary), every
probability on demand, the results as CSV / JSON, and Grad-CAM on demand."""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import gradio as gr
import numpy as np
import torch
from PIL import Image

from agekit.data.transforms import resize_uint8
from agekit.explain import CAM_METHODS, CamResult, explain
from agekit.faces import FaceCrop, draw_boxes, load_image, to_rgb
from agekit.labels import TASKS
from agekit.photo_results import PhotoResult, analyse_photo, csv_text, numbered_faces, result_json, result_rows
from agekit.predict import Prediction
from agekit.ui import serving
from agekit.ui.context import AppContext
from agekit.ui.guard import guarded
from agekit.ui.summary import probabilities_html, summary_html

EXPLAIN_TASK_CHOICES = (*TASKS, "all")
# The annotated photo goes to the page (shown 360 px high) at most this long a side, as JPEG: a 1920x1280 PNG
# took longer to encode than detection plus every model (bench.e2e).
ANNOTATED_MAX_SIDE = 1024
# Models "disagree strongly" on a face when their expected ages span more than this (years) or their most
# likely genders differ: the page says so in one line.
AGE_SPREAD_YEARS = 15.0
HINT = "Upload a photo, take one with the webcam, or click an example: every model's estimate of each face appears below."


@dataclass
class FaceAnalysis(PhotoResult):
    """A PhotoResult plus the annotated photo the page shows (kept in gr.State without it)."""

    annotated: Image.Image | None = None  # the photo with numbered boxes, at most ANNOTATED_MAX_SIDE px

    def face_labels(self) -> list[str]:
        return [f"Face {i + 1}" for i in range(len(self.faces))]

    def for_state(self, crop_side: int) -> FaceAnalysis:
        """What a session keeps between events: no photo, each face crop at `crop_side` px (the largest model
        input; see AppContext.crop_side), so a session holds well under 1 MB whatever the upload's size."""
        faces = [replace(face, image=shrink_crop(face.image, crop_side)) for face in self.faces]
        return replace(self, annotated=None, faces=faces)

    def summary(self) -> str:
        if self.detected > len(self.faces):
            return f"Found {self.detected} faces: showing {len(self.faces)} of {self.detected} (the largest)."
        return f"Found {len(self.faces)} face{'s' if len(self.faces) != 1 else ''}."


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
    """The faces the app numbers (photo_results.numbered_faces): the page, "predict" and "explain" alike."""
    return numbered_faces(ctx.require_detector(), image)


def analyse_image(ctx: AppContext, value: Any, annotate: bool = True) -> FaceAnalysis:
    """Load the image, detect, flag and predict (photo_results.analyse_photo); `annotate`: also draw the numbered
    boxes on a preview of the photo (the page shows it, the JSON API does not need it)."""
    image = load_image(image_source(value))
    result = analyse_photo(image, ctx.require_detector(), ctx.zoo, source=source_name(value))
    return FaceAnalysis(**vars(result), annotated=annotated_preview(image, result.faces) if annotate else None)


def source_name(value: Any) -> str:
    """The uploaded file's name for tables and files ("photo" when the browser sent the pixels themselves)."""
    path = value.get("path") if isinstance(value, dict) else value
    return Path(str(path)).name if isinstance(path, str) and path else "photo"


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


# ---------------------------------------------------------------- one face's results

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


def face_index(analysis: FaceAnalysis | None, face: str | None) -> int | None:
    """The 0-based index of the selected face ("Face 2" → 1; the first face when the selection is unusable);
    None without faces."""
    if analysis is None or not analysis.faces:
        return None
    number = face_number(face)
    return number - 1 if number is not None and 1 <= number <= len(analysis.faces) else 0


def face_number(face: str | None) -> int | None:
    """The number in a face selector value ("Face 2" → 2); None when there is none."""
    words = str(face or "").split()
    return int(words[-1]) if words and words[-1].isdigit() and len(words[-1]) <= 3 else None


def face_predictions(ctx: AppContext, analysis: FaceAnalysis, index: int) -> dict[str, Prediction]:
    """{model: its prediction for face `index`} in ctx.model_names order (★ first, then the consensus)."""
    return {name: analysis.predictions[name][index] for name in ctx.model_names
            if name in analysis.predictions and 0 <= index < len(analysis.predictions[name])}


def face_views(ctx: AppContext, analysis: FaceAnalysis | None, face: str | None) -> tuple[str, str]:
    """(summary table, every probability) of the selected face as HTML; ("", "") without a face."""
    index = face_index(analysis, face)
    if index is None:
        return "", ""
    preds = face_predictions(ctx, analysis, index)
    rows = [(ctx.model_title(name), ctx.zoo.models[name].card.family, preds.get(name)) for name in ctx.model_names]
    headline = ctx.model_title(ctx.headline_model) if ctx.headline_model else None
    flags = analysis.flags[index] if analysis.flags else []
    note = disagreement_note(list(preds.values()), index + 1)
    return (summary_html(index + 1, rows, headline, flags, note, analysis.source),
            probabilities_html([(title, pred) for title, _, pred in rows]))


def result_files(ctx: AppContext, analysis: FaceAnalysis) -> tuple[str, str]:
    """The photo's results as a CSV and a JSON file (every face × model; photo_results' formats): their paths."""
    stem = re.sub(r"[^\w.-]", "_", analysis.source.rsplit(".", 1)[0])[:60] or "photo"
    table = serving.write_download(f"agekit_{stem}.csv", csv_text(result_rows(analysis, ctx.model_names)))
    data = serving.write_download(f"agekit_{stem}.json", json.dumps(result_json(analysis, ctx.model_names), indent=1))
    return str(table), str(data)


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


def decided_class(pred: Prediction, task: str) -> tuple[int, float]:
    """(class index, probability) a prediction decided for `task`: the most likely age bin of the model's bin-aware
    decision, gender or ethnicity; what the summary shows, so Grad-CAM explains that very class."""
    probs = {"age": pred.age_bin_probs, "gender": pred.gender_probs, "ethnicity": pred.ethnicity_probs}[task]
    k = int(np.argmax(probs))
    return k, float(probs[k])


def without_network(ctx: AppContext) -> list[str]:
    """Loaded models that have no network of their own (a consensus), so no Grad-CAM."""
    return [name for name in ctx.model_names if ctx.zoo.models[name].model is None]


def explain_crop(ctx: AppContext, crop: Image.Image, task: str, method: str, decisions: dict[str, Prediction],
                 models: list[str] | None = None) -> list[tuple[np.ndarray, str]]:
    """Grad-CAM overlays of one face crop for every model × task ("all" = every task the model has), each of the
    class that model's prediction in `decisions` chose (the caption gives that prediction's probability). Models
    without a network of their own (a consensus) have no Grad-CAM and are left out."""
    if method not in CAM_METHODS:
        raise ValueError(f"unknown CAM method {method!r}; choose one of {sorted(CAM_METHODS)}")
    if task not in EXPLAIN_TASK_CHOICES:
        raise ValueError(f"unknown task {task!r}; choose one of {list(EXPLAIN_TASK_CHOICES)}")
    gallery: list[tuple[np.ndarray, str]] = []
    for name in models or ctx.model_names:
        loaded = ctx.zoo.models[name]
        if loaded.model is None:
            continue
        for t in (loaded.card.tasks if task == "all" else (task,)):
            if t not in loaded.card.tasks:
                continue
            index, probability = decided_class(decisions[name], t)
            result = explain(loaded, crop, t, method=method, target_class=index)
            gallery.append((result.overlay, cam_caption(name, t, replace(result, probability=probability))))
    if not gallery:
        raise ValueError(f"no loaded model with a network predicts {task}; choose another task")
    return gallery


def caption_list(gallery: list[tuple[np.ndarray, str]]) -> str:
    """The overlays' captions as a numbered Markdown list (thumbnails cut long captions short)."""
    return "\n".join(f"{i}. {caption}" for i, (_, caption) in enumerate(gallery, start=1))


# ---------------------------------------------------------------- callbacks (wired in agekit.ui.blocks)

def cleared_outputs(status: str) -> tuple[Any, ...]:
    """on_photo's outputs with no result: only the status (the hint, or what went wrong) stays."""
    hidden = gr.update(value=None, visible=False)
    return (hidden, gr.update(choices=[], value=None, visible=False), None, status, gr.update(visible=False),
            "", "", None, None, [], "")


@guarded(cleared_outputs)
def on_photo(ctx: AppContext, value: Any) -> tuple[Any, ...]:
    """Photo changed → (annotated photo, face selector, FaceAnalysis state, status, results visibility, summary
    table, every probability, CSV file, JSON file, Grad-CAM gallery, Grad-CAM status): one event, one round trip.
    Grad-CAM of the previous photo is cleared."""
    if value is None:
        return cleared_outputs(HINT)
    analysis = analyse_image(ctx, value)
    labels = analysis.face_labels()
    summary, details = face_views(ctx, analysis, labels[0])
    table, data = result_files(ctx, analysis)
    return (gr.update(value=analysis.annotated, visible=True),
            gr.update(choices=labels, value=labels[0], visible=len(labels) > 1),
            analysis.for_state(ctx.crop_side), analysis.summary(), gr.update(visible=True), summary, details,
            table, data, [], "")


def on_face(ctx: AppContext, analysis: FaceAnalysis | None, face: str | None) -> tuple[Any, ...]:
    """Face selected → (summary table, every probability, Grad-CAM gallery, Grad-CAM status); the previous face's
    Grad-CAM is cleared."""
    return (*face_views(ctx, analysis, face), [], "")


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
    gallery = explain_crop(ctx, analysis.faces[index].image, task, method, face_predictions(ctx, analysis, index))
    status = f"Grad-CAM ({method}) of face {index + 1}:\n\n{caption_list(gallery)}"
    if skipped := without_network(ctx):
        status += f"\n\n{', '.join(skipped)}: no network of its own (it averages other models), so no Grad-CAM."
    return (gallery, status)
