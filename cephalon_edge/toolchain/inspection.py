"""What is in a checkpoint: parts, parameters and FLOPs per part and per exit path, and the
segments an export fuses them into."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cephalon_edge.toolchain.checkpoint import load_with_metadata
from cephalon_edge.toolchain.segments import build_segments
from cephalon_edge.device.manifest import sha256_file


def inspect_checkpoint(path: Path) -> dict[str, Any]:
    """The ``inspect`` report: FLOPs are 2 x multiply-accumulates, per sample."""
    path = Path(path)
    net, meta = load_with_metadata(path)
    segset = build_segments(net)
    spec = net.spec
    return {
        "schema": "cephalon-edge/inspect/2",
        "checkpoint": str(path),
        "sha256": sha256_file(path),
        "size_bytes": path.stat().st_size,
        "name": spec.name,
        "params": sum(p.numel() for p in net.parameters()),
        "backbone": spec.backbone,
        "modalities": [{"name": m.name, "kind": m.kind, "shape": list(m.shape), "adapter": m.adapter.kind,
                        "encoded_shape": list(segset.parts[f"adapter.{m.name}"].output_shapes[0])} for m in spec.modalities],
        "tasks": [{"name": t.name, "kind": t.kind, "outputs": t.outputs} for t in spec.tasks],
        "labels": list(spec.labels),
        "exits": [{k: p[k] for k in ("name", "cumulative_flops", "cumulative_macs", "params")}
                  for p in segset.exit_paths()],
        # inspect/2: the program's parts were listed under "segments" in inspect/1
        "parts": [{"name": s.name, "kind": s.kind.value, "input_shape": list(s.input_shape),
                      "output_shapes": [list(o) for o in s.output_shapes],
                      "flops": s.flops, "macs": s.macs, "params": s.params} for s in segset.parts.values()],
        "fused_segments": [{"name": s.name, "parts": [p.name for p in s.parts]} for s in segset if len(s.parts) > 1],
        "program": segset.program.to_json(),
        "provenance": meta.get("provenance", {}),
        "preset": _preset(meta.get("provenance", {})),
        "quantization": meta.get("quantization"),
        "spec": spec.to_dict(),
    }


def _preset(provenance: dict[str, Any]) -> dict[str, Any] | None:
    """The library model an import came from, and where its spec can take exits."""
    from cephalon_edge.toolchain.presets import PRESETS

    name = provenance.get("preset") or provenance.get("started_from", {}).get("preset")
    preset = PRESETS.get(name) if isinstance(name, str) else None
    return {"name": name, "exits_can_go": preset.exit_help()} if preset else None
