"""The Gradio Blocks of the agekit app: layout and event wiring only; the logic lives in the tab modules."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import gradio as gr

from agekit import batch, plots
from agekit.data.test_faces import TEST_FACES_SIZE
from agekit.explain import CAM_METHODS
from agekit.ui import api, batch_view, compare, error_analysis, serving, testset
from agekit.ui.context import AppContext
from agekit.ui.model_info import committed_metrics, model_card_markdown
from agekit.ui.summary import SUMMARY_CSS

TITLE = "agekit — age, gender and ethnicity from faces"
INTRO = (
    "# agekit\n"
    "Compare age, gender and ethnicity models trained on UTKFace (some also on All-Age-Faces' real photos), "
    "inspect their test-set behaviour and see where they look (Grad-CAM). Predictions are statistical guesses "
    "from appearance, trained on datasets with skewed demographics — read the Test-set tab before trusting any "
    "of them."
)
DEFAULT_CAM_METHOD = "GradCAM"
# Galleries grow to show every image: with height="auto" Gradio still caps the grid and clips its second row.
PAGE_CSS = SUMMARY_CSS + """
.uncut-gallery, .uncut-gallery .grid-wrap { height: auto !important; max-height: none !important; overflow: visible !important; }
#leaderboard-table th, #leaderboard-table th * { word-break: normal !important; overflow-wrap: normal !important; }
"""


TAB_IDS = ("compare", "testset", "errors", "batch")
PAGE_ANALYSE_EVENT = "analyse_photo"  # the page's photo → annotated photo + model panels event (private; bench.e2e)


def build_app(ctx: AppContext, preload_example: bool = False, selected_tab: str = "compare") -> gr.Blocks:
    """Build the three-tab app plus the API-only "predict" and "explain" endpoints.

    preload_example: analyse the first example photo when the page opens (for screenshots and demos).
    selected_tab: the tab open on page load, one of TAB_IDS.
    """
    if selected_tab not in TAB_IDS:
        raise ValueError(f"unknown tab {selected_tab!r}; choose one of {TAB_IDS}")
    with gr.Blocks(title=TITLE, delete_cache=serving.DELETE_CACHE) as demo:
        gr.Markdown(INTRO)
        gr.Markdown(ctx.banner_markdown(), visible=bool(ctx.startup_problems), elem_id="banner")
        with gr.Tabs(selected=selected_tab):
            with gr.Tab("Compare models", id="compare"):
                _compare_tab(ctx, ctx.examples[0] if preload_example and ctx.examples else None)
            with gr.Tab("Test set", id="testset"):
                _testset_tab(ctx, demo)
            with gr.Tab("Error analysis", id="errors"):
                _error_analysis_tab(ctx)
            with gr.Tab("Batch", id="batch"):
                _batch_tab(ctx)
        _api_endpoints(ctx)
    return demo


def _compare_tab(ctx: AppContext, preload: Path | None) -> None:
    # A preloaded example is analysed here, at build time, so the page opens with its results.
    (annotated_value, face_update, analysis_value, status_value, results_update, summary_value, details_value,
     csv_value, json_value, _, _) = compare.on_photo(ctx, str(preload) if preload else None)
    shown = results_update.get("visible", False)
    with gr.Row():
        with gr.Column(scale=1):
            photo = gr.Image(str(preload) if preload else None, label="Photo", sources=["upload", "webcam"],
                             type="filepath", image_mode=None, height=300)
            if ctx.examples:
                gr.Examples([[str(p)] for p in ctx.examples], inputs=[photo], cache_examples=False,
                            label="Example photos", api_visibility="private", elem_id="example-photos")
        with gr.Column(scale=1):
            status = gr.Markdown(status_value, elem_id="photo-status")
            annotated = gr.Image(annotated_value.get("value"), label="Detected faces", interactive=False, height=300,
                                 format="jpeg", visible=shown, elem_id="annotated-photo")  # a shrunk JPEG: a full-size PNG took longer than the models
            face = gr.Radio(label="Face", choices=face_update["choices"], value=face_update.get("value"),
                            visible=face_update["visible"], elem_id="face-choice")
    # face crops and predictions only (FaceAnalysis.for_state); dropped after an hour unused
    analysis = gr.State(analysis_value, time_to_live=serving.STATE_TTL_S)

    with gr.Column(visible=shown) as results:
        summary = gr.HTML(summary_value, elem_id="face-summary")
        with gr.Row():
            csv_file = gr.DownloadButton("Download results (CSV)", csv_value, size="sm", elem_id="download-csv")
            json_file = gr.DownloadButton("Download results (JSON)", json_value, size="sm", elem_id="download-json")
        with gr.Accordion("Every probability: age bins, gender, ethnicity", open=False):
            details = gr.HTML(details_value, elem_id="face-details")
        with gr.Accordion("Grad-CAM: where does each model look?", open=False):
            with gr.Row():
                method = gr.Dropdown(list(CAM_METHODS), value=_default_method(), label="method")
                task = gr.Radio(list(compare.EXPLAIN_TASK_CHOICES), value="age", label="explain")
                explain_button = gr.Button("Explain the selected face", variant="primary", elem_id="explain")
            cam_gallery = gr.Gallery(label="Grad-CAM overlays (model · task: what was explained)", columns=4,
                                     height="auto", format="png", object_fit="contain", elem_id="cam-gallery",
                                     elem_classes=["uncut-gallery"])
            cam_status = gr.Markdown(elem_id="cam-status")
        with gr.Accordion("About the models", open=False):
            gr.Markdown("\n\n".join([ctx.ranking_markdown(), *(
                model_card_markdown(ctx.zoo.models[name].card, committed_metrics(ctx.zoo.models[name].folder))
                for name in ctx.model_names)]))

    face_outputs = [summary, details, cam_gallery, cam_status]
    # private: not in the API docs, refused by gradio_client (bench.gradio_wire still reaches them, as any client
    # can through the queue: every event is cheap in retained memory whatever it is sent)
    photo.change(partial(compare.on_photo, ctx), [photo],
                 [annotated, face, analysis, status, results, summary, details, csv_file, json_file, cam_gallery,
                  cam_status], preprocess=False, api_name=PAGE_ANALYSE_EVENT, api_visibility="private",
                 concurrency_id=serving.PAGE_MODELS)
    face.input(partial(compare.on_face, ctx), [analysis, face], face_outputs, api_visibility="private")
    explain_button.click(partial(compare.on_explain, ctx), [analysis, face, method, task], [cam_gallery, cam_status],
                         api_visibility="private", concurrency_id=serving.PAGE_MODELS)


def _batch_tab(ctx: AppContext) -> None:
    gr.Markdown(f"Several photos at once: up to {batch.MAX_BATCH_PHOTOS} image files, or a zip file of images. "
                "Every face of every photo, with every model, in one table and one CSV (the same as "
                "`python -m agekit.predict PHOTOS... --out results.csv`).")
    files = gr.File(label="Photos or a zip file", file_count="multiple", file_types=["image", ".zip"],
                    elem_id="batch-files")
    run_button = gr.Button("Analyse every photo", variant="primary", elem_id="batch-run")
    status = gr.Markdown(elem_id="batch-status")
    table = gr.Dataframe(label="one row per face × model", interactive=False, wrap=True, elem_id="batch-table")
    download = gr.DownloadButton("Download the table (CSV)", visible=False, elem_id="batch-download")
    run_button.click(partial(batch_view.on_batch, ctx), [files], [table, download, status],
                     api_visibility="private", concurrency_id=serving.PAGE_MODELS)


def _testset_tab(ctx: AppContext, demo: gr.Blocks) -> None:
    root = ctx.checkpoints_root
    names = testset.model_choices(root, ctx.model_names)
    gr.Markdown("Results on the held-out UTKFace test split, read from each model's committed evaluation "
                "(`checkpoints/<model>/eval/`). No dataset is needed for this tab.")
    with gr.Row():
        model_a = gr.Dropdown(names, value=_opening_model(ctx, names), label="model", elem_id="testset-model")
        model_b = gr.Dropdown([testset.NO_SECOND_MODEL, *names], value=testset.NO_SECOND_MODEL,
                              label="compare with")
        task = gr.Radio(list(testset.TASK_SECTIONS), value="age bins", label="task")
        view = gr.Radio(list(testset.CONFUSION_VIEWS), value=testset.CONFUSION_VIEWS[0], label="confusion matrix")
    status = gr.Markdown()
    panels: list[gr.components.Component] = []
    with gr.Row(equal_height=False):
        for column_index in range(2):
            with gr.Column(visible=column_index == 0) as column:
                panels += [gr.Markdown(), gr.Plot(show_label=False), gr.Plot(show_label=False),
                           gr.Dataframe(label="per class", interactive=False, headers=list(testset.PER_CLASS_COLUMNS)),
                           gr.Plot(show_label=False)]
    second_column = column
    difference = gr.Markdown()
    mae_plot = gr.Plot(label="age MAE by true age")
    with gr.Row():
        attribute = gr.Radio(list(testset.FAIRNESS_ATTRIBUTES), value="ethnicity", label="fairness: groups by")
        metric = gr.Dropdown(_labelled(testset.FAIRNESS_METRICS), value="age_mae", label="fairness metric")
    fairness_plot = gr.Plot(show_label=False)
    fairness_table = gr.Dataframe(label="metric per group (faces) and the largest gap", interactive=False)

    gr.Markdown("### Training curves (validation split, per epoch; ★ = each model's best epoch on the metric)")
    curve_metric = gr.Dropdown(_labelled(testset.TRAINING_CURVE_METRICS), value=testset.TRAINING_CURVE_METRICS[0],
                               label="training metric")
    curve_plot = gr.Plot(show_label=False)
    curve_status = gr.Markdown()

    gr.Markdown("### Leaderboard (all models)")
    try:
        board_metrics = testset.leaderboard_metrics(testset.read_leaderboard(root))
    except ValueError:
        board_metrics = []
    board_metric = gr.Dropdown(_labelled(board_metrics), value=(board_metrics or [None])[0], label="rank by")
    board_plot = gr.Plot(show_label=False)
    board_table = gr.Dataframe(label="the main columns; every column: checkpoints/leaderboard.csv", interactive=False,
                               wrap=True, elem_id="leaderboard-table")
    board_status = gr.Markdown()

    inputs = [model_a, model_b, task, view, attribute, metric]
    outputs = [*panels, second_column, mae_plot, fairness_plot, fairness_table, status]
    show = partial(testset.on_testset, root)
    for control in inputs:
        control.input(show, inputs, outputs, api_visibility="private", concurrency_id="plots",
                      concurrency_limit=2)
    pair = partial(testset.on_difference, root)
    for control in (model_a, model_b):  # the page opens with no second model, so nothing to show on load
        control.input(pair, [model_a, model_b], [difference], api_visibility="private", concurrency_id="plots",
                      concurrency_limit=2)
    board = partial(testset.on_leaderboard, root)
    board_metric.input(board, [board_metric], [board_plot, board_table, board_status], api_visibility="private")
    demo.load(show, inputs, outputs, api_visibility="private", concurrency_id="plots", concurrency_limit=2)
    demo.load(board, [board_metric], [board_plot, board_table, board_status], api_visibility="private")
    curves = partial(testset.on_training_curves, root, names)
    curve_metric.input(curves, [curve_metric], [curve_plot, curve_status], api_visibility="private")
    demo.load(curves, [curve_metric], [curve_plot, curve_status], api_visibility="private")


def _error_analysis_tab(ctx: AppContext) -> None:
    root = ctx.checkpoints_root
    names = error_analysis.models_with_predictions(root, testset.model_choices(root, ctx.model_names))
    first = _opening_model(ctx, names)
    first_mode = "most confident mistakes"
    gr.Markdown("Which test faces does a model get wrong? The faces are UTKFace's test split (shipped with "
                f"the app at {TEST_FACES_SIZE} px unless the server has the dataset; licence: non-commercial research "
                "only); click one to compare every model's prediction and Grad-CAM on it.")
    with gr.Row():
        model = gr.Dropdown(names, value=first, label="model", elem_id="errors-model")
        task = gr.Radio(list(error_analysis.TASKS_UI), value="age bins", label="task")
        mode = gr.Radio(list(error_analysis.MODES), value=first_mode, label="show", elem_id="errors-mode")
    first_choices = error_analysis.on_task(root, first, "age bins")
    with gr.Row():
        cell_shown = error_analysis.on_mode(first_mode)[0]["visible"]
        true_class = gr.Dropdown(label="true class (confusion cell)", visible=cell_shown, elem_id="errors-true-class",
                                 **_choices(first_choices[0]))
        pred_class = gr.Dropdown(label="predicted class (confusion cell)", visible=cell_shown,
                                 **_choices(first_choices[1]))
        method = gr.Dropdown(list(CAM_METHODS), value=_default_method(), label="Grad-CAM method")
    show_button = gr.Button("Show faces", variant="primary")
    status = gr.Markdown()
    faces = gr.Gallery(label=f"test faces (up to {error_analysis.MAX_GALLERY}): truth → prediction (confidence)",
                       columns=6, height="auto", allow_preview=False, elem_classes=["uncut-gallery"])
    files = gr.State([])
    with gr.Row(equal_height=False):
        face = gr.Image(label="selected face", interactive=False, height=220, scale=1)
        table = gr.Dataframe(label="every model on this face", interactive=False, scale=3,
                             headers=list(error_analysis.MODEL_TABLE_COLUMNS))
    cams = gr.Gallery(label="Grad-CAM of every model (model · task: what was explained)", columns=4, height="auto",
                      format="png", fit_columns=False, elem_classes=["uncut-gallery"])
    face_status = gr.Markdown()

    mode.input(error_analysis.on_mode, [mode], [true_class, pred_class], api_visibility="private")
    update_classes = partial(error_analysis.on_task, root)
    for control in (model, task):
        control.input(update_classes, [model, task], [true_class, pred_class], api_visibility="private")
    show_button.click(partial(error_analysis.on_show_faces, ctx),
                      [model, task, mode, true_class, pred_class], [faces, files, status],
                      api_visibility="private", concurrency_id="plots", concurrency_limit=2)
    def select_face(model: str | None, task: str, method: str, files: list[str] | None,
                    evt: gr.SelectData) -> tuple:
        # a plain function, not a partial: Gradio finds the SelectData parameter through its type hints
        return error_analysis.on_select_face(ctx, model, task, method, files, evt)

    faces.select(select_face, [model, task, method, files], [face, table, cams, face_status],
                 api_visibility="private", concurrency_id=serving.PAGE_MODELS)


def _opening_model(ctx: AppContext, names: list[str]) -> str | None:
    """The model a tab opens on: the page's ★ model when the tab lists it, else the tab's own default."""
    return ctx.headline_model if ctx.headline_model in names else testset.default_model(ctx.checkpoints_root, names)


def _labelled(metrics: list[str] | tuple[str, ...]) -> list[tuple[str, str]]:
    """Dropdown choices that show a metric's readable name and send its key."""
    return [(plots.metric_label(m), m) for m in metrics]


