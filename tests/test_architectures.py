"""The block kinds people ship: MobileNet-style inverted residuals and transformer blocks:
their FLOPs, their spec checks, their pruning, the zoo models built of them and their int8
(their export parity on every target is test_architectures_export.py)."""

import numpy as np
import pytest
import torch
from arch_models import SPECS, TOKENS, balanced, make_inputs

from cephalon_edge.device.router import Router
from cephalon_edge.errors import SpecError
from cephalon_edge.toolchain import checkpoint
from cephalon_edge.toolchain.artifacts import ExportSpec
from cephalon_edge.toolchain.export import export_package
from cephalon_edge.toolchain.model.layers import InvertedResidual, SelfAttention, TransformerBlock
from cephalon_edge.toolchain.segments import count_macs
from cephalon_edge.toolchain.spec import ModelSpec


def test_flops_count_depthwise_and_attention():
    block = InvertedResidual(2, cin=8, cout=8, stride=1, mid=24, kernel=5, act="hardswish", se_hidden=None,
                             se_gate="sigmoid")
    hw = 6 * 6
    # expansion 8->24, depthwise 5x5 on 24 channels (one input channel each), projection 24->8
    assert count_macs(block, torch.randn(2, 8, 6, 6)) == hw * (8 * 24 + 24 * 25 + 24 * 8)
    t = TransformerBlock(16, heads=4, head_width=4, hidden=32, act="gelu")
    tokens = 10
    linear = tokens * (16 * 48 + 16 * 16 + 16 * 32 + 32 * 16)  # qkv, proj, fc1, fc2
    quadratic = 2 * tokens * tokens * 16  # q @ k and weights @ v, over every head
    assert count_macs(t, torch.randn(2, 16, tokens)) == linear + quadratic


