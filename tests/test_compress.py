"""compress: structured pruning keeps every dynamic part working; recipes round-trip."""

import json
import platform

import numpy as np
import pytest
import torch
from conftest import balance_gates, make_net, run_cli_in_process, small_digits_checkpoint

from cephalon_edge.toolchain import checkpoint
from cephalon_edge.toolchain.artifacts import ExportSpec
from cephalon_edge.toolchain.compress.spec import FLOAT_BELOW_CHANNELS
from cephalon_edge.toolchain.compress.prune import full_path_flops, plan
from cephalon_edge.toolchain.export import export_package
from cephalon_edge.device.manifest import Manifest
from cephalon_edge.errors import UsageError


def _conv_activations(path) -> list[tuple[int, str]]:
    """(input channels, the type its input is quantized to, or "float") of every Conv of an
    ONNX file in QDQ form."""
    import onnx

    model = onnx.load(str(path))
    initializers = {i.name: i for i in model.graph.initializer}
    producer = {o: node for node in model.graph.node for o in node.output}

    def through_dequantize(name):  # the quantized tensor behind a DequantizeLinear, if any
        node = producer.get(name)
        return node.input if node is not None and node.op_type == "DequantizeLinear" else None

    found = []
    for node in (n for n in model.graph.node if n.op_type == "Conv"):
        weight = (through_dequantize(node.input[1]) or [node.input[1]])[0]
        groups = next((a.i for a in node.attribute if a.name == "group"), 1)
        activation = through_dequantize(node.input[0])
        if activation is None:
            kind = "float"
        else:  # the QuantizeLinear before it; its zero point's type is the activations' type
            zero = producer[activation[0]].input[2]
            kind = onnx.helper.tensor_dtype_to_np_dtype(initializers[zero].data_type).name
        found.append((initializers[weight].dims[1] * groups, kind))
    return found


def _stem_name(net) -> str:
    """The module name of the net's only convolution with one input channel."""
    (name,) = [n for n, m in net.named_modules() if isinstance(m, torch.nn.Conv2d) and m.in_channels == 1]
    return name


def test_simulated_int8_leaves_narrow_convolutions_float():
    """compress's fake-quantized estimate follows the exports: the one-channel stem stays float."""
    from cephalon_edge.toolchain.compress.quantize import simulate

    net = make_net(seed=3)
    x = torch.randn(16, 1, 12, 12, generator=torch.Generator().manual_seed(0))
    sim = simulate(net, "int8", {"image": x})
    pairs = [(a, b) for a, b in zip(net.modules(), sim.modules()) if isinstance(a, torch.nn.Conv2d)]
    narrow = [(a, b) for a, b in pairs if a.in_channels < FLOAT_BELOW_CHANNELS]
    assert narrow and all(torch.equal(a.weight, b.weight) for a, b in narrow)
    assert all(not torch.equal(a.weight, b.weight) for a, b in pairs if a.in_channels >= FLOAT_BELOW_CHANNELS)


def test_int8_activations_follow_the_profiles_cpu():
    """uint8 activations for x86-64 devices (ONNX Runtime's kernels there multiply uint8 by
    int8), int8 for ARM; without a profile, this machine decides."""
    from converters.onnx import _x86

    assert _x86(ExportSpec("onnx", profile_settings={"abi": "x86_64"}))
    assert not _x86(ExportSpec("onnx", profile_settings={"abi": "arm64-v8a"}))
    assert _x86(ExportSpec("onnx")) == (platform.machine().lower() in ("x86_64", "amd64"))


