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

from cephalon_edge.toolchain.model import CephalonNet
from cephalon_edge.toolchain.segments import (
    SegmentSet,
    StaticModel,
    example_input,
    segment_feeds,
)
from cephalon_edge.device.data import Dataset
from cephalon_edge.device.mixes import mix_name, modality_mixes
from cephalon_edge.device.program import NEVER_EXIT
from cephalon_edge.device.router import Router

FP32_ATOL = 1e-4
# quantized packages: minimum top-1 agreement with fp32 PyTorch on the validation split
QUANTIZED_TOP1 = {"fp16": 0.99, "int8-dynamic": 0.98, "int8": 0.98, "palettize": 0.98}


@dataclass
class ParityResult:
    max_abs_err: float
    decision_agreement: float
    top1_agreement: float
    samples: int
    tolerance: float
    segments: dict[str, float] = field(default_factory=dict)  # name -> max abs err
    static_max_abs_err: float | None = None
    quantization: str = "none"
    val_top1_agreement: float | None = None  # quantized: on the validation samples, full depth
    modality_mixes: dict[str, dict[str, float]] = field(default_factory=dict)  # multi-modal: routed parity per mix
    real_accuracy: dict[str, float] | None = None  # quantized, with real data: full-depth accuracy, fp32 vs exported

    @property
    def worst_segment(self) -> tuple[str, float]:
        name = max(self.segments, key=self.segments.get)
        return name, self.segments[name]

    @property
    def passed(self) -> bool:
        if self.quantization != "none":
            return self.val_top1_agreement is None or self.val_top1_agreement >= self.tolerance
        return self.decision_agreement == 1.0 and self.max_abs_err <= self.tolerance and \
            (self.static_max_abs_err is None or self.static_max_abs_err <= self.tolerance)

    def describe_failure(self) -> str:
        if self.quantization != "none":
            return (f"parity failed: top-1 agreement with fp32 on the validation samples "
                    f"{100 * (self.val_top1_agreement or 0):.1f}% < {100 * self.tolerance:.0f}% for {self.quantization}")
        worst, err = self.worst_segment
        return (f"parity failed: max abs error {self.max_abs_err:.2e} (tolerance {self.tolerance:.0e}), "
                f"decision agreement {100 * self.decision_agreement:.1f}%; worst segment {worst} ({err:.2e})")

    def to_dict(self) -> dict[str, Any]:
        return {"max_abs_err": self.max_abs_err, "decision_agreement": self.decision_agreement,
                "top1_agreement": self.top1_agreement, "samples": self.samples, "tolerance": self.tolerance,
                "static_max_abs_err": self.static_max_abs_err, "quantization": self.quantization,
                "val_top1_agreement": self.val_top1_agreement, "modality_mixes": self.modality_mixes,
                "real_accuracy": self.real_accuracy,
                "passed": self.passed}


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
    xs = [inputs[m] for m in net.spec.modality_names]
    with torch.no_grad():
        refs = StaticModel(net)(*xs)
    got = static_session(*(x.numpy() for x in xs))
    return max(float(np.abs(np.asarray(g) - r.numpy()).max()) for g, r in zip(got, refs))


def check_package(net: CephalonNet, segset: SegmentSet, router: Router, inputs: Mapping[str, torch.Tensor],
                  manifest_thresholds: Mapping[str, float], static_session: Any = None,
                  quantization: str = "none", real_labels: np.ndarray | None = None) -> ParityResult:
    """fp32: every segment within ``FP32_ATOL`` and identical decisions. Quantized: errors and
    agreement are reported; top-1 agreement on the real samples (the first ``len(real_labels)``
    inputs) is enforced, and their accuracy in PyTorch and exported is reported."""
    real_samples = 0 if real_labels is None else len(real_labels)
    seg_errors = check_segments(segset, router, inputs)
    agree = top1 = samples = 0
    routed_err = 0.0
    by_mix = {}
    for mix in modality_mixes(net.spec.modality_names):  # every modality subset routes like dynamic_forward
        part = {m: inputs[m] for m in mix}
        settings = [dict(manifest_thresholds), NEVER_EXIT, 0.0, median_thresholds(net, part)]
        d, t, e, n = check_routed(net, router, part, settings)
        by_mix[mix_name(mix)] = {"decision_agreement": d, "top1_agreement": t, "max_abs_err": e, "samples": n}
        agree, top1, samples, routed_err = agree + d * n, top1 + t * n, samples + n, max(routed_err, e)
    tolerance = FP32_ATOL if quantization == "none" else QUANTIZED_TOP1[quantization]
    result = ParityResult(max(routed_err, max(seg_errors.values())), agree / samples, top1 / samples, samples,
                          tolerance, seg_errors, quantization=quantization,
                          modality_mixes=by_mix if len(by_mix) > 1 else {})
    if quantization != "none" and real_samples:
        real = {k: v[:real_samples] for k, v in inputs.items()}
        result.val_top1_agreement = check_routed(net, router, real, [NEVER_EXIT])[1]
        with torch.no_grad():
            ref = net.dynamic_forward(dict(real), thresholds=NEVER_EXIT).logits.argmax(-1).numpy()
        got = router.predict({k: v.numpy() for k, v in real.items()}, thresholds=NEVER_EXIT).predicted
        result.real_accuracy = {"samples": real_samples, "pytorch": float((ref == real_labels).mean()),
                                "exported": float((got == real_labels).mean())}
    if static_session is not None:
        result.static_max_abs_err = check_static(net, static_session, inputs)
    return result


def median_thresholds(net: CephalonNet, inputs: Mapping[str, torch.Tensor]) -> dict[str, float]:
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


def parity_inputs(net: CephalonNet, data: Dataset | None, n_real: int = 64, n_random: int = 16,
                  seed: int = 0) -> tuple[dict[str, torch.Tensor], np.ndarray]:
    """Real samples (those of ``data`` holding every modality) first, then random ones;
    returns the inputs and the real samples' labels (their count is how many are real)."""
    gen = torch.Generator().manual_seed(seed)
    names = net.spec.modality_names
    parts: dict[str, list[torch.Tensor]] = {m: [] for m in names}
    labels = np.zeros(0, np.int64)
    if data is not None and n_real and set(names) <= set(data.inputs):
        full = data.with_mix(names)
        labels = full.labels[:n_real]
        for m in names:
            parts[m].append(torch.from_numpy(full.inputs[m][:n_real]))
    for m in net.spec.modalities:
        parts[m.name].append(example_input(m, n_random, gen))
    return {m: torch.cat(v) for m, v in parts.items()}, labels
