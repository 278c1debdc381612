"""Operating points of a variants package (width variant x exit thresholds): chosen by
``calibrate`` on each variant, measured end to end by ``bench`` on the host, and re-priced
from a phone's own segment latencies by ``bench --device`` (whose figures then replace the
host's in ``variants.json``, so the router's choice is right for that phone)."""

from __future__ import annotations

import platform
import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np

from cephalon_edge.device.manifest import Manifest
from cephalon_edge.device.router import Router
from cephalon_edge.device.runtimes import open_runtime
from cephalon_edge.device.variants import OperatingPoint, VariantTable, choose_point
from cephalon_edge.errors import DeviceError, Note
from cephalon_edge.tune.bench.host import BenchSpec, bench_data, bench_host
from cephalon_edge.tune.bench.pricing import price_on_device
from cephalon_edge.tune.bench.report import DevicesReport
from cephalon_edge.tune.calibrate import CalibrateSpec, calibrate_package
from cephalon_edge.tune.timing import alternating_blocks, stats_ms

Progress = Callable[[str], None]
MAX_TIMED_POINTS = 64  # operating points bench times end to end (the table may hold thousands)


def calibrate_variants(package: Path, spec: CalibrateSpec, on_progress: Progress | None = None) -> dict[str, Any]:
    """Calibrate every variant (each keeps the thresholds the mode asks for) and write the
    operating-point table: each variant's validation Pareto front, priced with latencies
    measured on this host with the package's own runtime."""
    step = on_progress or (lambda _: None)
    table = VariantTable.open(Path(package))
    reports = {name: calibrate_package(table.package(name), spec, on_progress=lambda what, n=name: step(f"{n}: {what}"))
               for name in table.names}
    source = f"host {platform.node()} {platform.machine()}"
    points = [{"variant": name, "thresholds": p["thresholds"], "accuracy": p["accuracy"], "latency_ms": p["expected_ms"],
               "flops": p["expected_flops"], "source": source, "calibrated": p["chosen"]}
              for name, report in reports.items() for p in report["pareto"]]
    full = reports[table.full]["test"]
    reference = {"static_ms": full["static_mean_ms"], "accuracy": full["full_depth_accuracy"],
                 "flops": full["static_flops"], "source": f"{source} ({full['static_source']}, held-out)"}
    table.write(operating_points=points, reference=reference)
    return {"schema": "cephalon-edge/calibrate/1", "package": str(package), "variants": reports,
            "operating_points": points, "reference": reference}


def bench_variants(package: Path, spec: BenchSpec, budget_ms: float | None = None,
                   on_progress: Progress | None = None) -> dict[str, Any]:
    """Bench every variant (segments, end to end at its calibrated thresholds) and time every
    operating point end to end on real data, in alternating blocks; with ``budget_ms``, the
    point the router would choose."""
    step = on_progress or (lambda _: None)
    table = VariantTable.open(Path(package))
    reports = {name: bench_host(table.package(name), spec, on_progress=lambda what, n=name: step(f"{n}: {what}")).to_json()
               for name in table.names}
    points = table.points
    if len(points) > MAX_TIMED_POINTS:  # each point is timed over the whole bench data
        warnings.warn(f"{package}: {len(points)} operating points; timing the first {MAX_TIMED_POINTS}", Note, stacklevel=2)
    measured = measure_points(table, points[:MAX_TIMED_POINTS], spec) if points else []
    chosen = None
    if budget_ms is not None:
        point, fits = choose_point(points, budget_ms)
        chosen = {**point.to_dict(), "fits_budget": fits, "budget_ms": budget_ms}
    full = reports[table.full]
    return {"schema": "cephalon-edge/bench/1", "package": str(package), "device": "host", "profile": spec.profile,
            "runtime": full["runtime"], "variants": reports, "operating_points": measured, "budget": chosen,
            "reference": {"static_ms": full["static"]["mean_ms"] if full.get("static") else None,
                          "accuracy": None}}


