"""Cut a CephalonNet into static segments plus a declarative program that reproduces
``dynamic_forward``.

The program speaks of **parts** (stable, readable names): ``adapter.<modality>``, ``stage<k>``
(the plain blocks of stage k), ``gate<k>.<b>`` / ``block<k>.<b>`` (a SkipNet gate and its
block), ``moe<k>.gate`` / ``moe<k>.expert<e>``, ``exit<k>`` (logits and confidence),
``head.<task>``.

A **segment** is what is converted and run: one part, or (fused, the default) a chain of
parts that always run together, ending at the first decision: e.g. ``adapter.image+stage0+exit0``
returns the hidden state, the exit's logits and its score in one call. A chain never
crosses a decision (an exit, a gate, a router), so every sample that enters it runs all of
it; conditional parts (gated blocks, experts, extra task heads) stay segments of their own.

The program's step kinds are defined in ``cephalon_edge.device.program``; ``segment_feeds``
here is its torch executor (for parity and quantization calibration).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from math import prod
from typing import Any, Mapping, assert_never

import torch
from torch import nn

from cephalon_edge.toolchain.model import CephalonNet
from cephalon_edge.toolchain.model.layers import SelfAttention, confidence
from cephalon_edge.device.program import (
    Encode,
    Exit,
    Final,
    Gate,
    Moe,
    PartKind,
    Program,
    Run,
    parts_of,
)


class ScoredHead(nn.Module):
    """A classifier segment: returns logits and their confidence, so the router does no math."""

    def __init__(self, head: nn.Module) -> None:
        super().__init__()
        self.head = head

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.head(x)
        return logits, confidence(logits)


class StaticModel(nn.Module):
    """The network as one would ship it without cephalon-edge: full depth, every task head,
    **no exit heads**; gated blocks and experts all computed and masked, as a static graph
    must. It takes every modality, in spec order (a multi-modal static model needs all of
    them), and returns every task's output, the main task first. ``with_exits`` adds every
    exit's logits after them (the whole graph, for structured pruning)."""

    def __init__(self, net: CephalonNet, with_exits: bool = False) -> None:
        super().__init__()
        self.net = net
        self.with_exits = with_exits
        self.input_names = net.spec.modality_names
        self.output_names = [t.name for t in net.spec.tasks] + (net.spec.exit_names[:-1] if with_exits else [])

    def forward(self, *xs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.net(dict(zip(self.input_names, xs)), exits=self.with_exits)
        return (*(out.tasks[t.name] for t in self.net.spec.tasks), *out.exit_logits[:-1])

    @property
    def graph_input_names(self) -> list[str]:
        """Input names in exported graphs: ``x`` for one modality (as before), else the modality names."""
        return ["x"] if len(self.input_names) == 1 else list(self.input_names)

    def example_inputs(self, batch: int, seed: int = 0) -> tuple[torch.Tensor, ...]:
        return tuple(example_input(m, batch, torch.Generator().manual_seed(seed + i))
                     for i, m in enumerate(self.net.spec.modalities))


def example_input(modality: Any, batch: int, gen: torch.Generator) -> torch.Tensor:
    """Random model input of one modality: normal values, or valid token ids for text."""
    if modality.kind == "text":
        return torch.randint(0, modality.adapter.vocab, (batch, *modality.shape), generator=gen).float()
    return torch.randn(batch, *modality.shape, generator=gen)


@dataclass
class Part:
    """One piece of the program: an adapter, a stage, a gate, a block, an expert, an exit or a head."""

    name: str
    kind: PartKind
    module: nn.Module
    outputs: list[str]
    input_shape: tuple[int, ...] = ()  # one sample
    output_shapes: list[tuple[int, ...]] = field(default_factory=list)
    macs: int = 0
    params: int = 0

    @property
    def flops(self) -> int:
        return 2 * self.macs


class Chain(nn.Module):
    """Parts that always run together as one graph: trunk parts in order, then a decision
    part on their result; returns the representation and the decision's outputs."""

    def __init__(self, trunk: list[nn.Module], decision: nn.Module) -> None:
        super().__init__()
        self.trunk = nn.Sequential(*trunk)
        self.decision = decision

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        h = self.trunk(x)
        out = self.decision(h)
        return (h, *(out if isinstance(out, tuple) else (out,)))


@dataclass
class Segment:
    """What is converted and run: one part, or a fused chain of parts."""

    name: str
    module: nn.Module
    outputs: list[str]
    parts: list[Part]
    exposes: dict[str, list[int]]  # part -> the indices of its outputs among the segment's

    @property
    def kind(self) -> str:
        return self.parts[0].kind.value if len(self.parts) == 1 else "fused"

    @property
    def input_shape(self) -> tuple[int, ...]:
        return self.parts[0].input_shape

    @property
    def output_shapes(self) -> list[tuple[int, ...]]:
        if len(self.parts) == 1:
            return self.parts[0].output_shapes
        return [self.parts[-2].output_shapes[0], *self.parts[-1].output_shapes]

    @property
    def macs(self) -> int:
        return sum(p.macs for p in self.parts)

    @property
    def flops(self) -> int:
        return 2 * self.macs

    @property
    def params(self) -> int:
        return sum(p.params for p in self.parts)

    def parts_entry(self) -> list[dict[str, Any]]:
        """The manifest's record of what this segment holds."""
        return [{"name": p.name, "kind": p.kind.value, "outputs": self.exposes[p.name], "flops": p.flops,
                 "params": p.params} for p in self.parts]


def single(part: Part) -> Segment:
    return Segment(part.name, part.module, list(part.outputs), [part], {part.name: list(range(len(part.outputs)))})


def chained(parts: list[Part]) -> Segment:
    """One segment for ``parts`` (trunk parts, then one decision part): outputs the last trunk
    part's representation, then the decision's outputs."""
    if len(parts) == 1:
        return single(parts[0])
    *trunk, decision = parts
    exposes: dict[str, list[int]] = {p.name: [] for p in trunk}
    exposes[trunk[-1].name] = [0]
    exposes[decision.name] = list(range(1, 1 + len(decision.outputs)))
    return Segment("+".join(p.name for p in parts), Chain([p.module for p in trunk], decision.module),
                   ["y", *decision.outputs], list(parts), exposes)


@dataclass
class SegmentSet:
    net: CephalonNet
    segments: dict[str, Segment]  # what is converted, in program order
    program: Program  # speaks of parts
    parts: dict[str, Part]
    # model inputs (by modality) for quantization calibration, from the checkpoint's dataset
    calibration: dict[str, torch.Tensor] | None = None

    def __iter__(self):
        return iter(self.segments.values())

    def __getitem__(self, name: str) -> Segment:
        return self.segments[name]

    @property
    def fused(self) -> bool:
        return any(len(s.parts) > 1 for s in self)

    def example_input(self, name: str, batch: int = 2, seed: int = 0) -> torch.Tensor:
        g = torch.Generator().manual_seed(seed)
        first = self.segments[name].parts[0].name
        for m in self.net.spec.modalities:
            if first == f"adapter.{m.name}":
                return example_input(m, batch, g)
        return torch.randn(batch, *self.segments[name].input_shape, generator=g)

    def exit_paths(self) -> list[dict[str, Any]]:
        """Cumulative cost of reaching each exit: every part on the way, gated blocks
        counted as run and one expert per MoE layer (the worst case of the path)."""
        paths = []
        for name, seen in self.program.exit_paths():
            macs = sum(self.parts[n].macs for n in seen)
            paths.append({"name": name, "cumulative_macs": macs, "cumulative_flops": 2 * macs,
                          "params": sum(self.parts[n].params for n in seen), "segments": seen})
        return paths


def count_macs(module: nn.Module, x: torch.Tensor) -> int:
    """Multiply-accumulates of one sample through ``module``: its conv and linear layers
    (depthwise convs by their groups) and attention's quadratic term (q @ k and weights @ v:
    2 x tokens^2 x the attention width)."""
    total = 0

    def hook(m: nn.Module, inp: Any, out: torch.Tensor) -> None:
        nonlocal total
        per_sample = out.numel() // out.shape[0]
        if isinstance(m, (nn.Conv1d, nn.Conv2d)):
            total += per_sample * (m.in_channels // m.groups) * prod(m.kernel_size)
        elif isinstance(m, nn.Linear):
            total += per_sample * m.in_features
        elif isinstance(m, SelfAttention):
            tokens = inp[0].shape[1]
            total += 2 * tokens * tokens * m.heads * m.head_width

    counted = (nn.Conv1d, nn.Conv2d, nn.Linear, SelfAttention)
    handles = [m.register_forward_hook(hook) for m in module.modules() if isinstance(m, counted)]
    try:
        with torch.no_grad():
            module(x[:1])
    finally:
        for h in handles:
            h.remove()
    return total


def build_segments(net: CephalonNet, fuse: bool = True) -> SegmentSet:
    """Decompose ``net`` (put in eval mode) into parts, the program that routes them, and the
    segments that hold them (fused chains unless ``fuse`` is false)."""
    net.eval()
    spec = net.spec
    parts: dict[str, Part] = {}
    steps: list[Any] = []

    def add(name: str, kind: PartKind, module: nn.Module, outputs: list[str]) -> str:
        parts[name] = Part(name, kind, module, outputs)
        return name

    steps.append(Encode({m.name: add(f"adapter.{m.name}", PartKind.ADAPTER, net.adapters[m.name], ["y"])
                         for m in spec.modalities}))
    gate_i = moe_i = exit_i = 0
    for k, stage in enumerate(net.stages):
        s = spec.stages[k]
        steps.append(Run(add(f"stage{k}", PartKind.STAGE, stage.plain, ["y"])))
        for j, (gate, block) in enumerate(zip(stage.skip_gates, stage.skip_blocks)):
            b = s.blocks + j
            steps.append(Gate(add(f"gate{k}.{b}", PartKind.GATE, gate, ["prob"]), add(f"block{k}.{b}", PartKind.BLOCK, block, ["y"]),
                              gate_i))
            gate_i += 1
        if stage.moe_gate is not None:
            gate_name = add(f"moe{k}.gate", PartKind.MOE_GATE, stage.moe_gate, ["logits"])
            experts = tuple(add(f"moe{k}.expert{e}", PartKind.EXPERT, expert, ["y"]) for e, expert in enumerate(stage.experts))
            steps.append(Moe(gate_name, experts, moe_i))
            moe_i += 1
        if str(k) in net.exits:
            steps.append(Exit(add(f"exit{k}", PartKind.EXIT, ScoredHead(net.exits[str(k)]), ["logits", "score"]),
                              f"exit{k}", exit_i))
            exit_i += 1
    first = spec.tasks[0]
    head = add(f"head.{first.name}", PartKind.HEAD, ScoredHead(net.head(first.name)), ["logits", "score"])
    tasks = {t.name: add(f"head.{t.name}", PartKind.HEAD, net.head(t.name), ["y"]) for t in spec.tasks[1:]}
    steps.append(Final(head, exit_i, tasks=tasks))
    program = Program(tuple(steps))
    _measure(parts, program, spec)
    groups = program.chains() if fuse else [[name] for name in parts]
    assert all(parts[n].kind.is_trunk for g in groups for n in g[:-1]), groups
    segments = {seg.name: seg for seg in (chained([parts[n] for n in group]) for group in groups)}
    return SegmentSet(net, segments, program, parts)


def _measure(segments: dict[str, Part], program: Program, spec: Any) -> None:
    """Fill in per-sample shapes, MACs and parameter counts by running one sample through."""
    h = None
    for step in program:
        match step:
            case Encode():  # every adapter probed on its own input; they share one output shape
                h = [_probe(segments[step.adapters[m.name]], torch.zeros(1, *m.shape)) for m in spec.modalities][0]
            case _:
                outs = {name: _probe(segments[name], h) for name in parts_of(step)}
                trunk = [out for name, out in outs.items() if segments[name].kind.is_trunk]
                if trunk:  # a stage, a gated block, experts: the representation goes on
                    h = trunk[-1]


def _probe(seg: Part, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        out = seg.module(x)
    outs = out if isinstance(out, tuple) else (out,)
    seg.input_shape = tuple(x.shape[1:])
    seg.output_shapes = [tuple(o.shape[1:]) for o in outs]
    seg.macs = count_macs(seg.module, x)
    seg.params = sum(p.numel() for p in seg.module.parameters())
    return outs[0]


def calibration_inputs(segset: SegmentSet, samples: int) -> dict[str, torch.Tensor]:
    """Model inputs for quantization calibration: the samples export provides
    (``segset.calibration``: the recipe's or the training split's), else seeded random ones;
    at most ``samples`` of them."""
    inputs = segset.calibration
    if inputs is None:
        gen = torch.Generator().manual_seed(0)
        inputs = {m.name: example_input(m, samples, gen) for m in segset.net.spec.modalities}
    return {k: v[:samples] for k, v in inputs.items()}


def segment_feeds(segset: SegmentSet, inputs: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The input of every segment when ``inputs`` go through the whole program: gated blocks
    and every expert see the representation their gate saw; a fused segment, its first
    part's input."""
    feeds = part_feeds(segset, inputs)
    return {name: feeds[seg.parts[0].name] for name, seg in segset.segments.items() if seg.parts[0].name in feeds}


def part_feeds(segset: SegmentSet, inputs: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The input of every part the ``inputs`` reach (the program's torch executor)."""
    feeds: dict[str, torch.Tensor] = {}
    seg = segset.parts
    h: torch.Tensor | None = None
    with torch.no_grad():
        for step in segset.program:
            match step:
                case Encode():
                    outs = []
                    for m, name in step.adapters.items():
                        if m in inputs:
                            feeds[name] = inputs[m]
                            outs.append(seg[name].module(inputs[m]))
                    h = outs[0] if len(outs) == 1 else torch.stack(outs).mean(0)
                case Run():
                    feeds[step.part] = h
                    h = seg[step.part].module(h)
                case Gate():
                    assert h is not None  # a program starts with its Encode step
                    feeds[step.gate] = feeds[step.block] = h
                    fire = (seg[step.gate].module(h) > step.threshold).view(-1, *([1] * (h.dim() - 1)))
                    h = torch.where(fire, seg[step.block].module(h), h)
                case Moe():
                    assert h is not None
                    feeds[step.gate] = h
                    choice = seg[step.gate].module(h).argmax(-1)
                    outs = []
                    for name in step.experts:
                        feeds[name] = h
                        outs.append(seg[name].module(h))
                    h = torch.stack(outs, 1)[torch.arange(h.shape[0]), choice]
                case Exit() | Final():
                    for name in parts_of(step):
                        feeds[name] = h
                case _:
                    assert_never(step)
    return feeds
