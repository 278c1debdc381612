"""`calibrate`: per-exit thresholds for an accuracy or a cost budget, chosen on the package
that will ship (its runtime, its numerics) and reported on a held-out split.

1. Per-segment latency is measured on this host with the package's runtime settings.
2. The validation split goes through the router once at full depth with every exit
   evaluated; per-sample scores, correctness and the cost of stopping at each exit (the
   segments on the sample's own path, every head on the way) are cached.
3. The search enumerates per-exit thresholds over the distinct scores (quantiles when there
   are too many), vectorised over the last exit, and keeps the Pareto front.
4. The chosen thresholds are measured on the held-out split against the static model.

Multi-modal packages get one set of thresholds for every modality mix: the validation table
holds each sample once per mix the data allows (or only the ``--modality`` mix); costs are
pooled, and in accuracy mode the allowed drop must hold for every mix on its own. The
held-out report is given per mix.
"""

from __future__ import annotations

import math
import platform
import warnings
from dataclasses import dataclass
from statistics import NormalDist
from pathlib import Path
from typing import Any, Callable

import numpy as np

from cephalon_edge import __version__
from cephalon_edge.device.data import BUILTIN, Dataset, load_dataset
from cephalon_edge.device.data_checks import Contract
from cephalon_edge.device.mixes import mix_name, parse_mix
from cephalon_edge.device.profiles import profile_spinning, profile_threads
from cephalon_edge.device.router import Router
from cephalon_edge.device.program import exit_rates, first_exit
from cephalon_edge.device.scores import SCORES, exit_scores, never_exit
from cephalon_edge.device.usage import routing_usage
from cephalon_edge.device.manifest import Manifest
from cephalon_edge.errors import CalibrationRefused, DataError, Note, UsageError
from cephalon_edge.tune.search import ExitTable, SearchResult, drop_bound, search, stack_tables
from cephalon_edge.tune.timing import alternating_blocks, median_segment_ms, router_call_overhead_ms

HISTORY = 5  # earlier exit policies kept in the manifest's calibration_history


@dataclass(frozen=True)
class CalibrateSpec:
    data: str
    max_drop: float | None = None  # accuracy mode (default 0.01 when no budget is given)
    latency_budget_ms: float | None = None
    flops_budget: float | None = None  # absolute FLOPs per sample, or a fraction (<= 1) of full depth
    score: str = "max_softmax"
    test_data: str | None = None
    label_map: Path | None = None  # folder name -> label, for image folders named otherwise
    profile: str | None = None
    threads: int | None = None
    latency_runs: int = 30
    rounds: int = 3  # timed passes over the test split
    remeasure: bool = False  # ignore segment latencies cached in the manifest for this host
    modality: str | None = None  # calibrate for this mix only (default: every mix the data allows)
    # accuracy mode: the --max-drop holds at this one-sided confidence on unseen data of the
    # validation split's kind (an upper confidence bound of the paired drop); 0.5: the
    # validation drop alone. Nominal: choosing among many thresholds and a test split's own
    # noise make the realised coverage lower, so the default is high (benchmarks/drop_bound.py)
    confidence: float = 0.99

    @property
    def z(self) -> float:
        return NormalDist().inv_cdf(self.confidence)

    @property
    def allowed_drop(self) -> float | None:
        """The validation drop below full depth the new thresholds may cost: --max-drop (1 point
        by default in accuracy mode; in a budget mode only when given, as a guard)."""
        if self.max_drop is not None:
            return self.max_drop
        return 0.01 if self.mode == "accuracy" else None

    @property
    def mode(self) -> str:
        if self.latency_budget_ms is not None:
            return "latency"
        if self.flops_budget is not None:
            return "flops"
        return "accuracy"


