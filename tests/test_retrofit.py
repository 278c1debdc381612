"""Exits retrofitted onto torchvision and timm models: specs whose full depth is the library's
function, the library's weights imported by preset, exits trained with the backbone frozen,
and the exported package at full depth reproducing the library model."""

import json
import shutil

import numpy as np
import pytest
import torch
from conftest import run_cli_in_process, small_digits_checkpoint

from cephalon_edge.device.program import NEVER_EXIT
from cephalon_edge.device.router import Router
from cephalon_edge.toolchain import checkpoint, presets
from cephalon_edge.toolchain.artifacts import ExportSpec
from cephalon_edge.toolchain.export import export_package
from cephalon_edge.toolchain.model import CephalonNet
from cephalon_edge.toolchain.presets.libraries import randomise, reference_model
from cephalon_edge.toolchain.state_import import from_library

SMALL_INPUT = {"torchvision": (3, 64, 64), "timm": (3, 32, 32)}  # the same functions, cheap to run


def retrofitted(preset: presets.Preset, spec) -> tuple[CephalonNet, torch.nn.Module]:
    reference = randomise(reference_model(preset, spec))
    net, initialised = from_library(preset, spec, reference.state_dict(), preset.name)
    assert initialised == [f"exits.{k}" for k in spec.exit_stages]
    return net, reference


