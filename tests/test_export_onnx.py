"""ONNX export end to end: segments, manifest, parity, router decisions, atomic replacement."""

import json
import os

import numpy as np
import pytest
import torch
from conftest import balanced_checkpoint, run_cli_in_process

from cephalon_edge.toolchain.artifacts import ExportSpec
from cephalon_edge.toolchain.export import export_package
from cephalon_edge.device.manifest import Manifest
from cephalon_edge.device.router import Router
from cephalon_edge.errors import ExportError, PackageError, UsageError


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny net whose gates and experts split batches, exported once with its static model."""
    root = tmp_path_factory.mktemp("tiny")
    ckpt = root / "tiny.cephalon"
    net = balanced_checkpoint(ckpt, seed=1, balance_seed=5, provenance={"creator": "test"})
    pkg = root / "pkg"
    report = export_package(ckpt, pkg, ExportSpec("onnx", with_static=True))
    return net, ckpt, pkg, report


@pytest.fixture(scope="module")
def unfused(tiny):
    """The same checkpoint exported one segment per part (``--no-fuse``)."""
    net, ckpt, pkg, _ = tiny
    report = export_package(ckpt, pkg.parent / "unfused", ExportSpec("onnx", fuse=False))
    return net, ckpt, pkg.parent / "unfused", report


def test_export_report_and_parity(tiny):
    net, _, pkg, report = tiny
    parity = report["parity"]
    assert parity["passed"] and parity["max_abs_err"] <= 1e-4 and parity["decision_agreement"] == 1.0
    assert parity["samples"] >= 64 and parity["static_max_abs_err"] <= 1e-4
    names = [s["name"] for s in report["segments"]]
    # fused: what always runs together is one call, up to the next decision
    assert names[:2] == ["adapter.image+stage0+exit0", "stage1+gate1.1"]
    assert {"block1.1", "gate1.2", "block1.2", "exit1", "stage2+moe2.gate", "moe2.expert0", "moe2.expert1", "moe2.expert2", "exit2",
            "stage3+head.class", "head.aux"} == set(names[2:])
    for s in report["segments"]:
        assert (pkg / s["file"]).stat().st_size == s["size_bytes"] and s["max_abs_err"] <= 1e-4
    manifest = json.loads((pkg / "manifest.json").read_text())
    assert manifest["format"] == "cephalon-edge/2" and manifest["target"] == "onnx"
    assert manifest["fused"] is True
    first = manifest["segments"][0]
    assert first["outputs"] == ["y", "logits", "score"]
    assert [(p["name"], p["kind"], p["outputs"]) for p in first["parts"]] == [
        ("adapter.image", "adapter", []), ("stage0", "stage", [0]), ("exit0", "exit", [1, 2])]
    assert sum(p["flops"] for p in first["parts"]) == first["flops"]
    assert manifest["exit_policy"]["thresholds"] == {"exit0": 0.9, "exit1": 0.9, "exit2": 0.9}
    import onnx
    model = onnx.load(str(pkg / "stage1+gate1.1.onnx"))
    assert model.opset_import[0].version >= 18
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param  # dynamic batch
    # the baseline is the plain network: every task head, no exit head
    assert manifest["static"]["file"] == "static.onnx" and manifest["static"]["outputs"] == ["class", "aux"]
    assert [o.name for o in onnx.load(str(pkg / "static.onnx")).graph.output] == ["class", "aux"]


def test_unfused_export_has_a_segment_per_part(tiny, unfused):
    _, _, _, fused_report = tiny
    _, _, pkg, report = unfused
    assert report["parity"]["passed"] and report["parity"]["decision_agreement"] == 1.0
    names = [s["name"] for s in report["segments"]]
    assert names[:4] == ["adapter.image", "stage0", "exit0", "stage1"] and len(names) == 18
    manifest = json.loads((pkg / "manifest.json").read_text())
    assert manifest["fused"] is False and all(len(s["parts"]) == 1 for s in manifest["segments"])
    # the same parts, the same program, the same FLOPs: fusion changes only what is called
    assert manifest["program"] == json.loads((tiny[2] / "manifest.json").read_text())["program"]
    assert sum(s["flops"] for s in report["segments"]) == sum(s["flops"] for s in fused_report["segments"])


@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("thresholds", [0.0, 1.01, 0.5, {"exit0": 0.3, "exit1": 0.35, "exit2": 0.4}])
def test_router_matches_dynamic_forward(tiny, unfused, thresholds, fused):
    net, _, pkg, _ = tiny if fused else unfused
    x = torch.randn(48, 1, 12, 12, generator=torch.Generator().manual_seed(11))
    ref = net.dynamic_forward(x, thresholds=thresholds, tasks=["aux"])
    with Router.open(pkg) as router:
        got = router.predict({"image": x.numpy()}, tasks=["aux"], thresholds=thresholds)
    assert np.array_equal(got.exit_index, ref.exit_index.numpy())
    assert np.array_equal(got.gates, ref.gates.numpy())
    assert np.array_equal(got.experts, ref.experts.numpy())
    np.testing.assert_allclose(got.logits, ref.logits.numpy(), atol=1e-4)
    np.testing.assert_allclose(got.tasks["aux"], ref.tasks["aux"].numpy(), atol=1e-4)  # NaN where exited
    assert (got.latency_us > 0).all()


def test_batch_is_split_per_sample(tiny):
    net, _, pkg, _ = tiny
    x = torch.randn(40, 1, 12, 12, generator=torch.Generator().manual_seed(3))
    with Router.open(pkg) as router:
        got = router.predict({"image": x.numpy()}, thresholds=1.01)
        assert 0 < got.gates[:, 0].sum() < 40 and len(np.unique(got.experts[:, 0])) > 1
        for i in (0, 7, 23):
            one = router.predict({"image": x[i].numpy()}, thresholds=1.01)  # no batch dimension
            assert one.gates[0].tolist() == got.gates[i].tolist()
            assert one.experts[0].tolist() == got.experts[i].tolist()
            np.testing.assert_allclose(one.logits[0], got.logits[i], atol=1e-5)
        # a gated block that did not run costs the sample nothing
        skipped = got.gates[:, 0] == 0
        without_block = sum(us for name, us in got.segment_us.items() if name != "block1.1")
        assert (got.latency_us[skipped] <= without_block + 1e-6).all()
        assert got.latency_us.max() <= sum(got.segment_us.values()) + 1e-6


def test_router_is_torch_free(tiny):
    _, _, pkg, _ = tiny
    import subprocess
    import sys
    code = f"""
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('torch', 'tensorflow'):
            raise ImportError('no ' + name + ' on this device')
