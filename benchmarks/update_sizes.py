"""Update sizes: what a field update transfers against the whole package, per target, and how
long it takes to apply.

Three changes of real zoo models: the thresholds of a calibration (digits-exits), a fine-tune
of the early exit heads (digits-exits: 3 SGD steps on 512 training digits, trunk and final head
frozen), and one retrained expert (mnist1d-moe: expert 0 of the first MoE layer, 3 steps on
its training split). Each base and changed checkpoint is exported to every target that
converts here (fused segments, as `export` does by default; Core ML, which cannot calibrate
off macOS, takes the thresholds calibrated on ONNX); the update is made with
`diff` (bsdiff4, and detools for comparison) and applied with `apply -o` (median of 5).

    .venv/bin/python benchmarks/update_sizes.py [--workdir DIR] [--targets onnx,tflite,executorch,coreml]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import workdir_of, zoo_checkpoint  # noqa: E402


def retrained(ckpt: Path, out: Path, dataset: str, prefix: str) -> Path:
    """``ckpt`` with the parameters under ``prefix`` trained a little more (the rest frozen)."""
    import torch

    from cephalon_edge.toolchain import checkpoint
    from cephalon_edge.device.data import builtin

    if out.exists():
        return out
    net, meta = checkpoint.load_with_metadata(ckpt)
    params = [p for n, p in net.named_parameters() if n.startswith(prefix)]
    for p in net.parameters():
        p.requires_grad_(False)
    for p in params:
        p.requires_grad_(True)
    train = builtin(dataset, "train")
    modality = next(iter(train.inputs))
    x, y = torch.from_numpy(train.inputs[modality][:512]), torch.from_numpy(train.labels[:512]).long()
    opt = torch.optim.SGD(params, lr=0.05)
    net.eval()
    for _ in range(3):
        out_ = net({modality: x})
        loss = sum(torch.nn.functional.cross_entropy(lg, y) for lg in out_.exit_logits)
        opt.zero_grad()
        loss.backward()
        opt.step()
    checkpoint.save(net, out, meta.get("provenance"))
    return out


def first_expert(ckpt: Path) -> str:
    """The parameter prefix of expert 0 of the first MoE layer (``stages.1.experts.0.``)."""
    from cephalon_edge.toolchain import checkpoint

    name = next(n for n in checkpoint.load(ckpt).state_dict() if ".experts.0." in n)
    return name[:name.index(".experts.0.") + len(".experts.0.")]


def export(ckpt: Path, target: str, workdir: Path) -> Path:
    from cephalon_edge.toolchain.artifacts import ExportSpec
    from cephalon_edge.toolchain.export import export_package

    pkg = workdir / f"upd-{ckpt.stem}-{target}"
    if not pkg.exists():
        export_package(ckpt, pkg, ExportSpec(target, verify=False))
    return pkg


def calibrated(pkg: Path, dataset: str, workdir: Path) -> Path:
    """``pkg`` after ``calibrate``; a package that cannot run here (Core ML off macOS) takes the
    exit policy calibrated on the same checkpoint's ONNX package."""
    from cephalon_edge.device.manifest import Manifest
    from cephalon_edge.targets import get_target
    from cephalon_edge.tune.calibrate import CalibrateSpec, calibrate_package

    out = pkg.with_name(pkg.name + "-calibrated")
    if not out.exists():
        shutil.copytree(pkg, out)
        manifest = Manifest.open(out)
        if get_target(manifest.target).why_not_here():
            onnx = Manifest.open(calibrated(pkg.with_name(pkg.name.replace(manifest.target, "onnx")), dataset, workdir))
            manifest.write_sections(exit_policy=onnx.data["exit_policy"])
        else:
            calibrate_package(out, CalibrateSpec(data=f"{dataset}:val", max_drop=0.01))
    return out


def measure(old: Path, new: Path, workdir: Path, algorithm: str) -> dict:
    from cephalon_edge.device.updates.apply import Policy, apply_update
    from cephalon_edge.device.updates.diff import make_update

    update = workdir / f"{old.name}--{new.name}.{algorithm}.update"
    t = time.perf_counter()
    report = make_update(old, new, update, algorithm=algorithm, force=True)
    diff_s = time.perf_counter() - t
    times = []
    for _ in range(5):
        out = workdir / "applied"
        shutil.rmtree(out, ignore_errors=True)
        t = time.perf_counter()
        apply_update(old, update, out=out, policy=Policy(allow_unsigned=True))
        times.append(time.perf_counter() - t)
    return {**report, "diff_s": diff_s, "apply_s": statistics.median(times)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--targets", default="onnx,tflite,executorch,coreml")
    args = parser.parse_args()
    workdir = workdir_of(args.workdir, "cephalon-updates-")
    digits = zoo_checkpoint("digits-exits", workdir)
    moe = zoo_checkpoint("mnist1d-moe", workdir)
    heads = retrained(digits, workdir / "digits-exits-heads.cephalon", "digits", "exits.")
    expert = retrained(moe, workdir / "mnist1d-moe-expert.cephalon", "mnist1d", first_expert(moe))
    print(f"{'change':22} {'target':10} {'package':>9} {'update':>9} {'share':>7} {'files':28} "
          f"{'detools':>9} {'apply bsdiff4':>13} {'apply detools':>13}", flush=True)
    for target in args.targets.split(","):
        cases = {"thresholds (digits)": (export(digits, target, workdir),
                                         calibrated(export(digits, target, workdir), "digits", workdir)),
                 "exit heads (digits)": (export(digits, target, workdir), export(heads, target, workdir)),
                 "one expert (mnist1d)": (export(moe, target, workdir), export(expert, target, workdir))}
        for change, (old, new) in cases.items():
            b = measure(old, new, workdir, "bsdiff4")
            d = measure(old, new, workdir, "detools")
            files = ", ".join(f"{f['name']}:{f['action'][0]}" for f in b["files"])[:28] or "(manifest only)"
            print(f"{change:22} {target:10} {b['package_bytes'] / 1e6:8.2f}M {b['bytes'] / 1e3:8.1f}k "
                  f"{100 * b['ratio']:6.2f}% {files:28} {d['bytes'] / 1e3:8.1f}k {1000 * b['apply_s']:11.1f}ms "
                  f"{1000 * d['apply_s']:11.1f}ms", flush=True)


if __name__ == "__main__":
    main()
