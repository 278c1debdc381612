"""Two small specs that mix the new block kinds, with gates and experts that split batches
(shared by test_architectures*.py)."""

import torch

from cephalon_edge.toolchain.model import CephalonNet
from cephalon_edge.toolchain.spec import ModelSpec

# 2-D images: inverted residuals plain (ReLU6, expansion 2), gated (5x5 depthwise, hard-swish,
# squeeze-excitation with a hard-sigmoid gate, stride 2) and as experts, then a basic stage
MOBILE = {
    "name": "mobile-mix",
    "modalities": [{"name": "image", "kind": "image", "shape": [1, 16, 16],
                    "adapter": {"kind": "conv_stem", "channels": 8, "stride": 2}}],
    "stages": [
        {"channels": 8, "blocks": 1, "block": "inverted", "expansion": 2, "exit": True},
        {"channels": 12, "blocks": 1, "block": "inverted", "stride": 2, "kernel": 5, "se": True,
         "se_gate": "hardsigmoid", "activation": "hardswish", "skip_blocks": 1, "exit": True},
        {"channels": 16, "blocks": 1, "block": "inverted", "expansion": 1, "experts": 2, "exit": True},
        {"channels": 16, "blocks": 1, "block": "basic"},
    ],
    "tasks": [{"name": "class", "outputs": 5}],
}
# a token space for image patches and text: transformer blocks plain, gated and as experts
# (class token, learned positions), then 1-D inverted residuals over the tokens
TOKENS = {
    "name": "vit-mix", "backbone": "tokens", "class_token": True, "head_pool": "cls",
    "modalities": [{"name": "image", "kind": "image", "shape": [1, 16, 16],
                    "adapter": {"kind": "patch_embed", "channels": 16, "patch": 4, "positions": True,
                                "project": False}},
                   {"name": "text", "kind": "text", "shape": [16],
                    "adapter": {"kind": "embedding", "channels": 16, "vocab": 50, "positions": True}}],
    "stages": [
        {"channels": 16, "blocks": 1, "block": "transformer", "heads": 2, "expansion": 2, "exit": True},
        {"channels": 16, "blocks": 1, "block": "transformer", "heads": 4, "expansion": 2, "skip_blocks": 1,
         "experts": 2, "exit": True},
        {"channels": 16, "blocks": 1, "block": "inverted", "expansion": 2, "skip_blocks": 1, "experts": 2},
    ],
    "tasks": [{"name": "class", "outputs": 5}],
}
SPECS = {"mobile": MOBILE, "tokens": TOKENS}


def make_inputs(spec: ModelSpec, n: int, seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {m.name: torch.randint(0, m.adapter.vocab, (n, *m.shape), generator=g).float() if m.kind == "text"
            else torch.randn(n, *m.shape, generator=g) for m in spec.modalities}


def balanced(name: str) -> CephalonNet:
    """The spec's net with gates that fire for some samples and experts that share them."""
    torch.manual_seed(0)
    net = CephalonNet(ModelSpec.from_dict(SPECS[name])).eval()
    x = make_inputs(net.spec, 64, seed=1)
    with torch.no_grad():
        feats = {}
        hooks = [m.register_forward_pre_hook(lambda mod, args, n=n: feats.__setitem__(n, args[0]))
                 for n, m in net.named_modules() if n.endswith(("skip_gates.0", "moe_gate"))]
        net(x)
        for h in hooks:
            h.remove()
        for n, h in feats.items():
            gate = net.get_submodule(n)
            pooled = gate.pool(h)
            if gate.fc.out_features == 1:
                gate.fc.bias.fill_(-float((pooled @ gate.fc.weight[0]).median()))
            else:  # two experts: the boundary at the median of their logit difference
                gate.fc.weight.normal_(0, 1.0)
                gate.fc.bias.zero_()
                diff = pooled @ (gate.fc.weight[0] - gate.fc.weight[1])
                gate.fc.bias[0] = -float(diff.median())
    return net
