import json

import pytest
from conftest import run_cli_in_process


@pytest.mark.slow
def test_demo_runs_end_to_end(tmp_path):
    out = tmp_path / "demo"
    res = run_cli_in_process("demo", "-o", str(out), "--epochs", "2")
    assert res.returncode == 0, res.stderr
    assert "demo summary" in res.stdout and "ONNX parity max abs error" in res.stdout
    assert (out / "digits-exits.cephalon").is_file()
    manifest = json.loads((out / "digits-exits-onnx" / "manifest.json").read_text())
    assert manifest["static"]["file"] == "static.onnx"
    # every registered target: ExecuTorch's one program, verified by parity like ONNX's files
    assert "ExecuTorch parity max abs error" in res.stdout and "TFLite parity max abs error" in res.stdout
    assert (out / "digits-exits-executorch" / "segments.pte").is_file()
    assert len(list((out / "inputs").glob("test*.npy"))) == 6
    for mix in ("image", "signal", "image+signal"):  # one prediction per modality mix
        assert f"multimodal {mix}: test accuracy" in res.stdout
    manifest = json.loads((out / "multimodal-digits-onnx" / "manifest.json").read_text())
    assert [i["name"] for i in manifest["inputs"]] == ["image", "signal"]
