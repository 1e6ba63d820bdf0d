"""The app's callbacks, called directly (no browser): Compare, Test-set and Error-analysis tabs, API, errors.

Tiny random-weight checkpoints, their eval artifacts (written by the evaluation code itself) and a
fake UTKFace folder are built once in a temp folder.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import pickle
import shutil
from dataclasses import replace
from pathlib import Path

import gradio as gr
import numpy as np
import pandas as pd
import pytest
import torch
from gradio.context import LocalContext
from gradio.helpers import special_args
from PIL import Image, ImageColor

from agekit.artifacts import (
    TEST_SECTION,
    VAL_SECTION,
    leaderboard_frame,
    read_metrics,
    write_leaderboard,
    write_predictions,
    write_section,
)
from agekit.checkpoint import load_checkpoint
from agekit.consensus import ConsensusSpec, consensus_card
from agekit.data.dataset import FaceTensors, load_pack
from agekit.data.test_faces import TEST_FACES_PACK, TEST_FACES_SIZE, load_test_faces
from agekit.face_quality import QualityFlag
from agekit.faces import BOX_COLOURS, FaceCrop, FaceDetector
from agekit.labels import UTK7
from agekit.predict import ConsensusModel, Prediction
from agekit.training_log import LOG_FILE, write_log
from agekit.ui import AppContext, api, build_app, compare, error_analysis, guard, serving, summary, testset
from agekit.ui.blocks import PAGE_ANALYSE_EVENT
from agekit.ui.guard import MAX_MESSAGE_CHARS, guarded, user_message
from agekit.ui.model_info import ranking_mae
from evaluation.evaluate import clean_section, predict_probabilities

REPO = Path(__file__).resolve().parents[1]
ASTRONAUT = REPO / "examples" / "nasa_astronaut_eileen_collins.jpg"
N_TEST = 30


def commit_evaluation(root: Path, name: str, faces: FaceTensors) -> None:
    """A model's test section and predictions.csv, written as `python -m evaluation.run` writes them."""
    loaded = load_checkpoint(root / name)
    probabilities = predict_probabilities(loaded, faces.images, 64)
    section, frame = clean_section(loaded, faces, probabilities, 0.0, {"manifest_hash": faces.manifest_hash},
                                  threads=1, latency_runs=1, latency_warmup=0)
    write_section(root / name, TEST_SECTION, section)
    write_predictions(root, name, frame)


