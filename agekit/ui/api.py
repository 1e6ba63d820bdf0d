"""The app's named API endpoints ("predict", "predict_batch", "explain"): JSON, CSV and image results for
gradio_client."""

from __future__ import annotations

from typing import Any

import gradio as gr
import numpy as np

from agekit.batch import analyse_batch, batch_inputs
from agekit.explain import CAM_METHODS
from agekit.faces import load_image
from agekit.photo_results import csv_text, result_json
from agekit.predict import crops_to_batch, predict_batch
from agekit.ui import serving
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


def predict_json(ctx: AppContext, image: Any) -> dict[str, Any]:
    """Detect faces and predict with every model: photo_results.result_json (faces left to right, box in px of the
    uploaded photo, quality flags, every model's prediction with its decided age bin) plus "model_failures"."""
    analysis = analyse_image(ctx, image, annotate=False)
    return {**result_json(analysis, ctx.model_names), "model_failures": dict(ctx.zoo.failures)}


def predict_batch_csv(ctx: AppContext, files: list[Any] | None) -> str:
    """Several photos (image files or zips, at most batch.MAX_BATCH_PHOTOS): the path of one CSV of every face ×
    model (photo_results' columns; a photo that gave no result has a row with its error)."""
    paths = [image_source(f) for f in files or []]
    if any(isinstance(p, bytes) for p in paths):
        raise ValueError("send the photos as files (gradio_client.handle_file), not as pixel data")
    rows = analyse_batch(batch_inputs(paths), ctx.require_detector(), ctx.zoo, ctx.model_names)
    return str(serving.write_download("agekit_batch.csv", csv_text(rows)))


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
    if ctx.zoo.models[model].model is None:
        raise ValueError(f"{model} has no network of its own (it averages other models), so no Grad-CAM; "
                         "explain one of its members")
    faces = detect_faces(ctx, load_image(image_source(image)))
    if not 1 <= face <= len(faces):
        raise ValueError(f"face {face} does not exist: the image has faces 1..{len(faces)}")
    # the class explained is the one "predict" decides, from the same full-size crop
    decision = predict_batch(ctx.zoo.models[model], crops_to_batch([faces[face - 1].image]), model,
                             ctx.zoo.channels_last, ctx.zoo.flip_average)[0]
    crop = shrink_crop(faces[face - 1].image, ctx.crop_side)
    overlays = [overlay for overlay, _ in explain_crop(ctx, crop, task, method, {model: decision}, models=[model])]
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


def predict_batch_endpoint(ctx: AppContext, files: list[Any] | None) -> str:
    try:
        return predict_batch_csv(ctx, files)
    except Exception as exc:
        raise as_api_error("predict_batch", exc) from exc


def explain_endpoint(ctx: AppContext, image: Any, face: float, model: str, task: str, method: str) -> np.ndarray:
    try:
        return explain_overlay(ctx, image, face_argument(face), model, task, method)
    except Exception as exc:
        raise as_api_error("explain", exc) from exc
