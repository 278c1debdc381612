"""The program: a package's declarative steps, typed and validated once (torch-free).

This module is the only place that knows the step vocabulary. Every reader of a program (the
router, the segmenter, calibrate, bench, inspect, the parity checks) works on these types;
a new step kind is one dataclass here plus the executors that run it (the router and the
torch reference). JSON form, one object per step, as stored in ``manifest.json``:

- ``{"op": "encode", "adapters": {modality: segment}, "fuse": "mean"}``
- ``{"op": "run", "segment": s}``
- ``{"op": "gate", "gate": g, "block": b, "index": i, "threshold": 0.5}``: run b where g > threshold
- ``{"op": "moe", "gate": g, "experts": [e0, e1, ...], "index": i}``: run the argmax expert
- ``{"op": "exit", "segment": s, "exit": name, "index": i}``: leave where score >= threshold
- ``{"op": "final", "segment": s, "exit": "final", "index": i, "tasks": {task: segment}}``
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import (
    TYPE_CHECKING,
    Any,
    Callable,
    ClassVar,
    Iterator,
    Mapping,
    Sequence,
    Union,
)

from cephalon_edge.errors import PackageError

if TYPE_CHECKING:  # numpy is imported where costs are computed, so `--help` stays light
    import numpy as np

# The thresholds of the exit policy, in one place.
DEFAULT_EXIT_THRESHOLD = 0.9  # every early exit's threshold until `calibrate` chooses per-exit ones
GATE_THRESHOLD = 0.5  # a gated block runs where its gate's probability is above this
NEVER_EXIT = 1.01  # a max-softmax threshold no sample reaches: every exit evaluated, none taken


@dataclass(frozen=True)
class Encode:
    """Run the adapter of every modality given and fuse their outputs (mean)."""

    op: ClassVar[str] = "encode"
    adapters: Mapping[str, str]  # modality -> adapter segment
    fuse: str = "mean"

    def segments(self) -> list[str]:
        return list(self.adapters.values())

    def to_json(self) -> dict[str, Any]:
        return {"op": self.op, "adapters": dict(self.adapters), "fuse": self.fuse}


@dataclass(frozen=True)
class Run:
    """Run one segment on the representation."""

    op: ClassVar[str] = "run"
    segment: str

    def segments(self) -> list[str]:
        return [self.segment]

    def to_json(self) -> dict[str, Any]:
        return {"op": self.op, "segment": self.segment}


@dataclass(frozen=True)
class Gate:
    """A skip gate: run ``block`` where ``gate``'s probability is above ``threshold``."""

    op: ClassVar[str] = "gate"
    gate: str
    block: str
    index: int
    threshold: float = GATE_THRESHOLD

    def segments(self) -> list[str]:
        return [self.gate, self.block]

    def to_json(self) -> dict[str, Any]:
        return {"op": self.op, "gate": self.gate, "block": self.block, "index": self.index,
                "threshold": self.threshold}


@dataclass(frozen=True)
class Moe:
    """A mixture of experts: ``gate`` picks one expert per sample (argmax)."""

    op: ClassVar[str] = "moe"
    gate: str
    experts: tuple[str, ...]
    index: int

    def segments(self) -> list[str]:
        return [self.gate, *self.experts]

    def to_json(self) -> dict[str, Any]:
        return {"op": self.op, "gate": self.gate, "experts": list(self.experts), "index": self.index}


@dataclass(frozen=True)
class Exit:
    """An early exit: ``segment`` returns logits and a score; samples at or above the
    exit's threshold leave."""

    op: ClassVar[str] = "exit"
    segment: str
    exit: str
    index: int

    def segments(self) -> list[str]:
        return [self.segment]

    def to_json(self) -> dict[str, Any]:
        return {"op": self.op, "segment": self.segment, "exit": self.exit, "index": self.index}


@dataclass(frozen=True)
class Final:
    """The final exit every remaining sample takes, plus task heads run on request."""

    op: ClassVar[str] = "final"
    segment: str
    index: int
    exit: str = "final"
    tasks: Mapping[str, str] = field(default_factory=dict)  # task -> head segment

    def segments(self) -> list[str]:
        return [self.segment, *self.tasks.values()]

    def to_json(self) -> dict[str, Any]:
        return {"op": self.op, "segment": self.segment, "exit": self.exit, "index": self.index,
                "tasks": dict(self.tasks)}


