"""Optional parts of an install: which pip extra brings which module (torch-free).

The base install is the device half and the CLI; a command whose part is missing says
which extra to install, in one line (exit 2), instead of an ImportError traceback.
"""

from __future__ import annotations

from importlib.util import find_spec

from cephalon_edge.errors import UsageError

EXTRAS: dict[str, tuple[str, ...]] = {
    "export": ("torch", "safetensors", "sklearn", "mnist1d", "mlxtend"),  # the build half: torch, converters, dataset generators
    "onnx": ("onnxruntime",),
    "tflite": ("ai_edge_litert",),
    "coreml": ("coremltools",),
    "executorch": ("executorch", "torch"),
    "update": ("bsdiff4", "detools", "cryptography"),
    "plot": ("matplotlib",),
    "retrofit": ("torchvision", "timm"),
    "hub": ("qai_hub",),
}


class MissingExtra(UsageError):
    """A part of cephalon-edge that this install lacks."""


def require(extra: str, what: str) -> None:
    """Raise ``MissingExtra`` naming ``pip install 'cephalon-edge[extra]'`` when a module of
    ``extra`` cannot be imported."""
    for module in EXTRAS[extra]:
        if find_spec(module) is None:
            raise MissingExtra(f"{what} needs {module}, which this install of cephalon-edge lacks",
                               hint=f"pip install 'cephalon-edge[{extra}]'")
