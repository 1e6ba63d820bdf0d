"""Where app start-up time goes, measured in a fresh interpreter: `python -m bench.startup_phases`.

Prints one JSON object {phase: seconds}: import torch, import gradio, import agekit.ui (the rest of the
app's imports), ModelZoo.load (every checkpoint + its warm-up forward), FaceDetector() (MTCNN), build_app
(the Blocks) and launch (until the server is up). Uses AGEKIT_CHECKPOINTS and AGEKIT_TORCH_THREADS (default 1)
like app.py.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.server import HOST, REPO_ROOT, free_port


def timed(phases: dict[str, float], name: str, fn: Callable[[], Any]) -> Any:
    """Run fn, store its duration (s) under `name`, return its result."""
    start = time.perf_counter()
    result = fn()
    phases[name] = time.perf_counter() - start
    return result


def measure_phases(checkpoints: Path) -> dict[str, float]:
    """Seconds spent in each start-up phase of the app (see the module docstring)."""
    phases: dict[str, float] = {}
    torch = timed(phases, "import torch", lambda: __import__("torch"))
    torch.set_num_threads(int(os.environ.get("AGEKIT_TORCH_THREADS", "1")))  # as app.py does before loading
    timed(phases, "import gradio", lambda: __import__("gradio"))
    timed(phases, "import agekit.ui", lambda: __import__("agekit.ui"))
    from agekit.faces import FaceDetector
    from agekit.predict import ModelZoo
    from agekit.ui import AppContext, build_app
    from agekit.ui.context import list_examples

    zoo = timed(phases, "ModelZoo.load", lambda: ModelZoo.load(checkpoints))
    detector = timed(phases, "FaceDetector()", FaceDetector)
    context = AppContext(checkpoints_root=checkpoints, zoo=zoo, detector=detector,
                         examples=list_examples(REPO_ROOT / "examples"))
    demo = timed(phases, "build_app", lambda: build_app(context))
    timed(phases, "launch", lambda: demo.queue(default_concurrency_limit=1).launch(
        server_name=HOST, server_port=free_port(), prevent_thread_lock=True, quiet=True))
    demo.close()
    phases["models loaded"] = float(len(zoo.models))
    return phases


def main() -> None:
    checkpoints = Path(os.environ.get("AGEKIT_CHECKPOINTS") or REPO_ROOT / "checkpoints")
    print(json.dumps(measure_phases(checkpoints)))


if __name__ == "__main__":
    main()
