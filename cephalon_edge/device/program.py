"""The program: a package's declarative steps, typed and validated once (torch-free).

This module is the only place that knows the step vocabulary. Every reader of a program (the
router, the segmenter, calibrate, bench, inspect, the parity checks) works on these types;
a new step kind is one dataclass here plus the executors that run it (the router and the
torch reference). JSON form, one object per step, as stored in ``manifest.json``:

- ``{"op": "encode", "adapters": {modality: part}, "fuse": "mean"}``
- ``{"op": "run", "part": p}``
- ``{"op": "gate", "gate": g, "block": b, "index": i, "threshold": 0.5}``: run b where g > threshold
- ``{"op": "moe", "gate": g, "experts": [e0, e1, ...], "index": i}``: run the argmax expert
- ``{"op": "exit", "part": p, "exit": name, "index": i}``: leave where score >= threshold
- ``{"op": "final", "part": p, "exit": "final", "index": i, "tasks": {task: part}}``

Steps name **parts** (``stage1``, ``exit0``), never the segments that hold them. Packages of
format ``cephalon-edge/1`` spelled the ``part`` key ``segment``; they still open.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import (
    TYPE_CHECKING,
    Any,
    Callable,
    ClassVar,
    Iterator,
    Mapping,
    Sequence,
    Union,
    assert_never,
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
    adapters: Mapping[str, str]  # modality -> adapter part
    fuse: str = "mean"

    def parts(self) -> list[str]:
        return list(self.adapters.values())

    def to_json(self) -> dict[str, Any]:
        return {"op": self.op, "adapters": dict(self.adapters), "fuse": self.fuse}


@dataclass(frozen=True)
class Run:
    """Run one part on the representation."""

    op: ClassVar[str] = "run"
    part: str

    def parts(self) -> list[str]:
        return [self.part]

    def to_json(self) -> dict[str, Any]:
        return {"op": self.op, "part": self.part}


@dataclass(frozen=True)
class Gate:
    """A skip gate: run ``block`` where ``gate``'s probability is above ``threshold``."""

    op: ClassVar[str] = "gate"
    gate: str
    block: str
    index: int
    threshold: float = GATE_THRESHOLD

    def parts(self) -> list[str]:
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

    def parts(self) -> list[str]:
        return [self.gate, *self.experts]

    def to_json(self) -> dict[str, Any]:
        return {"op": self.op, "gate": self.gate, "experts": list(self.experts), "index": self.index}


@dataclass(frozen=True)
class Exit:
    """An early exit: ``part`` returns logits and a score; samples at or above the
    exit's threshold leave."""

    op: ClassVar[str] = "exit"
    part: str
    exit: str
    index: int

    def parts(self) -> list[str]:
        return [self.part]

    def to_json(self) -> dict[str, Any]:
        return {"op": self.op, "part": self.part, "exit": self.exit, "index": self.index}


@dataclass(frozen=True)
class Final:
    """The final exit every remaining sample takes, plus task heads run on request."""

    op: ClassVar[str] = "final"
    part: str
    index: int
    exit: str = "final"
    tasks: Mapping[str, str] = field(default_factory=dict)  # task -> head part

    def parts(self) -> list[str]:
        return [self.part, *self.tasks.values()]

    def to_json(self) -> dict[str, Any]:
        return {"op": self.op, "part": self.part, "exit": self.exit, "index": self.index,
                "tasks": dict(self.tasks)}


Step = Union[Encode, Run, Gate, Moe, Exit, Final]
STEP_KINDS: dict[str, type] = {cls.op: cls for cls in (Encode, Run, Gate, Moe, Exit, Final)}
EXIT_OUTPUTS = 2  # an exit part returns logits and a score


class PartKind(str, Enum):
    """What a part is; trunk parts return the representation, decision parts end a chain."""

    ADAPTER = "adapter"
    STAGE = "stage"
    GATE = "gate"
    BLOCK = "block"
    MOE_GATE = "moe_gate"
    EXPERT = "expert"
    EXIT = "exit"
    HEAD = "head"

    @property
    def is_trunk(self) -> bool:
        return self in (PartKind.ADAPTER, PartKind.STAGE, PartKind.BLOCK, PartKind.EXPERT)


def parts_of(step: Step) -> list[str]:
    """Every part ``step`` may run (all experts; task heads included)."""
    return step.parts()


def path_parts(step: Step) -> list[str]:
    """The parts a sample runs at ``step`` on the costliest common path: gated blocks
    counted as run, one expert per mixture, task heads not asked for."""
    match step:
        case Moe():
            return [step.gate, step.experts[0]]
        case Final():
            return [step.part]
        case Encode() | Run() | Gate() | Exit():
            return step.parts()
        case _:
            assert_never(step)


def first_exit(scores: "np.ndarray", thresholds: Sequence[float]) -> "np.ndarray":
    """(N,) index of the exit each sample leaves at: the first early exit whose score
    (``scores[:, k]``, N x exits) reaches its threshold, else the final exit."""
    import numpy as np

    k = len(thresholds)
    passed = scores[:, :k] >= np.asarray(thresholds, dtype=np.float64)[None, :]
    return np.where(passed.any(1), passed.argmax(1), k)


