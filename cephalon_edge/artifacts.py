"""What travels between the export orchestrator and the converters."""

from __future__ import annotations

from dataclasses import dataclass, field

QUANTIZATION_MODES = ("none", "int8", "int8-dynamic", "fp16", "palettize")


@dataclass(frozen=True)
class ExportSpec:
    """Options of one export, validated before any heavy work."""

    target: str
    quantize: str | None = None  # None: the target's default (Core ML fp16, others none)
    profile: str | None = None
    with_static: bool = False
    verify: bool = True
    force: bool = False
    opset: int = 18
    threshold: float = 0.9  # initial exit threshold until `calibrate` chooses per-exit ones


@dataclass
class SegmentArtifact:
    """One converted segment (or the static model, named ``static``)."""

    name: str
    file: str  # file name inside the package
    inputs: list[str]
    outputs: list[str]
    signature: str | None = None  # for multi-signature files (TFLite)
    extra: dict = field(default_factory=dict)
