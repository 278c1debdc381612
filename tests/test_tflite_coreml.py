"""TFLite and Core ML targets: conversion, quantization, LiteRT routing, spec checks."""

import json
import platform

import numpy as np
import pytest
import torch
from conftest import balanced_checkpoint, run_cli_in_process, small_digits_checkpoint, small_net
from torch import nn

from cephalon_edge.toolchain.artifacts import ExportSpec
from cephalon_edge.toolchain.compress.spec import FLOAT_BELOW_CHANNELS
from cephalon_edge.toolchain.export import export_package
from cephalon_edge.device.manifest import Manifest
from cephalon_edge.device.router import Router
from cephalon_edge.errors import ExportError


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory):
    root = tmp_path_factory.mktemp("tfl")
    ckpt = root / "tiny.cephalon"
    return balanced_checkpoint(ckpt, seed=6, balance_seed=1), ckpt, root


@pytest.fixture(scope="module")
def small_ckpt(tmp_path_factory):
    """The two-stage net, for tests of mechanics: a fraction of the tiny net's conversion time."""
    from cephalon_edge.toolchain import checkpoint

    path = tmp_path_factory.mktemp("small") / "small.cephalon"
    net = small_net()
    checkpoint.save(net, path)
    return net, path


@pytest.fixture(scope="module")
def tflite_pkg(tiny_ckpt):
    net, ckpt, root = tiny_ckpt
    report = export_package(ckpt, root / "tfl", ExportSpec("tflite", with_static=True, profile="android-arm64-cpu"))
    return net, root / "tfl", report


def test_tflite_export_is_one_multi_signature_file_with_parity(tflite_pkg):
    net, pkg, report = tflite_pkg
    assert report["parity"]["passed"] and report["parity"]["max_abs_err"] <= 1e-4
    assert report["parity"]["decision_agreement"] == 1.0 and report["parity"]["static_max_abs_err"] <= 1e-4
    manifest = Manifest.open(pkg)
    assert {s["file"] for s in manifest.data["segments"]} == {"segments.tflite"}
    assert all(s["signature"] == s["name"] for s in manifest.data["segments"])
    assert manifest.data["static"]["file"] == "static.tflite"
    from ai_edge_litert.interpreter import Interpreter
    signatures = Interpreter(model_path=str(pkg / "segments.tflite")).get_signature_list()
    assert set(signatures) == set(manifest.segments)


@pytest.mark.parametrize("thresholds", [1.01, 0.0, {"exit0": 0.3, "exit1": 0.32, "exit2": 0.35}])
def test_litert_router_matches_dynamic_forward(tflite_pkg, thresholds):
    net, pkg, _ = tflite_pkg
    x = torch.randn(24, 1, 12, 12, generator=torch.Generator().manual_seed(8))
    ref = net.dynamic_forward(x, thresholds=thresholds, tasks=["aux"])
    with Router.open(pkg) as router:
        assert router.runtime.name == "litert"
        got = router.predict({"image": x.numpy()}, tasks=["aux"], thresholds=thresholds)
    assert np.array_equal(got.exit_index, ref.exit_index.numpy())
    assert np.array_equal(got.gates, ref.gates.numpy()) and np.array_equal(got.experts, ref.experts.numpy())
    np.testing.assert_allclose(got.logits, ref.logits.numpy(), atol=1e-4)
    np.testing.assert_allclose(got.tasks["aux"], ref.tasks["aux"].numpy(), atol=1e-4)


def test_delegate_coverage_report(tflite_pkg):
    _, _, report = tflite_pkg
    rows = {r["segment"]: r for r in report["delegate_coverage"]}
    assert set(rows) >= {"adapter.image+stage0+exit0", "stage1+gate1.1", "block1.1"}
    assert all(r["delegate"] == "xnnpack" for r in rows.values())
    first = rows["adapter.image+stage0+exit0"]
    assert first["parts"] == ["adapter.image", "stage0", "exit0"]  # still spoken of in parts
    assert "CONV_2D" in rows["block1.1"]["supported_ops"] and not rows["block1.1"]["unsupported_ops"]
    # the exit's max-softmax reduction is not in XNNPACK's documented list: it falls back to the CPU
    assert "CONV_2D" in first["supported_ops"] and "REDUCE_MAX" in first["unsupported_ops"]


