"""Router overhead: resnet50-exits at batch 1 on ONNX Runtime, the routed package forced to
full depth (every exit evaluated, none taken) vs static.onnx (the plain network, no exit
heads) at ONNX Runtime's default settings, as a user shipping the plain model runs it; the two
sessions are timed in alternating blocks.

    .venv/bin/python benchmarks/router_overhead.py [--runs 40] [--package DIR]

Prints the ratio of medians (target <= 1.05) and the per-hop router overhead in microseconds.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import interleaved, median, zoo_package  # noqa: E402


class NullRuntime:
    """Returns preallocated outputs instantly: what remains is the router's own work."""

    name = "null"

    def __init__(self, manifest) -> None:
        self.outputs = {n: [np.zeros((1, *shape), np.float32) for shape in s["shapes"]["outputs"]]
                        for n, s in manifest.segments.items()}

    def run(self, segment, inputs):
        return self.outputs[segment]

    def close(self) -> None:
        pass


def null_runtime_cost(router, feeds, calls: int = 2000) -> float:
    from cephalon_edge.device.program import NEVER_EXIT
    from cephalon_edge.device.router import Router

    null = Router(router.manifest, NullRuntime(router.manifest))
    for _ in range(100):
        null.predict(feeds, thresholds=NEVER_EXIT)
    t0 = time.perf_counter_ns()
    for _ in range(calls):
        null.predict(feeds, thresholds=NEVER_EXIT)
    return (time.perf_counter_ns() - t0) / 1000 / calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--package", type=Path, help="an existing resnet50-exits ONNX package with static.onnx")
    args = parser.parse_args()

    import onnxruntime as ort

    from cephalon_edge.device.program import NEVER_EXIT
    from cephalon_edge.device.router import Router

    pkg = args.package or zoo_package("resnet50-exits", with_static=True)
    router = Router.open(pkg, threads=args.threads)
    # the baseline as a user runs it: ONNX Runtime's default session options
    plain = ort.InferenceSession(str(router.manifest.static_file()), providers=["CPUExecutionProvider"])
    static_input = plain.get_inputs()[0].name

    x = np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype(np.float32)
    feeds = {"image": x}
    routed = lambda: router.predict(feeds, thresholds=NEVER_EXIT)  # noqa: E731
    default = lambda: plain.run(None, {static_input: x})  # noqa: E731

    # alternating blocks: the default session's spinning workers would slow the next call
    samples = interleaved({"routed": routed, "static": default}, args.runs, args.warmup, block=5)
    routed_ms, static_ms = median(samples["routed"]) / 1000, median(samples["static"]) / 1000

    # per-hop overhead: the time each predict() spends outside its segment runs, per hop
    outside = []
    for _ in range(args.runs):
        t0 = time.perf_counter_ns()
        pred = router.predict(feeds, thresholds=NEVER_EXIT)
        total_us = (time.perf_counter_ns() - t0) / 1000
        outside.append((total_us - sum(pred.segment_us.values())) / len(pred.segment_us))
    hops = len(pred.segment_us)
    per_hop_us = median(outside)
    interpreter_us = null_runtime_cost(router, feeds)

    print(f"resnet50-exits, batch 1, onnxruntime, {args.threads} threads, {args.runs} interleaved runs")
    print(f"  routed (full depth, {hops} segments): median {routed_ms:.2f} ms")
    print(f"  static.onnx (the plain network), onnxruntime defaults: median {static_ms:.2f} ms")
    print(f"  ratio routed/static: {routed_ms / static_ms:.3f}  (target <= 1.05)")
    print(f"  router overhead per hop (outside segment runs): {per_hop_us:.1f} us")
    print(f"  router interpreter alone (null runtime): {interpreter_us / hops:.1f} us per hop, "
          f"{interpreter_us:.1f} us per predict")
    router.close()


if __name__ == "__main__":
    main()
