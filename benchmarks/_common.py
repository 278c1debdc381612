"""Helpers shared by the benchmark scripts: timing, medians, building zoo packages."""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path
from typing import Callable


def time_us(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter_ns()
    fn()
    return (time.perf_counter_ns() - t0) / 1000.0


def interleaved(fns: dict[str, Callable[[], object]], runs: int, warmup: int,
                block: int = 1) -> dict[str, list[float]]:
    """Run the candidates in alternation, so machine noise hits all of them alike. With
    ``block`` > 1 each takes ``block`` timed calls in a row after one untimed call: a session
    whose intra-op workers spin (ONNX Runtime's default) steals the cores of whatever runs
    right after it, so sessions with different settings alternate by blocks, not call by call."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    samples: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(max(1, runs // block)):
        for name, fn in fns.items():
            if block > 1:
                fn()
            for _ in range(block):
                samples[name].append(time_us(fn))
    return samples


def median(xs: list[float]) -> float:
    return statistics.median(xs)


def workdir_of(path: Path | None, prefix: str) -> Path:
    """``--workdir`` (created if needed), or a fresh temporary directory."""
    workdir = Path(path) if path else Path(tempfile.mkdtemp(prefix=prefix))
    workdir.mkdir(parents=True, exist_ok=True)
    return workdir


def zoo_checkpoint(name: str, workdir: Path) -> Path:
    """``workdir/NAME.cephalon``, built (and trained) from the zoo unless it is already there."""
    from cephalon_edge.build import checkpoint, zoo

    ckpt = Path(workdir) / f"{name}.cephalon"
    if not ckpt.exists():
        net, provenance = zoo.build(name)
        checkpoint.save(net, ckpt, provenance)
    return ckpt


def zoo_package(name: str, workdir: Path | None = None, **export_options) -> Path:
    """Build zoo model ``name`` and export it to ONNX in ``workdir`` (a temp dir by default)."""
    from cephalon_edge.build.artifacts import ExportSpec
    from cephalon_edge.build.export import export_package

    workdir = workdir_of(workdir, "cephalon-bench-")
    ckpt = zoo_checkpoint(name, workdir)
    pkg = workdir / f"{name}-onnx"
    if not pkg.exists():
        export_package(ckpt, pkg, ExportSpec("onnx", **export_options))
    return pkg