def test_nnapi_profile_warns_about_deprecation(small_digits, tmp_path):
    # the two-segment digits model: what is checked is the note and the coverage's delegate
    res = run_cli_in_process("export", str(small_digits), "--target", "tflite", "--profile", "galaxy-s23", "-o", str(tmp_path / "p"),
                             "--no-verify", "--json", str(tmp_path / "r.json"))
    assert res.returncode == 0, res.stderr
    assert "deprecated from Android 15" in res.stdout
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["delegate_coverage"][0]["delegate"] == "nnapi"


class OneHotHead(nn.Module):
    """An exit head whose one_hot lowers to an assertion litert-torch cannot convert."""

    def __init__(self, head):
        super().__init__()
        self.head = head

    def forward(self, x):
        logits = self.head(x)
        return logits * nn.functional.one_hot(logits.argmax(-1), logits.shape[-1]).float(), logits.amax(-1)


def test_converter_failure_names_segment_and_op(small_ckpt, tmp_path, monkeypatch):
    _, ckpt = small_ckpt
    import cephalon_edge.toolchain.segments as segments_mod  # export imports it when it runs
    real = segments_mod.build_segments

    def broken(net, fuse=True):
        segs = real(net, fuse=fuse)
        segs.segments["exit0"].module = OneHotHead(segs.segments["exit0"].module.head)
        return segs

    monkeypatch.setattr(segments_mod, "build_segments", broken)
    with pytest.raises(ExportError) as err:
        export_package(ckpt, tmp_path / "pkg", ExportSpec("tflite", fuse=False))
    assert "segment exit0" in err.value.message and "aten._assert_async" in err.value.message
    assert err.value.exit_code == 1
    assert list(tmp_path.iterdir()) == []  # no half-written package


@pytest.fixture(scope="module")
def small_digits(tmp_path_factory):
    return small_digits_checkpoint(tmp_path_factory.mktemp("digits") / "small.cephalon")


@pytest.fixture(scope="module")
def fp32_size(small_digits, tmp_path_factory):
    return export_package(small_digits, tmp_path_factory.mktemp("fp32") / "p", ExportSpec("tflite", verify=False))["size_bytes"]


def _convolutions(path) -> list[tuple[int, str, str]]:
    """(input channels, weight type, the op that feeds the convolution's padded input) of every
    convolution in a .tflite file."""
    from ai_edge_litert import schema_py_generated as schema
    from ai_edge_litert.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model(str(path))
    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    types = {v: k for k, v in vars(schema.TensorType).items() if not k.startswith("_")}

    def kind(op):
        code = model.operatorCodes[op.opcodeIndex]
        return names[max(code.builtinCode, code.deprecatedBuiltinCode)]

    found = []
    for graph in model.subgraphs:
        producer = {t: op for op in graph.operators for t in op.outputs}
        for op in graph.operators:
            if kind(op) in ("CONV_2D", "DEPTHWISE_CONV_2D"):
                feed = producer.get(op.inputs[0])
                while feed is not None and kind(feed) == "PAD":
                    feed = producer.get(feed.inputs[0])
                found.append((graph.tensors[op.inputs[0]].shape[-1], types[graph.tensors[op.inputs[1]].type],
                              kind(feed) if feed is not None else "input"))
    return found


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["int8", "int8-dynamic", "fp16"])
def test_quantized_tflite(small_digits, fp32_size, tmp_path, mode):
    report = export_package(small_digits, tmp_path / mode, ExportSpec("tflite", quantize=mode, with_static=True))
    parity = report["parity"]
    assert parity["passed"] and parity["quantization"] == mode
    assert parity["val_top1_agreement"] >= 0.98
    if mode != "fp16":
        assert report["size_bytes"] < 0.5 * fp32_size
    if mode == "int8":  # narrow convolutions (the one-channel stem) stay float32, from the input on
        convolutions = _convolutions(tmp_path / mode / "segments.tflite")
        narrow = [(weights, fed_by) for channels, weights, fed_by in convolutions if channels < FLOAT_BELOW_CHANNELS]
        assert narrow and all(weights == "FLOAT32" and fed_by != "DEQUANTIZE" for weights, fed_by in narrow)
        assert all(weights == "INT8" for channels, weights, _ in convolutions if channels >= FLOAT_BELOW_CHANNELS)
    with Router.open(tmp_path / mode) as router:  # int8 tensors are converted at the boundary
        from cephalon_edge.device.data import builtin
        val = builtin("digits", "val")
        pred = router.predict({"image": val.inputs["image"][:50]}, thresholds=1.01)
        assert pred.logits.dtype == np.float32 and (pred.predicted == val.labels[:50]).mean() > 0.8


