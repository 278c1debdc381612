"""Building blocks of a CephalonNet, generic over 1-D (signals) and 2-D (images) backbones."""

from __future__ import annotations

import torch
from torch import nn

from cephalon_edge.toolchain.spec import ModalitySpec, StageSpec


def conv(dims: int, cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1) -> nn.Module:
    cls = nn.Conv2d if dims == 2 else nn.Conv1d
    return cls(cin, cout, kernel, stride=stride, padding=kernel // 2, groups=groups, bias=False)


def norm(dims: int, channels: int) -> nn.Module:
    return (nn.BatchNorm2d if dims == 2 else nn.BatchNorm1d)(channels)


def activation(name: str) -> nn.Module:
    """A stage's activation by its spec name."""
    return {"relu": nn.ReLU, "relu6": nn.ReLU6, "hardswish": nn.Hardswish, "gelu": nn.GELU}[name]()


LAYER_NORM_EPS = 1e-6  # transformer blocks and the norms of heads that read them (ViT's)


def global_pool(x: torch.Tensor) -> torch.Tensor:
    """Mean over every spatial dimension: (B, C, ...) -> (B, C)."""
    return x.flatten(2).mean(-1)


class Pool(nn.Module):
    """How heads and gates read a representation: the mean over every position, or the
    class token (the first token of a token sequence)."""

    def __init__(self, mode: str = "mean") -> None:
        super().__init__()
        self.mode = mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, :, 0] if self.mode == "cls" else global_pool(x)


class SqueezeExcite(nn.Module):
    def __init__(self, channels: int, hidden: int, gate: str = "sigmoid") -> None:
        super().__init__()
        self.fc1 = nn.Linear(channels, hidden)
        self.fc2 = nn.Linear(hidden, channels)
        self.gate: nn.Module = nn.Hardsigmoid() if gate == "hardsigmoid" else nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.gate(self.fc2(torch.relu(self.fc1(global_pool(x)))))
        return x * w.view(*w.shape, *([1] * (x.dim() - 2)))


class ResidualBlock(nn.Module):
    """Basic (two 3x3) or bottleneck (1x1-3x3-1x1) residual block, optionally with SE."""

    def __init__(self, dims: int, kind: str, cin: int, cout: int, stride: int, mid: int, se_hidden: int | None,
                 act: str = "relu", se_gate: str = "sigmoid") -> None:
        super().__init__()
        if kind == "basic":
            layers = [conv(dims, cin, mid, 3, stride), norm(dims, mid), activation(act),
                      conv(dims, mid, cout, 3), norm(dims, cout)]
        else:
            layers = [conv(dims, cin, mid, 1), norm(dims, mid), activation(act),
                      conv(dims, mid, mid, 3, stride), norm(dims, mid), activation(act),
                      conv(dims, mid, cout, 1), norm(dims, cout)]
        if se_hidden:
            layers.append(SqueezeExcite(cout, se_hidden, se_gate))
        self.branch = nn.Sequential(*layers)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(conv(dims, cin, cout, 1, stride), norm(dims, cout))
        self.act = activation(act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.branch(x) + self.shortcut(x))


class InvertedResidual(nn.Module):
    """MobileNetV2/V3 block: 1x1 expansion to ``mid`` (none with ``expand`` off, t = 1: the
    depthwise conv then runs at the input width) -> depthwise k x k (stride) -> optional
    squeeze-excitation on the expanded width -> 1x1 linear projection; the input is added back
    when stride is 1 and the widths match."""

    def __init__(self, dims: int, cin: int, cout: int, stride: int, mid: int, kernel: int, act: str,
                 se_hidden: int | None, se_gate: str, expand: bool = True) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        if expand:
            layers += [conv(dims, cin, mid, 1), norm(dims, mid), activation(act)]
        else:
            mid = cin
        layers += [conv(dims, mid, mid, kernel, stride, groups=mid), norm(dims, mid), activation(act)]
        if se_hidden:
            layers.append(SqueezeExcite(mid, se_hidden, se_gate))
        layers += [conv(dims, mid, cout, 1), norm(dims, cout)]
        self.branch = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.branch(x)
        return x + y if self.residual else y


