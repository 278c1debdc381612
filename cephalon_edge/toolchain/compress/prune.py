"""Structured pruning with torch-pruning's dependency graph: whole channels leave every
coupled layer (residual paths, exit heads, gates, experts, the next stage), so FLOPs and
latency really drop, and the new widths are written into the spec.

The same channel ratio is applied to every group, so blocks of one stage keep equal widths
(what the spec can express); the ratio is searched so the full-depth path loses the asked
fraction of its FLOPs. Inverted residuals lose expanded channels in their expansion,
depthwise and projection convolutions together (the depthwise groups follow); transformer
blocks lose whole attention heads (q, k and v of a head together) and MLP width, at the
same ratio. Exit-head hidden convs, squeeze-excitation hidden layers and all
output layers (classifiers, gates, expert gates, task heads) keep their widths, and so do
the adapters of a tokens backbone (the shared space every modality projects into).
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from cephalon_edge.toolchain.model import CephalonNet
from cephalon_edge.toolchain.model.layers import (
    Adapter,
    ExitHead,
    ExpertGate,
    SelfAttention,
    SkipGate,
    SqueezeExcite,
    TaskHead,
    TransformerBlock,
)
from cephalon_edge.toolchain.segments import StaticModel, build_segments
from cephalon_edge.toolchain.spec import ModelSpec
from cephalon_edge.errors import UsageError

ROUND_TO = 8  # channel counts stay multiples of 8: SIMD kernels run them at full width


def _round_to(net: CephalonNet) -> int | None:
    """Multiples of 8 when every width is large enough to keep some; tiny models prune freely."""
    widths = [m.adapter.channels for m in net.spec.modalities] + [s.channels for s in net.spec.stages]
    return ROUND_TO if min(widths) >= 2 * ROUND_TO else None


@dataclass
class PrunePlan:
    ratio: float  # channel ratio removed from every prunable group
    spec: ModelSpec  # the widths after pruning
    flops_before: int
    flops_after: int

    @property
    def flops_ratio(self) -> float:
        return self.flops_after / self.flops_before

    def stages(self, before: ModelSpec) -> list[dict]:
        rows = [{"part": f"adapter.{m.name}", "before": m.adapter.channels, "after": a.adapter.channels}
                for m, a in zip(before.modalities, self.spec.modalities)]
        for k, (b, a) in enumerate(zip(before.stages, self.spec.stages)):
            rows.append({"part": f"stage{k}", "before": b.channels, "after": a.channels,
                         "inner_before": b.mid_channels, "inner_after": a.mid_channels})
        return rows


def full_path_flops(net: CephalonNet) -> int:
    return build_segments(net).exit_paths()[-1]["cumulative_flops"]


def _ignored(net: CephalonNet) -> list[nn.Module]:
    """Layers whose output width must not change."""
    ignored: list[nn.Module] = []
    for m in net.modules():
        if isinstance(m, (TaskHead, SkipGate, ExpertGate)):
            ignored.append(m.fc)
            if isinstance(m, TaskHead):  # a widening head conv and a hidden layer keep their widths
                ignored.extend(x for x in [*m.features.modules(), *m.hidden.modules()]
                               if isinstance(x, (nn.Conv1d, nn.Conv2d, nn.Linear)))
        elif isinstance(m, ExitHead):
            ignored.append(m.fc)
            ignored.extend(x for x in m.features.modules() if isinstance(x, (nn.Conv1d, nn.Conv2d)))
        elif isinstance(m, SqueezeExcite):
            ignored.append(m.fc1)
        elif isinstance(m, Adapter) and m.tokens:
            ignored.extend(x for x in m.modules() if isinstance(x, (nn.Conv1d, nn.Conv2d, nn.Embedding)))
    return ignored


def _importance(criterion: str):
    import torch_pruning as tp

    if criterion == "taylor":
        return tp.importance.TaylorImportance()
    return tp.importance.MagnitudeImportance(p=1 if criterion == "l1" else 2)


def apply_ratio(net: CephalonNet, ratio: float, criterion: str,
                taylor_batch: Callable[[CephalonNet], torch.Tensor] | None = None,
                round_to: int | None = None) -> CephalonNet:
    """A pruned copy of ``net`` with ``ratio`` of the channels of every prunable group removed."""
    import torch_pruning as tp

    pruned = copy.deepcopy(net).eval()
    view = StaticModel(pruned, with_exits=True)  # exit heads are pruned with the trunk
    attention = [m for m in pruned.modules() if isinstance(m, SelfAttention)]
    # a token sequence's learned class token and positions are (1, channels, tokens)
    token_params = [(p, 1) for a in pruned.adapters.values() for p in (a.class_token, a.positions) if p is not None]
    pruner = tp.pruner.MagnitudePruner(view, view.example_inputs(2), importance=_importance(criterion), pruning_ratio=ratio,
                                       ignored_layers=_ignored(pruned), global_pruning=False, round_to=round_to,
                                       num_heads={m.qkv: m.heads for m in attention}, prune_num_heads=bool(attention),
                                       prune_head_dims=False, head_pruning_ratio=ratio,
                                       unwrapped_parameters=token_params or None)
    if criterion == "taylor":
        if taylor_batch is None:
            raise UsageError("--prune-criterion taylor needs --data to compute gradients")
        pruned.zero_grad()
        taylor_batch(pruned).backward()
    pruner.step()
    for m in attention:  # whole heads left: the head width stays
        m.heads = pruner.num_heads[m.qkv]
    pruned.zero_grad(set_to_none=True)
    return pruned


def spec_of(pruned: CephalonNet) -> ModelSpec:
    """Read the widths back from the pruned modules and write them into a new spec."""
    spec = pruned.spec
    modalities = tuple(dataclasses.replace(m, adapter=dataclasses.replace(
        m.adapter, channels=pruned.adapters[m.name].out_channels)) for m in spec.modalities)
    stages = []
    for k, (s, stage) in enumerate(zip(spec.stages, pruned.stages)):
        blocks = [*stage.plain, *stage.skip_blocks, *stage.experts]
        if s.block == "transformer":
            stages.append(_transformer_stage(k, s, blocks))
            continue
        convs = [[c for c in b.branch if isinstance(c, (nn.Conv1d, nn.Conv2d))] for b in blocks]
        outs = {c[-1].out_channels for c in convs}
        inner = {c[0].out_channels for c in convs} | ({c[1].out_channels for c in convs} if s.block == "bottleneck" else set())
        if s.block == "inverted" and s.expansion == 1:  # no expansion: each depthwise conv runs at its input's width
            inner = set(outs)
        if len(outs) != 1 or len(inner) != 1:
            raise RuntimeError(f"stage {k}: blocks pruned to unequal widths {sorted(outs)} / {sorted(inner)}")
        channels, mid = outs.pop(), inner.pop()
        if min(channels, mid) < 1:
            raise UsageError(f"pruning would remove every channel of stage {k}", hint="use a smaller --prune")
        se = next((m.fc1.out_features for m in stage.modules() if isinstance(m, SqueezeExcite)), None)
        stages.append(dataclasses.replace(s, channels=channels, inner_channels=mid, se_channels=se if s.se else None))
    return ModelSpec.from_dict(dataclasses.replace(spec, modalities=modalities, stages=tuple(stages)).to_dict())


def _transformer_stage(k: int, s, blocks: list[TransformerBlock]):
    """A transformer stage's widths after pruning: heads left, MLP width (the residual width
    is the shared token space's and stays)."""
    heads = {b.attn.heads for b in blocks}
    hidden = {b.mlp.fc1.out_features for b in blocks}
    if len(heads) != 1 or len(hidden) != 1:
        raise RuntimeError(f"stage {k}: blocks pruned to unequal heads {sorted(heads)} / MLP widths {sorted(hidden)}")
    if min(heads) < 1 or min(hidden) < 1:
        raise UsageError(f"pruning would remove every head or MLP channel of stage {k}", hint="use a smaller --prune")
    return dataclasses.replace(s, heads=heads.pop(), head_width=blocks[0].attn.head_width, inner_channels=hidden.pop())


