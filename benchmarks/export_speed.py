"""Export speed: each converter as ``export`` runs it against torch and Python as they come, in
alternating rounds in one process, with the files compared byte for byte. Three ways: as they
come; torch's export passes spared their repeated work (CIA ops materialised once per
registration state, ``py_impl`` decorators reused, provenance chains shared rather than deep
copied: ``toolchain/decompositions.py``); and that with the garbage collector run less often
(``toolchain/gc_policy.py``): what ``export`` does.

The model is the test suite's tiny net (exits, a skip gate, three experts, two tasks: 13 fused
segments), the work the converter itself does (no parity check). The first round of each
target pays one-time imports and caches and is not counted.

    .venv/bin/python benchmarks/export_speed.py [--targets onnx,tflite,executorch] [--rounds 3]
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))


def files(root: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(root.iterdir()) if p.is_file()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--targets", default="onnx,tflite,executorch")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    from cephalon_edge.targets import TARGETS

    unknown = [t for t in args.targets.split(",") if t not in TARGETS]
    if unknown or args.rounds < 1:
        parser.error(f"unknown target {unknown[0]!r} (one of {', '.join(TARGETS)})" if unknown else "--rounds must be >= 1")

    import torch

    torch.set_num_threads(1)
    from conftest import balance_gates, make_net

    from cephalon_edge.targets import get_target
    from cephalon_edge.toolchain.artifacts import ExportSpec
    from cephalon_edge.toolchain.decompositions import passes_without_repeated_work
    from cephalon_edge.toolchain.gc_policy import collected_less_often
    from cephalon_edge.toolchain.segments import build_segments

    net = make_net(seed=4)
    balance_gates(net, torch.randn(64, 1, 12, 12, generator=torch.Generator().manual_seed(2)))

    @contextlib.contextmanager
    def as_export_runs_it():
        with passes_without_repeated_work(), collected_less_often():
            yield

    ways = {"as they come": contextlib.nullcontext, "passes": passes_without_repeated_work,
            "and gc": as_export_runs_it}
    print(f"{'target':<11} {'as they come':>13} {'passes spared':>14} {'and gc less often':>18} {'ratio':>6}  files")
    for target in args.targets.split(","):
        converter = get_target(target).converter_module()
        seconds: dict[str, list[float]] = {w: [] for w in ways}
        outputs: dict[str, dict[str, bytes]] = {}
        for round_ in range(args.rounds + 1):
            for way, context in ways.items():
                with tempfile.TemporaryDirectory() as tmp:
                    segments = build_segments(net)
                    started = time.perf_counter()
                    with context():
                        converter.convert(segments, ExportSpec(target, quantize="none", verify=False), Path(tmp))
                    if round_:  # the first round warms imports and caches
                        seconds[way].append(time.perf_counter() - started)
                    outputs[way] = files(Path(tmp))
        plain, spared, both = (statistics.median(seconds[w]) for w in ways)
        same = "identical" if outputs["as they come"] == outputs["passes"] == outputs["and gc"] else "DIFFER"
        print(f"{target:<11} {plain:>11.1f} s {spared:>12.1f} s {both:>16.1f} s {both / plain:>6.2f}  {same}")


if __name__ == "__main__":
    main()
