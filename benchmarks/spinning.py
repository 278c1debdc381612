"""Spinning: ONNX Runtime's intra-op workers spinning always or only during a run, for a routed
package, idle and under load.

A routed package makes several short calls into several sessions per sample. With spinning
always (ONNX Runtime's default, a profile's ``[runtime] spinning = true``), a session's
workers keep polling after each call (fast hand-off when the next call comes to the same
session; cores taken from everything else meanwhile); by default ours spin while a run lasts
and stop when it returns (``session.force_spinning_stop``). This measures both side by side,
on the test split at batch 1 in alternating blocks, first on an idle machine, then with one
core held busy by another process (a phone's other apps, a shared CI box).

    .venv/bin/python benchmarks/spinning.py [--workdir DIR] [--model digits-exits]
"""

from __future__ import annotations

import argparse
import multiprocessing
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import workdir_of, zoo_checkpoint  # noqa: E402

DATASETS = {"digits-exits": "digits", "mnist1d-moe": "mnist1d"}


def _burn(stop) -> None:
    while not stop.is_set():
        pass


def measure(pkg: Path, xs, rounds: int, thresholds=None) -> dict[str, dict[str, float]]:
    from cephalon_edge.device.router import Router
    from cephalon_edge.tune.timing import alternating_blocks, stats_ms

    # spinning=True: ONNX Runtime's default, workers spin between runs too; False (ours): they
    # spin while a run lasts and stop when it returns
    routers = {f"spinning {'always' if on else 'in-run'}": Router.open(pkg, spinning=on) for on in (True, False)}
    name = next(iter(next(iter(routers.values())).inputs))
    runs = {k: (lambda i, r=r: r.predict({name: xs[i:i + 1]}, thresholds=thresholds)) for k, r in routers.items()}
    for i in range(20):
        for run in runs.values():
            run(i)
    times, _ = alternating_blocks(len(xs), runs, rounds=rounds)
    return {k: stats_ms(t) for k, t in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--model", default="digits-exits")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    from cephalon_edge.toolchain.artifacts import ExportSpec
    from cephalon_edge.toolchain.export import export_package
    from cephalon_edge.device.data import builtin
    from cephalon_edge.tune.calibrate import CalibrateSpec, calibrate_package

    workdir = workdir_of(args.workdir, "cephalon-spin-")
    dataset = DATASETS[args.model]
    ckpt = zoo_checkpoint(args.model, workdir)
    pkg = workdir / f"{ckpt.stem}-onnx"
    if not pkg.exists():
        export_package(ckpt, pkg, ExportSpec("onnx"))
        calibrate_package(pkg, CalibrateSpec(data=f"{dataset}:val", max_drop=0.01))
    xs = next(iter(builtin(dataset, "test").inputs.values()))

    from cephalon_edge.device.program import NEVER_EXIT

    results = {}
    for depth, thresholds in (("calibrated", None), ("full depth", NEVER_EXIT)):
        results[("idle", depth)] = measure(pkg, xs, args.rounds, thresholds)
        stop = multiprocessing.Event()
        burner = multiprocessing.Process(target=_burn, args=(stop,), daemon=True)
        burner.start()
        try:
            results[("one core busy", depth)] = measure(pkg, xs, args.rounds, thresholds)
        finally:
            stop.set()
            burner.join()
    print(f"{args.model}, routed ONNX package, test split ({len(xs)} samples) x {args.rounds} rounds, batch 1")
    print(f"{'condition':14} {'thresholds':11} {'spinning':>8} {'mean ms':>8} {'p50 ms':>8} {'p99 ms':>8}")
    for (condition, depth), rows in results.items():
        for k, r in rows.items():
            print(f"{condition:14} {depth:11} {k.split()[1]:>8} {r['mean_ms']:8.3f} {r['p50_ms']:8.3f} {r['p99_ms']:8.3f}")
    for (condition, depth), rows in results.items():
        print(f"{condition}, {depth}: in-run/always mean ratio "
              f"{rows['spinning in-run']['mean_ms'] / rows['spinning always']['mean_ms']:.2f}")


if __name__ == "__main__":
    main()