def validate_spec(spec: CalibrateSpec) -> None:
    if spec.latency_budget_ms is not None and spec.flops_budget is not None:
        raise UsageError("give one of --latency-budget-ms and --flops-budget",
                         hint="--max-drop may join either as a guard on the accuracy the budget costs")
    if spec.max_drop is not None and not 0 <= spec.max_drop < 1:
        raise UsageError(f"--max-drop is a fraction in [0, 1) (0.01 = 1 point), got {spec.max_drop}")
    if spec.latency_budget_ms is not None and spec.latency_budget_ms <= 0:
        raise UsageError(f"--latency-budget-ms must be positive, got {spec.latency_budget_ms}")
    if spec.flops_budget is not None and spec.flops_budget <= 0:
        raise UsageError(f"--flops-budget must be positive, got {spec.flops_budget}")
    if spec.score not in SCORES:
        raise UsageError(f"unknown score {spec.score!r}", hint=f"scores: {', '.join(SCORES)}")
    if not 0.5 <= spec.confidence < 1:
        raise UsageError(f"--confidence is a probability in [0.5, 1) (0.99: the drop holds 99 times in 100), "
                         f"got {spec.confidence}")
    if spec.latency_runs < 1 or spec.rounds < 1:
        raise UsageError("--runs must be at least 1")


# ---- collecting and searching --------------------------------------------------------------

def collect(router: Router, data: Dataset, score: str, seg_ms: dict[str, float],
            batch_size: int = 64) -> ExitTable:
    """Run ``data`` through the router at full depth, every exit evaluated (with the
    modalities it holds: one mix)."""
    flops = router.manifest.part_flops
    part_ms = router.manifest.part_costs(seg_ms)
    scores, correct, cost_ms, cost_fl = [], [], [], []
    for start in range(0, len(data), batch_size):
        sl = slice(start, start + batch_size)
        pred = router.predict({k: v[sl] for k, v in data.inputs.items()}, thresholds=_never(score, router),
                              collect_exits=True)
        scores.append(exit_scores(score, pred.exit_logits, pred.exit_max_softmax))
        correct.append(pred.exit_logits.argmax(-1) == data.labels[sl, None])
        cost_ms.append(router.program.path_costs(part_ms, pred.gates, pred.experts, list(data.inputs)))
        cost_fl.append(router.program.path_costs(flops, pred.gates, pred.experts, list(data.inputs)))
    return ExitTable(router.exit_names, np.concatenate(scores), np.concatenate(correct),
                     np.concatenate(cost_ms), np.concatenate(cost_fl))


def _never(score: str, router: Router) -> float:
    """A threshold no sample reaches: every exit is evaluated, none taken."""
    return never_exit(score, len(router.exit_names))


def choose(result: SearchResult, table: ExitTable, spec: CalibrateSpec) -> int:
    """The combination the mode asks for; raises a UsageError when the budget is infeasible."""
    acc, cost, flops = result.accuracy, result.cost_ms, result.flops
    if spec.mode == "accuracy":
        drop = spec.allowed_drop
        ok = bounds(result, table, spec.z) <= drop + 1e-9
        if result.mix_accuracy is not None:  # the drop holds for every modality mix on its own
            ok &= (mix_bounds(result, table, spec.z) <= drop + 1e-9).all(0)
        key = np.lexsort((flops, -acc, cost))  # cheapest, then most accurate
    else:
        if spec.mode == "latency":
            ok, budget, unit = cost <= spec.latency_budget_ms, spec.latency_budget_ms, "ms"
            cheapest = float(cost.min())
        else:
            full = float(table.flops[:, -1].mean())
            budget = spec.flops_budget * full if spec.flops_budget <= 1 else spec.flops_budget
            ok, unit, cheapest = flops <= budget, "FLOPs", float(flops.min())
        if not ok.any():
            raise UsageError(f"no thresholds meet the budget of {budget:.4g} {unit} per sample; "
                             f"the cheapest operating point costs {cheapest:.4g} {unit}",
                             hint="raise the budget (every sample must at least reach the first exit)")
        key = np.lexsort((cost, -acc))  # most accurate, then cheapest
    return int(next(i for i in key if ok[i]))


def _exits_early(result: SearchResult, table: ExitTable) -> np.ndarray:
    """(M,) whether each combination lets any sample leave before full depth."""
    return result.flops < table.full_depth_flops * (1 - 1e-9)


def bounds(result: SearchResult, table: ExitTable, z: float) -> np.ndarray:
    """Each combination's upper confidence bound on the drop (``search.drop_bound``)."""
    return drop_bound(result.accuracy, result.both, table.full_depth_accuracy, result.samples, z,
                      _exits_early(result, table))


