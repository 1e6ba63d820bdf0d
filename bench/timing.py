"""Repeated timing of a callable and the order statistics reported for it (median, p90)."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) with linear interpolation between order statistics (numpy's default)."""
    if not values:
        raise ValueError("percentile of no values: time at least one run")
    if not 0.0 <= q <= 100.0:
        raise ValueError(f"percentile q must be within 0..100, got {q}")
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100.0
    lower = math.floor(position)
    upper = min(lower + 1, len(ordered) - 1)
    return ordered[lower] + (ordered[upper] - ordered[lower]) * (position - lower)


def median(values: Sequence[float]) -> float:
    """The 50th percentile (mean of the two middle values for an even count)."""
    return percentile(values, 50.0)


@dataclass(frozen=True)
class Timing:
    """Wall-clock durations of repeated runs of one thing, seconds."""

    seconds: tuple[float, ...]

    @property
    def runs(self) -> int:
        return len(self.seconds)

    @property
    def median_ms(self) -> float:
        return median(self.seconds) * 1000.0

    @property
    def p90_ms(self) -> float:
        return percentile(self.seconds, 90.0) * 1000.0

    @property
    def max_ms(self) -> float:
        return max(self.seconds) * 1000.0


def time_calls(fn: Callable[[], object], repeats: int, warmup: int = 1) -> Timing:
    """Call `fn` `warmup` times untimed, then `repeats` times, each timed with perf_counter (seconds)."""
    if repeats < 1:
        raise ValueError(f"repeats must be at least 1, got {repeats}")
    for _ in range(warmup):
        fn()
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        seconds.append(time.perf_counter() - start)
    return Timing(tuple(seconds))
