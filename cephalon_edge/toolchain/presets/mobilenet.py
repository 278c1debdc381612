"""torchvision's MobileNetV2: a 3x3/2 stem with ReLU6, 17 inverted residuals (the expansion
applies to each block's input width), a 1x1 conv to 1280 channels, mean pool, a linear
classifier. Exits go after any inverted residual but the last (``features.N``)."""

from __future__ import annotations

from typing import Any

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


PRESETS = (mobilenet_v2(),)
