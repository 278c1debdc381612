"""The report of a bench on devices, typed: one shape (``cephalon-edge/bench/1`` with
``devices[]``) for phones over adb, iPhones, Linux boards over SSH and AI Hub's phones.

Each kind of device fills the common fields and adds what only it knows in ``details``
(a phone's delegate, a board's OS and copied files, a farm phone's jobs); pricing the
expected routed latency from a device's segment latencies is one method here for all of them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

from cephalon_edge.device.manifest import Manifest
from cephalon_edge.tune.bench.pricing import price_on_device

SCHEMA = "cephalon-edge/bench/1"


@dataclass
class DeviceRow:
    """One device's results: its segments and the static model as it measured them, and the
    routed latency (priced from them, or measured on a board)."""

    device: str  # serial, UDID, board name or farm device name
    model: str | None
    profile: str | None
    segments: list[dict[str, Any]] = field(default_factory=list)  # name, mean_ms, std_ms, ...
    static: dict[str, Any] | None = None  # the plain model at the runtime's defaults
    status: str = "ok"  # or "failed"
    error: str | None = None
    step: str | None = None  # what the device was doing when it failed
    end_to_end: dict[str, Any] | None = None
    speedup: float | None = None  # static / end to end
    details: dict[str, Any] = field(default_factory=dict)  # what this kind of device adds

    def fail(self, error: str, step: str | None) -> None:
        """Failed at ``step``; what it measured before stays in the row."""
        self.status, self.error, self.step = "failed", error, step

    def price(self, manifest: Manifest, pred: Any, modalities: Sequence[str], dataset: str) -> None:
        """End to end on this device: the routes ``pred`` took (measured on this host, on
        ``dataset``) priced with this device's segment latencies, when it measured them all
        (a device that failed later, on the static model, is priced too); the speedup over
        its static model."""
        if not self.segments or len(self.segments) != len(manifest.segments):
            return
        self.end_to_end = {**price_on_device(manifest, pred, self.segments, modalities), "dataset": dataset}
        if self.static:
            self.speedup = self.static["mean_ms"] / self.end_to_end["mean_ms"]

    def to_json(self) -> dict[str, Any]:
        out = {"device": self.device, "model": self.model, "profile": self.profile, **self.details,
               "segments": self.segments, "static": self.static, "status": self.status,
               "end_to_end": self.end_to_end, "speedup": self.speedup}
        if self.status == "failed":
            out |= {"error": self.error, "step": self.step}
        return out


@dataclass
class DevicesReport:
    """``bench --device``, ``--ssh`` or ``--hub``: a row per device; devices that could not
    start (``not_ready``: serial, state, error) and rows that failed are both in ``failed``."""

    package: str
    runtime: str
    modality: str
    profile: str | None
    devices: list[DeviceRow]
    not_ready: list[dict[str, Any]] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)  # what this kind of bench adds

    @property
    def failed(self) -> list[dict[str, Any]]:
        return [d.to_json() for d in self.devices if d.status == "failed"] + self.not_ready

    def to_json(self) -> dict[str, Any]:
        return {"schema": SCHEMA, "package": self.package, "runtime": self.runtime, "modality": self.modality,
                "profile": self.profile, **self.details, "devices": [d.to_json() for d in self.devices],
                "not_ready": self.not_ready, "failed": self.failed}


@dataclass
class HostReport:
    """``bench PKG`` on this host: every segment, the routed package end to end and the
    plain static model at the runtime's defaults on the same data (``end_to_end`` and
    ``static`` are None when no data was at hand: ``note`` says why)."""

    package: str
    profile: str
    runtime: str
    threads: int | None
    thresholds: dict[str, float]
    calibrated: bool
    segments: list[dict[str, Any]]
    runs: int
    warmup: int
    end_to_end: dict[str, Any] | None = None
    static: dict[str, Any] | None = None
    modality: str | None = None
    modality_mixes: dict[str, dict[str, Any]] | None = None  # per mix of a multi-modal package
    routing_usage: dict[str, Any] | None = None
    batch: dict[str, Any] | None = None  # throughput at --batch N
    peak_rss_bytes: int | None = None
    latency_samples_ms: dict[str, list[float]] | None = None
    note: str | None = None

    @property
    def speedup(self) -> float | None:
        if self.static is None or self.end_to_end is None:
            return None
        return float(self.static["mean_ms"] / self.end_to_end["mean_ms"])

    def to_json(self) -> dict[str, Any]:
        speedup = self.speedup
        return {"schema": SCHEMA, "package": self.package, "profile": self.profile, "runtime": self.runtime,
                "threads": self.threads, "device": "host", "thresholds": self.thresholds,
                "calibrated": self.calibrated, "modality": self.modality, "modality_mixes": self.modality_mixes,
                "segments": self.segments, "end_to_end": self.end_to_end, "static": self.static,
                "speedup": speedup, "routing_pays": None if speedup is None else speedup > 1,
                "peak_rss_bytes": self.peak_rss_bytes, "runs": self.runs, "warmup": self.warmup,
                "routing_usage": self.routing_usage, "batch": self.batch,
                "latency_samples_ms": self.latency_samples_ms, "note": self.note}