def measure_points(table: VariantTable, points: list[OperatingPoint], spec: BenchSpec) -> list[dict[str, Any]]:
    """Every operating point's batch-1 latency and accuracy on the bench data, timed in
    alternating blocks (one session per variant, shared by its points)."""
    routers = {name: Router.open(table.package(name), threads=spec.threads) for name in table.names}
    try:
        data = bench_data(routers[table.full].manifest, spec.data, spec.label_map)
        if spec.samples:
            data = data.subset(np.arange(min(spec.samples, len(data))))

        def runner(p: OperatingPoint) -> Callable[[int], Any]:
            router = routers[p.variant]
            return lambda i: router.predict({k: v[i:i + 1] for k, v in data.inputs.items()}, thresholds=p.thresholds)

        runners = {str(i): runner(p) for i, p in enumerate(points)}
        times, results = alternating_blocks(len(data), runners)
    finally:
        for r in routers.values():
            r.close()
    rows = []
    for i, p in enumerate(points):
        preds = results[str(i)]
        correct = np.mean([int(pr.predicted[0]) == int(data.labels[j]) for j, pr in enumerate(preds)])
        rows.append({**p.to_dict(), "measured": {**stats_ms(times[str(i)]), "accuracy": float(correct),
                                                 "dataset": data.name, "samples": len(data)}})
    return rows


def reprice_on_device(package: Path, spec: BenchSpec, device_reports: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Price every operating point with one device's measured segment latencies (the exit mix
    and gate/expert decisions of each point routed here on real data) and write them into
    ``variants.json`` in place of the host's figures."""
    table = VariantTable.open(Path(package))
    serial = _first_ok(device_reports[table.full])
    points = []
    for name in table.names:
        entry = next(d for d in device_reports[name]["devices"] if d["device"] == serial)
        if entry["status"] != "ok":
            raise DeviceError(f"variant {name} failed on {serial}: {entry.get('error')}")
        manifest = Manifest.open(table.package(name))
        data = bench_data(manifest, spec.data, spec.label_map)
        with Router(manifest, open_runtime("auto", manifest)) as router:
            for p in table.points:
                if p.variant != name:
                    continue
                pred = router.predict(data.inputs, thresholds=p.thresholds)
                latency = price_on_device(manifest, pred, entry["segments"], list(data.inputs))["mean_ms"]
                points.append({**p.to_dict(), "latency_ms": latency,
                               "source": f"device {serial} ({entry.get('model') or 'unknown model'}), expected from "
                                         f"its segment latencies on {data.name}"})
    static = next(d for d in device_reports[table.full]["devices"] if d["device"] == serial).get("static")
    reference = {**(table.data.get("reference") or {}), "static_ms": static["mean_ms"] if static else None,
                 "source": f"device {serial}"}
    table.write(operating_points=points, reference=reference)
    return {"device": serial, "operating_points": points, "reference": reference}


def _first_ok(report: dict[str, Any]) -> str:
    ok = [d["device"] for d in report["devices"] if d["status"] == "ok"]
    if not ok:
        raise DeviceError("no device finished the bench; the operating points keep the host's latencies")
    return ok[0]


def bench_variants_on_devices(package: Path, spec: BenchSpec, bench_one: Callable[[Path, Progress], DevicesReport],
                              on_progress: Progress | None = None) -> dict[str, Any]:
    """``bench --device`` / ``--hub`` of a variants package: every variant benched by
    ``bench_one(variant_package, on_progress)`` on the device(s), then every operating point
    re-priced from the first device that finished, written into the table."""
    step = on_progress or (lambda _: None)
    table = VariantTable.open(Path(package))
    reports = {name: bench_one(table.package(name), lambda what, n=name: step(f"{n}: {what}")).to_json()
               for name in table.names}
    full = reports[table.full]
    failed = [f for r in reports.values() for f in r.get("failed", [])]
    repriced = reprice_on_device(Path(package), spec, reports) if table.points else None
    return {**full, "variants": reports, "failed": failed,
            "operating_points": repriced["operating_points"] if repriced else [],
            "reference": repriced["reference"] if repriced else None,
            "repriced_on": repriced["device"] if repriced else None}
