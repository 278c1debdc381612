"""Training a Cephalon model from a spec on one's own data (`cephalon-edge train`; the zoo
builds its models the same way): fixed splits, per-exit validation accuracy every epoch,
early stopping, the best epoch kept, provenance recorded."""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from cephalon_edge import __version__
from cephalon_edge.toolchain.model import CephalonNet
from cephalon_edge.toolchain.spec import ModelSpec
from cephalon_edge.toolchain.train import (
    FREEZE_GROUPS,
    MODALITY_DROPOUT,
    TrainSpec,
    evaluate,
    evaluate_mixes,
    train,
    trainable,
)
from cephalon_edge.device.data import SPLIT_SEED, SPLITS, Dataset, builtin_name, load_dataset, split_index
from cephalon_edge.errors import DataError, UsageError

# with several modalities: modality dropout and InfoNCE alignment, as the zoo's multimodal model
CONTRASTIVE = 0.2
MIN_SPLIT = 2  # samples every split needs (batch norm trains on pairs)

EpochReport = Callable[[dict[str, Any]], None]


@dataclass(frozen=True)
class FitSpec:
    data: str  # a built-in name, a .npz or an image folder
    train: TrainSpec = TrainSpec()
    patience: int | None = 8  # epochs without a better validation score before stopping; None: never
    val_data: str | None = None  # default: the built-in val split, or 20% of DATA
    label_map: Path | None = None


def validate(spec: FitSpec) -> None:
    t = spec.train
    if t.epochs < 1:
        raise UsageError(f"--epochs must be >= 1, got {t.epochs}")
    if t.batch_size < 2:
        raise UsageError(f"--batch-size must be >= 2 (batch norm), got {t.batch_size}")
    if not t.lr > 0:
        raise UsageError(f"--lr must be positive, got {t.lr}")
    if spec.patience is not None and spec.patience < 1:
        raise UsageError(f"--patience must be >= 1, got {spec.patience}")
    unknown = [g for g in t.freeze if g not in FREEZE_GROUPS]
    if unknown:
        raise UsageError(f"--freeze {unknown[0]!r}: not a part of the model", hint=f"parts: {', '.join(FREEZE_GROUPS)}")


def parse_freeze(text: str) -> tuple[str, ...]:
    """``--freeze backbone,gates`` -> ("backbone", "gates")."""
    return tuple(dict.fromkeys(g.strip() for g in text.split(",") if g.strip()))


def splits(spec: FitSpec, model: ModelSpec) -> tuple[Dataset, Dataset, Dataset]:
    """(train, val, test), every one checked against the model before training. A built-in
    dataset gives its fixed splits; a file or folder is split 60/20/20 by a fixed seed (or
    80/20 train/test with ``--val-data``)."""
    contract = model.contract()
    name = builtin_name(spec.data)
    if name:
        parts = [load_dataset(f"{name}:{s}", contract) for s in ("train", "val", "test")]
    else:
        whole = load_dataset(spec.data, contract, label_map=spec.label_map)
        index = {s: split_index(len(whole), s) for s in SPLITS}
        if spec.val_data is not None:  # the file's own validation share trains too
            index["train"] = np.concatenate([index["train"], index["val"]])
        parts = [whole.subset(index[s]) for s in SPLITS]
        for part, split in zip(parts, SPLITS):
            part.name = f"{whole.name}:{split} (seed {SPLIT_SEED})"
    if spec.val_data is not None:
        parts[1] = load_dataset(spec.val_data, contract, label_map=spec.label_map)
    for part, split in zip(parts, ("train", "val", "test")):
        if len(part) < MIN_SPLIT:
            raise DataError(f"{spec.data}: the {split} split holds {len(part)} samples; training needs at least "
                            f"{MIN_SPLIT} in each", hint="give more samples (a file is split 60/20/20)")
    return parts[0], parts[1], parts[2]



