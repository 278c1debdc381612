"""int8 when routed: the calibrated int8 and fp32 packages of digits-exits (TFLite, or ONNX with
``--target onnx``), end to end at their calibrated thresholds, and where each microsecond of a
first-exit prediction goes.

Both packages are exported from the same zoo checkpoint (int8: ai-edge-quantizer static int8,
calibrated per signature, float32 at every signature's boundary) and calibrated on the val split
at ``--max-drop``. End to end: every test sample at batch 1 through each router, alternating
blocks of 16 (``tune.timing.alternating_blocks``), ``--rounds`` passes. Breakdown: for one
test sample that leaves at exit0, medians of 3000 calls of each layer, outermost first:
``Router.predict``; the runtime's ``run`` of the first segment (``SetTensor``, ``Invoke`` and a
``GetTensor`` per output on the interpreter); ``SetTensor`` + ``Invoke`` alone (the input
copied in and the kernels). LiteRT's signature runner, which ``run`` called until 2026-12-01,
is timed beside them for reference.

    .venv/bin/python benchmarks/int8_routed.py [--workdir DIR] [--rounds 3] [--max-drop 0.01] [--target onnx]

On ONNX Runtime the breakdown's inner layer is the session's own ``run`` of the first segment.

Target (#32): routed int8/fp32 time at calibrated thresholds <= 0.70.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import workdir_of, zoo_checkpoint  # noqa: E402


def median_us(fn, calls: int = 3000, warmup: int = 300) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(calls):
        t0 = time.perf_counter_ns()
        fn()
        times.append(time.perf_counter_ns() - t0)
    return float(np.median(times)) / 1e3


def breakdown(router, x: np.ndarray) -> dict[str, float]:
    """Median us of each layer of a first-exit prediction of ``x`` (one sample)."""
    key = next(iter(router.inputs))
    segment = next(iter(router.manifest.segments))
    runtime = router.runtime
    if runtime.name == "onnxruntime":
        session = runtime._sessions[segment]
        feeds = {session.get_inputs()[0].name: x}
        return {"predict": median_us(lambda: router.predict({key: x})),
                "runtime.run": median_us(lambda: runtime.run(segment, (x,))),
                "session.run": median_us(lambda: session.run(None, feeds))}
    signature = runtime._signatures[segment]
    runner = signature.runner
    feeds = {signature.input_name: x}
    wrapper, subgraph = runner._interpreter_wrapper, runner._subgraph_index
    index = runner._inputs[signature.input_name]

    def kernels() -> None:  # the input copied in, the kernels run: what no Python layer adds
        wrapper.SetTensor(index, x, subgraph)
        wrapper.Invoke(subgraph)

    return {"predict": median_us(lambda: router.predict({key: x})),
            "runtime.run": median_us(lambda: runtime.run(segment, (x,))),
            "SetTensor+Invoke": median_us(kernels),
            "(signature runner)": median_us(lambda: runner(**feeds))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--max-drop", type=float, default=0.01)
    parser.add_argument("--target", choices=("tflite", "onnx"), default="tflite")
    args = parser.parse_args()

    from cephalon_edge.device.data import builtin
    from cephalon_edge.device.router import Router
    from cephalon_edge.toolchain.artifacts import ExportSpec
    from cephalon_edge.toolchain.export import export_package
    from cephalon_edge.tune.calibrate import CalibrateSpec, calibrate_package
    from cephalon_edge.tune.timing import alternating_blocks

    workdir = workdir_of(args.workdir, "cephalon-int8-")
    ckpt = zoo_checkpoint("digits-exits", workdir)
    test = builtin("digits", "test")
    xs, labels = test.inputs["image"], test.labels
    routers = {}
    for mode in ("none", "int8"):
        pkg = workdir / f"digits-exits-{args.target}-{mode}"
        if not pkg.exists():
            export_package(ckpt, pkg, ExportSpec(args.target, quantize=mode))
        calibrate_package(pkg, CalibrateSpec(data="digits:val", max_drop=args.max_drop))
        routers["fp32" if mode == "none" else "int8"] = Router.open(pkg)
    runs = {name: (lambda i, r=r: r.predict({"image": xs[i:i + 1]})) for name, r in routers.items()}
    for i in range(32):
        for run in runs.values():
            run(i)
    times, results = alternating_blocks(len(xs), runs, rounds=args.rounds)
    print(f"digits-exits {args.target}, test split ({len(xs)} samples), batch 1, calibrated at --max-drop {args.max_drop}, "
          f"{args.rounds} rounds")
    for name in routers:
        pred = np.asarray([p.predicted[0] for p in results[name]])
        exits = np.asarray([p.exit_index[0] for p in results[name]])
        print(f"  {name}: mean {np.mean(times[name]) * 1000:.1f} us, p50 {np.median(times[name]) * 1000:.1f} us, "
              f"accuracy {100 * np.mean(pred == labels):.2f}%, exit0 {100 * np.mean(exits == 0):.1f}%")
    print(f"  routed int8/fp32: mean {np.mean(times['int8']) / np.mean(times['fp32']):.2f}, "
          f"p50 {np.median(times['int8']) / np.median(times['fp32']):.2f}")
    both = [i for i in range(len(xs)) if all(results[n][i].exit_index[0] == 0 for n in routers)]
    x = xs[both[0]:both[0] + 1]
    rows = {name: breakdown(r, x) for name, r in routers.items()}
    print("  one first-exit prediction, median us (each layer includes the ones below it):")
    print(f"    {'layer':18} {'fp32':>7} {'int8':>7} {'int8/fp32':>9}")
    for layer in rows["fp32"]:
        a, b = rows["fp32"][layer], rows["int8"][layer]
        print(f"    {layer:18} {a:7.1f} {b:7.1f} {b / a:9.2f}")
    for name, row in rows.items():
        inner = "SetTensor+Invoke" if "SetTensor+Invoke" in row else "session.run"
        print(f"    {name}: kernels {row[inner]:.1f}, "
              f"runtime's own (outputs copied out, the call) {row['runtime.run'] - row[inner]:.1f}, "
              f"router's own {row['predict'] - row['runtime.run']:.1f}" + (
                  f"; the signature runner would add {row['(signature runner)'] - row['runtime.run']:.1f}"
                  if "(signature runner)" in row else ""))


if __name__ == "__main__":
    main()
