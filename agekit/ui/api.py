"""The app's named API endpoints ("predict", "explain"): plain JSON / image results for gradio_client."""

from __future__ import annotations

from typing import Any

import gradio as gr
import numpy as np

from agekit.explain import CAM_METHODS
from agekit.faces import load_image
from agekit.labels import ETHNICITY_NAMES, GENDER_NAMES
from agekit.predict import Prediction
from agekit.ui.compare import (
    EXPLAIN_TASK_CHOICES,
    analyse_image,
    detect_faces,
    explain_crop,
    image_source,
    shrink_crop,
)
from agekit.ui.context import AppContext
from agekit.ui.guard import EXPECTED_ERRORS, log, user_message


def prediction_json(pred: Prediction) -> dict[str, Any]:
    """One model's prediction for one face as JSON-ready values (years, probabilities)."""
    out: dict[str, Any] = {}
    if pred.age is not None:
        out["age"] = round(float(pred.age), 2)
    if pred.age_bin_probs is not None:
        out["age_bins"] = {n: round(float(p), 4) for n, p in zip(pred.age_bin_names, pred.age_bin_probs)}
    if pred.gender_probs is not None:
        out["gender"] = {n: round(float(p), 4) for n, p in zip(GENDER_NAMES, pred.gender_probs)}
    if pred.ethnicity_probs is not None:
        out["ethnicity"] = {n: round(float(p), 4) for n, p in zip(ETHNICITY_NAMES, pred.ethnicity_probs)}
    return out


def predict_json(ctx: AppContext, image: Any) -> dict[str, Any]:
    """Detect faces and predict with every model.

    Returns {"faces": [{"face": 1, "box": [x1, y1, x2, y2] (px of the uploaded photo), "score": float,
    "predictions": {model: {"age": years, "age_bins": {...}, "gender": {...}, "ethnicity": {...}}}}],
    "detected": n found, "models": [names], "model_failures": {name: reason}}.
    """
    analysis = analyse_image(ctx, image, annotate=False)
    faces = []
    for i, face in enumerate(analysis.faces):
        faces.append({
            "face": i + 1,
            "box": [round(float(v) * analysis.pixel_scale, 1) for v in face.box],
            "score": round(float(face.score), 4),
            "predictions": {m: prediction_json(preds[i]) for m, preds in analysis.predictions.items()},
        })
    return {"faces": faces, "detected": analysis.detected, "models": ctx.model_names,
            "model_failures": dict(ctx.zoo.failures)}


def explain_overlay(ctx: AppContext, image: Any, face: int, model: str, task: str, method: str) -> np.ndarray:
    """Grad-CAM overlay (H,W,3 uint8) of face number `face` (1-based, as in "predict") for one model and task.

    task: one of the page's choices (EXPLAIN_TASK_CHOICES); "all" gives every task the model has, overlays side
    by side in the model's task order. Costs one detection and this model's CAMs, nothing else; the face crop is
    the one the page explains (at AppContext.crop_side px).
    """
    if model not in ctx.zoo.models:
        raise ValueError(f"unknown model {model!r}; loaded models: {ctx.model_names}")
    tasks = ctx.zoo.models[model].card.tasks
    if task not in EXPLAIN_TASK_CHOICES:
        raise ValueError(f"unknown task {task!r}; choose one of {list(EXPLAIN_TASK_CHOICES)}")
    if task != "all" and task not in tasks:
        raise ValueError(f"model {model} predicts {', '.join(tasks)}, not {task!r}: choose one of its tasks or all")
    if method not in CAM_METHODS:
        raise ValueError(f"unknown CAM method {method!r}; choose one of {list(CAM_METHODS)}")
    faces = detect_faces(ctx, load_image(image_source(image)))
    if not 1 <= face <= len(faces):
        raise ValueError(f"face {face} does not exist: the image has faces 1..{len(faces)}")
    crop = shrink_crop(faces[face - 1].image, ctx.crop_side)
    overlays = [overlay for overlay, _ in explain_crop(ctx, crop, task, method, models=[model])]
    return np.concatenate(overlays, axis=1)


def face_argument(face: Any) -> int:
    """The "face" argument (gr.Number sends a float) as a face number; ValueError for anything else."""
    try:
        number = float(face)
    except (TypeError, ValueError):
        raise ValueError(f"face must be a face number 1, 2, ... as listed by predict, got {face!r}") from None
    if not number.is_integer():
        raise ValueError(f"face must be a whole face number 1, 2, ... as listed by predict, got {face!r}")
    return int(number)


def as_api_error(fn_name: str, exc: Exception) -> gr.Error:
    """An API failure as gr.Error, whose message gradio_client raises on the caller's side."""
    if not isinstance(exc, EXPECTED_ERRORS):
        log.exception("API endpoint %s failed", fn_name)
    return gr.Error(user_message(exc), print_exception=False)


def predict_endpoint(ctx: AppContext, image: Any) -> dict[str, Any]:
    try:
        return predict_json(ctx, image)
    except Exception as exc:
        raise as_api_error("predict", exc) from exc


def explain_endpoint(ctx: AppContext, image: Any, face: float, model: str, task: str, method: str) -> np.ndarray:
    try:
        return explain_overlay(ctx, image, face_argument(face), model, task, method)
    except Exception as exc:
        raise as_api_error("explain", exc) from exc
