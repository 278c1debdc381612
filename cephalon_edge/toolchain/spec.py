"""The architecture spec of a Cephalon model: versioned, validated, JSON round-trippable.

A spec is all that is needed to build a ``CephalonNet``. Errors name the bad field by its
path (``spec.stages[2].channels``) so a hand-written spec file is easy to fix. This module
is torch-free.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from cephalon_edge.errors import SpecError
from cephalon_edge.fsutil import loads_json

if TYPE_CHECKING:
    from cephalon_edge.device.data_checks import Contract

SPEC_VERSION = 1
MODALITY_KINDS = {"image": 3, "signal": 2, "text": 1}  # kind -> rank of one sample: (C,H,W) / (C,L) / (L,)
ADAPTER_KINDS = ("conv_stem", "patch_embed", "projection", "embedding")
BACKBONES = ("native", "tokens")
BLOCK_KINDS = ("basic", "bottleneck", "inverted", "transformer")
ACTIVATIONS = ("relu", "relu6", "hardswish", "gelu")
DEFAULT_ACTIVATION = {"basic": "relu", "bottleneck": "relu", "inverted": "relu6", "transformer": "gelu"}
SE_GATES = ("sigmoid", "hardsigmoid")
HEAD_POOLS = ("mean", "cls")
TASK_KINDS = ("classification", "regression")
# bounds that keep a hostile spec from allocating absurd tensors before anything is checked
MAX_WIDTH, MAX_BLOCKS, MAX_EXPERTS, MAX_DIM, MAX_INPUT, MAX_PARAMS = 1 << 16, 256, 64, 1 << 14, 1 << 26, 500_000_000


@dataclass(frozen=True)
class Preprocessing:
    """How raw inputs in ``value_range`` become model inputs: resize, then (x - mean) / std."""

    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)
    resize: tuple[int, ...] | None = None
    value_range: tuple[float, float] = (0.0, 1.0)


@dataclass(frozen=True)
class AdapterSpec:
    """The modality adapter into the shared representation.

    ``conv_stem``: conv kernel/stride + norm + ReLU (+ pool); ``patch_embed``: non-overlapping
    ``patch`` x ``patch`` patches, linearly embedded; ``projection``: 1x1 conv + norm (inputs
    that are already feature maps); ``embedding``: a ``vocab``-entry token embedding (text).
    With a ``tokens`` backbone every adapter ends in a 1x1 projection + norm into the shared
    space and hands the backbone a sequence of ``channels`` x tokens."""

    kind: str = "conv_stem"
    channels: int = 16
    kernel: int = 3
    stride: int = 1
    pool: bool = False  # a 3x3/2 max-pool after the stem (ResNet layout)
    patch: int = 4  # patch_embed: patch side
    vocab: int = 0  # embedding: number of token ids
    positions: bool = False  # tokens backbone: a learned positional embedding per token (transformers)
    project: bool = True  # tokens backbone: a 1x1 projection + norm into the shared space
    activation: str = "relu"  # conv_stem: the stem's activation (relu6 in MobileNetV2, hardswish in V3)


@dataclass(frozen=True)
class ModalitySpec:
    name: str
    kind: str
    shape: tuple[int, ...]  # one sample, channels first
    adapter: AdapterSpec = field(default_factory=AdapterSpec)
    preprocessing: Preprocessing = field(default_factory=Preprocessing)

    @property
    def dims(self) -> int:
        """Spatial dimensions of the input (2 for images, 1 for signals and text)."""
        return max(1, len(self.shape) - 1)

    @property
    def in_channels(self) -> int:
        return 1 if self.kind == "text" else self.shape[0]

    @property
    def spatial(self) -> tuple[int, ...]:
        return self.shape if self.kind == "text" else self.shape[1:]

    @property
    def tokens(self) -> int:
        """Positions the adapter hands the backbone (flattened, for a ``tokens`` backbone)."""
        a, count = self.adapter, 1
        for d in self.spatial:
            if a.kind == "conv_stem":
                d = (d - 1) // a.stride + 1
                d = (d - 1) // 2 + 1 if a.pool else d
            elif a.kind == "patch_embed":
                d = d // a.patch
            count *= d
        return count


@dataclass(frozen=True)
class StageSpec:
    """A stage: ``blocks`` plain blocks, then ``skip_blocks`` gated blocks, then an optional
    mixture-of-experts layer of ``experts`` blocks, then an optional early exit. Every block
    of a stage is of one kind:

    - ``basic`` / ``bottleneck``: ResNet residual blocks;
    - ``inverted``: MobileNetV2/V3 inverted residual: 1x1 expansion to ``inner_channels``
      (default ``expansion`` x channels; ``expansion`` 1: no expansion conv, the depthwise
      conv runs at the block's input width) -> depthwise ``kernel`` x ``kernel`` (stride) ->
      optional squeeze-excitation -> 1x1 projection without activation; residual when the
      shapes allow;
    - ``transformer``: pre-norm multi-head self-attention (``heads``) + MLP (hidden
      ``inner_channels``, default ``expansion`` x channels, GELU) over the tokens of a
      ``tokens`` backbone; keeps the width and the token count.
    """

    channels: int
    blocks: int = 1
    block: str = "basic"
    stride: int = 1
    inner_channels: int | None = None  # width inside each block (pruning shrinks it)
    se: bool = False
    se_channels: int | None = None  # squeeze-and-excitation hidden width (default channels // 4)
    skip_blocks: int = 0
    experts: int = 0
    exit: bool = False
    expansion: int = 4  # inverted: expansion ratio; transformer: MLP ratio (when inner_channels is unset)
    kernel: int = 3  # inverted: the depthwise kernel (3 or 5)
    activation: str | None = None  # relu | relu6 | hardswish | gelu (default per block kind)
    se_gate: str = "sigmoid"  # squeeze-excitation gate: sigmoid, or hardsigmoid (MobileNetV3)
    heads: int = 4  # transformer: attention heads (they split the width)
    head_width: int | None = None  # transformer: width of each head (default channels // heads)

    @property
    def mid_channels(self) -> int:
        """Basic: output width of the first conv (default channels); bottleneck: the 1x1/3x3
        width (default channels // 4); inverted: the expanded width; transformer: the MLP's
        hidden width (default expansion x channels)."""
        if self.inner_channels:
            return self.inner_channels
        if self.block in ("inverted", "transformer"):
            return self.expansion * self.channels
        return self.channels if self.block == "basic" else max(1, self.channels // 4)

    @property
    def se_hidden(self) -> int:
        """Squeeze-excitation hidden width: of the output (residual blocks) or of the expanded
        width (inverted)."""
        width = self.mid_channels if self.block == "inverted" else self.channels
        return self.se_channels or max(1, width // 4)

    @property
    def act(self) -> str:
        return self.activation or DEFAULT_ACTIVATION.get(self.block, "relu")

    @property
    def attention_width(self) -> int:
        """Transformer: heads x head width (the q, k, v width; pruning heads shrinks it)."""
        return self.heads * (self.head_width or max(1, self.channels // self.heads))


@dataclass(frozen=True)
class TaskSpec:
    name: str
    kind: str = "classification"
    outputs: int = 10


@dataclass(frozen=True)
class ModelSpec:
    name: str
    modalities: tuple[ModalitySpec, ...]
    stages: tuple[StageSpec, ...]
    tasks: tuple[TaskSpec, ...]
    labels: tuple[str, ...] = ()
    exit_channels: int = 0  # hidden conv width in exit heads; 0 = pool + linear
    # "native": the backbone has the inputs' rank (2-D for images); "tokens": every adapter
    # hands a token sequence (channels x tokens) to a 1-D backbone: the shared space of
    # multi-modal models
    backbone: str = "native"
    class_token: bool = False  # tokens backbone: a learned class token in front of each modality's tokens
    head_pool: str = "mean"  # how heads and gates read a token sequence: the tokens' mean, or the class token
    # task heads first widen the last stage with a 1x1 conv + norm + the last stage's
    # activation to this many channels (MobileNet's last conv); 0 = none
    head_channels: int = 0
    head_hidden: int = 0  # a hidden linear layer (+ the last stage's activation) before each classifier (MobileNetV3's)
    norm_eps: float = 1e-5  # every batch norm's epsilon (torchvision's MobileNetV3 uses 1e-3)
    version: int = SPEC_VERSION

    # ---- derived names -------------------------------------------------------------
    @property
    def classes(self) -> int:
        return self.tasks[0].outputs

    @property
    def dims(self) -> int:
        return 1 if self.backbone == "tokens" else self.modalities[0].dims

    @property
    def modality_names(self) -> list[str]:
        return [m.name for m in self.modalities]

    @property
    def exit_stages(self) -> list[int]:
        return [k for k, s in enumerate(self.stages) if s.exit]

    @property
    def exit_names(self) -> list[str]:
        """Names of every exit in order; the last is the final classifier ``final``."""
        return [f"exit{k}" for k in self.exit_stages] + ["final"]

    @property
    def gate_names(self) -> list[str]:
        return [
            f"gate{k}.{s.blocks + j}" for k, s in enumerate(self.stages) for j in range(s.skip_blocks)
        ]

    @property
    def moe_names(self) -> list[str]:
        return [f"moe{k}" for k, s in enumerate(self.stages) if s.experts]

    @property
    def label_names(self) -> list[str]:
        """The classes' names: the spec's ``labels``, else ``0``..``N-1``."""
        return list(self.labels) or [str(i) for i in range(self.classes)]

    def input_entries(self) -> list[dict[str, Any]]:
        """The inputs as a manifest lists them (name, kind, shape, preprocessing, vocab of
        text); what datasets are checked against on both halves."""
        # text token ids travel as float32 like every input (exact below 2**24); "vocab" bounds them
        return [{"name": m.name, "kind": m.kind, "shape": list(m.shape), "dtype": "float32",
                 "preprocessing": dataclasses.asdict(m.preprocessing),
                 **({"vocab": m.adapter.vocab} if m.kind == "text" else {})} for m in self.modalities]

    def contract(self) -> "Contract":
        """What datasets for this model are checked against."""
        from cephalon_edge.device.data_checks import Contract

        return Contract(tuple(self.input_entries()), tuple(self.label_names),
                        tuple(dataclasses.asdict(t) for t in self.tasks))

    # ---- serialisation -------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: Any) -> "ModelSpec":
        spec = _build(cls, data, "spec")
        validate(spec)
        return spec

    @classmethod
    def from_json(cls, text: str) -> "ModelSpec":
        return cls.from_dict(loads_json(text, "spec", SpecError))


# ---- parsing with field paths -----------------------------------------------------------

_NESTED = {
    "modalities": ModalitySpec,
    "stages": StageSpec,
    "tasks": TaskSpec,
    "adapter": AdapterSpec,
    "preprocessing": Preprocessing,
}


def _build(cls: type, data: Any, path: str) -> Any:
    if not isinstance(data, dict):
        raise SpecError(f"{path}: expected an object, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise SpecError(f"{path}.{unknown[0]}: unknown field", hint=f"known fields: {', '.join(fields)}")
    kwargs: dict[str, Any] = {}
    for name, f in fields.items():
        here = f"{path}.{name}"
        if name not in data:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise SpecError(f"{here}: required field is missing")
            continue
        kwargs[name] = _convert(name, data[name], here)
    return cls(**kwargs)


def _convert(name: str, value: Any, path: str) -> Any:
    if name in ("modalities", "stages", "tasks"):
        if not isinstance(value, (list, tuple)) or not value:
            raise SpecError(f"{path}: expected a non-empty list")
        return tuple(_build(_NESTED[name], v, f"{path}[{i}]") for i, v in enumerate(value))
    if name in ("adapter", "preprocessing"):
        return _build(_NESTED[name], value, path)
    if isinstance(value, (list, tuple)):
        return tuple(value)
    return value


def _require(cond: bool, path: str, message: str) -> None:
    if not cond:
        raise SpecError(f"{path}: {message}")


def _positive_int(value: Any, path: str) -> None:
    _require(isinstance(value, int) and not isinstance(value, bool) and value > 0, path,
             f"must be a positive integer, got {value!r}")


def _count(value: Any, path: str) -> None:
    _require(isinstance(value, int) and not isinstance(value, bool) and value >= 0, path,
             f"must be a non-negative integer, got {value!r}")


def _at_most(value: int, limit: int, path: str) -> None:
    _require(value <= limit, path, f"{value} is too large (at most {limit})")


def _name(value: Any, path: str) -> None:
    _require(isinstance(value, str) and value.isidentifier() and value.islower(), path,
             f"must be a lower-case identifier, got {value!r}")


def _validate_adapter(m: ModalitySpec, p: str) -> None:
    a = m.adapter
    _require(a.kind in ADAPTER_KINDS, f"{p}.adapter.kind", f"must be one of {list(ADAPTER_KINDS)}, got {a.kind!r}")
    for attr, limit in (("channels", MAX_WIDTH), ("kernel", 15), ("stride", 16), ("patch", 64)):
        _positive_int(getattr(a, attr), f"{p}.adapter.{attr}")
        _at_most(getattr(a, attr), limit, f"{p}.adapter.{attr}")
    _require(a.kernel % 2 == 1, f"{p}.adapter.kernel", f"must be odd, got {a.kernel}")
    _require(a.activation in ACTIVATIONS, f"{p}.adapter.activation",
             f"must be one of {list(ACTIVATIONS)}, got {a.activation!r}")
    _require((a.kind == "embedding") == (m.kind == "text"), f"{p}.adapter.kind",
             "text enters through an 'embedding' adapter" if m.kind == "text"
             else f"'embedding' is the text adapter; a {m.kind} takes conv_stem, patch_embed or projection")
    if a.kind == "embedding":
        _positive_int(a.vocab, f"{p}.adapter.vocab")
        _at_most(a.vocab, 1 << 20, f"{p}.adapter.vocab")
    if a.kind == "patch_embed":
        _require(all(d % a.patch == 0 for d in m.spatial), f"{p}.adapter.patch",
                 f"patch {a.patch} must divide the sample size {list(m.spatial)}")


def _validate_shared_space(spec: ModelSpec) -> None:
    """Every modality must land in the same space: same rank and width (native backbone), or
    the same channels x tokens (tokens backbone)."""
    _require(spec.backbone in BACKBONES, "spec.backbone", f"must be one of {list(BACKBONES)}, got {spec.backbone!r}")
    widths = {m.adapter.channels for m in spec.modalities}
    _require(len(widths) == 1, "spec.modalities", "all adapters must project to the same channel count "
             f"(got {', '.join(f'{m.name}: {m.adapter.channels}' for m in spec.modalities)})")
    if spec.backbone == "tokens":
        tokens = {m.tokens for m in spec.modalities}
        _require(len(tokens) == 1, "spec.modalities", "with a tokens backbone every adapter must hand the same "
                 f"number of tokens (got {', '.join(f'{m.name}: {m.tokens}' for m in spec.modalities)}); "
                 "change a stride or patch size")
        return
    text = [i for i, m in enumerate(spec.modalities) if m.kind == "text"]
    _require(not text, f"spec.modalities[{text[0] if text else 0}].kind", 'text needs "backbone": "tokens"')
    dims = {m.dims for m in spec.modalities}
    _require(len(dims) == 1, "spec.modalities", 'modalities of different rank need "backbone": "tokens" '
             "(a shared token sequence)")


def validate(spec: ModelSpec) -> None:
    """Check every field; raise ``SpecError`` naming the first bad one."""
    _require(spec.version == SPEC_VERSION, "spec.version",
             f"unsupported spec version {spec.version!r} (this cephalon-edge reads {SPEC_VERSION})")
    _require(isinstance(spec.name, str) and bool(spec.name), "spec.name", "must be a non-empty string")
    names = set()
    for i, m in enumerate(spec.modalities):
        p = f"spec.modalities[{i}]"
        _name(m.name, f"{p}.name")
        _require(m.name not in names, f"{p}.name", f"duplicate modality {m.name!r}")
        names.add(m.name)
        _require(m.kind in MODALITY_KINDS, f"{p}.kind", f"must be one of {sorted(MODALITY_KINDS)}, got {m.kind!r}")
        _require(len(m.shape) == MODALITY_KINDS[m.kind], f"{p}.shape",
                 f"a {m.kind} sample has {MODALITY_KINDS[m.kind]} dimensions (channels first), got {list(m.shape)}")
        for j, d in enumerate(m.shape):
            _positive_int(d, f"{p}.shape[{j}]")
            _at_most(d, MAX_DIM, f"{p}.shape[{j}]")
        size = 1
        for d in m.shape:
            size *= d
        _at_most(size, MAX_INPUT, f"{p}.shape")
        _validate_adapter(m, p)
        pre = m.preprocessing
        channels = m.in_channels
        for attr in ("mean", "std"):
            vals = getattr(pre, attr)
            _require(isinstance(vals, tuple) and len(vals) in (1, channels)
                     and all(isinstance(v, (int, float)) for v in vals),
                     f"{p}.preprocessing.{attr}", f"must be 1 or {channels} numbers")
        _require(all(s > 0 for s in pre.std), f"{p}.preprocessing.std", "must be positive")
        if pre.resize is not None:
            _require(m.kind != "text" and len(pre.resize) == len(m.shape) - 1, f"{p}.preprocessing.resize",
                     f"must have {len(m.shape) - 1} sizes" if m.kind != "text" else "text takes no resize")
    _validate_shared_space(spec)

    for k, s in enumerate(spec.stages):
        p = f"spec.stages[{k}]"
        _positive_int(s.channels, f"{p}.channels")
        _positive_int(s.blocks, f"{p}.blocks")
        _positive_int(s.stride, f"{p}.stride")
        _count(s.skip_blocks, f"{p}.skip_blocks")
        _count(s.experts, f"{p}.experts")
        for attr, limit in (("channels", MAX_WIDTH), ("blocks", MAX_BLOCKS), ("skip_blocks", MAX_BLOCKS),
                            ("experts", MAX_EXPERTS), ("stride", 16), ("inner_channels", MAX_WIDTH),
                            ("se_channels", MAX_WIDTH)):
            if isinstance(getattr(s, attr), int):
                _at_most(getattr(s, attr), limit, f"{p}.{attr}")
        _require(s.experts != 1, f"{p}.experts", "a mixture of experts needs at least 2 experts (0 = none)")
        _require(s.block in BLOCK_KINDS, f"{p}.block", f"must be one of {list(BLOCK_KINDS)}, got {s.block!r}")
        _validate_block_settings(spec, k, s, p)
        for attr in ("inner_channels", "se_channels"):
            if getattr(s, attr) is not None:
                _positive_int(getattr(s, attr), f"{p}.{attr}")
        _require(isinstance(s.se, bool), f"{p}.se", "must be true or false")
        _require(isinstance(s.exit, bool), f"{p}.exit", "must be true or false")
    _require(not spec.stages[-1].exit, f"spec.stages[{len(spec.stages) - 1}].exit",
             "the last stage feeds the task heads; early exits go after earlier stages")
    _require(spec.head_pool in HEAD_POOLS, "spec.head_pool", f"must be one of {list(HEAD_POOLS)}, got {spec.head_pool!r}")
    _require(isinstance(spec.class_token, bool), "spec.class_token", "must be true or false")
    _require(not spec.class_token or spec.backbone == "tokens", "spec.class_token",
             'a class token is a token: it needs "backbone": "tokens"')
    _require(spec.head_pool != "cls" or spec.class_token, "spec.head_pool",
             '"cls" reads the class token: set "class_token": true')
    _require(isinstance(spec.norm_eps, (int, float)) and not isinstance(spec.norm_eps, bool)
             and 0 < spec.norm_eps <= 0.1, "spec.norm_eps", f"must be a small positive number, got {spec.norm_eps!r}")
    for attr in ("exit_channels", "head_channels", "head_hidden"):
        _count(getattr(spec, attr), f"spec.{attr}")
        _at_most(getattr(spec, attr), MAX_WIDTH, f"spec.{attr}")
    _require(not spec.head_channels or spec.backbone == "native", "spec.head_channels",
             "a widening head conv is for convolutional backbones (native)")

    task_names = set()
    for i, t in enumerate(spec.tasks):
        p = f"spec.tasks[{i}]"
        _name(t.name, f"{p}.name")
        _require(t.name not in task_names, f"{p}.name", f"duplicate task {t.name!r}")
        task_names.add(t.name)
        _require(t.kind in TASK_KINDS, f"{p}.kind", f"must be one of {list(TASK_KINDS)}, got {t.kind!r}")
        _positive_int(t.outputs, f"{p}.outputs")
        _at_most(t.outputs, 1_000_000, f"{p}.outputs")
    _at_most(estimated_params(spec), MAX_PARAMS, "spec (estimated parameters)")
    _require(spec.tasks[0].kind == "classification", "spec.tasks[0].kind",
             "the first task is the classifier that every exit predicts; it must be a classification")
    if spec.labels:
        _require(len(spec.labels) == spec.classes, "spec.labels",
                 f"has {len(spec.labels)} names for {spec.classes} classes")


def _validate_block_settings(spec: ModelSpec, k: int, s: StageSpec, p: str) -> None:
    """The settings of inverted and transformer blocks, and where each kind may go."""
    for attr, limit in (("expansion", 16), ("kernel", 15), ("heads", 256), ("head_width", MAX_WIDTH)):
        value = getattr(s, attr)
        if value is not None:
            _positive_int(value, f"{p}.{attr}")
            _at_most(value, limit, f"{p}.{attr}")
    _require(s.activation is None or s.activation in ACTIVATIONS, f"{p}.activation",
             f"must be one of {list(ACTIVATIONS)}, got {s.activation!r}")
    _require(s.se_gate in SE_GATES, f"{p}.se_gate", f"must be one of {list(SE_GATES)}, got {s.se_gate!r}")
    if s.block == "inverted":
        _require(s.kernel in (3, 5, 7), f"{p}.kernel", f"the depthwise kernel must be 3, 5 or 7, got {s.kernel}")
    if s.block == "transformer":
        _require(spec.backbone == "tokens", f"{p}.block",
                 'transformer blocks work on a token sequence: set "backbone": "tokens"')
        _require(s.stride == 1, f"{p}.stride", "a transformer stage keeps its tokens: stride must be 1")
        width = spec.modalities[0].adapter.channels if k == 0 else spec.stages[k - 1].channels
        _require(s.channels == width, f"{p}.channels",
                 f"a transformer stage keeps the width of its input ({width}), got {s.channels}")
        _require(s.channels % s.heads == 0 or s.head_width is not None, f"{p}.heads",
                 f"{s.heads} heads must divide the width {s.channels} (or set head_width)")


def estimated_params(spec: ModelSpec) -> int:
    """A cheap upper bound of every part's parameters (adapters, embeddings, blocks, skip
    blocks, experts and their gates, exit heads, task heads), so that nothing huge is ever
    allocated: the bound is checked before anything is built."""
    params = 0
    for m in spec.modalities:
        a = m.adapter
        in_channels = m.shape[0] if m.kind != "text" else 1
        params += {"embedding": (a.vocab or 0) * a.channels,
                   "patch_embed": a.patch ** len(m.shape[1:]) * in_channels * a.channels}.get(
            a.kind, a.kernel ** len(m.shape[1:]) * in_channels * a.channels)
        params += (a.channels + 2) * spec.stages[0].channels  # projection into the shared space
    width = spec.modalities[0].adapter.channels
    tokens = max(m.tokens for m in spec.modalities) + int(spec.class_token)
    for s in spec.stages:
        params += (s.blocks + s.skip_blocks + s.experts) * block_params(s, max(width, s.channels), spec.dims)
        params += 9 * width * s.channels  # a shortcut projection, at most
        if s.block == "transformer" and any(m.adapter.positions for m in spec.modalities):
            params += len(spec.modalities) * tokens * s.channels
        params += (s.skip_blocks + 1) * (s.channels + 1) * max(1, s.experts)  # gates
        if s.exit:
            hidden = spec.exit_channels or s.channels
            params += (s.channels + 1) * hidden + (hidden + 1) * spec.classes
        width = s.channels
    if spec.head_channels:
        params += len(spec.tasks) * (width + 2) * spec.head_channels
        width = spec.head_channels
    if spec.head_hidden:
        params += len(spec.tasks) * (width + 1) * spec.head_hidden
        width = spec.head_hidden
    params += sum((width + 1) * t.outputs for t in spec.tasks)
    return int(params)


def block_params(s: StageSpec, cin: int, dims: int) -> int:
    """An upper bound of one block's parameters (weights, norms, biases)."""
    c, mid = s.channels, s.mid_channels
    if s.block == "inverted":  # 1x1 expansion, depthwise k^dims, SE, 1x1 projection
        return cin * mid + mid * s.kernel ** dims + 2 * mid * s.se_hidden + mid * c + 4 * (2 * mid + c)
    if s.block == "transformer":  # q, k, v and output projections, the MLP, two norms
        a = s.attention_width
        return 4 * c * a + 2 * c * mid + 4 * c + 3 * a + mid + 4 * c
    return 9 * (max(cin, c) * mid * 2 + mid ** 2)  # 3x3 convs, two per block, with the inner width
