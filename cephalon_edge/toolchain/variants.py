"""Width variants of one model (`compress --widths 1.0,0.75,0.5`): the narrower ones pruned
from the full one with the same structured pruning (every coupled layer loses the same share
of channels, counts kept multiples of 8), then fine-tuned with distillation from it. Every
variant keeps its exits, gates, experts and heads. They travel in one checkpoint: the full
model's tensors as usual, each narrower variant's under ``variant/<name>/`` with its spec in
the metadata."""

from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import torch

from cephalon_edge.toolchain.model import CephalonNet
from cephalon_edge.toolchain.spec import ModelSpec
from cephalon_edge.toolchain.train import MODALITY_DROPOUT, TrainSpec, train
from cephalon_edge.device.data import Dataset
from cephalon_edge.device.variants import variant_name
from cephalon_edge.errors import CheckpointError

def narrower(net: CephalonNet, width: float, criterion: str = "l1") -> CephalonNet:
    """``net`` with ``1 - width`` of the channels of every prunable group removed, rebuilt
    from its own spec (which proves the spec describes the weights)."""
    from cephalon_edge.toolchain.compress.prune import _round_to, apply_ratio, spec_of

    pruned = apply_ratio(net, 1.0 - width, criterion, round_to=_round_to(net))
    rebuilt = CephalonNet(spec_of(pruned))
    rebuilt.load_state_dict(pruned.state_dict())
    return rebuilt.eval()


def make_variants(net: CephalonNet, widths: Sequence[float], train_data: Dataset | None, finetune_epochs: int,
                  seed: int = 0, criterion: str = "l1",
                  on_epoch: Callable[[str, int, float], None] | None = None) -> dict[str, tuple[float, CephalonNet]]:
    """Name -> (width, model), widest first; the narrower ones distilled from ``net``."""
    variants: dict[str, tuple[float, CephalonNet]] = {}
    for width in widths:
        name = variant_name(width)
        if width == 1.0:
            variants[name] = (width, net)
            continue
        torch.manual_seed(seed)
        model = narrower(net, width, criterion)
        if finetune_epochs and train_data is not None:
            report = (lambda e, loss, n=name: on_epoch(n, e, loss)) if on_epoch else None
            dropout = MODALITY_DROPOUT if len(net.spec.modalities) > 1 else 0.0  # keep every mix working
            train(model, train_data, TrainSpec(epochs=finetune_epochs, lr=1e-3, seed=seed, modality_dropout=dropout),
                  teacher=net, on_epoch=report)
        variants[name] = (width, model.eval())
    return variants


def variant_tensors(variants: Mapping[str, tuple[float, CephalonNet]]) -> tuple[dict[str, torch.Tensor], list[dict[str, Any]]]:
    """The narrower variants' tensors (prefixed) and their metadata entries, for ``save``."""
    from cephalon_edge.toolchain.checkpoint import VARIANT_PREFIX

    tensors, entries = {}, []
    for name, (width, model) in variants.items():
        entries.append({"name": name, "width": width, **({"spec": model.spec.to_dict()} if width != 1.0 else {})})
        if width != 1.0:
            for k, v in model.state_dict().items():
                tensors[f"{VARIANT_PREFIX}{name}/{k}"] = v.detach().contiguous().clone()
    return tensors, entries


def load_variants(full: CephalonNet, meta: Mapping[str, Any], states: Mapping[str, dict[str, torch.Tensor]],
                  source: str) -> dict[str, tuple[float, CephalonNet]]:
    """Name -> (width, model) from a checkpoint's metadata and its ``variant.`` tensors; a
    checkpoint without variants gives just the full model."""
    from cephalon_edge.toolchain.state_import import reconcile

    entries = meta.get("variants") or [{"name": variant_name(1.0), "width": 1.0}]
    variants = {}
    for entry in entries:
        name, width = entry.get("name"), entry.get("width")
        if width == 1.0:
            variants[name] = (1.0, full)
            continue
        if name not in states:
            raise CheckpointError(f"{source}: variant {name!r} has no tensors", hint="compress --widths again")
        model = CephalonNet(ModelSpec.from_dict(entry.get("spec")))
        model.load_state_dict(reconcile(model, states[name], f"{source} (variant {name})", cast=False), strict=True)
        variants[name] = (float(width), model.eval())
    return variants
