"""agekit demo app (Hugging Face Spaces entry point): `python app.py`.

Environment: AGEKIT_CHECKPOINTS (default ./checkpoints), AGEKIT_UTKFACE (UTKFace folder for the
Error-analysis tab), AGEKIT_PRELOAD_EXAMPLE=1 (analyse the first example on page load),
AGEKIT_TAB (compare | testset | errors: the tab open on page load), PORT or GRADIO_SERVER_PORT (default 7860), GRADIO_SERVER_NAME (default 127.0.0.1).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from agekit.ui import AppContext, build_app

logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")

context = AppContext.from_env(base_dir=Path(__file__).resolve().parent)
demo = build_app(context, preload_example=os.environ.get("AGEKIT_PRELOAD_EXAMPLE") == "1",
                 selected_tab=os.environ.get("AGEKIT_TAB", "compare"))

if __name__ == "__main__":
    port = os.environ.get("GRADIO_SERVER_PORT") or os.environ.get("PORT") or "7860"
    # 2 vCPUs: one model-heavy request at a time, the rest waits in a bounded queue.
    demo.queue(default_concurrency_limit=1, max_size=32).launch(server_port=int(port))
