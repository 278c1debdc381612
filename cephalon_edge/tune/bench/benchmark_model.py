"""Parse the output of LiteRT's ``benchmark_model`` tool, every generation of it (torch-free).

- old:    ``Average inference timings in us: Warmup: 2475.69, Init: 61254, no stats: 2123.45``
- 2.4+:   ``Inference timings in us: Init: 29337, First inference: 4153, Warmup (avg): 3627.5, Inference (avg): 3571.33``
- LiteRT: the same line with averages in exponent notation (``Inference (avg): 3.57133e+03``),
          plus ``count=50 first=3627 curr=3571 min=3501 max=3799 avg=3571.33 std=54`` lines.
Memory: ``Memory footprint delta from the start of the tool (MB): init=2.875 overall=5.375`` and
``Overall peak memory footprint (MB) via periodic monitoring: 7.125``.
"""

from __future__ import annotations

import re
from typing import Any

from cephalon_edge.errors import DeviceError

NUMBER = r"([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)"
PATTERNS = {
    "init_us": rf"Init:\s*{NUMBER}",
    "first_us": rf"First inference:\s*{NUMBER}",
    "warmup_avg_us": rf"Warmup(?: \(avg\))?:\s*{NUMBER}",
    "avg_us": rf"(?:Inference \(avg\)|no stats):\s*{NUMBER}",
    "mem_init_mb": rf"footprint delta from the start of the tool \(MB\):\s*init={NUMBER}",
    "mem_overall_mb": rf"footprint delta from the start of the tool \(MB\):.*overall={NUMBER}",
    "peak_mb": rf"Overall peak memory footprint \(MB\) via periodic monitoring:\s*{NUMBER}",
}
STATS = re.compile(rf"count=(\d+).*?min={NUMBER}.*?max={NUMBER}.*?avg={NUMBER}.*?std={NUMBER}")


def parse(text: str) -> dict[str, Any]:
    """Timings in microseconds and memory in MB; raises ``DeviceError`` if no average is found."""
    result: dict[str, Any] = {}
    timing_lines = [line for line in text.splitlines() if "timings in us" in line]
    timing = timing_lines[-1] if timing_lines else ""
    for key, pattern in PATTERNS.items():
        source = timing if key.endswith("_us") else text
        m = re.search(pattern, source)
        if m:
            result[key] = float(m.group(1))
    stats = STATS.findall(text)
    if stats:  # the last line is the measured run (the earlier one is the warmup)
        count, lo, hi, avg, std = stats[-1]
        result.update(count=int(count), min_us=float(lo), max_us=float(hi), std_us=float(std))
        result.setdefault("avg_us", float(avg))
    if "avg_us" not in result:
        tail = " | ".join(line.strip() for line in text.strip().splitlines()[-3:])[:300]
        raise DeviceError(f"could not find an inference average in benchmark_model's output: {tail!r}")
    result.setdefault("std_us", 0.0)
    return result
