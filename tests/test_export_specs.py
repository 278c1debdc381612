"""Export works for any spec the format can describe, and for the zoo architectures."""

import pytest
import torch
from conftest import make_net

from cephalon_edge.toolchain import checkpoint
from cephalon_edge.toolchain.artifacts import ExportSpec
from cephalon_edge.toolchain.export import export_package
from cephalon_edge.toolchain.model import CephalonNet
from cephalon_edge.toolchain.zoo import (
    digits_exits_spec,
    mnist1d_moe_spec,
    resnet50_exits_spec,
)


@pytest.mark.parametrize("fuse", [True, False])
def test_invented_one_dimensional_spec(tmp_path, fuse):
    net = make_net(
        seed=4,
        modalities=[{"name": "signal", "kind": "signal", "shape": [3, 32],
                     "adapter": {"kind": "projection", "channels": 6}}],
        stages=[
            {"channels": 6, "blocks": 2, "skip_blocks": 1, "experts": 2, "exit": True},
            {"channels": 10, "blocks": 1, "stride": 2, "block": "bottleneck", "inner_channels": 4,
             "skip_blocks": 1},
        ],
        tasks=[{"name": "class", "outputs": 3}], labels=[], exit_channels=5)
    with torch.no_grad():
        for gate in [net.stages[0].skip_gates[0], net.stages[1].skip_gates[0]]:
            gate.fc.bias.zero_()
        net.stages[0].moe_gate.fc.weight.normal_(0, 3)
    ckpt = tmp_path / "sig.cephalon"
    checkpoint.save(net, ckpt)
    report = export_package(ckpt, tmp_path / "pkg", ExportSpec("onnx", with_static=fuse, fuse=fuse))
    assert report["parity"]["passed"] and report["parity"]["decision_agreement"] == 1.0
    names = [s["name"] for s in report["segments"]]
    if fuse:  # a gate, a mixture and an exit in other places: chains end at each decision
        assert names == ["adapter.signal+stage0+gate0.2", "block0.2", "moe0.gate", "moe0.expert0", "moe0.expert1",
                         "exit0", "stage1+gate1.1", "block1.1", "head.class"]
    else:
        assert names == ["adapter.signal", "stage0", "gate0.2", "block0.2", "moe0.gate", "moe0.expert0",
                         "moe0.expert1", "exit0", "stage1", "gate1.1", "block1.1", "head.class"]


@pytest.mark.slow
@pytest.mark.parametrize("build_spec", [digits_exits_spec, mnist1d_moe_spec])
def test_zoo_architectures_export(tmp_path, build_spec):
    torch.manual_seed(0)
    net = CephalonNet(build_spec()).eval()
    ckpt = tmp_path / "m.cephalon"
    checkpoint.save(net, ckpt, {"dataset": "digits" if "digits" in net.spec.name else "mnist1d"})
    report = export_package(ckpt, tmp_path / "pkg", ExportSpec("onnx"))
    assert report["parity"]["passed"] and report["parity"]["samples"] >= 4 * 64


@pytest.mark.slow
def test_resnet50_exits_exports(tmp_path):
    torch.manual_seed(0)
    net = CephalonNet(resnet50_exits_spec()).eval()
    ckpt = tmp_path / "r50.cephalon"
    checkpoint.save(net, ckpt)
    report = export_package(ckpt, tmp_path / "pkg", ExportSpec("onnx", with_static=True))
    assert report["parity"]["passed"]
    assert report["exits"][-1]["cumulative_flops"] > 8e9