Step = Union[Encode, Run, Gate, Moe, Exit, Final]
STEP_KINDS: dict[str, type] = {cls.op: cls for cls in (Encode, Run, Gate, Moe, Exit, Final)}
EXIT_OUTPUTS = 2  # an exit segment returns logits and a score


def segments_of(step: Step) -> list[str]:
    """Every segment ``step`` may run (all experts; task heads included)."""
    return step.segments()


def path_segments(step: Step) -> list[str]:
    """The segments a sample runs at ``step`` on the costliest common path: gated blocks
    counted as run, one expert per mixture, task heads not asked for."""
    if isinstance(step, Moe):
        return [step.gate, step.experts[0]]
    if isinstance(step, Final):
        return [step.segment]
    return step.segments()


@dataclass(frozen=True)
class Program:
    steps: tuple[Step, ...]

    def __iter__(self) -> Iterator[Step]:
        return iter(self.steps)

    def __len__(self) -> int:
        return len(self.steps)

    # ---- what the program holds ---------------------------------------------------------
    @property
    def exits(self) -> list[Exit | Final]:
        return [s for s in self.steps if isinstance(s, (Exit, Final))]

    @property
    def exit_names(self) -> list[str]:
        """Every exit in order, the final one last."""
        return [s.exit for s in self.exits]

    @property
    def early_exits(self) -> list[str]:
        return [s.exit for s in self.steps if isinstance(s, Exit)]

    @property
    def n_gates(self) -> int:
        return sum(isinstance(s, Gate) for s in self.steps)

    @property
    def n_moe(self) -> int:
        return sum(isinstance(s, Moe) for s in self.steps)

    @property
    def final(self) -> Final:
        return self.steps[-1]  # type: ignore[return-value]  # parse guarantees it

    @property
    def adapters(self) -> Mapping[str, str]:
        return self.steps[0].adapters  # type: ignore[union-attr]  # parse guarantees it

    def to_json(self) -> list[dict[str, Any]]:
        return [s.to_json() for s in self.steps]

    # ---- fused segments -----------------------------------------------------------------
    def chain_error(self, parts: Sequence[str]) -> str | None:
        """Why ``parts`` cannot run as one fused segment (None when they can): they must be
        consecutive unconditional calls of the program (one modality's adapter, stages),
        ending at the first decision (a gate, an expert router, an exit, the final head), so
        that every sample entering the chain runs all of it."""
        calls: list[tuple[str, bool]] = []  # (part, ends a chain)
        for step in self.steps:
            if isinstance(step, Encode):
                if len(step.adapters) == 1:
                    calls.append((next(iter(step.adapters.values())), False))
                else:
                    calls.append(("", True))  # which adapters run depends on the input
            elif isinstance(step, Run):
                calls.append((step.segment, False))
            else:
                calls.append((step.gate if isinstance(step, (Gate, Moe)) else step.segment, True))
        names = [c[0] for c in calls]
        if parts[0] not in names:
            return f"{parts[0]} is not an unconditional call of the program"
        start = names.index(parts[0])
        window = calls[start:start + len(parts)]
        if [c[0] for c in window] != list(parts):
            return "its parts are not consecutive calls of the program"
        if any(ends for _, ends in window[:-1]) or not window[-1][1]:
            return "a chain runs trunk parts up to one decision, which ends it"
        return None

    # ---- costs --------------------------------------------------------------------------
    def exit_paths(self) -> list[tuple[str, list[str]]]:
        """Per exit, the segments on the way to it (the costliest common path, see
        ``path_segments``), in order."""
        seen: list[str] = []
        paths = []
        for step in self.steps:
            seen += path_segments(step)
            if isinstance(step, (Exit, Final)):
                paths.append((step.exit, list(seen)))
        return paths

    def path_costs(self, cost: Mapping[str, float], gates: np.ndarray, experts: np.ndarray,
                   modalities: Sequence[str]) -> np.ndarray:
        """(N, exits) cost of stopping at each exit, following each sample's own gates
        (``gates[:, i] == 1``: block ran) and experts (``experts[:, i]``: the one chosen)."""
        import numpy as np

        cum = np.zeros(len(gates))
        out = []
        for step in self.steps:
            if isinstance(step, Encode):
                cum += sum(cost[seg] for m, seg in step.adapters.items() if m in modalities)
            elif isinstance(step, Gate):
                cum += cost[step.gate] + cost[step.block] * (gates[:, step.index] == 1)
            elif isinstance(step, Moe):
                per_expert = np.asarray([cost[e] for e in step.experts])
                cum += cost[step.gate] + per_expert[np.clip(experts[:, step.index], 0, None)]
            else:
                cum += cost[step.segment]
                if isinstance(step, (Exit, Final)):
                    out.append(cum.copy())
        return np.stack(out, 1)

    # ---- parsing ------------------------------------------------------------------------
    @classmethod
    def parse(cls, raw: Any, outputs: Mapping[str, int], modalities: Sequence[str],
              where: str = "program") -> "Program":
        """Validate the JSON form against the package's segments (name -> output count) and
        input modalities; every problem is a ``PackageError`` naming the step."""
        def bad(field_: str, why: str) -> PackageError:
            return PackageError(f"{where}{field_}: {why}", hint="re-export the package")

        if not isinstance(raw, list) or not all(isinstance(s, dict) for s in raw):
            raise bad("", "must be a list of steps")
        steps: list[Step] = []
        counters = {"gate": 0, "moe": 0, "exit": 0}
        for i, item in enumerate(raw):
            op = item.get("op")
            if not isinstance(op, str) or op not in STEP_KINDS:
                raise PackageError(f"{where}[{i}]: unknown step {str(op)[:40]!r}",
                                   hint="this package needs a newer cephalon-edge")
            step = _parse_step(op, item, f"[{i}]", bad)
            for ref in step.segments():
                if ref not in outputs:
                    raise bad(f"[{i}]", f"names unknown segment {ref[:60]!r}")
            if isinstance(step, Encode) and (not step.adapters or set(step.adapters) - set(modalities)):
                raise bad(f"[{i}].adapters", "must map the package's input modalities to segments")
            if isinstance(step, (Gate, Moe, Exit, Final)):
                key = "exit" if isinstance(step, Final) else op
                if step.index != counters[key]:
                    raise bad(f"[{i}].index", f"expected {counters[key]}")
                counters[key] += 1
            if isinstance(step, (Exit, Final)) and outputs[step.segment] != EXIT_OUTPUTS:
                raise bad(f"[{i}]", f"segment {step.segment} must output logits and a score")
            steps.append(step)
        if not steps or not isinstance(steps[0], Encode) or not isinstance(steps[-1], Final) \
                or sum(isinstance(s, Final) for s in steps) != 1:
            raise bad("", "must start with encode and end with one final step")
        return cls(tuple(steps))


