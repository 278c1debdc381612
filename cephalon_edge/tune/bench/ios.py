"""iPhones and iPads (torch-free): listing through ``xcrun devicectl``, and benching Core ML
packages on a device through coremltools' remote device (macOS with Xcode only).

Listing reads ``xcrun devicectl list devices --json-output FILE``, the command and fields
coremltools' ``remote_device.Device.get_devices`` reads, so it needs no coremltools (and a
fake ``xcrun`` can emulate a device in tests). Benching uses coremltools 9's
``remote_device.Device.prepare_for_model_debugging`` (builds, signs and launches its
model-runner app with xcodebuild) and ``perf_utils.MLModelBenchmarker`` (load and predict
latency on the device), then combines per-segment device latency with the exit mix the same
package shows on real data, as the Android bench does.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from cephalon_edge.device.manifest import Manifest
from cephalon_edge.device.mixes import mix_name
from cephalon_edge.device.profiles import load_profile, matches, profile_names
from cephalon_edge.device.router import Router
from cephalon_edge.device.runtimes import open_runtime
from cephalon_edge.errors import DeviceError, UsageError
from cephalon_edge.targets import require_device_bench
from cephalon_edge.tune.bench.host import BenchSpec, bench_data, validate
from cephalon_edge.tune.bench.report import DeviceRow, DevicesReport

XCRUN_TIMEOUT = 120
MAX_DEVICES = 256
TEAM_ENV = "CEPHALON_IOS_TEAM_ID"
ALL_IOS = "all-ios"
NEEDS_MAC = ("benchmarking on an iPhone needs macOS with Xcode: coremltools builds, signs and launches its "
             "model-runner app there with xcodebuild and xcrun devicectl")
NO_XCRUN = "iOS devices need macOS with Xcode (xcrun devicectl); none listed here"
DEVELOPER_MODE = "turn on Developer Mode (Settings > Privacy & Security > Developer Mode) and restart the device"


@dataclass(frozen=True)
class IOSDevice:
    udid: str
    name: str
    device_type: str  # iphone | ipad | ...
    product_type: str  # the model identifier, e.g. iPhone16,1
    marketing_name: str
    os_version: str
    developer_mode: str  # enabled | disabled | ...
    state: str  # connected | available | unavailable | disconnected | ...

    @property
    def props(self) -> dict[str, str]:
        """What ``[match]`` rules of iOS profiles test (``ios.product_type``)."""
        return {"ios.product_type": self.product_type}

    @property
    def problem(self) -> str | None:
        if self.state != "connected":
            return f"{self.name} ({self.udid}) is {self.state}: connect it by USB, unlock it and trust this Mac"
        if self.developer_mode != "enabled":
            return f"{self.name} ({self.udid}): Developer Mode is {self.developer_mode or 'off'}; {DEVELOPER_MODE}"
        return None


def match_ios_profile(device: IOSDevice) -> str | None:
    for name in profile_names():
        profile = load_profile(name)
        if profile["os"] == "ios" and matches(profile, device.props):
            return name
    return None


def xcrun() -> str | None:
    return shutil.which("xcrun")


def list_ios_devices(executable: str) -> list[IOSDevice]:
    """iPhones and iPads ``xcrun devicectl`` knows of (attached or paired)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "devices.json"
        try:
            proc = subprocess.run([executable, "devicectl", "list", "devices", "--json-output", str(out)],
                                  capture_output=True, text=True, timeout=XCRUN_TIMEOUT, check=False)
        except subprocess.TimeoutExpired:
            raise DeviceError(f"xcrun devicectl did not answer within {XCRUN_TIMEOUT} s") from None
        except OSError as exc:
            raise DeviceError(f"cannot run xcrun: {exc.strerror or exc}") from None
        if proc.returncode != 0:
            reason = (proc.stderr.strip().splitlines() or [f"exit {proc.returncode}"])[-1][:300]
            raise DeviceError(f"xcrun devicectl list devices failed: {reason}",
                              hint="install Xcode 15 or newer and run `xcode-select --install`")
        try:
            raw = json.loads(out.read_text()) if out.exists() else None
        except (ValueError, OSError, UnicodeDecodeError):
            raw = None
    devices = (raw or {}).get("result", {}).get("devices") if isinstance(raw, dict) else None
    if not isinstance(devices, list):
        raise DeviceError("xcrun devicectl gave no device list (unexpected JSON)",
                          hint="update Xcode; `xcrun devicectl list devices` should work in a terminal")
    listed = []
    for entry in devices[:MAX_DEVICES]:
        if not isinstance(entry, dict):
            continue
        dev, hw, conn = (_section(entry, k) for k in ("deviceProperties", "hardwareProperties", "connectionProperties"))
        kind = str(hw.get("deviceType", "")).lower()
        udid = str(hw.get("udid", ""))
        if kind not in ("iphone", "ipad") or not udid:
            continue  # Macs, watches, TVs: not what a Core ML package is benched on here
        listed.append(IOSDevice(udid=udid, name=str(dev.get("name", "")) or udid, device_type=kind,
                                product_type=str(hw.get("productType", "")),
                                marketing_name=str(hw.get("marketingName", "")),
                                os_version=str(dev.get("osVersionNumber", "")),
                                developer_mode=str(dev.get("developerModeStatus", "")).lower(),
                                state=str(conn.get("tunnelState", "unknown")).lower()))
    return listed


