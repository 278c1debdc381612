"""Android bench over adb: per-segment device latency measured by the target's own tool
(LiteRT's ``benchmark_model`` for TFLite, ExecuTorch's ``executor_runner`` for ExecuTorch),
combined with the exit distribution the same package shows on real data into expected
end-to-end latency (percentiles by resampling). Devices run in parallel."""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any, Callable, Protocol, cast

import numpy as np

from cephalon_edge.device.manifest import Manifest
from cephalon_edge.device.mixes import mix_name
from cephalon_edge.device.profiles import DEPRECATED, load_profile, match_device
from cephalon_edge.device.router import Router
from cephalon_edge.device.runtimes import open_runtime
from cephalon_edge.errors import DeviceError, UsageError
from cephalon_edge.targets import get_target, require_device_bench
from cephalon_edge.tune.bench import benchmark_model, executor_runner
from cephalon_edge.tune.bench.adb import Adb, Device, device_path
from cephalon_edge.tune.bench.host import BenchSpec, bench_data, validate
from cephalon_edge.tune.bench.parallel import run_each
from cephalon_edge.tune.bench.placement import OpTime, from_lowered_program, placement_row
from cephalon_edge.tune.bench.report import DeviceRow, DevicesReport

class DeviceBenchTool(Protocol):
    """A target's on-device benchmark tool (a module: ``benchmark_model``, ``executor_runner``):
    its command line, the delegate it will use, its output parsed, its failures explained."""

    NAME: str
    HINT: str
    OP_PROFILING: list[str]  # the flags that add a per-op table to a run; empty: the tool has none

    def command(self, binary: str, model: str, method: str | None, runtime: dict[str, Any], runs: int,
                warmup: int) -> list[str]: ...

    def delegate(self, manifest: Any, runtime: dict[str, Any]) -> str: ...

    def diagnose(self, text: str) -> DeviceError | None: ...

    def parse(self, text: str, warmup: int = 0) -> dict[str, Any]: ...

    def parse_ops(self, text: str, delegate: str) -> list[OpTime]: ...


# by Target.android_benchmark
TOOLS: dict[str, DeviceBenchTool] = {tool.NAME: cast(DeviceBenchTool, tool) for tool in (benchmark_model, executor_runner)}


def cache_dir() -> Path:
    return Path(os.environ.get("CEPHALON_EDGE_CACHE", "~/.cache/cephalon-edge")).expanduser()


def find_binary(explicit: Path | None, abi: str, tool: DeviceBenchTool = TOOLS[benchmark_model.NAME]) -> Path:
    """``--benchmark-binary``, or ``<cache>/<tool>/<abi>/<tool>`` (``benchmark_model``,
    ``executor_runner``)."""
    if explicit is not None:
        if not Path(explicit).is_file():
            raise UsageError(f"benchmark binary not found: {explicit}")
        return Path(explicit)
    cached = cache_dir() / tool.NAME / abi / tool.NAME
    if cached.is_file():
        return cached
    raise UsageError(f"no {tool.NAME} binary for {abi}",
                     hint=f"{tool.HINT.format(abi=abi)}, then pass --benchmark-binary PATH or put it at {cached}")


class _DeviceRun:
    """One device's bench; keeps what it measured so far if the device goes away."""

    def __init__(self, adb: Adb, device: Device, manifest: Manifest, spec: BenchSpec, tool: DeviceBenchTool, binary: Path,
                 on_progress: Callable[[str], None]) -> None:
        self.adb, self.device, self.manifest, self.spec, self.binary = adb, device, manifest, spec, binary
        self.tool = tool
        self.profile_name = spec.profile if spec.profile != "host-cpu" else (match_device(device.props) or "android-arm64-cpu")
        self.profile = load_profile(self.profile_name)
        self.segments: list[dict[str, Any]] = []
        self.placement: list[dict[str, Any]] = []
        self.static: dict[str, Any] | None = None
        self.step = "start"
        self.on_progress = on_progress
        self.cancelled = threading.Event()  # set on Ctrl-C: stop before the next adb step
        self.prepared = False

    def _next(self, step: str) -> None:
        if self.cancelled.is_set():
            raise DeviceError(f"{self.device.serial}: cancelled before {step}")
        self.step = step

    def _run(self, binary: str, file: str, method: str | None, step: str, extra: list[str]) -> str:
        self._next(step)
        args = self.tool.command(binary, self._remote(file), method, self.profile["runtime"], self.spec.runs,
                                 self.spec.warmup) + extra
        try:
            return self.adb.shell(self.device.serial, args, step)
        except DeviceError as exc:
            raise self.tool.diagnose(exc.message) or exc from None

    def measure(self, binary: str, file: str, method: str | None, step: str) -> dict[str, Any]:
        """One run of the tool on ``method`` of package file ``file``, parsed."""
        return self.tool.parse(self._run(binary, file, method, step, []), self.spec.warmup)

    def profile_ops(self, binary: str, name: str, seg: dict[str, Any]) -> None:
        """A second run of the segment with the tool's op profiling (its own run, so the
        profiler's overhead stays out of the latency above): where each op ran."""
        delegate = self.profile["runtime"]["delegate"]
        out = self._run(binary, seg["file"], seg.get("signature"), f"op profile {name}", self.tool.OP_PROFILING)
        ops = self.tool.parse_ops(out, delegate)
        accelerator = next((o.unit for o in ops if not o.fallback and o.unit != "CPU"), delegate.upper())
        self.placement.append(placement_row(name, f"device op profile ({self.tool.NAME})", accelerator, ops))

    def run(self) -> None:
        serial = self.device.serial
        self._next("push")
        self.adb.prepare(serial)
        self.prepared = True
        files = sorted(self.manifest.segment_files)
        static = self.manifest.static
        for f in files + ([static["file"]] if static else []):
            self._next("push")
            self.adb.push(serial, self.manifest.member(f), f)
        binary = self.adb.push(serial, self.binary, self.tool.NAME)
        self._next("chmod")
        self.adb.shell(serial, ["chmod", "755", binary], "chmod")
        for name, seg in self.manifest.segments.items():
            parsed = self.measure(binary, seg["file"], seg.get("signature"), f"run {name}")
            self.segments.append({"name": name, "cold_ms": (parsed.get("init_us", 0) + parsed.get("first_us", 0)) / 1000,
                                  "mean_ms": parsed["avg_us"] / 1000, "std_ms": parsed["std_us"] / 1000,
                                  "min_ms": parsed.get("min_us", parsed["avg_us"]) / 1000,
                                  "peak_mb": parsed.get("peak_mb")})
            if self.spec.ops and self.tool.OP_PROFILING:
                self.profile_ops(binary, name, seg)
            self.on_progress(f"{serial}: {name}")
        if static:
            parsed = self.measure(binary, static["file"], static.get("signature"), "run static")
            self.static = {"mean_ms": parsed["avg_us"] / 1000, "std_ms": parsed["std_us"] / 1000,
                           "peak_mb": parsed.get("peak_mb")}
        if not self.spec.keep:
            self._next("cleanup")
            self.adb.cleanup(serial)

    def cancel(self) -> None:
        """Stop before the next step and remove what was pushed (best effort: the device
        may be gone, or the interrupt may have stopped adb too)."""
        self.cancelled.set()
        if self.prepared and not self.spec.keep:
            try:
                self.adb.cleanup(self.device.serial)
            except DeviceError:
                pass

    @staticmethod
    def _remote(file: str) -> str:
        return device_path(file)