def _parse_step(op: str, item: dict[str, Any], at: str, bad: Callable[[str, str], PackageError]) -> Step:
    def text(key: str) -> str:
        value = item.get(key)
        if not isinstance(value, str):
            raise bad(f"{at}.{key}", "must be a str")
        return value

    def index() -> int:
        value = item.get("index")
        if not isinstance(value, int) or isinstance(value, bool):
            raise bad(f"{at}.index", "must be an int")
        return value

    def names(key: str) -> dict[str, str]:
        value = item.get(key, {})
        if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
            raise bad(f"{at}.{key}", "must map names to segments")
        return value

    if op == "encode":
        if not isinstance(item.get("adapters"), dict):
            raise bad(f"{at}.adapters", "must be a dict")
        return Encode(names("adapters"), str(item.get("fuse", "mean")))
    if op == "run":
        return Run(text("segment"))
    if op == "gate":
        threshold = item.get("threshold", GATE_THRESHOLD)
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or threshold != threshold:
            raise bad(f"{at}.threshold", "must be a number")
        return Gate(text("gate"), text("block"), index(), float(threshold))
    if op == "moe":
        experts = item.get("experts")
        if not isinstance(experts, list) or not all(isinstance(e, str) for e in experts):
            raise bad(f"{at}.experts", "must be a list of str")
        if not experts:
            raise bad(f"{at}.experts", "no experts")
        return Moe(text("gate"), tuple(experts), index())
    if op == "exit":
        return Exit(text("segment"), text("exit"), index())
    return Final(text("segment"), index(), text("exit"), names("tasks"))
