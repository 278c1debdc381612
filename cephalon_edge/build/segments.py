"""Cut a CephalonNet into static segments plus a declarative program that reproduces
``dynamic_forward``.

Segments (stable, readable names): ``adapter.<modality>``, ``stage<k>`` (the plain blocks of
stage k), ``gate<k>.<b>`` / ``block<k>.<b>`` (a SkipNet gate and its block), ``moe<k>.gate`` /
``moe<k>.expert<e>``, ``exit<k>`` (logits and confidence), ``head.<task>``.

The program's step kinds are defined in ``cephalon_edge.device.program``; ``segment_feeds``
here is its torch executor (for parity and quantization calibration).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from math import prod
from typing import Any, Mapping

import torch
from torch import nn

from cephalon_edge.build.model import CephalonNet
from cephalon_edge.build.model.layers import confidence
from cephalon_edge.device.program import (
    Encode,
    Exit,
    Final,
    Gate,
    Moe,
    Program,
    Run,
    segments_of,
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
    """The monolithic full-depth model with every head: what one would export without
    cephalon-edge. Gated blocks and experts are all computed and masked. It takes every
    modality, in spec order (a multi-modal static model needs all of them)."""

    def __init__(self, net: CephalonNet) -> None:
        super().__init__()
        self.net = net
        self.input_names = net.spec.modality_names

    def forward(self, *xs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.net(dict(zip(self.input_names, xs)))
        extra = [out.tasks[t.name] for t in self.net.spec.tasks[1:]]
        return (*out.exit_logits, *extra)

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
class Segment:
    name: str
    kind: str  # adapter | stage | gate | block | moe_gate | expert | exit | head
    module: nn.Module
    outputs: list[str]
    input_shape: tuple[int, ...] = ()  # one sample
    output_shapes: list[tuple[int, ...]] = field(default_factory=list)
    macs: int = 0
    params: int = 0

    @property
    def flops(self) -> int:
        return 2 * self.macs


@dataclass
class SegmentSet:
    net: CephalonNet
    segments: dict[str, Segment]
    program: Program
    # model inputs (by modality) for quantization calibration, from the checkpoint's dataset
    calibration: dict[str, torch.Tensor] | None = None

    def __iter__(self):
        return iter(self.segments.values())

    def __getitem__(self, name: str) -> Segment:
        return self.segments[name]

    def example_input(self, name: str, batch: int = 2, seed: int = 0) -> torch.Tensor:
        g = torch.Generator().manual_seed(seed)
        for m in self.net.spec.modalities:
            if name == f"adapter.{m.name}":
                return example_input(m, batch, g)
        return torch.randn(batch, *self.segments[name].input_shape, generator=g)

    def exit_paths(self) -> list[dict[str, Any]]:
        """Cumulative cost of reaching each exit: every segment on the way, gated blocks
        counted as run and one expert per MoE layer (the worst case of the path)."""
        paths = []
        for name, seen in self.program.exit_paths():
            macs = sum(self.segments[n].macs for n in seen)
            paths.append({"name": name, "cumulative_macs": macs, "cumulative_flops": 2 * macs,
                          "params": sum(self.segments[n].params for n in seen), "segments": seen})
        return paths


def count_macs(module: nn.Module, x: torch.Tensor) -> int:
    """Multiply-accumulates of one sample through ``module``, from its conv and linear layers."""
    total = 0

    def hook(m: nn.Module, _inp: Any, out: torch.Tensor) -> None:
        nonlocal total
        per_sample = out.numel() // out.shape[0]
        if isinstance(m, (nn.Conv1d, nn.Conv2d)):
            total += per_sample * (m.in_channels // m.groups) * prod(m.kernel_size)
        elif isinstance(m, nn.Linear):
            total += per_sample * m.in_features

    handles = [m.register_forward_hook(hook) for m in module.modules()
               if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Linear))]
    try:
        with torch.no_grad():
            module(x[:1])
    finally:
        for h in handles:
            h.remove()
    return total


def build_segments(net: CephalonNet) -> SegmentSet:
    """Decompose ``net`` (put in eval mode) into segments and the program that routes them."""
    net.eval()
    spec = net.spec
    segments: dict[str, Segment] = {}
    steps: list[Any] = []

    def add(name: str, kind: str, module: nn.Module, outputs: list[str]) -> str:
        segments[name] = Segment(name, kind, module, outputs)
        return name

    steps.append(Encode({m.name: add(f"adapter.{m.name}", "adapter", net.adapters[m.name], ["y"])
                         for m in spec.modalities}))
    gate_i = moe_i = exit_i = 0
    for k, stage in enumerate(net.stages):
        s = spec.stages[k]
        steps.append(Run(add(f"stage{k}", "stage", stage.plain, ["y"])))
        for j, (gate, block) in enumerate(zip(stage.skip_gates, stage.skip_blocks)):
            b = s.blocks + j
            steps.append(Gate(add(f"gate{k}.{b}", "gate", gate, ["prob"]), add(f"block{k}.{b}", "block", block, ["y"]),
                              gate_i))
            gate_i += 1
        if stage.moe_gate is not None:
            gate_name = add(f"moe{k}.gate", "moe_gate", stage.moe_gate, ["logits"])
            experts = tuple(add(f"moe{k}.expert{e}", "expert", expert, ["y"]) for e, expert in enumerate(stage.experts))
            steps.append(Moe(gate_name, experts, moe_i))
            moe_i += 1
        if str(k) in net.exits:
            steps.append(Exit(add(f"exit{k}", "exit", ScoredHead(net.exits[str(k)]), ["logits", "score"]),
                              f"exit{k}", exit_i))
            exit_i += 1
    first = spec.tasks[0]
    head = add(f"head.{first.name}", "head", ScoredHead(net.head(first.name)), ["logits", "score"])
    tasks = {t.name: add(f"head.{t.name}", "head", net.head(t.name), ["y"]) for t in spec.tasks[1:]}
    steps.append(Final(head, exit_i, tasks=tasks))
    program = Program(tuple(steps))
    _measure(segments, program, spec)
    return SegmentSet(net, segments, program)


def _measure(segments: dict[str, Segment], program: Program, spec: Any) -> None:
    """Fill in per-sample shapes, MACs and parameter counts by running one sample through."""
    h = None
    for step in program:
        if isinstance(step, Encode):
            h = [_probe(segments[step.adapters[m.name]], torch.zeros(1, *m.shape)) for m in spec.modalities][0]
            continue
        for name in segments_of(step):
            out = _probe(segments[name], h)
            if segments[name].kind in ("stage", "block", "expert"):
                nxt = out
        if isinstance(step, (Run, Gate, Moe)):
            h = nxt


def _probe(seg: Segment, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        out = seg.module(x)
    outs = out if isinstance(out, tuple) else (out,)
    seg.input_shape = tuple(x.shape[1:])
    seg.output_shapes = [tuple(o.shape[1:]) for o in outs]
    seg.macs = count_macs(seg.module, x)
    seg.params = sum(p.numel() for p in seg.module.parameters())
    return outs[0]


def segment_feeds(segset: SegmentSet, inputs: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The input of every segment when ``inputs`` go through the whole program: gated blocks
    and every expert see the representation their gate saw (the program's torch executor)."""
    feeds: dict[str, torch.Tensor] = {}
    seg = segset.segments
    h: torch.Tensor | None = None
    with torch.no_grad():
        for step in segset.program:
            if isinstance(step, Encode):
                outs = []
                for m, name in step.adapters.items():
                    if m in inputs:
                        feeds[name] = inputs[m]
                        outs.append(seg[name].module(inputs[m]))
                h = outs[0] if len(outs) == 1 else torch.stack(outs).mean(0)
            elif isinstance(step, Run):
                feeds[step.segment] = h
                h = seg[step.segment].module(h)
            elif isinstance(step, Gate):
                feeds[step.gate] = feeds[step.block] = h
                fire = (seg[step.gate].module(h) > step.threshold).view(-1, *([1] * (h.dim() - 1)))
                h = torch.where(fire, seg[step.block].module(h), h)
            elif isinstance(step, Moe):
                feeds[step.gate] = h
                choice = seg[step.gate].module(h).argmax(-1)
                outs = []
                for name in step.experts:
                    feeds[name] = h
                    outs.append(seg[name].module(h))
                h = torch.stack(outs, 1)[torch.arange(h.shape[0]), choice]
            elif isinstance(step, (Exit, Final)):
                for name in segments_of(step):
                    feeds[name] = h
    return feeds