def _score(accuracy: dict[str, float]) -> float:
    """What early stopping watches: the mean accuracy over the exits (every exit ships)."""
    return float(np.mean(list(accuracy.values())))


def fit(net: CephalonNet, train_data: Dataset, val: Dataset, tspec: TrainSpec, patience: int | None,
        on_epoch: EpochReport | None = None) -> dict[str, Any]:
    """Train ``net`` in place, evaluating every exit on ``val`` after each epoch; stops after
    ``patience`` epochs without improvement and leaves ``net`` at its best epoch."""
    multi = len(net.spec.modalities) > 1
    if multi and tspec.modality_dropout == 0.0 and tspec.contrastive == 0.0:
        tspec = dataclasses.replace(tspec, modality_dropout=MODALITY_DROPOUT, contrastive=CONTRASTIVE)
    history: list[dict[str, Any]] = []
    best: dict[str, Any] = {"score": -1.0, "epoch": -1, "state": None}

    def after_epoch(epoch: int, loss: float) -> bool:
        acc = evaluate(net, val)["exit_accuracy"]
        net.train()
        entry = {"epoch": epoch + 1, "loss": loss, "val_exit_accuracy": acc, "val_score": _score(acc)}
        history.append(entry)
        if entry["val_score"] > best["score"]:
            best.update(score=entry["val_score"], epoch=epoch + 1, state=copy.deepcopy(net.state_dict()))
        if on_epoch:
            on_epoch(entry)
        return patience is not None and epoch + 1 - best["epoch"] >= patience

    train(net, train_data, tspec, on_epoch=after_epoch)
    if best["state"] is not None:
        net.load_state_dict(best["state"])
    net.eval()
    return {"epochs_run": len(history), "best_epoch": best["epoch"],
            "stopped_early": len(history) < tspec.epochs, "history": history, "train": dataclasses.asdict(tspec)}


def train_from_spec(model: ModelSpec, spec: FitSpec, on_epoch: EpochReport | None = None,
                    start: CephalonNet | None = None) -> tuple[CephalonNet, dict[str, Any]]:
    """A model of ``model`` trained on ``spec.data`` (from ``start``'s weights when given: the
    parts ``spec.train.freeze`` names keep theirs); returns it with its provenance."""
    validate(spec)
    if spec.train.freeze and start is None:
        raise UsageError("--freeze holds trained weights still: give a trained .cephalon checkpoint, not a spec",
                         hint="cephalon-edge import WEIGHTS.pth --spec SPEC.json --preset LIB:MODEL -o MODEL.cephalon")
    train_data, val, test = splits(spec, model)
    torch.manual_seed(spec.train.seed)
    net = start if start is not None else CephalonNet(model)
    counts = {"params": sum(p.numel() for p in net.parameters()),
              "trained_params": sum(p.numel() for p in trainable(net, spec.train.freeze))}
    if counts["trained_params"] == 0:
        raise UsageError(f"--freeze {','.join(spec.train.freeze)} leaves nothing to train",
                         hint=f"parts: {', '.join(FREEZE_GROUPS)}; exit heads train when 'exits' is not frozen")
    result = fit(net, train_data, val, spec.train, spec.patience, on_epoch)
    metrics: dict[str, Any] = {"test": evaluate(net, test), "val": evaluate(net, val)}
    if len(model.modalities) > 1:
        metrics["test_by_modality"] = evaluate_mixes(net, test)
    provenance = {"creator": f"cephalon-edge {__version__} train", "seed": spec.train.seed,
                  # a built-in name lets export, calibrate and bench find real samples by themselves
                  "dataset": builtin_name(spec.data), "data": spec.data, "splits": {"train": train_data.name, "val": val.name,
                                                                    "test": test.name},
                  "epochs": result["epochs_run"], "best_epoch": result["best_epoch"],
                  "stopped_early": result["stopped_early"], "metrics": metrics, "training": result,
                  "frozen": list(spec.train.freeze), **counts}
    return net, provenance
