"""Multi-exit training: a weighted sum of exit losses, task losses, a compute cost on skip
gates and a load-balancing term on mixtures of experts; optional distillation from a teacher.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from torch import nn

from cephalon_edge.toolchain.model import CephalonNet
from cephalon_edge.device.data import Dataset
from cephalon_edge.device.mixes import mix_name


@dataclass(frozen=True)
class TrainSpec:
    epochs: int = 30
    batch_size: int = 64
    lr: float = 3e-3
    weight_decay: float = 5e-4
    seed: int = 0
    gate_cost: float = 0.05  # pushes gates towards skipping
    balance: float = 0.05  # switch-style MoE load balancing
    distill: float = 0.5  # weight of the teacher's final-exit soft labels, when a teacher is given
    temperature: float = 3.0
    shift: int = 2  # random translation augmentation (pixels / steps); 0 = none
    # multi-modal models: probability that a sample keeps only one (random) of its modalities,
    # so the model learns to work with the others missing
    modality_dropout: float = 0.0
    contrastive: float = 0.0  # weight of the InfoNCE alignment between modalities
    contrastive_temperature: float = 0.1
    # parts that keep their weights (FREEZE_GROUPS); with the backbone frozen, the final
    # head's outputs are the exits' soft targets (self-distillation, weight ``distill``)
    freeze: tuple[str, ...] = ()


def _backbone(net: CephalonNet) -> list[nn.Module]:
    return [*net.adapters.values(), *(s.plain for s in net.stages), *net.heads.values()]


def _gates(net: CephalonNet) -> list[nn.Module]:
    return [g for s in net.stages for g in (*s.skip_gates, *([s.moe_gate] if s.moe_gate is not None else []))]


def _experts(net: CephalonNet) -> list[nn.Module]:
    return [b for s in net.stages for b in (*s.skip_blocks, *s.experts)]


# what `train --freeze` can hold still: the plain network (adapters, plain blocks, task heads),
# the gates (skip gates and expert gates), the gated blocks and experts, the exit heads
FREEZE_GROUPS: dict[str, Callable[[CephalonNet], list[nn.Module]]] = {
    "backbone": _backbone, "gates": _gates, "experts": _experts,
    "exits": lambda net: list(net.exits.values()),
}


def frozen_modules(net: CephalonNet, groups: tuple[str, ...]) -> list[nn.Module]:
    return [m for g in groups for m in FREEZE_GROUPS[g](net)]


def trainable(net: CephalonNet, groups: tuple[str, ...]) -> list[nn.Parameter]:
    """The parameters left to train once ``groups`` are frozen."""
    frozen = {id(p) for m in frozen_modules(net, groups) for p in m.parameters()}
    return [p for p in net.parameters() if id(p) not in frozen]


# called after each epoch with (epoch, mean loss); returning True stops training there
EpochCallback = Callable[[int, float], "bool | None"]
# with two modalities: image only, signal only and both, each about a third of the time
MODALITY_DROPOUT = 2 / 3


def _inputs(ds: Dataset, index: np.ndarray) -> dict[str, torch.Tensor]:
    return {k: torch.from_numpy(v[index]) for k, v in ds.inputs.items()}


def _shift(x: torch.Tensor, max_shift: int, gen: torch.Generator) -> torch.Tensor:
    if max_shift <= 0 or x.dim() < 3:  # token ids (B, L) are not shifted
        return x
    dims = tuple(range(2, x.dim()))
    shifts = tuple(int(s) for s in torch.randint(-max_shift, max_shift + 1, (len(dims),), generator=gen))
    return torch.roll(x, shifts, dims)


def _present(data: Dataset, index: np.ndarray, dropout: float, rng: np.random.Generator) -> dict[str, torch.Tensor] | None:
    """Per-sample modality masks: what the data holds, then modality dropout."""
    names = list(data.inputs)
    if len(names) == 1:
        return None
    masks = np.stack([data.has(m)[index] for m in names], 1)  # (B, M)
    drop = (rng.random(len(index)) < dropout) & (masks.sum(1) > 1)
    for i in np.flatnonzero(drop):
        keep = rng.choice(np.flatnonzero(masks[i]))
        masks[i] = False
        masks[i, keep] = True
    return {m: torch.from_numpy(masks[:, j].copy()) for j, m in enumerate(names)}


def info_nce(embeddings: dict[str, torch.Tensor], both: dict[str, torch.Tensor], temperature: float) -> torch.Tensor:
    """Symmetric InfoNCE between every pair of modalities over the samples holding both: a
    sample's embedding in one modality should be nearest its own embedding in the other."""
    names, losses = list(embeddings), []
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            sel = both[a] & both[b]
            if int(sel.sum()) < 2:
                continue
            za = nn.functional.normalize(embeddings[a][sel], dim=-1)
            zb = nn.functional.normalize(embeddings[b][sel], dim=-1)
            logits = za @ zb.T / temperature
            target = torch.arange(len(za))
            losses.append((nn.functional.cross_entropy(logits, target) + nn.functional.cross_entropy(logits.T, target)) / 2)
    return torch.stack(losses).mean() if losses else torch.zeros(())


