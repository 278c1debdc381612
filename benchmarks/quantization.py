"""Quantization on LiteRT: int8 vs fp32 TFLite packages of digits-exits and resnet50-exits,
side by side in one run on this CPU.

    .venv/bin/python benchmarks/quantization.py [--workdir DIR] [--runs 20]

Prints the size ratio, the full-depth latency ratio (routed at full depth and the static
model, batch 1, interleaved) and the test accuracy of each. Targets: int8 >= 3.5x smaller
than fp32 on resnet50-exits and never slower; <= 0.5 points accuracy loss on digits-exits.
This CPU has AVX2 but no VNNI: int8 is not expected to be faster here.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import interleaved, workdir_of, zoo_checkpoint  # noqa: E402


def export(ckpt: Path, out: Path, mode: str) -> dict:
    from cephalon_edge.toolchain.artifacts import ExportSpec
    from cephalon_edge.toolchain.export import export_package

    if out.exists():
        import json
        return {"size_bytes": sum({s["file"]: s["size_bytes"] for s in json.loads((out / "manifest.json").read_text())["segments"]}.values())}
    return export_package(ckpt, out, ExportSpec("tflite", quantize=mode, with_static=True))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    workdir = workdir_of(args.workdir, "cephalon-quant-")

    from cephalon_edge.device.data import builtin
    from cephalon_edge.device.program import NEVER_EXIT
    from cephalon_edge.device.router import Router

    rows = []
    for name, dataset in (("digits-exits", "digits"), ("resnet50-exits", None)):
        ckpt = zoo_checkpoint(name, workdir)
        sizes, routers, statics = {}, {}, {}
        for mode in ("none", "int8"):
            pkg = workdir / f"{name}-tflite-{mode}"
            sizes[mode] = export(ckpt, pkg, mode)["size_bytes"]
            routers[mode] = Router.open(pkg, threads=args.threads)
            statics[mode] = routers[mode].runtime.static_runner()
        shape = next(iter(routers["none"].inputs.values()))["shape"]
        x = np.random.default_rng(0).standard_normal((1, *shape)).astype(np.float32)
        modality = next(iter(routers["none"].inputs))
        never = NEVER_EXIT
        samples = interleaved({
            "routed fp32": lambda: routers["none"].predict({modality: x}, thresholds=never),
            "routed int8": lambda: routers["int8"].predict({modality: x}, thresholds=never),
            "static fp32": lambda: statics["none"](x),
            "static int8": lambda: statics["int8"](x),
        }, args.runs, warmup=3)
        med = {k: statistics.median(v) / 1000 for k, v in samples.items()}
        acc = {}
        if dataset:
            test = builtin(dataset, "test")
            for mode, router in routers.items():
                pred = router.predict(test.inputs, thresholds=never)
                acc[mode] = float((pred.predicted == test.labels).mean())
        rows.append((name, sizes, med, acc))

    print(f"LiteRT (XNNPACK), batch 1, {args.threads} threads, {args.runs} interleaved runs, full depth")
    for name, sizes, med, acc in rows:
        print(f"{name}:")
        print(f"  size fp32 {sizes['none'] / 1e6:.2f} MB, int8 {sizes['int8'] / 1e6:.2f} MB: "
              f"{sizes['none'] / sizes['int8']:.2f}x smaller")
        print(f"  routed full depth: fp32 {med['routed fp32']:.3f} ms, int8 {med['routed int8']:.3f} ms, "
              f"ratio int8/fp32 {med['routed int8'] / med['routed fp32']:.2f}")
        print(f"  static model:      fp32 {med['static fp32']:.3f} ms, int8 {med['static int8']:.3f} ms, "
              f"ratio int8/fp32 {med['static int8'] / med['static fp32']:.2f}")
        if acc:
            print(f"  test accuracy (full depth): fp32 {100 * acc['none']:.2f}%, int8 {100 * acc['int8']:.2f}% "
                  f"({100 * (acc['none'] - acc['int8']):+.2f} points lost)")


if __name__ == "__main__":
    main()
