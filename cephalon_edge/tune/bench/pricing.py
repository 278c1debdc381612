"""Expected end-to-end latency on a device from its own per-segment latencies: the routes
the same package takes on real data (measured on the host), priced segment by segment.
One function for Android, iOS and the re-pricing of a variants package's operating points."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from cephalon_edge.device.manifest import Manifest
from cephalon_edge.device.program import exit_rates

RESAMPLES = 20_000


def expected_latency(per_sample_ms: np.ndarray, per_sample_var: np.ndarray, seed: int = 0) -> dict[str, float]:
    """Resample: a random data sample's path, each segment drawn around its device mean."""
    rng = np.random.default_rng(seed)
    pick = rng.integers(0, len(per_sample_ms), RESAMPLES)
    draws = np.clip(rng.normal(per_sample_ms[pick], np.sqrt(per_sample_var[pick])), 0, None)
    return {"mean_ms": float(per_sample_ms.mean()), "p50_ms": float(np.percentile(draws, 50)),
            "p90_ms": float(np.percentile(draws, 90)), "p99_ms": float(np.percentile(draws, 99))}


def price_on_device(manifest: Manifest, pred: Any, segments: Sequence[Mapping[str, Any]],
                    modalities: Sequence[str]) -> dict[str, Any]:
    """``pred``: the router's prediction on the data (its gates, experts and exits);
    ``segments``: the device's report per segment (``name``, ``mean_ms``, ``std_ms``).
    Returns the expected latency (mean and resampled percentiles) and the exit mix."""
    mean = manifest.part_costs({s["name"]: s["mean_ms"] for s in segments})
    var = manifest.part_costs({s["name"]: s.get("std_ms", 0.0) ** 2 for s in segments})
    program = manifest.program
    per_sample = program.taken_costs(mean, pred.gates, pred.experts, pred.exit_index, modalities)
    per_var = program.taken_costs(var, pred.gates, pred.experts, pred.exit_index, modalities)
    return {**expected_latency(per_sample, per_var), "exit_rates": exit_rates(program.exit_names, pred.exit_index),
            "samples": int(len(pred.exit_index))}
