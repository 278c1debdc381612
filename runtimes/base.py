"""The runtime protocol every runtime module implements (torch-free)."""

from __future__ import annotations

from typing import Callable, Protocol, Sequence

import numpy as np

from cephalon_edge.errors import PackageError

REEXPORT = "re-export the package; never replace segment files by hand"


class Runtime(Protocol):
    name: str

    def __init__(self, manifest: object, threads: int | None = None, segments: Sequence[str] | None = None,
                 spinning: bool = False) -> None:
        """Open the package's segments (only ``segments`` when given); ``spinning``: let idle
        intra-op workers spin between calls, where the runtime has that knob."""

    def run(self, segment: str, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Run one segment on float32 arrays (batch first); returns its float32 outputs."""

    def static_runner(self) -> Callable[..., list[np.ndarray]] | None:
        """Run the package's plain static model with the runtime's *default* settings, as a
        user shipping it without cephalon-edge would (None if the package has none): one
        array per package input, in manifest order."""

    def close(self) -> None: ...


def check_io(segment: str, entry: dict, inputs: Sequence[Sequence], outputs: Sequence[Sequence]) -> None:
    """Refuse a segment graph whose inputs or outputs (count, and each shape past the batch
    dimension where the graph fixes it) differ from what the manifest says: a valid graph of
    another shape would otherwise fail mid-inference, or silently compute something else."""
    want_in, want_out = entry["shapes"]["inputs"], entry["shapes"]["outputs"]
    if len(inputs) != len(want_in) or len(outputs) != len(want_out):
        raise PackageError(f"segment {segment}: its graph takes {len(inputs)} input(s) and gives {len(outputs)} "
                           f"output(s); the manifest says {len(want_in)} and {len(want_out)}", hint=REEXPORT)
    for kind, got_all, want_all in (("input", inputs, want_in), ("output", outputs, want_out)):
        for got, want in zip(got_all, want_all):
            dims = list(got)[1:]
            if len(dims) != len(want) or any(isinstance(g, (int, np.integer)) and g != w for g, w in zip(dims, want)):
                raise PackageError(f"segment {segment}: {kind} shape {list(got)} does not match the manifest's "
                                   f"[batch, {', '.join(map(str, want))}]", hint=REEXPORT)
