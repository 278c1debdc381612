"""Dynamic speedup: calibrated cephalon packages vs the static model exported the plain way.

For digits-exits and mnist1d-moe: train (zoo), export to ONNX with --with-static, calibrate
on the val split (--max-drop 0.01), then on the test split at batch 1, side by side in one
run: the routed package vs static.onnx (same runtime and settings, interleaved per sample),
plus the same static model converted whole by litert-torch and run by LiteRT (XNNPACK).

    .venv/bin/python benchmarks/dynamic_speedup.py [--workdir DIR] [--models digits-exits,mnist1d-moe]

Target: >= 2.5x faster at <= 1.0 point accuracy loss on digits-exits.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import zoo_package  # noqa: E402

DATASETS = {"digits-exits": "digits", "mnist1d-moe": "mnist1d"}


def tflite_static_ms(pkg: Path, ckpt: Path, test, threads: int, rounds: int) -> float:
    """Mean batch-1 latency of the static model converted whole by litert-torch."""
    import litert_torch
    import torch
    from ai_edge_litert.interpreter import Interpreter

    from cephalon_edge.build import checkpoint
    from cephalon_edge.build.segments import StaticModel

    path = pkg.parent / f"{pkg.name}-static.tflite"
    if not path.exists():
        net = checkpoint.load(ckpt)
        x = torch.from_numpy(next(iter(test.inputs.values()))[:1])
        litert_torch.convert(StaticModel(net).eval(), (x,)).export(str(path))
    runner = Interpreter(model_path=str(path), num_threads=threads).get_signature_runner()
    xs = next(iter(test.inputs.values()))
    for i in range(20):
        runner(args_0=xs[i:i + 1])
    times = []
    for _ in range(rounds):
        for i in range(len(xs)):
            t0 = time.perf_counter_ns()
            runner(args_0=xs[i:i + 1])
            times.append((time.perf_counter_ns() - t0) / 1e6)
    return statistics.fmean(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--models", default="digits-exits,mnist1d-moe")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    from cephalon_edge.device.data import builtin
    from cephalon_edge.tune.calibrate import CalibrateSpec, calibrate_package

    rows = []
    for name in args.models.split(","):
        pkg = zoo_package(name, args.workdir, with_static=True)
        dataset = DATASETS[name]
        report = calibrate_package(pkg, CalibrateSpec(data=f"{dataset}:val", max_drop=0.01, threads=args.threads,
                                                      rounds=args.rounds, remeasure=True))
        t = report["test"]
        lite = tflite_static_ms(pkg, pkg.parent / f"{name}.cephalon", builtin(dataset, "test"), args.threads, args.rounds)
        rows.append((name, t, lite, report["thresholds"]))

    print(f"batch 1, {args.threads} threads, test split, {args.rounds} interleaved rounds; thresholds from the val split")
    header = (f"{'model':14} {'routed acc':>10} {'static acc':>10} {'drop (pt)':>9} {'routed ms':>9} "
              f"{'static.onnx ms':>14} {'speedup':>7} {'FLOPs x':>7} {'static.tflite ms':>16} {'vs tflite':>9}")
    print(header)
    for name, t, lite, _ in rows:
        print(f"{name:14} {100 * t['accuracy']:9.2f}% {100 * t['full_depth_accuracy']:9.2f}% "
              f"{100 * t['accuracy_drop']:9.2f} {t['mean_ms']:9.3f} {t['static_mean_ms']:14.3f} "
              f"{t['speedup']:6.2f}x {t['flops_speedup']:6.2f}x {lite:16.3f} {lite / t['mean_ms']:8.2f}x")
    for name, t, _, thresholds in rows:
        rates = ", ".join(f"{k} {100 * v:.1f}%" for k, v in t["exit_rates"].items())
        print(f"{name}: exits {rates}; thresholds {thresholds}")


if __name__ == "__main__":
    main()
