"""Soak: 20k routed inferences on an ONNX and a TFLite package of digits-exits (batch 1, real
test digits in a loop): RSS growth after warm-up (target < 5 MB) and latency drift between
the first and the last thousand (target < 10%).

    .venv/bin/python benchmarks/soak.py [--workdir DIR] [--inferences 20000]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import workdir_of, zoo_checkpoint  # noqa: E402


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--inferences", type=int, default=20_000)
    parser.add_argument("--warmup", type=int, default=1_000)
    args = parser.parse_args()

    from cephalon_edge.toolchain.artifacts import ExportSpec
    from cephalon_edge.toolchain.export import export_package
    from cephalon_edge.device.data import builtin
    from cephalon_edge.device.router import Router

    workdir = workdir_of(args.workdir, "cephalon-soak-")
    ckpt = zoo_checkpoint("digits-exits", workdir)
    test = builtin("digits", "test")
    xs = test.inputs["image"]
    print(f"{args.inferences} routed inferences per package, batch 1, after {args.warmup} warm-up")
    for target in ("onnx", "tflite"):
        pkg = workdir / f"soak-{target}"
        if not pkg.exists():
            export_package(ckpt, pkg, ExportSpec(target, verify=False))
        with Router.open(pkg, threads=2) as router:
            for i in range(args.warmup):
                router.predict({"image": xs[i % len(xs)]})
            rss0 = rss_bytes()
            times = []
            for i in range(args.inferences):
                t0 = time.perf_counter_ns()
                router.predict({"image": xs[i % len(xs)]})
                times.append((time.perf_counter_ns() - t0) / 1e6)
            growth = rss_bytes() - rss0
        first, last = statistics.median(times[:1000]), statistics.median(times[-1000:])
        drift = (last - first) / first
        chunks = [statistics.median(times[k:k + 1000]) for k in range(0, len(times), 1000)]
        print(f"  {target:6}: RSS growth {growth / 1e6:+.2f} MB (target < 5 MB); median latency first 1000 "
              f"{first:.4f} ms, last 1000 {last:.4f} ms, drift {100 * drift:+.1f}% (target < 10%); "
              f"medians of every 1000: {min(chunks):.4f}..{max(chunks):.4f} ms")


if __name__ == "__main__":
    main()
