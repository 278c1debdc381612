"""The reference dynamic network."""

from cephalon_edge.toolchain.model.network import (
    CephalonNet,
    DynamicOutput,
    TrainOutput,
    expand_thresholds,
)

__all__ = ["CephalonNet", "DynamicOutput", "TrainOutput", "expand_thresholds"]
