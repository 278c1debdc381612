"""Inverted and transformer blocks, plain, gated and as experts, in 1-D and 2-D, through every
target with fp32 parity, fused and unfused."""

import platform

import numpy as np
import pytest
from arch_models import SPECS, balanced, make_inputs

from cephalon_edge.device.router import Router
from cephalon_edge.toolchain import checkpoint
from cephalon_edge.toolchain.artifacts import ExportSpec
from cephalon_edge.toolchain.export import export_package

@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("arch")
    out = {}
    for name in SPECS:
        net = balanced(name)
        checkpoint.save(net, root / f"{name}.cephalon")
        out[name] = (net, root / f"{name}.cephalon")
    return out


def test_balanced_nets_use_every_gate_and_expert(checkpoints):
    for net, _ in checkpoints.values():
        res = net.dynamic_forward(make_inputs(net.spec, 64, seed=2), thresholds=1.01)
        assert ((res.gates == 1).any(0) & (res.gates == 0).any(0)).all()
        assert all(len(set(col.tolist())) > 1 for col in res.experts.T)


EXPORTS = [("mobile", "onnx", True), ("mobile", "tflite", False), ("mobile", "executorch", True),
           ("mobile", "coreml", True), ("tokens", "onnx", True), ("tokens", "onnx", False),
           ("tokens", "tflite", True), ("tokens", "executorch", True), ("tokens", "coreml", True)]


@pytest.mark.slow
@pytest.mark.parametrize("name, target, fuse", EXPORTS)
def test_new_blocks_export_with_fp32_parity(checkpoints, tmp_path, name, target, fuse):
    net, ckpt = checkpoints[name]
    report = export_package(ckpt, tmp_path / "pkg", ExportSpec(target, quantize="none", fuse=fuse))
    if target == "coreml" and platform.system() != "Darwin":  # converted and checked at spec level
        assert report["verification"]["kind"] == "spec"
        assert report["verification"]["segments_checked"] == len(report["segments"])
        return
    parity = report["parity"]
    assert parity["passed"] and parity["decision_agreement"] == 1.0 and parity["max_abs_err"] <= 1e-4
    if name == "tokens" and target == "onnx" and fuse:  # every modality subset routes as PyTorch does
        with Router.open(tmp_path / "pkg") as router:
            inputs = make_inputs(net.spec, 24, seed=3)
            for mix in (["image"], ["text"], ["image", "text"]):
                sub = {m: inputs[m] for m in mix}
                ref = net.dynamic_forward(sub, thresholds=0.6)
                got = router.predict({m: v.numpy() for m, v in sub.items()}, thresholds=0.6)
                assert np.array_equal(got.exit_index, ref.exit_index.numpy()), mix
                assert np.array_equal(got.gates, ref.gates.numpy()) and np.array_equal(got.experts, ref.experts.numpy())
                np.testing.assert_allclose(got.logits, ref.logits.numpy(), atol=1e-4)
