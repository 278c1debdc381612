"""The reference dynamic network."""

from .network import CephalonNet, DynamicOutput, TrainOutput, expand_thresholds

__all__ = ["CephalonNet", "DynamicOutput", "TrainOutput", "expand_thresholds"]
