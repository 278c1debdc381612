"""torchvision's MobileNets. V2: a 3x3/2 stem with ReLU6, 17 inverted residuals (the
expansion applies to each block's input width), a 1x1 conv to 1280 channels, mean pool, a
linear classifier. V3 (small, large): a hard-swish stem, inverted residuals whose kernel,
expanded width, squeeze-excitation (hard-sigmoid gate) and activation vary block by block
(one-block stages say so), a 1x1 conv to 6x the last width, mean pool, a hidden linear layer
with hard-swish, the classifier; batch norms with epsilon 1e-3. Exits go after any inverted
residual but the last (``features.N``)."""

from __future__ import annotations

from typing import Any, Callable

from cephalon_edge.toolchain.presets import Preset, Unit, classifier, image_modality
from cephalon_edge.toolchain.spec import StageSpec

# expansion t, output channels c, repeats n, first stride s (torchvision's table, width 1.0)
SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))
STEM, LAST = 32, 1280
NO_EXPANSION = (("conv.0.0.", "branch.0."), ("conv.0.1.", "branch.1."), ("conv.1.", "branch.3."), ("conv.2.", "branch.4."))
EXPANDED = (("conv.0.0.", "branch.0."), ("conv.0.1.", "branch.1."), ("conv.1.0.", "branch.3."), ("conv.1.1.", "branch.4."),
            ("conv.2.", "branch.6."), ("conv.3.", "branch.7."))


def _base(shape: tuple[int, ...], classes: int) -> dict[str, Any]:
    stem = {"kind": "conv_stem", "channels": STEM, "kernel": 3, "stride": 2, "activation": "relu6"}
    return {"modalities": [image_modality(shape, stem)], "tasks": classifier(classes), "head_channels": LAST}


def mobilenet_v2() -> Preset:
    units, cin = [], STEM
    for t, c, n, s in SETTINGS:
        for i in range(n):
            stage = StageSpec(channels=c, block="inverted", stride=s if i == 0 else 1, expansion=t,
                              inner_channels=round(cin * t) if t != 1 else None, activation="relu6")
            units.append(Unit(stage, f"features.{len(units) + 1}", NO_EXPANSION if t == 1 else EXPANDED))
            cin = c
    return Preset("torchvision:mobilenet_v2", "MobileNetV2, 17 inverted residuals, ReLU6", "block (features.N)",
                  tuple(units), {n: n - 1 for n in range(1, len(units))}, _base,
                  (("features.0.0.", "adapters.{modality}.body.0."), ("features.0.1.", "adapters.{modality}.body.1."),
                   (f"features.{len(units) + 1}.0.", "heads.task_{task}.features.0."),
                   (f"features.{len(units) + 1}.1.", "heads.task_{task}.features.1."),
                   ("classifier.1.", "heads.task_{task}.fc.")))


# input, kernel, expanded, output, squeeze-excitation, activation, stride (torchvision's tables)
V3_SMALL = ((16, 3, 16, 16, True, "RE", 2), (16, 3, 72, 24, False, "RE", 2), (24, 3, 88, 24, False, "RE", 1),
            (24, 5, 96, 40, True, "HS", 2), (40, 5, 240, 40, True, "HS", 1), (40, 5, 240, 40, True, "HS", 1),
            (40, 5, 120, 48, True, "HS", 1), (48, 5, 144, 48, True, "HS", 1), (48, 5, 288, 96, True, "HS", 2),
            (96, 5, 576, 96, True, "HS", 1), (96, 5, 576, 96, True, "HS", 1))
V3_LARGE = ((16, 3, 16, 16, False, "RE", 1), (16, 3, 64, 24, False, "RE", 2), (24, 3, 72, 24, False, "RE", 1),
            (24, 5, 72, 40, True, "RE", 2), (40, 5, 120, 40, True, "RE", 1), (40, 5, 120, 40, True, "RE", 1),
            (40, 3, 240, 80, False, "HS", 2), (80, 3, 200, 80, False, "HS", 1), (80, 3, 184, 80, False, "HS", 1),
            (80, 3, 184, 80, False, "HS", 1), (80, 3, 480, 112, True, "HS", 1), (112, 3, 672, 112, True, "HS", 1),
            (112, 5, 672, 160, True, "HS", 2), (160, 5, 960, 160, True, "HS", 1), (160, 5, 960, 160, True, "HS", 1))


