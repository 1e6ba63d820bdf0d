"""Gradio's HTTP protocol spoken directly (httpx), as a hostile client would: any event by `fn_index`.

gradio_client refuses events the app marks private; the queue does not. `WireClient` uploads files and calls
any event of the app's /config by its id, in a session of its own, and returns what the queue answered.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

import httpx


@dataclass
class EventAnswer:
    """What the queue answered to one event: success, the outputs, or the error message it sent."""

    ok: bool
    output: Any = None
    error: str | None = None  # the message a client sees; None when the queue sent no message
    http_status: int = 200  # of the queue/join request (503: queue full)


@dataclass(frozen=True)
class EventInfo:
    """One event of the app's /config: its id (fn_index), inputs' component ids and API visibility."""

    fn_index: int
    inputs: tuple[int, ...]
    api_name: str | None
    api_visibility: str


class WireClient:
    """One visitor session on a running app at `url` (fresh session hash), speaking Gradio's queue protocol."""

    def __init__(self, url: str, timeout: float = 300.0) -> None:
        self.url = url.rstrip("/") + "/"
        self.session_hash = uuid.uuid4().hex[:11]
        self.http = httpx.Client(timeout=timeout, trust_env=False)

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def config(self) -> dict[str, Any]:
        response = self.http.get(self.url + "config")
        response.raise_for_status()
        return response.json()

    def upload(self, path: Path) -> dict[str, Any]:
        """POST the file to /gradio_api/upload; the FileData dict an image input takes. HTTPStatusError (e.g.
        413 for a file over the app's max_file_size) is raised."""
        with path.open("rb") as handle:
            response = self.http.post(self.url + "gradio_api/upload", files={"files": (path.name, handle)})
        response.raise_for_status()
        (server_path,) = response.json()
        return {"path": server_path, "orig_name": path.name, "meta": {"_type": "gradio.FileData"}}

    def call(self, fn_index: int, data: list[Any]) -> EventAnswer:
        """Queue event `fn_index` with `data` (one value per input) in this session; wait for its answer."""
        body = {"data": data, "fn_index": fn_index, "session_hash": self.session_hash, "event_data": None,
                "trigger_id": None}
        joined = self.http.post(self.url + "gradio_api/queue/join", json=body)
        if joined.status_code != 200:
            detail = joined.json().get("detail") if joined.headers.get("content-type", "").startswith(
                "application/json") else joined.text
            return EventAnswer(False, error=str(detail), http_status=joined.status_code)
        event_id = joined.json()["event_id"]
        with self.http.stream("GET", self.url + "gradio_api/queue/data",
                              params={"session_hash": self.session_hash}) as stream:
            for line in stream.iter_lines():
                if not line.startswith("data:"):
                    continue
                message = json.loads(line[5:])
                if message.get("event_id") not in (None, event_id):
                    continue
                if message.get("msg") == "process_completed":
                    output = message.get("output") or {}
                    if message.get("success"):
                        return EventAnswer(True, output.get("data"))
                    return EventAnswer(False, error=output.get("error"))
                if message.get("msg") in ("unexpected_error", "server_stopped"):
                    return EventAnswer(False, error=str(message.get("message")))
        return EventAnswer(False, error="the event stream ended without an answer")


def app_events(config: dict[str, Any]) -> list[EventInfo]:
    """Every event in an app's /config, in id order (the order the page would trigger them)."""
    events = [EventInfo(int(dep["id"]), tuple(dep.get("inputs", [])), dep.get("api_name"),
                        str(dep.get("api_visibility", "public"))) for dep in config["dependencies"]]
    return sorted(events, key=lambda e: e.fn_index)


def event_inputs(config: dict[str, Any], event: EventInfo, image: dict[str, Any]) -> list[Any]:
    """Input values for `event`: `image` (an uploaded FileData) for image/file inputs, null for State (the server
    fills it from the session), each other component's default value."""
    components = {c["id"]: c for c in config["components"]}
    values = []
    for component_id in event.inputs:
        component = components.get(component_id, {})
        kind = component.get("type")
        if kind in ("image", "file"):
            values.append(image)
        elif kind == "state":
            values.append(None)
        else:
            values.append(component.get("props", {}).get("value"))
    return values


def event_index(config: dict[str, Any], api_name: str) -> int:
    """fn_index of the event the app names `api_name` (private events have names too); SystemExit if none."""
    for event in app_events(config):
        if event.api_name == api_name:
            return event.fn_index
    raise SystemExit(f"the app has no event named {api_name!r}")
