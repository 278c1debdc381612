"""The threshold search: every combination of per-exit candidate thresholds, evaluated
exactly on the candidate grid and vectorised over the last exit; the Pareto front of
accuracy against cost."""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field

import numpy as np

MAX_COMBINATIONS = 300_000


@dataclass
class ExitTable:
    """What the search needs, per validation sample and exit (the final exit last)."""

    exit_names: list[str]
    scores: np.ndarray  # (N, K + 1); the final column is unused
    correct: np.ndarray  # (N, K + 1) bool
    cost_ms: np.ndarray  # (N, K + 1)
    flops: np.ndarray  # (N, K + 1)

    @property
    def full_depth_accuracy(self) -> float:
        return float(self.correct[:, -1].mean())

    @property
    def full_depth_flops(self) -> float:
        return float(self.flops[:, -1].mean())


def stack_tables(tables: list[ExitTable]) -> ExitTable:
    """One table of several modality mixes: each sample counts once per mix."""
    return ExitTable(tables[0].exit_names, *(np.concatenate([getattr(t, f) for t in tables])
                                             for f in ("scores", "correct", "cost_ms", "flops")))


@dataclass
class SearchResult:
    candidates: list[np.ndarray]  # per early exit; the last entry is "never"
    index: np.ndarray  # (M, K) candidate index per combination
    accuracy: np.ndarray  # (M,)
    cost_ms: np.ndarray  # (M,) mean per sample
    flops: np.ndarray  # (M,) mean per sample
    # (M,) fraction right both where each sample leaves and at full depth: with ``accuracy``
    # and the full-depth accuracy it gives the decisions lost and gained (the drop's bound)
    both: np.ndarray
    samples: int
    seconds: float = 0.0
    pareto: list[int] = field(default_factory=list)
    # multi-modal: (mixes, M) accuracy of every combination on each mix alone, and each
    # mix's full-depth accuracy
    mix_accuracy: np.ndarray | None = None
    mix_full_depth: np.ndarray | None = None
    mix_both: np.ndarray | None = None
    mix_samples: np.ndarray | None = None

    def thresholds(self, i: int, names: list[str]) -> dict[str, float]:
        return {name: float(self.candidates[k][self.index[i, k]]) for k, name in enumerate(names)}


def _candidates(scores: np.ndarray, limit: int, never: float) -> np.ndarray:
    values = np.unique(scores)
    if len(values) > limit:
        values = np.unique(np.quantile(scores, np.linspace(0, 1, limit), method="inverted_cdf"))
    return np.append(values, never).astype(np.float64)


def search(table: ExitTable, never: float, candidates: list[np.ndarray] | None = None) -> SearchResult:
    """Evaluate every combination of per-exit candidate thresholds (exact on the candidate grid;
    ``candidates`` reuses another search's grid, so combinations line up index by index)."""
    started = time.perf_counter()
    n, k_total = table.correct.shape
    k = k_total - 1
    both = table.correct & table.correct[:, -1:]
    values = np.stack([table.correct, table.cost_ms, table.flops, both], -1).astype(np.float64)  # (N, K+1, 4)
    if k == 0:
        totals = values[:, 0].sum(0)[None] / n
        return SearchResult([], np.zeros((1, 0), int), totals[:, 0], totals[:, 1], totals[:, 2], totals[:, 3], n,
                            time.perf_counter() - started, [0])
    limit = max(2, int(MAX_COMBINATIONS ** (1 / k)))
    cands = candidates or [_candidates(table.scores[:, j], limit, never) for j in range(k)]
    masks = [table.scores[None, :, j] >= c[:, None] for j, c in enumerate(cands)]  # (C_j, N)
    rows, totals = [], []
    last = k - 1
    for prefix in itertools.product(*[range(len(c)) for c in cands[:last]]):
        remaining = np.ones(n, bool)
        acc = np.zeros(4)
        for j, ci in enumerate(prefix):
            leave = masks[j][ci] & remaining
            acc += values[leave, j].sum(0)
            remaining &= ~leave
        leave = masks[last] & remaining  # (C, N)
        stay = remaining & ~masks[last]
        total = acc + leave.astype(np.float64) @ values[:, last] + stay.astype(np.float64) @ values[:, k]
        totals.append(total)
        rows.append(np.column_stack([np.tile(prefix, (len(cands[last]), 1)).reshape(len(cands[last]), -1),
                                     np.arange(len(cands[last]))]))
    index = np.concatenate(rows).astype(int)
    totals_arr = np.concatenate(totals) / n
    result = SearchResult(cands, index, totals_arr[:, 0], totals_arr[:, 1], totals_arr[:, 2], totals_arr[:, 3], n,
                          time.perf_counter() - started)
    result.pareto = pareto_front(result.accuracy, result.cost_ms)
    return result


def drop_bound(accuracy: np.ndarray, both: np.ndarray, full_depth: float, samples: int, z: float,
               exits_early: np.ndarray) -> np.ndarray:
    """An upper confidence bound on each combination's accuracy drop on unseen data of the
    same kind: the paired drop (full-depth accuracy minus routed) plus ``z`` standard errors
    of the per-sample difference, estimated from the decisions that changed (lost + gained,
    plus one, so that a combination that changed none on validation is not promised a drop
    of exactly zero). A combination that exits nothing early is the full-depth model: 0."""
    drop = full_depth - accuracy
    changed = (full_depth - both) + (accuracy - both)  # fraction of samples lost or gained
    bound = drop + z * np.sqrt(changed * samples + 1) / samples
    return np.where(exits_early, bound, 0.0)


def pareto_front(accuracy: np.ndarray, cost: np.ndarray) -> list[int]:
    """Indices of the non-dominated points, cheapest first."""
    order = np.lexsort((-accuracy, cost))
    front, best = [], -1.0
    for i in order:
        if accuracy[i] > best + 1e-12:
            front.append(int(i))
            best = accuracy[i]
    return front
