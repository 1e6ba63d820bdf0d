"""Start the app, wait until it answers, take a headless Chromium screenshot, stop the app.

    python tools/screenshot_app.py --out docs/screenshot.png

Needs Debian's chromium (`apt-get install -y chromium`). The app is started with
AGEKIT_PRELOAD_EXAMPLE=1 so the page shows the first example photo already analysed.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until_up(url: str, process: subprocess.Popen, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"the app exited with code {process.returncode} before answering")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise SystemExit(f"the app did not answer on {url} within {timeout_s:.0f} s")


def screenshot(url: str, out: Path, width: int, height: int, wait_ms: int) -> None:
    browser = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if browser is None:
        raise SystemExit("no chromium found: apt-get install -y chromium")
    out.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars",
                    f"--virtual-time-budget={wait_ms}", f"--screenshot={out}", f"--window-size={width},{height}",
                    url], check=True, timeout=120, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "screenshot.png")
    parser.add_argument("--app", type=Path, default=REPO / "app.py")
    parser.add_argument("--tab", default="compare", choices=("compare", "testset", "errors"),
                        help="the tab open in the screenshot")
    parser.add_argument("--size", default="1400,1800", help="window width,height in px")
    parser.add_argument("--wait-ms", type=int, default=20000, help="page time allowed for rendering and the example")
    parser.add_argument("--startup-timeout", type=float, default=120.0, help="seconds to wait for the server")
    args = parser.parse_args()

    port = free_port()
    env = dict(os.environ, PORT=str(port), GRADIO_SERVER_PORT=str(port), GRADIO_SERVER_NAME="127.0.0.1",
               AGEKIT_PRELOAD_EXAMPLE="1", AGEKIT_TAB=args.tab, GRADIO_ANALYTICS_ENABLED="False")
    process = subprocess.Popen([sys.executable, str(args.app)], cwd=REPO, env=env)
    try:
        url = f"http://127.0.0.1:{port}/"
        wait_until_up(url, process, args.startup_timeout)
        width, height = (int(v) for v in args.size.split(","))
        screenshot(url, args.out, width, height, args.wait_ms)
        print(f"wrote {args.out}")
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()


if __name__ == "__main__":
    main()
