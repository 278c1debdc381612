"""The reference dynamic network."""

from cephalon_edge.build.model.network import (
    CephalonNet,
    DynamicOutput,
    TrainOutput,
    expand_thresholds,
)

__all__ = ["CephalonNet", "DynamicOutput", "TrainOutput", "expand_thresholds"]