sys.meta_path.insert(0, Block())
import numpy as np
from cephalon_edge.device.router import Router
r = Router.open({str(pkg)!r}, runtime='onnxruntime')
p = r.predict({{'image': np.zeros((2, 1, 12, 12), np.float32)}})
assert 'torch' not in sys.modules
print(p.exits, p.predicted.tolist())
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "final" in out.stdout or "exit" in out.stdout


def test_bad_packages_and_inputs_exit_2(tiny, tmp_path):
    _, _, pkg, _ = tiny
    import shutil
    good = tmp_path / "x.npy"
    np.save(good, np.zeros((1, 12, 12), np.float32))

    tampered = tmp_path / "tampered"
    shutil.copytree(pkg, tampered)
    data = bytearray((tampered / "stage1+gate1.1.onnx").read_bytes())
    data[-10] ^= 0xFF
    (tampered / "stage1+gate1.1.onnx").write_bytes(bytes(data))
    res = run_cli_in_process("run", str(tampered), str(good))
    assert res.returncode == 2 and "stage1+gate1.1.onnx does not match its sha256" in res.stderr

    escaping = tmp_path / "escaping"
    shutil.copytree(pkg, escaping)
    manifest = json.loads((escaping / "manifest.json").read_text())
    manifest["segments"][1]["file"] = "../x.onnx"
    (escaping / "manifest.json").write_text(json.dumps(manifest))
    res = run_cli_in_process("run", str(escaping), str(good))
    assert res.returncode == 2 and "'../x.onnx' is not a plain file name" in res.stderr

    reordered = tmp_path / "reordered"  # a fused segment's parts must be a chain of the program
    shutil.copytree(pkg, reordered)
    manifest = json.loads((reordered / "manifest.json").read_text())
    manifest["segments"][0]["parts"].reverse()
    (reordered / "manifest.json").write_text(json.dumps(manifest))
    res = run_cli_in_process("run", str(reordered), str(good))
    assert res.returncode == 2 and "segments[adapter.image+stage0+exit0].parts" in res.stderr, res.stderr
    manifest["segments"][0]["parts"].reverse()
    manifest["segments"][0]["parts"][1]["outputs"] = []  # stage0's representation handed to no one
    (reordered / "manifest.json").write_text(json.dumps(manifest))
    res = run_cli_in_process("run", str(reordered), str(good))
    assert res.returncode == 2 and "parts[1].outputs: must pick at least one output" in res.stderr, res.stderr

    cases = {
        "shape": (np.zeros((2, 1, 10, 12), np.float32), "shape [2, 1, 10, 12]"),
        "dtype": (np.zeros((1, 12, 12), np.int32), "dtype int32"),
    }
    for name, (arr, message) in cases.items():
        f = tmp_path / f"{name}.npy"
        np.save(f, arr)
        res = run_cli_in_process("run", str(pkg), str(f))
        assert res.returncode == 2 and message in res.stderr, (name, res.stderr)
        assert "Traceback" not in res.stderr
    res = run_cli_in_process("run", str(pkg), str(good), "--modality", "audio")
    assert res.returncode == 2 and "unknown modality 'audio'" in res.stderr
    with pytest.raises(Exception, match="unknown modality 'audio'"):
        Router.open(pkg).predict({"audio": np.zeros((1, 12, 12), np.float32)})


