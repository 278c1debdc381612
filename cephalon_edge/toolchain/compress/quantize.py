"""Quantization recipes: recorded in the checkpoint, realised at export by each target's
native quantizer, and simulated here (fake-quant in PyTorch) so the cost is visible first."""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from cephalon_edge.toolchain.compress.spec import FLOAT_BELOW_CHANNELS, MODES
from cephalon_edge.toolchain.model import CephalonNet
from cephalon_edge.errors import UsageError


def recipe(mode: str, samples: int) -> dict[str, Any]:
    if mode not in MODES:
        raise UsageError(f"unknown quantization {mode!r}", hint=f"modes: {', '.join(MODES)}")
    return {"mode": mode, "calib_samples": samples, "per_channel": True, "activations": "per-tensor",
            "exit_aware": True, "note": "realised at export by the target's quantizer; `export --quantize` overrides"}


def _fake_int8_weight(w: torch.Tensor) -> torch.Tensor:
    """Symmetric per-output-channel int8."""
    scale = w.abs().flatten(1).amax(1).clamp(min=1e-12) / 127
    shape = (-1,) + (1,) * (w.dim() - 1)
    return (w / scale.view(shape)).round().clamp(-127, 127) * scale.view(shape)


def _fake_int8_act(x: torch.Tensor, lo: float, hi: float) -> torch.Tensor:
    """Asymmetric per-tensor int8 with a fixed range."""
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    scale = max(hi - lo, 1e-12) / 255
    zero = round(-128 - lo / scale)
    return ((x / scale).round() + zero).clamp(-128, 127).sub(zero).mul(scale)


def narrow_convolution(module: nn.Module) -> bool:
    """Whether static int8 leaves ``module`` float32 on the targets that follow the rule (a
    convolution with fewer than ``FLOAT_BELOW_CHANNELS`` input channels)."""
    return isinstance(module, nn.modules.conv._ConvNd) and module.in_channels < FLOAT_BELOW_CHANNELS


@torch.no_grad()
def simulate(net: CephalonNet, mode: str, calibration: dict[str, torch.Tensor]) -> CephalonNet:
    """A fake-quantized copy: weights per-channel int8 (or fp16), activations entering every
    conv / linear per-tensor int8 with ranges observed on ``calibration`` (static), measured
    per batch (dynamic), or rounded through fp16. Static int8 leaves the convolutions with
    fewer than ``FLOAT_BELOW_CHANNELS`` input channels float, as the TFLite and ONNX exports do."""
    sim = copy.deepcopy(net).eval()
    layers = [m for m in sim.modules() if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Linear))
              and not (mode == "int8" and narrow_convolution(m))]
    if mode == "none":
        return sim
    for m in layers:
        m.weight.copy_(m.weight.half().float() if mode == "fp16" else _fake_int8_weight(m.weight))
    ranges: dict[nn.Module, list[float]] = {}
    if mode == "int8":
        def observe(mod: nn.Module, args: tuple) -> None:
            r = ranges.setdefault(mod, [float("inf"), float("-inf")])
            r[0], r[1] = min(r[0], float(args[0].min())), max(r[1], float(args[0].max()))

        handles = [m.register_forward_pre_hook(observe) for m in layers]
        sim(calibration)
        for h in handles:
            h.remove()

    def quantize_input(mod: nn.Module, args: tuple) -> tuple:
        x = args[0]
        if mode == "fp16":
            return (x.half().float(),)
        lo, hi = ranges[mod] if mode == "int8" and mod in ranges else (float(x.min()), float(x.max()))
        return (_fake_int8_act(x, lo, hi),)

    for m in layers:
        m.register_forward_pre_hook(quantize_input)
    return sim
