"""CI smoke test of the real app: `python -m bench.smoke_app [--checkpoints DIR] [--timeout 120]`.

Starts `python app.py` on a free 127.0.0.1 port with the repository's checkpoints (or AGEKIT_CHECKPOINTS /
--checkpoints), waits until it serves, sends one example photo to the "predict" endpoint with gradio_client
and checks that at least one face and one model prediction come back. Prints "smoke: ok" and exits 0, or
prints why not and exits 1. The server is always stopped.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from bench.load_test import API_NAME, check_answer
from bench.photos import ASTRONAUT
from bench.server import LOCAL_ENV, AppDidNotStart, running_app


def smoke(checkpoints: Path | None, image: Path, timeout: float) -> str:
    """'' if the app started and answered one prediction correctly, else what went wrong."""
    from gradio_client import Client, handle_file

    os.environ.update(LOCAL_ENV)
    try:
        with running_app(checkpoints=checkpoints, timeout=timeout) as server:
            try:
                client = Client(server.url, verbose=False, analytics_enabled=False, download_files=False)
                try:
                    answer = client.submit(handle_file(str(image)), api_name=API_NAME).result(timeout=timeout)
                finally:
                    client.close()
            except Exception as exc:  # noqa: BLE001 — any failure is the smoke test's answer
                return f"predict request failed: {type(exc).__name__}: {exc}\nend of the app's log:\n" \
                       f"{server.log_tail()}"
            problem = check_answer(answer)
            if problem:
                return f"{problem}; answer: {str(answer)[:1000]}"
            return ""
    except AppDidNotStart as err:
        return str(err)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.smoke_app", description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoints", type=Path, default=None,
                        help="checkpoint folder (default: $AGEKIT_CHECKPOINTS, else app.py's ./checkpoints)")
    parser.add_argument("--image", type=Path, default=ASTRONAUT, help="photo to predict on")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds allowed for start-up, and for the answer")
    args = parser.parse_args(argv)
    problem = smoke(args.checkpoints, args.image, args.timeout)
    if problem:
        print(f"smoke: FAILED — {problem}", file=sys.stderr)
        return 1
    print("smoke: ok")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
