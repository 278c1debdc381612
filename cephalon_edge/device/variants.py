"""Resource-adaptive packages (torch-free): several width variants of one model in one
package, and the router that picks an operating point (variant x exit thresholds) by the
latency budget of the moment.

A variants package is a directory holding ``variants.json`` and one ordinary package per
variant (``w1/``, ``w0.5/`` ...; each with its manifest, segments and router program). The
table of **operating points** is written by ``calibrate`` (host latencies, measured on the
package's own runtime) and replaced by ``bench --device`` (the phone's):

    {"format": "cephalon-edge-variants/1",
     "variants": [{"name": "w1", "width": 1.0, "package": "w1", "flops": ..., "params": ...}, ...],
     "operating_points": [{"variant": "w0.5", "thresholds": {"exit0": 0.93, ...}, "accuracy": 0.97,
                           "latency_ms": 0.21, "flops": 1.1e6, "source": "host ..."}, ...],
     "reference": {"static_ms": ..., "accuracy": ..., "source": ...} | null}
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from cephalon_edge.device.manifest import safe_member
from cephalon_edge.device.program import NEVER_EXIT
from cephalon_edge.device.router import Prediction, Router
from cephalon_edge.errors import PackageError, UsageError
from cephalon_edge.fsutil import loads_json, regular_file, write_json_atomic

VARIANTS_FILE = "variants.json"
FORMAT = "cephalon-edge-variants/1"
MAX_TABLE_BYTES = 10_000_000
NAME = re.compile(r"^w[0-9.]{1,8}$")


def variant_name(width: float) -> str:
    """``w1``, ``w0.75``, ``w0.5``: a width's variant (and sub-package) name."""
    return f"w{width:g}"


def is_variants_package(root: Path) -> bool:
    return (Path(root) / VARIANTS_FILE).is_file()


@dataclass(frozen=True)
class OperatingPoint:
    variant: str
    thresholds: dict[str, float]
    accuracy: float | None
    latency_ms: float | None
    flops: float | None = None
    source: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class VariantTable:
    root: Path
    data: dict[str, Any]

    @classmethod
    def open(cls, root: Path) -> "VariantTable":
        path = Path(root) / VARIANTS_FILE
        regular_file(path, "variants table", PackageError, MAX_TABLE_BYTES, allow_symlink=False)
        data = loads_json(path.read_bytes(), f"{path}", PackageError)
        table = cls(Path(root), data)
        table.validate()
        return table

    def validate(self) -> None:
        d = self.data
        where = f"{self.root / VARIANTS_FILE}"
        if not isinstance(d, dict) or d.get("format") != FORMAT:
            raise PackageError(f"{where}: not a {FORMAT} table", hint="re-export the package")
        variants = d.get("variants")
        if not isinstance(variants, list) or not variants:
            raise PackageError(f"{where}: 'variants' must list at least one variant", hint="re-export the package")
        for i, v in enumerate(variants):
            if not isinstance(v, dict) or not isinstance(v.get("name"), str) or not NAME.match(v["name"]) \
                    or v.get("package") != v["name"]:
                raise PackageError(f"{where}: variants[{i}] must have a name like w0.5 and its package folder of that name")
            if not _number(v.get("width")) or not 0 < v["width"] <= 1:
                raise PackageError(f"{where}: variants[{i}].width must be a number in (0, 1], got {v.get('width')!r}",
                                   hint="re-export the package")
            safe_member(self.root, v["package"])
        names = [v["name"] for v in variants]
        points = d.get("operating_points")
        if not isinstance(points, list):
            raise PackageError(f"{where}: 'operating_points' must be a list")
        for i, p in enumerate(points):
            ok = isinstance(p, dict) and p.get("variant") in names and isinstance(p.get("thresholds"), dict) and all(
                isinstance(k, str) and _number(t) and 0 <= t <= _highest_threshold(len(p["thresholds"]))
                for k, t in p["thresholds"].items()) and all(
                p.get(k) is None or (_number(p[k]) and p[k] >= 0) for k in ("accuracy", "latency_ms", "flops")) \
                and (p.get("accuracy") is None or p["accuracy"] <= 1) and isinstance(p.get("source") or "", str)
            if not ok:
                raise PackageError(f"{where}: operating_points[{i}] is malformed",
                                   hint="calibrate the package again to rebuild the table")

    @property
    def names(self) -> list[str]:
        return [v["name"] for v in self.data["variants"]]

    @property
    def full(self) -> str:
        """The widest variant: the reference model."""
        return max(self.data["variants"], key=lambda v: v.get("width", 0))["name"]

    def package(self, name: str) -> Path:
        return self.root / name

    @property
    def points(self) -> list[OperatingPoint]:
        return [OperatingPoint(p["variant"], {k: float(t) for k, t in p["thresholds"].items()}, p.get("accuracy"),
                               p.get("latency_ms"), p.get("flops"), p.get("source"))
                for p in self.data["operating_points"]]

    def write(self, **sections: Any) -> None:
        """Replace top-level sections of ``variants.json`` atomically."""
        self.data = {**self.data, **sections}
        write_json_atomic(self.root / VARIANTS_FILE, self.data)


