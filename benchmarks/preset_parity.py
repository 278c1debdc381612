"""Every preset through every host target: the exported package at full depth against the
library's own model (torchvision / timm) holding the same random weights.

For each preset: the library model with every floating tensor randomised (weights at
1/sqrt(fan-in), norm scales near 1, positive variances), its ``state_dict`` mapped onto the
``spec from`` spec with one exit, exported (fused, fp32), and routed with no exit taken; the
largest logit difference from the library model on 8 random inputs is printed per target,
relative to the logits' scale (random weights give logits far from a trained model's, so the
export's own absolute parity gate is off here: the table is the check). The suite checks one
model per family and target; this checks them all.

    .venv/bin/python benchmarks/preset_parity.py [--targets onnx,tflite,executorch,coreml] [--presets NAME,...]

Core ML packages are converted off macOS, without predictions (they need macOS).
"""

from __future__ import annotations

import argparse
import platform
import tempfile
from pathlib import Path

import numpy as np

SMALL = {"torchvision": (3, 64, 64), "timm": (3, 32, 32)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--targets", default="onnx,tflite")
    parser.add_argument("--presets", default=None)
    args = parser.parse_args()
    import torch

    from cephalon_edge.device.program import NEVER_EXIT
    from cephalon_edge.device.router import Router
    from cephalon_edge.toolchain import checkpoint, presets
    from cephalon_edge.toolchain.artifacts import ExportSpec
    from cephalon_edge.toolchain.export import export_package
    from cephalon_edge.toolchain.presets.libraries import randomise, reference_model
    from cephalon_edge.toolchain.state_import import from_library

    names = args.presets.split(",") if args.presets else list(presets.PRESETS)
    print(f"{'preset':34} {'input':>9} {'target':>7} {'max abs err':>12} {'/ max |logit|':>13}")
    for name in names:
        preset = presets.get(name)
        shape = SMALL[preset.library]
        spec = presets.preset_spec(preset, [list(preset.exit_points)[len(preset.exit_points) // 2]], shape, classes=10)
        reference = randomise(reference_model(preset, spec))
        net, _ = from_library(preset, spec, reference.state_dict(), name)
        x = np.random.default_rng(1).standard_normal((8, *shape)).astype(np.float32)
        with torch.no_grad():
            want = reference(torch.from_numpy(x)).numpy()
        with tempfile.TemporaryDirectory() as tmp:
            checkpoint.save(net.eval(), Path(tmp) / "m.cephalon")
            for target in args.targets.split(","):
                report = export_package(Path(tmp) / "m.cephalon", Path(tmp) / target, ExportSpec(target, quantize="none", verify=False))
                if target == "coreml" and platform.system() != "Darwin":  # no Core ML predictions off macOS
                    print(f"{name:34} {'x'.join(map(str, shape)):>9} {target:>7} {'converted':>12} "
                          f"{len(report['segments']):>4} segments (predictions need macOS)", flush=True)
                    continue
                with Router.open(Path(tmp) / target) as router:
                    got = router.predict({"image": x}, thresholds=NEVER_EXIT).logits
                err = float(np.abs(got - want).max())
                print(f"{name:34} {'x'.join(map(str, shape)):>9} {target:>7} {err:12.2e} "
                      f"{err / float(np.abs(want).max()):13.2e}", flush=True)


if __name__ == "__main__":
    main()
