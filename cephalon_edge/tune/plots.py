"""PNG plots of calibrate's Pareto front and bench's latencies (matplotlib: the ``plot`` extra)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from cephalon_edge.extras import require
from cephalon_edge.fsutil import atomic_path


def _pyplot() -> Any:
    require("plot", "--plot")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_pareto(report: dict[str, Any], path: Path) -> None:
    """PNG of the validation Pareto front (accuracy vs expected latency), chosen point marked."""
    plt = _pyplot()

    pts = report["pareto"]
    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    ax.plot([p["expected_ms"] for p in pts], [100 * p["accuracy"] for p in pts], "o-", label="operating points (val)")
    chosen = next(p for p in pts if p["chosen"])
    ax.plot(chosen["expected_ms"], 100 * chosen["accuracy"], "r*", markersize=16, label="chosen")
    val = report["val"]
    ax.plot(val["full_depth_ms"], 100 * val["full_depth_accuracy"], "ks", label="full depth")
    ax.set_xlabel("expected latency per sample (ms, from measured segments)")
    ax.set_ylabel("validation accuracy (%)")
    ax.set_title(f"{Path(report['package']).name}: test speedup {report['test']['speedup']:.2f}x")
    ax.legend(loc="lower right")
    fig.tight_layout()
    with atomic_path(Path(path)) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


def plot_bench(report: dict[str, Any], path: Path) -> None:
    """Per-segment bars and the end-to-end latency histogram against the static model."""
    plt = _pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4), dpi=110)
    segs = report["segments"]
    left.barh([s["name"] for s in segs], [s["mean_ms"] for s in segs], xerr=[s["std_ms"] for s in segs])
    left.invert_yaxis()
    left.set_xlabel("mean latency per segment (ms, batch 1)")
    samples = report.get("latency_samples_ms", {})
    if samples.get("routed"):
        bins = np.linspace(0, max(max(samples["routed"]), max(samples.get("static") or [0])), 40)
        right.hist(samples["routed"], bins=bins, alpha=0.7, label="routed")
        if samples.get("static"):
            right.hist(samples["static"], bins=bins, alpha=0.7, label="static")
        right.set_xlabel("end-to-end latency per sample (ms)")
        right.legend()
    title = f"{Path(report['package']).name} on {report['device']} ({report['profile']})"
    if report.get("speedup"):
        title += f": {report['speedup']:.2f}x"
    fig.suptitle(title)
    fig.tight_layout()
    with atomic_path(Path(path)) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


def plot_operating_points(points: list[dict[str, Any]], reference: dict[str, Any] | None, path: Path,
                          title: str) -> None:
    """Accuracy vs latency of every operating point, one curve per width variant, the plain
    static model as a reference point."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4.2), dpi=120)
    for name in dict.fromkeys(p["variant"] for p in points):
        mine = sorted((p for p in points if p["variant"] == name and p.get("latency_ms") is not None),
                      key=lambda p: p["latency_ms"])
        ax.plot([p["latency_ms"] for p in mine], [100 * p["accuracy"] for p in mine], "o-", label=f"{name} (routed)")
    if reference and reference.get("static_ms") is not None and reference.get("accuracy") is not None:
        ax.plot(reference["static_ms"], 100 * reference["accuracy"], "ks", markersize=8, label="plain static model")
    ax.set_xlabel("latency per sample (ms)")
    ax.set_ylabel("accuracy (%)")
    ax.set_title(title)
    ax.legend(loc="lower right")
    fig.tight_layout()
    with atomic_path(Path(path)) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
