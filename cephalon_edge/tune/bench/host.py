"""Host bench: per-segment cold and warm latency, end to end over real data through the
router against the static model, peak RSS."""

from __future__ import annotations

import resource
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from cephalon_edge.device.program import exit_rates
from cephalon_edge.device.data import Dataset, builtin_available, load_dataset
from cephalon_edge.device.data_checks import Contract
from cephalon_edge.device.manifest import Manifest
from cephalon_edge.device.mixes import mix_name, parse_mix
from cephalon_edge.device.profiles import DEFAULT_SPINNING, load_profile
from cephalon_edge.device.router import Router
from cephalon_edge.device.runtimes import open_runtime
from cephalon_edge.errors import DataError, UsageError
from cephalon_edge.targets import get_target
from cephalon_edge.device.usage import routing_usage
from cephalon_edge.tune.bench.report import HostReport
from cephalon_edge.tune.bench.throughput import batch_throughput
from cephalon_edge.tune.timing import alternating_blocks, segment_input, stats_ms, time_segment


@dataclass(frozen=True)
class BenchSpec:
    profile: str = "host-cpu"
    data: str | None = None  # default: the checkpoint's own test split
    label_map: Path | None = None  # folder name -> label, for image folders named otherwise
    runs: int = 50
    warmup: int = 5
    threads: int | None = None  # overrides the profile
    samples: int | None = None  # at most this many data samples end to end
    device: str | None = None  # SERIAL or "all": bench on Android devices over adb
    benchmark_binary: Path | None = None
    keep: bool = False
    modality: str | None = None  # a mix like "image,signal"; default: every mix the data allows
    ops: bool = False  # Android: also profile each segment op by op
    batch: int | None = None  # host: also throughput at this batch size, routed vs static


def validate(spec: BenchSpec) -> None:
    if spec.runs < 1 or spec.warmup < 0:
        raise UsageError(f"--runs must be >= 1 and --warmup >= 0, got {spec.runs} and {spec.warmup}")
    if spec.samples is not None and spec.samples < 1:
        raise UsageError("--samples must be >= 1")
    if spec.batch is not None and spec.batch < 1:
        raise UsageError(f"--batch must be >= 1, got {spec.batch}")
    load_profile(spec.profile)


def bench_data(manifest: Manifest, ref: str | None, label_map: Path | None = None) -> Dataset:
    """Real inputs for the end-to-end run: ``--data`` or the package's own test split."""
    if ref is None:
        dataset = manifest.source_dataset
        if not dataset:
            raise DataError("this package names no dataset; end-to-end timing needs real inputs",
                            hint="pass --data (a built-in split, a .npz or an image folder)")
        ref = f"{dataset}:test"
    return load_dataset(ref, Contract.from_manifest(manifest), label_map=label_map)


def bench_segments(manifest: Manifest, runtime_name: str, threads: int | None, runs: int, warmup: int,
                   on_progress: Callable[[str], None]) -> list[dict[str, Any]]:
    """Cold (open the segment's file + first inference) and warm latency of every segment, batch 1."""
    rows = []
    for name, seg in manifest.segments.items():
        x = segment_input(manifest, name)
        t0 = time.perf_counter_ns()
        runtime = open_runtime(runtime_name, manifest, threads=threads, segments=[name])
        runtime.run(name, (x,))
        cold = (time.perf_counter_ns() - t0) / 1e6
        times = time_segment(runtime, name, x, runs, warmup)
        runtime.close()
        rows.append({"name": name, "cold_ms": cold, **stats_ms(times), "flops": seg["flops"]})
        on_progress(name)
    return rows


def bench_end_to_end(router: Router, data: Dataset, static: Callable[..., Any] | None,
                     warmup: int) -> tuple[dict[str, Any], dict[str, Any] | None, np.ndarray, np.ndarray]:
    """Every sample at batch 1 through the router and through the static model (which takes
    every package input, run with the runtime's defaults), in alternating blocks."""
    order = list(router.inputs)

    def sample(i: int) -> dict[str, np.ndarray]:
        return {k: v[i:i + 1] for k, v in data.inputs.items()}

    runners: dict[str, Callable[[int], Any]] = {"routed": lambda i: router.predict(sample(i))}
    if static is not None:
        runners["static"] = lambda i: static(*(data.inputs[m][i:i + 1] for m in order))
    for i in range(min(warmup, len(data))):
        for run in runners.values():
            run(i)
    times, results = alternating_blocks(len(data), runners)
    exit_arr = np.asarray([int(p.exit_index[0]) for p in results["routed"]])
    correct = [int(p.predicted[0]) == int(data.labels[i]) for i, p in enumerate(results["routed"])]
    end_to_end = {**stats_ms(times["routed"]), "samples": len(data), "dataset": data.name,
                  "accuracy": float(np.mean(correct)),
                  "exit_rates": exit_rates(router.exit_names, exit_arr)}
    fixed = times.get("static", np.zeros(0))
    return end_to_end, (stats_ms(fixed) if static is not None else None), times["routed"], fixed


