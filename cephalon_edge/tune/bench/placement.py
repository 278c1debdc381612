"""Where each op of a segment ran: the accelerator (NPU, GPU, ANE, a delegate such as XNNPACK)
or a CPU fallback, by share of ops and of time, from whichever source measured it (a device op
profile, an AI Hub profile, the lowered program, the delegates' documented op lists). One row
per segment, each naming its source (torch-free)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

TOP_OPS = 5  # ops by time listed per segment


@dataclass(frozen=True)
class OpTime:
    """One op (or one delegated partition) of a segment as a profile reported it."""

    kind: str  # the op's kind: CONV_2D, Conv, "TfLiteXNNPackDelegate", ...
    node: str  # its name in the graph
    unit: str  # where it ran: "NPU", "GPU", "CPU", "XNNPACK", ...
    us: float | None  # average time per inference (None: the source gives no per-op time)
    calls: int = 1
    fallback: bool = False  # it ran on the CPU although an accelerator was asked for


def placement_row(segment: str, source: str, accelerator: str, ops: Sequence[OpTime]) -> dict[str, Any]:
    """Share of ops and of time on ``accelerator`` vs fallen back, the top ops by time, and the
    fallback ops with their share of the segment's time."""
    timed = all(o.us is not None for o in ops) and bool(ops)
    total = sum(o.us or 0.0 for o in ops) if timed else None
    units: dict[str, dict[str, float]] = {}
    for o in ops:
        u = units.setdefault(o.unit, {"ops": 0, "us": 0.0})
        u["ops"] += 1
        u["us"] += o.us or 0.0
    fallback = [o for o in ops if o.fallback]

    def share(o: OpTime) -> float | None:
        return (o.us or 0.0) / total if total else None

    def row(o: OpTime) -> dict[str, Any]:
        return {"kind": o.kind, "node": o.node, "unit": o.unit, "us": o.us, "share": share(o), "calls": o.calls}

    on_accel = [o for o in ops if not o.fallback]
    return {
        "segment": segment, "source": source, "accelerator": accelerator, "ops": len(ops),
        "ops_on_accelerator": len(on_accel),
        "op_share_on_accelerator": len(on_accel) / len(ops) if ops else None,
        "time_share_on_accelerator": sum(o.us or 0.0 for o in on_accel) / total if total else None,
        "units": {k: {"ops": int(v["ops"]), "us": v["us"] if timed else None} for k, v in units.items()},
        "top_ops": [row(o) for o in sorted(ops, key=lambda o: -(o.us or 0.0))[:TOP_OPS]] if timed else [],
        "fallback_ops": [row(o) for o in sorted(fallback, key=lambda o: -(o.us or 0.0))],
    }



def from_lowered_program(segment: str, delegation: dict[str, Any] | None) -> dict[str, Any]:
    """A segment's placement as ExecuTorch's partitioner lowered it (the manifest's
    ``delegation``: op kinds and counts on the delegate and on the portable CPU kernels), without
    times: the device's runner reports none per op."""
    info = delegation or {"backend": "portable", "delegated": {}, "portable": {}}
    unit = str(info["backend"]).upper()
    ops = [OpTime(kind, f"{kind} #{i + 1}", unit, None) for kind, n in info["delegated"].items() for i in range(n)]
    ops += [OpTime(kind, f"{kind} #{i + 1}", "CPU", None, fallback=unit != "PORTABLE")
            for kind, n in info["portable"].items() for i in range(n)]
    return placement_row(segment, "lowered program (ExecuTorch partitioner)", unit, ops)
