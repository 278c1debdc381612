"""Timing segments and summarising latencies (shared by calibrate and bench)."""

from __future__ import annotations

import time
from typing import Any, Callable, Mapping, Sequence

import numpy as np


def stats_ms(times_ms: Sequence[float] | np.ndarray) -> dict[str, float]:
    t = np.asarray(times_ms, dtype=np.float64)
    return {"min_ms": float(t.min()), "p50_ms": float(np.percentile(t, 50)), "p90_ms": float(np.percentile(t, 90)),
            "p99_ms": float(np.percentile(t, 99)), "mean_ms": float(t.mean()), "std_ms": float(t.std())}


def segment_input(manifest: Any, name: str, seed: int = 0) -> np.ndarray:
    """A valid random batch-1 input of segment ``name``: token ids below the vocabulary for a
    segment starting at a text adapter, else normal noise."""
    rng = np.random.default_rng(seed)
    shape = (1, *manifest.segments[name]["shapes"]["inputs"][0])
    first = manifest.segment_parts(name)[0].name
    modality = first.partition(".")[2] if first.startswith("adapter.") else None
    vocab = manifest.inputs.get(modality, {}).get("vocab")
    if vocab is not None:
        return rng.integers(0, int(vocab), shape).astype(np.float32)
    return rng.standard_normal(shape).astype(np.float32)


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


def median_segment_ms(runtime: Any, manifest: Any, runs: int, warmup: int = 3) -> dict[str, float]:
    """Median batch-1 latency (ms) of every segment of ``manifest`` with an open runtime."""
    return {name: float(np.median(time_segment(runtime, name, segment_input(manifest, name), runs, warmup)))
            for name in manifest.segments}


BLOCK = 16  # samples per block when two sessions are timed against each other


def alternating_blocks(samples: int, runners: Mapping[str, Callable[[int], Any]], rounds: int = 1,
                       block: int = BLOCK, clock: Callable[[], int] = time.perf_counter_ns,
                       ) -> tuple[dict[str, np.ndarray], dict[str, list[Any]]]:
    """Batch-1 latency (ms) of every sample under every runner (``runner(i)`` runs sample i),
    timed in alternating blocks: ``block`` samples through one runner, the same samples
    through the next, and so on. Call by call, one session's spinning workers would steal the
    cores of the other's next call; each block starts with an untimed call, so the runner's
    own threads are awake and the previous runner's have gone idle. Returns per runner the
    times (rounds x samples, flattened) and the first round's results. ``clock``: nanoseconds
    (injectable, so the arithmetic is testable without the wall clock)."""
    times = {name: np.zeros((rounds, samples)) for name in runners}
    results: dict[str, list[Any]] = {name: [None] * samples for name in runners}
    for r in range(rounds):
        for start in range(0, samples, block):
            members = range(start, min(samples, start + block))
            for name, run in runners.items():
                run(members[0])
                for i in members:
                    t0 = clock()
                    out = run(i)
                    times[name][r, i] = (clock() - t0) / 1e6
                    if r == 0:
                        results[name][i] = out
    return {name: t.reshape(-1) for name, t in times.items()}, results


def router_call_overhead_ms(router: Any, inputs: Mapping[str, np.ndarray], thresholds: float, samples: int = 24) -> float:
    """The router's own cost per segment call (ms): batch-1 predictions at full depth minus the
    time spent inside the runtime, per call; the median over ``samples`` inputs. Expected
    latencies add it to every call, so an operating point is not priced at its segments alone."""
    n = min(samples, len(next(iter(inputs.values()))))
    per_call = []
    for i in range(n):
        sample = {k: v[i:i + 1] for k, v in inputs.items()}
        router.predict(sample, thresholds=thresholds)  # warm
        t0 = time.perf_counter_ns()
        pred = router.predict(sample, thresholds=thresholds)
        total_us = (time.perf_counter_ns() - t0) / 1e3
        per_call.append(max(0.0, total_us - sum(pred.segment_us.values())) / max(1, len(pred.segment_us)) / 1e3)
    return float(np.median(per_call)) if per_call else 0.0