@pytest.mark.parametrize("criterion", ["l1", "l2"])
def test_pruning_hits_the_flops_target_and_keeps_dynamics(criterion, tmp_path):
    net = make_net(seed=3)
    x = torch.randn(32, 1, 12, 12, generator=torch.Generator().manual_seed(0))
    balance_gates(net, x)
    pruned_plan, pruned = plan(net, 0.5, criterion)
    assert abs(pruned_plan.flops_ratio - 0.5) <= 0.05  # within 10% of the asked reduction
    assert full_path_flops(pruned) == pruned_plan.flops_after
    assert pruned.spec.stages[2].experts == 3 and len(pruned.spec.gate_names) == 2
    assert sum(s.channels for s in pruned.spec.stages) < sum(s.channels for s in net.spec.stages)
    # the reference semantics still hold on the pruned model
    full = pruned.dynamic_forward(x, thresholds=1.01, tasks=["aux"])
    torch.testing.assert_close(full.logits, pruned(x).exit_logits[-1], atol=1e-5, rtol=1e-5)
    assert full.tasks["aux"].shape == (32, 2) and (full.experts[:, 0] >= 0).all() and (full.gates >= 0).all()
    assert pruned.dynamic_forward(x, thresholds=0.0).exit_index.tolist() == [0] * 32
    one = pruned.dynamic_forward(x[3:4], thresholds=1.01)
    assert torch.equal(one.gates[0], full.gates[3]) and torch.equal(one.experts[0], full.experts[3])
    # the checkpoint carries the new widths and loads without the original
    path = tmp_path / "pruned.cephalon"
    checkpoint.save(pruned, path)
    del net
    loaded = checkpoint.load(path)
    assert loaded.spec == pruned.spec
    torch.testing.assert_close(loaded(x).exit_logits[-1], pruned(x).exit_logits[-1])


def test_bad_prune_ratios():
    net = make_net()
    for ratio in (0.0, 1.0, -0.2, 1.5):
        with pytest.raises(UsageError, match=r"in \(0, 1\)"):
            plan(net, ratio, "l1")
    with pytest.raises(UsageError, match="cannot reach 100% fewer FLOPs by pruning channels"):
        plan(net, 0.999, "l1")


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    return small_digits_checkpoint(tmp_path_factory.mktemp("cmp") / "small.cephalon")


def test_compress_command_report_and_recipe(digits, tmp_path):
    out, report_file = tmp_path / "c.cephalon", tmp_path / "c.json"
    res = run_cli_in_process("compress", str(digits), "-o", str(out), "--prune", "0.4", "--finetune-epochs", "4",
                             "--quantize", "int8", "--calib-samples", "32", "--json", str(report_file))
    assert res.returncode == 0, res.stderr
    assert "pruning plan" in res.stdout
    report = json.loads(report_file.read_text())
    assert report["schema"] == "cephalon-edge/compress/1"
    for side in ("before", "after"):
        assert {"flops", "params", "size_bytes", "exit_accuracy", "final_accuracy"} <= set(report[side])
    assert report["after"]["flops"] / report["before"]["flops"] == pytest.approx(0.6, abs=0.06)
    assert report["after"]["params"] < report["before"]["params"]
    assert report["after"]["final_accuracy"] > 0.8
    assert report["after"]["quantized"]["mode"] == "int8" and report["after"]["quantized"]["final_accuracy"] > 0.8
    # the recipe and its calibration samples round-trip through the checkpoint
    net, meta = checkpoint.load_with_metadata(out)
    assert meta["quantization"]["mode"] == "int8" and meta["quantization"]["calib_samples"] == 32
    assert meta["calibration_samples"]["image"].shape == (32, 1, 32, 32)
    # and export realises it unless --quantize overrides; how closely int8 follows fp32 depends
    # on the CPU's int8 kernels (VNNI or not), so it is judged here on real digits with a margin
    exported = export_package(out, tmp_path / "pkg", ExportSpec("onnx", verify=False))
    assert exported["quantization"] == "int8"
    manifest = Manifest.open(tmp_path / "pkg")
    assert manifest.data["quantization"] == "int8"
    # the one-channel stem stays float; the other convolutions take uint8 activations on x86-64
    # (what its int8 kernels multiply), int8 ones elsewhere
    assert [n for n in exported["notes"] if n.startswith("int8 kept 1 convolution(s)")] == [
        f"int8 kept 1 convolution(s) with fewer than {FLOAT_BELOW_CHANNELS} input channels in float32, "
        f"where the runtime's int8 kernels are slower: {_stem_name(net)}"]
    convolutions = _conv_activations(manifest.file_of(next(iter(manifest.segments))))
    assert {kind for channels, kind in convolutions if channels < FLOAT_BELOW_CHANNELS} == {"float"}
    assert {kind for channels, kind in convolutions if channels >= FLOAT_BELOW_CHANNELS} == \
        {"uint8" if platform.machine().lower() in ("x86_64", "amd64") else "int8"}
    from cephalon_edge.device.data import builtin
    from cephalon_edge.device.router import Router

    val = builtin("digits", "val")
    with Router.open(tmp_path / "pkg") as router:
        got = router.predict(val.inputs, thresholds=1.01).predicted
    ref = net.dynamic_forward(torch.from_numpy(val.inputs["image"]), thresholds=1.01).logits.argmax(-1).numpy()
    assert (got == ref).mean() >= 0.95
    plain = export_package(out, tmp_path / "plain", ExportSpec("onnx", quantize="none", verify=False))
    assert plain["quantization"] == "none"
    with pytest.raises(UsageError, match="int8 recipe has no coreml|does not support"):
        export_package(out, tmp_path / "cml", ExportSpec("coreml", quantize="int8-dynamic"))