def test_failed_export_keeps_previous_package(tiny, tmp_path, monkeypatch):
    _, ckpt, pkg, _ = tiny
    import shutil
    target = tmp_path / "pkg"
    shutil.copytree(pkg, target)
    before = {p.name: p.read_bytes() for p in target.iterdir()}

    res = run_cli_in_process("export", str(ckpt), "--target", "onnx", "-o", str(target))
    assert res.returncode == 2 and "already exists" in res.stderr and "--force" in res.stderr

    from cephalon_edge.toolchain.converters import onnx as onnx_converter
    real = onnx_converter._export
    calls = []

    def flaky(module, example, path, outputs, opset):
        calls.append(path.name)
        if len(calls) == 4:
            path.write_bytes(b"half a file")
            raise RuntimeError("simulated converter crash")
        return real(module, example, path, outputs, opset)

    monkeypatch.setattr(onnx_converter, "_export", flaky)
    with pytest.raises(ExportError, match="simulated converter crash"):
        export_package(ckpt, target, ExportSpec("onnx", force=True))
    assert {p.name: p.read_bytes() for p in target.iterdir()} == before
    assert sorted(os.listdir(tmp_path)) == ["pkg"]  # no stray temporary directory
    Manifest.open(target)  # still a valid, verified package


def test_export_validates_before_work(tmp_path, tiny):
    _, ckpt, _, _ = tiny
    with pytest.raises(UsageError, match="unknown target 'tflight'"):
        export_package(ckpt, tmp_path / "a", ExportSpec("tflight"))
    with pytest.raises(UsageError, match="does not support --quantize fp16"):
        export_package(ckpt, tmp_path / "a", ExportSpec("onnx", quantize="fp16"))
    res = run_cli_in_process("export", str(tmp_path / "missing.cephalon"), "--target", "onnx", "-o", str(tmp_path / "b"))
    assert res.returncode == 2 and "checkpoint not found" in res.stderr
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_run_image_file_matches_router(tiny, tmp_path):
    _, _, pkg, _ = tiny
    from PIL import Image

    from cephalon_edge.device.preprocess import load_image
    img = (np.random.default_rng(0).random((8, 8)) * 255).astype(np.uint8)
    png = tmp_path / "digit.png"
    Image.fromarray(img, mode="L").save(png)
    report_file = tmp_path / "run.json"
    res = run_cli_in_process("run", str(pkg), str(png), "--json", str(report_file), "--threshold", "1.01")
    assert res.returncode == 0, res.stderr
    report = json.loads(report_file.read_text())
    assert report["schema"] == "cephalon-edge/run/1"
    row = report["predictions"][0]
    manifest = Manifest.open(pkg)
    x = load_image(png, (1, 12, 12), manifest.inputs["image"]["preprocessing"])
    with Router.open(pkg) as router:
        ref = router.predict({"image": x}, thresholds=1.01)
    assert row["prediction"] == int(ref.predicted[0]) and row["exit"] == "final"
    assert abs(row["score"] - float(ref.scores[0])) < 1e-6


def test_a_format_1_package_still_opens_and_routes_the_same(tiny, tmp_path):
    """Format 1 named each step's part under "segment"; format 2 says "part". A package
    written before keeps working, and a step that mixes the spellings is refused."""
    import shutil

    net, _, pkg, _ = tiny
    old = tmp_path / "old"
    shutil.copytree(pkg, old)
    manifest = json.loads((old / "manifest.json").read_text())
    assert manifest["format"] == "cephalon-edge/2" and all("segment" not in s for s in manifest["program"])
    manifest["format"] = "cephalon-edge/1"
    for step in manifest["program"]:
        if "part" in step:
            step["segment"] = step.pop("part")
    (old / "manifest.json").write_text(json.dumps(manifest))
    x = torch.randn(16, 1, 12, 12, generator=torch.Generator().manual_seed(3))
    ref = net.dynamic_forward(x, thresholds=0.6)
    with Router.open(old) as router:
        got = router.predict({"image": x.numpy()}, thresholds=0.6)
    assert np.array_equal(got.exit_index, ref.exit_index.numpy())
    np.testing.assert_allclose(got.logits, ref.logits.numpy(), atol=1e-4)
    manifest["format"] = "cephalon-edge/2"  # "segment" keys in a format-2 manifest: refused
    (old / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(PackageError, match=r"program\[1\]\.part: must be a str"):
        Manifest.open(old)
