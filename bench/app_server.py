"""Serve app.py's Blocks with a chosen queue concurrency: `python -m bench.app_server --concurrency N`.

app.py hard-codes `queue(default_concurrency_limit=1, max_size=32)`; the load test uses this launcher to
compare other limits on the very same Blocks (importing app.py builds them without launching). Port and
host come from GRADIO_SERVER_PORT / GRADIO_SERVER_NAME like app.py.
"""

from __future__ import annotations

import argparse
import os
import sys

from bench.server import HOST, REPO_ROOT


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.app_server", description=__doc__.split("\n")[0])
    parser.add_argument("--concurrency", type=int, required=True, help="queue default_concurrency_limit")
    parser.add_argument("--max-size", type=int, default=32, help="queue max_size (app.py uses 32)")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(REPO_ROOT))
    import app  # builds the context and Blocks exactly as `python app.py` does

    port = int(os.environ.get("GRADIO_SERVER_PORT") or os.environ.get("PORT") or "7860")
    app.demo.queue(default_concurrency_limit=args.concurrency, max_size=args.max_size).launch(
        server_name=os.environ.get("GRADIO_SERVER_NAME", HOST), server_port=port)


if __name__ == "__main__":
    main()
