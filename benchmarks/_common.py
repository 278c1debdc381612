"""Helpers shared by the benchmark scripts: timing, medians, building zoo packages."""

from __future__ import annotations

import statistics
import tempfile
from pathlib import Path
from typing import Callable


def interleaved(fns: dict[str, Callable[[], object]], runs: int, warmup: int,
                block: int | None = None) -> dict[str, list[float]]:
    """``runs`` timed calls (us) of every candidate, in alternating blocks (the library's
    ``tune.timing.alternating_blocks``: a session whose intra-op workers spin steals the cores
    of whatever runs right after it, so sessions alternate by blocks, not call by call)."""
    from cephalon_edge.tune.timing import BLOCK, alternating_blocks

    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times, _ = alternating_blocks(runs, {name: (lambda _i, fn=fn: fn()) for name, fn in fns.items()},
                                  block=block or BLOCK)
    return {name: [float(ms) * 1000 for ms in t] for name, t in times.items()}


def median(xs: list[float]) -> float:
    return statistics.median(xs)


def workdir_of(path: Path | None, prefix: str) -> Path:
    """``--workdir`` (created if needed), or a fresh temporary directory."""
    workdir = Path(path) if path else Path(tempfile.mkdtemp(prefix=prefix))
    workdir.mkdir(parents=True, exist_ok=True)
    return workdir


def zoo_checkpoint(name: str, workdir: Path) -> Path:
    """``workdir/NAME.cephalon``, built (and trained) from the zoo unless it is already there."""
    from cephalon_edge.toolchain import checkpoint, zoo

    ckpt = Path(workdir) / f"{name}.cephalon"
    if not ckpt.exists():
        net, provenance = zoo.build(name)
        checkpoint.save(net, ckpt, provenance)
    return ckpt


def zoo_package(name: str, workdir: Path | None = None, **export_options) -> Path:
    """Build zoo model ``name`` and export it to ONNX in ``workdir`` (a temp dir by default)."""
    from cephalon_edge.toolchain.artifacts import ExportSpec
    from cephalon_edge.toolchain.export import export_package

    workdir = workdir_of(workdir, "cephalon-bench-")
    ckpt = zoo_checkpoint(name, workdir)
    pkg = workdir / f"{name}-onnx"
    if not pkg.exists():
        export_package(ckpt, pkg, ExportSpec("onnx", **export_options))
    return pkg
