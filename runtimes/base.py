"""The runtime protocol every runtime module implements (torch-free)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Protocol, Sequence

import numpy as np


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: tuple[int | str | None, ...]
    dtype: str


class Runtime(Protocol):
    name: str

    def run(self, segment: str, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Run one segment on float32 arrays (batch first); returns its float32 outputs."""

    def static_runner(self) -> Callable[..., list[np.ndarray]] | None:
        """Run the package's static full-depth model (None if the package has none): one
        array per package input, in manifest order."""

    def input_specs(self, segment: str) -> list[TensorSpec]: ...

    def output_specs(self, segment: str) -> list[TensorSpec]: ...

    def close(self) -> None: ...
