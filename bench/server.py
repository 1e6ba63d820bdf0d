"""Start `app.py` (or another launch command) on a free loopback port, wait until it serves, always stop it."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
HOST = "127.0.0.1"  # loopback only: the benchmarks never expose the app
APP_COMMAND = (sys.executable, "app.py")
# Loopback requests must never go through a proxy; gradio must not phone home from an offline machine.
LOCAL_ENV = {"NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost",
             "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1"}


class AppDidNotStart(RuntimeError):
    """The app process exited or did not answer HTTP in time; the message carries the end of its log."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


@dataclass
class AppServer:
    """A running app subprocess (its own process group) and where it listens."""

    process: subprocess.Popen
    port: int
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}/"

    def log_tail(self, chars: int = 3000) -> str:
        """The last `chars` characters of the app's stdout+stderr."""
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""


def app_environment(port: int, checkpoints: str | Path | None = None,
                    extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """This process's environment plus the app's port/host, `extra` and, if given, AGEKIT_CHECKPOINTS."""
    env = {**os.environ, **LOCAL_ENV, "GRADIO_SERVER_PORT": str(port), "GRADIO_SERVER_NAME": HOST,
           "PYTHONUNBUFFERED": "1", **(extra or {})}
    if checkpoints is not None:
        env["AGEKIT_CHECKPOINTS"] = str(Path(checkpoints).resolve())
    return env


def start_app(command: Sequence[str] = APP_COMMAND, port: int | None = None,
              checkpoints: str | Path | None = None, extra_env: Mapping[str, str] | None = None) -> AppServer:
    """Launch `command` from the repository root with the app environment; output goes to a temp log file."""
    port = port or free_port()
    with tempfile.NamedTemporaryFile(prefix="agekit_app_", suffix=".log", delete=False) as log:
        process = subprocess.Popen(list(command), cwd=REPO_ROOT, env=app_environment(port, checkpoints, extra_env),
                                   stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   start_new_session=True)  # own process group: stop_app ends it and its children
    return AppServer(process, port, Path(log.name))


def answers_http(url: str, timeout: float = 2.0) -> bool:
    """Whether GET `url` returns any HTTP response (no proxy)."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=timeout) as response:
            return 200 <= response.status < 500
    except urllib.error.HTTPError as err:
        return err.code < 500
    except (urllib.error.URLError, OSError):
        return False


def wait_until_serving(server: AppServer, timeout: float = 120.0, poll: float = 0.05) -> float:
    """Seconds from now until the app answers HTTP; raises AppDidNotStart if it exits or `timeout` passes."""
    start = time.perf_counter()
    while True:
        if server.process.poll() is not None:
            raise AppDidNotStart(f"the app exited with code {server.process.returncode} before serving; "
                                 f"end of its log:\n{server.log_tail()}")
        if answers_http(server.url):
            return time.perf_counter() - start
        if time.perf_counter() - start > timeout:
            raise AppDidNotStart(f"the app did not answer on {server.url} within {timeout:.0f} s; "
                                 f"end of its log:\n{server.log_tail()}")
        time.sleep(poll)


def stop_app(server: AppServer, grace: float = 10.0) -> None:
    """SIGTERM the app's process group, SIGKILL it after `grace` seconds; remove its log file."""
    process = server.process
    if process.poll() is None:
        for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(process.pid, sig)  # the group start_app created, i.e. only our own processes
            except ProcessLookupError:
                break
            try:
                process.wait(timeout=wait)
                break
            except subprocess.TimeoutExpired:
                continue
    server.log_path.unlink(missing_ok=True)


@contextmanager
def running_app(command: Sequence[str] = APP_COMMAND, port: int | None = None,
                checkpoints: str | Path | None = None, timeout: float = 120.0,
                extra_env: Mapping[str, str] | None = None) -> Iterator[AppServer]:
    """Start the app, wait until it serves (AppDidNotStart otherwise), yield it, and always stop it."""
    server = start_app(command, port, checkpoints, extra_env)
    try:
        wait_until_serving(server, timeout)
        yield server
    finally:
        stop_app(server)