class SelfAttention(nn.Module):
    """Multi-head self-attention over (B, L, C) tokens: one qkv projection, scaled dot-product
    attention per head, an output projection (the layout of timm's ViT ``Attention``).
    ``scaled_dot_product_attention`` lowers to each runtime's own kernel where it has one
    (Core ML's ``scaled_dot_product_attention`` op for iOS 18 targets); elsewhere to batched
    matmuls and a softmax (ONNX, TFLite, ExecuTorch's XNNPACK)."""

    def __init__(self, channels: int, heads: int, head_width: int) -> None:
        super().__init__()
        self.heads, self.head_width = heads, head_width
        self.qkv = nn.Linear(channels, 3 * heads * head_width)
        self.proj = nn.Linear(heads * head_width, channels)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        tokens = t.shape[1]
        q, k, v = self.qkv(t).reshape(-1, tokens, 3, self.heads, self.head_width).permute(2, 0, 3, 1, 4)
        att = nn.functional.scaled_dot_product_attention(q, k, v)
        return self.proj(att.transpose(1, 2).reshape(-1, tokens, self.heads * self.head_width))


class Mlp(nn.Module):
    def __init__(self, channels: int, hidden: int, act: str) -> None:
        super().__init__()
        self.fc1 = nn.Linear(channels, hidden)
        self.act = activation(act)
        self.fc2 = nn.Linear(hidden, channels)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(t)))


