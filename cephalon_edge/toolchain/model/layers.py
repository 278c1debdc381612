"""Building blocks of a CephalonNet, generic over 1-D (signals) and 2-D (images) backbones."""

from __future__ import annotations

import torch
from torch import nn

from cephalon_edge.toolchain.spec import ModalitySpec, StageSpec


def conv(dims: int, cin: int, cout: int, kernel: int, stride: int = 1) -> nn.Module:
    cls = nn.Conv2d if dims == 2 else nn.Conv1d
    return cls(cin, cout, kernel, stride=stride, padding=kernel // 2, bias=False)


def norm(dims: int, channels: int) -> nn.Module:
    return (nn.BatchNorm2d if dims == 2 else nn.BatchNorm1d)(channels)


def global_pool(x: torch.Tensor) -> torch.Tensor:
    """Mean over every spatial dimension: (B, C, ...) -> (B, C)."""
    return x.flatten(2).mean(-1)


class SqueezeExcite(nn.Module):
    def __init__(self, channels: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(channels, hidden)
        self.fc2 = nn.Linear(hidden, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = torch.sigmoid(self.fc2(torch.relu(self.fc1(global_pool(x)))))
        return x * w.view(*w.shape, *([1] * (x.dim() - 2)))


class ResidualBlock(nn.Module):
    """Basic (two 3x3) or bottleneck (1x1-3x3-1x1) residual block, optionally with SE."""

    def __init__(self, dims: int, kind: str, cin: int, cout: int, stride: int, mid: int, se_hidden: int | None) -> None:
        super().__init__()
        if kind == "basic":
            layers = [conv(dims, cin, mid, 3, stride), norm(dims, mid), nn.ReLU(),
                      conv(dims, mid, cout, 3), norm(dims, cout)]
        else:
            layers = [conv(dims, cin, mid, 1), norm(dims, mid), nn.ReLU(),
                      conv(dims, mid, mid, 3, stride), norm(dims, mid), nn.ReLU(),
                      conv(dims, mid, cout, 1), norm(dims, cout)]
        if se_hidden:
            layers.append(SqueezeExcite(cout, se_hidden))
        self.branch = nn.Sequential(*layers)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(conv(dims, cin, cout, 1, stride), norm(dims, cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.branch(x) + self.shortcut(x))


def make_block(dims: int, stage: StageSpec, cin: int, stride: int) -> ResidualBlock:
    return ResidualBlock(dims, stage.block, cin, stage.channels, stride, stage.mid_channels,
                         stage.se_hidden if stage.se else None)


class Adapter(nn.Module):
    """Modality adapter into the shared representation.

    Native backbone: a conv stem / patch embedding (raw input) or a 1x1 projection + norm
    (feature maps), keeping the input's rank. Tokens backbone: the same stem (or a token
    embedding for text), flattened to a token sequence, then the light 1x1 projection + norm
    into the shared space: (B, channels, tokens)."""

    def __init__(self, modality: ModalitySpec, tokens: bool) -> None:
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
                      norm(dims, spec.channels), nn.ReLU()]
            if spec.pool:
                layers.append((nn.MaxPool2d if dims == 2 else nn.MaxPool1d)(3, 2, 1))
        self.body = nn.Sequential(*layers)
        self.project: nn.Module = nn.Identity()
        if tokens:
            self.project = nn.Sequential(conv(1, spec.channels, spec.channels, 1), norm(1, spec.channels))

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
        return h


class ExitHead(nn.Module):
    """Classifier after a stage: optional conv, global pool, linear -> logits."""

    def __init__(self, dims: int, channels: int, classes: int, hidden: int) -> None:
        super().__init__()
        self.features: nn.Module = nn.Identity()
        width = channels
        if hidden:
            self.features = nn.Sequential(conv(dims, channels, hidden, 3), norm(dims, hidden), nn.ReLU())
            width = hidden
        self.fc = nn.Linear(width, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(global_pool(self.features(x)))


class TaskHead(nn.Module):
    """A task head at the last exit: global pool, linear."""

    def __init__(self, channels: int, outputs: int) -> None:
        super().__init__()
        self.fc = nn.Linear(channels, outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(global_pool(x))


class SkipGate(nn.Module):
    """SkipNet gate: probability that the gated block should run (it runs when > 0.5)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.fc = nn.Linear(channels, 1)
        nn.init.constant_(self.fc.bias, 2.0)  # start with blocks on; training learns to skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.fc(global_pool(x))).squeeze(1)


class ExpertGate(nn.Module):
    """Top-1 mixture-of-experts gate: one logit per expert."""

    def __init__(self, channels: int, experts: int) -> None:
        super().__init__()
        self.fc = nn.Linear(channels, experts)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(global_pool(x))


def confidence(logits: torch.Tensor) -> torch.Tensor:
    """The exit score: maximum softmax probability per sample."""
    return torch.softmax(logits, dim=-1).amax(dim=-1)