def multi_exit_loss(net: CephalonNet, out, labels: torch.Tensor, targets: dict[str, torch.Tensor],
                    spec: TrainSpec, teacher_logits: torch.Tensor | None = None) -> torch.Tensor:
    ce = nn.functional.cross_entropy
    n = len(out.exit_logits)
    # later exits weigh a little more: they are the accuracy reference
    weights = [0.5 + 0.5 * (i + 1) / n for i in range(n)]
    loss = sum(w * ce(lg, labels) for w, lg in zip(weights, out.exit_logits)) / sum(weights)
    for task in net.spec.tasks[1:]:
        if task.name in targets:
            pred = out.tasks[task.name]
            if task.kind == "regression":
                loss = loss + nn.functional.mse_loss(pred, targets[task.name])
            else:
                loss = loss + ce(pred, targets[task.name].long().view(-1))
    if out.gate_probs:
        loss = loss + spec.gate_cost * torch.stack([p.mean() for p in out.gate_probs]).mean()
    for probs in out.expert_probs:
        experts = probs.shape[-1]
        frac = nn.functional.one_hot(probs.argmax(-1), experts).float().mean(0)
        loss = loss + spec.balance * experts * (frac * probs.mean(0)).sum()
    if teacher_logits is not None:
        t = spec.temperature
        soft = nn.functional.log_softmax(teacher_logits / t, -1)
        for lg in out.exit_logits:
            kl = nn.functional.kl_div(nn.functional.log_softmax(lg / t, -1), soft, log_target=True,
                                      reduction="batchmean")
            loss = loss + spec.distill * t * t * kl / n
    return loss


def train(net: CephalonNet, data: Dataset, spec: TrainSpec = TrainSpec(),
          teacher: CephalonNet | None = None, on_epoch: EpochCallback | None = None) -> list[float]:
    """Train ``net`` in place; returns the mean loss of each epoch."""
    torch.manual_seed(spec.seed)
    gen = torch.Generator().manual_seed(spec.seed)
    rng = np.random.default_rng(spec.seed)
    frozen = frozen_modules(net, spec.freeze)
    opt = torch.optim.AdamW(trainable(net, spec.freeze), lr=spec.lr, weight_decay=spec.weight_decay)
    self_distill = "backbone" in spec.freeze and teacher is None
    held = [p for m in frozen for p in m.parameters() if p.requires_grad]
    for p in held:  # no gradient flows into frozen parts: backward stops at the first trained one
        p.requires_grad_(False)
    try:
        return _epochs(net, data, spec, teacher, on_epoch, frozen, opt, self_distill, gen, rng)
    finally:
        for p in held:
            p.requires_grad_(True)


