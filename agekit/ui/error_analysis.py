"""Error-analysis tab: pick test faces a model got wrong (a confusion cell, largest age errors, most
confident mistakes) from its committed predictions.csv, show them, and compare every model's prediction
and Grad-CAM on one of them.

The faces come from the test-face pack shipped in the repository (128 px, agekit.data.test_faces), so the
tab works on a Space with no dataset; when the server sets AGEKIT_UTKFACE to a UTKFace folder, from there at
full size. Either way they reach the browser as pixel arrays: no visitor input names a server path.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr
import numpy as np
import pandas as pd
from PIL import Image

from agekit.artifacts import predictions_path, read_predictions
from agekit.card import ModelCard
from agekit.data.test_faces import PackedFaces, load_test_faces
from agekit.data.utkface import DataRootError, resolve_data_root
from agekit.explain import class_names
from agekit.faces import load_image
from agekit.labels import DEFAULT_AGE_BINS, ETHNICITY_NAMES, GENDER_NAMES
from agekit.predict import Prediction
from agekit.ui.compare import caption_list, explain_crop
from agekit.ui.context import AppContext
from agekit.ui.guard import guarded

MAX_GALLERY = 24  # images decoded per request: keeps the tab responsive on 2 vCPUs
TASKS_UI = ("age bins", "gender", "ethnicity")
MODES = ("confusion cell", "largest age errors", "most confident mistakes")
MODEL_TABLE_COLUMNS = ("model", "age (years)", "age bin", "gender", "ethnicity")
PACKED_FACES = "the {size} px test faces shipped with agekit"  # .format(size=the pack's image side)
FOLDER_FACES = "full-size faces from the server's UTKFace folder"

log = logging.getLogger("agekit.ui")


@dataclass(frozen=True)
class TaskColumns:
    """Where a UI task lives in predictions.csv (see agekit.metrics)."""

    truth: str
    pred: str
    prob_prefix: str
    explain_task: str  # the model head Grad-CAM explains


TASK_COLUMNS: dict[str, TaskColumns] = {
    "age bins": TaskColumns("true_age_bin", "pred_age_bin", "age_bin_p", "age"),
    "gender": TaskColumns("gender", "pred_gender", "gender_p", "gender"),
    "ethnicity": TaskColumns("ethnicity", "pred_ethnicity", "ethnicity_p", "ethnicity"),
}


def models_with_predictions(root: str | Path, names: list[str]) -> list[str]:
    return [n for n in names if predictions_path(root, n).is_file()]


def task_class_names(root: str | Path, model: str, task: str) -> tuple[str, ...]:
    """Class names of a UI task; age bins come from the model's own card (the default scheme without one)."""
    if task not in TASKS_UI:
        raise ValueError(f"unknown task {task!r}; choose one of {list(TASKS_UI)}")
    try:
        age_bins = ModelCard.load(Path(root) / model).age_bins
    except (FileNotFoundError, ValueError):
        age_bins = DEFAULT_AGE_BINS.spec
    return class_names("age" if task == "age bins" else task, age_bins)


def _confidence(frame: pd.DataFrame, columns: TaskColumns) -> pd.Series:
    """Probability the model gave its predicted class, per row."""
    probs = [c for c in frame.columns if c.startswith(columns.prob_prefix) and c[len(columns.prob_prefix):].isdigit()]
    matrix = frame[sorted(probs, key=lambda c: int(c[len(columns.prob_prefix):]))].to_numpy()
    return pd.Series(matrix[np.arange(len(frame)), frame[columns.pred].to_numpy().astype(int)], index=frame.index)


def select_faces(frame: pd.DataFrame, task: str, mode: str, true_class: int | None = None,
                 pred_class: int | None = None, limit: int = MAX_GALLERY) -> pd.DataFrame:
    """Rows of predictions.csv to show, most telling first, with a "confidence" column added.

    confusion cell: true == true_class and predicted == pred_class, most confident first.
    largest age errors: largest |predicted - true age| in years (task ignored).
    most confident mistakes: wrong predictions of `task`, most confident first.
    """
    if mode == "largest age errors":
        if "age_abs_error" not in frame.columns:
            raise ValueError("this model does not predict age: choose another model or mode")
        rows = frame.sort_values("age_abs_error", ascending=False, kind="stable").head(limit)
        return rows.assign(confidence=np.nan)
    if task not in TASK_COLUMNS:
        raise ValueError(f"unknown task {task!r}; choose one of {list(TASKS_UI)}")
    columns = TASK_COLUMNS[task]
    if columns.pred not in frame.columns:
        raise ValueError(f"this model does not predict {task}: choose another model or task")
    frame = frame.assign(confidence=_confidence(frame, columns))
    if mode == "confusion cell":
        if true_class is None or pred_class is None:
            raise ValueError("choose a true and a predicted class for the confusion cell")
        rows = frame[(frame[columns.truth] == true_class) & (frame[columns.pred] == pred_class)]
    elif mode == "most confident mistakes":
        rows = frame[frame[columns.truth] != frame[columns.pred]]
    else:
        raise ValueError(f"unknown selection {mode!r}; choose one of {list(MODES)}")
    return rows.sort_values("confidence", ascending=False, kind="stable").head(limit)


