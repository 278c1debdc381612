"""Does calibrate's drop budget hold on unseen data? Thresholds are chosen on the validation
split at ``--max-drop`` for several confidences (0.5: the validation drop alone, as before
the bound), then applied to the test split, which calibration never sees; the test drop and
the FLOPs speedup are printed per confidence. Packages are scored once (every exit evaluated)
and the search is re-run per confidence, minimising the segment latencies calibrate cached
in the package (as calibrate does; 1 per segment when none are cached): nothing is timed, so
the figures are exact and quick.

    .venv/bin/python benchmarks/drop_bound.py PKG[:DATASET] ... [--max-drop 0.01]
        [--confidences 0.5,0.8,0.9,0.95,0.99]

e.g. ``benchmarks/drop_bound.py /tmp/zoo/mnist-exits-onnx /tmp/zoo/digits-exits-onnx``: a
package names its built-in dataset; calibration uses its val split, the report its test split.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))


def tables(package: Path, dataset: str | None):
    from cephalon_edge.device.data import load_dataset
    from cephalon_edge.device.data_checks import Contract
    from cephalon_edge.device.manifest import Manifest
    from cephalon_edge.device.router import Router
    from cephalon_edge.tune.calibrate import collect

    manifest = Manifest.open(package, verify=False)
    name = dataset or manifest.source_dataset
    contract = Contract.from_manifest(manifest)
    with Router.open(package) as router:
        # calibrate's own objective: the segment latencies it cached in the package (1 each if none)
        cached = manifest.segment_latency.get("segment_ms") or {}
        costs = {s: float(cached.get(s, 1.0)) for s in router.manifest.segments}
        out = [collect(router, load_dataset(f"{name}:{split}", contract), "max_softmax", costs) for split in ("val", "test")]
        return out[0], out[1], router.exit_names


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("packages", nargs="+")
    parser.add_argument("--max-drop", type=float, default=0.01)
    parser.add_argument("--confidences", default="0.5,0.8,0.9,0.95,0.99")
    args = parser.parse_args()
    from cephalon_edge.device.program import first_exit
    from cephalon_edge.device.scores import never_exit
    from cephalon_edge.tune.calibrate import CalibrateSpec, bounds, choose
    from cephalon_edge.tune.search import search

    for ref in args.packages:
        path, _, dataset = ref.partition(":")
        val, test, names = tables(Path(path), dataset or None)
        result = search(val, never_exit("max_softmax", len(names)))
        print(f"{Path(path).name}: val {len(val.correct)} / test {len(test.correct)} samples, full depth "
              f"{100 * val.full_depth_accuracy:.2f}% / {100 * test.full_depth_accuracy:.2f}%, --max-drop {args.max_drop}")
        print(f"  {'confidence':>10} {'val drop':>9} {'bound':>7} {'test drop':>9} {'test FLOPs speedup':>18}")
        for confidence in (float(c) for c in args.confidences.split(",")):
            spec = CalibrateSpec(data="x", max_drop=args.max_drop, confidence=confidence)
            i = choose(result, val, spec)
            thresholds = list(result.thresholds(i, names[:-1]).values())
            taken = first_exit(test.scores, thresholds)
            rows = np.arange(len(taken))
            test_acc = float(test.correct[rows, taken].mean())
            test_flops = float(test.flops[rows, taken].mean())
            print(f"  {confidence:10.2f} {100 * (val.full_depth_accuracy - result.accuracy[i]):8.2f}p "
                  f"{100 * bounds(result, val, spec.z)[i]:6.2f}p {100 * (test.full_depth_accuracy - test_acc):8.2f}p "
                  f"{test.flops[:, -1].mean() / test_flops:17.2f}x")


if __name__ == "__main__":
    main()
