"""`.cephalon` checkpoints: one safetensors file, the spec and provenance as JSON metadata.

Loading never unpickles. Importing a plain PyTorch ``state_dict`` is ``state_import``'s.
Reading the header (``read_metadata``) needs no torch: commands check a checkpoint with it
before they import torch.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from cephalon_edge.errors import CheckpointError
from cephalon_edge.fsutil import atomic_path, loads_json, regular_file

if TYPE_CHECKING:
    import torch

    from cephalon_edge.toolchain.model import CephalonNet

FORMAT = "cephalon/1"
METADATA_KEY = "cephalon"
CALIBRATION_PREFIX = "calibration."  # stored quantization calibration samples, not weights
VARIANT_PREFIX = "variant/"  # variant/<name>/<tensor>: a narrower width variant's weights


def _header(path: Path) -> dict[str, Any]:
    """Read the safetensors JSON header without touching tensor data."""
    if Path(path).is_dir():
        raise CheckpointError(f"{path} is a directory, not a .cephalon checkpoint",
                              hint="an exported edge package is a directory; commands that take a checkpoint need the .cephalon file")
    regular_file(path, "checkpoint", CheckpointError)
    with open(path, "rb") as f:
        raw = f.read(8)
        if len(raw) != 8:
            raise CheckpointError(f"{path}: not a .cephalon checkpoint (file too short)")
        size = int.from_bytes(raw, "little")
        if size > 100_000_000:
            raise CheckpointError(f"{path}: not a .cephalon checkpoint (header size {size} is implausible)")
        header = loads_json(f.read(size), f"{path}: not a .cephalon checkpoint (unreadable safetensors header)",
                            CheckpointError)
    if not isinstance(header, dict):
        raise CheckpointError(f"{path}: not a .cephalon checkpoint (bad safetensors header)")
    return header


def read_metadata(path: Path) -> dict[str, Any]:
    """The checkpoint's metadata: ``format``, ``spec``, ``provenance``."""
    header = _header(Path(path))
    metadata = header.get("__metadata__")
    meta = metadata.get(METADATA_KEY) if isinstance(metadata, dict) else None
    if meta is None:
        raise CheckpointError(f"{path}: a safetensors file without cephalon metadata",
                              hint="plain weights go through `cephalon-edge import STATE_DICT --spec SPEC.json`")
    if not isinstance(meta, str):
        raise CheckpointError(f"{path}: cephalon metadata must be a JSON string")
    data = loads_json(meta, f"{path}: cephalon metadata", CheckpointError)
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise CheckpointError(f"{path}: unsupported checkpoint format {data.get('format') if isinstance(data, dict) else None!r}",
                              hint=f"this cephalon-edge reads {FORMAT}")
    return data


def save(model: CephalonNet, path: Path, provenance: dict[str, Any] | None = None,
         quantization: dict[str, Any] | None = None, calibration: dict[str, torch.Tensor] | None = None,
         variants: Mapping[str, tuple[float, CephalonNet]] | None = None) -> None:
    """Write ``model`` with its spec and provenance atomically; optionally a quantization
    recipe and its calibration samples (one tensor per modality), and narrower width variants
    (name -> (width, model); ``model`` itself is the full one)."""
    from safetensors.torch import save_file

    from cephalon_edge.toolchain.variants import variant_tensors

    meta: dict[str, Any] = {"format": FORMAT, "spec": model.spec.to_dict(), "provenance": provenance or {}}
    if quantization:
        meta["quantization"] = quantization
    tensors = {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}
    if variants:
        extra, meta["variants"] = variant_tensors(variants)
        tensors.update(extra)
    for name, x in (calibration or {}).items():
        tensors[CALIBRATION_PREFIX + name] = x.detach().float().contiguous().clone()
    with atomic_path(Path(path)) as tmp:
        save_file(tensors, str(tmp), metadata={METADATA_KEY: json.dumps(meta)})


def load_with_metadata(path: Path) -> tuple[CephalonNet, dict[str, Any]]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from cephalon_edge.toolchain.model import CephalonNet
    from cephalon_edge.toolchain.spec import ModelSpec
    from cephalon_edge.toolchain.state_import import reconcile

    path = Path(path)
    meta = read_metadata(path)
    spec = ModelSpec.from_dict(meta.get("spec"))
    model = CephalonNet(spec)
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: corrupt tensor data ({exc})") from None
    calibration = {k[len(CALIBRATION_PREFIX):]: state.pop(k) for k in list(state) if k.startswith(CALIBRATION_PREFIX)}
    variant_states: dict[str, dict[str, torch.Tensor]] = {}
    for k in [k for k in state if k.startswith(VARIANT_PREFIX)]:
        _, name, tensor = k.split("/", 2)  # variant/<name>/<tensor>
        variant_states.setdefault(name, {})[tensor] = state.pop(k)
    model.load_state_dict(reconcile(model, state, str(path), cast=False), strict=True)
    model.eval()
    if calibration:
        meta["calibration_samples"] = calibration
    if meta.get("variants"):
        from cephalon_edge.toolchain.variants import load_variants

        meta["variant_models"] = load_variants(model, meta, variant_states, str(path))
    return model, meta


def load(path: Path) -> CephalonNet:
    """Load a ``.cephalon`` checkpoint into an eval-mode ``CephalonNet``."""
    return load_with_metadata(path)[0]