def caption(row: pd.Series, task: str, names: tuple[str, ...]) -> str:
    """Short 'truth → prediction (confidence)' for a gallery thumbnail, e.g. '26 y → 41.2 y (41-65, 62%)'."""
    confidence = row.get("confidence", np.nan)
    if task == "age bins" or np.isnan(confidence):
        text = f"{int(row['age'])} y → {float(row['pred_age']):.1f} y" if "pred_age" in row else f"{int(row['age'])} y"
        if task == "age bins" and "pred_age_bin" in row and not np.isnan(confidence):
            text += f" ({names[int(row['pred_age_bin'])]}, {float(confidence):.0%})"
        return text
    columns = TASK_COLUMNS[task]
    return f"{names[int(row[columns.truth])]} → {names[int(row[columns.pred])]} ({float(confidence):.0%})"


# ---------------------------------------------------------------- where the faces come from

@dataclass(frozen=True)
class FolderFaces:
    """Faces read by file name from a UTKFace folder the server configured (never one a visitor named)."""

    root: Path

    def __contains__(self, file: object) -> bool:
        # a bare file name only: a name with a folder part could reach outside root
        return isinstance(file, str) and Path(file).name == file and (self.root / file).is_file()

    def image(self, file: str) -> np.ndarray:
        """The face as (H, W, 3) uint8 RGB, full size; KeyError when the folder does not hold it."""
        if file not in self:
            raise KeyError(file)
        return np.asarray(load_image(self.root / file))


@dataclass(frozen=True)
class FaceSource:
    """The tab's test faces and how the page names them."""

    faces: FolderFaces | PackedFaces
    description: str  # PACKED_FACES (formatted) or FOLDER_FACES


@functools.lru_cache(maxsize=4)
def face_source(data_root: str = "") -> FaceSource:
    """The UTKFace folder `data_root` (the server's AGEKIT_UTKFACE, full-size faces) when it is usable, else the
    shipped test-face pack. Built once per process (listing a 23k-file folder takes a while).

    Raises PackError (what to do) when the pack is needed and missing or damaged.
    """
    if data_root:
        try:
            return FaceSource(FolderFaces(resolve_data_root(data_root)), FOLDER_FACES)
        except DataRootError as err:  # a server misconfiguration: logged, the shipped faces still work
            log.warning("AGEKIT_UTKFACE is not usable, the Error-analysis tab uses the shipped faces: %s", err)
    packed = load_test_faces()
    return FaceSource(packed, PACKED_FACES.format(size=packed.pack.size))


def face_gallery(source: FaceSource, rows: pd.DataFrame, task: str,
                 names: tuple[str, ...]) -> tuple[list[tuple[np.ndarray, str]], list[str], int]:
    """(gallery items (RGB array, caption), their file names, how many files the source does not hold)."""
    items, files, missing = [], [], 0
    for _, row in rows.iterrows():
        file = str(row["file"])
        if file not in source.faces:
            missing += 1
            continue
        items.append((source.faces.image(file), caption(row, task, names)))
        files.append(file)
    return items, files, missing


# ---------------------------------------------------------------- one face, every model

def truth_text(row: dict[str, Any]) -> str:
    parts = [f"age {int(row['age'])}"]
    if "gender" in row and not pd.isna(row["gender"]):
        parts.append(GENDER_NAMES[int(row["gender"])])
    if "ethnicity" in row and not pd.isna(row["ethnicity"]):
        parts.append(ETHNICITY_NAMES[int(row["ethnicity"])])
    return ", ".join(parts)


