"""Parity of an exported package against the PyTorch reference (DESIGN.md section 5).

Every segment is compared with its PyTorch module on the inputs that really reach it, and the
routed package with ``dynamic_forward`` at several threshold settings: identical exit, gate and
expert decisions, and logits within tolerance.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np
import torch

from .model import CephalonNet
from .model.network import GATE_THRESHOLD
from .router import Router
from .segments import SegmentSet, StaticModel

FP32_ATOL = 1e-4


@dataclass
class ParityResult:
    max_abs_err: float
    decision_agreement: float
    top1_agreement: float
    samples: int
    tolerance: float
    segments: dict[str, float] = field(default_factory=dict)  # name -> max abs err
    static_max_abs_err: float | None = None

    @property
    def worst_segment(self) -> tuple[str, float]:
        name = max(self.segments, key=self.segments.get)
        return name, self.segments[name]

    @property
    def passed(self) -> bool:
        return self.decision_agreement == 1.0 and self.max_abs_err <= self.tolerance and \
            (self.static_max_abs_err is None or self.static_max_abs_err <= self.tolerance)

    def to_dict(self) -> dict[str, Any]:
        return {"max_abs_err": self.max_abs_err, "decision_agreement": self.decision_agreement,
                "top1_agreement": self.top1_agreement, "samples": self.samples, "tolerance": self.tolerance,
                "static_max_abs_err": self.static_max_abs_err, "passed": self.passed}


def segment_feeds(segset: SegmentSet, inputs: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The input of every segment when ``inputs`` go through the whole program: gated blocks
    and every expert see the representation their gate saw."""
    feeds: dict[str, torch.Tensor] = {}
    seg = segset.segments
    h: torch.Tensor | None = None
    with torch.no_grad():
        for step in segset.program:
            op = step["op"]
            if op == "encode":
                outs = []
                for m, name in step["adapters"].items():
                    if m in inputs:
                        feeds[name] = inputs[m]
                        outs.append(seg[name].module(inputs[m]))
                h = outs[0] if len(outs) == 1 else torch.stack(outs).mean(0)
            elif op == "run":
                feeds[step["segment"]] = h
                h = seg[step["segment"]].module(h)
            elif op == "gate":
                feeds[step["gate"]] = feeds[step["block"]] = h
                fire = (seg[step["gate"]].module(h) > GATE_THRESHOLD).view(-1, *([1] * (h.dim() - 1)))
                h = torch.where(fire, seg[step["block"]].module(h), h)
            elif op == "moe":
                feeds[step["gate"]] = h
                choice = seg[step["gate"]].module(h).argmax(-1)
                outs = []
                for name in step["experts"]:
                    feeds[name] = h
                    outs.append(seg[name].module(h))
                h = torch.stack(outs, 1)[torch.arange(h.shape[0]), choice]
            else:
                feeds[step["segment"]] = h
                for name in step.get("tasks", {}).values():
                    feeds[name] = h
    return feeds


def check_segments(segset: SegmentSet, router: Router, inputs: Mapping[str, torch.Tensor]) -> dict[str, float]:
    errors = {}
    for name, x in segment_feeds(segset, inputs).items():
        with torch.no_grad():
            ref = segset[name].module(x)
        refs = ref if isinstance(ref, tuple) else (ref,)
        got = router.runtime.run(name, (np.ascontiguousarray(x.numpy()),))
        errors[name] = max(float(np.abs(np.asarray(g, np.float32).reshape(r.shape) - r.numpy()).max())
                           for g, r in zip(got, refs))
    return errors


def check_routed(net: CephalonNet, router: Router, inputs: Mapping[str, torch.Tensor],
                 settings: list[Any]) -> tuple[float, float, float, int]:
    """(decision agreement, top-1 agreement, max abs err on agreeing samples, samples)."""
    agree = top1 = total = 0
    err = 0.0
    np_inputs = {k: v.numpy() for k, v in inputs.items()}
    tasks = [t.name for t in net.spec.tasks[1:]]
    for thresholds in settings:
        ref = net.dynamic_forward(dict(inputs), thresholds=thresholds, tasks=tasks)
        got = router.predict(np_inputs, tasks=tasks, thresholds=thresholds)
        same = (got.exit_index == ref.exit_index.numpy()) & \
            (got.gates == ref.gates.numpy()).all(1) & (got.experts == ref.experts.numpy()).all(1)
        agree += int(same.sum())
        top1 += int((got.predicted == ref.logits.argmax(-1).numpy()).sum())
        total += len(same)
        if same.any():
            err = max(err, float(np.abs(got.logits[same] - ref.logits.numpy()[same]).max()))
            for t in tasks:
                a, b = got.tasks[t][same], ref.tasks[t].numpy()[same]
                reached = ~np.isnan(b).any(1)
                if reached.any():
                    err = max(err, float(np.abs(a[reached] - b[reached]).max()))
    return agree / total, top1 / total, err, total


def check_static(net: CephalonNet, static_session: Any, inputs: Mapping[str, torch.Tensor]) -> float:
    x = next(iter(inputs.values()))
    with torch.no_grad():
        refs = StaticModel(net)(x)
    got = static_session(x.numpy())
    return max(float(np.abs(np.asarray(g) - r.numpy()).max()) for g, r in zip(got, refs))


def check_package(net: CephalonNet, segset: SegmentSet, router: Router, inputs: Mapping[str, torch.Tensor],
                  manifest_thresholds: Mapping[str, float], static_session: Any = None,
                  tolerance: float = FP32_ATOL) -> ParityResult:
    seg_errors = check_segments(segset, router, inputs)
    settings = [dict(manifest_thresholds), 1.01, 0.0, _median_setting(net, inputs)]
    decisions, top1, routed_err, samples = check_routed(net, router, inputs, settings)
    result = ParityResult(max(routed_err, max(seg_errors.values())), decisions, top1, samples, tolerance, seg_errors)
    if static_session is not None:
        result.static_max_abs_err = check_static(net, static_session, inputs)
    return result


def _median_setting(net: CephalonNet, inputs: Mapping[str, torch.Tensor]) -> dict[str, float]:
    """Thresholds halfway between the two middle confidences of each exit, so about half the
    samples leave at every exit and no sample sits exactly on a threshold."""
    with torch.no_grad():
        logits = net(dict(inputs)).exit_logits[:-1]
    setting = {}
    for name, lg in zip(net.spec.exit_names[:-1], logits):
        scores = torch.softmax(lg, -1).amax(-1).sort().values
        k = max(1, len(scores) // 2)
        setting[name] = float(scores[k - 1] + scores[min(k, len(scores) - 1)]) / 2
    return setting


def parity_inputs(net: CephalonNet, dataset: str | None, n_real: int = 64, n_random: int = 16,
                  seed: int = 0) -> dict[str, torch.Tensor]:
    """Real samples from the checkpoint's own validation split (when known) plus random ones."""
    from .data import BUILTIN, builtin

    gen = torch.Generator().manual_seed(seed)
    parts: dict[str, list[torch.Tensor]] = {m.name: [] for m in net.spec.modalities}
    if dataset in BUILTIN and n_real:
        ds = builtin(dataset, "val")
        for m in parts:
            if m in ds.inputs:
                parts[m].append(torch.from_numpy(ds.inputs[m][:n_real]))
    for m in net.spec.modalities:
        parts[m.name].append(torch.randn(n_random, *m.shape, generator=gen))
    return {m: torch.cat(v) for m, v in parts.items()}
