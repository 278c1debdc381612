"""CephalonNet: the reference dynamic network, built from a ``ModelSpec`` alone.

``forward`` is the training / static view: every exit, every gated block (masked by its
gate) and every expert (masked by the top-1 choice) is computed, so losses see all exits.
Gates and expert choices are hard in the forward value and straight-through in the gradient.

``dynamic_forward`` is the reference semantics that every exported package reproduces:
per sample it stops at the first exit whose confidence reaches its threshold, runs a gated
block only when its gate fires, and runs only the chosen expert.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

import torch
from torch import nn

from cephalon_edge.toolchain.model.layers import (
    Adapter,
    ExitHead,
    ExpertGate,
    SkipGate,
    TaskHead,
    confidence,
    make_block,
)
from cephalon_edge.toolchain.spec import ModelSpec
from cephalon_edge.device.program import GATE_THRESHOLD
from cephalon_edge.errors import UsageError


class Stage(nn.Module):
    def __init__(self, spec: ModelSpec, k: int, cin: int) -> None:
        super().__init__()
        s, dims = spec.stages[k], spec.dims
        blocks = [make_block(dims, s, cin if i == 0 else s.channels, s.stride if i == 0 else 1)
                  for i in range(s.blocks)]
        self.plain = nn.Sequential(*blocks)
        self.skip_gates = nn.ModuleList(SkipGate(s.channels, spec.head_pool) for _ in range(s.skip_blocks))
        self.skip_blocks = nn.ModuleList(make_block(dims, s, s.channels, 1) for _ in range(s.skip_blocks))
        self.moe_gate = ExpertGate(s.channels, s.experts, spec.head_pool) if s.experts else None
        self.experts = nn.ModuleList(make_block(dims, s, s.channels, 1) for _ in range(s.experts))


@dataclass
class TrainOutput:
    """What the training-mode forward returns."""

    exit_logits: list[torch.Tensor]  # one per exit, the final classifier last
    tasks: dict[str, torch.Tensor]
    gate_probs: list[torch.Tensor] = field(default_factory=list)  # (B,) per gate
    expert_probs: list[torch.Tensor] = field(default_factory=list)  # (B, E) per MoE layer
    embeddings: dict[str, torch.Tensor] = field(default_factory=dict)  # (B, C) pooled adapter output per modality


@dataclass
class DynamicOutput:
    """Per-sample result of ``dynamic_forward``."""

    logits: torch.Tensor  # (B, classes) from the exit each sample took
    scores: torch.Tensor  # (B,) confidence at that exit
    exit_index: torch.Tensor  # (B,) index into spec.exit_names
    gates: torch.Tensor  # (B, n_gates) int8: 1 ran, 0 skipped, -1 not reached
    experts: torch.Tensor  # (B, n_moe) int64: chosen expert, -1 not reached
    tasks: dict[str, torch.Tensor]  # extra tasks, NaN for samples that exited early


def expand_thresholds(spec: ModelSpec, thresholds: float | Mapping[str, float] | list[float] | None,
                      default: float = 1.1) -> list[float]:
    """One threshold per early exit, from a float, a list, or a ``{exit name: value}`` dict."""
    early = spec.exit_names[:-1]
    if thresholds is None:
        return [default] * len(early)
    if isinstance(thresholds, (int, float)):
        return [float(thresholds)] * len(early)
    if isinstance(thresholds, Mapping):
        unknown = sorted(set(thresholds) - set(early))
        if unknown:
            raise UsageError(f"unknown exit {unknown[0]!r} in thresholds", hint=f"exits: {', '.join(early)}")
        return [float(thresholds.get(name, default)) for name in early]
    values = [float(t) for t in thresholds]
    if len(values) != len(early):
        raise UsageError(f"expected {len(early)} thresholds (one per early exit), got {len(values)}")
    return values


class CephalonNet(nn.Module):
    def __init__(self, spec: ModelSpec) -> None:
        super().__init__()
        self.spec = spec
        dims = spec.dims
        self.adapters = nn.ModuleDict(
            {m.name: Adapter(m, tokens=spec.backbone == "tokens", class_token=spec.class_token)
             for m in spec.modalities})
        cin = spec.modalities[0].adapter.channels
        self.stages = nn.ModuleList()
        for k, s in enumerate(spec.stages):
            self.stages.append(Stage(spec, k, cin))
            cin = s.channels
        self.exits = nn.ModuleDict(
            {str(k): ExitHead(dims, spec.stages[k].channels, spec.classes, spec.exit_channels, spec.head_pool,
                              layer_norm=spec.stages[k].block == "transformer")
             for k in spec.exit_stages})
        # keyed "task_<name>": a task may be called "class", which is no valid attribute name
        last_is_transformer = spec.stages[-1].block == "transformer"
        self.heads = nn.ModuleDict({f"task_{t.name}": TaskHead(cin, t.outputs, spec.head_pool, last_is_transformer,
                                                               dims, spec.head_channels, spec.head_hidden,
                                                               spec.stages[-1].act)
                                    for t in spec.tasks})
        for m in self.modules():  # one epsilon for every batch norm (the spec's)
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.eps = spec.norm_eps

    def head(self, task: str) -> nn.Module:
        return self.heads[f"task_{task}"]

    # ---- shared pieces -------------------------------------------------------------
    def _named_inputs(self, inputs: torch.Tensor | Mapping[str, torch.Tensor]) -> Mapping[str, torch.Tensor]:
        if isinstance(inputs, torch.Tensor):
            if len(self.spec.modalities) != 1:
                raise UsageError("this model has several modalities: pass a dict keyed by modality name")
            inputs = {self.spec.modalities[0].name: inputs}
        unknown = sorted(set(inputs) - set(self.adapters))
        if unknown:
            raise UsageError(f"unknown modality {unknown[0]!r}", hint=f"modalities: {', '.join(self.adapters)}")
        if not inputs:
            raise UsageError("no input modality given", hint=f"modalities: {', '.join(self.adapters)}")
        return inputs

    def encode(self, inputs: torch.Tensor | Mapping[str, torch.Tensor],
               present: Mapping[str, torch.Tensor] | None = None) -> torch.Tensor:
        """Run the adapters of the modalities given and fuse them (mean) into one representation.

        ``present`` (training): per-sample boolean masks; each sample's representation is the
        mean over the modalities present for it (every sample needs at least one)."""
        return self._fuse(self._adapt(self._named_inputs(inputs)), present)

    def _adapt(self, inputs: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {name: self.adapters[name](x) for name, x in inputs.items()}

    @staticmethod
    def _fuse(encoded: Mapping[str, torch.Tensor], present: Mapping[str, torch.Tensor] | None) -> torch.Tensor:
        parts = list(encoded.values())
        if present is None:
            return parts[0] if len(parts) == 1 else torch.stack(parts).mean(0)
        shape = (-1, *([1] * (parts[0].dim() - 1)))
        weights = [present[name].to(parts[0].dtype).view(shape) for name in encoded]
        total = sum(w * h for w, h in zip(weights, parts))
        return total / sum(weights).clamp(min=1.0)

    # ---- training / static view ----------------------------------------------------
    def forward(self, inputs: torch.Tensor | Mapping[str, torch.Tensor],
                present: Mapping[str, torch.Tensor] | None = None, exits: bool = True) -> TrainOutput:
        """``exits=False``: the plain network, no exit head computed (``exit_logits`` holds
        only the final classifier's)."""
        encoded = self._adapt(self._named_inputs(inputs))
        h = self._fuse(encoded, present)
        out = TrainOutput(exit_logits=[], tasks={},
                          embeddings={name: e.flatten(2).mean(-1) for name, e in encoded.items()})
        for k, stage in enumerate(self.stages):
            h = stage.plain(h)
            for gate, block in zip(stage.skip_gates, stage.skip_blocks):
                p = gate(h)
                hard = (p > GATE_THRESHOLD).to(h.dtype)
                g = (hard + p - p.detach()).view(-1, *([1] * (h.dim() - 1)))
                h = h + g * (block(h) - h)
                out.gate_probs.append(p)
            if stage.moe_gate is not None:
                probs = torch.softmax(stage.moe_gate(h), dim=-1)
                # one-hot of the top-1 expert, written as a comparison so every exporter lowers it
                experts = torch.arange(probs.shape[-1], device=h.device)
                choice = (experts == probs.argmax(-1, keepdim=True)).to(h.dtype)
                weight = (probs * choice).sum(-1)
                straight = (weight / weight.detach()).view(-1, *([1] * (h.dim() - 1)))
                stacked = torch.stack([e(h) for e in stage.experts], 1)
                h = (stacked * choice.view(*choice.shape, *([1] * (h.dim() - 1)))).sum(1) * straight
                out.expert_probs.append(probs)
            if exits and str(k) in self.exits:
                out.exit_logits.append(self.exits[str(k)](h))
        for t in self.spec.tasks:
            out.tasks[t.name] = self.head(t.name)(h)
        out.exit_logits.append(out.tasks[self.spec.tasks[0].name])
        return out

    # ---- reference dynamic semantics -----------------------------------------------
    @torch.no_grad()
    def dynamic_forward(self, inputs: torch.Tensor | Mapping[str, torch.Tensor],
                        thresholds: float | Mapping[str, float] | list[float] | None = None,
                        tasks: list[str] | None = None) -> DynamicOutput:
        """Per-sample early exit, gate and expert decisions; see the module docstring."""
        spec = self.spec
        thr = expand_thresholds(spec, thresholds)
        extra = [t for t in (tasks or []) if t != spec.tasks[0].name]
        task_names = [t.name for t in spec.tasks]
        unknown = sorted(set(extra) - set(task_names))
        if unknown:
            raise UsageError(f"unknown task {unknown[0]!r}", hint=f"tasks: {', '.join(task_names)}")
        h = self.encode(inputs)
        batch = h.shape[0]
        idx = torch.arange(batch)
        res = DynamicOutput(
            logits=torch.zeros(batch, spec.classes), scores=torch.zeros(batch),
            exit_index=torch.full((batch,), -1, dtype=torch.int64),
            gates=torch.full((batch, len(spec.gate_names)), -1, dtype=torch.int8),
            experts=torch.full((batch, len(spec.moe_names)), -1, dtype=torch.int64),
            tasks={t: torch.full((batch, self.head(t).fc.out_features), float("nan")) for t in extra})
        gate_i = moe_i = exit_i = 0
        for k, stage in enumerate(self.stages):
            h = stage.plain(h)
            for gate, block in zip(stage.skip_gates, stage.skip_blocks):
                fire = gate(h) > GATE_THRESHOLD
                res.gates[idx, gate_i] = fire.to(torch.int8)
                if fire.any():
                    h = h.clone()
                    h[fire] = block(h[fire])
                gate_i += 1
            if stage.moe_gate is not None:
                choice = stage.moe_gate(h).argmax(-1)
                res.experts[idx, moe_i] = choice
                mixed = torch.empty_like(h)
                for e, expert in enumerate(stage.experts):
                    chosen = choice == e
                    if chosen.any():
                        mixed[chosen] = expert(h[chosen])
                h = mixed
                moe_i += 1
            if str(k) in self.exits:
                logits = self.exits[str(k)](h)
                score = confidence(logits)
                done = score >= thr[exit_i]
                res.logits[idx[done]] = logits[done]
                res.scores[idx[done]] = score[done]
                res.exit_index[idx[done]] = exit_i
                h, idx = h[~done], idx[~done]
                exit_i += 1
                if idx.numel() == 0:
                    return res
        logits = self.head(spec.tasks[0].name)(h)
        res.logits[idx] = logits
        res.scores[idx] = confidence(logits)
        res.exit_index[idx] = exit_i
        for t in extra:
            res.tasks[t][idx] = self.head(t)(h)
        return res
