"""Weights trained elsewhere into a Cephalon model: reading a plain ``state_dict`` safely,
unwrapping it, renaming by prefix rules, casting floating weights, and reporting every
mismatch at once.

Never unpickles code: ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import pickle
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch

from cephalon_edge.toolchain.model import CephalonNet
from cephalon_edge.toolchain.spec import ModelSpec
from cephalon_edge.errors import CheckpointError, Note, UsageError
from cephalon_edge.fsutil import regular_file

WRAPPERS = ("state_dict", "model_state_dict", "model", "net", "module")  # {"state_dict": {...}, "epoch": 3}
PREFIXES = ("module.", "model.", "_orig_mod.")  # DataParallel, Lightning, torch.compile
OPTIONAL = ("num_batches_tracked",)  # BatchNorm's step counter: not a weight
SHOWN = 40  # names listed per kind of mismatch in the one-line error
ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


@dataclass(frozen=True)
class PrefixRule:
    """``OLD=NEW``: a name starting with ``OLD`` starts with ``NEW`` instead."""
    old: str
    new: str

    @classmethod
    def parse(cls, text: str) -> "PrefixRule":
        old, sep, new = text.partition("=")
        if not sep or not old:
            raise UsageError(f"--map {text!r}: expected OLD=NEW (a name prefix and its replacement; NEW may be empty)",
                             hint="e.g. --map backbone.layer1.=stages.0.blocks. --map classifier.=final_head.")
        return cls(old, new)


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a PyTorch file (``torch.save(model.state_dict())``, or a training
    checkpoint wrapping one), loaded with ``weights_only=True``."""
    regular_file(Path(path), "state dict", CheckpointError)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        text = ANSI.sub("", str(exc))
        found = re.search(r"GLOBAL ([\w.]+)", text)
        what = f"it pickles {found.group(1)}" if found else "it holds objects other than tensors"
        raise CheckpointError(f"{path}: refused to load: {what}, which would run code to unpickle",
                              hint="save the weights alone: torch.save(model.state_dict(), PATH)") from None
    except (RuntimeError, EOFError, ValueError, AttributeError, OSError) as exc:
        first = ANSI.sub("", str(exc)).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{path}: not a PyTorch state_dict file ({first[:200]})",
                              hint="save the weights with torch.save(model.state_dict(), PATH)") from None
    while isinstance(obj, dict) and not _is_tensor_dict(obj):
        inner = next((obj[k] for k in WRAPPERS if isinstance(obj.get(k), dict)), None)
        if inner is None:
            break
        obj = inner
    if not isinstance(obj, dict) or not obj or not _is_tensor_dict(obj):
        raise CheckpointError(f"{path}: not a state_dict of tensors",
                              hint=f"a dict of name -> tensor, optionally under one of {', '.join(WRAPPERS)}")
    return dict(obj)


def _is_tensor_dict(obj: dict[Any, Any]) -> bool:
    return bool(obj) and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())


