"""The runtime protocol every runtime module implements (torch-free)."""

from __future__ import annotations

from typing import Callable, Protocol, Sequence

import numpy as np


class Runtime(Protocol):
    name: str

    def __init__(self, manifest: object, threads: int | None = None, segments: Sequence[str] | None = None) -> None:
        """Open the package's segments (only ``segments`` when given)."""

    def run(self, segment: str, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Run one segment on float32 arrays (batch first); returns its float32 outputs."""

    def static_runner(self) -> Callable[..., list[np.ndarray]] | None:
        """Run the package's static full-depth model (None if the package has none): one
        array per package input, in manifest order."""

    def close(self) -> None: ...