def plan(net: CephalonNet, target: float, criterion: str,
         taylor_batch: Callable[[CephalonNet], torch.Tensor] | None = None) -> tuple[PrunePlan, CephalonNet]:
    """Search the channel ratio whose full-path FLOPs drop by ``target`` (bisection, ~2%)."""
    if not 0 < target < 1:
        raise UsageError(f"--prune is the fraction of FLOPs to remove, in (0, 1); got {target}")
    before = full_path_flops(net)
    want = before * (1 - target)
    best: tuple[float, CephalonNet, int] | None = None
    # channel counts in multiples of 8 when that still reaches the target within 5%, else free
    for round_to in dict.fromkeys([_round_to(net), None]):
        lo, hi = 0.0, 0.95
        for _ in range(10):
            mid = (lo + hi) / 2
            candidate = apply_ratio(net, mid, criterion, taylor_batch, round_to)
            flops = full_path_flops(candidate)
            if best is None or abs(flops - want) < abs(best[2] - want):
                best = (mid, candidate, flops)
            if abs(flops - want) / want < 0.02:
                break
            lo, hi = (mid, hi) if flops > want else (lo, mid)
        if abs(best[2] - want) / before <= 0.05:
            break
    ratio, pruned, flops = best
    if abs(flops - want) / before > 0.1:
        raise UsageError(f"cannot reach {target:.0%} fewer FLOPs by pruning channels (closest: {1 - flops / before:.0%})",
                         hint="every layer keeps at least one channel; ask for less")
    new_spec = spec_of(pruned)
    rebuilt = CephalonNet(new_spec)
    rebuilt.load_state_dict(pruned.state_dict())  # proves the spec describes the pruned weights
    return PrunePlan(ratio, new_spec, before, flops), rebuilt.eval()
