"""Peer speedup: the calibrated routed package vs the plain network as a user ships it without us.

"Plain" is the same trained network with its final heads only (no exit heads), exported by
hand the standard way (``torch.onnx.export``; ``litert_torch.convert``; ExecuTorch's
``torch.export`` -> ``to_edge_transform_and_lower(XnnpackPartitioner)``) and run with each
runtime's *default* settings (``onnxruntime.InferenceSession(path)``; LiteRT's
``Interpreter(model_path=...)``; ``executorch.runtime.Runtime.get().load_program(path)``).
The routed packages (ONNX, TFLite and ExecuTorch, fused segments) are
calibrated on the val split at ``--max-drop 0.01`` (or the benchmark's ``--max-drop``) and opened as an app would
(``Router.open``). Every candidate runs the test split at batch 1; sessions are timed in
alternating blocks of 16 samples (each block starts with an untimed call), never call by
call, so one session's spinning workers do not tax the next one's calls.

resnet50-exits (untrained, so no meaningful exit mix) is measured forced to full depth
(every exit head evaluated, none taken) on 32 random inputs: the cost of routing when it
cannot exit early, against the plain model on ONNX Runtime.

    .venv/bin/python benchmarks/peer_speedup.py [--workdir DIR] [--models digits-exits,mnist-exits,mnist1d-moe,resnet50-exits]
        [--targets onnx,tflite,executorch]
    .venv/bin/python benchmarks/peer_speedup.py --models mobilenet-exits,vit-exits,text-exits --targets onnx,tflite

Any trained single-input zoo model can be named, the MobileNet-style, ViT and text
transformer ones included (their plain models are exported by hand the same way).

Targets: digits-exits >= 3.0x against the fastest plain model at <= 1 point, measured/FLOPs
>= 0.4; mnist1d-moe >= 1.3x; mobilenet-exits and vit-exits >= 2x at <= 1 point; resnet50-exits
at full depth <= 1.03x of plain ONNX Runtime.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import workdir_of, zoo_checkpoint  # noqa: E402

def plain_models(ckpt: Path, workdir: Path, example: np.ndarray, targets: list[str]) -> dict[str, Path]:
    """The plain network exported by hand: what a user would ship without cephalon-edge."""
    import torch

    from cephalon_edge.toolchain import checkpoint
    from cephalon_edge.toolchain.segments import StaticModel

    class Plain(torch.nn.Module):  # full depth, task heads, no exit heads; one input
        def __init__(self) -> None:
            super().__init__()
            self.net = StaticModel(checkpoint.load(ckpt))

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
            return self.net(x)

    plain = Plain().eval()
    x = torch.from_numpy(example[:2])  # a dynamic batch needs an example of more than one
    paths = {"plain onnx": workdir / f"{ckpt.stem}-plain.onnx"}
    if not paths["plain onnx"].exists():
        torch.onnx.export(plain, (x,), str(paths["plain onnx"]), dynamo=True, input_names=["x"],
                          dynamic_shapes=({0: torch.export.Dim("batch")},), external_data=False)
    if "tflite" in targets:
        import litert_torch

        paths["plain tflite"] = workdir / f"{ckpt.stem}-plain.tflite"
        if not paths["plain tflite"].exists():
            litert_torch.convert(plain, (x[:1],)).export(str(paths["plain tflite"]))
    if "executorch" in targets:
        from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
        from executorch.exir import to_edge_transform_and_lower

        paths["plain executorch"] = workdir / f"{ckpt.stem}-plain.pte"
        if not paths["plain executorch"].exists():
            program = torch.export.export(plain, (x[:1],))
            lowered = to_edge_transform_and_lower(program, partitioner=[XnnpackPartitioner()]).to_executorch()
            paths["plain executorch"].write_bytes(lowered.buffer)
    return paths


def plain_runner(kind: str, path: Path):
    """The plain model with the runtime's defaults; returns f(batch) -> main-task logits."""
    if kind == "plain onnx":
        import onnxruntime as ort

        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        name = sess.get_inputs()[0].name
        return lambda x: sess.run(None, {name: x})[0]
    if kind == "plain executorch":
        import torch
        from executorch.runtime import Runtime

        method = Runtime.get().load_program(str(path)).load_method("forward")
        return lambda x: method.execute([torch.from_numpy(x)])[0].numpy()
    from ai_edge_litert.interpreter import Interpreter

    runner = Interpreter(model_path=str(path)).get_signature_runner()
    first = sorted(runner.get_output_details())[0]
    return lambda x: runner(args_0=x)[first]


def package(ckpt: Path, workdir: Path, target: str) -> Path:
    from cephalon_edge.toolchain.artifacts import ExportSpec
    from cephalon_edge.toolchain.export import export_package

    pkg = workdir / f"{ckpt.stem}-{target}"
    if not pkg.exists():
        export_package(ckpt, pkg, ExportSpec(target))
    return pkg