def _epochs(net: CephalonNet, data: Dataset, spec: TrainSpec, teacher: CephalonNet | None,
            on_epoch: EpochCallback | None, frozen: list[nn.Module], opt: torch.optim.Optimizer,
            self_distill: bool, gen: torch.Generator, rng: np.random.Generator) -> list[float]:
    steps = spec.epochs * max(1, int(np.ceil(len(data) / spec.batch_size)))
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=spec.lr, total_steps=max(1, steps))
    history = []
    for epoch in range(spec.epochs):
        net.train()
        for m in frozen:  # frozen batch norms keep their statistics
            m.eval()
        order = rng.permutation(len(data))
        total, count = 0.0, 0
        for start in range(0, len(order), spec.batch_size):
            index = order[start:start + spec.batch_size]
            if len(index) < 2:
                continue  # batch norm needs two samples
            inputs = {k: _shift(v, spec.shift, gen) for k, v in _inputs(data, index).items()}
            labels = torch.from_numpy(data.labels[index])
            targets = {k: torch.from_numpy(v[index]) for k, v in data.targets.items()}
            present = _present(data, index, spec.modality_dropout, rng)
            teacher_logits = None
            if teacher is not None:
                with torch.no_grad():
                    teacher_logits = teacher(inputs, present).exit_logits[-1]
            out = net(inputs, present)
            if self_distill:  # the frozen final head is the teacher
                teacher_logits = out.exit_logits[-1].detach()
            loss = multi_exit_loss(net, out, labels, targets, spec, teacher_logits)
            if spec.contrastive and present is not None:
                held = {m: torch.from_numpy(data.has(m)[index]) for m in data.inputs}
                loss = loss + spec.contrastive * info_nce(out.embeddings, held, spec.contrastive_temperature)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * len(index)
            count += len(index)
        history.append(total / max(1, count))
        if on_epoch and on_epoch(epoch, history[-1]):
            break
    net.eval()
    return history


@torch.no_grad()
def evaluate(net: CephalonNet, data: Dataset, batch_size: int = 256) -> dict[str, object]:
    """Accuracy of every exit when each sample is forced to it (static, full-depth view). A
    sample missing a modality is fused from the modalities it holds."""
    net.eval()
    names = net.spec.exit_names
    correct = np.zeros(len(names))
    extra = [t for t in net.spec.tasks[1:] if t.name in data.targets]
    task_sums = {t.name: 0.0 for t in extra}
    for start in range(0, len(data), batch_size):
        index = np.arange(start, min(len(data), start + batch_size))
        present = _present(data, index, 0.0, np.random.default_rng(0))
        out = net(_inputs(data, index), present)
        labels = torch.from_numpy(data.labels[index])
        for i, lg in enumerate(out.exit_logits):
            correct[i] += float((lg.argmax(-1) == labels).sum())
        for t in extra:
            pred, target = out.tasks[t.name], torch.from_numpy(data.targets[t.name][index])
            task_sums[t.name] += float(((pred - target.view_as(pred)) ** 2).mean(1).sum()) if t.kind == "regression" \
                else float((pred.argmax(-1) == target.view(-1)).sum())
    acc = correct / max(1, len(data))
    # extra tasks with targets in the data: mean squared error (regression) or accuracy, full depth
    tasks = {t.name: {"mse" if t.kind == "regression" else "accuracy": task_sums[t.name] / max(1, len(data))}
             for t in extra}
    return {"exit_accuracy": {n: float(a) for n, a in zip(names, acc)}, "final_accuracy": float(acc[-1]),
            "samples": len(data), "dataset": data.name, "tasks": tasks}


def evaluate_mixes(net: CephalonNet, data: Dataset) -> dict[str, dict[str, object]]:
    """``evaluate`` once per modality mix the data allows, keyed ``image``, ``image+signal``..."""
    return {mix_name(mix): evaluate(net, data.with_mix(mix)) for mix in data.mixes()}