def _section(entry: dict[str, Any], key: str) -> dict[str, Any]:
    """``entry[key]`` when it is an object, else empty (devicectl's JSON is read defensively)."""
    value = entry.get(key)
    return value if isinstance(value, dict) else {}


def device_rows(devices: list[IOSDevice]) -> list[dict[str, Any]]:
    """``devices`` report rows for iOS devices (the Android rows' keys, plus the iOS ones)."""
    return [{"platform": "ios", "serial": d.udid, "state": d.state, "model": d.marketing_name or d.product_type,
             "manufacturer": "Apple", "soc": None, "android": None, "sdk": None, "abi": "arm64",
             "ios": d.os_version, "product_type": d.product_type, "developer_mode": d.developer_mode,
             "name": d.name, "profile": match_ios_profile(d), "message": d.problem} for d in devices]


# ---- benching on a device (macOS) -----------------------------------------------------------

def bench_ios(package: Path, spec: BenchSpec, team_id: str | None = None,
              on_progress: Callable[[str], None] | None = None) -> DevicesReport:
    """Bench a Core ML package on ``spec.device`` (a UDID or ``all-ios``); the report has the
    Android bench's shape (``devices[].segments[]``, ``end_to_end``)."""
    validate(spec)
    step = on_progress or (lambda _: None)
    manifest = Manifest.open(Path(package))
    target = require_device_bench(manifest.target, "ios")
    if sys.platform != "darwin":
        raise UsageError(NEEDS_MAC, hint="run it on a Mac with the iPhone attached; on Linux, bench a tflite "
                                         "package on Android with --device SERIAL")
    exe = xcrun()
    if exe is None:
        raise UsageError("xcrun not found: install Xcode and its command line tools (xcode-select --install)")
    team = team_id or os.environ.get(TEAM_ENV)
    if not team:
        raise UsageError("signing coremltools' model-runner app needs your Apple development team",
                         hint=f"pass --team-id TEAMID or set {TEAM_ENV} (Xcode > Settings > Accounts)")
    attached = list_ios_devices(exe)
    chosen = attached if spec.device == ALL_IOS else [d for d in attached if d.udid == spec.device]
    if not chosen:
        raise UsageError(f"iOS device {spec.device!r} is not attached" if spec.device != ALL_IOS
                         else "no iPhone or iPad attached",
                         hint=f"attached: {', '.join(d.udid for d in attached) or 'none'} (see `cephalon-edge devices`)")
    not_ready = [{"serial": d.udid, "state": d.state, "error": d.problem} for d in chosen if d.problem]
    ready = [d for d in chosen if not d.problem]
    if not ready:
        raise DeviceError("; ".join(e["error"] for e in not_ready))

    data = bench_data(manifest, spec.data, spec.label_map)
    if spec.samples:
        data = data.subset(np.arange(min(spec.samples, len(data))))
    mix = data.select_mixes(spec.modality, list(manifest.inputs))[-1]
    data = data.with_mix(mix)
    with Router(manifest, open_runtime("auto", manifest)) as router:  # Core ML runs on this Mac
        pred = router.predict(data.inputs)
    step("exit mix measured")

    devices = []
    for device in ready:
        profile_name = spec.profile if spec.profile != "host-cpu" else (match_ios_profile(device) or "iphone-15-pro")
        units = load_profile(profile_name).get(target.name, {}).get("compute_units", "ALL")
        row = DeviceRow(device.udid, device.marketing_name or device.product_type, profile_name)
        row.details["delegate"] = units
        where = "preparing the model-runner app"
        try:
            remote = _prepare(device, team, target.extra)
            for name, seg in manifest.segments.items():
                where = f"segment {name}"
                row.segments.append(_bench_file(remote, manifest.file_of(name), seg.get("signature"), units,
                                                spec, name, seg["flops"]))
                step(f"{device.name}: {name}")
            if manifest.static:
                where = "the static model"
                row.static = _bench_file(remote, manifest.static_file(), None, units, spec, "static", 0)
        except Exception as exc:  # coremltools raises its own untyped errors; keep what was measured
            row.fail(f"device {device.udid}: {str(exc).strip()[:300]} (during {where})", where)
        row.price(manifest, pred, list(data.inputs), data.name)
        devices.append(row)
    return DevicesReport(str(package), f"{target.runtime} (on device)", mix_name(mix), spec.profile, devices, not_ready)


