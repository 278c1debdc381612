"""The presets' reference models, built with the libraries' own constructors (random weights,
nothing downloaded), and the check that a Cephalon model at full depth is the same function.
"""

from __future__ import annotations

import contextlib
import math
from typing import Any, Iterator

import torch
from torch import nn

from cephalon_edge.errors import UsageError
from cephalon_edge.toolchain.model import CephalonNet
from cephalon_edge.toolchain.presets import Preset
from cephalon_edge.toolchain.spec import ModelSpec

SAME_FUNCTION_TOLERANCE = 1e-4  # max abs difference of the logits, float32


@contextlib.contextmanager
def _without_fake_kernels() -> Iterator[None]:
    """torchvision registers fake kernels for its compiled ops at import; when its compiled
    library does not match the installed torch (a CPU torch beside a CUDA torchvision wheel),
    that registration raises and nothing imports. The model definitions are pure Python and
    need none of those ops, so they load with the registration skipped."""
    real = torch.library.register_fake

    def skip(*args: Any, **kwargs: Any) -> Any:
        return lambda fn: fn

    torch.library.register_fake = skip  # type: ignore[assignment]
    try:
        yield
    finally:
        torch.library.register_fake = real


def import_library(name: str) -> Any:
    """``torchvision.models`` or ``timm``, with a one-line error naming the extra."""
    try:
        import torchvision  # noqa: F401  (timm imports it too)
    except ImportError:
        pass
    except RuntimeError:
        with _without_fake_kernels():
            import torchvision  # noqa: F401
    try:
        if name == "torchvision":
            import torchvision.models as models
            return models
        import timm
        return timm
    except ImportError:
        raise UsageError(f"comparing with {name}'s own model needs {name}, which this install lacks",
                         hint="pip install 'cephalon-edge[retrofit]'") from None


def reference_model(preset: Preset, spec: ModelSpec) -> nn.Module:
    """The library's model for ``spec``'s input shape and classes, random weights, eval mode."""
    shape, classes = spec.modalities[0].shape, spec.classes
    lib = import_library(preset.library)
    if preset.library == "timm":
        model = lib.create_model(preset.model, pretrained=False, num_classes=classes, img_size=tuple(shape[1:]),
                                 in_chans=shape[0])
    else:
        model = getattr(lib, preset.model)(weights=None, num_classes=classes)
        if shape[0] != 3:  # a grey-scale (or multi-band) first conv, as people adapt it
            owner, attr = (model, "conv1") if hasattr(model, "conv1") else (model.features[0], "0")
            first = getattr(owner, attr)
            setattr(owner, attr, nn.Conv2d(shape[0], first.out_channels, first.kernel_size, first.stride,
                                           first.padding, bias=False))
    return model.eval()


@torch.no_grad()
def randomise(model: nn.Module, seed: int = 0) -> nn.Module:
    """Every floating tensor of ``model`` random — weights at 1/sqrt(fan-in), norm scales near
    1, biases and means near 0, variances in [0.5, 1.5] — so that a comparison sees every
    tensor (the libraries' own initialisations leave paths at zero: a fresh MobileNetV2's
    logits are ~1e-10)."""
    gen = torch.Generator().manual_seed(seed)
    for name, t in model.state_dict().items():
        if not t.is_floating_point():
            continue
        noise = torch.randn(t.shape, generator=gen)
        if name.endswith("running_var"):
            t.copy_(torch.rand(t.shape, generator=gen) + 0.5)
        elif t.dim() >= 2:
            t.copy_(noise / math.sqrt(t[0].numel()))
        else:  # norm scales, biases, running means
            t.copy_((1.0 if name.endswith("weight") else 0.0) + 0.1 * noise)
    return model.eval()


@torch.no_grad()
def max_difference(net: CephalonNet, reference: nn.Module, samples: int = 4, seed: int = 0) -> float:
    """Largest absolute difference between the full-depth logits of ``net`` and ``reference``
    on random inputs of the spec's shape."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(samples, *net.spec.modalities[0].shape, generator=gen)
    ours = net.eval()(x, exits=False).exit_logits[-1]
    return float((ours - reference.eval()(x)).abs().max())