def exit_rates(exit_names: Sequence[str], exit_index: "np.ndarray") -> dict[str, float]:
    """The share of samples that left at each exit, by exit name."""
    n = max(1, len(exit_index))
    return {name: float((exit_index == k).sum() / n) for k, name in enumerate(exit_names)}


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
    def gates(self) -> list[Gate]:
        return [s for s in self.steps if isinstance(s, Gate)]

    @property
    def mixtures(self) -> list[Moe]:
        return [s for s in self.steps if isinstance(s, Moe)]

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
    def chains(self) -> list[list[str]]:
        """The program's parts grouped into chains that always run together: unconditional
        trunk parts (a single modality's adapter, stages) up to and including the next
        decision part (a gate, an expert router, an exit, the final head). Everything
        conditional (gated blocks, experts, extra task heads), and the adapters of a
        multi-modal model, stays alone. Fusion fuses these; validation accepts a fused
        segment that is the tail of one of them."""
        groups: list[list[str]] = []
        chain: list[str] = []

        def close(decision: str) -> None:
            nonlocal chain
            groups.append(chain + [decision])
            chain = []

        for step in self.steps:
            match step:
                case Encode():
                    if len(step.adapters) == 1:
                        chain = list(step.adapters.values())
                    else:
                        groups.extend([a] for a in step.adapters.values())
                case Run():
                    chain.append(step.part)
                case Gate():
                    close(step.gate)
                    groups.append([step.block])
                case Moe():
                    close(step.gate)
                    groups.extend([e] for e in step.experts)
                case Exit():
                    close(step.part)
                case Final():
                    close(step.part)
                    groups.extend([t] for t in step.tasks.values())
                case _:
                    assert_never(step)
        return groups

    def chain_error(self, parts: Sequence[str]) -> str | None:
        """Why ``parts`` cannot run as one fused segment (None when they can): they must be
        consecutive unconditional calls of the program ending at the first decision (the
        tail of one of ``chains()``), so that every sample entering the chain runs all of it."""
        parts = list(parts)
        for chain in self.chains():
            if parts[0] in chain:
                tail = chain[chain.index(parts[0]):]
                if tail == parts:
                    return None
                if tail[:len(parts)] == parts or len(tail) < len(parts):
                    return "a chain runs trunk parts up to one decision, which ends it"
                return "its parts are not consecutive calls of the program"
        return f"{parts[0]} is not an unconditional call of the program"

    # ---- costs --------------------------------------------------------------------------
    def exit_paths(self) -> list[tuple[str, list[str]]]:
        """Per exit, the parts on the way to it (the costliest common path, see
        ``path_parts``), in order."""
        seen: list[str] = []
        paths = []
        for step in self.steps:
            seen += path_parts(step)
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
            match step:
                case Encode():
                    cum += sum(cost[part] for m, part in step.adapters.items() if m in modalities)
                case Gate():
                    cum += cost[step.gate] + cost[step.block] * (gates[:, step.index] == 1)
                case Moe():
                    per_expert = np.asarray([cost[e] for e in step.experts])
                    cum += cost[step.gate] + per_expert[np.clip(experts[:, step.index], 0, None)]
                case Run():
                    cum += cost[step.part]
                case Exit() | Final():
                    cum += cost[step.part]
                    out.append(cum.copy())
                case _:
                    assert_never(step)
        return np.stack(out, 1)

    def taken_costs(self, cost: Mapping[str, float], gates: np.ndarray, experts: np.ndarray,
                    exit_index: np.ndarray, modalities: Sequence[str]) -> np.ndarray:
        """(N,) cost of the path each sample took: its own gates and experts, up to the exit
        it left at (``exit_index``)."""
        import numpy as np

        return self.path_costs(cost, gates, experts, modalities)[np.arange(len(exit_index)), exit_index]

    # ---- parsing ------------------------------------------------------------------------
    @classmethod
    def parse(cls, raw: Any, outputs: Mapping[str, int], modalities: Sequence[str],
              where: str = "program", part_key: str = "part") -> "Program":
        """Validate the JSON form against the package's parts (name -> output count) and
        input modalities; every problem is a ``PackageError`` naming the step. ``part_key``:
        the key that names a step's part (``segment`` in packages of format 1)."""
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
            step = _parse_step(op, item, f"[{i}]", bad, part_key)
            for ref in step.parts():
                if ref not in outputs:
                    raise bad(f"[{i}]", f"names unknown part {ref[:60]!r}")
            if isinstance(step, Encode) and (not step.adapters or set(step.adapters) - set(modalities)):
                raise bad(f"[{i}].adapters", "must map the package's input modalities to parts")
            if isinstance(step, (Gate, Moe, Exit, Final)):
                key = "exit" if isinstance(step, Final) else op
                if step.index != counters[key]:
                    raise bad(f"[{i}].index", f"expected {counters[key]}")
                counters[key] += 1
            if isinstance(step, (Exit, Final)) and outputs[step.part] != EXIT_OUTPUTS:
                raise bad(f"[{i}]", f"part {step.part} must output logits and a score")
            steps.append(step)
        if not steps or not isinstance(steps[0], Encode) or not isinstance(steps[-1], Final) \
                or sum(isinstance(s, Final) for s in steps) != 1:
            raise bad("", "must start with encode and end with one final step")
        return cls(tuple(steps))


def _parse_step(op: str, item: dict[str, Any], at: str, bad: Callable[[str, str], PackageError],
                part_key: str) -> Step:
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
            raise bad(f"{at}.{key}", "must map names to parts")
        return value

    if op == "encode":
        if not isinstance(item.get("adapters"), dict):
            raise bad(f"{at}.adapters", "must be a dict")
        return Encode(names("adapters"), str(item.get("fuse", "mean")))
    if op == "run":
        return Run(text(part_key))
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
        return Exit(text(part_key), text("exit"), index())
    return Final(text(part_key), index(), text("exit"), names("tasks"))
