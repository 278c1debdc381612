"""Throughput at a batch size: the routed package against its static model, both fed the same
batches of real samples (``bench --batch N``). The router splits each batch by path (samples
that exit leave it, gates and experts run on the samples they chose), so later segments run on
smaller batches; ONNX segments take any batch size as exported, LiteRT's and ExecuTorch's run
their batch-1 segments sample by sample (their converters lower at batch 1)."""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from cephalon_edge.device.data import Dataset
from cephalon_edge.device.program import exit_rates
from cephalon_edge.device.router import Router
from cephalon_edge.errors import UsageError
from cephalon_edge.tune.timing import alternating_blocks, stats_ms

BATCH_BLOCK = 4  # batches per block when routed and static alternate


def batch_throughput(router: Router, data: Dataset, static: Callable[..., Any] | None, batch: int,
                     rounds: int = 3, warmup: int = 1) -> dict[str, Any]:
    """Samples per second at ``batch`` over the data's full batches (the remainder is left out,
    so every call has the same size), routed and static timed in alternating blocks of batches,
    ``rounds`` passes; the routed predictions of the first pass give accuracy and exit rates."""
    batches = len(data) // batch
    if batches < 1:
        raise UsageError(f"batch {batch} is larger than the {len(data)} samples at hand")
    order = list(router.inputs)

    def chunk(b: int) -> dict[str, np.ndarray]:
        return {k: v[b * batch:(b + 1) * batch] for k, v in data.inputs.items()}

    chunks = [chunk(b) for b in range(batches)]
    runners: dict[str, Callable[[int], Any]] = {"routed": lambda b: router.predict(chunks[b])}
    if static is not None:
        runners["static"] = lambda b: static(*(chunks[b][m] for m in order))
    for b in range(min(warmup, batches)):
        for run in runners.values():
            run(b)
    times, results = alternating_blocks(batches, runners, rounds=rounds, block=BATCH_BLOCK)
    preds = results["routed"]
    predicted = np.concatenate([p.predicted for p in preds])
    exits = np.concatenate([p.exit_index for p in preds])
    samples = batches * batch

    def summary(ms: np.ndarray) -> dict[str, Any]:
        return {**stats_ms(ms), "samples_per_s": batch * 1000.0 / float(np.mean(ms))}

    routed = summary(times["routed"])
    fixed = summary(times["static"]) if static is not None else None
    return {"batch": batch, "batches": batches, "samples": samples, "rounds": rounds, "dataset": data.name,
            "accuracy": float(np.mean(predicted == data.labels[:samples])),
            "exit_rates": exit_rates(router.exit_names, exits), "routed": routed, "static": fixed,
            "throughput_ratio": routed["samples_per_s"] / fixed["samples_per_s"] if fixed else None}