def _divisible(value: float, by: int = 8) -> int:
    """torchvision's ``_make_divisible``: the squeeze widths of MobileNetV3."""
    rounded = max(by, int(value + by / 2) // by * by)
    return rounded + by if rounded < 0.9 * value else rounded


def _v3_block(source: str, cin: int, kernel: int, expanded: int, cout: int, se: bool, act: str,
              stride: int) -> tuple[Unit, dict[str, Callable[[Any], Any]]]:
    """One V3 inverted residual: its one-block stage, the names inside ``block`` and the SE
    convs (1x1 convs there, linear layers here) reshaped."""
    expand = expanded != cin
    stage = StageSpec(channels=cout, block="inverted", stride=stride, kernel=kernel,
                      expansion=max(2, round(expanded / cin)) if expand else 1, inner_channels=expanded if expand else None,
                      se=se, se_channels=_divisible(expanded / 4) if se else None, se_gate="hardsigmoid",
                      activation="hardswish" if act == "HS" else "relu")
    renames, theirs, ours = [], 0, 0
    if expand:
        renames += [(f"block.{theirs}.0.", f"branch.{ours}."), (f"block.{theirs}.1.", f"branch.{ours + 1}.")]
        theirs, ours = theirs + 1, ours + 3
    renames += [(f"block.{theirs}.0.", f"branch.{ours}."), (f"block.{theirs}.1.", f"branch.{ours + 1}.")]
    theirs, ours = theirs + 1, ours + 3
    squeeze = {}
    if se:
        renames.append((f"block.{theirs}.", f"branch.{ours}."))
        squeeze = {f"{source}.block.{theirs}.{fc}.weight": _linear for fc in ("fc1", "fc2")}
        theirs, ours = theirs + 1, ours + 1
    renames += [(f"block.{theirs}.0.", f"branch.{ours}."), (f"block.{theirs}.1.", f"branch.{ours + 1}.")]
    return Unit(stage, source, tuple(renames)), squeeze


def _linear(t: Any) -> Any:
    """A 1x1 conv's weight (out, in, 1, 1) as a linear layer's (out, in)."""
    return t.reshape(t.shape[0], t.shape[1])


def mobilenet_v3(size: str, table: tuple[tuple[Any, ...], ...], hidden: int) -> Preset:
    units, transforms = [], {}
    for i, row in enumerate(table, start=1):
        unit, squeeze = _v3_block(f"features.{i}", *row)
        units.append(unit)
        transforms.update(squeeze)
    widen, last = 6 * table[-1][3], len(table) + 1

    def base(shape: tuple[int, ...], classes: int) -> dict[str, Any]:
        stem = {"kind": "conv_stem", "channels": 16, "kernel": 3, "stride": 2, "activation": "hardswish"}
        return {"modalities": [image_modality(shape, stem)], "tasks": classifier(classes), "head_channels": widen,
                "head_hidden": hidden, "norm_eps": 1e-3}

    return Preset(f"torchvision:mobilenet_v3_{size}", f"MobileNetV3-{size.capitalize()}, {len(table)} inverted residuals, "
                  "SE and hard-swish per block", "block (features.N)", tuple(units),
                  {n: n - 1 for n in range(1, len(units))}, base,
                  (("features.0.0.", "adapters.{modality}.body.0."), ("features.0.1.", "adapters.{modality}.body.1."),
                   (f"features.{last}.0.", "heads.task_{task}.features.0."),
                   (f"features.{last}.1.", "heads.task_{task}.features.1."),
                   ("classifier.0.", "heads.task_{task}.hidden.0."), ("classifier.3.", "heads.task_{task}.fc.")),
                  transforms)


PRESETS = (mobilenet_v2(), mobilenet_v3("small", V3_SMALL, 1024), mobilenet_v3("large", V3_LARGE, 1280))
