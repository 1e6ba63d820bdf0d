"""Measured speed and robustness of agekit on a CPU Space (2 vCPUs).

    python -m bench.speed       latency / throughput / detection / end-to-end / cold start / evaluation
    python -m bench.load_test   concurrent gradio_client load on a running app.py
    python -m bench.smoke_app   start app.py, one prediction over HTTP, exit 0 or 1 (used by CI)
"""