def mix_bounds(result: SearchResult, table: ExitTable, z: float) -> np.ndarray:
    """(mixes, M): the bound on each modality mix's own drop."""
    early = _exits_early(result, table)
    assert result.mix_accuracy is not None and result.mix_both is not None
    return np.stack([drop_bound(a, b, f, int(n), z, early) for a, b, f, n in
                     zip(result.mix_accuracy, result.mix_both, result.mix_full_depth, result.mix_samples)])


def smallest_promising_split(allowed: float, z: float) -> int | None:
    """Validation samples below which no early exit can be promised to hold ``allowed`` (a
    combination that changes no decision still carries ``z / samples``); None: no number of
    samples can promise a zero drop."""
    return math.ceil(z / allowed) if allowed > 0 else None


# ---- measuring on the held-out split ---------------------------------------------------------

def measure_test(router: Router, data: Dataset, thresholds: dict[str, float], part_flops: dict[str, float],
                 static: Callable[..., Any] | None, rounds: int) -> dict[str, Any]:
    """Accuracy, exit mix, FLOPs and batch-1 latency of the routed package vs the plain static
    model run with the runtime's defaults (it takes every package input; without one, or for a
    partial modality mix, the routed package at full depth), timed in alternating blocks."""
    pred = router.predict(data.inputs, thresholds=thresholds)
    never = _never(router.score, router)
    full = router.predict(data.inputs, thresholds=never)
    order = list(router.inputs)

    def sample(i: int) -> dict[str, np.ndarray]:
        return {k: v[i:i + 1] for k, v in data.inputs.items()}

    if static is not None and set(data.inputs) == set(order):
        reference, source = (lambda i: static(*(data.inputs[m][i:i + 1] for m in order))), "static model"
    else:
        reference = lambda i: router.predict(sample(i), thresholds=never)  # noqa: E731
        source = "routed at full depth (" + ("no static model in the package)" if static is None
                                             else "the static model takes every modality)")
    times, _ = alternating_blocks(len(data), {"routed": lambda i: router.predict(sample(i), thresholds=thresholds),
                                              "static": reference}, rounds=rounds)
    flops = router.program.taken_costs(part_flops, pred.gates, pred.experts, pred.exit_index, list(data.inputs))
    static_flops = plain_flops(router.program, router.manifest, part_flops)
    accuracy = float((pred.predicted == data.labels).mean())
    full_accuracy = float((full.predicted == data.labels).mean())
    r, s = times["routed"], times["static"]
    flops_ratio = float(flops.mean() / static_flops)
    speedup = float(s.mean() / r.mean())
    return {
        "dataset": data.name, "samples": len(data), "accuracy": accuracy,
        "full_depth_accuracy": full_accuracy, "accuracy_drop": full_accuracy - accuracy,
        "exit_rates": exit_rates(router.exit_names, pred.exit_index),
        "flops_ratio": flops_ratio, "mean_flops": float(flops.mean()), "static_flops": static_flops,
        "mean_ms": float(r.mean()), "p50_ms": float(np.percentile(r, 50)), "p90_ms": float(np.percentile(r, 90)),
        "p99_ms": float(np.percentile(r, 99)), "static_mean_ms": float(s.mean()),
        "static_p50_ms": float(np.percentile(s, 50)), "static_p90_ms": float(np.percentile(s, 90)),
        "static_p99_ms": float(np.percentile(s, 99)), "speedup": speedup, "flops_speedup": 1 / flops_ratio,
        "speedup_vs_flops": speedup * flops_ratio,
        "routing_pays": speedup > 1.0 if source == "static model" else None,
        "static_source": source,
        "routing_usage": routing_usage(router.program, pred.gates, pred.experts),
    }


# ---- the command ------------------------------------------------------------------------------

def held_out(ref: str, explicit: str | None, data: Dataset) -> tuple[Dataset | None, str | None]:
    """The split to report on: --test-data, the built-in test split, or None (split ``data``)."""
    if explicit:
        return None, explicit
    name, sep, split = ref.partition(":")
    if not Path(ref).exists() and name in BUILTIN:
        if (split or "val") == "test":
            raise UsageError("calibrating on the test split leaves nothing held out to report on",
                             hint=f"calibrate on {name}:val; the report uses {name}:test")
        return None, f"{name}:test"
    return data, None