def test_attention_matches_torch_multihead_attention():
    torch.manual_seed(0)
    ours = SelfAttention(16, heads=4, head_width=4).eval()
    ref = torch.nn.MultiheadAttention(16, 4, batch_first=True).eval()
    with torch.no_grad():
        ref.in_proj_weight.copy_(ours.qkv.weight)
        ref.in_proj_bias.copy_(ours.qkv.bias)
        ref.out_proj.weight.copy_(ours.proj.weight)
        ref.out_proj.bias.copy_(ours.proj.bias)
    t = torch.randn(3, 7, 16)
    torch.testing.assert_close(ours(t), ref(t, t, t, need_weights=False)[0], atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("change, message", [
    ({"backbone": "native", "class_token": False, "head_pool": "mean", "modalities": TOKENS["modalities"][:1]},
     "transformer blocks work on a token sequence"),
    ({"stages": [{"channels": 24, "block": "transformer"}]}, r"keeps the width of its input \(16\)"),
    ({"stages": [{"channels": 16, "block": "transformer", "stride": 2}]}, "stride must be 1"),
    ({"stages": [{"channels": 16, "block": "transformer", "heads": 3}]}, "3 heads must divide the width 16"),
    ({"stages": [{"channels": 16, "block": "inverted", "kernel": 4}]}, "must be 3, 5 or 7"),
    ({"stages": [{"channels": 16, "block": "inverted", "activation": "swish"}]}, "must be one of"),
    ({"class_token": False}, '"cls" reads the class token'),
])
def test_spec_checks_name_the_bad_block_setting(change, message):
    with pytest.raises(SpecError, match=message):
        ModelSpec.from_dict({**TOKENS, **change})


def test_pruning_removes_heads_mlp_width_and_expanded_channels():
    from cephalon_edge.toolchain.compress.prune import plan

    for name in SPECS:
        net = balanced(name)
        result, pruned = plan(net, 0.3, "l1")
        before, after = net.spec.stages, result.spec.stages
        assert result.flops_ratio == pytest.approx(0.7, abs=0.05)
        for b, a in zip(before, after):
            if b.expansion > 1 or b.block == "basic":  # (a t = 1 block has no expanded width of its own)
                assert a.mid_channels < b.mid_channels  # expanded / MLP / inner width really dropped
            if b.block == "transformer":
                assert a.heads < b.heads and a.attention_width == a.heads * a.head_width
        params = sum(p.numel() for p in pruned.parameters())
        assert params < sum(p.numel() for p in net.parameters())
        # the pruned net is what its spec describes, and runs dynamically
        res = pruned.dynamic_forward(make_inputs(pruned.spec, 8, seed=4), thresholds=0.5)
        assert res.logits.shape == (8, 5) and torch.isfinite(res.logits).all()


@pytest.mark.slow
@pytest.mark.parametrize("name", list(SPECS))
def test_pruned_blocks_keep_parity_after_export(tmp_path, name):
    from cephalon_edge.toolchain.compress.prune import plan

    _, pruned = plan(balanced(name), 0.3, "l1")
    checkpoint.save(pruned, tmp_path / "p.cephalon")
    report = export_package(tmp_path / "p.cephalon", tmp_path / "pkg", ExportSpec("onnx"))
    assert report["parity"]["passed"] and report["parity"]["decision_agreement"] == 1.0


# ---- the zoo's new models, trained briefly (once per session) -------------------------------

def zoo_checkpoint(name: str, epochs: int):
    from conftest import run_cli_in_process, shared_artifact

    def make(path):
        res = run_cli_in_process("zoo", "build", name, "-o", str(path), "--epochs", str(epochs))
        assert res.returncode == 0, res.stderr

    return shared_artifact(f"{name}-{epochs}.cephalon", make)


@pytest.mark.slow
@pytest.mark.parametrize("name, epochs, dataset, at_least", [
    ("mobilenet-exits", 2, "mnist", 0.9), ("vit-exits", 2, "mnist", 0.3), ("text-exits", 1, "keywords", 0.5)])
def test_new_zoo_models_train_on_their_data(name, epochs, dataset, at_least):
    provenance = checkpoint.read_metadata(zoo_checkpoint(name, epochs))["provenance"]
    test = provenance["metrics"]["test"]
    assert test["dataset"] == f"{dataset}:test"
    assert test["final_accuracy"] > at_least  # chance is 0.1; a short run
    assert len(provenance["training"]["history"]) == epochs


@pytest.mark.slow
@pytest.mark.parametrize("target", ["onnx", "tflite"])
def test_mobilenet_int8_with_each_targets_quantizer_judged_on_real_digits(tmp_path, target):
    """int8 through ONNX Runtime's and LiteRT's own quantizers, calibrated on the real digits;
    judged here on 500 validation digits (export's own check uses 64: at two epochs of
    training, one or two of them flip)."""
    from cephalon_edge.device.data import builtin

    ckpt = zoo_checkpoint("mobilenet-exits", 2)
    report = export_package(ckpt, tmp_path / "q", ExportSpec(target, quantize="int8", data="mnist", verify=False))
    assert report["quantization"] == "int8"
    val = builtin("mnist", "val").subset(np.arange(500))
    net = checkpoint.load(ckpt)
    ref = net.dynamic_forward(torch.from_numpy(val.inputs["image"]), thresholds=1.01).logits.argmax(-1).numpy()
    with Router.open(tmp_path / "q") as router:
        got = router.predict(val.inputs, thresholds=1.01).predicted
    assert (got == ref).mean() >= 0.97
    assert (got == val.labels).mean() >= (ref == val.labels).mean() - 0.015


@pytest.mark.slow
@pytest.mark.parametrize("name", list(SPECS))
def test_width_variants_of_the_new_blocks(tmp_path, name):
    """compress --widths narrows inverted blocks' expanded width and transformer blocks' heads
    and MLP width; the variant loads from the one checkpoint and routes."""
    from conftest import run_cli_in_process

    net = balanced(name)
    checkpoint.save(net, tmp_path / "m.cephalon")
    x = make_inputs(net.spec, 96, seed=5)
    labels = net.dynamic_forward(x, thresholds=1.01).logits.argmax(-1).numpy()
    np.savez(tmp_path / "d.npz", **{k: v.numpy() for k, v in x.items()}, labels=labels)
    res = run_cli_in_process("compress", str(tmp_path / "m.cephalon"), "--widths", "1.0,0.5", "--finetune-epochs", "1",
                             "--data", str(tmp_path / "d.npz"), "-o", str(tmp_path / "v.cephalon"))
    assert res.returncode == 0, res.stderr
    _, meta = checkpoint.load_with_metadata(tmp_path / "v.cephalon")
    width, narrow = meta["variant_models"]["w0.5"]
    assert width == 0.5
    for full, half in zip(net.spec.stages, narrow.spec.stages):
        if full.block == "transformer":
            assert half.heads < full.heads and half.mid_channels < full.mid_channels
        elif full.expansion > 1:
            assert half.mid_channels < full.mid_channels
    assert sum(p.numel() for p in narrow.parameters()) < 0.75 * sum(p.numel() for p in net.parameters())
    res = narrow.dynamic_forward(make_inputs(narrow.spec, 4, seed=6), thresholds=0.5)
    assert torch.isfinite(res.logits).all()
