"""`.cephalon` checkpoints: one safetensors file, the spec and provenance as JSON metadata.

Loading never unpickles. Importing a plain PyTorch ``state_dict`` goes through
``torch.load(weights_only=True)``, which refuses pickles that would run code.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Any

import torch

from cephalon_edge.build.model import CephalonNet
from cephalon_edge.build.spec import ModelSpec
from cephalon_edge.errors import CheckpointError
from cephalon_edge.fsutil import atomic_path, loads_json, regular_file

FORMAT = "cephalon/1"
METADATA_KEY = "cephalon"
CALIBRATION_PREFIX = "calibration."  # stored quantization calibration samples, not weights


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
         quantization: dict[str, Any] | None = None, calibration: dict[str, torch.Tensor] | None = None) -> None:
    """Write ``model`` with its spec and provenance atomically; optionally a quantization
    recipe and its calibration samples (one tensor per modality)."""
    from safetensors.torch import save_file

    meta = {"format": FORMAT, "spec": model.spec.to_dict(), "provenance": provenance or {}}
    if quantization:
        meta["quantization"] = quantization
    tensors = {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}
    for name, x in (calibration or {}).items():
        tensors[CALIBRATION_PREFIX + name] = x.detach().float().contiguous().clone()
    with atomic_path(Path(path)) as tmp:
        save_file(tensors, str(tmp), metadata={METADATA_KEY: json.dumps(meta)})


def load_state(model: CephalonNet, state: dict[str, torch.Tensor], source: str) -> None:
    """Load ``state`` into ``model``, refusing the first tensor that doesn't match the spec."""
    expected = model.state_dict()
    for name, tensor in expected.items():
        if name not in state:
            raise CheckpointError(f"{source}: tensor {name!r} is missing (spec expects shape {list(tensor.shape)})")
        got = state[name]
        if tuple(got.shape) != tuple(tensor.shape):
            raise CheckpointError(f"{source}: tensor {name!r} has shape {list(got.shape)}, "
                                  f"the spec expects {list(tensor.shape)}")
        if got.dtype != tensor.dtype:
            raise CheckpointError(f"{source}: tensor {name!r} has dtype {got.dtype}, the spec expects {tensor.dtype}")
    extra = sorted(set(state) - set(expected))
    if extra:
        raise CheckpointError(f"{source}: tensor {extra[0]!r} is not part of the spec")
    model.load_state_dict(state, strict=True)


def load_with_metadata(path: Path) -> tuple[CephalonNet, dict[str, Any]]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    meta = read_metadata(path)
    spec = ModelSpec.from_dict(meta.get("spec"))
    model = CephalonNet(spec)
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: corrupt tensor data ({exc})") from None
    calibration = {k[len(CALIBRATION_PREFIX):]: state.pop(k) for k in list(state) if k.startswith(CALIBRATION_PREFIX)}
    load_state(model, state, str(path))
    model.eval()
    if calibration:
        meta["calibration_samples"] = calibration
    return model, meta


def load(path: Path) -> CephalonNet:
    """Load a ``.cephalon`` checkpoint into an eval-mode ``CephalonNet``."""
    return load_with_metadata(path)[0]


def import_state_dict(state_path: Path, spec_path: Path) -> CephalonNet:
    """Build a model from a PyTorch ``state_dict`` file and a spec JSON, never running pickled code."""
    try:
        spec = ModelSpec.from_json(Path(spec_path).read_text())
    except FileNotFoundError:
        raise CheckpointError(f"spec file not found: {spec_path}") from None
    try:
        obj = torch.load(state_path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"state dict not found: {state_path}") from None
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, AttributeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{state_path}: refused to load ({first[:200]})",
                              hint="only plain tensor state_dicts are accepted; pickles that run code are refused") from None
    for key in ("state_dict", "model_state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{state_path}: not a state_dict of tensors")
    model = CephalonNet(spec)
    load_state(model, dict(obj), str(state_path))
    model.eval()
    return model
