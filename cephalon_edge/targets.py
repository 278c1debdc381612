"""The target registry: every export target, registered once (torch-free).

A target is a package format with one converter module (build half), one runtime (device
half), the quantization modes its converter realises and its default, where its packages
run, and whether delegate op coverage is known for it. Nothing else spells a target's name:
the CLI, export, manifests, profiles and runtimes all ask this registry. Adding a target is
one converter module, one runtime module and one entry here.
"""

from __future__ import annotations

import importlib
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Protocol, cast

from cephalon_edge.errors import UsageError

QUANTIZATION_MODES = ("none", "int8", "int8-dynamic", "fp16", "palettize")
COREML_COMPUTE_UNITS = ("ALL", "CPU_AND_NE", "CPU_AND_GPU", "CPU_ONLY")
# what an ExecuTorch program is lowered to: a delegate, or none (the portable CPU kernels)
EXECUTORCH_BACKENDS = ("xnnpack", "portable", "coreml")


class Converter(Protocol):
    """A converter module (``converters/<target>.py``): the segment set into files."""

    def convert(self, segments: Any, spec: Any, out_dir: Path,
                on_segment: Callable[[str], None] | None = None) -> Any: ...


class LoweringConverter(Converter, Protocol):
    """A converter that knows, per segment, which ops it lowered to the delegate
    (``Target.delegate_coverage == "lowered"``: ExecuTorch's partitioner)."""

    def delegate_coverage(self, manifest: Any) -> list[dict[str, Any]]: ...


@dataclass(frozen=True)
class Target:
    name: str
    display: str  # how users call the format ("Core ML")
    converter: str  # module of the build half, imported only to convert
    runtime: str  # name in the runtime registry (cephalon_edge.device.runtimes)
    quantization: tuple[str, ...]  # modes the converter realises
    default_quantization: str
    extra: str  # the pip extra that brings the runtime
    system: str | None = None  # the platform.system() its runtime needs, if any
    # where delegate op coverage comes from: "documented" per-delegate op lists against the
    # file's ops (TFLite, with a profile), "lowered" what the converter partitioned
    # (ExecuTorch), or None (unknown)
    delegate_coverage: str | None = None
    android_benchmark: str | None = None  # the tool that times its files on Android over adb (tune/bench)
    ios_benchmark: bool = False  # coremltools' model-runner app times its files on an iPhone (macOS)
    # the framework Qualcomm AI Hub profiles its files with (a device attribute "framework:<name>"),
    # or None when AI Hub does not take its files
    hub_framework: str | None = None
    # static int8 leaves convolutions with few input channels float32 (FLOAT_BELOW_CHANNELS in
    # toolchain/compress/spec.py): the runtime's int8 kernels are slower than float32 there
    int8_keeps_narrow_float: bool = False

    def why_not_here(self) -> str | None:
        """Why this machine cannot run packages of this target, or None when it can."""
        if self.system is not None and platform.system() != self.system:
            needs = {"Darwin": "macOS"}.get(self.system, self.system)
            return f"{self.display} predictions need {needs} (this is {platform.system()})"
        return None

    def converter_module(self) -> Converter:
        """The converter (importing it needs the build half: ``cephalon-edge[export]``)."""
        return cast(Converter, importlib.import_module(self.converter))

    def lowering_converter(self) -> LoweringConverter:
        """The converter of a target whose coverage is what it lowered."""
        assert self.delegate_coverage == "lowered", self.name
        return cast(LoweringConverter, importlib.import_module(self.converter))


TARGETS: dict[str, Target] = {t.name: t for t in (
    Target("onnx", "ONNX", "cephalon_edge.toolchain.converters.onnx", "onnxruntime",
           ("none", "int8", "int8-dynamic"), "none", extra="onnx", hub_framework="onnx", int8_keeps_narrow_float=True),
    Target("tflite", "TFLite", "cephalon_edge.toolchain.converters.tflite", "litert",
           ("none", "fp16", "int8", "int8-dynamic"), "none", extra="tflite", delegate_coverage="documented",
           android_benchmark="benchmark_model", hub_framework="tflite", int8_keeps_narrow_float=True),
    Target("executorch", "ExecuTorch", "cephalon_edge.toolchain.converters.executorch", "executorch",
           ("none", "int8"), "none", extra="executorch", delegate_coverage="lowered",
           android_benchmark="executor_runner"),
    Target("coreml", "Core ML", "cephalon_edge.toolchain.converters.coreml", "coreml",
           ("fp16", "none", "int8", "palettize"), "fp16", extra="coreml", system="Darwin", ios_benchmark=True,
           hub_framework="coreml"),
)}


def target_help() -> str:
    """``--target`` help, from the registry."""
    return " | ".join(TARGETS) + "."


def quantization_help() -> str:
    """``--quantize`` help, from the registry: every mode, which targets realise it, defaults."""
    modes = " | ".join(QUANTIZATION_MODES)
    per_target = "; ".join(f"{t.name}: {', '.join(t.quantization)} (default {t.default_quantization})"
                           for t in TARGETS.values())
    return f"{modes}. Per target: {per_target}."


def bench_tools_help() -> str:
    """Which targets' packages bench on phones, from the registry."""
    android = ", ".join(f"{t.name} ({t.android_benchmark})" for t in TARGETS.values() if t.android_benchmark)
    ios = ", ".join(t.name for t in TARGETS.values() if t.ios_benchmark)
    return (f"Android SERIAL or 'all' (adb; {android} packages), iPhone UDID or 'all-ios' "
            f"(macOS + Xcode; {ios} packages).")


def hub_targets() -> list[Target]:
    """The targets whose packages Qualcomm AI Hub profiles."""
    return [t for t in TARGETS.values() if t.hub_framework]


def get_target(name: str) -> Target:
    """The registered target ``name``; an unknown name lists the known ones."""
    if name not in TARGETS:
        raise UsageError(f"unknown target {str(name)[:40]!r}", hint=f"known targets: {', '.join(TARGETS)}")
    return TARGETS[name]


def require_device_bench(name: str, platform: str) -> Target:
    """The target ``name`` if its packages bench on ``platform`` devices (``android``: LiteRT's
    benchmark_model or ExecuTorch's executor_runner; ``ios``: coremltools' model runner), else a
    UsageError naming the ones that do."""
    flag = f"{platform}_benchmark"
    target = get_target(name)
    if not getattr(target, flag):
        benched = [t for t in TARGETS.values() if getattr(t, flag)]
        where = {"android": "device", "ios": "iPhone"}[platform]
        raise UsageError(f"{where} bench runs {' and '.join(t.display for t in benched)} packages; this one is {name}",
                         hint=f"export with --target {benched[0].name}")
    return target
