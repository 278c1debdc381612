"""The router's compiled program: one instruction per step, built once per package.

What an interpreter would decide on every call (which segment a part lives in, whether
calling the part runs that segment or takes outputs the segment already produced, which of
its outputs are the part's, the score and the exit's index) is decided here, once; each
instruction is a closure over those answers, and a prediction is a walk down the list. Steps
whose call only hands on outputs a fused segment already produced cost a list index.

Decisions are per sample: samples that exit leave the batch, a skip gate runs its block on
the samples it fires for, and a mixture of experts splits the batch by the chosen expert.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence, assert_never

import numpy as np

from cephalon_edge.device.program import Encode, Exit, Final, Gate, Moe, Program, Run, Step
from cephalon_edge.device.scores import PatienceStreaks, entropy_confidence

RunSegment = Callable[[str, Sequence[np.ndarray]], Sequence[np.ndarray]]


@dataclass(eq=False, slots=True)
class Walk:
    """The state of one prediction as the instructions pass it along."""

    run: RunSegment  # the runtime's segment call
    xs: Mapping[str, np.ndarray]  # checked inputs by modality
    batch: int
    res: Any  # the Prediction being filled
    thresholds: Sequence[float]  # by exit index
    wanted: Sequence[str]  # extra task heads asked for
    patience: PatienceStreaks | None
    outs: list[Sequence[np.ndarray] | None]  # per segment slot: what its last call returned
    idx: np.ndarray  # the samples still routed
    h: Any = None  # the representation (None between the parts of a fused chain)
    # time of the segment calls every sample went through: one float, added to every
    # sample's latency once at the end (no array arithmetic per call)
    whole_us: float = 0.0
    split: bool = False  # some call took only some samples: latency_us holds per-sample time

    def finished(self) -> Any:
        res = self.res
        if not self.split:  # every call took every sample: one fill, no arithmetic
            res.latency_us.fill(self.whole_us)
        elif self.whole_us:
            res.latency_us += self.whole_us
        return res


Fetch = Callable[[Walk, Any, np.ndarray], Sequence[np.ndarray]]
Instruction = Callable[[Walk], bool]  # True when every sample has left


class Plan:
    """``Plan(program, parts, outputs, score)``: ``parts`` maps part -> (segment, position in
    it, the segment outputs that are the part's); ``outputs``: segment -> its number of
    outputs; ``score`` is the exit score routed on."""

    def __init__(self, program: Program, parts: Mapping[str, tuple[str, int, Sequence[int]]],
                 outputs: Mapping[str, int], score: str) -> None:
        self.slots = {segment: i for i, segment in enumerate(dict.fromkeys(s for s, _, _ in parts.values()))}
        self._parts, self._outputs, self._score = parts, outputs, score
        self.instructions: list[Instruction] = [self._compile(step) for step in program]

    def walk(self, w: Walk) -> Any:
        for instruction in self.instructions:
            if instruction(w):
                break
        return w.finished()

    # ---- parts ----------------------------------------------------------------------
    def _fetch(self, part: str) -> Fetch:
        """The call of one part: runs its segment (timed, into the segment's slot) when the
        part comes first in it, else takes the outputs that call produced."""
        segment, position, picked = self._parts[part]
        slot = self.slots[segment]
        everything = list(picked) == list(range(self._outputs[segment]))  # all the segment's outputs, in order
        perf = time.perf_counter_ns

        def take(out: Sequence[np.ndarray]) -> Sequence[np.ndarray]:
            return out if everything else [out[i] for i in picked]

        if position:
            def handed_on(w: Walk, x: Any, members: np.ndarray) -> Sequence[np.ndarray]:
                out = w.outs[slot]
                assert out is not None  # the manifest's chain check: its first part ran earlier in this walk
                return take(out)
            return handed_on

        def runs(w: Walk, x: Any, members: np.ndarray) -> Sequence[np.ndarray]:
            t0 = perf()
            out = w.run(segment, (x,))
            us = (perf() - t0) / 1000.0
            seg_us = w.res.segment_us
            seg_us[segment] = seg_us.get(segment, 0.0) + us
            if len(members) == w.batch:  # every sample (members never repeat one)
                w.whole_us += us
            else:
                w.res.latency_us[members] += us
                w.split = True
            w.outs[slot] = out
            return take(out)
        return runs

    # ---- steps ----------------------------------------------------------------------
    def _compile(self, step: Step) -> Instruction:
        match step:
            case Encode():
                return self._encode(step)
            case Run():
                return self._run(step)
            case Exit():
                return self._exit(step)
            case Gate():
                return self._gate(step)
            case Moe():
                return self._moe(step)
            case Final():
                return self._final(step)
            case _:
                assert_never(step)

    def _encode(self, step: Encode) -> Instruction:
        adapters = [(m, self._fetch(part)) for m, part in step.adapters.items()]
        if len(adapters) == 1:  # an adapter fused with the stages after it returns nothing of its own
            (modality, fetch), = adapters

            def encode_one(w: Walk) -> bool:
                out = fetch(w, w.xs[modality], w.idx)
                w.h = out[0] if out else None
                return False
            return encode_one

        def encode_mean(w: Walk) -> bool:  # adapters of several modalities are never fused
            encoded = [fetch(w, w.xs[m], w.idx)[0] for m, fetch in adapters if m in w.xs]
            w.h = encoded[0] if len(encoded) == 1 else np.mean(encoded, axis=0, dtype=np.float32)
            return False
        return encode_mean

    def _run(self, step: Run) -> Instruction:
        fetch = self._fetch(step.part)

        def run(w: Walk) -> bool:
            out = fetch(w, w.h, w.idx)
            w.h = out[0] if out else None  # an inner part of a fused chain: the chain carries it
            return False
        return run

    def _exit(self, step: Exit) -> Instruction:
        fetch, k, score_kind = self._fetch(step.part), step.index, self._score

        def exit_(w: Walk) -> bool:
            idx, res = w.idx, w.res
            logits, score = fetch(w, w.h, idx)
            if res.exit_logits is not None:  # collect_exits
                res.exit_logits[idx, k], res.exit_max_softmax[idx, k] = logits, score
            if w.patience is not None:
                score = w.patience.update(idx, logits.argmax(-1))
            elif score_kind == "entropy":
                score = entropy_confidence(logits)
            threshold = w.thresholds[k]
            n = len(idx)
            if n == 1:  # one sample: a scalar comparison
                if score[0] < threshold:
                    return False
                leaving = 1
            else:
                done = score >= threshold
                leaving = int(np.count_nonzero(done))
                if not leaving:
                    return False
            if leaving == n == w.batch:  # every sample leaves here (batch 1's common case)
                res.logits[:], res.scores[:], res.exit_index[:] = logits, score, k
                return True
            if leaving == n:
                res.logits[idx], res.scores[idx], res.exit_index[idx] = logits, score, k
                return True
            chosen = idx[done]
            res.logits[chosen], res.scores[chosen], res.exit_index[chosen] = logits[done], score[done], k
            keep = ~done
            w.h, w.idx = np.ascontiguousarray(w.h[keep]), idx[keep]
            return False
        return exit_

    def _gate(self, step: Gate) -> Instruction:
        gate, block, g, cut = self._fetch(step.gate), self._fetch(step.block), step.index, step.threshold

        def gate_(w: Walk) -> bool:
            idx, h = w.idx, w.h
            fire = gate(w, h, idx)[0].reshape(-1) > cut
            w.res.gates[idx, g] = fire
            firing = int(np.count_nonzero(fire))
            if firing == len(idx):
                w.h = block(w, h, idx)[0]
            elif firing:
                h = h.copy()
                h[fire] = block(w, np.ascontiguousarray(h[fire]), idx[fire])[0]
                w.h = h
            return False
        return gate_

    def _moe(self, step: Moe) -> Instruction:
        gate, experts, k = self._fetch(step.gate), [self._fetch(e) for e in step.experts], step.index

        def moe(w: Walk) -> bool:
            idx, h = w.idx, w.h
            choice = gate(w, h, idx)[0].argmax(-1)
            w.res.experts[idx, k] = choice
            first = int(choice[0])
            if len(choice) == 1 or (choice == first).all():
                w.h = experts[first](w, h, idx)[0]
                return False
            mixed = np.empty_like(h)
            for e in np.unique(choice):
                sel = choice == e
                mixed[sel] = experts[int(e)](w, np.ascontiguousarray(h[sel]), idx[sel])[0]
            w.h = mixed
            return False
        return moe

    def _final(self, step: Final) -> Instruction:
        fetch, k = self._fetch(step.part), step.index
        tasks = {t: self._fetch(part) for t, part in step.tasks.items()}

        def final(w: Walk) -> bool:
            idx, res, h = w.idx, w.res, w.h
            logits, score = fetch(w, h, idx)
            res.logits[idx], res.scores[idx], res.exit_index[idx] = logits, score, k
            if res.exit_logits is not None:  # collect_exits
                res.exit_logits[idx, k], res.exit_max_softmax[idx, k] = logits, score
            for t in w.wanted:
                res.tasks[t][idx] = tasks[t](w, h, idx)[0]
            return True
        return final
