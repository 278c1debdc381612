"""Width variants: the 0.5 variant of digits-exits against the full one, in one package.

digits-exits (the zoo model) gets widths 1.0/0.5 with ``compress --widths`` (the narrow one
pruned from the full one and distilled from it for ``--epochs``), is exported to ONNX and
TFLite as one variants package each and calibrated (operating-point table). Measured, per
target, on the test split at batch 1, in alternating blocks of 16 samples:

- full depth (every sample to the final exit, no exit taken) of w1 and of w0.5: the speed the
  narrow variant buys and the accuracy it costs;
- every operating point of the table (the router's menu), and which the router picks at
  budgets spanning it;
- the package's size against exporting the full model alone, and the narrow variant's own
  weight bytes (the growth may not exceed them by more than the graphs' overhead).

    .venv/bin/python benchmarks/widths.py [--workdir DIR] [--targets onnx,tflite] [--epochs 10]

Target (issue 19): w0.5 full depth >= 1.4x faster than w1 full depth at <= 1 point.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import workdir_of, zoo_checkpoint  # noqa: E402


def dir_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


def main() -> None:
    from cephalon_edge.toolchain.artifacts import ExportSpec
    from cephalon_edge.toolchain.compress.spec import CompressSpec
    from cephalon_edge.toolchain.compress.workflow import compress_checkpoint
    from cephalon_edge.toolchain.export import export_package
    from cephalon_edge.device.data import builtin
    from cephalon_edge.device.program import NEVER_EXIT
    from cephalon_edge.device.variants import AdaptiveRouter, VariantTable, choose_point
    from cephalon_edge.tune.calibrate import CalibrateSpec
    from cephalon_edge.tune.timing import alternating_blocks, stats_ms
    from cephalon_edge.tune.variants import calibrate_variants

    parser = argparse.ArgumentParser()
    parser.add_argument("--workdir", type=Path)
    parser.add_argument("--targets", default="onnx,tflite")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    workdir = workdir_of(args.workdir, "cephalon-widths-")
    full = zoo_checkpoint("digits-exits", workdir)
    widths = workdir / "digits-exits-widths.cephalon"
    if not widths.exists():
        report = compress_checkpoint(full, widths, CompressSpec(widths=(1.0, 0.5), finetune_epochs=args.epochs))
        for v in report["variants"]:
            print(f"{v['name']}: FLOPs {v['flops'] / 1e6:.2f}M, params {v['params'] / 1e3:.1f}k, "
                  f"test accuracy per exit {', '.join(f'{k} {100 * a:.2f}%' for k, a in v['exit_accuracy'].items())}")
    test = builtin("digits", "test")
    xs, labels = test.inputs["image"], test.labels
    for target in args.targets.split(","):
        pkg = workdir / f"digits-exits-widths-{target}"
        alone = workdir / f"digits-exits-{target}"
        if not pkg.exists():
            export_package(widths, pkg, ExportSpec(target))
            calibrate_variants(pkg, CalibrateSpec(data="digits:val", max_drop=0.01, remeasure=True))
        if not alone.exists():
            export_package(full, alone, ExportSpec(target))
        table = VariantTable.open(pkg)
        with AdaptiveRouter.open(pkg) as router:
            runs = {name: (lambda i, r=r: r.predict({"image": xs[i:i + 1]}, thresholds=NEVER_EXIT))
                    for name, r in router.routers.items()}
            for i in range(20):
                for run in runs.values():
                    run(i)
            times, results = alternating_blocks(len(xs), runs, rounds=args.rounds)
            rows = {}
            for name in runs:
                preds = np.asarray([int(p.predicted[0]) for p in results[name]])
                rows[name] = {**stats_ms(times[name]), "accuracy": float((preds == labels).mean())}
        w1, w05 = rows["w1"], rows["w0.5"]
        print(f"\n{target}: full depth on digits:test ({len(xs)} samples, batch 1, alternating blocks)")
        for name, r in rows.items():
            print(f"  {name:5} accuracy {100 * r['accuracy']:6.2f}%  mean {r['mean_ms']:.3f} ms  p50 {r['p50_ms']:.3f} ms  "
                  f"p99 {r['p99_ms']:.3f} ms")
        print(f"  w0.5 vs w1 full depth: {w1['mean_ms'] / w05['mean_ms']:.2f}x faster (mean), "
              f"{w1['p50_ms'] / w05['p50_ms']:.2f}x (p50), at {100 * (w1['accuracy'] - w05['accuracy']):+.2f} points")
        narrow_weights = 4 * table.data["variants"][1]["params"]
        growth = dir_bytes(pkg) - dir_bytes(alone)
        print(f"  package {dir_bytes(pkg) / 1e6:.2f} MB vs the full model alone {dir_bytes(alone) / 1e6:.2f} MB: "
              f"+{growth / 1e3:.0f} kB; w0.5's own weights {narrow_weights / 1e3:.0f} kB (fp32)")
        points = sorted(table.points, key=lambda p: p.latency_ms)
        print(f"  operating points ({len(points)}, validation accuracy, host latency from measured segments):")
        for p in points:
            print(f"    {p.variant:5} {100 * p.accuracy:6.2f}%  {p.latency_ms:.3f} ms  "
                  f"thresholds {', '.join(f'{v:.3g}' for v in p.thresholds.values())}")
        lo, hi = points[0].latency_ms, points[-1].latency_ms
        for budget in np.linspace(lo, hi, 5):
            chosen, fits = choose_point(points, float(budget))
            print(f"    budget {budget:.3f} ms -> {chosen.variant} at {chosen.latency_ms:.3f} ms, "
                  f"{100 * chosen.accuracy:.2f}%{'' if fits else ' (none fits)'}")


if __name__ == "__main__":
    main()