@pytest.mark.parametrize("name", list(presets.PRESETS))
def test_full_depth_is_the_library_function(name):
    preset = presets.get(name)
    exits = list(preset.exit_points)[::2]
    spec = presets.preset_spec(preset, exits, SMALL_INPUT[preset.library], classes=10)
    assert sum(s.exit for s in spec.stages) == len(exits)
    net, reference = retrofitted(preset, spec)
    x = torch.randn(3, *spec.modalities[0].shape, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want = reference(x)
        got = net(x, exits=False).exit_logits[-1]
        early = net(x).exit_logits
    assert float(want.std()) > 0.05  # a real function of the input, not a constant
    assert float((got - want).abs().max()) <= 1e-5 * max(1.0, float(want.abs().max()))
    assert len(early) == len(exits) + 1 and torch.equal(early[-1], got)  # exits do not change the final path


def test_stages_are_cut_where_exits_go():
    r50 = presets.preset_spec(presets.get("torchvision:resnet50"), [1, 2, 3])
    assert [(s.blocks, s.channels, s.stride, s.exit) for s in r50.stages] == [
        (3, 256, 1, True), (4, 512, 2, True), (6, 1024, 2, True), (3, 2048, 2, False)]
    v2 = presets.get("torchvision:mobilenet_v2")
    plain = presets.preset_spec(v2, [])
    # the first block of each setting expands its input width, the rest their own: two stages
    assert [s.blocks for s in plain.stages] == [1, 1, 1, 1, 2, 1, 3, 1, 2, 1, 2, 1]
    assert [s.inner_channels for s in plain.stages[1:3]] == [96, 144]
    cut = presets.preset_spec(v2, [5])  # after features.5, inside the 32-channel stage
    assert [(s.blocks, s.exit) for s in cut.stages[3:6]] == [(1, False), (1, True), (1, False)]
    vit = presets.preset_spec(presets.get("timm:vit_tiny_patch16_224"), [4, 8])
    assert [(s.blocks, s.exit) for s in vit.stages] == [(4, True), (4, True), (4, False)]


def _save_library_weights(tmp_path, preset_name, spec_path, wrap=True):
    preset = presets.get(preset_name)
    spec = json.loads(spec_path.read_text())
    from cephalon_edge.toolchain.spec import ModelSpec

    reference = randomise(reference_model(preset, ModelSpec.from_dict(spec)))
    state = reference.state_dict()
    path = tmp_path / f"{preset.model}.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}} if wrap else state, path)
    return path, reference


def test_cli_spec_from_and_import_preset(tmp_path):
    spec_path = tmp_path / "r18.json"
    r = run_cli_in_process("spec", "from", "torchvision:resnet18", "--exits-after", "1,3", "--classes", "10",
                           "--input", "1x28x28", "-o", str(spec_path))
    assert r.returncode == 0, r.stderr
    spec = json.loads(spec_path.read_text())
    assert spec["modalities"][0]["shape"] == [1, 28, 28] and [s["exit"] for s in spec["stages"]] == [True, False, True, False]
    weights, reference = _save_library_weights(tmp_path, "torchvision:resnet18", spec_path)  # DataParallel-wrapped
    r = run_cli_in_process("import", str(weights), "--spec", str(spec_path), "--preset", "torchvision:resnet18",
                           "-o", str(tmp_path / "r18.cephalon"), "--json", str(tmp_path / "import.json"))
    assert r.returncode == 0, r.stderr
    report = json.loads((tmp_path / "import.json").read_text())
    assert report["initialised"] == ["exits.0", "exits.2"] and report["reference_max_abs_error"] <= 1e-5
    net, meta = checkpoint.load_with_metadata(tmp_path / "r18.cephalon")
    assert meta["provenance"]["preset"] == "torchvision:resnet18"
    r = run_cli_in_process("inspect", str(tmp_path / "r18.cephalon"), "--json", str(tmp_path / "inspect.json"))
    assert r.returncode == 0 and "exits can go after layer 1..3" in " ".join(r.stdout.split())
    assert json.loads((tmp_path / "inspect.json").read_text())["preset"]["name"] == "torchvision:resnet18"
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        assert float((net(x, exits=False).exit_logits[-1] - reference(x)).abs().max()) <= 1e-5


def test_cli_retrofit_errors(tmp_path):
    r = run_cli_in_process("spec", "from", "torchvision:resnet19", "-o", str(tmp_path / "s.json"))
    assert r.returncode == 2 and "unknown preset 'torchvision:resnet19'" in r.stderr and "torchvision:resnet50" in r.stderr
    r = run_cli_in_process("spec", "from", "timm:vit_tiny_patch16_224", "--exits-after", "3,12", "-o", str(tmp_path / "s.json"))
    assert r.returncode == 2 and "--exits-after 12" in r.stderr and "after block 1..11" in r.stderr
    assert not (tmp_path / "s.json").exists()
    spec_path = tmp_path / "r18.json"
    assert run_cli_in_process("spec", "from", "torchvision:resnet18", "--classes", "10", "--input", "3x32x32",
                              "-o", str(spec_path)).returncode == 0
    r34 = tmp_path / "r34.json"
    assert run_cli_in_process("spec", "from", "torchvision:resnet34", "--classes", "10", "--input", "3x32x32",
                              "-o", str(r34)).returncode == 0
    weights, _ = _save_library_weights(tmp_path, "torchvision:resnet34", r34, wrap=False)
    r = run_cli_in_process("import", str(weights), "--spec", str(spec_path), "--preset", "torchvision:resnet18",
                           "-o", str(tmp_path / "x.cephalon"))
    assert r.returncode == 2 and "not in the spec" in r.stderr and "layer1.2.conv1.weight" in r.stderr
    assert not (tmp_path / "x.cephalon").exists()


def test_freeze_backbone_trains_exits_alone(tmp_path):
    """On real digits: exit heads re-initialised, trained with everything else frozen."""
    base = small_digits_checkpoint(tmp_path / "base.cephalon")
    net = checkpoint.load(base)
    torch.manual_seed(5)
    for head in net.exits.values():
        for m in head.modules():
            if hasattr(m, "reset_parameters") and m is not head:
                m.reset_parameters()
    checkpoint.save(net, tmp_path / "fresh-exits.cephalon", {"dataset": "digits"})
    before = {k: v.clone() for k, v in net.state_dict().items()}
    r = run_cli_in_process("train", str(tmp_path / "fresh-exits.cephalon"), "--freeze", "backbone", "--data", "digits",
                           "--epochs", "3", "-o", str(tmp_path / "exits.cephalon"), "--json", str(tmp_path / "train.json"))
    assert r.returncode == 0, r.stderr
    after = checkpoint.load(tmp_path / "exits.cephalon").state_dict()
    exit_names = [k for k in after if k.startswith("exits.")]
    assert all(torch.equal(after[k], before[k]) for k in after if not k.startswith("exits."))  # bit for bit
    assert any(not torch.equal(after[k], before[k]) for k in exit_names)
    report = json.loads((tmp_path / "train.json").read_text())
    assert report["trained_params"] == sum(after[k].numel() for k in exit_names if "running" not in k
                                           and "num_batches" not in k)
    assert report["metrics"]["test"]["exit_accuracy"]["exit0"] > 0.5  # chance is 0.1
    r = run_cli_in_process("train", str(tmp_path / "fresh-exits.cephalon"), "--freeze", "backbone,exits", "--data", "digits",
                           "-o", str(tmp_path / "none.cephalon"))
    assert r.returncode == 2 and "leaves nothing to train" in r.stderr
    r = run_cli_in_process("train", str(tmp_path / "fresh-exits.cephalon"), "--freeze", "trunk", "--data", "digits",
                           "-o", str(tmp_path / "none.cephalon"))
    assert r.returncode == 2 and "--freeze 'trunk'" in r.stderr


@pytest.mark.slow
# one model per family and target here (benchmarks/preset_parity.py checks every preset on
# ONNX, TFLite and ExecuTorch)
@pytest.mark.parametrize("name, shape, target", [("torchvision:resnet18", (1, 28, 28), "onnx"),
                                                 ("torchvision:mobilenet_v3_small", (3, 32, 32), "tflite"),
                                                 ("timm:vit_tiny_patch16_224", (3, 32, 32), "tflite")])
def test_exported_full_depth_reproduces_the_library_model(tmp_path, name, shape, target):
    preset = presets.get(name)
    spec = presets.preset_spec(preset, [list(preset.exit_points)[-1]], shape, classes=10)
    net, reference = retrofitted(preset, spec)
    checkpoint.save(net, tmp_path / "m.cephalon")
    export_package(tmp_path / "m.cephalon", tmp_path / "pkg", ExportSpec(target, quantize="none"))
    x = np.random.default_rng(0).standard_normal((4, *shape)).astype(np.float32)
    with torch.no_grad():
        want = reference(torch.from_numpy(x)).numpy()
    with Router.open(tmp_path / "pkg") as router:
        got = router.predict({"image": x}, thresholds=NEVER_EXIT)
    assert (got.exit_index == len(spec.exit_names) - 1).all()
    np.testing.assert_allclose(got.logits, want, atol=1e-4 * max(1.0, float(np.abs(want).max())))
    shutil.rmtree(tmp_path / "pkg")
