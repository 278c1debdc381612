"""Delegate coverage: which ops of each TFLite segment a profile's delegate supports, from the
delegates' documented op lists (``delegate_ops.json``), so a user sees before deploying which
segments would fall back to the CPU."""

from __future__ import annotations

import json
from importlib.resources import files
from pathlib import Path
from typing import Any

from cephalon_edge.errors import UsageError


def documented_ops() -> dict[str, Any]:
    return json.loads(files("cephalon_edge.toolchain").joinpath("delegate_ops.json").read_text())


def tflite_ops(path: Path) -> dict[str, list[str]]:
    """Builtin op names per signature of a .tflite file, in graph order."""
    from ai_edge_litert import schema_py_generated as schema
    from ai_edge_quantizer.utils import tfl_flatbuffer_utils

    model = tfl_flatbuffer_utils.read_model(str(path))
    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    ops = {}
    for sig in model.signatureDefs:
        key = sig.signatureKey.decode() if isinstance(sig.signatureKey, bytes) else sig.signatureKey
        graph = model.subgraphs[sig.subgraphIndex]
        codes = [model.operatorCodes[op.opcodeIndex] for op in graph.operators]
        ops[key] = [names.get(max(c.builtinCode, c.deprecatedBuiltinCode), f"BUILTIN_{c.builtinCode}") for c in codes]
    return ops


def coverage(manifest: Any, delegate: str) -> list[dict[str, Any]]:
    """``[{segment, parts, delegate, ops, supported_ops, unsupported_ops}]`` for a TFLite package."""
    table = documented_ops()
    if delegate not in table or delegate.startswith("_"):
        raise UsageError(f"no documented op list for delegate {delegate!r}",
                         hint=f"delegates: {', '.join(k for k in table if not k.startswith('_'))}")
    supported = set(table[delegate]["ops"])
    per_file: dict[str, dict[str, list[str]]] = {}
    rows = []
    for name, seg in manifest.segments.items():
        if seg["file"] not in per_file:
            per_file[seg["file"]] = tflite_ops(manifest.member(seg["file"]))
        ops = per_file[seg["file"]].get(seg.get("signature") or "serving_default", [])
        unique = sorted(set(ops))
        ok = [o for o in unique if "*" in supported or o in supported]
        rows.append({"segment": name, "parts": [p.name for p in manifest.segment_parts(name)],
                     "delegate": delegate, "ops": len(ops), "supported_ops": ok,
                     "unsupported_ops": [o for o in unique if o not in ok]})
    return rows


def deprecation_note(delegate: str) -> str | None:
    return documented_ops().get(delegate, {}).get("deprecated")
