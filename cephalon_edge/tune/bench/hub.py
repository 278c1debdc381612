"""Qualcomm AI Hub: every segment of a package, and its static model, profiled on the farm's
real phones through the ``qai-hub`` client (0.56), in the report shape of ``bench --device``.

- One inference job with profiling per model file and device (``submit_inference_job(...,
  profile=True)``: ``submit_profile_job`` is deprecated in 0.56), all submitted first and then
  waited on together; a failed job keeps every other job's results.
- Model files go up once: each file's AI Hub model id is cached by its sha256 and the API's
  address in ``<cache>/hub/models.json``; a cached model the farm no longer has goes up again.
- The files AI Hub takes, by the package's target (``Target.hub_framework``): ONNX (``.onnx``,
  ONNX Runtime on the device), TFLite (``.tflite``, one model per file: a package whose segments
  are signatures of one file is refused; ``export --profile snapdragon-ai-hub`` writes one per segment)
  and Core ML (``.mlpackage``, the farm's iPhones); not ExecuTorch programs.
- The API token is the client's own configuration (``qai-hub configure``): nothing here reads,
  writes or logs it.
AI Hub's figures are a microbenchmark of the framework call on the device, not an app's latency.
"""

from __future__ import annotations

import difflib
import json
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from cephalon_edge.device.manifest import Manifest
from cephalon_edge.device.mixes import mix_name
from cephalon_edge.device.profiles import match_device
from cephalon_edge.device.router import Router
from cephalon_edge.device.runtimes import open_runtime
from cephalon_edge.errors import DeviceError, UsageError
from cephalon_edge.extras import require
from cephalon_edge.fsutil import write_bytes_atomic
from cephalon_edge.targets import get_target, hub_targets
from cephalon_edge.tune.bench.device import cache_dir
from cephalon_edge.tune.bench.host import BenchSpec, bench_data, validate
from cephalon_edge.tune.bench.placement import OpTime, placement_row
from cephalon_edge.tune.bench.report import DeviceRow, DevicesReport

CONFIGURE = "run `qai-hub configure --api_token YOUR_TOKEN` (the token is on your AI Hub account page)"
ACCELERATORS = ("NPU", "GPU")  # AI Hub's compute units; the rest is CPU
POLL_FIRST_S, POLL_MAX_S = 1.0, 15.0
BOX = str.maketrans("", "", "┌┐└┘─│|")


def one_line(exc: BaseException) -> str:
    """The client's message (often a boxed paragraph) as one line."""
    text = " ".join(line.translate(BOX).strip() for line in str(exc).splitlines())
    return re.sub(r"\s+", " ", text).strip()[:400] or type(exc).__name__


def _errors() -> tuple[type[BaseException], ...]:
    from qai_hub.client import Error
    from qai_hub.public_rest_api import APIException

    return Error, APIException


def _refused(exc: BaseException) -> bool:
    text = str(exc)
    return "authenticate" in text or "API token" in text