def _choices(update: dict) -> dict:
    return {"choices": update.get("choices", []), "value": update.get("value")}


def _api_endpoints(ctx: AppContext) -> None:
    """Hidden components behind the documented API: predict (JSON), predict_batch (CSV) and explain (overlay)."""
    with gr.Column(visible=False):
        image = gr.Image(label="image", type="filepath", image_mode=None)
        photos = gr.File(label="photos", file_count="multiple", file_types=["image", ".zip"])
        face = gr.Number(label="face", value=1, precision=0)
        model = gr.Textbox(label="model", value=ctx.model_names[0] if ctx.model_names else "")
        task = gr.Textbox(label="task", value="age")
        method = gr.Textbox(label="method", value=_default_method())
        result_json = gr.JSON(label="predictions")
        result_csv = gr.File(label="results CSV")
        overlay = gr.Image(label="overlay", format="png")
        predict_button = gr.Button("predict")
        batch_button = gr.Button("predict_batch")
        explain_button = gr.Button("explain")
    # their own queue slots (serving.API_MODELS), so API bursts wait behind each other, not in front of the page
    api_slot = {"concurrency_id": serving.API_MODELS, "concurrency_limit": serving.API_CONCURRENCY}
    predict_button.click(partial(api.predict_endpoint, ctx), [image], [result_json], api_name="predict",
                         preprocess=False, **api_slot,
                         api_description="Detect faces in an image; every model's age, gender and ethnicity.")
    batch_button.click(partial(api.predict_batch_endpoint, ctx), [photos], [result_csv], api_name="predict_batch",
                       preprocess=False, **api_slot,
                       api_description=f"Up to {batch.MAX_BATCH_PHOTOS} photos (image files or zips): one CSV of "
                                       "every face × model.")
    explain_button.click(partial(api.explain_endpoint, ctx), [image, face, model, task, method], [overlay],
                         api_name="explain", preprocess=False, **api_slot,
                         api_description="Grad-CAM overlay for face number `face` (1-based) of the image; task "
                                         f"one of {', '.join(compare.EXPLAIN_TASK_CHOICES)} (\"all\": the "
                                         "model's tasks side by side).")


def _default_method() -> str:
    return DEFAULT_CAM_METHOD if DEFAULT_CAM_METHOD in CAM_METHODS else next(iter(CAM_METHODS), "")