def every_model_table(ctx: AppContext, predictions: dict[str, Prediction]) -> pd.DataFrame:
    """Every loaded model's prediction for one face ({model: its Prediction}) as a table, models in page order."""
    records = []
    for model in ctx.model_names:
        pred = predictions[model]
        record: dict[str, Any] = {"model": model, "age (years)": None, "age bin": "", "gender": "", "ethnicity": ""}
        if pred.age is not None:
            record["age (years)"] = round(float(pred.age), 1)
        if pred.age_bin_probs is not None:
            k = int(np.argmax(pred.age_bin_probs))
            record["age bin"] = f"{pred.age_bin_names[k]} ({float(pred.age_bin_probs[k]):.0%})"
        if pred.gender_probs is not None:
            k = int(np.argmax(pred.gender_probs))
            record["gender"] = f"{GENDER_NAMES[k]} ({float(pred.gender_probs[k]):.0%})"
        if pred.ethnicity_probs is not None:
            k = int(np.argmax(pred.ethnicity_probs))
            record["ethnicity"] = f"{ETHNICITY_NAMES[k]} ({float(pred.ethnicity_probs[k]):.0%})"
        records.append(record)
    return pd.DataFrame(records)


# ---------------------------------------------------------------- callbacks (wired in agekit.ui.blocks)

def on_mode(mode: str) -> tuple[Any, Any]:
    """Mode changed → the confusion-cell dropdowns, shown only in the mode that uses them."""
    visible = mode == "confusion cell"
    return gr.update(visible=visible), gr.update(visible=visible)


def on_task(root: str | Path, model: str | None, task: str) -> tuple[Any, Any]:
    """Model or task changed → the true / predicted class dropdowns for the confusion cell."""
    try:
        names = task_class_names(root, model or "", task)
    except ValueError:
        names = ()
    first, second = (names[0], names[1]) if len(names) > 1 else (None, None)
    return gr.update(choices=list(names), value=first), gr.update(choices=list(names), value=second)


def _faces_failed(status: str) -> tuple[Any, ...]:
    return ([], [], status)


@guarded(_faces_failed)
def on_show_faces(ctx: AppContext, model: str | None, task: str, mode: str, true_name: str | None,
                  pred_name: str | None) -> tuple[Any, ...]:
    """Show button → (gallery items, their file names for the click handler, status)."""
    if not model:
        raise ValueError("no model has test-set predictions to analyse (checkpoints/<model>/eval/predictions.csv)")
    root = ctx.checkpoints_root
    source = face_source(ctx.data_root)
    frame = read_predictions(root, model)
    names = task_class_names(root, model, task)
    index = {name: i for i, name in enumerate(names)}
    rows = select_faces(frame, task, mode, index.get(true_name or ""), index.get(pred_name or ""))
    items, files, missing = face_gallery(source, rows, task, names)
    what = f"{true_name} → {pred_name}" if mode == "confusion cell" else mode
    status = f"{len(items)} test faces for {model}, {task}: {what}" + (" (showing the first 24)" if len(rows) == MAX_GALLERY else "")
    if not len(rows):
        status = f"no test faces for {model}, {task}: {what}"
    status += f" · {source.description}"
    if missing:
        status += (f" · {missing} face(s) missing there: was {model} evaluated on another split than the shipped "
                   "manifest's test split?")
    return items, files, status


def _face_failed(status: str) -> tuple[Any, ...]:
    return (None, None, [], status)


@guarded(_face_failed)
def on_select_face(ctx: AppContext, model: str | None, task: str, method: str, files: list[str] | None,
                   evt: gr.SelectData) -> tuple[Any, ...]:
    """Gallery click → (the face, every model's predictions table, Grad-CAM gallery, status)."""
    return explain_test_face(ctx, model, task, method, files, int(evt.index))


def explain_test_face(ctx: AppContext, model: str | None, task: str, method: str, files: list[str] | None,
                      index: int) -> tuple[Any, ...]:
    """(the face, every model's predictions table, Grad-CAM gallery, status) for gallery item `index`."""
    if not files or not 0 <= index < len(files):
        raise ValueError("click one of the faces above first")
    source = face_source(ctx.data_root)
    if files[index] not in source.faces:
        raise ValueError(f"{files[index]} is not among {source.description}; click a face in the gallery")
    crop = Image.fromarray(source.faces.image(files[index]))
    frame = read_predictions(ctx.checkpoints_root, model) if model else None
    truth = ""
    if frame is not None:
        match = frame[frame["file"] == files[index]]
        if len(match):
            truth = f"truth: {truth_text(match.iloc[0].to_dict())} · "
    explain_task = "age" if task not in TASK_COLUMNS else TASK_COLUMNS[task].explain_task
    # no detection: a UTKFace image is a face crop already
    predictions = {model: preds[0] for model, preds in ctx.zoo.predict([crop]).items()}
    gallery = explain_crop(ctx, crop, explain_task, method, predictions)
    return crop, every_model_table(ctx, predictions), gallery, f"{truth}{files[index]}\n\n{caption_list(gallery)}"
