"""The real app in a real browser: `python app.py` with the committed checkpoints, driven by Playwright in Debian's
headless Chromium (bench.browser). Skipped, with the reason, where chromium or Playwright is missing, except in CI
(CI=true), where .ci/run installs both and a missing browser is a failure."""

from __future__ import annotations

import csv
import io
import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.browser import chromium_path, click_example, example_names, launch_chromium
from bench.server import LOCAL_ENV, AppServer, running_app

REPO = Path(__file__).resolve().parents[1]
MULTI_FACE = "multi_face_composite.jpg"
WIDTHS = (1280, 390)  # a laptop and a phone

pytestmark = pytest.mark.slow  # starts the app and a browser: minutes, not seconds


def browser_missing() -> str:
    """Why the browser tests cannot run here ('' when they can)."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "Playwright is not installed: pip install -r requirements-dev.txt"
    return "" if chromium_path() else "no chromium on PATH: apt-get install -y chromium"


@pytest.fixture(scope="module")
def server() -> Iterator[AppServer]:
    if reason := browser_missing():
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI must run the browser tests: {reason}")
        pytest.skip(reason)
    os.environ.update(LOCAL_ENV)
    with running_app(timeout=180) as app:
        yield app


@pytest.fixture(scope="module")
def browser(server: AppServer) -> Iterator:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = launch_chromium(playwright)
        yield chromium
        chromium.close()


def open_page(browser, server: AppServer, width: int):
    page = browser.new_page(viewport={"width": width, "height": 900}, accept_downloads=True)
    page.set_default_timeout(120_000)  # a 2-core machine busy with training
    page.goto(server.url)
    return page


@pytest.fixture
def page(browser, server: AppServer) -> Iterator:
    page = open_page(browser, server, WIDTHS[0])
    yield page
    page.close()


def scrolls_sideways(page) -> bool:
    return page.evaluate("document.scrollingElement.scrollWidth > document.scrollingElement.clientWidth")


def summary_rows(page) -> list[str]:
    return page.locator("#face-summary tbody tr").all_inner_texts()


def show_example(page, name: str) -> None:
    names = example_names(page)
    click_example(page, names.index(name), name)


def open_accordion(page, title: str) -> None:
    page.get_by_role("button", name=re.compile(re.escape(title))).click()


@pytest.mark.parametrize("width", WIDTHS)
def test_before_a_photo_the_page_is_a_hint_and_after_it_every_model_with_no_sideways_scrolling(
        browser, server: AppServer, width: int) -> None:
    page = open_page(browser, server, width)
    try:
        assert "Upload a photo" in page.inner_text("#photo-status")
        assert not page.locator("#face-summary").is_visible() and not page.locator("#annotated-photo").is_visible()
        show_example(page, MULTI_FACE)
        rows = summary_rows(page)
        assert len(rows) >= 2 and rows[0].startswith("★ ")  # the headline model first
        open_accordion(page, "Every probability")  # drawn only when opened
        page.wait_for_selector("#face-details table")
        assert len(rows) == page.locator("#face-details table").first.locator("tbody tr").count()
        assert page.locator("#face-choice label").count() == 4 and "Found 4 faces" in page.inner_text("#photo-status")
        assert not scrolls_sideways(page)
    finally:
        page.close()


def test_face_switching_and_gradcam_follow_the_summary_and_are_cleared(page) -> None:
    show_example(page, MULTI_FACE)
    first_face = summary_rows(page)
    page.locator("#face-choice label", has_text="Face 2").click()
    page.wait_for_selector("#face-summary .agekit-summary[data-face='2']")
    assert summary_rows(page) != first_face

    open_accordion(page, "Grad-CAM")
    page.click("#explain")
    page.wait_for_selector("#cam-gallery img")
    page.wait_for_function("document.querySelector('#cam-status').innerText.includes('of face 2')")
    # each model's caption names the bin and probability its summary row shows (a consensus has no map)
    status = page.inner_text("#cam-status")
    explained = 0
    for row in summary_rows(page):
        model, _, bin_cell = row.split("\t")[:3]
        name = model.removeprefix("★ ").split()[0]
        age_bin, probability = re.match(r"\s*(\S+) · (\d+) %", bin_cell.split(":")[-1]).groups()
        if f"{name} · age:" in status:
            explained += 1
            assert f"{name} · age: probability of the predicted age bin {age_bin.replace('–', '-')} ({probability}%)" \
                in status
    assert explained >= len(summary_rows(page)) - 1
    gallery = page.locator("#cam-gallery img")
    assert gallery.count() >= len(summary_rows(page)) - 1  # every model with a network of its own
    assert all(gallery.nth(i).is_visible() for i in range(gallery.count()))  # nothing clipped away

    page.locator("#face-choice label", has_text="Face 3").click()  # another face: the old heatmaps go
    page.wait_for_function("document.querySelectorAll('#cam-gallery img').length === 0")
    page.click("#explain")
    page.wait_for_selector("#cam-gallery img")
    show_example(page, "nasa_astronaut_eileen_collins.jpg")  # another photo: so do these
    assert page.locator("#cam-gallery img").count() == 0 and page.inner_text("#cam-status").strip() == ""


def test_photo_results_download_as_csv(page) -> None:
    show_example(page, MULTI_FACE)
    models = len(summary_rows(page))
    with page.expect_download() as download:
        page.click("#download-csv")
    rows = list(csv.DictReader(io.StringIO(Path(download.value.path()).read_text())))
    assert len(rows) == 4 * models and {r["face"] for r in rows} == {"1", "2", "3", "4"}
    assert rows[0]["model"] == summary_rows(page)[0].split("\t")[0].removeprefix("★ ").split()[0]


def test_testset_and_error_tabs_open_on_the_headline_model_with_readable_controls(page) -> None:
    show_example(page, "utkface_test_25_0_1.jpg")
    star = summary_rows(page)[0].split("\t")[0].removeprefix("★ ").split()[0]
    page.get_by_role("tab", name="Test set").click()
    assert page.input_value("#testset-model input") == star
    page.wait_for_selector("#leaderboard-table table")
    board = page.inner_text("#leaderboard-table")
    assert "age MAE (years)" in board and "wild_age_bin_macro_f1" not in board
    assert re.search(r"\d{1,3}(,\d{3})+", board)  # parameter counts with thousands separators
    assert not scrolls_sideways(page)

    page.get_by_role("tab", name="Error analysis").click()
    assert page.input_value("#errors-model input") == star
    assert not page.locator("#errors-true-class").is_visible()  # the confusion cell is not this mode's
    page.locator("#errors-mode label", has_text="confusion cell").click()
    page.wait_for_selector("#errors-true-class", state="visible")


def test_batch_of_photos_into_one_table_and_csv(page) -> None:
    page.get_by_role("tab", name="Batch").click()
    photos = [REPO / "examples" / MULTI_FACE, REPO / "examples" / "utkface_test_4_1_2.jpg"]
    page.set_input_files("#batch-files input[type=file]", [str(p) for p in photos])
    # both on the server: each file's row links to its server copy only once its upload has finished
    page.wait_for_function("document.querySelectorAll(\"#batch-files a[href*='gradio_api/file=']\").length === 2")
    page.click("#batch-run")
    # done (a count) or failed (a warning); meanwhile the status shows the progress bar's "photo 1: ..."
    page.wait_for_function("/photos:|⚠️/.test(document.querySelector('#batch-status').innerText)")
    assert "2 photos: 5 faces" in page.inner_text("#batch-status")
    # the table draws the rows in view (the first photo's); the CSV below has them all
    page.wait_for_function(f"document.querySelector('#batch-table').innerText.includes('{MULTI_FACE}')")
    with page.expect_download() as download:
        page.click("#batch-download")
    rows = list(csv.DictReader(io.StringIO(Path(download.value.path()).read_text())))
    assert {r["photo"] for r in rows} == {p.name for p in photos}
    assert len({(r["photo"], r["face"]) for r in rows}) == 5
