"""The `compress` workflow: structured pruning, recovery fine-tuning with distillation, width
variants and a quantization recipe, with accuracy, size and FLOPs before and after."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from cephalon_edge import __version__
from cephalon_edge.toolchain.checkpoint import load_with_metadata, save
from cephalon_edge.toolchain.compress.prune import plan
from cephalon_edge.toolchain.compress.quantize import recipe, simulate
from cephalon_edge.toolchain.compress.spec import CompressSpec, validate
from cephalon_edge.toolchain.model import CephalonNet
from cephalon_edge.toolchain.segments import build_segments
from cephalon_edge.toolchain.train import MODALITY_DROPOUT, TrainSpec, evaluate, train
from cephalon_edge.device.data import Dataset, load_dataset
from cephalon_edge.errors import DataError

BYTES_PER_WEIGHT = {"none": 4, "fp16": 2, "int8": 1, "int8-dynamic": 1}


def _splits(ref: str | None, net: CephalonNet, meta: dict[str, Any],
            label_map: Path | None = None) -> tuple[Dataset, Dataset]:
    """(train, test): the built-in splits, or one data file used for both (said in the report)."""
    ref = ref or (meta.get("provenance") or {}).get("dataset")
    if not ref:
        raise DataError("this checkpoint names no dataset", hint="pass --data (a built-in name, a .npz or an image folder)")
    contract = net.spec.contract()
    if Path(ref).exists():
        data = load_dataset(ref, contract, label_map=label_map)
        return data, data
    name = ref.split(":")[0]  # a built-in dataset: fine-tune on train, report on test
    return load_dataset(f"{name}:train", contract), load_dataset(f"{name}:test", contract)


def measure(net: CephalonNet, test: Dataset, size_bytes: int) -> dict[str, Any]:
    paths = build_segments(net).exit_paths()
    acc = evaluate(net, test)
    return {"flops": paths[-1]["cumulative_flops"], "exit_flops": {p["name"]: p["cumulative_flops"] for p in paths},
            "params": sum(p.numel() for p in net.parameters()), "size_bytes": size_bytes,
            "exit_accuracy": acc["exit_accuracy"], "final_accuracy": acc["final_accuracy"], "tasks": acc["tasks"]}


def compress_checkpoint(checkpoint: Path, output: Path, spec: CompressSpec,
                        on_plan: Callable[[dict[str, Any]], None] | None = None,
                        on_epoch: Callable[[int, float], None] | None = None) -> dict[str, Any]:
    validate(checkpoint, output, spec)
    torch.manual_seed(spec.seed)
    net, meta = load_with_metadata(checkpoint)
    train_data, test = _splits(spec.data, net, meta, spec.label_map)
    before = measure(net, test, Path(checkpoint).stat().st_size)
    report: dict[str, Any] = {"schema": "cephalon-edge/compress/1", "checkpoint": str(checkpoint), "output": str(output),
                              "dataset": {"train": train_data.name, "test": test.name}, "before": before}
    model = net
    if spec.prune is not None:
        def taylor_batch(m: CephalonNet) -> torch.Tensor:
            idx = np.arange(min(64, len(train_data)))
            out = m({k: torch.from_numpy(v[idx]) for k, v in train_data.inputs.items()})
            labels = torch.from_numpy(train_data.labels[idx])
            return sum(torch.nn.functional.cross_entropy(lg, labels) for lg in out.exit_logits)

        prune_plan, model = plan(net, spec.prune, spec.criterion, taylor_batch)
        report["plan"] = {"target": spec.prune, "criterion": spec.criterion, "channel_ratio": prune_plan.ratio,
                          "flops_ratio": prune_plan.flops_ratio, "stages": prune_plan.stages(net.spec)}
        if on_plan:
            on_plan(report["plan"])
    if spec.widths is not None:
        return _compress_widths(checkpoint, output, spec, net, meta, train_data, test, report, on_epoch)
    if spec.finetune_epochs:
        dropout = MODALITY_DROPOUT if len(net.spec.modalities) > 1 else 0.0  # keep every mix working
        history = train(model, train_data, TrainSpec(epochs=spec.finetune_epochs, lr=1e-3, seed=spec.seed,
                                                     modality_dropout=dropout),
                        teacher=net if model is not net else None, on_epoch=on_epoch)
        report["finetune"] = {"epochs": spec.finetune_epochs, "final_loss": history[-1], "distilled": model is not net}
    calibration, quant = _recipe(spec, train_data)
    after = measure(model, test, 0)
    if quant:
        sim = measure(simulate(model, spec.quantize, calibration), test, 0)
        after["quantized"] = {"mode": spec.quantize, "exit_accuracy": sim["exit_accuracy"], "tasks": sim["tasks"],
                              "final_accuracy": sim["final_accuracy"],
                              "estimated_size_bytes": after["params"] * BYTES_PER_WEIGHT[spec.quantize],
                              "simulated": "fake-quant in PyTorch; the target's quantizer realises it at export"}
        report["quantization"] = quant
    # written last: Ctrl-C during the evaluation above leaves the destination as it was
    save(model, output, _provenance(meta, checkpoint, spec), quantization=quant, calibration=calibration)
    after["size_bytes"] = Path(output).stat().st_size
    report["after"] = after
    return report


def _recipe(spec: CompressSpec, train_data: Dataset) -> tuple[dict[str, torch.Tensor] | None, dict[str, Any] | None]:
    """The quantization recipe and the calibration samples stored with it (none: no recipe)."""
    if spec.quantize == "none":
        return None, None
    n = min(spec.calib_samples, len(train_data))
    return {k: torch.from_numpy(v[:n]) for k, v in train_data.inputs.items()}, recipe(spec.quantize, n)


def _provenance(meta: dict[str, Any], checkpoint: Path, spec: CompressSpec) -> dict[str, Any]:
    """The source's provenance and what compress did (the options given; paths as text)."""
    settings = {k: str(v) if isinstance(v, Path) else v for k, v in dataclasses.asdict(spec).items() if v is not None}
    return {**(meta.get("provenance") or {}), "creator": f"cephalon-edge {__version__} compress",
            "compressed_from": str(checkpoint), "compress": settings}


def _compress_widths(checkpoint: Path, output: Path, spec: CompressSpec, net: CephalonNet, meta: dict[str, Any],
                     train_data: Dataset, test: Dataset, report: dict[str, Any],
                     on_epoch: Callable[[int, float], None] | None) -> dict[str, Any]:
    """The full model and its narrower width variants (distilled from it) in one checkpoint,
    with FLOPs, params and per-exit accuracy of each."""
    from cephalon_edge.toolchain.variants import make_variants

    variants = make_variants(net, spec.widths or (1.0,), train_data, spec.finetune_epochs, spec.seed, spec.criterion,
                             on_epoch=(lambda name, e, loss: on_epoch(e, loss)) if on_epoch else None)
    report["variants"] = [{"name": name, "width": width, **measure(model, test, 0)}
                          for name, (width, model) in variants.items()]
    calibration, quant = _recipe(spec, train_data)
    if quant:
        report["quantization"] = quant
    save(net, output, _provenance(meta, checkpoint, spec), quantization=quant, calibration=calibration,
         variants=variants)
    report["after"] = {**report["before"], "size_bytes": Path(output).stat().st_size}
    return report
