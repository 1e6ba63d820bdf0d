"""The Gradio app's callbacks and Blocks: every function here is testable without a browser."""

from agekit.ui.blocks import build_app
from agekit.ui.context import AppContext

__all__ = ["AppContext", "build_app"]
