"""`run`: model inputs from files, routed through a package (torch-free)."""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from cephalon_edge.device.arrays import check_npy
from cephalon_edge.device.mixes import parse_mix
from cephalon_edge.device.preprocess import IMAGE_SUFFIXES, load_image
from cephalon_edge.device.router import Router
from cephalon_edge.device.variants import is_variants_package, open_router
from cephalon_edge.errors import DataError, UsageError
from cephalon_edge.fsutil import regular_file

MAX_INPUT_BYTES = 2 << 30


def load_input(path: Path, modality: Mapping[str, Any]) -> np.ndarray:
    """One input file as a batch of model-ready samples: ``.npy`` (a sample, or a batch) or an
    image (resized and normalised with the package's preprocessing)."""
    path = Path(path)
    shape = tuple(modality["shape"])
    if path.suffix.lower() in IMAGE_SUFFIXES:
        if len(shape) != 3:
            raise DataError(f"{path}: an image given for the {modality['name']} input, which takes shape {list(shape)}")
        return load_image(path, shape, modality.get("preprocessing", {}))[None]
    if path.suffix.lower() != ".npy":
        raise DataError(f"{path}: unsupported input file", hint=f"inputs are .npy arrays or images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    regular_file(path, "input", DataError, MAX_INPUT_BYTES)
    if zipfile.is_zipfile(path):  # an .npz renamed .npy loads as an archive
        raise DataError(f"{path}: an .npz archive, not a .npy array", hint="save one array with numpy.save")
    check_npy(path, str(path))
    try:
        arr = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise DataError(f"input not found: {path}") from None
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        raise DataError(f"{path}: not a readable .npy array ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})") from None
    text = modality.get("vocab") is not None  # token ids may be stored as integers
    if not (np.issubdtype(arr.dtype, np.floating) or (text and np.issubdtype(arr.dtype, np.integer))):
        raise DataError(f"{path}: dtype {arr.dtype}; expected "
                        + ("token ids (integers)" if text else "floating point (float32) model-ready values"))
    if arr.shape == shape:
        arr = arr[None]
    if arr.shape[1:] != shape or arr.shape[0] == 0:
        raise DataError(f"{path}: shape {list(arr.shape)}; the {modality['name']} input takes "
                        f"{list(shape)} or [batch, {', '.join(map(str, shape))}]")
    if not np.isfinite(arr).all():
        raise DataError(f"{path}: holds NaN or infinite values")
    single = arr.astype(np.float32)
    if not np.isfinite(single).all():
        raise DataError(f"{path}: holds values beyond float32's range (about 3.4e38)")
    return single


def load_inputs(router: Router, inputs: Sequence[Path], modality: str | None
                ) -> tuple[dict[str, np.ndarray], list[str], tuple[str, ...]]:
    """The INPUT files as the router's feed, one source name per sample, and the mix. With one
    modality every INPUT is a sample or a batch of it; with several, one INPUT per modality
    in the order named, each holding the same number of samples."""
    names = list(router.inputs)
    if modality is None and len(names) != 1:
        raise UsageError("this package has several inputs; say which the INPUTs are with --modality",
                         hint=f"e.g. --modality {names[0]} or --modality {','.join(names)}")
    modality = names[0] if modality is None else modality
    mix = parse_mix(modality, names)
    if len(mix) == 1:
        arrays = [load_input(p, router.inputs[mix[0]]) for p in inputs]
        sources = [f"{p}" if len(a) == 1 else f"{p}[{i}]" for p, a in zip(inputs, arrays) for i in range(len(a))]
        return {mix[0]: np.concatenate(arrays)}, sources, mix
    given = [m.strip() for m in modality.split(",")]
    if len(inputs) != len(mix):
        raise UsageError(f"--modality {modality} takes one INPUT per modality ({len(mix)}), got {len(inputs)}",
                         hint=f"e.g. run PKG {' '.join(f'<{m} file>' for m in given)} --modality {modality}")
    feed = {m: load_input(p, router.inputs[m]) for m, p in zip(given, inputs)}
    sizes = {len(a) for a in feed.values()}
    if len(sizes) != 1:
        raise DataError("the INPUTs hold different numbers of samples "
                        f"({', '.join(f'{m}: {len(a)}' for m, a in feed.items())})")
    label, n = " + ".join(str(p) for p in inputs), sizes.pop()
    return feed, [label] if n == 1 else [f"{label} [{i}]" for i in range(n)], mix


def run_package(package: Path, inputs: Sequence[Path], modality: str | None = None,
                thresholds: float | None = None, tasks: Sequence[str] = (), runtime: str = "auto",
                threads: int | None = None, budget_ms: float | None = None, variant: str | None = None) -> dict[str, Any]:
    """Route ``inputs`` through ``package``; returns the ``run`` report. ``modality`` is the
    mix the inputs are (``image`` or ``image,signal``), see ``load_inputs``. A variants package
    routes with the operating point that fits ``budget_ms`` (or ``variant``'s)."""
    if not inputs:
        raise UsageError("no INPUT given", hint="pass .npy files or images")
    adaptive = is_variants_package(Path(package))
    if (budget_ms is not None or variant is not None) and not adaptive:
        raise UsageError("--budget-ms and --variant choose among width variants; this package has one",
                         hint="make variants with `compress --widths 1.0,0.5`, then export and calibrate")
    choice = {"budget_ms": budget_ms, "variant": variant} if adaptive else {}
    with open_router(package, runtime=runtime, threads=threads) as router:
        feed, sources, mix = load_inputs(router, inputs, modality)
        kinds = {t["name"]: t.get("kind") for t in router.manifest.data["tasks"]}
        # the first call pays for lazy initialisation (kernels, buffers): timed apart, then every
        # input runs on its own, so its latency is its own path's and nobody else's
        cold = router.predict({k: v[:1] for k, v in feed.items()}, tasks=list(tasks), thresholds=thresholds, **choice)
        rows, segment_us = [], {}
        for i, source in enumerate(sources):
            pred = router.predict({k: v[i:i + 1] for k, v in feed.items()}, tasks=list(tasks), thresholds=thresholds,
                                  **choice)
            for name, us in pred.segment_us.items():
                segment_us[name] = segment_us.get(name, 0.0) + us
            rows.append({
                "input": source, "prediction": int(pred.predicted[0]), "label": pred.label_names[0],
                "score": float(pred.scores[0]), "exit": pred.exits[0],
                "gates": pred.gates[0].tolist(), "experts": pred.experts[0].tolist(),
                "tasks": {t: v[0].tolist() for t, v in pred.tasks.items()},
                # classification heads name a class, as the main task does
                "task_classes": {t: int(np.argmax(v[0])) for t, v in pred.tasks.items()
                                 if kinds.get(t) == "classification"},
                "latency_us": float(pred.latency_us[0]),
            })
    return {"schema": "cephalon-edge/run/1", "package": str(package), "modality": ",".join(mix),
            "runtime": router.runtime.name, "predictions": rows,
            "cold_start_us": float(cold.latency_us[0]), "segment_us": segment_us,
            "operating_point": cold.operating_point}