@pytest.mark.parametrize("profile, files", [(None, 13), ("iphone-15-pro", 1)])  # 13 fused segments
def test_coreml_spec_checks(tiny_ckpt, tmp_path, profile, files):
    _, ckpt, _ = tiny_ckpt
    out = tmp_path / "cml"
    report = export_package(ckpt, out, ExportSpec("coreml", profile=profile, with_static=profile is None))
    manifest = Manifest.open(out)  # sha256 of .mlpackage directories verified
    assert manifest.data["quantization"] == "fp16"
    assert len({s["file"] for s in manifest.data["segments"]}) == files
    if platform.system() != "Darwin":
        assert report["verification"]["kind"] == "spec"
        assert report["verification"]["segments_checked"] == len(manifest.segments)
    if profile:
        from cephalon_edge.toolchain.artifacts import identifier
        assert all(s["signature"] == identifier(s["name"]) for s in manifest.data["segments"])
        assert identifier("stage1+gate1.1") == "stage1_gate1_1"
        assert report["verification"]["spec_version"] >= 9  # iOS 18 multifunction


def test_coreml_tampered_and_int8(small_ckpt, tmp_path):
    _, ckpt = small_ckpt
    out = tmp_path / "cml"
    export_package(ckpt, out, ExportSpec("coreml", quantize="int8"))
    weights = next((out / "stage1+head.class.mlpackage").rglob("weight.bin"))
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    from cephalon_edge.errors import PackageError
    with pytest.raises(PackageError, match="stage1\\+head.class.mlpackage does not match its sha256"):
        Manifest.open(out)


@pytest.mark.skipif(platform.system() == "Darwin", reason="checks the Linux error path")
def test_coreml_run_off_macos_is_a_clear_error(small_ckpt, tmp_path):
    _, ckpt = small_ckpt
    export_package(ckpt, tmp_path / "cml", ExportSpec("coreml", verify=False))
    x = tmp_path / "x.npy"
    np.save(x, np.zeros((1, 12, 12), np.float32))
    res = run_cli_in_process("run", str(tmp_path / "cml"), str(x))
    assert res.returncode == 2 and "Core ML predictions need macOS" in res.stderr
    assert "hint: on Linux run the onnx or tflite target" in res.stderr


@pytest.mark.skipif(platform.system() != "Darwin", reason="Core ML predictions need macOS (coremltools cannot run models on Linux)")
def test_coreml_predictions_match_dynamic_forward(tiny_ckpt, tmp_path):
    net, ckpt, _ = tiny_ckpt
    export_package(ckpt, tmp_path / "cml", ExportSpec("coreml", quantize="none"))
    x = torch.randn(8, 1, 12, 12)
    ref = net.dynamic_forward(x, thresholds=1.01)
    with Router.open(tmp_path / "cml") as router:
        got = router.predict({"image": x.numpy()}, thresholds=1.01)
    assert np.array_equal(got.exit_index, ref.exit_index.numpy())
    np.testing.assert_allclose(got.logits, ref.logits.numpy(), atol=1e-3)


def test_profile_asks_for_one_tflite_per_segment(small_ckpt, tmp_path):
    net, ckpt = small_ckpt
    # unfused here (the multi-signature fixture above is fused): parity holds either way
    report = export_package(ckpt, tmp_path / "pi", ExportSpec("tflite", profile="raspberry-pi-5", fuse=False))
    assert report["parity"]["passed"] and report["parity"]["decision_agreement"] == 1.0
    manifest = Manifest.open(tmp_path / "pi")
    files = [s["file"] for s in manifest.data["segments"]]
    assert files == [f"{name}.tflite" for name in manifest.segments] and len(set(files)) == len(files)
    assert len(files) == 5 and manifest.data["fused"] is False  # adapter, stage0, exit0, stage1, head


def test_coreml_palettization(small_ckpt, tmp_path):
    _, ckpt = small_ckpt
    report = export_package(ckpt, tmp_path / "pal", ExportSpec("coreml", quantize="palettize"))
    assert report["quantization"] == "palettize"
    if platform.system() != "Darwin":
        assert report["verification"]["segments_checked"] == len(report["segments"])
    with pytest.raises(Exception, match="does not support --quantize palettize"):
        export_package(ckpt, tmp_path / "x", ExportSpec("tflite", quantize="palettize"))
