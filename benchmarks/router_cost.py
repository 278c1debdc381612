"""The router's own cost per predict: a runtime that returns preallocated outputs instantly,
so what is timed is the router alone (input checks, the program walk, bookkeeping, the
result). Batch 1, every sample leaving at the first exit and every sample going to full
depth; the median of blocks of calls.

    .venv/bin/python benchmarks/router_cost.py PKG [--calls 20000]

e.g. ``benchmarks/router_cost.py /tmp/zoo/digits-exits-onnx`` (#32 asks <= 15 us per predict).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from router_overhead import NullRuntime  # noqa: E402


class ConfidentRuntime(NullRuntime):
    """Instant outputs whose per-sample scalars (exit scores) are 1: every sample leaves at
    the first exit at the package's own thresholds."""

    def __init__(self, manifest) -> None:
        super().__init__(manifest)
        self.outputs = {n: [np.ones_like(o) if o.ndim == 1 else o for o in outs] for n, outs in self.outputs.items()}


def per_predict_us(predict, calls: int, block: int = 500) -> float:
    for _ in range(block):
        predict()
    medians = []
    for _ in range(max(1, calls // block)):
        t0 = time.perf_counter_ns()
        for _ in range(block):
            predict()
        medians.append((time.perf_counter_ns() - t0) / 1000 / block)
    return statistics.median(medians)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("package", type=Path)
    parser.add_argument("--calls", type=int, default=20000)
    args = parser.parse_args()
    from cephalon_edge.device.manifest import Manifest
    from cephalon_edge.device.program import NEVER_EXIT
    from cephalon_edge.device.router import Router

    manifest = Manifest.open(args.package, verify=False)
    router = Router(manifest, ConfidentRuntime(manifest))
    rng = np.random.default_rng(0)
    feeds = {m: rng.standard_normal((1, *spec["shape"])).astype(np.float32) for m, spec in manifest.inputs.items()}
    first = router.predict(feeds)  # at the package's thresholds
    full = router.predict(feeds, thresholds=NEVER_EXIT)
    print(f"{args.package.name}: router alone (null runtime), batch 1, median of blocks of 500 calls")
    for label, thresholds, pred in (("first exit", None, first), ("full depth", NEVER_EXIT, full)):
        us = per_predict_us(lambda: router.predict(feeds, thresholds=thresholds), args.calls)
        print(f"  {label}: {us:.1f} us per predict ({len(pred.segment_us)} segment calls, "
              f"exit {pred.exits[0]})")


if __name__ == "__main__":
    main()