class Hub:
    """The client, with every call's failure turned into one line."""

    def __init__(self) -> None:
        require("hub", "Qualcomm AI Hub (--hub)")
        import qai_hub

        self.client = qai_hub.Client()
        try:
            config = self.client.config
        except _errors() as exc:
            raise UsageError("Qualcomm AI Hub is not configured on this machine", hint=CONFIGURE) from exc
        self.api_url = config.api_url
        self.client.set_verbose(False)  # the client prints progress to stdout; ours is the progress bar

    def call(self, what: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except _errors() as exc:
            from qai_hub.client import RateLimitedError

            if _refused(exc):
                raise UsageError("Qualcomm AI Hub refused the API token", hint=CONFIGURE) from exc
            if isinstance(exc, RateLimitedError):
                raise DeviceError(f"AI Hub rate limit while {what} (after the client's own retries): "
                                  f"{one_line(exc)}") from exc
            raise DeviceError(f"AI Hub: {what}: {one_line(exc)}") from exc

    def devices(self) -> list[Any]:
        return self.call("listing devices", self.client.get_devices)


def _attribute(device: Any, prefix: str) -> str | None:
    return next((a.split(":", 1)[1] for a in device.attributes if a.startswith(prefix + ":")), None)


def device_rows(hub: Hub) -> list[dict[str, Any]]:
    """``devices --hub``: the farm's devices, their OS, chipset, frameworks and matching profile."""
    return [{"platform": "hub", "serial": d.name, "state": "device", "model": d.name, "os": d.os,
             "soc": _attribute(d, "chipset"), "frameworks": _frameworks(d),
             "profile": match_device({"hub.device": d.name}), "message": None} for d in hub.devices()]


def resolve_devices(names: Sequence[str], farm: Sequence[Any], framework: str) -> list[Any]:
    """The farm's device of each name (its latest OS), refusing unknown names (with close
    matches) and devices that do not run the package's framework."""
    by_name: dict[str, Any] = {}
    for d in farm:  # the latest OS of each name
        if d.name not in by_name or _os_key(d.os) > _os_key(by_name[d.name].os):
            by_name[d.name] = d
    chosen = []
    for name in dict.fromkeys(names):
        if name not in by_name:
            close = difflib.get_close_matches(name, list(by_name), n=3, cutoff=0.5)
            raise UsageError(f"AI Hub has no device named {name!r}",
                             hint=(f"did you mean {', '.join(map(repr, close))}? " if close else "")
                             + "`cephalon-edge devices --hub` lists them")
        device = by_name[name]
        if f"framework:{framework}" not in device.attributes:
            raise UsageError(f"AI Hub's {name!r} does not run {framework} models",
                             hint=f"its frameworks: {', '.join(_frameworks(device)) or 'none listed'}")
        chosen.append(device)
    return chosen


def _frameworks(device: Any) -> list[str]:
    return sorted(a.split(":", 1)[1] for a in device.attributes if a.startswith("framework:"))


def _os_key(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", version)[:4])


def hub_names(hub: Sequence[str] | None, hub_file: Path | None) -> list[str]:
    """``--hub NAME`` (repeatable) and ``--hub-file`` (one name per line, ``#`` comments)."""
    names = [n.strip() for n in hub or [] if n.strip()]
    if hub_file is not None:
        try:
            lines = Path(hub_file).read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageError(f"cannot read --hub-file {hub_file}: {exc}") from None
        names += [line.split("#", 1)[0].strip() for line in lines if line.split("#", 1)[0].strip()]
        if not names:
            raise UsageError(f"--hub-file {hub_file} names no device", hint="one AI Hub device name per line")
    return names


class ModelCache:
    """AI Hub model ids of uploaded files, by the API's address and the file's sha256."""

    def __init__(self, api_url: str) -> None:
        self.path = cache_dir() / "hub" / "models.json"
        self.api_url = api_url
        try:
            self.ids: dict[str, str] = json.loads(self.path.read_text())
        except (OSError, ValueError):
            self.ids = {}

    def key(self, digest: str) -> str:
        return f"{self.api_url} {digest}"

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_bytes_atomic(self.path, json.dumps(self.ids, indent=1, sort_keys=True).encode())


@dataclass
class Job:
    """One file on one device."""

    device: Any
    part: str  # the segment's name, or "static"
    file: str
    job: Any = None
    status: Any = None
    error: str | None = None
    profile: dict[str, Any] = field(default_factory=dict)


def upload(hub: Hub, manifest: Manifest, files: Sequence[str], on_progress: Callable[[str], None]) -> tuple[dict[str, Any], int]:
    """Each file's AI Hub model, uploading only what the farm does not have yet; returns the
    models by file and how many were uploaded."""
    cache = ModelCache(hub.api_url)
    digests = manifest.member_files()  # checked against the files when the package was opened
    models, uploaded = {}, 0
    for f in files:
        path, digest = manifest.member(f), digests[f]
        model_id = cache.ids.get(cache.key(digest))
        model = None
        if model_id:
            try:
                model = hub.call("looking up an uploaded model", hub.client.get_model, model_id)
            except DeviceError:
                model = None  # the farm no longer has it: upload again
        if model is None:
            model = hub.call(f"uploading {f}", hub.client.upload_model, str(path), name=f"{Path(f).name} {digest[:12]}")
            cache.ids[cache.key(digest)] = model.model_id
            cache.save()
            uploaded += 1
            on_progress(f"uploaded {f}")
        models[f] = model
    return models, uploaded


def run_jobs(hub: Hub, jobs: list[Job], models: dict[str, Any], on_progress: Callable[[str], None],
             sleep: Callable[[float], None] = time.sleep) -> None:
    """Submit every job, then wait on them together (polling, backing off); each job ends with
    its profile or its error (a failed job's message and its URL)."""
    for j in jobs:
        try:
            j.job = hub.call(f"submitting {j.part} to {j.device.name}", hub.client.submit_inference_job,
                             models[j.file], j.device, profile=True, name=f"cephalon-edge {j.part}")
        except DeviceError as exc:
            j.error = exc.message
    pending = [j for j in jobs if j.job is not None]
    on_progress(f"{len(pending)} jobs submitted")
    delay = POLL_FIRST_S
    while pending:
        for j in pending:
            try:
                j.status = hub.call(f"asking for job {j.job.job_id}", j.job.get_status)
            except DeviceError as exc:
                j.error = exc.message
        for j in [j for j in pending if j.error is None and j.status.finished]:
            if j.status.success:
                try:
                    j.profile = hub.call(f"downloading the profile of job {j.job.job_id}", j.job.download_profile)
                except DeviceError as exc:
                    j.error = exc.message
            else:
                j.error = f"job {j.job.job_id} ({j.part} on {j.device.name}) failed: {j.status.message or 'no reason given'} ({j.job.url})"
            on_progress(f"{j.device.name}: {j.part}")
        pending = [j for j in pending if j.error is None and not j.status.finished]
        if pending:
            sleep(delay)
            delay = min(delay * 2, POLL_MAX_S)


def segment_row(name: str, profile: dict[str, Any], job: Any) -> dict[str, Any]:
    """A segment's row as ``bench --device`` writes it, from AI Hub's profile (times in us,
    memory in bytes)."""
    summary = profile["execution_summary"]
    times = np.asarray(summary.get("all_inference_times") or [summary["estimated_inference_time"]], dtype=float)
    peak = summary.get("estimated_inference_peak_memory")
    return {"name": name, "mean_ms": summary["estimated_inference_time"] / 1000, "min_ms": float(times.min()) / 1000,
            "std_ms": float(times.std()) / 1000, "cold_ms": _ms(summary.get("first_load_time")),
            "warm_load_ms": _ms(summary.get("warm_load_time")),
            "peak_mb": peak / 2**20 if isinstance(peak, (int, float)) else None,
            "job": job.job_id, "url": job.url}


def _ms(us: Any) -> float | None:
    return us / 1000 if isinstance(us, (int, float)) else None


def placement(name: str, profile: dict[str, Any]) -> dict[str, Any]:
    """Where each layer of a segment ran, from the profile's per-layer compute unit."""
    layers = profile.get("execution_detail") or []
    timed = all("execution_time" in layer for layer in layers)
    ops = [OpTime(layer["type"], layer["name"], layer["compute_unit"], layer.get("execution_time") if timed else None,
                  fallback=layer["compute_unit"] not in ACCELERATORS) for layer in layers]
    units = {o.unit for o in ops if not o.fallback}
    return placement_row(name, "AI Hub profile", "/".join(sorted(units)) or "NPU", ops)


def bench_hub(package: Path, spec: BenchSpec, names: Sequence[str],
              on_progress: Callable[[str], None] | None = None, sleep: Callable[[float], None] = time.sleep) -> DevicesReport:
    """``bench PKG --hub NAME``: the package's segment files (and its static model) profiled on
    each named AI Hub device, priced with the exit mix measured here on real data."""
    validate(spec)
    step = on_progress or (lambda _: None)
    manifest = Manifest.open(Path(package))
    target = get_target(manifest.target)
    if not target.hub_framework:
        raise UsageError(f"Qualcomm AI Hub does not take {target.display} packages",
                         hint=f"export with --target {' or '.join(t.name for t in hub_targets())}")
    files = [seg["file"] for seg in manifest.segments.values()]
    if len(set(files)) < len(files):
        raise UsageError("AI Hub profiles one model per file; this package's segments are signatures of one file",
                         hint="export with --profile snapdragon-ai-hub (one .tflite per segment), or any profile "
                              "whose [tflite] section says per_segment_files = true")
    hub = Hub()
    devices = resolve_devices(names, hub.devices(), target.hub_framework)

    data = bench_data(manifest, spec.data, spec.label_map)  # before anything goes up: bad data costs nothing
    if spec.samples:
        data = data.subset(np.arange(min(spec.samples, len(data))))
    mix = data.select_mixes(spec.modality, list(manifest.inputs))[-1]
    data = data.with_mix(mix)
    with Router(manifest, open_runtime("auto", manifest)) as router:
        pred = router.predict(data.inputs)
    step("exit mix measured")

    static = manifest.static
    parts = [(name, seg["file"]) for name, seg in manifest.segments.items()] + ([("static", static["file"])] if static else [])
    models, uploaded = upload(hub, manifest, sorted({f for _, f in parts}), step)
    jobs = [Job(d, part, f) for d in devices for part, f in parts]
    run_jobs(hub, jobs, models, step, sleep)

    rows = [_device_row(manifest, d, [j for j in jobs if j.device is d], pred, list(data.inputs), data.name)
            for d in devices]
    return DevicesReport(
        str(package), f"{target.hub_framework} on Qualcomm AI Hub", mix_name(mix), spec.profile, rows,
        details={"uploaded_models": uploaded, "reused_models": len(models) - uploaded,
                 "placement": [row for r in rows for row in r.details["placement"]],
                 "note": "AI Hub's figures are a microbenchmark of the framework call on the device, not an app's latency"})


def _device_row(manifest: Manifest, device: Any, jobs: list[Job], pred: Any, modalities: list[str],
                dataset: str) -> DeviceRow:
    done = [j for j in jobs if j.profile]
    static = next((segment_row("static", j.profile, j.job) for j in done if j.part == "static"), None)
    row = DeviceRow(device.name, device.name, match_device({"hub.device": device.name}) or "ai-hub",
                    [segment_row(j.part, j.profile, j.job) for j in done if j.part != "static"],
                    static and {k: static[k] for k in ("mean_ms", "std_ms", "peak_mb", "job", "url")})
    row.details |= {
        "os": device.os, "soc": _attribute(device, "chipset"), "delegate": "AI Hub's default compute units",
        "placement": [placement(j.part, j.profile) for j in done],
        "jobs": [{"part": j.part, "job": j.job.job_id if j.job else None, "url": j.job.url if j.job else None,
                  "status": "ok" if j.profile else "failed", "error": j.error} for j in jobs]}
    errors = [j.error for j in jobs if j.error]
    if errors:
        row.fail("; ".join(errors), "profiling")
    row.price(manifest, pred, modalities, dataset)
    return row