class TransformerBlock(nn.Module):
    """Pre-norm transformer block over the (B, C, L) token representation: x + attention(LN(x)),
    then x + MLP(LN(x)); keeps the width and the tokens."""

    def __init__(self, channels: int, heads: int, head_width: int, hidden: int, act: str) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(channels, eps=LAYER_NORM_EPS)
        self.attn = SelfAttention(channels, heads, head_width)
        self.norm2 = nn.LayerNorm(channels, eps=LAYER_NORM_EPS)
        self.mlp = Mlp(channels, hidden, act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = x.transpose(1, 2)
        t = t + self.attn(self.norm1(t))
        t = t + self.mlp(self.norm2(t))
        return t.transpose(1, 2)


def make_block(dims: int, stage: StageSpec, cin: int, stride: int) -> nn.Module:
    se_hidden = stage.se_hidden if stage.se else None
    if stage.block == "inverted":
        return InvertedResidual(dims, cin, stage.channels, stride, stage.mid_channels, stage.kernel, stage.act,
                                se_hidden, stage.se_gate, expand=stage.expansion != 1)
    if stage.block == "transformer":
        return TransformerBlock(stage.channels, stage.heads, stage.attention_width // stage.heads,
                                stage.mid_channels, stage.act)
    return ResidualBlock(dims, stage.block, cin, stage.channels, stride, stage.mid_channels, se_hidden,
                         stage.act, stage.se_gate)


class Adapter(nn.Module):
    """Modality adapter into the shared representation.

    Native backbone: a conv stem / patch embedding (raw input) or a 1x1 projection + norm
    (feature maps), keeping the input's rank. Tokens backbone: the same stem (or a token
    embedding for text), flattened to a token sequence, then the light 1x1 projection + norm
    into the shared space: (B, channels, tokens)."""

    def __init__(self, modality: ModalitySpec, tokens: bool, class_token: bool = False) -> None:
        super().__init__()
        spec, dims, cin = modality.adapter, modality.dims, modality.in_channels
        self.embed: nn.Module | None = None
        self.tokens = tokens
        if spec.kind == "embedding":
            self.embed = nn.Embedding(spec.vocab, spec.channels)
            layers: list[nn.Module] = []
        elif spec.kind == "projection":
            layers = [conv(dims, cin, spec.channels, 1), norm(dims, spec.channels)]
        elif spec.kind == "patch_embed":
            cls = nn.Conv2d if dims == 2 else nn.Conv1d
            layers = [cls(cin, spec.channels, spec.patch, stride=spec.patch)]
        else:
            layers = [conv(dims, cin, spec.channels, spec.kernel, spec.stride),
                      norm(dims, spec.channels), activation(spec.activation)]
            if spec.pool:
                layers.append((nn.MaxPool2d if dims == 2 else nn.MaxPool1d)(3, 2, 1))
        self.body = nn.Sequential(*layers)
        self.project: nn.Module = nn.Identity()
        if tokens and spec.project:
            self.project = nn.Sequential(conv(1, spec.channels, spec.channels, 1), norm(1, spec.channels))
        self.class_token: nn.Parameter | None = None
        self.positions: nn.Parameter | None = None
        if tokens and class_token:
            self.class_token = nn.Parameter(torch.zeros(1, spec.channels, 1))
            nn.init.trunc_normal_(self.class_token, std=0.02)
        if tokens and spec.positions:
            self.positions = nn.Parameter(torch.zeros(1, spec.channels, modality.tokens + int(class_token)))
            nn.init.trunc_normal_(self.positions, std=0.02)

    @property
    def out_channels(self) -> int:
        return self.embed.embedding_dim if self.embed is not None else next(
            m for m in reversed(self.body) if isinstance(m, (nn.Conv1d, nn.Conv2d))).out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.embed is not None:
            # token ids travel as float32 like every other input; exact below 2**24
            h = self.embed(x.to(torch.int64)).transpose(1, 2)
        else:
            h = self.body(x)
        if self.tokens:
            h = self.project(h.flatten(2))
            if self.class_token is not None:
                # broadcast by arithmetic, not expand(batch): no shape op that tracers freeze
                h = torch.cat([torch.zeros_like(h[:, :, :1]) + self.class_token, h], 2)
            if self.positions is not None:
                h = h + self.positions
        return h


class ExitHead(nn.Module):
    """Classifier after a stage: optional conv, pool (mean or class token), LayerNorm after a
    transformer stage, linear -> logits."""

    def __init__(self, dims: int, channels: int, classes: int, hidden: int, pool: str = "mean",
                 layer_norm: bool = False) -> None:
        super().__init__()
        self.features: nn.Module = nn.Identity()
        width = channels
        if hidden:
            self.features = nn.Sequential(conv(dims, channels, hidden, 3), norm(dims, hidden), nn.ReLU())
            width = hidden
        self.pool = Pool(pool)
        self.norm: nn.Module = nn.LayerNorm(width, eps=LAYER_NORM_EPS) if layer_norm else nn.Identity()
        self.fc = nn.Linear(width, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.norm(self.pool(self.features(x))))


class TaskHead(nn.Module):
    """A task head at the last exit: optionally a 1x1 conv + norm + activation widening to
    ``widen`` channels (MobileNet's last conv), pool (mean or class token), LayerNorm after a
    transformer stage, optionally a hidden linear layer + activation (MobileNetV3's
    classifier), linear."""

    def __init__(self, channels: int, outputs: int, pool: str = "mean", layer_norm: bool = False,
                 dims: int = 2, widen: int = 0, hidden: int = 0, act: str = "relu") -> None:
        super().__init__()
        self.features: nn.Module = nn.Identity()
        if widen:
            self.features = nn.Sequential(conv(dims, channels, widen, 1), norm(dims, widen), activation(act))
            channels = widen
        self.pool = Pool(pool)
        self.norm: nn.Module = nn.LayerNorm(channels, eps=LAYER_NORM_EPS) if layer_norm else nn.Identity()
        self.hidden: nn.Module = nn.Identity()
        if hidden:
            self.hidden = nn.Sequential(nn.Linear(channels, hidden), activation(act))
            channels = hidden
        self.fc = nn.Linear(channels, outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.hidden(self.norm(self.pool(self.features(x)))))


class SkipGate(nn.Module):
    """SkipNet gate: probability that the gated block should run (it runs when > 0.5)."""

    def __init__(self, channels: int, pool: str = "mean") -> None:
        super().__init__()
        self.pool = Pool(pool)
        self.fc = nn.Linear(channels, 1)
        nn.init.constant_(self.fc.bias, 2.0)  # start with blocks on; training learns to skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.fc(self.pool(x))).squeeze(1)


class ExpertGate(nn.Module):
    """Top-1 mixture-of-experts gate: one logit per expert."""

    def __init__(self, channels: int, experts: int, pool: str = "mean") -> None:
        super().__init__()
        self.pool = Pool(pool)
        self.fc = nn.Linear(channels, experts)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(x))


def confidence(logits: torch.Tensor) -> torch.Tensor:
    """The exit score: maximum softmax probability per sample."""
    return torch.softmax(logits, dim=-1).amax(dim=-1)
