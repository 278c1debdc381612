"""Exit confidence scores (torch-free), shared by the router and the calibrator.

- ``max_softmax``: the largest softmax probability (computed inside the exit segment);
- ``entropy``: 1 - H(softmax) / log(classes), in [0, 1];
- ``patience``: how many consecutive exits, ending at this one, predicted the same class
  (PABEE); a threshold of 3 exits once three exits in a row agree.
"""

from __future__ import annotations

import numpy as np

SCORES = ("max_softmax", "entropy", "patience")


def entropy_confidence(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(-1, keepdims=True)
    p = np.exp(z)
    p /= p.sum(-1, keepdims=True)
    h = -(p * np.log(np.clip(p, 1e-30, None))).sum(-1)
    return (1.0 - h / np.log(logits.shape[-1])).astype(np.float32)


def patience_streaks(predictions: np.ndarray) -> np.ndarray:
    """(N, K) class predictions per exit -> (N, K) length of the agreeing run ending at each exit."""
    streak = np.ones(predictions.shape, np.float32)
    for k in range(1, predictions.shape[1]):
        streak[:, k] = np.where(predictions[:, k] == predictions[:, k - 1], streak[:, k - 1] + 1, 1)
    return streak


def exit_scores(kind: str, logits: np.ndarray, max_softmax: np.ndarray) -> np.ndarray:
    """Scores of every exit for every sample: ``logits`` (N, K, C), ``max_softmax`` (N, K)."""
    if kind == "max_softmax":
        return max_softmax.astype(np.float32)
    if kind == "entropy":
        return entropy_confidence(logits)
    if kind == "patience":
        return patience_streaks(logits.argmax(-1))
    raise ValueError(f"unknown score {kind!r}")
