"""Numbers as people read them (shared by the CLI's tables and the demo's summary)."""

from __future__ import annotations


def fmt_count(n: float) -> str:
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.2f}{unit}"
    return f"{n:.0f}"


def fmt_pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.2f}%"
