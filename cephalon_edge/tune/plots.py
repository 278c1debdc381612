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
    """Per device (or the host): per-segment bars, split by where the time went when the bench
    measured placement (accelerator vs CPU fallback), and the end-to-end latency against the
    static model (the host's histogram, or a device's expected figures)."""
    plt = _pyplot()
    entries = report.get("devices") or [report]
    fig, axes = plt.subplots(len(entries), 2, figsize=(11, 4 * len(entries)), dpi=110, squeeze=False)
    for (left, right), entry in zip(axes, entries):
        _segment_bars(left, entry)
        if entry is report:
            _latency_histogram(right, report.get("latency_samples_ms", {}))
        else:
            _expected_bars(right, entry)
        title = f"{Path(report['package']).name} on {entry.get('device', 'host')} ({entry.get('profile', report.get('profile'))})"
        speedup = entry.get("speedup", report.get("speedup") if entry is report else None)
        left.set_title(title + (f": {speedup:.2f}x" if speedup else ""), fontsize=9, loc="left")
    fig.tight_layout()
    with atomic_path(Path(path)) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


def _segment_bars(ax: Any, entry: dict[str, Any]) -> None:
    segs = entry.get("segments") or []
    names = [s["name"] for s in segs]
    means = np.array([s["mean_ms"] for s in segs])
    placement = {p["segment"]: p for p in entry.get("placement") or []}
    shares = [placement.get(n, {}).get("time_share_on_accelerator") for n in names]
    if segs and all(share is not None for share in shares):
        on = means * np.array(shares, dtype=float)
        accelerator = placement[names[0]]["accelerator"]
        ax.barh(names, on, label=f"on {accelerator}")
        ax.barh(names, means - on, left=on, label="CPU fallback", color="tab:red")
        ax.legend(fontsize=8)
    else:
        ax.barh(names, means, xerr=[s.get("std_ms") or 0.0 for s in segs])
    ax.invert_yaxis()
    ax.set_xlabel("mean latency per segment (ms, batch 1)")


def _latency_histogram(ax: Any, samples: dict[str, Any]) -> None:
    if samples.get("routed"):
        bins = np.linspace(0, max(max(samples["routed"]), max(samples.get("static") or [0])), 40)
        ax.hist(samples["routed"], bins=bins, alpha=0.7, label="routed")
        if samples.get("static"):
            ax.hist(samples["static"], bins=bins, alpha=0.7, label="static")
        ax.set_xlabel("end-to-end latency per sample (ms)")
        ax.legend()


def _expected_bars(ax: Any, entry: dict[str, Any]) -> None:
    e2e, static = entry.get("end_to_end"), entry.get("static")
    if not e2e:
        ax.set_axis_off()
        return
    keys = ["mean_ms", "p50_ms", "p90_ms", "p99_ms"]
    x = np.arange(len(keys))
    ax.bar(x - 0.2, [e2e[k] for k in keys], 0.4, label="routed (expected)")
    if static:
        ax.bar(x + 0.2, [static["mean_ms"]] * len(keys), 0.4, label="static (mean)")
    ax.set_xticks(x, [k[:-3] for k in keys])
    ax.set_ylabel("latency per sample (ms)")
    ax.legend(fontsize=8)


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
