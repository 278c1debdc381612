"""Timing segments and summarising latencies (shared by calibrate and bench)."""

from __future__ import annotations

import time
from typing import Any, Sequence

import numpy as np


def stats_ms(times_ms: Sequence[float] | np.ndarray) -> dict[str, float]:
    t = np.asarray(times_ms, dtype=np.float64)
    return {"min_ms": float(t.min()), "p50_ms": float(np.percentile(t, 50)), "p90_ms": float(np.percentile(t, 90)),
            "p99_ms": float(np.percentile(t, 99)), "mean_ms": float(t.mean()), "std_ms": float(t.std())}


def segment_input(segment: dict[str, Any], seed: int = 0) -> np.ndarray:
    """A random batch-1 input of a segment, from its manifest entry."""
    return np.random.default_rng(seed).standard_normal((1, *segment["shapes"]["inputs"][0])).astype(np.float32)


def time_segment(runtime: Any, name: str, x: np.ndarray, runs: int, warmup: int) -> list[float]:
    """``runs`` timed calls (ms) of one segment after ``warmup`` untimed ones."""
    for _ in range(warmup):
        runtime.run(name, (x,))
    times = []
    for _ in range(runs):
        t0 = time.perf_counter_ns()
        runtime.run(name, (x,))
        times.append((time.perf_counter_ns() - t0) / 1e6)
    return times


def median_segment_ms(runtime: Any, segments: dict[str, dict[str, Any]], runs: int, warmup: int = 3) -> dict[str, float]:
    """Median batch-1 latency (ms) of every segment with an open runtime."""
    return {name: float(np.median(time_segment(runtime, name, segment_input(seg), runs, warmup)))
            for name, seg in segments.items()}
