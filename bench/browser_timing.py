"""Click → results drawn, in a real browser: `python -m bench.browser_timing [--rounds 2] [--width 1280]`.

Starts `python app.py` on a free loopback port, opens the page in headless Chromium (Debian's package, driven by
Playwright), clicks every example photo in turn (`--rounds` times; the first click, which warms the page, is not
counted) and prints, per click, the seconds from the click until the photo's results are drawn (bench.browser:
its summary table on the page, the annotated photo loaded, no progress overlay), then the median and the spread.
"""

from __future__ import annotations

import argparse
import os
import statistics

from bench.browser import click_example, example_names, launch_chromium
from bench.server import LOCAL_ENV, running_app


def measure(rounds: int, width: int) -> list[tuple[str, float]]:
    """(example name, seconds) for every counted click."""
    from playwright.sync_api import sync_playwright

    os.environ.update(LOCAL_ENV)
    timings = []
    with running_app() as server, sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        try:
            page = browser.new_page(viewport={"width": width, "height": 900})
            page.goto(server.url)
            names = example_names(page)
            if len(names) < 2:
                raise SystemExit(f"need at least 2 example photos, the page shows {len(names)}")
            click_example(page, len(names) - 1, names[-1])  # warm-up: fonts, scripts, the first model run
            for _ in range(rounds):
                for index, name in enumerate(names):
                    seconds = click_example(page, index, name)
                    timings.append((name, seconds))
                    print(f"{name}: {seconds:.3f} s", flush=True)
        finally:
            browser.close()
    return timings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2, help="clicks on every example photo")
    parser.add_argument("--width", type=int, default=1280, help="browser window width, px")
    args = parser.parse_args()
    seconds = [s for _, s in measure(args.rounds, args.width)]
    print(f"click → results drawn: median {statistics.median(seconds):.2f} s, min {min(seconds):.2f} s, "
          f"max {max(seconds):.2f} s over {len(seconds)} clicks ({args.width} px wide)")


if __name__ == "__main__":
    main()