def bench_devices(package: Path, spec: BenchSpec, on_progress: Callable[[str], None] | None = None,
                  adb: Adb | None = None) -> DevicesReport:
    """Bench ``package`` on ``spec.device`` (a serial or ``all``); failures are in ``failed``."""
    validate(spec)
    step = on_progress or (lambda _: None)
    manifest = Manifest.open(Path(package))
    tool = TOOLS[str(require_device_bench(manifest.target, "android").android_benchmark)]
    adb = adb or Adb()
    attached = adb.devices()
    if spec.device == "all":
        chosen = attached
    else:
        chosen = [d for d in attached if d.serial == spec.device]
        if not chosen:
            raise UsageError(f"device {spec.device!r} is not attached",
                             hint=f"attached: {', '.join(d.serial for d in attached) or 'none'} (see `cephalon-edge devices`)")
    if not chosen:
        raise UsageError("no Android device attached", hint="connect a phone with USB debugging on; `cephalon-edge devices` lists them")
    ready = [d for d in chosen if d.ready]
    not_ready = [{"serial": d.serial, "state": d.state, "error": state_message(d)} for d in chosen if not d.ready]
    if not ready:
        raise DeviceError("; ".join(e["error"] for e in not_ready))
    binaries = {d.serial: find_binary(spec.benchmark_binary, adb.abi(d), tool) for d in ready}

    # the exit mix of this very package on real data, measured on the host (TFLite runs here)
    data = bench_data(manifest, spec.data, spec.label_map)
    if spec.samples:
        data = data.subset(np.arange(min(spec.samples, len(data))))
    mix = data.select_mixes(spec.modality, list(manifest.inputs))[-1]  # one mix: --modality, else the fullest
    data = data.with_mix(mix)
    with Router(manifest, open_runtime("auto", manifest)) as router:
        pred = router.predict(data.inputs)
    step("exit mix measured")

    runs = [_DeviceRun(adb, d, manifest, spec, tool, binaries[d.serial], step) for d in ready]
    errors: dict[str, str] = {}

    def one(run: _DeviceRun) -> None:
        try:
            run.run()
        except DeviceError as exc:
            errors[run.device.serial] = f"{exc.message} (during {run.step})"

    # Ctrl-C: no device starts another step; each cleans up after its current one
    run_each(runs, one, lambda run: run.cancelled.set())

    devices = []
    for run in runs:
        row = DeviceRow(run.device.serial, run.device.props.get("ro.product.model"), run.profile_name,
                        run.segments, run.static)
        row.details["delegate"] = tool.delegate(manifest, run.profile["runtime"])
        if spec.ops and tool.OP_PROFILING:
            row.details["placement"] = run.placement
        elif spec.ops:  # the runner times no op: where each op runs is what the partitioner lowered
            row.details["placement"] = [from_lowered_program(name, seg.get("delegation"))
                                        for name, seg in manifest.segments.items()]
            row.details["ops_note"] = f"{tool.NAME} reports no per-op times; placement is the lowered program's"
        note = DEPRECATED.get(row.details["delegate"])
        if note:
            row.details["note"] = note
        if run.device.serial in errors:
            row.fail(errors[run.device.serial], run.step)
        row.price(manifest, pred, list(data.inputs), data.name)
        devices.append(row)
    return DevicesReport(str(package), f"{get_target(manifest.target).runtime} ({tool.NAME})", mix_name(mix),
                         spec.profile, devices, not_ready)


def state_message(device: Device) -> str:
    if device.state == "unauthorized":
        return f"device {device.serial} is unauthorized: accept the USB debugging prompt on the phone"
    if device.state == "offline":
        return f"device {device.serial} is offline: reconnect it (or `adb reconnect`)"
    return f"device {device.serial} is {device.state}"
