"""Multi-modal routing: the calibrated multimodal-digits package given image only, signal
only and both, side by side in one run.

Builds the zoo model, exports ONNX with --with-static, calibrates one set of thresholds for
every mix on multimodal:val (--max-drop 0.01), then reports per mix on multimodal:test:
accuracy against full depth, and batch-1 latency of the routed package against the same
mix at full depth (interleaved per sample) and, for the full mix, against static.onnx.

    .venv/bin/python benchmarks/multimodal.py [--workdir DIR] [--rounds 3]
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import workdir_of, zoo_package  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    from cephalon_edge.tune.calibrate import CalibrateSpec, calibrate_package

    workdir = workdir_of(args.workdir, "cephalon-mm-")
    exported = zoo_package("multimodal-digits", workdir, with_static=True)
    pkg = workdir / "multimodal-digits-calibrated"
    shutil.rmtree(pkg, ignore_errors=True)
    shutil.copytree(exported, pkg)
    report = calibrate_package(pkg, CalibrateSpec(data="multimodal:val", max_drop=0.01, threads=args.threads,
                                                  rounds=args.rounds))
    print(f"thresholds (one set for every mix): {report['thresholds']}")
    print(f"{'mix':<14}{'accuracy':>10}{'full depth':>12}{'drop pt':>9}{'routed ms':>11}{'ref ms':>9}"
          f"{'speedup':>9}  reference")
    for mix, m in report["test"]["modality_mixes"].items():
        ref = "static.onnx" if m["static_source"] == "static model" else "same mix, full depth"
        print(f"{mix:<14}{100 * m['accuracy']:>9.2f}%{100 * m['full_depth_accuracy']:>11.2f}%"
              f"{100 * m['accuracy_drop']:>9.2f}{m['mean_ms']:>11.3f}{m['static_mean_ms']:>9.3f}"
              f"{m['speedup']:>8.2f}x  {ref}")
    seg = report["segment_ms"]
    print(f"adapter.image {seg['adapter.image']:.4f} ms, adapter.signal {seg['adapter.signal']:.4f} ms "
          "(median per segment, batch 1)")


if __name__ == "__main__":
    main()
