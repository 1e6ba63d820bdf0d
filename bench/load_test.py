"""Concurrent users on a running app: `python -m bench.load_test`.

    python -m bench.load_test [--clients 20] [--requests 10] [--port P] [--checkpoints DIR] [--image PATH]
                              [--settings app,1,2,4] [--timeout 900]

For each queue setting the app is started on 127.0.0.1 (a free port unless --port), `--clients` gradio_client
Clients each send `--requests` predictions, one after another, to the "predict" endpoint with a real photo,
and the server is stopped (always). Reported per setting: errors (wrong or failed answers; must be 0),
p50/p95/max latency of one request as a client sees it (upload + queue wait + work) and throughput.

Settings: "app" runs `python app.py` as shipped; "N" runs it with AGEKIT_CONCURRENCY=N (the queue's
default_concurrency_limit); "N/T" also sets AGEKIT_TORCH_THREADS=T (app.py's torch intra-op threads). The environment (AGEKIT_CHECKPOINTS, OMP_WAIT_POLICY, ...) is passed on to the
server; --checkpoints overrides AGEKIT_CHECKPOINTS. The clients run on the same machine as the server and share
its cores. Exit code 1 if any request failed.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.photos import ASTRONAUT
from bench.server import APP_COMMAND, LOCAL_ENV, AppDidNotStart, running_app
from bench.table import format_ms, markdown_table
from bench.timing import median, percentile

API_NAME = "/predict"  # agekit.ui.blocks: predict_button.click(..., api_name="predict")


@dataclass(frozen=True)
class QueueSetting:
    """How app.py is launched: as shipped, or with another queue concurrency / torch thread count."""

    label: str  # "app", "2", "2/1"
    concurrency: int | None  # None: app.py's own setting
    torch_threads: int | None = None  # AGEKIT_TORCH_THREADS for the server process (None: app.py's default)

    @classmethod
    def parse(cls, text: str) -> QueueSetting:
        """'app' | 'N' | 'N/T' → QueueSetting; ValueError with the accepted forms otherwise."""
        text = text.strip()
        if text == "app":
            return cls("app", None)
        concurrency, _, threads = text.partition("/")
        try:
            setting = cls(text, int(concurrency), int(threads) if threads else None)
        except ValueError:
            raise ValueError(f"queue setting {text!r} is not 'app', N or N/T (N concurrent requests, "
                             "T torch threads)") from None
        if setting.concurrency < 1 or (setting.torch_threads is not None and setting.torch_threads < 1):
            raise ValueError(f"queue setting {text!r}: concurrency and threads must be at least 1")
        return setting

    def environment(self) -> dict[str, str]:
        """The app.py environment variables this setting changes."""
        env = {} if self.concurrency is None else {"AGEKIT_CONCURRENCY": str(self.concurrency)}
        if self.torch_threads is not None:
            env["AGEKIT_TORCH_THREADS"] = str(self.torch_threads)
        return env


@dataclass
class RequestResult:
    """One prediction as a client saw it."""

    seconds: float  # submit → answer (or failure), s
    ok: bool
    error: str = ""


@dataclass
class LoadResult:
    """All requests of one queue setting."""

    setting: str
    clients: int
    requests: list[RequestResult] = field(default_factory=list)
    wall_seconds: float = 0.0  # first request → last answer, s

    @property
    def errors(self) -> int:
        return sum(not r.ok for r in self.requests)

    @property
    def ok_latencies(self) -> list[float]:
        return [r.seconds for r in self.requests if r.ok]

    @property
    def throughput(self) -> float:
        """Successful requests per second of wall time."""
        return len(self.ok_latencies) / self.wall_seconds if self.wall_seconds > 0 else 0.0

    def error_examples(self, limit: int = 3) -> list[str]:
        return sorted({r.error for r in self.requests if not r.ok})[:limit]


def check_answer(answer: Any) -> str:
    """'' if a predict answer has at least one face with a prediction of at least one model, else why not."""
    if not isinstance(answer, dict):
        return f"answer is a {type(answer).__name__}, not the predict JSON"
    faces = answer.get("faces") or []
    if not faces:
        return "no face in the answer"
    if not faces[0].get("predictions"):
        return "the first face has no model prediction"
    return ""


def client_session(url: str, image: Path, requests: int, deadline: float) -> list[RequestResult]:
    """One gradio_client Client sending `requests` predictions in a row; never raises."""
    from gradio_client import Client, handle_file

    results: list[RequestResult] = []
    start = time.perf_counter()
    try:
        client = Client(url, verbose=False, analytics_enabled=False, download_files=False)
    except Exception as exc:  # noqa: BLE001 — a failed connection is a result, not a crash
        return [RequestResult(time.perf_counter() - start, False, f"connect: {type(exc).__name__}: {exc}")] * requests
    try:
        for _ in range(requests):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                results.append(RequestResult(0.0, False, "not sent: the load test's time limit was reached"))
                continue
            start = time.perf_counter()
            try:
                answer = client.submit(handle_file(str(image)), api_name=API_NAME).result(timeout=remaining)
                problem = check_answer(answer)
            except Exception as exc:  # noqa: BLE001
                problem = f"{type(exc).__name__}: {str(exc)[:200]}"
            results.append(RequestResult(time.perf_counter() - start, not problem, problem))
    finally:
        client.close()
    return results


def drive(url: str, image: Path, clients: int, requests: int, time_limit: float, setting: str) -> LoadResult:
    """`clients` concurrent sessions of `requests` predictions each; stops sending after `time_limit` s."""
    deadline = time.monotonic() + time_limit
    result = LoadResult(setting, clients)
    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=clients, thread_name_prefix="load-client") as pool:
        futures = [pool.submit(client_session, url, image, requests, deadline) for _ in range(clients)]
        for future in futures:
            result.requests += future.result()
    result.wall_seconds = time.perf_counter() - start
    return result


def run_setting(setting: QueueSetting, args: argparse.Namespace) -> LoadResult:
    """Start the server for `setting`, drive it, always stop it."""
    with running_app(list(APP_COMMAND), port=args.port, checkpoints=args.checkpoints, timeout=args.start_timeout,
                     extra_env=setting.environment()) as server:
        print(f"[{setting.label}] serving at {server.url}; {args.clients} clients x {args.requests} requests",
              flush=True)
        return drive(server.url, args.image, args.clients, args.requests, args.timeout, setting.label)


RESULT_HEADERS = ("queue setting", "requests", "errors", "p50", "p95", "max", "throughput", "wall")


def result_row(result: LoadResult) -> list[str]:
    """One markdown-table row (RESULT_HEADERS) for a setting."""
    latencies = [s * 1000.0 for s in result.ok_latencies]
    stats = [format_ms(median(latencies)), format_ms(percentile(latencies, 95)), format_ms(max(latencies))] \
        if latencies else ["", "", ""]
    return [result.setting, str(len(result.requests)), str(result.errors), *stats,
            f"{result.throughput:.2f} req/s", f"{result.wall_seconds:.1f} s"]


def best_setting(results: list[LoadResult]) -> LoadResult | None:
    """The error-free setting with the highest throughput (ties: lower p95); None if every one had errors."""
    clean = [r for r in results if r.errors == 0 and r.ok_latencies]
    if not clean:
        return None
    return max(clean, key=lambda r: (round(r.throughput, 2), -percentile(r.ok_latencies, 95)))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.load_test", description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, default=20, help="concurrent gradio_client Clients")
    parser.add_argument("--requests", type=int, default=10, help="predictions per client, one after another")
    parser.add_argument("--port", type=int, default=None, help="server port (default: a free one)")
    parser.add_argument("--checkpoints", type=Path, default=None,
                        help="checkpoint folder (default: $AGEKIT_CHECKPOINTS, else app.py's ./checkpoints)")
    parser.add_argument("--image", type=Path, default=ASTRONAUT, help="photo sent with every request")
    parser.add_argument("--settings", default="app",
                        help="comma-separated queue settings: app, N (queue concurrency) or N/T (and T torch threads)")
    parser.add_argument("--timeout", type=float, default=900.0, help="time limit per setting for sending, s")
    parser.add_argument("--start-timeout", type=float, default=180.0, help="time limit for the app to start, s")
    args = parser.parse_args(argv)
    try:
        args.settings = [QueueSetting.parse(s) for s in args.settings.split(",") if s.strip()]
    except ValueError as err:
        parser.error(str(err))
    if args.clients < 1 or args.requests < 1:
        parser.error("--clients and --requests must be at least 1")
    if not args.image.is_file():
        parser.error(f"--image {args.image} does not exist")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ.update(LOCAL_ENV)  # gradio_client: no proxy for loopback, no analytics
    results: list[LoadResult] = []
    for setting in args.settings:
        try:
            result = run_setting(setting, args)
        except AppDidNotStart as err:
            print(f"[{setting.label}] {err}", file=sys.stderr)
            return 1
        results.append(result)
        print(markdown_table(RESULT_HEADERS, [result_row(result)]), flush=True)
        for example in result.error_examples():
            print(f"  error: {example}")
    print(f"\n## load test: {args.clients} clients x {args.requests} predictions each, image {args.image.name}, "
          f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')}, 1-min load average {os.getloadavg()[0]:.1f}")
    print(markdown_table(RESULT_HEADERS, [result_row(r) for r in results]))
    best = best_setting(results)
    print(f"best queue setting: {best.setting}" if best else "no setting served every request without errors")
    return 1 if any(r.errors for r in results) else 0


if __name__ == "__main__":
    raise SystemExit(main())
