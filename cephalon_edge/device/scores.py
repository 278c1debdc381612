"""Exit confidence scores (torch-free), shared by the router and the calibrator.

- ``max_softmax``: the largest softmax probability (computed inside the exit segment);
- ``entropy``: 1 - H(softmax) / log(classes), in [0, 1];
- ``patience``: how many consecutive exits, ending at this one, predicted the same class
  (PABEE); a threshold of 3 exits once three exits in a row agree.
"""

from __future__ import annotations

import numpy as np

from cephalon_edge.device.program import NEVER_EXIT

SCORES = ("max_softmax", "entropy", "patience")


def entropy_confidence(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(-1, keepdims=True)
    p = np.exp(z)
    p /= p.sum(-1, keepdims=True)
    h = -(p * np.log(np.clip(p, 1e-30, None))).sum(-1)
    return (1.0 - h / np.log(logits.shape[-1])).astype(np.float32)


class PatienceStreaks:
    """The patience score exit by exit: per sample, how many exits in a row (ending at the
    current one) predicted the same class. The router feeds it the samples still routed;
    ``patience_streaks`` feeds it every sample at every exit."""

    def __init__(self, batch: int) -> None:
        self.streak = np.zeros(batch, np.float32)
        self.last = np.full(batch, -1)

    def update(self, idx: np.ndarray, pred: np.ndarray) -> np.ndarray:
        """Scores of samples ``idx`` (whose predicted classes at this exit are ``pred``)."""
        self.streak[idx] = np.where(pred == self.last[idx], self.streak[idx] + 1, 1)
        self.last[idx] = pred
        return self.streak[idx]


def patience_streaks(predictions: np.ndarray) -> np.ndarray:
    """(N, K) class predictions per exit -> (N, K) length of the agreeing run ending at each exit."""
    streaks = PatienceStreaks(len(predictions))
    idx = np.arange(len(predictions))
    out = np.ones(predictions.shape, np.float32)
    for k in range(predictions.shape[1]):
        out[:, k] = streaks.update(idx, predictions[:, k])
    return out


def never_exit(kind: str, exits: int) -> float:
    """A threshold of score ``kind`` that no sample reaches among ``exits`` exits: every exit
    is evaluated, none taken (max_softmax and entropy are at most 1; patience at most ``exits``)."""
    return float(exits + 1) if kind == "patience" else NEVER_EXIT


def exit_scores(kind: str, logits: np.ndarray, max_softmax: np.ndarray) -> np.ndarray:
    """Scores of every exit for every sample: ``logits`` (N, K, C), ``max_softmax`` (N, K)."""
    if kind == "max_softmax":
        return max_softmax.astype(np.float32)
    if kind == "entropy":
        return entropy_confidence(logits)
    if kind == "patience":
        return patience_streaks(logits.argmax(-1))
    raise ValueError(f"unknown score {kind!r}")
