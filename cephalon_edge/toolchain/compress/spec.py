"""What `compress` is asked to do, checked before torch is imported: the options, the
checkpoint's header and where the output goes (a bad flag or file is one line in a fraction
of a second)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cephalon_edge.toolchain.checkpoint import read_metadata
from cephalon_edge.errors import UsageError

CRITERIA = ("l1", "l2", "taylor")  # channel importance (prune.py)
MODES = ("none", "int8", "int8-dynamic", "fp16")  # quantization recipes (quantize.py)
# static int8 TFLite and ONNX exports leave convolutions with fewer input channels than this in
# float32 (a grayscale or RGB stem): LiteRT's and ONNX Runtime's int8 kernels lose to float32
# there (benchmarks/int8_channels.py; BENCHMARKS.md "int8 when routed", "ONNX int8"); ExecuTorch's
# did not (its int8 first segment of digits-exits ran at 0.74-0.75x of fp32 either way)
FLOAT_BELOW_CHANNELS = 8
MIN_WIDTH = 0.1


@dataclass(frozen=True)
class CompressSpec:
    prune: float | None = None  # fraction of full-depth FLOPs to remove
    criterion: str = "l1"
    finetune_epochs: int = 0
    data: str | None = None  # default: the checkpoint's own dataset
    label_map: Path | None = None  # folder name -> label, for image folders named otherwise
    quantize: str = "none"
    calib_samples: int = 128
    seed: int = 0
    widths: tuple[float, ...] | None = None  # width variants in one checkpoint (1.0 = the model itself)


def parse_widths(text: str) -> tuple[float, ...]:
    """``1.0,0.75,0.5`` -> (1.0, 0.75, 0.5): widest first, the full model (1.0) included."""
    try:
        widths = sorted({float(w) for w in text.split(",") if w.strip()}, reverse=True)
    except ValueError:
        raise UsageError(f"--widths {text!r}: expected comma-separated fractions like 1.0,0.75,0.5") from None
    if not widths or widths[0] != 1.0 or len(widths) < 2:
        raise UsageError(f"--widths {text!r} must hold 1.0 (the full model) and at least one narrower width",
                         hint="e.g. --widths 1.0,0.5")
    if widths[-1] < MIN_WIDTH:
        raise UsageError(f"--widths: {widths[-1]} keeps too few channels (at least {MIN_WIDTH})")
    return tuple(widths)


def validate(checkpoint: Path, output: Path, spec: CompressSpec) -> None:
    if spec.prune is not None and not 0 < spec.prune < 1:
        raise UsageError(f"--prune is the fraction of FLOPs to remove, in (0, 1); got {spec.prune}")
    if spec.criterion not in CRITERIA:
        raise UsageError(f"unknown --prune-criterion {spec.criterion!r}", hint=f"criteria: {', '.join(CRITERIA)}")
    if spec.finetune_epochs < 0:
        raise UsageError(f"--finetune-epochs must be >= 0, got {spec.finetune_epochs}")
    if spec.quantize not in MODES:
        raise UsageError(f"unknown --quantize {spec.quantize!r}", hint=f"modes: {', '.join(MODES)}")
    if spec.calib_samples < 1:
        raise UsageError(f"--calib-samples must be >= 1, got {spec.calib_samples}")
    read_metadata(checkpoint)  # a missing or broken checkpoint is one line here
    if Path(output).resolve() == Path(checkpoint).resolve():
        raise UsageError("the output would overwrite the input checkpoint", hint="write to a new file with -o")
    if spec.widths is not None and spec.prune is not None:
        raise UsageError("give --prune or --widths, not both",
                         hint="--widths keeps the full model and adds narrower variants beside it")
    if spec.prune is None and spec.quantize == "none" and not spec.finetune_epochs and spec.widths is None:
        raise UsageError("nothing to do", hint="pass --prune RATIO, --widths 1.0,0.5, --finetune-epochs N and/or --quantize MODE")
