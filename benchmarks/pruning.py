"""Pruning: digits-exits pruned to half its FLOPs with distilled fine-tuning vs the original,
side by side in one run.

    .venv/bin/python benchmarks/pruning.py [--workdir DIR] [--epochs 10] [--runs 200]

Prints the FLOPs ratio, the static full-depth latency ratio on ONNX Runtime (static.onnx of
each at the runtime's default session options, batch 1, alternating blocks) and the final-exit accuracy difference on the test split.
Targets: FLOPs <= 0.55x, latency <= 0.7x, final-exit accuracy drop <= 1 point.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import interleaved, workdir_of, zoo_checkpoint  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--runs", type=int, default=200)
    args = parser.parse_args()
    workdir = workdir_of(args.workdir, "cephalon-prune-")

    import onnxruntime as ort

    from cephalon_edge.toolchain.artifacts import ExportSpec
    from cephalon_edge.toolchain.compress.spec import CompressSpec
    from cephalon_edge.toolchain.compress.workflow import compress_checkpoint
    from cephalon_edge.toolchain.export import export_package

    original = zoo_checkpoint("digits-exits", workdir)
    pruned = workdir / "digits-exits-pruned.cephalon"
    report = compress_checkpoint(original, pruned, CompressSpec(prune=0.5, finetune_epochs=args.epochs))
    sessions = {}
    for name, ckpt in (("original", original), ("pruned", pruned)):
        pkg = workdir / f"{name}-onnx"
        export_package(ckpt, pkg, ExportSpec("onnx", with_static=True, force=True, verify=False))
        # both at ONNX Runtime's default session options, as each would ship
        sessions[name] = ort.InferenceSession(str(pkg / "static.onnx"), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).standard_normal((1, 1, 32, 32)).astype(np.float32)
    samples = interleaved({k: (lambda s=s: s.run(None, {"x": x})) for k, s in sessions.items()}, args.runs, warmup=20)
    med = {k: statistics.median(v) / 1000 for k, v in samples.items()}
    before, after = report["before"], report["after"]
    print(f"digits-exits, prune 0.5 (l1), {args.epochs} fine-tuning epochs distilled from the original")
    print(f"  channel ratio removed per group: {report['plan']['channel_ratio']:.3f}")
    print(f"  FLOPs: {before['flops'] / 1e6:.2f}M -> {after['flops'] / 1e6:.2f}M = {after['flops'] / before['flops']:.3f}x (target <= 0.55)")
    print(f"  params: {before['params'] / 1e6:.2f}M -> {after['params'] / 1e6:.2f}M")
    print(f"  static.onnx median, batch 1, ONNX Runtime defaults: {med['original']:.3f} ms -> {med['pruned']:.3f} ms "
          f"= {med['pruned'] / med['original']:.3f}x (target <= 0.7)")
    print(f"  final-exit test accuracy: {100 * before['final_accuracy']:.2f}% -> {100 * after['final_accuracy']:.2f}% "
          f"({100 * (before['final_accuracy'] - after['final_accuracy']):+.2f} points lost; target <= 1)")
    for name in before["exit_accuracy"]:
        print(f"    {name}: {100 * before['exit_accuracy'][name]:.2f}% -> {100 * after['exit_accuracy'][name]:.2f}%")


if __name__ == "__main__":
    main()
