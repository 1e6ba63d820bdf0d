"""The running app through gradio_client: the named "predict", "predict_batch" and "explain" endpoints over HTTP."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest
from gradio_client import Client, handle_file
from PIL import Image

from agekit.labels import UTK7
from agekit.ui import AppContext, build_app, launch
from agekit.ui.guard import MAX_MESSAGE_CHARS
from agekit.ui.serving import MAX_UPLOAD_BYTES
from bench.gradio_wire import WireClient, event_index

ASTRONAUT = Path(__file__).resolve().parents[1] / "examples" / "nasa_astronaut_eileen_collins.jpg"

pytestmark = pytest.mark.slow  # launches the app and talks to it over HTTP


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def photo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The committed public-domain example photo, or a face-crop-sized image the app uses whole."""
    if ASTRONAUT.is_file():
        return ASTRONAUT
    path = tmp_path_factory.mktemp("photo") / "crop.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (200, 200, 3), dtype=np.uint8)).save(path)
    return path


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory, save_tiny) -> Iterator[Client]:
    root = tmp_path_factory.mktemp("checkpoints")
    save_tiny(root / "tiny", widths=(8, 16))
    demo = build_app(AppContext.create(root, examples_dir=None))
    port = free_port()
    launch(demo, port=port, page_concurrency=1, host="127.0.0.1", prevent_thread_lock=True, quiet=True)
    try:
        yield Client(f"http://127.0.0.1:{port}/", verbose=False)
    finally:
        demo.close()


def test_predict_endpoint_returns_faces_and_predictions(client: Client, photo: Path) -> None:
    result = client.predict(handle_file(str(photo)), api_name="/predict")
    assert result["models"] == ["tiny"] and result["model_failures"] == {} and result["detected"] == 1
    (face,) = result["faces"]
    x1, y1, x2, y2 = face["box"]
    width, height = Image.open(photo).size
    assert 0 <= x1 < x2 <= width and 0 <= y1 < y2 <= height and face["face"] == 1
    tiny = face["predictions"]["tiny"]
    assert 0 <= tiny["age"] <= 116
    assert list(tiny["age_bins"]) == list(UTK7.names) and sum(tiny["age_bins"].values()) == pytest.approx(1, abs=1e-3)
    # the decided bin, named as the page names it
    assert tiny["age_bin"] == max(tiny["age_bins"], key=tiny["age_bins"].get)
    assert tiny["age_bin_probability"] == tiny["age_bins"][tiny["age_bin"]] and face["flags"] == []
    assert set(tiny["gender"]) == {"male", "female"}
    assert set(tiny["ethnicity"]) == {"White", "Black", "Asian", "Indian", "Others"}


def test_explain_endpoint_returns_an_overlay_image(client: Client, photo: Path) -> None:
    path = client.predict(image=handle_file(str(photo)), face=1, model="tiny", task="age", method="GradCAM",
                          api_name="/explain")
    overlay = Image.open(path)
    assert overlay.mode == "RGB" and overlay.size == (32, 32)  # the crop at the model's input size


def test_non_image_upload_returns_the_clear_message(client: Client, tmp_path: Path) -> None:
    fake = tmp_path / "notes.jpg"
    fake.write_text("not an image")
    with pytest.raises(Exception, match="not an image format I can read"):
        client.predict(handle_file(str(fake)), api_name="/predict")


def test_api_info_lists_only_the_three_endpoints(client: Client) -> None:
    assert set(client.view_api(print_info=False, return_format="dict")["named_endpoints"]) == {
        "/predict", "/predict_batch", "/explain"}


def test_predict_batch_returns_one_csv_of_every_photo(client: Client, photo: Path, tmp_path: Path) -> None:
    fake = tmp_path / "notes.jpg"
    fake.write_text("not an image")
    path = client.predict([handle_file(str(photo)), handle_file(str(fake))], api_name="/predict_batch")
    table = pd.read_csv(path)
    assert list(table["photo"]) == [photo.name, "notes.jpg"] and table.loc[0, "model"] == "tiny"
    assert 0 <= table.loc[0, "age"] <= 116 and "not an image" in table.loc[1, "error"]
    with pytest.raises(Exception, match="a batch takes at most 20 photos"):
        client.predict([handle_file(str(photo))] * 21, api_name="/predict_batch")


def test_uploads_over_the_limit_are_refused(client: Client, tmp_path: Path) -> None:
    big = tmp_path / "big.png"
    with big.open("wb") as handle:
        handle.truncate(MAX_UPLOAD_BYTES + 1)
    with WireClient(client.src) as wire, pytest.raises(httpx.HTTPStatusError) as refused:
        wire.upload(big)
    assert refused.value.response.status_code == 413


def test_long_input_comes_back_capped(client: Client, photo: Path) -> None:
    with pytest.raises(Exception, match="unknown model 'xxxx") as caught:
        client.predict(image=handle_file(str(photo)), face=1, model="x" * 50_000, task="age", method="GradCAM",
                       api_name="/explain")
    assert len(str(caught.value)) < MAX_MESSAGE_CHARS + 100


def test_gradios_own_errors_reach_the_caller_as_a_message(client: Client) -> None:
    # a private page event called by fn_index with a file the server never received: Gradio itself refuses it
    with WireClient(client.src) as wire:
        fn_index = event_index(wire.config(), "analyse_photo")
        answer = wire.call(fn_index, [{"path": "/etc/" + "p" * 5000, "meta": {"_type": "gradio.FileData"}}])
    assert not answer.ok and isinstance(answer.error, str) and answer.error
    assert len(answer.error) < MAX_MESSAGE_CHARS + 100