def test_compress_rejects_bad_input(digits, tmp_path):
    bad = tmp_path / "bad.npz"
    np.savez(bad, signal=np.zeros((4, 1, 40), np.float32), labels=np.zeros(4, np.int64))
    cases = [(["--prune", "0"], "in (0, 1)"), (["--prune", "1"], "in (0, 1)"),
             (["--prune", "0.5", "--data", str(bad)], "modality 'signal' is not an input"),
             (["--quantize", "int3"], "unknown --quantize"), ([], "nothing to do"),
             (["--prune", "0.5", "--prune-criterion", "vibes"], "unknown --prune-criterion")]
    for args, message in cases:
        res = run_cli_in_process("compress", str(digits), "-o", str(tmp_path / "o.cephalon"), *args)
        assert res.returncode == 2 and message in res.stderr, (args, res.stderr)
        assert not (tmp_path / "o.cephalon").exists()


def test_task_targets_are_fine_tuned_and_reported(tmp_path):
    """`target_<task>` arrays of an .npz train the extra heads during fine-tuning, and the
    report gives each task's metric before and after (MSE for regression)."""
    from conftest import labelled_npz, run_cli_in_process

    net = make_net(seed=2)
    checkpoint.save(net, tmp_path / "m.cephalon")
    labelled_npz(net, tmp_path / "d.npz", 128, seed=1)
    with np.load(tmp_path / "d.npz") as f:
        arrays = dict(f)
    aux = np.tile(np.asarray([[1.5, -1.0]], np.float32), (128, 1))  # a target the untrained head misses
    np.savez(tmp_path / "with.npz", **arrays, target_aux=aux)

    def compress(data: str, name: str) -> dict:
        res = run_cli_in_process("compress", str(tmp_path / "m.cephalon"), "-o", str(tmp_path / f"{name}.cephalon"), "--data",
                                 str(tmp_path / data), "--finetune-epochs", "15", "--json", str(tmp_path / f"{name}.json"))
        assert res.returncode == 0, res.stderr
        return {"stdout": res.stdout, **json.loads(tmp_path.joinpath(f"{name}.json").read_text())}

    report = compress("with.npz", "with")
    before, after = report["before"]["tasks"]["aux"]["mse"], report["after"]["tasks"]["aux"]["mse"]
    assert "aux MSE" in report["stdout"]
    # the same fine-tuning without the targets leaves the head where it was: the targets trained it
    assert compress("d.npz", "without")["after"]["tasks"] == {}
    net_without = checkpoint.load(tmp_path / "without.cephalon")
    x = torch.from_numpy(arrays["image"])
    with torch.no_grad():
        control = float(((net_without(x).tasks["aux"] - torch.from_numpy(aux)) ** 2).mean())
    assert after < before and after < control, (before, after, control)
