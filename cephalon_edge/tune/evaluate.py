"""Accuracy, exit mix and latency of a package on a labelled dataset, through the router."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import numpy as np

from cephalon_edge.device.data import Dataset, load_dataset
from cephalon_edge.device.data_checks import Contract
from cephalon_edge.device.program import exit_rates
from cephalon_edge.device.router import Router
from cephalon_edge.device.usage import routing_usage


def evaluate_router(router: Router, data: Dataset, thresholds: float | Mapping[str, float] | None = None,
                    batch_size: int = 1) -> dict[str, Any]:
    """Route every sample with the modalities it holds (batch 1 by default: per-sample latency
    as a device sees it)."""
    correct, exits, latency, gates, experts = 0, [], [], [], []
    for part in data.by_own_mix():
        for start in range(0, len(part), batch_size):
            sl = slice(start, start + batch_size)
            pred = router.predict({k: v[sl] for k, v in part.inputs.items()}, thresholds=thresholds)
            correct += int((pred.predicted == part.labels[sl]).sum())
            exits.append(pred.exit_index)
            latency.extend((pred.latency_us / 1000).tolist())
            gates.append(pred.gates)
            experts.append(pred.experts)
    lat = np.asarray(latency)
    return {
        "dataset": data.name, "samples": len(data), "accuracy": correct / max(1, len(data)),
        "exit_rates": exit_rates(router.exit_names, np.concatenate(exits)),
        "mean_ms": float(lat.mean()), "p50_ms": float(np.percentile(lat, 50)),
        "p90_ms": float(np.percentile(lat, 90)), "p99_ms": float(np.percentile(lat, 99)),
        "routing_usage": routing_usage(router.program, np.concatenate(gates), np.concatenate(experts)),
    }


def evaluate_package(package: Path, dataset: str, thresholds: float | Mapping[str, float] | None = None,
                     runtime: str = "auto", threads: int | None = None) -> dict[str, Any]:
    with Router.open(package, runtime=runtime, threads=threads) as router:
        data = load_dataset(dataset, Contract.from_manifest(router.manifest))
        return evaluate_router(router, data, thresholds)
