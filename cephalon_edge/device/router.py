"""The torch-free router: interprets a package's program, running only the segments each
input needs.

Decisions are per sample: samples that exit leave the batch, a skip gate runs its block on
the samples it fires for, and a mixture of experts splits the batch by the chosen expert.
The program speaks of parts; a fused segment runs when its first part is called and hands
its other parts' outputs to the steps that follow. Needs numpy and one runtime, nothing else.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence, assert_never

import numpy as np

from cephalon_edge.device.data_checks import are_token_ids
from cephalon_edge.device.manifest import Manifest
from cephalon_edge.device.program import Encode, Exit, Final, Gate, Moe, Run
from cephalon_edge.device.runtimes import open_runtime
from cephalon_edge.device.scores import SCORES, PatienceStreaks, entropy_confidence
from cephalon_edge.errors import DataError, PackageError, UsageError


def _filled(shape: int | tuple[int, ...], value: float, dtype: Any) -> np.ndarray:
    """``np.full`` without its Python-level overhead (the router allocates per predict)."""
    a = np.empty(shape, dtype)
    a.fill(value)
    return a


class LayeredRuntime:
    """After ``Router.reload``: the segments that changed run on freshly opened sessions, the
    rest on the sessions the router already had."""

    def __init__(self, base: Any, fresh: Any, segments: set[str]) -> None:
        self.base, self.fresh, self.segments, self.name = base, fresh, segments, fresh.name

    def run(self, segment: str, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        return (self.fresh if segment in self.segments else self.base).run(segment, inputs)

    def static_runner(self) -> Any:
        return self.fresh.static_runner()

    def close(self) -> None:
        self.fresh.close()
        self.base.close()


@dataclass
class Prediction:
    """Per-sample results of one ``Router.predict`` call."""

    logits: np.ndarray  # (B, classes) from the exit each sample took
    scores: np.ndarray  # (B,) confidence at that exit
    exit_index: np.ndarray  # (B,) index into exit_names
    exit_names: list[str]
    gates: np.ndarray  # (B, n_gates) int8: 1 ran, 0 skipped, -1 not reached
    experts: np.ndarray  # (B, n_moe) int64: chosen expert, -1 not reached
    tasks: dict[str, np.ndarray]  # extra task outputs; NaN for samples that exited early
    latency_us: np.ndarray  # (B,) time of the segments each sample went through
    segment_us: dict[str, float] = field(default_factory=dict)  # total time per segment run
    labels: list[str] = field(default_factory=list)
    # with collect_exits: every exit's logits and max-softmax for the samples that reached it (NaN otherwise)
    exit_logits: np.ndarray | None = None  # (B, n_exits, classes)
    exit_max_softmax: np.ndarray | None = None  # (B, n_exits)
    # a variants package: the operating point (variant, thresholds, accuracy, latency) used
    operating_point: dict[str, Any] | None = None

    @property
    def predicted(self) -> np.ndarray:
        return self.logits.argmax(-1)

    @property
    def exits(self) -> list[str]:
        return [self.exit_names[i] for i in self.exit_index]

    @property
    def label_names(self) -> list[str]:
        return [self.labels[i] if i < len(self.labels) else str(i) for i in self.predicted]


class Router:
    def __init__(self, manifest: Manifest, runtime: Any, score: str | None = None) -> None:
        """``score``: route with this exit score instead of the package's own (calibrate
        chooses thresholds for a score before writing it into the manifest)."""
        self.runtime = runtime
        self._score_override = score
        self._open_args: dict[str, Any] = {}
        self._bind(manifest)

    def _bind(self, manifest: Manifest) -> None:
        """Take the package's program, parts and settings from ``manifest``."""
        score = self._score_override
        self.manifest = manifest
        self.program = manifest.program
        self.exit_names = self.program.exit_names
        self.inputs = manifest.inputs
        parts = manifest.parts
        self.classes = len(manifest.labels) or int(parts[self.program.final.part].output_shapes[0][0])
        self.task_segments = dict(self.program.final.tasks)
        self.task_outputs = {t: int(np.prod(parts[s].output_shapes[0])) for t, s in self.task_segments.items()}
        # part -> (its segment, whether calling it runs the segment); segment -> (part, outputs) of its parts
        self._part_at = {n: (p.segment, p.position == 0) for n, p in parts.items()}
        self._segment_parts = {s: [(p.name, p.outputs) for p in manifest.segment_parts(s)] for s in manifest.segments}
        self._n_gates, self._n_moe, self._main_task = self.program.n_gates, self.program.n_moe, manifest.main_task
        # read once here, not per predict: the hot path only looks these up
        self._thresholds = manifest.thresholds
        self._input_specs = {name: (tuple(m["shape"]), m.get("vocab")) for name, m in self.inputs.items()}
        self._labels = manifest.labels
        self.score = score or manifest.score
        if self.score not in SCORES:
            raise UsageError(f"package uses exit score {self.score!r}, unknown to this cephalon-edge",
                             hint=f"known scores: {', '.join(SCORES)}")

    @classmethod
    def open(cls, package_dir: str | Path, runtime: str = "auto", threads: int | None = None,
             verify: bool = True, score: str | None = None, spinning: bool = False) -> "Router":
        """Open a package: validate the manifest, check sha256s, create the runtime sessions."""
        manifest = Manifest.open(Path(package_dir), verify=verify)
        router = cls(manifest, open_runtime(runtime, manifest, threads=threads, spinning=spinning), score=score)
        router._open_args = {"threads": threads, "spinning": spinning}
        return router

    def reload(self) -> dict[str, list[str]]:
        """Re-open the package in place, between predictions (after ``apply``): the new
        manifest is validated and every file checked; segments whose file, method and shapes
        did not change keep their runtime sessions, the others are opened anew. Returns
        ``{"reopened": [...], "kept": [...]}``. On any error the router is as it was."""
        new = Manifest.open(self.manifest.root)
        old = self.manifest.segments
        same = {n for n, s in new.segments.items()
                if n in old and all(old[n].get(k) == s.get(k) for k in ("file", "sha256", "signature", "shapes"))}
        changed = [n for n in new.segments if n not in same]
        if changed:
            fresh = open_runtime(self.runtime.name, new, segments=changed, **self._open_args)
            self.runtime = LayeredRuntime(self.runtime, fresh, set(changed))
        self._bind(new)
        return {"reopened": changed, "kept": sorted(same)}

    def close(self) -> None:
        self.runtime.close()

    def __enter__(self) -> "Router":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- inputs and thresholds -----------------------------------------------------
    def resolve_thresholds(self, thresholds: float | Mapping[str, float] | None) -> dict[str, float]:
        resolved = dict(self._thresholds)
        if thresholds is None:
            return resolved
        if isinstance(thresholds, (int, float)):
            return {name: float(thresholds) for name in resolved}
        unknown = sorted(set(thresholds) - set(resolved))
        if unknown:
            raise UsageError(f"unknown exit {unknown[0]!r} in thresholds", hint=f"exits: {', '.join(resolved)}")
        return {**resolved, **{k: float(v) for k, v in thresholds.items()}}

    def check_inputs(self, inputs: Mapping[str, np.ndarray]) -> tuple[dict[str, np.ndarray], int]:
        """Validate modality names, shapes and dtypes; add a missing batch dimension."""
        if not inputs:
            raise DataError("no input given", hint=f"inputs: {', '.join(self.inputs)}")
        checked, batch = {}, None
        for name, x in inputs.items():
            if name not in self._input_specs:
                raise DataError(f"unknown modality {name!r}", hint=f"this package takes: {', '.join(self.inputs)}")
            shape, vocab = self._input_specs[name]  # text: token ids, integers or whole floats
            if not (type(x) is np.ndarray and x.dtype == np.float32 and vocab is None):  # the common case is ready
                x = np.asarray(x)
                if not (np.issubdtype(x.dtype, np.floating) or (vocab is not None and np.issubdtype(x.dtype, np.integer))):
                    raise DataError(f"{name} input has dtype {x.dtype}; expected "
                                    + ("token ids (integers)" if vocab is not None else "floating point (float32)"))
            if x.shape == shape:
                x = x[None]
            if x.shape[1:] != shape or x.shape[0] == 0:
                raise DataError(f"{name} input has shape {list(x.shape)}; expected {list(shape)} "
                                f"or [batch, {', '.join(map(str, shape))}]")
            if vocab is not None and not are_token_ids(x, vocab):
                raise DataError(f"{name} input must hold token ids: whole numbers in [0, {vocab})")
            if batch is not None and x.shape[0] != batch:
                raise DataError(f"modalities disagree on batch size ({batch} vs {x.shape[0]})")
            batch = x.shape[0]
            checked[name] = np.ascontiguousarray(x, dtype=np.float32)
        assert batch is not None  # inputs is not empty
        return checked, batch

    # ---- the interpreter -----------------------------------------------------------
    def predict(self, inputs: Mapping[str, np.ndarray], tasks: Sequence[str] | None = None,
                thresholds: float | Mapping[str, float] | None = None, collect_exits: bool = False) -> Prediction:
        """Route a batch: per-sample exits, gates and experts; see the module docstring.

        ``collect_exits`` also records every evaluated exit's logits (for calibration)."""
        xs, batch = self.check_inputs(inputs)
        thr = self._thresholds if thresholds is None else self.resolve_thresholds(thresholds)
        wanted = [t for t in (tasks or []) if t != self._main_task]
        for t in wanted:
            if t not in self.task_segments:
                raise UsageError(f"unknown task {t!r}", hint=f"tasks: {', '.join(self.task_segments) or 'none'}")
        res = Prediction(
            logits=np.zeros((batch, self.classes), np.float32), scores=np.zeros(batch, np.float32),
            exit_index=_filled(batch, -1, np.int64), exit_names=self.exit_names,
            gates=_filled((batch, self._n_gates), -1, np.int8),
            experts=_filled((batch, self._n_moe), -1, np.int64),
            tasks={t: _filled((batch, self.task_outputs[t]), np.nan, np.float32) for t in wanted},
            latency_us=np.zeros(batch), labels=self._labels)
        if collect_exits:
            res.exit_logits = _filled((batch, len(self.exit_names), self.classes), np.nan, np.float32)
            res.exit_max_softmax = _filled((batch, len(self.exit_names)), np.nan, np.float32)
        patience = PatienceStreaks(batch) if self.score == "patience" else None
        seg_us = res.segment_us
        run = self.runtime.run
        idx = np.arange(batch)
        h: Any = None  # the representation; None between the parts of a fused chain
        # time of the segment calls every sample went through: one float, added to every
        # sample's latency once at the end (no array arithmetic per call)
        whole_us, split = 0.0, False

        pending: dict[str, list[np.ndarray]] = {}  # outputs of parts a fused segment already ran

        def timed(part: str, x: np.ndarray | None, members: np.ndarray) -> list[np.ndarray]:
            nonlocal whole_us, split
            segment, runs = self._part_at[part]
            if runs:
                t0 = time.perf_counter_ns()
                out = run(segment, (x,))
                us = (time.perf_counter_ns() - t0) / 1000.0
                seg_us[segment] = seg_us.get(segment, 0.0) + us
                if len(members) == batch:  # every sample (members never repeat one)
                    whole_us += us
                else:
                    res.latency_us[members] += us
                    split = True
                for name, picked in self._segment_parts[segment]:
                    pending[name] = [out[i] for i in picked]
            if part not in pending:
                raise PackageError(f"part {part} of segment {segment} was called before the segment ran",
                                   hint="re-export the package")
            return pending.pop(part)

        def finished() -> Prediction:
            if not split:  # every call took every sample: one fill, no arithmetic
                res.latency_us.fill(whole_us)
            elif whole_us:
                res.latency_us += whole_us
            return res

        for step in self.program:
            match step:  # the common steps first: a case is an isinstance check
                case Run():
                    out = timed(step.part, h, idx)
                    h = out[0] if out else None  # an inner part of a fused chain: the chain carries it
                case Exit():
                    logits, score = timed(step.part, h, idx)
                    if res.exit_logits is not None and res.exit_max_softmax is not None:  # collect_exits
                        res.exit_logits[idx, step.index], res.exit_max_softmax[idx, step.index] = logits, score
                    if patience is not None:
                        score = patience.update(idx, logits.argmax(-1))
                    elif self.score == "entropy":
                        score = entropy_confidence(logits)
                    done = score >= thr[step.exit]
                    leaving = int(np.count_nonzero(done))
                    if leaving == len(idx) == batch:  # every sample leaves here (batch 1's common case)
                        res.logits[:], res.scores[:], res.exit_index[:] = logits, score, step.index
                        return finished()
                    if leaving:
                        chosen = idx[done]
                        res.logits[chosen], res.scores[chosen] = logits[done], score[done]
                        res.exit_index[chosen] = step.index
                        if leaving == len(idx):
                            return finished()
                        keep = ~done
                        h, idx = np.ascontiguousarray(h[keep]), idx[keep]
                case Encode():
                    encoded = [timed(part, xs[m], idx) for m, part in step.adapters.items() if m in xs]
                    if len(encoded) == 1:  # an adapter fused with the stages after it returns nothing of its own
                        h = encoded[0][0] if encoded[0] else None
                    else:  # adapters of several modalities are never fused
                        h = np.mean([e[0] for e in encoded], axis=0, dtype=np.float32)
                case Gate():
                    fire = timed(step.gate, h, idx)[0].reshape(-1) > step.threshold
                    res.gates[idx, step.index] = fire
                    firing = int(np.count_nonzero(fire))
                    if firing == len(idx):
                        h = timed(step.block, h, idx)[0]
                    elif firing:
                        h = h.copy()
                        h[fire] = timed(step.block, np.ascontiguousarray(h[fire]), idx[fire])[0]
                case Moe():
                    choice = timed(step.gate, h, idx)[0].argmax(-1)
                    res.experts[idx, step.index] = choice
                    first = int(choice[0])
                    if len(choice) == 1 or (choice == first).all():
                        h = timed(step.experts[first], h, idx)[0]
                    else:
                        mixed = np.empty_like(h)
                        for e in np.unique(choice):
                            sel = choice == e
                            mixed[sel] = timed(step.experts[int(e)], np.ascontiguousarray(h[sel]), idx[sel])[0]
                        h = mixed
                case Final():
                    logits, score = timed(step.part, h, idx)
                    res.logits[idx], res.scores[idx], res.exit_index[idx] = logits, score, step.index
                    if res.exit_logits is not None and res.exit_max_softmax is not None:  # collect_exits
                        res.exit_logits[idx, step.index], res.exit_max_softmax[idx, step.index] = logits, score
                    for t in wanted:
                        res.tasks[t][idx] = timed(self.task_segments[t], h, idx)[0]
                case _:
                    assert_never(step)
        return finished()
