"""Drive the app in headless Chromium with Playwright (Debian's `chromium` package; Playwright downloads no browser):
the page's own measures of "results drawn", shared by `bench.browser_timing` and tests/test_browser.py."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

CHROMIUM_NAMES = ("chromium", "chromium-browser")
RESULT_TIMEOUT_MS = 60_000
# The results of the photo named `photo` are drawn: its summary table is on the page, the annotated photo has loaded,
# and no output of the Compare tab still shows Gradio's progress overlay.
RESULTS_DRAWN_JS = """(photo) => {
  const summary = document.querySelector('#face-summary .agekit-summary');
  if (!summary || summary.dataset.photo !== photo) return false;
  const image = document.querySelector('#annotated-photo img');
  if (!image || !image.complete || image.naturalWidth === 0) return false;
  const trackers = document.querySelectorAll(
    '#face-summary [data-testid="status-tracker"], #annotated-photo [data-testid="status-tracker"]');
  return [...trackers].every(tracker => tracker.classList.contains('hide'));
}"""


def chromium_path() -> str | None:
    """The system Chromium's executable, or None when it is not installed (apt-get install -y chromium)."""
    for name in CHROMIUM_NAMES:
        if found := shutil.which(name):
            return found
    return None


def launch_chromium(playwright):  # Playwright has its own types
    """A headless Chromium from the system package; RuntimeError saying how to install it when it is missing."""
    path = chromium_path()
    if path is None:
        raise RuntimeError("no chromium on PATH: apt-get install -y chromium")
    return playwright.chromium.launch(executable_path=path, args=["--no-sandbox", "--disable-dev-shm-usage"])


def example_names(page) -> list[str]:
    """File names of the example photos, in the order the page shows them (waits until they are on the page)."""
    page.wait_for_selector("#example-photos img", timeout=RESULT_TIMEOUT_MS)
    return [Path(src).name for src in page.eval_on_selector_all(
        "#example-photos img", "images => images.map(image => decodeURIComponent(image.src.split('?')[0]))")]


def click_example(page, index: int, photo: str) -> float:
    """Click example `index` (file name `photo`) and wait until its results are drawn (RESULTS_DRAWN_JS, checked at
    every animation frame); seconds from the click."""
    start = time.perf_counter()
    page.locator("#example-photos img").nth(index).click()
    page.wait_for_function(RESULTS_DRAWN_JS, arg=photo, polling="raf", timeout=RESULT_TIMEOUT_MS)
    return time.perf_counter() - start