def fake_utkface(folder: Path, n: int) -> FaceTensors:
    """n random 48x48 images named like UTKFace files, and the same faces as evaluation input."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    ages, genders, ethnicities = rng.integers(1, 80, n), np.arange(n) % 2, np.arange(n) % 5
    files, images = [], []
    for i in range(n):
        pixels = rng.integers(0, 256, (48, 48, 3), dtype=np.uint8)
        name = f"{ages[i]}_{genders[i]}_{ethnicities[i]}_20170101{i:09d}.jpg.chip.jpg"
        Image.fromarray(pixels).save(folder / name, "JPEG")
        files.append(name)
        images.append(np.asarray(Image.open(folder / name).convert("RGB")))
    return FaceTensors(images=torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous(),
                       age=torch.from_numpy(ages), gender=torch.from_numpy(genders),
                       ethnicity=torch.from_numpy(ethnicities), files=files, manifest_hash="test")


def face_photo(tmp: Path) -> Path:
    """The committed public-domain example photo, or a synthetic face-crop-sized image used whole."""
    if ASTRONAUT.is_file():
        return ASTRONAUT
    path = tmp / "crop.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (200, 200, 3), dtype=np.uint8)).save(path)
    return path


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory, save_tiny) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("app")
    root = tmp / "checkpoints"
    save_tiny(root / "tiny_multi", family="multitask", widths=(8, 16), seed=10)
    save_tiny(root / "tiny_gender", tasks=("gender",), widths=(8, 16), seed=11)
    (root / "broken").mkdir()
    (root / "broken" / "config.json").write_text("{not json")
    faces = fake_utkface(tmp / "UTKFace", N_TEST)
    commit_evaluation(root, "tiny_multi", faces)
    write_section(root / "tiny_multi", VAL_SECTION, {"clean": {"age_mae": 5.0}, "wild": {"age_mae": 6.0},
                                                     "detection_rate": 0.99})
    write_leaderboard(root, leaderboard_frame([read_metrics(root / "tiny_multi")]))
    return {"root": root, "utk": tmp / "UTKFace", "photo": face_photo(tmp), "tmp": tmp}


@pytest.fixture(scope="module")
def detector() -> FaceDetector:
    return FaceDetector()


@pytest.fixture(scope="module")
def ctx(workspace: dict[str, Path], detector: FaceDetector) -> AppContext:
    return AppContext.create(workspace["root"], data_root=str(workspace["utk"]), examples_dir=REPO / "examples",
                             detector=detector)


@pytest.fixture(scope="module")
def analysis(ctx: AppContext, workspace: dict[str, Path]) -> compare.FaceAnalysis:
    return compare.analyse_image(ctx, str(workspace["photo"]))


# ---------------------------------------------------------------- start-up

def test_broken_checkpoint_is_reported_and_the_rest_load(ctx: AppContext) -> None:
    assert "model broken failed to load:" in ctx.banner_markdown()


def test_models_are_listed_best_first_with_the_headline_starred(ctx: AppContext) -> None:
    # tiny_multi has a committed val section (ranked by its val age MAE); tiny_gender has none, so it comes after
    assert ctx.ranking == {"tiny_multi": 5.5} and ctx.model_names == ["tiny_multi", "tiny_gender"]
    assert ctx.headline_model == "tiny_multi"
    assert ctx.model_title("tiny_multi") == "★ tiny_multi" and ctx.model_title("tiny_gender") == "tiny_gender"
    assert "★ tiny_multi is the headline model: the lowest validation age MAE (5.50 years" in ctx.ranking_markdown()
    assert ("Not ranked, no validation evaluation (`python -m evaluation.run --models tiny_gender`): tiny_gender."
            in ctx.ranking_markdown())
    report = {"metrics": {"headline": {"age_mae": 4.5, "gender_accuracy": 0.9}}}
    assert ranking_mae(report) is None  # no val section: not ranked, never by the test-set MAE
    report["val"] = {"clean": {"age_mae": 5.0}, "wild": {"age_mae": 6.0}, "detection_rate": 0.99}
    assert ranking_mae(report) == 5.5 and ranking_mae(None) is None


def test_missing_checkpoint_folder_gives_a_banner_not_a_crash(tmp_path: Path, detector: FaceDetector) -> None:
    empty = AppContext.create(tmp_path / "nothing", examples_dir=None, detector=detector)
    assert empty.model_names == [] and "no usable model checkpoints" in empty.banner_markdown()
    demo = build_app(empty)
    assert isinstance(demo, gr.Blocks)


def test_api_lists_only_its_three_endpoints_every_other_event_is_private(ctx: AppContext) -> None:
    demo = build_app(ctx, preload_example=True, selected_tab="testset")
    endpoints = {"/predict", "/predict_batch", "/explain"}
    assert set(demo.get_api_info()["named_endpoints"]) == endpoints
    assert set(demo.get_api_info(all_endpoints=True)["named_endpoints"]) == endpoints
    public = {fn.api_name for fn in demo.fns.values() if fn.api_visibility != "private"}
    assert public == {"predict", "predict_batch", "explain"}
    # the API has its own queue slots; the page's model events share theirs
    by_name = {fn.api_name: fn for fn in demo.fns.values()}
    assert (by_name["predict"].concurrency_id == by_name["explain"].concurrency_id
            == by_name["predict_batch"].concurrency_id == serving.API_MODELS)
    assert by_name[PAGE_ANALYSE_EVENT].concurrency_id == serving.PAGE_MODELS
    with pytest.raises(ValueError, match="unknown tab"):
        build_app(ctx, selected_tab="nope")


# ---------------------------------------------------------------- Compare tab

def test_on_photo_detects_one_face_and_every_model_predicts(ctx: AppContext, workspace: dict[str, Path]) -> None:
    (annotated, face_update, state, status, results, summary, details, csv_path, json_path, gallery,
     cam_status) = compare.on_photo(ctx, str(workspace["photo"]))
    assert isinstance(annotated["value"], Image.Image) and annotated["visible"] is True
    assert annotated["value"].size == Image.open(workspace["photo"]).size
    assert face_update["choices"] == ["Face 1"] and face_update["value"] == "Face 1"
    assert face_update["visible"] is False  # one face: nothing to choose
    assert status.startswith("Found 1 face") and results["visible"] is True
    assert set(state.predictions) == {"tiny_gender", "tiny_multi"}
    # the session keeps no photo, and its face crops at the largest model input (32 px here)
    assert state.annotated is None and state.faces[0].image.size == (ctx.crop_side, ctx.crop_side) == (32, 32)
    assert gallery == [] and cam_status == ""  # a new photo clears Grad-CAM

    # the summary: one row per model, ★ first and highlighted, the decided bin with its probability
    multi = state.predictions["tiny_multi"][0]
    rows = summary.split("<tr")[2:]
    assert len(rows) == 2 and rows[0].startswith(' class="headline"') and "★ tiny_multi" in rows[0]
    assert f"{multi.age:.0f} years" in rows[0]
    assert f"{multi.age_bin.replace('-', '–')} · {multi.age_bin_confidence:.0%}".replace("%", " %") in rows[0]
    assert f"{multi.gender} {multi.gender_confidence:.0%}".replace("%", " %") in rows[0]
    assert "tiny_gender" in rows[1] and rows[1].count("—") == 3  # no age, bin or ethnicity
    # every probability: one age-bin table (one scheme), gender (both models), ethnicity (one)
    assert details.count("<table>") == 3 and all(f"<th>{n.replace('-', '–')}</th>" in details for n in UTK7.names)

    # the downloads hold every face × model
    table = pd.read_csv(csv_path)
    assert list(table["model"]) == ["tiny_multi", "tiny_gender"] and (table["face"] == 1).all()
    assert table.loc[0, "age_bin"] == multi.age_bin and table.loc[0, "age_bin_p"] == round(multi.age_bin_confidence, 4)
    assert json.loads(Path(json_path).read_text())["faces"][0]["predictions"]["tiny_multi"]["age_bin"] == multi.age_bin


class TwoFaceDetector:
    """Stands in for MTCNN with two faces, the larger (on the right) first, as FaceDetector.detect orders them."""

    def detect(self, image: Image.Image, assume_cropped: bool = False) -> list[FaceCrop]:
        crop = Image.new("RGB", (200, 200), (128, 128, 128))
        right = FaceCrop(crop, (400.0, 100.0, 560.0, 300.0), 0.99, (380, 100, 580, 300), 2)
        left = FaceCrop(crop, (40.0, 120.0, 140.0, 240.0), 0.98, (30, 120, 150, 240), 2)
        return [right, left]


def test_faces_are_numbered_left_to_right(ctx: AppContext, tmp_path: Path) -> None:
    two = replace(ctx, detector=TwoFaceDetector())
    photo = tmp_path / "two.png"
    Image.new("RGB", (640, 400), (255, 255, 255)).save(photo)
    annotated, face_update, state, *_ = compare.on_photo(two, str(photo))
    annotated = annotated["value"]
    assert face_update["choices"] == ["Face 1", "Face 2"] and face_update["visible"] is True
    assert [face.box[0] for face in state.faces] == [40.0, 400.0]
    # box 1's colour outlines the left face, box 2's the right one
    assert annotated.getpixel((41, 180)) == ImageColor.getrgb(BOX_COLOURS[0])
    assert annotated.getpixel((401, 200)) == ImageColor.getrgb(BOX_COLOURS[1])
    faces = api.predict_json(two, str(photo))["faces"]
    assert [(face["face"], face["box"][0]) for face in faces] == [(1, 40.0), (2, 400.0)]


def test_on_image_accepts_gradio_payloads(ctx: AppContext, workspace: dict[str, Path]) -> None:
    by_dict = compare.on_photo(ctx, {"path": str(workspace["photo"]), "url": None})
    assert by_dict[3].startswith("Found 1 face") and by_dict[2].source == workspace["photo"].name
    encoded = base64.b64encode(workspace["photo"].read_bytes()).decode()
    by_data_url = compare.on_photo(ctx, {"path": None, "url": f"data:image/jpeg;base64,{encoded}"})
    assert by_data_url[3].startswith("Found 1 face")


def test_cleared_photo_leaves_only_the_hint(ctx: AppContext) -> None:
    annotated, face_update, state, status, results, summary, details, csv_path, json_path, gallery, cam_status = (
        compare.on_photo(ctx, None))
    assert annotated["visible"] is False and face_update["visible"] is False and results["visible"] is False
    assert state is None and status == compare.HINT
    assert (summary, details, csv_path, json_path, gallery, cam_status) == ("", "", None, None, [], "")
    assert compare.on_face(ctx, None, None) == ("", "", [], "")


def test_non_image_upload_gives_a_clear_message(ctx: AppContext, tmp_path: Path) -> None:
    fake = tmp_path / "notes.jpg"
    fake.write_text("this is not an image")
    annotated, _, state, status, results, *_ = compare.on_photo(ctx, str(fake))
    assert annotated["value"] is None and state is None and results["visible"] is False
    assert "not an image format I can read" in status


def test_photo_without_a_face_gives_a_clear_message_and_clears_gradcam(ctx: AppContext, tmp_path: Path) -> None:
    wall = tmp_path / "wall.png"
    Image.new("RGB", (640, 480), (128, 128, 128)).save(wall)
    outputs = compare.on_photo(ctx, str(wall))
    assert "no face found" in outputs[3] and outputs[-2:] == ([], "")


def test_gradcam_gallery_covers_every_model_and_task(ctx: AppContext, analysis: compare.FaceAnalysis) -> None:
    gallery, status = compare.on_explain(ctx, analysis, "Face 1", "GradCAM", "all")
    captions = [caption for _, caption in gallery]
    assert len(gallery) == 1 + 3 and status.startswith("Grad-CAM (GradCAM) of face 1")
    assert f"4. {gallery[3][1]}" in status  # full captions listed under the thumbnails
    assert captions[-1].startswith("tiny_gender · gender: score of the predicted class")  # best-ranked first
    age_caption = next(c for c in captions if c.startswith("tiny_multi · age"))
    assert "probability of the predicted age bin" in age_caption
    assert any(name in age_caption for name in UTK7.names)
    overlay = gallery[0][0]
    assert overlay.dtype == np.uint8 and overlay.shape == (200, 200, 3)

    only_age, _ = compare.on_explain(ctx, analysis, "Face 1", "EigenCAM", "age")
    assert len(only_age) == 1 and "EigenCAM ignores the class" in only_age[0][1]


def test_gradcam_errors_are_messages(ctx: AppContext, analysis: compare.FaceAnalysis) -> None:
    no_face = "⚠️ no face to explain yet: upload a photo with a face first"
    assert compare.on_explain(ctx, None, None, "GradCAM", "age") == ([], no_face)
    gallery, status = compare.on_explain(ctx, analysis, "Face 1", "NoSuchCAM", "age")
    assert gallery == [] and "unknown CAM method" in status
    assert compare.on_explain(ctx, analysis, "Face 9", "GradCAM", "age") == (
        [], "⚠️ face 9 does not exist: the photo has faces 1..1")


# ---------------------------------------------------------------- API functions

def test_predict_json_lists_faces_boxes_and_every_model(ctx: AppContext, workspace: dict[str, Path]) -> None:
    result = api.predict_json(ctx, str(workspace["photo"]))
    json.dumps(result)  # JSON-ready
    assert result["models"] == ["tiny_multi", "tiny_gender"] and "broken" in result["model_failures"]
    (face,) = result["faces"]
    assert face["face"] == 1 and len(face["box"]) == 4 and 0 < face["score"] <= 1
    multi = face["predictions"]["tiny_multi"]
    assert 0 <= multi["age"] <= 116 and list(multi["age_bins"]) == list(UTK7.names)
    assert sum(multi["ethnicity"].values()) == pytest.approx(1, abs=1e-3)
    assert set(face["predictions"]["tiny_gender"]) == {"gender"}


def test_explain_overlay_and_its_errors(ctx: AppContext, workspace: dict[str, Path]) -> None:
    photo = str(workspace["photo"])
    overlay = api.explain_overlay(ctx, photo, 1, "tiny_multi", "ethnicity", "GradCAM++")
    assert overlay.dtype == np.uint8 and overlay.ndim == 3
    with pytest.raises(ValueError, match="face 2 does not exist"):
        api.explain_overlay(ctx, photo, 2, "tiny_multi", "age", "GradCAM")
    with pytest.raises(ValueError, match="unknown model"):
        api.explain_overlay(ctx, photo, 1, "nope", "age", "GradCAM")
    with pytest.raises(gr.Error, match="model tiny_gender predicts gender, not 'age'"):
        api.explain_endpoint(ctx, photo, 1, "tiny_gender", "age", "GradCAM")
    with pytest.raises(gr.Error, match="face must be a whole face number"):
        api.explain_endpoint(ctx, photo, 1.5, "tiny_multi", "age", "GradCAM")
    with pytest.raises(gr.Error, match="face must be a face number"):
        api.explain_endpoint(ctx, photo, None, "tiny_multi", "age", "GradCAM")


def test_explain_runs_one_detection_and_one_models_cams_only(ctx: AppContext, workspace: dict[str, Path],
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    def no_prediction(*args: object) -> None:
        raise AssertionError("explain must not run every model")

    monkeypatch.setattr(ctx.zoo, "predict", no_prediction)
    side = ctx.crop_side  # the crop the page's Grad-CAM explains, not the 200 px one
    age = api.explain_overlay(ctx, str(workspace["photo"]), 1, "tiny_multi", "age", "GradCAM")
    assert age.shape == (side, side, 3)
    # "all", as the page offers: the model's tasks side by side, in its task order
    every = api.explain_overlay(ctx, str(workspace["photo"]), 1, "tiny_multi", "all", "GradCAM")
    assert every.shape == (side, 3 * side, 3) and np.array_equal(every[:, :side], age)
    with pytest.raises(ValueError, match="unknown task 'height'"):
        api.explain_overlay(ctx, str(workspace["photo"]), 1, "tiny_multi", "height", "GradCAM")


def test_error_messages_quoting_a_long_input_are_capped(ctx: AppContext, workspace: dict[str, Path]) -> None:
    with pytest.raises(gr.Error) as caught:
        api.explain_endpoint(ctx, str(workspace["photo"]), 1, "x" * 100_000, "age", "GradCAM")
    message = caught.value.message
    assert message.startswith("unknown model 'xxx") and len(message) < MAX_MESSAGE_CHARS + 60
    assert message.endswith("more characters not shown)")
    assert user_message(ValueError("short")) == "short"


# ---------------------------------------------------------------- session state and page polish

def test_a_39_megapixel_photo_leaves_a_small_session_state(ctx: AppContext, tmp_path: Path) -> None:
    big = Image.new("RGB", (7200, 5400), (90, 120, 150))
    big.paste(Image.open(ASTRONAUT).convert("RGB").resize((2400, 2400)), (2400, 1500))
    path = tmp_path / "big.jpg"
    big.save(path, quality=70)
    annotated, _, state, status, *_ = compare.on_photo(ctx, str(path))
    annotated = annotated["value"]
    assert status.startswith("Found 1 face")
    assert compare.ANNOTATED_MAX_SIDE // 2 < max(annotated.size) <= compare.ANNOTATED_MAX_SIDE  # a preview
    # what the session keeps: crops at model size and predictions, no image of the photo (117 MB decoded)
    assert state.annotated is None and all(f.image.size == (32, 32) for f in state.faces)
    assert len(pickle.dumps(state)) < 20_000
    # decoded at 1/2 scale, but the API's box is in the photo's own pixels: around the pasted face
    (face,) = api.predict_json(ctx, str(path))["faces"]
    x1, y1, x2, y2 = face["box"]
    assert 2400 <= x1 < x2 <= 4800 and 1500 <= y1 < y2 <= 3900 and x2 - x1 > 300  # reduced px: ~210, x ~1600


def test_disagreement_line_on_age_spread_or_gender_split() -> None:
    def pred(age: float | None, female: float | None) -> Prediction:
        return Prediction("m", age=age, gender_probs=None if female is None else np.array([1 - female, female]))

    assert compare.disagreement_note([pred(30, 0.9), pred(44, 0.8)], 1) == ""  # 14 years apart, all female
    spread = compare.disagreement_note([pred(20, 0.9), pred(38, 0.8), pred(None, 0.7)], 2)
    assert spread == ("⚠️ The models disagree strongly on face 2: their ages range from 20 to 38 years; "
                      "trust none of them here.")
    split = compare.disagreement_note([pred(30, 0.9), pred(31, 0.2), pred(32, 0.8)], 1)
    assert "gender is split (2 say female, 1 say male)" in split and "ages" not in split
    assert compare.disagreement_note([pred(30, None)], 1) == ""  # one model cannot disagree


def test_on_face_says_when_the_models_disagree(ctx: AppContext, analysis: compare.FaceAnalysis) -> None:
    ages = {"tiny_multi": 10.0, "tiny_gender": None}
    swapped = {name: [replace(preds[0], age=ages[name])] for name, preds in analysis.predictions.items()}
    agreeing = {name: [replace(preds[0], gender_probs=np.array([0.9, 0.1]))] for name, preds in swapped.items()}
    assert "disagree" not in compare.on_face(ctx, replace(analysis, predictions=agreeing), "Face 1")[0]
    disagreeing = {"tiny_multi": [replace(swapped["tiny_multi"][0], gender_probs=np.array([0.9, 0.1]))],
                   "tiny_gender": [replace(swapped["tiny_gender"][0], gender_probs=np.array([0.2, 0.8]))]}
    summary = compare.on_face(ctx, replace(analysis, predictions=disagreeing), "Face 1")[0]
    assert "⚠️ The models disagree strongly on face 1: gender is split" in summary


def test_annotated_preview_shrinks_by_a_whole_factor_and_moves_the_boxes() -> None:
    photo = Image.new("RGB", (1920, 1280), (200, 200, 200))
    face = FaceCrop(Image.new("RGB", (8, 8)), (400.0, 200.0, 800.0, 600.0), 0.99, (0, 0, 8, 8), 1)
    preview = compare.annotated_preview(photo, [face])
    assert preview.size == (960, 640)  # 1920 / 1024 → reduced by 2
    pixels = np.asarray(preview)
    assert (pixels[150:450, 150:250] != 200).any(axis=-1).any()  # the box's left edge near x = 200
    assert (pixels[100, :150] == 200).all() and (pixels[460:, :] == 200).all()  # nothing drawn outside it
    assert compare.annotated_preview(Image.new("RGB", (1200, 800)), []).size == (1024, 683)  # factor 1: resized
    assert compare.annotated_preview(Image.new("RGB", (2500, 1000)), []).size == (1024, 410)  # 1250 px, resized
    assert compare.annotated_preview(Image.new("RGB", (640, 480)), []).size == (640, 480)


def test_gradcam_explains_the_bin_the_summary_shows_with_its_probability(ctx: AppContext,
                                                                       analysis: compare.FaceAnalysis) -> None:
    # a decision that the crop's own probabilities would not make: Grad-CAM must still explain it
    decided = replace(analysis.predictions["tiny_multi"][0],
                      age_bin_probs=np.array([0.05, 0.05, 0.05, 0.05, 0.05, 0.05, 0.70]))
    chosen = replace(analysis, predictions={**analysis.predictions, "tiny_multi": [decided]})
    summary = compare.on_face(ctx, chosen, "Face 1")[0]
    assert "66–116 · 70 %" in summary
    gallery, _ = compare.on_explain(ctx, chosen, "Face 1", "GradCAM", "age")
    assert gallery[0][1] == "tiny_multi · age: probability of the predicted age bin 66-116 (70%)"


def test_a_consensus_is_listed_after_the_headline_and_has_no_gradcam(ctx: AppContext,
                                                                    analysis: compare.FaceAnalysis) -> None:
    multi = ctx.zoo.models["tiny_multi"]
    spec = ConsensusSpec.shared(("tiny_multi",), (1.0,), multi.card.tasks)
    member = ConsensusModel(consensus_card("consensus", spec, [multi.card]), multi.folder, spec)
    with_consensus = replace(ctx, zoo=replace(ctx.zoo, models={**ctx.zoo.models, "consensus": member}))
    assert with_consensus.model_names == ["tiny_multi", "consensus", "tiny_gender"]
    state = compare.analyse_image(with_consensus, str(ASTRONAUT) if ASTRONAUT.is_file() else None)
    rows = compare.on_face(with_consensus, state, "Face 1")[0].split("<tr")[2:]
    assert ["★ tiny_multi" in rows[0], "consensus" in rows[1], "tiny_gender" in rows[2]] == [True] * 3
    gallery, status = compare.on_explain(with_consensus, state, "Face 1", "GradCAM", "all")
    assert not any(caption.startswith("consensus") for _, caption in gallery) and len(gallery) == 4
    assert "consensus: no network of its own" in status
    with pytest.raises(ValueError, match="consensus has no network of its own"):
        api.explain_overlay(with_consensus, str(ASTRONAUT), 1, "consensus", "age", "GradCAM")


def test_quality_flags_sit_above_the_face_summary(ctx: AppContext, analysis: compare.FaceAnalysis) -> None:
    flagged = replace(analysis, flags=[[QualityFlag("tiny", "the face is only 30 px wide (under 40 px): use a larger "
                                                            "or closer photo")]])
    summary = compare.on_face(ctx, flagged, "Face 1")[0]
    assert summary.index("⚠️ The face is only 30 px wide") < summary.index("<table>")


# ---------------------------------------------------------------- Test-set tab

def test_testset_panels_come_from_eval_artifacts(ctx: AppContext) -> None:
    out = testset.on_testset(ctx.checkpoints_root, "tiny_multi", "tiny_gender", "gender", "row-normalised",
                             "ethnicity", "age_mae")
    headline, confusion, per_class_fig, per_class, reliability = out[:5]
    assert headline.startswith(f"#### tiny_multi — {N_TEST} test faces") and "age MAE (years)" in headline
    z = np.asarray(confusion.data[0].z)
    assert z.shape == (2, 2) and np.allclose(z.sum(axis=1), 1.0)
    assert list(per_class["class"]) == ["male", "female"] and per_class["support"].sum() == N_TEST
    assert len(per_class_fig.data) == 3 and "ECE" in reliability.layout.title.text
    second = out[5:10]
    assert "tiny_gender has no evaluation" in second[0] and second[1] is None
    assert out[10]["visible"] is True
    mae_figure, fairness_figure, fairness_table, status = out[11:]
    assert mae_figure.data[1].name == "tiny_multi"
    assert list(fairness_figure.data[0].x) == ["White", "Black", "Asian", "Indian", "Others"]
    assert list(fairness_table["model"]) == ["tiny_multi"] and "largest gap" in fairness_table.columns
    assert "python -m evaluation.run --models tiny_gender" in status


def test_testset_counts_view_and_age_bins(ctx: AppContext) -> None:
    out = testset.on_testset(ctx.checkpoints_root, "tiny_multi", testset.NO_SECOND_MODEL, "age bins", "counts",
                             "gender", "gender_accuracy")
    z = np.asarray(out[1].data[0].z)
    assert z.shape == (7, 7) and z.sum() == N_TEST
    assert out[10]["visible"] is False and out[-1] == ""


def test_testset_two_models_get_paired_differences(ctx: AppContext, tmp_path: Path) -> None:
    source = Path(ctx.checkpoints_root) / "tiny_multi" / "eval"
    for name in ("a", "b"):
        shutil.copytree(source, tmp_path / name / "eval")
    frame = pd.read_csv(tmp_path / "b" / "eval" / "predictions.csv")
    frame["age_abs_error"] *= 2  # b: twice a's age errors on every face
    frame.sample(frac=1.0, random_state=0).to_csv(tmp_path / "b" / "eval" / "predictions.csv", index=False)
    difference = testset.on_difference(tmp_path, "a", "b")
    mae = frame["age_abs_error"].mean() / 2
    assert difference.startswith("**a − b** on the same test faces, with 95% paired-bootstrap intervals")
    assert f"age MAE (years) {-mae:+.2f} [" in difference and "] ✔ · " in difference
    assert "gender accuracy +0.0 pt [+0.0, +0.0] · " in difference  # same predictions, same faces
    assert testset.on_difference(tmp_path, "a", testset.NO_SECOND_MODEL) == ""
    assert testset.on_difference(tmp_path, "a", "a") == ""
    (tmp_path / "b" / "eval" / "predictions.csv").unlink()
    assert testset.on_difference(tmp_path, "a", "b").startswith("⚠️ model b has no test-set predictions")


def test_leaderboard_and_missing_leaderboard(ctx: AppContext, tmp_path: Path) -> None:
    figure, table, status = testset.on_leaderboard(ctx.checkpoints_root, "mae")
    assert status == "" and list(table["model"]) == ["tiny_multi"] and list(figure.data[0].y) == ["tiny_multi"]
    assert figure.data[0].name == "multitask" and figure.layout.legend.title.text == "family"  # the colour legend
    # readable names, no provenance columns, counts with separators
    assert {"age MAE (years)", "parameters"} <= set(table.columns) and "split_hash" not in table.columns
    params = int(ctx.zoo.models["tiny_multi"].card.params)
    assert table.loc[0, "parameters"] == f"{params:,}"
    assert testset.leaderboard_metrics(testset.read_leaderboard(ctx.checkpoints_root))[0] == "mae"
    assert testset.default_model(ctx.checkpoints_root, ctx.model_names) == "tiny_multi"  # the evaluated one
    assert testset.on_leaderboard(tmp_path, "mae")[2].startswith("⚠️ no leaderboard yet")


def test_training_curves_from_each_models_log(tmp_path: Path, save_tiny) -> None:
    save_tiny(tmp_path / "multi", family="multitask", widths=(8, 16), seed=10)
    save_tiny(tmp_path / "gender", tasks=("gender",), widths=(8, 16), seed=11)
    write_log(tmp_path / "multi" / LOG_FILE, [{"epoch": 1, "val_age_mae": 9.5}, {"epoch": 2, "val_age_mae": 8.0}])
    figure, status = testset.on_training_curves(tmp_path, ["multi", "gender"], "val_age_mae")
    line = figure.data[0]
    assert line.name == "multi" and list(line.y) == [9.5, 8.0] and line.line.dash == "dash"  # multitask
    assert status == "⚠️ gender has no training log (" + str(tmp_path / "gender" / LOG_FILE) + " is missing)"
    figure, status = testset.on_training_curves(tmp_path, ["multi"], "val_gender_acc")
    assert figure is None and status == "⚠️ no training log has val_gender_acc"
    figure, status = testset.on_training_curves(tmp_path, ["multi"], "bogus")
    assert figure is None and "unknown training metric 'bogus'" in status


# ---------------------------------------------------------------- Error-analysis tab

def test_select_faces_orders_the_most_telling_first() -> None:
    frame = pd.DataFrame({
        "file": ["a", "b", "c", "d"], "age": [20, 30, 40, 50], "pred_age": [21.0, 45.0, 39.0, 20.0],
        "age_abs_error": [1.0, 15.0, 1.0, 30.0], "gender": [0, 0, 1, 1], "pred_gender": [0, 1, 0, 1],
        "gender_p0": [0.9, 0.4, 0.8, 0.3], "gender_p1": [0.1, 0.6, 0.2, 0.7],
    })
    assert list(error_analysis.select_faces(frame, "gender", "largest age errors")["file"]) == ["d", "b", "a", "c"]
    mistakes = error_analysis.select_faces(frame, "gender", "most confident mistakes")
    assert list(mistakes["file"]) == ["c", "b"] and list(mistakes["confidence"]) == [0.8, 0.6]
    assert error_analysis.caption(mistakes.iloc[0], "gender", ("male", "female")) == "female → male (80%)"
    largest = error_analysis.select_faces(frame, "gender", "largest age errors").iloc[0]
    assert error_analysis.caption(largest, "gender", ("male", "female")) == "50 y → 20.0 y"
    cell = error_analysis.select_faces(frame, "gender", "confusion cell", true_class=1, pred_class=1)
    assert list(cell["file"]) == ["d"]
    with pytest.raises(ValueError, match="does not predict ethnicity"):
        error_analysis.select_faces(frame, "ethnicity", "most confident mistakes")


@pytest.fixture(scope="module")
def packed_ctx(tmp_path_factory: pytest.TempPathFactory, save_tiny, detector: FaceDetector) -> AppContext:
    """The app as on a Space: no AGEKIT_UTKFACE, a model evaluated on real test faces from the shipped pack."""
    root = tmp_path_factory.mktemp("space") / "checkpoints"
    save_tiny(root / "tiny_multi", family="multitask", widths=(8, 16), seed=10)
    faces = load_pack(TEST_FACES_PACK, "test").subset(slice(0, N_TEST))
    commit_evaluation(root, "tiny_multi", faces)
    return AppContext.create(root, data_root=None, examples_dir=None, detector=detector)


def test_error_tab_without_a_dataset_shows_the_shipped_test_faces(packed_ctx: AppContext) -> None:
    assert packed_ctx.data_root == ""
    items, files, status = error_analysis.on_show_faces(packed_ctx, "tiny_multi", "age bins", "largest age errors",
                                                        None, None)
    assert len(items) == len(files) == error_analysis.MAX_GALLERY
    shipped = load_test_faces()
    pixels, caption = items[0]
    assert isinstance(pixels, np.ndarray) and np.array_equal(pixels, shipped.image(files[0]))  # arrays, no paths
    assert pixels.shape == (TEST_FACES_SIZE, TEST_FACES_SIZE, 3) and " y → " in caption
    assert status.startswith("24 test faces for tiny_multi") and "the 128 px test faces shipped with agekit" in status
    assert "missing" not in status

    face, table, cams, status = error_analysis.explain_test_face(packed_ctx, "tiny_multi", "gender", "GradCAM",
                                                                 files, 2)
    assert isinstance(face, Image.Image) and np.array_equal(np.asarray(face), shipped.image(files[2]))
    assert list(table["model"]) == ["tiny_multi"] and len(cams) == 1
    assert status.startswith("truth: age ") and files[2] in status


def test_error_tab_falls_back_to_the_shipped_faces_when_the_server_folder_is_unusable(
        packed_ctx: AppContext, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    broken = replace(packed_ctx, data_root=str(tmp_path / "missing"))
    with caplog.at_level(logging.WARNING, logger="agekit.ui"):
        status = error_analysis.on_show_faces(broken, "tiny_multi", "gender", "most confident mistakes", None, None)[2]
    assert "test faces shipped with agekit" in status and "does not exist" in caplog.text
    with pytest.raises(ValueError, match="is not among"):
        error_analysis.explain_test_face(packed_ctx, "tiny_multi", "gender", "GradCAM", ["../../etc/passwd"], 0)


def test_error_gallery_reads_faces_from_the_dataset_folder(ctx: AppContext) -> None:
    items, files, status = error_analysis.on_show_faces(ctx, "tiny_multi", "age bins", "largest age errors", None, None)
    assert len(items) == len(files) == min(N_TEST, error_analysis.MAX_GALLERY)
    pixels, caption = items[0]
    assert np.array_equal(pixels, np.asarray(Image.open(Path(ctx.data_root) / files[0]).convert("RGB")))
    assert caption.endswith(" y") and " y → " in caption
    assert status.startswith(f"{len(items)} test faces for tiny_multi") and error_analysis.FOLDER_FACES in status

    items, _, _ = error_analysis.on_show_faces(ctx, "tiny_multi", "gender", "most confident mistakes", None, None)
    assert all(c.split(" → ")[0] in ("male", "female") and c.endswith("%)") for _, c in items)
    status = error_analysis.on_show_faces(ctx, "tiny_gender", "gender", "most confident mistakes", None, None)[2]
    assert "no test-set predictions" in status


def test_error_tab_has_no_folder_box(ctx: AppContext) -> None:
    demo = build_app(ctx, selected_tab="errors")
    boxes = [block for block in demo.blocks.values() if isinstance(block, gr.Textbox)]
    assert all("folder" not in (box.label or "").lower() and box.value != ctx.data_root for box in boxes)
    assert all(ctx.data_root not in str(getattr(block, "value", "")) for block in demo.blocks.values())


def test_clicked_test_face_shows_every_model_and_gradcam(ctx: AppContext) -> None:
    _, files, _ = error_analysis.on_show_faces(ctx, "tiny_multi", "gender", "most confident mistakes", None, None)
    face, table, cams, status = error_analysis.explain_test_face(ctx, "tiny_multi", "gender", "GradCAM", files, 0)
    assert isinstance(face, Image.Image)
    assert list(table["model"]) == ctx.model_names and set(ctx.model_names) == {"tiny_gender", "tiny_multi"}
    assert [c.split(" · ")[0] for _, c in cams] == ctx.model_names
    assert status.startswith("truth: age ") and files[0] in status and f"2. {cams[1][1]}" in status
    update_true, update_pred = error_analysis.on_task(ctx.checkpoints_root, "tiny_multi", "ethnicity")
    assert update_true["choices"][0] == "White" and update_pred["value"] == "Black"


def test_gallery_click_handler_receives_the_clicked_index(ctx: AppContext) -> None:
    _, files, _ = error_analysis.on_show_faces(ctx, "tiny_multi", "gender", "most confident mistakes", None, None)
    demo = build_app(ctx)
    handler = next(f.fn for f in demo.fns.values() if getattr(f.fn, "__name__", "") == "select_face")
    inputs = ["tiny_multi", "gender", "GradCAM", files]
    click = gr.SelectData(None, {"index": 1, "value": None})
    args, _, event_index, _ = special_args(handler, list(inputs), event_data=click)
    assert event_index == len(inputs) and args[-1].index == 1  # Gradio injects the click after the four inputs
    assert files[1] in handler(*args)[3]


# ---------------------------------------------------------------- robustness

def test_unexpected_errors_are_logged_and_shown_short(caplog: pytest.LogCaptureFixture) -> None:
    @guarded(lambda status: ("failed", status))
    def explode() -> tuple[str, str]:
        raise RuntimeError("internal detail")

    with caplog.at_level(logging.ERROR, logger="agekit.ui"):
        assert explode() == ("failed", "⚠️ Unexpected error (RuntimeError); the details are in the server log.")
    assert "internal detail" in caplog.text
    assert user_message(ValueError("bad input: do X")) == "bad input: do X"


def test_image_source_rejects_empty_input() -> None:
    with pytest.raises(ValueError, match="no image"):
        compare.image_source(None)
    assert compare.image_source({"path": "/x.png"}) == "/x.png"
    png = io.BytesIO()
    Image.new("RGB", (4, 4)).save(png, "PNG")
    url = "data:image/png;base64," + base64.b64encode(png.getvalue()).decode()
    assert compare.image_source({"url": url}) == png.getvalue()


def test_error_toasts_go_before_the_next_result(monkeypatch: pytest.MonkeyPatch) -> None:
    shown = []
    monkeypatch.setattr(gr, "Warning", lambda message, duration: shown.append((message, duration)))
    token = LocalContext.event_id.set("event")  # as inside a page event
    try:
        guard.notify("no face found")
    finally:
        LocalContext.event_id.reset(token)
    assert shown == [("no face found", guard.TOAST_S)] and guard.TOAST_S <= 5


def test_summary_age_shows_the_interval_when_the_model_has_one() -> None:
    assert summary.age_text(Prediction("m", age=31.4, age_lo=25.6, age_hi=38.2)) == "31 years, 26–38"
    assert summary.age_text(Prediction("m", age=31.4)) == "31 years"


def test_testset_headline_and_leaderboard_show_the_all_age_faces_results() -> None:
    from agekit.ui.testset import aaf_markdown, leaderboard_display

    report = {"aaf_test": {"metrics": {"n": 1286, "headline": {"age_mae": 5.656, "gender_accuracy": 0.928},
                                       "interval": {"n": 1286, "coverage": 0.759, "mean_width": 16.4}}}}
    assert aaf_markdown(report) == ("**Real photos** (All-Age-Faces test, 1,286 faces as the app crops them; no "
                                    "ethnicity label): age MAE 5.66 · gender 92.8% · 80 % interval covers 75.9%")
    assert aaf_markdown({}) == ""
    board = leaderboard_display(pd.DataFrame({"name": ["m"], "aaf_mae": [5.656], "aaf_gender_accuracy": [0.928]}))
    assert board.to_dict("list") == {"model": ["m"], "real photos (AAF): age MAE (years)": ["5.66"],
                                     "real photos (AAF): gender accuracy": ["92.8%"]}
