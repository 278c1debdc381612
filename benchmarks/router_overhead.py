"""Router overhead: resnet50-exits at batch 1 on ONNX Runtime, the routed package forced to
full depth (every exit evaluated, none taken) vs static.onnx (the plain network, no exit
heads) at ONNX Runtime's default settings, as a user shipping the plain model runs it; the
sessions are timed in alternating blocks.

A third contender separates what the exit heads cost from what splitting costs: the package's
segment graphs chained into one ONNX model (each segment's hidden state feeds the next inside
the graph; every exit's logits and score are outputs) in one session at the same defaults as
static.onnx. No router can run every exit for less than that model does.

    .venv/bin/python benchmarks/router_overhead.py [--runs 40] [--repeats 3] [--package DIR]

Prints the ratios of medians per repeat and their median (#32's target: routed <= 1.03x), and
the per-hop router overhead in microseconds.
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


def one_session_model(manifest) -> bytes:
    """The package's fused segments (a chain: each takes the previous one's first output)
    merged into one ONNX model whose outputs are every exit's, the hidden states kept inside."""
    import onnx
    from onnx import compose

    segments = list(manifest.segments.values())
    models = [compose.add_prefix(onnx.load(str(manifest.member(s["file"]))), f"s{i}_")
              for i, s in enumerate(segments)]
    merged = models[0]
    for i, model in enumerate(models[1:], start=1):
        hidden, nxt = f"s{i - 1}_{segments[i - 1]['outputs'][0]}", f"s{i}_{segments[i]['inputs'][0]}"
        merged = compose.merge_models(merged, model, io_map=[(hidden, nxt)])
    exits = [o for o in merged.graph.output if o.name != f"s{len(segments) - 1}_{segments[-1]['outputs'][0]}"]
    del merged.graph.output[:]
    merged.graph.output.extend(exits)
    return merged.SerializeToString()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=3)
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
    chained = ort.InferenceSession(one_session_model(router.manifest), providers=["CPUExecutionProvider"])
    chained_input = chained.get_inputs()[0].name

    x = np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype(np.float32)
    feeds = {"image": x}
    contenders = {"routed": lambda: router.predict(feeds, thresholds=NEVER_EXIT),
                  "one session with the exit heads": lambda: chained.run(None, {chained_input: x}),
                  "static": lambda: plain.run(None, {static_input: x})}

    # alternating blocks: the default sessions' spinning workers would slow the next call
    ratios: dict[str, list[float]] = {"routed": [], "one session with the exit heads": []}
    print(f"resnet50-exits, batch 1, onnxruntime, {args.threads} threads, {args.runs} interleaved runs per repeat")
    for repeat in range(args.repeats):
        samples = interleaved(contenders, args.runs, args.warmup, block=5)
        ms = {name: median(t) / 1000 for name, t in samples.items()}
        for name in ratios:
            ratios[name].append(ms[name] / ms["static"])
        print(f"  repeat {repeat + 1}: static.onnx (plain, ORT defaults) {ms['static']:.2f} ms; routed (full depth) "
              f"{ms['routed']:.2f} ms ({ratios['routed'][-1]:.3f}x); one session with the exit heads "
              f"{ms['one session with the exit heads']:.2f} ms ({ratios['one session with the exit heads'][-1]:.3f}x)")
    for name, r in ratios.items():
        print(f"  {name} / static, median of {args.repeats}: {median(r):.3f}" + ("  (target <= 1.03)" if name == "routed" else ""))

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

    print(f"  router overhead per hop (outside segment runs): {per_hop_us:.1f} us")
    print(f"  router interpreter alone (null runtime): {interpreter_us / hops:.1f} us per hop, "
          f"{interpreter_us:.1f} us per predict")
    router.close()


if __name__ == "__main__":
    main()
