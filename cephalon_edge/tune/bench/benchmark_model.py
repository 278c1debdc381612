"""LiteRT's ``benchmark_model`` on Android: its command line and its output, every
generation of it (torch-free).

- old:    ``Average inference timings in us: Warmup: 2475.69, Init: 61254, no stats: 2123.45``
- 2.4+:   ``Inference timings in us: Init: 29337, First inference: 4153, Warmup (avg): 3627.5, Inference (avg): 3571.33``
- LiteRT: the same line with averages in exponent notation (``Inference (avg): 3.57133e+03``),
          plus ``count=50 first=3627 curr=3571 min=3501 max=3799 avg=3571.33 std=54`` lines.
Memory: ``Memory footprint delta from the start of the tool (MB): init=2.875 overall=5.375`` and
``Overall peak memory footprint (MB) via periodic monitoring: 7.125``.

Op profiles (``--enable_op_profiling=true``): after ``Operator-wise Profiling Info for Regular
Benchmark Runs:`` a ``Run Order`` table (LiteRT's profile summary formatter) with a header naming
its columns in brackets (``[node type] [start] [first] [avg ms] [%] [cdf%] [mem KB] [times called]
[Name]``; newer tools drop ``[start]`` and separate by spaces, not tabs). A delegated partition is
one row whose node type names the delegate (``TfLiteGpuDelegateV2``, ``TfLiteNnapiDelegate``,
``TfLiteXNNPackDelegate``), or, when the delegate profiles its own ops (XNNPACK), rows named
``Delegate/<op>:<n>``; every other row is a builtin op on the CPU kernels (``CONV_2D``).
"""

from __future__ import annotations

import re
from typing import Any

from cephalon_edge.errors import DeviceError
from cephalon_edge.tune.bench.placement import OpTime

NAME = "benchmark_model"
HINT = ("download the prebuilt benchmark_model for Android {abi} from the LiteRT (TensorFlow Lite) releases "
        "or build it with bazel (//tflite/tools/benchmark:benchmark_model)")
DELEGATE_FLAGS = {"gpu": ["--use_gpu=true"], "nnapi": ["--use_nnapi=true"], "xnnpack": ["--use_xnnpack=true"],
                  "cpu": ["--use_xnnpack=false"], "npu": ["--use_nnapi=true"]}
MAX_OUTPUT = 1 << 20  # characters of output read (the tail: figures come last)
MAX_LINE = 2000  # longer lines are not benchmark_model's: ignored, so parsing stays linear
NUMBER = r"([-+]?(?:\d{1,30}\.?\d{0,30}|\.\d{1,30})(?:[eE][-+]?\d{1,4})?)"
PATTERNS = {  # each matched against one short line; no two unbounded wildcards in a row
    "init_us": rf"Init:\s{{0,8}}{NUMBER}",
    "first_us": rf"First inference:\s{{0,8}}{NUMBER}",
    "warmup_avg_us": rf"Warmup(?: \(avg\))?:\s{{0,8}}{NUMBER}",
    "avg_us": rf"(?:Inference \(avg\)|no stats):\s{{0,8}}{NUMBER}",
    "mem_init_mb": rf"footprint delta from the start of the tool \(MB\):\s{{0,8}}init={NUMBER}",
    "mem_overall_mb": rf"footprint delta from the start of the tool \(MB\):[^=]{{0,40}}=[^ ]{{0,40}} overall={NUMBER}",
    "peak_mb": rf"Overall peak memory footprint \(MB\) via periodic monitoring:\s{{0,8}}{NUMBER}",
}
STATS_KEYS = ("count", "min", "max", "avg", "std")
OP_PROFILING = ["--enable_op_profiling=true"]
OPS_HEADER = "Operator-wise Profiling Info for Regular Benchmark Runs"
DELEGATE_NODES = {"xnnpack": "XNNPACK", "gpu": "GPU", "nnapi": "NNAPI", "hexagon": "Hexagon", "coreml": "Core ML"}


def command(binary: str, model: str, signature: str | None, runtime: dict[str, Any], runs: int,
            warmup: int) -> list[str]:
    """One benchmark of ``signature`` of ``model`` with the profile's delegate and threads."""
    return [binary, f"--graph={model}", *([f"--signature_to_run_for={signature}"] if signature else []),
            *DELEGATE_FLAGS[runtime["delegate"]], f"--num_threads={runtime.get('threads', 4)}",
            f"--num_runs={runs}", f"--warmup_runs={warmup}"]


def delegate(manifest: Any, runtime: dict[str, Any]) -> str:
    """The delegate a run uses: the profile's (benchmark_model applies it at load)."""
    return runtime["delegate"]


def diagnose(text: str) -> DeviceError | None:
    """The error to report for a failed run's output (benchmark_model's own last line says it)."""
    return None