def measure(models: dict[str, object], xs: np.ndarray, labels: np.ndarray | None, rounds: int) -> dict[str, dict]:
    from cephalon_edge.tune.timing import alternating_blocks, stats_ms

    runs = {name: (lambda i, f=f: f(xs[i:i + 1])) for name, f in models.items()}
    for i in range(min(20, len(xs))):
        for run in runs.values():
            run(i)
    times, results = alternating_blocks(len(xs), runs, rounds=rounds)
    rows = {}
    for name in models:
        preds = np.asarray([np.asarray(r).reshape(-1).argmax() for r in results[name]])
        rows[name] = {**stats_ms(times[name]),
                      "accuracy": None if labels is None else float((preds == labels).mean())}
    return rows


def routed(router, thresholds=None):
    return lambda x: router.predict({next(iter(router.inputs)): x}, thresholds=thresholds).logits


def zoo_model(name: str, workdir: Path, rounds: int, targets: list[str], max_drop: float = 0.01) -> list[str]:
    from cephalon_edge.device.data import builtin
    from cephalon_edge.device.manifest import Manifest
    from cephalon_edge.device.router import Router
    from cephalon_edge.tune.calibrate import CalibrateSpec, calibrate_package

    from cephalon_edge.toolchain.zoo import get

    dataset = get(name).dataset
    ckpt = zoo_checkpoint(name, workdir)
    test = builtin(dataset, "test")
    xs, labels = next(iter(test.inputs.values())), test.labels
    candidates, flops = {}, None
    for target in targets:
        pkg = package(ckpt, workdir, target)
        report = calibrate_package(pkg, CalibrateSpec(data=f"{dataset}:val", max_drop=max_drop, remeasure=True))
        router = Router.open(pkg)
        candidates[f"routed {target}"] = routed(router)
        if flops is None:
            flops = report["test"]["flops_speedup"]
    for kind, path in plain_models(ckpt, workdir, xs, targets).items():
        candidates[kind] = plain_runner(kind, path)
    rows = measure(candidates, xs, labels, rounds)
    fastest = min((k for k in rows if k.startswith("plain")), key=lambda k: rows[k]["mean_ms"])
    lines = [f"{name}: test split ({len(xs)} samples), FLOPs speedup of the routed path {flops:.2f}x; "
             f"fastest plain model: {fastest}"]
    lines.append(f"  {'candidate':16} {'accuracy':>8} {'mean ms':>8} {'p50 ms':>8} {'p99 ms':>8} "
                 f"{'vs fastest plain':>16} {'measured/FLOPs':>14}")
    for cand, r in rows.items():
        speedup = rows[fastest]["mean_ms"] / r["mean_ms"]
        lines.append(f"  {cand:16} {100 * r['accuracy']:7.2f}% {r['mean_ms']:8.3f} {r['p50_ms']:8.3f} "
                     f"{r['p99_ms']:8.3f} {speedup:15.2f}x "
                     + (f"{speedup / flops:14.2f}" if cand.startswith("routed") else ""))
    manifest = Manifest.open(package(ckpt, workdir, targets[0]), verify=False)
    lines.append(f"  routed {targets[0]}: {len(manifest.segments)} segments; thresholds {manifest.thresholds}")
    return lines


def resnet_full_depth(workdir: Path, rounds: int) -> list[str]:
    import torch

    from cephalon_edge.toolchain import checkpoint
    from cephalon_edge.toolchain.model import CephalonNet
    from cephalon_edge.toolchain.zoo import resnet50_exits_spec
    from cephalon_edge.device.program import NEVER_EXIT
    from cephalon_edge.device.router import Router

    ckpt = workdir / "resnet50-exits.cephalon"
    if not ckpt.exists():
        torch.manual_seed(0)
        checkpoint.save(CephalonNet(resnet50_exits_spec()).eval(), ckpt)
    xs = np.random.default_rng(0).standard_normal((32, 3, 224, 224)).astype(np.float32)
    router = Router.open(package(ckpt, workdir, "onnx"))
    paths = plain_models(ckpt, workdir, xs, ["onnx"])
    rows = measure({"routed onnx": routed(router, NEVER_EXIT), "plain onnx": plain_runner("plain onnx", paths["plain onnx"])},
                   xs, None, rounds)
    ratio = rows["routed onnx"]["p50_ms"] / rows["plain onnx"]["p50_ms"]
    return [f"resnet50-exits forced to full depth (32 random inputs, {rounds} rounds): routed onnx p50 "
            f"{rows['routed onnx']['p50_ms']:.2f} ms (mean {rows['routed onnx']['mean_ms']:.2f}), plain onnx p50 "
            f"{rows['plain onnx']['p50_ms']:.2f} ms (mean {rows['plain onnx']['mean_ms']:.2f}): ratio {ratio:.3f}"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--models", default="digits-exits,mnist-exits,mnist1d-moe,resnet50-exits")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--targets", default="onnx,tflite,executorch")
    parser.add_argument("--max-drop", type=float, default=0.01, help="calibrate's allowed validation drop")
    args = parser.parse_args()
    workdir = workdir_of(args.workdir, "cephalon-peer-")
    for name in args.models.split(","):
        lines = resnet_full_depth(workdir, args.rounds) if name == "resnet50-exits" else zoo_model(name, workdir, args.rounds,
                                                                                             args.targets.split(","),
                                                                                             args.max_drop)
        print("\n".join(lines), flush=True)


if __name__ == "__main__":
    main()
