"""A dataset checked against the model it is for, before any work: modalities and shapes,
labels inside the model's classes, values in the range the model's preprocessing produces
(raw 0-255 pixels are refused, not silently routed), token ids inside the vocabulary, and
extra task targets (``target_<task>``) shaped for their task."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np

from cephalon_edge.errors import DataError

if TYPE_CHECKING:
    from cephalon_edge.device.data import Dataset

# model-ready values may overshoot the preprocessed range by this many spans (standardised data
# under a spec that left the default preprocessing, augmentation, noise), and this fraction of
# them may lie beyond it, before the data is called out of range: raw 0-255 pixels still fail
RANGE_SLACK_SPANS = 8.0
RANGE_OUTLIER_FRACTION = 1e-3


@dataclass(frozen=True)
class Contract:
    """What a model takes: its inputs (manifest entries: name, kind, shape, preprocessing,
    vocab), its class names, and its tasks (name, kind, outputs; the first is the class)."""
    inputs: tuple[Mapping[str, Any], ...]
    labels: tuple[str, ...]
    tasks: tuple[Mapping[str, Any], ...] = field(default=())

    @classmethod
    def from_manifest(cls, manifest: Any) -> "Contract":
        return cls(tuple(manifest.inputs.values()), tuple(manifest.labels), tuple(manifest.data["tasks"]))

    @property
    def shapes(self) -> dict[str, tuple[int, ...]]:
        return {m["name"]: tuple(m["shape"]) for m in self.inputs}

    @property
    def image_inputs(self) -> list[Mapping[str, Any]]:
        return [m for m in self.inputs if len(m["shape"]) == 3]


def check_dataset(ds: "Dataset", contract: Contract) -> None:
    """Refuse, in one line each, a dataset the model cannot be judged or trained on."""
    ds.check_shapes(contract.shapes)
    _check_labels(ds, len(contract.labels))
    for m in contract.inputs:
        if m["name"] in ds.inputs:
            x = ds.inputs[m["name"]][ds.has(m["name"])]
            if m.get("vocab") is not None:
                _check_token_ids(ds.name, m, x)
            elif m.get("preprocessing"):
                _check_value_range(ds.name, m, x)
    _check_targets(ds, contract.tasks[1:])


def _check_labels(ds: "Dataset", classes: int) -> None:
    if not classes:
        return
    bad = (ds.labels < 0) | (ds.labels >= classes)
    if bad.any():
        values = np.unique(ds.labels[bad])
        shown = ", ".join(map(str, values[:6])) + (", ..." if len(values) > 6 else "")
        raise DataError(f"dataset {ds.name}: {int(bad.sum())} of {len(ds)} labels lie outside the model's "
                        f"{classes} classes [0, {classes}): {shown}",
                        hint=f"labels are class indices 0..{classes - 1} in the order of the model's labels")


def expected_range(preprocessing: Mapping[str, Any]) -> tuple[float, float]:
    """The span of model-ready values: the raw ``value_range`` through ``(x - mean) / std``."""
    lo, hi = preprocessing.get("value_range") or (0.0, 1.0)
    mean = np.asarray(preprocessing.get("mean") or [0.0], np.float64)
    std = np.asarray(preprocessing.get("std") or [1.0], np.float64)
    ends = np.concatenate([(lo - mean) / std, (hi - mean) / std])
    return float(ends.min()), float(ends.max())


def _check_value_range(name: str, modality: Mapping[str, Any], x: np.ndarray) -> None:
    if x.size == 0:
        return
    lo, hi = expected_range(modality["preprocessing"])
    slack = RANGE_SLACK_SPANS * (hi - lo)
    outside = float(((x < lo - slack) | (x > hi + slack)).mean())
    if outside <= RANGE_OUTLIER_FRACTION:
        return
    raw_lo, raw_hi = (modality["preprocessing"].get("value_range") or (0.0, 1.0))
    top = float(x.max())
    looks_raw = top > 10 * max(abs(raw_hi), abs(raw_lo), 1.0) and top <= 255.5 and float(x.min()) >= 0
    hint = (f"these look like raw 0-255 pixels; a dataset .npz holds model-ready values: scale to "
            f"{[raw_lo, raw_hi]}, then (x - mean) / std with the spec's preprocessing, or pass an image folder"
            if looks_raw else
            f"model-ready {modality['name']} values lie in about [{lo:.3g}, {hi:.3g}] (the spec's value_range "
            f"{[raw_lo, raw_hi]} through (x - mean) / std)")
    raise DataError(f"dataset {name}: {outside:.1%} of the {modality['name']} values lie outside the range "
                    f"the model's preprocessing gives (values {float(x.min()):.4g} to {top:.4g})", hint=hint)


def are_token_ids(x: np.ndarray, vocab: int) -> bool:
    """Whole numbers in ``[0, vocab)`` (what a text adapter's embedding takes); the router
    checks its inputs and datasets are checked with this one rule."""
    return x.size == 0 or bool(np.all(x == np.round(x)) and x.min() >= 0 and x.max() < vocab)


def _check_token_ids(name: str, modality: Mapping[str, Any], x: np.ndarray) -> None:
    vocab = int(modality["vocab"])
    if not are_token_ids(x, vocab):
        raise DataError(f"dataset {name}: {modality['name']} must hold token ids, whole numbers in [0, {vocab}); "
                        f"found values {float(x.min()):.4g} to {float(x.max()):.4g}")


def _check_targets(ds: "Dataset", tasks: Sequence[Mapping[str, Any]]) -> None:
    by_name = {t["name"]: t for t in tasks}
    for task_name, y in list(ds.targets.items()):
        task = by_name.get(task_name)
        if task is None:
            raise DataError(f"dataset {ds.name}: target_{task_name} names no task of this model",
                            hint=f"extra tasks: {', '.join(by_name) or 'none'} (give them as target_<task>)")
        outputs = int(task.get("outputs", 1))
        if task.get("kind") == "regression":
            if y.ndim == 1 and outputs == 1:
                y = y[:, None]
            if y.shape[1:] != (outputs,):
                raise DataError(f"dataset {ds.name}: target_{task_name} has shape {list(y.shape)}; the "
                                f"regression task takes [{len(ds)}, {outputs}]")
            ds.targets[task_name] = y.astype(np.float32)
        else:
            if y.ndim != 1 or not np.all(y == np.round(y)) or (y.size and (y.min() < 0 or y.max() >= outputs)):
                raise DataError(f"dataset {ds.name}: target_{task_name} must be {len(ds)} class indices in "
                                f"[0, {outputs}), got {y.dtype} {list(y.shape)}")
            ds.targets[task_name] = y.astype(np.int64)
