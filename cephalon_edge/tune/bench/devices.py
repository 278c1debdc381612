"""Attached devices of both platforms: Android over adb, iPhones/iPads over xcrun devicectl.
``devices`` lists them in one report; ``bench --device`` goes to the platform that runs the
package's target (LiteRT's benchmark_model on Android, coremltools' model runner on iOS)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from cephalon_edge.device.manifest import Manifest
from cephalon_edge.device.profiles import match_device
from cephalon_edge.errors import UsageError
from cephalon_edge.targets import get_target
from cephalon_edge.tune.bench.adb import Adb
from cephalon_edge.tune.bench.device import bench_devices, state_message
from cephalon_edge.tune.bench.host import BenchSpec
from cephalon_edge.tune.bench.ios import ALL_IOS, NO_XCRUN, bench_ios, device_rows, list_ios_devices, xcrun
from cephalon_edge.tune.bench.report import DevicesReport


def android_rows(adb: Adb) -> list[dict[str, Any]]:
    rows = []
    for d in adb.devices():
        p = d.props
        rows.append({"platform": "android", "serial": d.serial, "state": d.state, "model": p.get("ro.product.model"),
                     "manufacturer": p.get("ro.product.manufacturer"),
                     "soc": p.get("ro.soc.model") or p.get("ro.board.platform"),
                     "android": p.get("ro.build.version.release"), "sdk": p.get("ro.build.version.sdk"),
                     "abi": p.get("ro.product.cpu.abi"), "profile": match_device(p) if d.ready else None,
                     "message": None if d.ready else state_message(d)})
    return rows


def list_devices(adb: Adb | None = None) -> dict[str, Any]:
    """The ``devices`` report: Android devices over adb and iOS devices over xcrun, their
    properties and matching profile; ``notes`` say which kind could not be looked for here.
    With neither adb nor xcrun there is nothing to list: that is an error (exit 2)."""
    rows: list[dict[str, Any]] = []
    notes: list[str] = []
    missing_adb = None
    try:
        rows += android_rows(adb or Adb())
    except UsageError as exc:  # adb is not installed
        missing_adb = exc
    exe = xcrun()
    if exe is None:
        if missing_adb is not None:
            raise UsageError(f"{missing_adb.message}; and {NO_XCRUN}", hint=missing_adb.hint)
        notes.append(NO_XCRUN)
    else:
        rows += device_rows(list_ios_devices(exe))
    if missing_adb is not None:
        notes.append(f"Android devices: {missing_adb.message} ({missing_adb.hint})")
    return {"schema": "cephalon-edge/devices/1", "devices": rows, "notes": notes}


def bench_on_devices(package: Path, spec: BenchSpec, team_id: str | None = None,
                     on_progress: Callable[[str], None] | None = None) -> DevicesReport:
    """``bench --device``: a Core ML package (or ``--device all-ios``) on iPhones, else on Android."""
    target = get_target(Manifest.open(Path(package), verify=False).target)
    if spec.device == ALL_IOS or target.ios_benchmark:
        return bench_ios(package, spec, team_id=team_id, on_progress=on_progress)
    return bench_devices(package, spec, on_progress=on_progress)
