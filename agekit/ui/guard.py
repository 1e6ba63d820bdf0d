"""Turn exceptions raised inside UI callbacks into short messages the user can act on.

agekit raises `ImageError`, `NoFaceFound` and `CheckpointError`, all `ValueError` subclasses whose
message already says what to do; those are shown as they are. Anything else is a bug: it is logged
with its traceback and the user sees one line, so the server keeps serving.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any, TypeVar

import gradio as gr
from gradio.context import LocalContext

log = logging.getLogger("agekit.ui")

# Problems with the user's input or the environment: their messages are written for the user.
EXPECTED_ERRORS: tuple[type[BaseException], ...] = (ValueError, FileNotFoundError, NotADirectoryError)

F = TypeVar("F", bound=Callable[..., Any])


MAX_MESSAGE_CHARS = 400  # a message quoting a visitor's input (a model name, a path) is cut to this
# A toast goes after this long (Gradio's default, 10 s, left it over the next photo's results); the status line
# beside the output keeps the message.
TOAST_S = 4.0


def user_message(exc: BaseException) -> str:
    """One-line message for the UI: the exception's own text for expected errors, a generic note otherwise."""
    if isinstance(exc, EXPECTED_ERRORS):
        text = str(exc).strip() or type(exc).__name__
        return capped(text.splitlines()[0] if len(text) > MAX_MESSAGE_CHARS else text)
    return f"Unexpected error ({type(exc).__name__}); the details are in the server log."


def capped(text: str, limit: int = MAX_MESSAGE_CHARS) -> str:
    """`text` cut to `limit` characters, the cut marked with how much was left out."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}… ({len(text) - limit:,} more characters not shown)"


def status_markdown(message: str) -> str:
    """Format a problem for a status `gr.Markdown` (empty message → empty status)."""
    return f"⚠️ {message}" if message else ""


def guarded(on_error: Callable[[str], Any]) -> Callable[[F], F]:
    """Decorate a callback so that any exception becomes `on_error(status_markdown(message))`.

    `on_error` builds the callback's outputs for the failure case (usually cleared outputs plus the
    status text), so the UI shows a message instead of Gradio's generic red "Error" box.
    """

    def decorate(fn: F) -> F:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            try:
                return fn(*args, **kwargs)
            except Exception as exc:  # the server must stay up whatever a callback does
                if not isinstance(exc, EXPECTED_ERRORS):
                    log.exception("callback %s failed", fn.__name__)
                message = user_message(exc)
                notify(message)
                return on_error(status_markdown(message))

        return wrapper  # type: ignore[return-value]

    return decorate


def notify(message: str) -> None:
    """Show a toast in the browser; outside a UI event (tests, API calls) the returned status is enough."""
    if LocalContext.event_id.get(None) is None:
        return
    try:
        gr.Warning(message, duration=TOAST_S)
    except Exception:  # noqa: BLE001 — a notification must never mask the real outcome
        log.warning(message)