def _prepare(device: IOSDevice, team: str, extra: str) -> Any:
    """coremltools' device, with its model-runner app built, signed and launched on it."""
    from cephalon_edge.extras import require

    require(extra, "benchmarking on an iPhone")
    from coremltools.models.ml_program.experimental.remote_device import (
        AppSigningCredentials,
        Device,
        DeviceType,
    )

    found = [d for kind in (DeviceType.IPHONE, DeviceType.IPAD)
             for d in Device.get_connected_devices(kind) if d.udid == device.udid]
    if not found:
        raise DeviceError(f"{device.name} ({device.udid}) is no longer connected")
    return asyncio.run(found[0].prepare_for_model_debugging(
        credentials=AppSigningCredentials(development_team=team)))


def _bench_file(remote: Any, path: Path, function: str | None, units: str, spec: BenchSpec, name: str,
                flops: float) -> dict[str, Any]:
    """Load and predict latency of one Core ML model (or function of a multifunction one)."""
    import coremltools as ct
    from coremltools.models.ml_program.experimental.perf_utils import MLModelBenchmarker

    model = ct.models.MLModel(str(path), compute_units=ct.ComputeUnit[units], function_name=function)
    bench = MLModelBenchmarker(model=model, device=remote)
    load = asyncio.run(bench.benchmark_load(iterations=1))
    predict = asyncio.run(bench.benchmark_predict(iterations=spec.runs, warmup=spec.warmup > 0))
    stats = predict.statistics
    times = np.asarray(predict.samples, dtype=np.float64)
    return {"name": name, "cold_ms": load.statistics.median, "min_ms": stats.minimum, "p50_ms": stats.median,
            "p90_ms": float(np.percentile(times, 90)), "p99_ms": float(np.percentile(times, 99)),
            "mean_ms": stats.average, "std_ms": stats.std_dev, "flops": flops}