def rename(state: Mapping[str, torch.Tensor], rules: Sequence[PrefixRule],
           expected: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """Strip a wrapper prefix that every name shares (``module.``, ``model.``) unless the
    model's own names have it, then apply the first matching ``--map`` rule to each name."""
    names = list(state)
    for prefix in PREFIXES:
        if names and all(n.startswith(prefix) for n in names) and not any(n.startswith(prefix) for n in expected):
            names = [n[len(prefix):] for n in names]
    renamed: dict[str, torch.Tensor] = {}
    for old_name, name in zip(state, names):
        rule = next((r for r in rules if name.startswith(r.old)), None)
        new = rule.new + name[len(rule.old):] if rule else name
        if new in renamed:
            raise CheckpointError(f"--map gives two tensors the name {new!r} (one of them was {old_name!r})")
        renamed[new] = state[old_name]
    return renamed


def reconcile(model: CephalonNet, state: Mapping[str, torch.Tensor], source: str,
              cast: bool = True) -> dict[str, torch.Tensor]:
    """``state`` ready for ``load_state_dict(strict=True)``: floating tensors cast to the
    model's dtype (with a note; ``cast=False``, for our own checkpoints, refuses them instead),
    BatchNorm counters filled in when absent. Every missing, unexpected and mis-shaped tensor
    is named at once, with shapes."""
    expected = model.state_dict()
    missing = [n for n in expected if n not in state and not n.endswith(OPTIONAL)]
    unexpected = [n for n in state if n not in expected]
    misshaped = [n for n in expected if n in state and tuple(state[n].shape) != tuple(expected[n].shape)]
    wrong_kind = [n for n in expected if n in state and n not in misshaped
                  and state[n].is_floating_point() != expected[n].is_floating_point()]
    if missing or unexpected or misshaped or wrong_kind:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing: " + _listed([f"{n} {list(expected[n].shape)}" for n in missing]))
        if unexpected:
            parts.append(f"{len(unexpected)} not in the spec: " + _listed([f"{n} {list(state[n].shape)}" for n in unexpected]))
        if misshaped:
            parts.append(f"{len(misshaped)} of another shape: " + _listed(
                [f"{n} {list(state[n].shape)} (spec {list(expected[n].shape)})" for n in misshaped]))
        if wrong_kind:
            parts.append(f"{len(wrong_kind)} of another kind: " + _listed(
                [f"{n} {state[n].dtype} (spec {expected[n].dtype})" for n in wrong_kind]))
        raise CheckpointError(f"{source} does not match the spec: " + "; ".join(parts),
                              hint="`cephalon-edge import --expected --spec SPEC.json` lists the names and shapes "
                                   "the spec wants; rename with --map OLD=NEW (prefixes)")
    ready, casted = {}, set()
    for name, want in expected.items():
        got = state.get(name)
        if got is None:  # an optional counter
            ready[name] = want.clone()
            continue
        if got.dtype != want.dtype:
            if not cast:
                raise CheckpointError(f"{source}: tensor {name!r} has dtype {got.dtype}, the spec expects {want.dtype}")
            if got.is_floating_point():
                casted.add(str(got.dtype).replace("torch.", ""))
            got = got.to(want.dtype)
        ready[name] = got
    if casted:
        warnings.warn(f"{source}: {', '.join(sorted(casted))} weights cast to {str(next(iter(expected.values())).dtype).replace('torch.', '')}",
                      Note, stacklevel=2)
    return ready


def _listed(items: list[str]) -> str:
    shown = ", ".join(items[:SHOWN])
    return shown + (f", and {len(items) - SHOWN} more" if len(items) > SHOWN else "")


def load_spec(spec_path: Path) -> ModelSpec:
    from cephalon_edge.errors import SpecError

    try:
        text = regular_file(Path(spec_path), "spec file", SpecError).read_text()
    except UnicodeDecodeError:
        raise SpecError(f"{spec_path}: not a JSON spec (not UTF-8 text)") from None
    return ModelSpec.from_json(text)


def expected_tensors(spec: ModelSpec) -> list[dict[str, Any]]:
    """The names, shapes and dtypes a state_dict for ``spec`` must hold (``import --expected``)."""
    net = CephalonNet(spec)
    return [{"name": n, "shape": list(t.shape), "dtype": str(t.dtype).replace("torch.", ""),
             "optional": n.endswith(OPTIONAL)} for n, t in net.state_dict().items()]


def import_state_dict(state_path: Path, spec_path: Path, rules: Sequence[PrefixRule] = (),
                      preset: str | None = None) -> tuple[CephalonNet, dict[str, Any]]:
    """Build a model from a PyTorch ``state_dict`` file and a spec JSON; returns it with what
    the import did (``preset``: the library's names are mapped block by block, exit heads the
    library lacks are initialised, and the result is compared with the library's own model)."""
    spec = load_spec(spec_path)
    if preset is not None:
        from cephalon_edge.toolchain import presets

        chosen = presets.get(preset)
        state = rename(read_state_dict(state_path), rules, CephalonNet(spec).state_dict())
        model, initialised = from_library(chosen, spec, state, str(state_path))
        return model, {"preset": preset, "initialised": initialised,
                       "reference_max_abs_error": _compare_with_library(chosen, model, state, str(state_path))}
    model = CephalonNet(spec)
    state = rename(read_state_dict(state_path), rules, model.state_dict())
    model.load_state_dict(reconcile(model, state, str(state_path)), strict=True)
    return model.eval(), {}


def from_library(preset: Any, spec: ModelSpec, state: Mapping[str, torch.Tensor],
                 source: str) -> tuple[CephalonNet, list[str]]:
    """A model of ``spec`` holding a library model's ``state`` (``preset``'s names), and the
    exit heads it initialised because the library model has none."""
    from cephalon_edge.toolchain.presets import convert_state

    model = CephalonNet(spec)
    expected = model.state_dict()
    ours = convert_state(preset, spec, state)
    new = [n for n in expected if n.startswith("exits.") and n not in ours]
    ours.update({n: expected[n] for n in new})
    model.load_state_dict(reconcile(model, ours, source), strict=True)
    return model.eval(), [f"exits.{k}" for k in spec.exit_stages if any(n.startswith(f"exits.{k}.") for n in new)]


def _compare_with_library(preset: Any, model: CephalonNet, library_state: Mapping[str, torch.Tensor],
                          source: str) -> float | None:
    """The largest logit difference from the library's own model holding the same weights
    (None, with a note, when the library is not installed)."""
    from cephalon_edge.toolchain.presets.libraries import SAME_FUNCTION_TOLERANCE, max_difference, reference_model

    try:
        reference = reference_model(preset, model.spec)
    except UsageError as exc:
        warnings.warn(f"not compared with {preset.library}'s own model: {exc}", Note, stacklevel=3)
        return None
    reference.load_state_dict(library_state, strict=False)  # reconcile has named every mismatch; counters may lack
    difference = max_difference(model, reference)
    if not difference <= SAME_FUNCTION_TOLERANCE:
        raise CheckpointError(f"{source}: the imported model's logits differ from {preset.name}'s by {difference:.3g} "
                              f"(more than {SAME_FUNCTION_TOLERANCE:g})",
                              hint="the spec and the preset disagree: make the spec with `cephalon-edge spec from`")
    return difference
