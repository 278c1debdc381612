"""Specs and weight maps for well-known architectures (``torchvision:resnet50``,
``timm:vit_tiny_patch16_224``...), so exits can be retrofitted onto a model one already has.

A preset lists the library model's blocks in order (``Unit``: the settings of a one-block
stage and the library's name for the block). ``preset_spec`` groups consecutive blocks of
equal settings into stages, cut where an exit is asked for: the spec's full-depth network
is the library's function. ``convert_state`` renames a library ``state_dict`` into the
spec's names, block by block, whatever stages the spec groups them into; exit heads are
new parts and stay as initialised.

Torch-free: the tables are plain data; ``libraries`` builds the reference models.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from cephalon_edge.errors import UsageError
from cephalon_edge.toolchain.spec import ModelSpec, StageSpec

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
MODALITY, TASK = "image", "class"


@dataclass(frozen=True)
class Unit:
    """One block of the library's model: its settings as a one-block stage, its name in the
    library's ``state_dict`` and how the names inside it become ours (prefix rules)."""

    stage: StageSpec
    source: str  # e.g. "layer2.0", "features.5", "blocks.3"
    renames: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Preset:
    name: str  # library:model
    summary: str
    boundary: str  # what --exits-after numbers: "layer", "block"...
    units: tuple[Unit, ...]
    exit_points: Mapping[int, int]  # the user's boundary number -> index of the unit an exit follows
    base: Callable[[tuple[int, ...], int], dict[str, Any]]  # (input shape, classes) -> the spec but its stages
    renames: tuple[tuple[str, str], ...]  # stem and head: library prefix -> ours
    transforms: Mapping[str, Callable[[Any], Any]] = dataclasses.field(default_factory=dict)  # library name -> reshape
    default_input: tuple[int, ...] = (3, 224, 224)

    @property
    def library(self) -> str:
        return self.name.partition(":")[0]

    @property
    def model(self) -> str:
        return self.name.partition(":")[2]

    def exit_help(self) -> str:
        points = list(self.exit_points)
        return f"after {self.boundary} {points[0]}..{points[-1]}" if len(points) > 2 else \
            f"after {self.boundary} {', '.join(map(str, points))}"


def get(name: str) -> Preset:
    if name not in PRESETS:
        raise UsageError(f"unknown preset {name!r}", hint=f"known: {', '.join(PRESETS)}")
    return PRESETS[name]


def parse_exits(preset: Preset, text: str) -> list[int]:
    """``--exits-after 1,2,3``: boundary numbers, each one the preset can take."""
    try:
        numbers = sorted({int(t) for t in text.split(",") if t.strip()})
    except ValueError:
        raise UsageError(f"--exits-after {text!r}: expected comma-separated numbers, e.g. 1,2,3") from None
    bad = [n for n in numbers if n not in preset.exit_points]
    if bad:
        raise UsageError(f"--exits-after {bad[0]}: {preset.name} takes exits {preset.exit_help()}",
                         hint="the last block feeds the final classifier; exits go before it")
    return numbers


def preset_spec(preset: Preset, exits_after: list[int], input_shape: tuple[int, ...] | None = None,
                classes: int = 1000, exit_channels: int = 0) -> ModelSpec:
    """The spec whose full-depth network is ``preset``'s library model, with exits after the
    given boundaries (``parse_exits``)."""
    shape = tuple(input_shape or preset.default_input)
    cut = {preset.exit_points[n] for n in exits_after}
    stages: list[StageSpec] = []
    for i, unit in enumerate(preset.units):
        s = unit.stage
        if stages and s.stride == 1 and not stages[-1].exit and _same_block(stages[-1], s):
            stages[-1] = dataclasses.replace(stages[-1], blocks=stages[-1].blocks + 1)
        else:
            stages.append(s)
        if i in cut:
            stages[-1] = dataclasses.replace(stages[-1], exit=True)
    suffix = "-exits" if exits_after else ""
    data = {"name": f"{preset.model.replace('_', '-')}{suffix}", **preset.base(shape, classes),
            "stages": [dataclasses.asdict(s) for s in stages], "exit_channels": exit_channels}
    return ModelSpec.from_dict(data)


def _same_block(stage: StageSpec, unit: StageSpec) -> bool:
    """Whether ``unit`` repeats the blocks after the first of ``stage``."""
    return dataclasses.replace(stage, blocks=1, stride=1) == unit


def block_names(preset: Preset, spec: ModelSpec) -> list[str]:
    """Our name of each of the preset's blocks in ``spec`` (``stages.K.plain.J``), in order."""
    names = [f"stages.{k}.plain.{j}" for k, s in enumerate(spec.stages) for j in range(s.blocks)]
    extra = [k for k, s in enumerate(spec.stages) if s.skip_blocks or s.experts]
    if len(names) != len(preset.units) or extra:
        raise UsageError(f"the spec has {len(names)} plain blocks" + (" and gated blocks or experts" if extra else "")
                         + f"; {preset.name} has {len(preset.units)} blocks",
                         hint=f"make the spec with `cephalon-edge spec from {preset.name}`")
    return names


def renames(preset: Preset, spec: ModelSpec) -> list[tuple[str, str]]:
    """Prefix rules from the library's names to the spec's, longest first."""
    rules = [(old, new.replace("{modality}", MODALITY).replace("{task}", TASK)) for old, new in preset.renames]
    for unit, ours in zip(preset.units, block_names(preset, spec)):
        rules += [(f"{unit.source}.{old}", f"{ours}.{new}") for old, new in unit.renames] or \
                 [(f"{unit.source}.", f"{ours}.")]
    return sorted(rules, key=lambda r: -len(r[0]))


def convert_state(preset: Preset, spec: ModelSpec, state: Mapping[str, Any]) -> dict[str, Any]:
    """A library ``state_dict`` under the spec's names (shapes transformed where ours differ);
    names no rule covers are kept, so ``reconcile`` reports them."""
    rules = renames(preset, spec)
    out: dict[str, Any] = {}
    for name, tensor in state.items():
        if name in preset.transforms:
            tensor = preset.transforms[name](tensor)
        rule = next((r for r in rules if name.startswith(r[0])), None)
        out[rule[1] + name[len(rule[0]):] if rule else name] = tensor
    return out


def image_modality(shape: tuple[int, ...], adapter: dict[str, Any]) -> dict[str, Any]:
    """The one image input of a preset; ImageNet's normalisation for 3-channel inputs."""
    pre = {"mean": IMAGENET_MEAN, "std": IMAGENET_STD} if shape[0] == 3 else {"mean": (0.0,), "std": (1.0,)}
    return {"name": MODALITY, "kind": "image", "shape": shape, "adapter": adapter, "preprocessing": pre}


def classifier(classes: int) -> list[dict[str, Any]]:
    return [{"name": TASK, "kind": "classification", "outputs": classes}]


def _registry() -> dict[str, Preset]:
    from cephalon_edge.toolchain.presets import mobilenet, resnet, vit

    return {p.name: p for family in (resnet, mobilenet, vit) for p in family.PRESETS}


PRESETS = _registry()