def _highest_threshold(early_exits: int) -> float:
    """The largest threshold any score takes: never-exit, or a patience count."""
    return max(NEVER_EXIT, float(early_exits + 1))


def _number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def choose_point(points: Sequence[OperatingPoint], budget_ms: float | None = None,
                 variant: str | None = None) -> tuple[OperatingPoint, bool]:
    """The most accurate point whose latency fits ``budget_ms`` (ties: the faster), among
    ``variant``'s points when one is named; without a budget the most accurate. Returns the
    point and whether it fits; when none fits, the fastest point, flagged as not fitting."""
    pool = [p for p in points if variant is None or p.variant == variant]
    if not pool:
        raise UsageError(f"no operating point for variant {variant!r}" if variant else "no operating points",
                         hint="calibrate the package to measure its operating points")
    if budget_ms is None:
        return max(pool, key=lambda p: (p.accuracy or 0.0, -(p.latency_ms or 0.0))), True
    if budget_ms <= 0 or not math.isfinite(budget_ms):
        raise UsageError(f"--budget-ms must be a positive number of milliseconds, got {budget_ms}")
    timed = [p for p in pool if p.latency_ms is not None]
    if not timed:
        raise UsageError("this package's operating points have no measured latency",
                         hint="calibrate it (host) or bench it on the device (--device) first")
    fitting = [p for p in timed if p.latency_ms <= budget_ms]
    if not fitting:
        return min(timed, key=lambda p: p.latency_ms), False
    return max(fitting, key=lambda p: (p.accuracy or 0.0, -p.latency_ms)), True


class AdaptiveRouter:
    """One router per variant and the operating-point table: ``predict(..., budget_ms=X)``
    routes with the most accurate point that fits; ``set_budget`` keeps a budget for every
    later call (a long-running app follows the device's state). The chosen point travels with
    each prediction (``Prediction.operating_point``)."""

    def __init__(self, table: VariantTable, routers: Mapping[str, Router]) -> None:
        self.table = table
        self.routers = dict(routers)
        full = self.routers[table.full]
        # what callers of a plain Router read: the reference variant's
        self.manifest, self.inputs, self.runtime, self.exit_names = full.manifest, full.inputs, full.runtime, full.exit_names
        self.budget_ms: float | None = None

    @classmethod
    def open(cls, root: str | Path, **router_args: Any) -> "AdaptiveRouter":
        table = VariantTable.open(Path(root))
        routers: dict[str, Router] = {}
        try:
            for name in table.names:
                routers[name] = Router.open(table.package(name), **router_args)
        except BaseException:
            for r in routers.values():
                r.close()
            raise
        return cls(table, routers)

    def set_budget(self, budget_ms: float | None) -> None:
        if budget_ms is not None:
            choose_point(self.points, budget_ms)  # validates it, and that latencies are known
        self.budget_ms = budget_ms

    @property
    def points(self) -> list[OperatingPoint]:
        """The table's points, or, before calibration, each variant at its own thresholds."""
        return self.table.points or [OperatingPoint(n, r.manifest.thresholds, None, None) for n, r in self.routers.items()]

    def choose(self, budget_ms: float | None = None, variant: str | None = None) -> tuple[OperatingPoint, bool]:
        if variant is not None and variant not in self.routers:
            raise UsageError(f"unknown variant {variant!r}", hint=f"variants: {', '.join(self.routers)}")
        budget = self.budget_ms if budget_ms is None else budget_ms
        if budget is None and variant is None:
            variant = self.table.full  # no budget: the full model at its calibrated thresholds
            return OperatingPoint(variant, self.routers[variant].manifest.thresholds, None, None), True
        return choose_point(self.points, budget, variant)

    def predict(self, inputs: Mapping[str, np.ndarray], budget_ms: float | None = None, variant: str | None = None,
                thresholds: float | Mapping[str, float] | None = None, **kwargs: Any) -> Prediction:
        point, fits = self.choose(budget_ms, variant)
        pred = self.routers[point.variant].predict(inputs, thresholds=point.thresholds if thresholds is None else thresholds,
                                                   **kwargs)
        pred.operating_point = {**point.to_dict(), "fits_budget": fits}
        return pred

    def close(self) -> None:
        for r in self.routers.values():
            r.close()

    def __enter__(self) -> "AdaptiveRouter":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_router(package: str | Path, **router_args: Any) -> "Router | AdaptiveRouter":
    """The router for any package: an ``AdaptiveRouter`` for a variants package, else a ``Router``."""
    if is_variants_package(Path(package)):
        return AdaptiveRouter.open(package, **router_args)
    return Router.open(package, **router_args)