def bench_host(package: Path, spec: BenchSpec, on_progress: Callable[[str], None] | None = None) -> HostReport:
    validate(spec)
    step = on_progress or (lambda _: None)
    profile = load_profile(spec.profile)
    threads = spec.threads or profile["runtime"].get("threads")
    manifest = Manifest.open(Path(package))
    if spec.modality is not None:
        parse_mix(spec.modality, list(manifest.inputs))  # before loading data and timing anything
    if profile["os"] in ("android", "ios") or get_target(profile["target"]).why_not_here():
        step(f"note: {spec.profile} describes a device; measuring on this host with its threads")
    if spec.data is None and not manifest.source_dataset:
        return _segments_only(package, manifest, spec, threads, step, "the package names no dataset")
    if spec.data is None and not builtin_available(manifest.source_dataset):
        return _segments_only(package, manifest, spec, threads, step,
                              f"the package's dataset {manifest.source_dataset!r} is generated by the build half, "
                              "which this install lacks")
    data = bench_data(manifest, spec.data, spec.label_map)
    if spec.samples:
        data = data.subset(np.arange(min(spec.samples, len(data))))
    mixes = data.select_mixes(spec.modality, list(manifest.inputs))
    if spec.batch and spec.batch > len(data):  # before anything is timed
        raise UsageError(f"--batch {spec.batch} is larger than the {len(data)} samples at hand",
                         hint="use a smaller --batch, or more --samples")
    by_mix: dict[str, dict[str, Any]] = {}
    spinning = profile["runtime"].get("spinning", DEFAULT_SPINNING)
    with Router(manifest, open_runtime("auto", manifest, threads=threads, spinning=spinning)) as router:
        segments = bench_segments(manifest, router.runtime.name, threads, spec.runs, spec.warmup, step)
        static_runner = router.runtime.static_runner()
        for mix in mixes:
            step(f"end to end: {mix_name(mix)}")
            # the static model needs every input: it is timed only for the full mix
            static_fn = static_runner if len(mix) == len(manifest.inputs) else None
            end_to_end, static, routed_ms, static_ms = bench_end_to_end(
                router, data.with_mix(mix), static_fn, spec.warmup)
            by_mix[mix_name(mix)] = {"end_to_end": end_to_end, "static": static,
                                     "speedup": None if static is None else static["mean_ms"] / end_to_end["mean_ms"]}
        usage = routing_usage(router.program, *_decisions(router, data.with_mix(mixes[-1])))
        if spec.batch:
            step(f"throughput at batch {spec.batch}")
            full = len(mixes[-1]) == len(manifest.inputs)
            batched = batch_throughput(router, data.with_mix(mixes[-1]), static_runner if full else None, spec.batch)
        runtime_name = router.runtime.name
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB
    return HostReport(
        str(package), spec.profile, runtime_name, threads, manifest.thresholds, manifest.calibrated, segments,
        spec.runs, spec.warmup, end_to_end, static, mix_name(mixes[-1]), by_mix if len(manifest.inputs) > 1 else None,
        usage, batched if spec.batch else None, int(peak),
        {"routed": routed_ms.round(4).tolist(), "static": static_ms.round(4).tolist() if static is not None else []})


def _decisions(router: Router, data: Dataset) -> tuple[np.ndarray, np.ndarray]:
    """Every sample's gates and experts (one batched pass, untimed)."""
    pred = router.predict(data.inputs)
    return pred.gates, pred.experts


def _segments_only(package: Path, manifest: Manifest, spec: BenchSpec, threads: int | None,
                   step: Callable[[str], None], why: str) -> HostReport:
    """No data given and none at hand (``why``): every segment timed on valid synthetic
    inputs (token ids for text); end to end needs real inputs, so it is skipped and said."""
    segments = bench_segments(manifest, "auto", threads, spec.runs, spec.warmup, step)
    return HostReport(str(package), spec.profile, get_target(manifest.target).runtime, threads, manifest.thresholds,
                      manifest.calibrated, segments, spec.runs, spec.warmup,
                      note=f"end to end skipped: {why}; pass --data for routed and static "
                           "timings on real inputs (segments were timed on synthetic inputs)")
