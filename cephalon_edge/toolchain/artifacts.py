"""What travels between the export orchestrator and the converters."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cephalon_edge.device.program import DEFAULT_EXIT_THRESHOLD


def identifier(segment: str) -> str:
    """A segment's name as an identifier, for formats whose functions or methods must be
    named so (Core ML functions, ExecuTorch methods): ``stage1+gate1.1`` -> ``stage1_gate1_1``."""
    return "".join(c if c.isalnum() else "_" for c in segment)


@dataclass(frozen=True)
class ExportSpec:
    """Options of one export, validated before any heavy work."""

    target: str
    quantize: str | None = None  # None: the target's default (Core ML fp16, others none)
    profile: str | None = None
    with_static: bool = False
    fuse: bool = True  # chains of parts that always run together become one segment
    verify: bool = True
    force: bool = False
    opset: int = 18
    threshold: float = DEFAULT_EXIT_THRESHOLD  # until `calibrate` chooses per-exit ones
    # real samples for int8 calibration and quantized parity: a dataset (default: the checkpoint's own)
    data: str | None = None
    label_map: Path | None = None
    # filled in once by export's resolve(): the profile's contents, so no converter reloads it
    profile_settings: dict[str, Any] = field(default_factory=dict, compare=False)

    def profile_section(self, name: str) -> dict[str, Any]:
        """One section of the resolved profile (``coreml``, ``tflite``, ``runtime``), or {}."""
        return self.profile_settings.get(name, {})


@dataclass
class SegmentArtifact:
    """One converted segment (or the static model, named ``static``)."""

    name: str
    file: str  # file name inside the package
    inputs: list[str]
    outputs: list[str]
    signature: str | None = None  # for multi-signature/method/function files (TFLite, ExecuTorch, Core ML)
    extra: dict = field(default_factory=dict)