@dataclass
class Splits:
    """What thresholds are chosen on (``val``) and reported on (``test``), per modality mix."""

    val: Dataset
    test: Dataset
    mixes: list[tuple[str, ...]]  # calibrated for
    test_mixes: list[tuple[str, ...]]  # of those, the ones the held-out data holds


@dataclass
class SegmentCosts:
    """Per-segment latency (ms) on this host, the router's own cost per call, and whether the
    segments were timed now or taken from the package's cache."""

    key: dict[str, Any]
    segment_ms: dict[str, float]
    measured_now: bool
    per_call_ms: float

    @property
    def call_ms(self) -> dict[str, float]:
        """What each segment call costs a routed prediction: the segment and the router's work."""
        return {name: ms + self.per_call_ms for name, ms in self.segment_ms.items()}


@dataclass
class Choice:
    """The search over thresholds and the operating point chosen on validation."""

    result: SearchResult
    table: ExitTable
    index: int
    thresholds: dict[str, float]


def calibrate_package(package: Path, spec: CalibrateSpec,
                      on_progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Choose thresholds, write them into the manifest atomically, return the report."""
    validate_spec(spec)
    step = on_progress or (lambda _: None)
    threads = spec.threads if spec.threads is not None else profile_threads(spec.profile)
    package = Path(package)
    with Router.open(package, threads=threads, score=spec.score, spinning=profile_spinning(spec.profile)) as router:
        splits = load_splits(router, spec)
        step("measuring segments")
        costs = segment_costs(router, spec, threads, splits)
        step("scoring exits")
        choice = choose_thresholds(router, spec, splits, costs, step)
        step("measuring on the held-out split")
        static = router.runtime.static_runner()
        by_mix = {mix_name(mix): measure_test(router, splits.test.with_mix(mix), choice.thresholds,
                                              router.manifest.part_flops, static, spec.rounds)
                  for mix in splits.test_mixes}
        multi_modal = len(router.inputs) > 1
        report = _report(package, spec, threads, splits, costs, choice, by_mix, router.exit_names[:-1], multi_modal)
        _write_policy(router.manifest, spec, threads, costs, choice.thresholds, report)
    return report.to_json()


def load_splits(router: Router, spec: CalibrateSpec) -> Splits:
    """The validation data and the held-out data (the built-in test split, ``--test-data``,
    or the other half of a file), checked against the package before any work."""
    contract = Contract.from_manifest(router.manifest)
    if spec.modality is not None:
        parse_mix(spec.modality, list(router.inputs))  # before any data is loaded
    ref = spec.data if ":" in spec.data or Path(spec.data).exists() else f"{spec.data}:val"
    val = load_dataset(ref, contract, label_map=spec.label_map)
    whole, test_ref = held_out(ref, spec.test_data, val)
    if whole is not None:  # a file: choose on one half, report on the other
        order = np.random.default_rng(0).permutation(len(whole))
        half = len(whole) // 2
        if half < 2:
            raise DataError(f"{spec.data}: {len(whole)} samples are too few to calibrate and hold out")
        val, test = whole.subset(order[:half]), whole.subset(order[half:])
        val.name, test.name = f"{whole.name} (half A)", f"{whole.name} (half B)"
    else:
        test = load_dataset(test_ref, contract, label_map=spec.label_map)
    if len(val) == 0 or len(test) == 0:
        raise DataError("calibration needs at least one validation and one test sample")
    mixes = val.select_mixes(spec.modality, list(router.inputs))
    test_mixes = [m for m in mixes if m in test.mixes()]
    if not test_mixes:
        raise DataError(f"the held-out data {test.name} holds none of the mixes calibrated for")
    return Splits(val, test, mixes, test_mixes)


def segment_costs(router: Router, spec: CalibrateSpec, threads: int | None, splits: Splits) -> SegmentCosts:
    """Segment latencies on this host (cached in the package per host, runtime and threads)
    and the router's own cost per call."""
    key = {"host": f"{platform.node()} {platform.machine()}", "runtime": router.runtime.name, "threads": threads}
    cached = router.manifest.segment_latency
    if not spec.remeasure and cached.get("key") == key and set(cached.get("segment_ms", {})) == set(router.manifest.segments):
        seg_ms, measured = dict(cached["segment_ms"]), False
    else:
        seg_ms, measured = median_segment_ms(router.runtime, router.manifest, spec.latency_runs), True
    per_call_ms = router_call_overhead_ms(router, splits.val.with_mix(splits.mixes[-1]).inputs, _never(spec.score, router))
    return SegmentCosts(key, seg_ms, measured, per_call_ms)


def choose_thresholds(router: Router, spec: CalibrateSpec, splits: Splits, costs: SegmentCosts,
                      step: Callable[[str], None]) -> Choice:
    """Score every exit on validation, search the thresholds, pick the operating point; refuse
    one that costs more accuracy than allowed."""
    tables = [collect(router, splits.val.with_mix(mix), spec.score, costs.call_ms) for mix in splits.mixes]
    table = stack_tables(tables)
    step("searching")
    never = _never(spec.score, router)
    result = search(table, never)
    if len(tables) > 1:
        per_mix = [search(t, never, result.candidates) for t in tables]
        result.mix_accuracy = np.stack([r.accuracy for r in per_mix])
        result.mix_both = np.stack([r.both for r in per_mix])
        result.mix_full_depth = np.asarray([t.full_depth_accuracy for t in tables])
        result.mix_samples = np.asarray([len(t.correct) for t in tables])
    chosen = choose(result, table, spec)
    thresholds = result.thresholds(chosen, router.exit_names[:-1])
    refuse_worse_than_allowed(_val_point(result, chosen, table, thresholds, splits.val.name, spec.z), spec)
    smallest = min(len(t.correct) for t in tables)
    if spec.mode == "accuracy" and spec.z > 0:
        need = smallest_promising_split(spec.allowed_drop, spec.z)
        if need is None or smallest < need:
            warnings.warn(f"{splits.val.name}: {smallest} validation samples cannot promise a drop of at most "
                          f"{100 * spec.allowed_drop:.2f} points at {spec.confidence:.0%} confidence, so no sample exits "
                          "early; " + (f"calibrate on at least {need} samples, or " if need else "")
                          + "raise --max-drop or lower --confidence (0.5: the validation drop alone)", Note, stacklevel=2)
    return Choice(result, table, chosen, thresholds)


@dataclass
class CalibrateReport:
    """``calibrate``'s report (``cephalon-edge/calibrate/1``): the thresholds chosen, the
    operating point on validation (with the bound it promises) and on the held-out split,
    the Pareto front searched, and the segment latencies the search priced paths with."""

    SCHEMA = "cephalon-edge/calibrate/1"
    package: str
    score: str
    mode: str
    target: dict[str, Any]  # max_drop, latency_budget_ms, flops_budget
    profile: str
    threads: int | None
    thresholds: dict[str, float]
    val: dict[str, Any]  # the chosen point on validation: accuracy, drop, its bound, exit rates, ...
    test: dict[str, Any]  # the same thresholds measured on the held-out split (per mix too)
    segment_latency: dict[str, Any]  # the cache key (host, runtime, threads) and whether measured now
    segment_ms: dict[str, float]
    router_ms_per_call: float
    pareto: list[dict[str, Any]]
    search: dict[str, Any]
    held_out_over_budget: bool

    def to_json(self) -> dict[str, Any]:
        return {"schema": self.SCHEMA, "package": self.package, "score": self.score,
                "segment_latency": self.segment_latency, "mode": self.mode, "target": self.target,
                "profile": self.profile, "threads": self.threads, "thresholds": self.thresholds,
                "val": self.val, "test": self.test, "segment_ms": self.segment_ms,
                "router_ms_per_call": self.router_ms_per_call, "routing_pays": self.test["routing_pays"],
                "pareto": self.pareto, "search": self.search, "held_out_over_budget": self.held_out_over_budget}


def _report(package: Path, spec: CalibrateSpec, threads: int | None, splits: Splits, costs: SegmentCosts,
            choice: Choice, by_mix: dict[str, dict[str, Any]], early: list[str], multi_modal: bool) -> CalibrateReport:
    test_report = {**by_mix[mix_name(splits.test_mixes[-1])], "modality_mixes": by_mix if multi_modal else None}
    result, table, chosen = choice.result, choice.table, choice.index
    val_report = _val_point(result, chosen, table, choice.thresholds, splits.val.name, spec.z)
    val_report["confidence"] = spec.confidence
    val_report["modality_mixes"] = [mix_name(m) for m in splits.mixes]
    return CalibrateReport(
        str(package), spec.score, spec.mode,
        {"max_drop": spec.allowed_drop, "latency_budget_ms": spec.latency_budget_ms, "flops_budget": spec.flops_budget},
        spec.profile, threads, choice.thresholds, val_report, test_report,
        {"key": costs.key, "measured_now": costs.measured_now}, costs.segment_ms, costs.per_call_ms,
        [_point(result, i, table, early, i == chosen)
         for i in sorted(_thin(result.pareto, chosen), key=lambda i: result.cost_ms[i])],
        {"candidates_per_exit": [len(c) for c in result.candidates],
         "combinations": int(len(result.accuracy)), "seconds": round(result.seconds, 3)},
        warn_held_out_drop(test_report, spec.allowed_drop))


def _write_policy(manifest: Manifest, spec: CalibrateSpec, threads: int | None, costs: SegmentCosts,
                  thresholds: dict[str, float], report: CalibrateReport) -> None:
    """The chosen thresholds, the segment latencies and what calibration found, into the
    manifest atomically; the previous policy goes into the history."""
    val_report, test_report = report.val, report.test
    manifest.write_sections(
        calibration_history=pushed_history(manifest.data),
        exit_policy={"score": spec.score, "calibrated": True, "thresholds": thresholds},
        segment_latency={"key": costs.key, "segment_ms": costs.segment_ms},
        calibration={
            "created_by": f"cephalon-edge {__version__}", "dataset": val_report["dataset"],
            "test_dataset": test_report["dataset"], "mode": spec.mode, "target": report.target,
            "threads": threads, "profile": spec.profile, "val": val_report,
            "test": {k: test_report[k] for k in (
                "accuracy", "full_depth_accuracy", "accuracy_drop", "exit_rates", "flops_ratio", "mean_ms",
                "static_mean_ms", "speedup")}})


def plain_flops(program: Any, manifest: Manifest, part_flops: dict[str, float]) -> float:
    """FLOPs of one sample through the plain network: the path to the final exit without the
    exit heads, gated blocks run and one expert per MoE layer (top-1 runs one, as ``inspect``
    counts; every expert would overstate it by the number of experts)."""
    kinds = {name: p.kind for name, p in manifest.parts.items()}
    final = program.exit_paths()[-1][1]
    return float(sum(part_flops[name] for name in final if kinds[name] != "exit"))


def refuse_worse_than_allowed(val: dict[str, Any], spec: CalibrateSpec) -> None:
    """Never replace the package's thresholds with ones that cost more than the allowed drop on
    validation (a budget that can only be met by giving up accuracy is refused, not written)."""
    allowed = spec.allowed_drop
    if allowed is not None and val["accuracy_drop"] > allowed + 1e-9:
        raise CalibrationRefused(
            f"the best thresholds for this budget cost {100 * val['accuracy_drop']:.2f} points on {val['dataset']}, "
            f"more than the allowed {100 * allowed:.2f}; the package keeps its thresholds",
            hint="raise the budget or --max-drop")


def warn_held_out_drop(test: dict[str, Any], allowed: float | None) -> bool:
    """Say so when the held-out drop exceeds the budget chosen for on validation (small
    validation sets over-fit the thresholds)."""
    over = allowed is not None and test["accuracy_drop"] > allowed + 1e-9
    if over:
        warnings.warn(f"the held-out drop ({100 * test['accuracy_drop']:.2f} points on {test['dataset']}) exceeds "
                      f"the allowed {100 * allowed:.2f}: the validation set is small or unlike the held-out one; "
                      f"calibrate on more data or a smaller --max-drop", Note, stacklevel=2)
    return over


def pushed_history(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    """``calibration_history`` with the package's current exit policy (and its calibration
    report) pushed on: the last ``HISTORY`` policies, newest last."""
    history = list(manifest.get("calibration_history") or [])
    history.append({"exit_policy": manifest["exit_policy"], "calibration": manifest.get("calibration")})
    return history[-HISTORY:]


def restore_previous(package: Path) -> dict[str, Any]:
    """``calibrate --restore``: put the previous exit policy back (the one before the last
    calibration), popping it off ``calibration_history``; returns it. A variants package has
    every variant restored and its operating points cleared (they priced the policies undone)."""
    from cephalon_edge.device.variants import VariantTable, is_variants_package

    if is_variants_package(Path(package)):
        table = VariantTable.open(Path(package))
        for name in table.names:  # all or none
            if not Manifest.open(table.package(name), verify=False).data.get("calibration_history"):
                raise UsageError(f"{package}: variant {name} has no earlier exit policy to restore")
        restored = {name: restore_previous(table.package(name)) for name in table.names}
        table.write(operating_points=[])
        return {**restored[table.full], "package": str(package), "variants": restored,
                "note": "operating points cleared: calibrate again to measure them"}
    manifest = Manifest.open(Path(package), verify=False)
    history = manifest.data.get("calibration_history") or []
    if not isinstance(history, list):
        raise UsageError(f"{package}: calibration_history is not a list of earlier exit policies; nothing was restored")
    if not history:
        raise UsageError(f"{package}: no earlier exit policy to restore",
                         hint="calibrate keeps the last 5 policies in calibration_history; this package has none")
    *history, previous = history
    checked_history_entry(manifest, previous)
    manifest.write_sections(exit_policy=previous["exit_policy"], calibration=previous.get("calibration"),
                            calibration_history=history)
    return {"package": str(package), "exit_policy": previous["exit_policy"], "history_left": len(history)}


def checked_history_entry(manifest: Manifest, entry: Any) -> None:
    """Refuse a ``calibration_history`` entry that would not pass as the manifest's own exit
    policy (thresholds, score), before anything is written."""
    from cephalon_edge.errors import PackageError

    where = f"{manifest.root}: the last calibration_history entry"
    if not isinstance(entry, dict) or not isinstance(entry.get("exit_policy"), dict) \
            or not isinstance(entry.get("calibration") or {}, dict):
        raise UsageError(f"{where} is not an exit policy with its calibration report; nothing was restored")
    try:
        Manifest(manifest.root, {**manifest.data, "exit_policy": entry["exit_policy"]}).validate()
    except PackageError as exc:
        raise UsageError(f"{where} is not a valid exit policy ({exc.message}); nothing was restored") from None


def _val_point(result: SearchResult, i: int, table: ExitTable, thresholds: dict[str, float],
               name: str, z: float) -> dict[str, Any]:
    full_flops = float(table.flops[:, -1].mean())
    exits = exit_rates(table.exit_names, first_exit(table.scores, list(thresholds.values())))
    return {"dataset": name, "samples": int(table.correct.shape[0]), "accuracy": float(result.accuracy[i]),
            "full_depth_accuracy": table.full_depth_accuracy,
            "accuracy_drop": table.full_depth_accuracy - float(result.accuracy[i]),
            # the drop unseen data of this kind stays under, at the report's confidence
            "accuracy_drop_bound": float(bounds(result, table, z)[i]),
            "expected_ms": float(result.cost_ms[i]), "full_depth_ms": float(table.cost_ms[:, -1].mean()),
            "expected_flops": float(result.flops[i]), "flops_ratio": float(result.flops[i]) / full_flops,
            "exit_rates": exits}


def _point(result: SearchResult, i: int, table: ExitTable, names: list[str], chosen: bool) -> dict[str, Any]:
    return {"thresholds": result.thresholds(i, names), "accuracy": float(result.accuracy[i]),
            "expected_ms": float(result.cost_ms[i]), "expected_flops": float(result.flops[i]),
            "flops_ratio": float(result.flops[i]) / float(table.flops[:, -1].mean()), "chosen": chosen}


def _thin(front: list[int], chosen: int, keep: int = 12) -> list[int]:
    """At most ``keep`` points spread along the front, always with the chosen one."""
    if len(front) > keep:
        front = [front[int(round(j))] for j in np.linspace(0, len(front) - 1, keep)]
    return list(set(front) | {chosen})
