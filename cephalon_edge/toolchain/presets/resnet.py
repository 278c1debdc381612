"""torchvision's ResNets (v1.5: the stride on the 3x3 conv): a 7x7/2 stem with a 3x3/2
max-pool, four layers of basic or bottleneck blocks, mean pool and a linear classifier.
Exits go after whole layers."""

from __future__ import annotations

from typing import Any

from cephalon_edge.toolchain.presets import Preset, Unit, classifier, image_modality
from cephalon_edge.toolchain.spec import StageSpec

WIDTHS = (64, 128, 256, 512)
BASIC = (("conv1.", "branch.0."), ("bn1.", "branch.1."), ("conv2.", "branch.3."), ("bn2.", "branch.4."),
         ("downsample.0.", "shortcut.0."), ("downsample.1.", "shortcut.1."))
BOTTLENECK = BASIC + (("conv3.", "branch.6."), ("bn3.", "branch.7."))


def _base(shape: tuple[int, ...], classes: int) -> dict[str, Any]:
    stem = {"kind": "conv_stem", "channels": 64, "kernel": 7, "stride": 2, "pool": True}
    return {"modalities": [image_modality(shape, stem)], "tasks": classifier(classes)}


def resnet(model: str, block: str, depths: tuple[int, ...]) -> Preset:
    expansion = 4 if block == "bottleneck" else 1
    units, ends = [], {}
    for layer, (width, depth) in enumerate(zip(WIDTHS, depths), start=1):
        for i in range(depth):
            stage = StageSpec(channels=width * expansion, block=block, stride=2 if i == 0 and layer > 1 else 1)
            units.append(Unit(stage, f"layer{layer}.{i}", BOTTLENECK if block == "bottleneck" else BASIC))
        ends[layer] = len(units) - 1
    return Preset(f"torchvision:{model}", f"ResNet, {block} blocks {'-'.join(map(str, depths))}", "layer",
                  tuple(units), {n: ends[n] for n in (1, 2, 3)}, _base,
                  (("conv1.", "adapters.{modality}.body.0."), ("bn1.", "adapters.{modality}.body.1."),
                   ("fc.", "heads.task_{task}.fc.")))


PRESETS = (resnet("resnet18", "basic", (2, 2, 2, 2)), resnet("resnet34", "basic", (3, 4, 6, 3)),
           resnet("resnet50", "bottleneck", (3, 4, 6, 3)), resnet("resnet101", "bottleneck", (3, 4, 23, 3)))
