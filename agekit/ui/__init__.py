"""The Gradio app's callbacks and Blocks: every function here is testable without a browser."""

from agekit.ui.blocks import PAGE_CSS, build_app
from agekit.ui.context import AppContext
from agekit.ui.serving import launch

__all__ = ["PAGE_CSS", "AppContext", "build_app", "launch"]
