"""How often each skip gate ran its block and how the experts of each mixture shared the
samples (torch-free): what makes a dynamic network's speed, reported by calibrate, bench and
evaluate."""

from __future__ import annotations

from typing import Any

import numpy as np

from cephalon_edge.device.program import Program


def routing_usage(program: Program, gates: np.ndarray, experts: np.ndarray) -> dict[str, Any]:
    """``gates``/``experts`` as ``Prediction`` holds them (-1: not reached). Per gate: the share
    of samples that reached it and, of those, the share that ran the block; per mixture: the
    share reaching it and each expert's share of those."""
    n = max(1, len(gates))
    report: dict[str, Any] = {"gates": {}, "experts": {}}
    for gate in program.gates:
        col = gates[:, gate.index]
        reached = int((col >= 0).sum())
        report["gates"][gate.block] = {"reached": reached / n,
                                       "fire_rate": float((col == 1).sum() / reached) if reached else None}
    for moe in program.mixtures:
        col = experts[:, moe.index]
        reached = int((col >= 0).sum())
        report["experts"][moe.gate] = {
            "reached": reached / n,
            "shares": {e: float((col == j).sum() / reached) if reached else None for j, e in enumerate(moe.experts)}}
    return report
