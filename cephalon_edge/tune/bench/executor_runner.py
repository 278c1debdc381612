"""ExecuTorch's ``executor_runner`` on Android: its command line and its output (torch-free).

One run per method (``--method_name``, ExecuTorch 1.x runners); the runner has no warm-up
flag, so it executes ``warmup + runs`` times and the first ``warmup`` iterations are dropped
here. Its log lines (``ET_LOG``, prefixed ``I 00:00:00.012 executorch:executor_runner.cpp:412]``)::

    Model loaded in 3.1 ms.
    Iteration 1 of 60: 0.873 ms
    Model executed successfully 60 time(s) in 49.2 ms.

A runner too old to select a method stops at gflags' ``unknown command line flag``.
"""

from __future__ import annotations

import re
import statistics
from typing import Any

from cephalon_edge.errors import DeviceError

NAME = "executor_runner"
HINT = ("build ExecuTorch's executor_runner for Android {abi} with the XNNPACK backend (CMake with the Android "
        "NDK toolchain, -DEXECUTORCH_BUILD_XNNPACK=ON; ExecuTorch 1.0 or newer, whose runner takes --method_name)")
MAX_OUTPUT = 1 << 20
MAX_LINE = 2000
NUMBER = r"(\d{1,12}(?:\.\d{0,12})?(?:[eE][-+]?\d{1,3})?)"
ITERATION = re.compile(rf"Iteration (\d{{1,9}}) of \d{{1,9}}: {NUMBER} ms")
TOTAL = re.compile(rf"Model executed successfully (\d{{1,9}}) time\(s\) in {NUMBER} ms")
LOADED = re.compile(rf"Model loaded in {NUMBER} ms")
# per-op tables need a runner built with event tracing and its ETDump read back: not done here
OP_PROFILING: list[str] = []


def command(binary: str, model: str, method: str | None, runtime: dict[str, Any], runs: int,
            warmup: int) -> list[str]:
    """One run of ``method`` of ``model`` on the profile's thread count (the delegate was chosen
    at export: it is in the program)."""
    return [binary, f"--model_path={model}", *([f"--method_name={method}"] if method else []),
            f"--num_executions={warmup + runs}", f"--cpu_threads={runtime.get('threads', 4)}"]


def delegate(manifest: Any, runtime: dict[str, Any]) -> str:
    """The delegate a run uses: the one the package was lowered to at export (the profile's
    runtime delegate does not apply to an ExecuTorch program)."""
    backends = {(seg.get("delegation") or {}).get("backend", "portable") for seg in manifest.segments.values()}
    return ",".join(sorted(backends))


def diagnose(text: str) -> DeviceError | None:
    """The error to report for a failed run's output, when the runner says something known."""
    if "unknown command line flag 'method_name'" in text[-MAX_OUTPUT:]:
        return DeviceError("this executor_runner cannot select a method (no --method_name flag) and a package "
                           "holds one method per segment: use the executor_runner of ExecuTorch 1.0 or newer",
                           hint=HINT.format(abi="the device's ABI"))
    return None


def parse(text: str, warmup: int = 0) -> dict[str, Any]:
    """Timings in microseconds (the benchmark_model parser's keys): the mean, spread and
    minimum of the iterations after ``warmup``; ``init_us`` (load) and ``first_us``."""
    lines = [line for line in text[-MAX_OUTPUT:].splitlines() if len(line) <= MAX_LINE]
    error = diagnose(text)
    if error:
        raise error
    iterations = [(int(m.group(1)), float(m.group(2))) for m in map(ITERATION.search, lines) if m]
    times = [ms * 1000 for _, ms in sorted(iterations)]
    result: dict[str, Any] = {}
    loaded = [m for m in map(LOADED.search, lines) if m]
    if loaded:
        result["init_us"] = float(loaded[-1].group(1)) * 1000
    if times:
        result["first_us"] = times[0]
        measured = times[warmup:] or times
        result.update(count=len(measured), avg_us=statistics.fmean(measured), min_us=min(measured),
                      max_us=max(measured), std_us=statistics.pstdev(measured))
    else:
        totals = [m for m in map(TOTAL.search, lines) if m]
        if not totals or int(totals[-1].group(1)) == 0:
            tail = " | ".join(line.strip() for line in lines[-3:])[:300]
            raise DeviceError(f"could not find execution times in executor_runner's output: {tail!r}")
        count, total_ms = int(totals[-1].group(1)), float(totals[-1].group(2))
        result.update(count=count, avg_us=total_ms * 1000 / count, std_us=0.0)  # warm-up included: all it says
    if result["avg_us"] <= 0:
        raise DeviceError("executor_runner reported executions of 0 ms; the run measured nothing")
    return result


def parse_ops(text: str, delegate: str) -> list[Any]:
    raise DeviceError("executor_runner prints no per-op table")
