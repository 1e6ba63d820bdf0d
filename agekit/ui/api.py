"""The app's named API endpoints ("predict", "explain"): plain JSON / image results for gradio_client."""

from __future__ import annotations

from typing import Any

import gradio as gr
import numpy as np

from agekit.labels import ETHNICITY_NAMES, GENDER_NAMES
from agekit.predict import Prediction
from agekit.ui.compare import analyse_image, explain_crop
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

    Returns {"faces": [{"face": 1, "box": [x1, y1, x2, y2] (px), "score": float,
    "predictions": {model: {"age": years, "age_bins": {...}, "gender": {...}, "ethnicity": {...}}}}],
    "detected": n found, "models": [names], "model_failures": {name: reason}}.
    """
    analysis = analyse_image(ctx, image)
    faces = []
    for i, face in enumerate(analysis.faces):
        faces.append({
            "face": i + 1,
            "box": [round(float(v), 1) for v in face.box],
            "score": round(float(face.score), 4),
            "predictions": {m: prediction_json(preds[i]) for m, preds in analysis.predictions.items()},
        })
    return {"faces": faces, "detected": analysis.detected, "models": ctx.model_names,
            "model_failures": dict(ctx.zoo.failures)}


def explain_overlay(ctx: AppContext, image: Any, face: int, model: str, task: str, method: str) -> np.ndarray:
    """Grad-CAM overlay (H,W,3 uint8) of face number `face` (1-based, as in "predict") for one model and task."""
    if model not in ctx.zoo.models:
        raise ValueError(f"unknown model {model!r}; loaded models: {ctx.model_names}")
    tasks = ctx.zoo.models[model].card.tasks
    if task not in tasks:
        raise ValueError(f"model {model} predicts {', '.join(tasks)}, not {task!r}: the explain endpoint explains "
                         "one task of one model")
    analysis = analyse_image(ctx, image)
    index = int(face) - 1
    if not 0 <= index < len(analysis.faces):
        raise ValueError(f"face {face} does not exist: the image has faces 1..{len(analysis.faces)}")
    return explain_crop(ctx, analysis.faces[index].image, task, method, models=[model])[0][0]


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
        return explain_overlay(ctx, image, int(face), model, task, method)
    except Exception as exc:
        raise as_api_error("explain", exc) from exc
