"""Batch throughput: the calibrated routed package against the plain network at the same batch.

The plain network (final heads only, no exit heads) is exported by hand as peer_speedup.py
exports it and run with each runtime's default settings: ONNX Runtime with a dynamic batch;
LiteRT converted at the batch it serves (``litert_torch.convert`` with a batch-B example, what
a user shipping batch B does), so its batch-B call is one interpreter invocation. The routed
packages are calibrated on the val split at ``--max-drop`` and opened as an app would
(``Router.open``); a batch goes through ``Router.predict`` whole (samples that exit leave it).
Both see the test split's full batches, timed in alternating blocks of 4 batches over
``--rounds`` passes; throughput is samples per second.

    .venv/bin/python benchmarks/batch_throughput.py [--workdir DIR] [--model digits-exits]
        [--batches 1,8,32] [--targets onnx,tflite] [--rounds 3]

Target: batch-32 throughput of the routed digits-exits package >= 3x the plain model's.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import workdir_of, zoo_checkpoint  # noqa: E402
from peer_speedup import package, plain_models, plain_runner  # noqa: E402


def plain_tflite_at(ckpt: Path, workdir: Path, example: np.ndarray, batch: int) -> Path:
    """The plain network converted for batch ``batch`` (LiteRT lowers a static batch)."""
    import litert_torch
    import torch

    from cephalon_edge.toolchain import checkpoint
    from cephalon_edge.toolchain.segments import StaticModel

    path = workdir / f"{ckpt.stem}-plain-b{batch}.tflite"
    if not path.exists():
        plain = StaticModel(checkpoint.load(ckpt)).eval()
        litert_torch.convert(plain, (torch.from_numpy(example[:batch]),)).export(str(path))
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--model", default="digits-exits")
    parser.add_argument("--batches", default="1,8,32")
    parser.add_argument("--targets", default="onnx,tflite")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--max-drop", type=float, default=0.01)
    args = parser.parse_args()

    from cephalon_edge.device.data import builtin
    from cephalon_edge.device.router import Router
    from cephalon_edge.toolchain.zoo import get
    from cephalon_edge.tune.calibrate import CalibrateSpec, calibrate_package
    from cephalon_edge.tune.timing import alternating_blocks

    workdir = workdir_of(args.workdir, "cephalon-batch-")
    dataset = get(args.model).dataset
    ckpt = zoo_checkpoint(args.model, workdir)
    test = builtin(dataset, "test")
    xs, labels = next(iter(test.inputs.values())), test.labels
    targets = args.targets.split(",")
    routers = {}
    for target in targets:
        pkg = package(ckpt, workdir, target)
        calibrate_package(pkg, CalibrateSpec(data=f"{dataset}:val", max_drop=args.max_drop))
        routers[target] = Router.open(pkg)
    plain_onnx = plain_models(ckpt, workdir, xs, ["onnx"])["plain onnx"] if "onnx" in targets else None
    print(f"{args.model}: test split ({len(xs)} samples), batches of {args.batches}, {args.rounds} rounds, "
          f"alternating blocks of 4 batches")
    print(f"  {'batch':>5} {'target':8} {'routed samples/s':>17} {'plain samples/s':>16} {'ratio':>7} {'routed acc':>10}")
    for batch in map(int, args.batches.split(",")):
        n = len(xs) // batch
        chunks = [xs[b * batch:(b + 1) * batch] for b in range(n)]
        for target, router in routers.items():
            key = next(iter(router.inputs))
            if target == "onnx":
                plain = plain_runner("plain onnx", plain_onnx)
            else:
                plain = plain_runner("plain tflite", plain_tflite_at(ckpt, workdir, xs, batch))
            runners = {"routed": lambda b, r=router, k=key: r.predict({k: chunks[b]}),
                       "plain": lambda b, f=plain: f(chunks[b])}
            for b in range(min(2, n)):
                for run in runners.values():
                    run(b)
            times, results = alternating_blocks(n, runners, rounds=args.rounds, block=4)
            sps = {k: batch * 1000 / float(np.median(t)) for k, t in times.items()}
            acc = float(np.mean(np.concatenate([p.predicted for p in results["routed"]]) == labels[:n * batch]))
            print(f"  {batch:5d} {target:8} {sps['routed']:17.0f} {sps['plain']:16.0f} "
                  f"{sps['routed'] / sps['plain']:6.2f}x {100 * acc:9.2f}%")


if __name__ == "__main__":
    main()
