"""Modality mixes: which of a multi-modal model's inputs are given (torch-free).

A mix is a tuple of modality names in the model's order; it is written ``image+signal`` in
reports and ``image,signal`` on the command line.
"""

from __future__ import annotations

from itertools import combinations
from typing import Sequence

from cephalon_edge.errors import UsageError


def modality_mixes(names: Sequence[str]) -> list[tuple[str, ...]]:
    """Every non-empty subset of modality ``names`` (in their order), singles first."""
    return [mix for r in range(1, len(names) + 1) for mix in combinations(list(names), r)]


def mix_name(mix: Sequence[str]) -> str:
    return "+".join(mix)


def parse_mix(text: str, available: Sequence[str]) -> tuple[str, ...]:
    """``--modality image,signal`` -> ('image', 'signal') in the model's order; an unknown,
    repeated or empty modality is a usage error naming what the model takes."""
    names = [n.strip() for n in text.split(",")]
    takes = f"this model takes: {', '.join(available)} (comma-separated, e.g. --modality {','.join(available)})"
    if not text.strip() or any(not n for n in names):
        raise UsageError(f"--modality {text!r} names no modality", hint=takes)
    for n in names:
        if n not in available:
            raise UsageError(f"unknown modality {n!r}", hint=takes)
    if len(set(names)) != len(names):
        raise UsageError(f"--modality {text!r} names a modality twice", hint=takes)
    return tuple(n for n in available if n in names)