def _stats(line: str) -> dict[str, str] | None:
    """``count=50 first=.. min=.. max=.. avg=.. std=..`` as a dict, in one pass over the tokens."""
    fields = dict(token.partition("=")[::2] for token in line.split() if "=" in token)
    return fields if all(k in fields for k in STATS_KEYS) else None


def _figure(key: str, value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise DeviceError(f"benchmark_model reported {key}={value[:40]!r}, not a number") from None
    if not number == number or number in (float("inf"), float("-inf")) or number < 0:
        raise DeviceError(f"benchmark_model reported {key}={value[:40]!r}; expected a finite, non-negative figure")
    return number


def parse(text: str, warmup: int = 0) -> dict[str, Any]:
    """Timings in microseconds and memory in MB; raises ``DeviceError`` if no positive average
    is found or a figure is not a finite, non-negative number. Linear in the output's length.
    (``warmup``: benchmark_model reports its warm-up runs apart already.)"""
    lines = [line for line in text[-MAX_OUTPUT:].splitlines() if len(line) <= MAX_LINE]
    result: dict[str, Any] = {}
    timing_lines = [line for line in lines if "timings in us" in line]
    timing = timing_lines[-1] if timing_lines else ""
    for key, pattern in PATTERNS.items():
        for line in [timing] if key.endswith("_us") else lines:
            m = re.search(pattern, line)
            if m:
                result[key] = _figure(key, m.group(1))
    stats = [f for f in map(_stats, (line for line in lines if "count=" in line)) if f]
    if stats:  # the last line is the measured run (the earlier one is the warmup)
        last = stats[-1]
        count = _figure("count", last["count"])
        result.update(count=int(count) if count < 1e12 else 0, min_us=_figure("min", last["min"]),
                      max_us=_figure("max", last["max"]), std_us=_figure("std", last["std"]))
        result.setdefault("avg_us", _figure("avg", last["avg"]))
    if "avg_us" not in result:
        tail = " | ".join(line.strip() for line in lines[-3:])[:300]
        raise DeviceError(f"could not find an inference average in benchmark_model's output: {tail!r}")
    if result["avg_us"] == 0:
        raise DeviceError("benchmark_model reported an inference average of 0 us; the run measured nothing")
    result.setdefault("std_us", 0.0)
    return result


def _number(token: str) -> float | None:
    try:
        return float(token.rstrip("%"))
    except ValueError:
        return None


def _delegate_of(node_type: str) -> str | None:
    """``TfLiteGpuDelegateV2`` -> ``GPU``; None for a builtin op."""
    if "delegate" not in node_type.lower():
        return None
    return next((unit for key, unit in DELEGATE_NODES.items() if key in node_type.lower()), node_type)


def parse_ops(text: str, delegate: str) -> list[OpTime]:
    """The op profile's Run Order table: one ``OpTime`` per row, time per inference in us
    (average per call times calls). ``delegate``: the run's (a CPU-kernel row fell back from it
    unless it is ``cpu``). Raises ``DeviceError`` when the output has no op table."""
    lines = [line for line in text[-MAX_OUTPUT:].splitlines() if len(line) <= MAX_LINE]
    start = next((i for i, line in enumerate(lines) if OPS_HEADER in line), None)
    header = next((i for i in range(start, len(lines)) if "[node type]" in lines[i]), None) if start is not None else None
    if header is None:
        raise DeviceError("benchmark_model printed no op profile (Run Order table); does this build support "
                          "--enable_op_profiling?")
    columns = re.findall(r"\[([^\]]{1,40})\]", lines[header])
    numeric = columns[1:-1]  # between [node type] and [Name]
    if not {"avg ms", "%", "times called"} <= set(numeric):
        raise DeviceError(f"benchmark_model's op table has unexpected columns: {', '.join(columns)[:200]}")
    ops = []
    for line in lines[header + 1:]:
        tokens = line.split()
        if not tokens or line.lstrip().startswith("="):
            break
        at = next((i for i in range(1, len(tokens) - len(numeric) + 1)
                   if all(_number(t) is not None for t in tokens[i:i + len(numeric)])), None)
        if at is None:
            continue
        values = dict(zip(numeric, (_number(t) for t in tokens[at:at + len(numeric)])))
        node_type, node = " ".join(tokens[:at]), " ".join(tokens[at + len(numeric):])
        calls = int(values["times called"] or 1)
        unit = _delegate_of(node_type) or (DELEGATE_NODES.get(delegate, delegate.upper()) if node.startswith("Delegate/")
                                           else None)
        ops.append(OpTime(node_type, node, unit or "CPU", (values["avg ms"] or 0.0) * 1000 * calls, calls,
                          fallback=unit is None and delegate != "cpu"))
    if not ops:
        raise DeviceError("benchmark_model's op table is empty")
    return ops
