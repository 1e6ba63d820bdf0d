"""agekit demo app (Hugging Face Spaces entry point): `python app.py`.

Environment:
  AGEKIT_CHECKPOINTS      checkpoint folder (default ./checkpoints)
  AGEKIT_UTKFACE          UTKFace folder: full-size Error-analysis faces (optional; default: the shipped pack)
  PORT / GRADIO_SERVER_PORT, GRADIO_SERVER_NAME   where to listen (default 127.0.0.1:7860)
  AGEKIT_PRELOAD_EXAMPLE  1: analyse the first example photo at start (screenshots, demos)
  AGEKIT_TAB              compare | testset | errors: the tab open on page load
  AGEKIT_TORCH_THREADS    torch intra-op threads (default 1)
  AGEKIT_CONCURRENCY      page model requests served at once (default 2, chosen with `python -m bench.load_test`)
"""

from __future__ import annotations

import os

# Passive OpenMP waits: spinning threads made detection and prediction many times slower whenever anything else
# used the 2 cores (docs/experiments.md, "Speed"). Must be set before torch is imported.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import logging
from pathlib import Path

import torch

from agekit.ui import PAGE_CSS, AppContext, build_app, launch

logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
# Small models on a 2-vCPU Space: one intra-op thread avoids OpenMP oversubscription (docs/experiments.md,
# "Speed"); the other vCPU serves the UI.
torch.set_num_threads(int(os.environ.get("AGEKIT_TORCH_THREADS", "1")))

context = AppContext.from_env(base_dir=Path(__file__).resolve().parent)
demo = build_app(context, preload_example=os.environ.get("AGEKIT_PRELOAD_EXAMPLE") == "1",
                 selected_tab=os.environ.get("AGEKIT_TAB", "compare"))

if __name__ == "__main__":
    port = os.environ.get("GRADIO_SERVER_PORT") or os.environ.get("PORT") or "7860"
    # 2 vCPUs: two page model requests at a time measured best (docs/experiments.md, "Speed": the load test);
    # API calls get their own slot, Grad-CAM runs one at a time behind its own lock; the rest waits in a bounded
    # queue. Upload, session and cache limits: agekit/ui/serving.py.
    concurrency = int(os.environ.get("AGEKIT_CONCURRENCY", "2"))
    launch(demo, port=int(port), page_concurrency=concurrency, css=PAGE_CSS)
