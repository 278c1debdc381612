import json
import subprocess
import sys

import torch
from conftest import make_net, run_cli, tiny_spec_dict

from cephalon_edge.toolchain import checkpoint


def test_version_and_light_import():
    res = run_cli("--version")
    assert res.returncode == 0 and res.stdout.strip().startswith("cephalon-edge ")
    # --help must not pay for torch or the converters
    code = "import sys, cephalon_edge.cli; bad = [m for m in ('torch', 'onnx', 'litert_torch', 'coremltools') if m in sys.modules]; print(bad)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_inspect_json_keys(tmp_path):
    net = make_net()
    ckpt = tmp_path / "tiny.cephalon"
    checkpoint.save(net, ckpt, {"creator": "test"})
    report_file = tmp_path / "r.json"
    res = run_cli("inspect", str(ckpt), "--json", str(report_file))
    assert res.returncode == 0, res.stderr
    assert "gate1.1" in res.stdout and "moe2.expert2" in res.stdout
    report = json.loads(report_file.read_text())
    assert report["schema"] == "cephalon-edge/inspect/2"
    assert [e["name"] for e in report["exits"]] == ["exit0", "exit1", "exit2", "final"]
    flops = [e["cumulative_flops"] for e in report["exits"]]
    assert flops == sorted(flops) and flops[0] > 0
    assert set(report["exits"][0]) >= {"name", "cumulative_flops", "params"}
    names = {s["name"] for s in report["parts"]}
    assert {"adapter.image", "stage0", "exit0", "gate1.1", "block1.1", "moe2.gate", "moe2.expert0",
            "head.class", "head.aux"} <= names  # the parts
    assert report["fused_segments"][0] == {"name": "adapter.image+stage0+exit0",
                                           "parts": ["adapter.image", "stage0", "exit0"]}
    assert "exported fused: 4 chains" in res.stdout
    assert report["params"] == sum(p.numel() for p in net.parameters())


def test_user_errors_exit_2_without_traceback(tmp_path):
    bad = tmp_path / "bad.cephalon"
    bad.write_bytes(b"not a checkpoint at all, clearly")
    for args in (["inspect", str(bad)], ["inspect", str(tmp_path / "missing.cephalon")],
                 ["zoo", "build", "nope", "-o", str(tmp_path / "x.cephalon")], ["inspect"], ["frobnicate"]):
        res = run_cli(*args)
        assert res.returncode == 2, (args, res.stderr)
        assert "Traceback" not in res.stderr
    res = run_cli("inspect", str(bad))
    assert res.stderr.startswith("error: ")
    res = run_cli("--debug", "inspect", str(bad))
    assert res.returncode == 2 and "Traceback" in res.stderr


def test_import_command(tmp_path):
    net = make_net(seed=1)
    sd, spec, out = tmp_path / "w.pt", tmp_path / "spec.json", tmp_path / "m.cephalon"
    torch.save(net.state_dict(), sd)
    spec.write_text(json.dumps(tiny_spec_dict()))
    res = run_cli("import", str(sd), "--spec", str(spec), "-o", str(out))
    assert res.returncode == 0, res.stderr
    loaded = checkpoint.load(out)
    assert torch.equal(loaded.state_dict()["heads.task_aux.fc.weight"], net.state_dict()["heads.task_aux.fc.weight"])
    spec.write_text(json.dumps(tiny_spec_dict(stages=[{"channels": 0}])))
    res = run_cli("import", str(sd), "--spec", str(spec), "-o", str(tmp_path / "n.cephalon"))
    assert res.returncode == 2 and "spec.stages[0].channels" in res.stderr
    assert not (tmp_path / "n.cephalon").exists()


def test_export_help_lists_every_registered_target_and_quantization_mode():
    from typer.testing import CliRunner

    from cephalon_edge.cli import app
    from cephalon_edge.targets import QUANTIZATION_MODES, TARGETS

    res = CliRunner().invoke(app, ["export", "--help"], env={"COLUMNS": "400", "TERM": "dumb"})
    assert res.exit_code == 0
    text = " ".join(res.output.split())
    assert all(name in text for name in TARGETS) and all(mode in text for mode in QUANTIZATION_MODES)
    assert all(f"{t.name}: {', '.join(t.quantization)}" in text for t in TARGETS.values())


def test_bad_flags_and_checkpoints_are_refused_before_torch_is_imported(tmp_path):
    """inspect, compress and export check their flags and the checkpoint's header first: with a
    torch that cannot be imported, each still says what is wrong in one line."""
    blocker = tmp_path / "no-torch" / "torch"
    blocker.mkdir(parents=True)
    (blocker / "__init__.py").write_text("raise ImportError('torch was imported before the input was checked')\n")
    bad = tmp_path / "bad.cephalon"
    bad.write_bytes(b"not a checkpoint at all, clearly")
    out = ["-o", str(tmp_path / "o.cephalon")]
    for args, said in ((["inspect", str(bad)], "not a .cephalon checkpoint"),
                       (["compress", str(bad), *out, "--prune", "0.5"], "not a .cephalon checkpoint"),
                       (["compress", str(tmp_path / "missing.cephalon"), *out, "--prune", "0.5"], "checkpoint not found"),
                       (["compress", str(bad), *out, "--prune", "2"], "in (0, 1)"),
                       (["compress", str(bad), *out, "--widths", "0.5"], "must hold 1.0"),
                       (["export", str(bad), "--target", "onnx", "-o", str(tmp_path / "pkg")], "not a .cephalon checkpoint")):
        res = run_cli(*args, env={"PYTHONPATH": str(tmp_path / "no-torch")})
        assert res.returncode == 2 and said in res.stderr, (args, res.stderr)
        assert "torch was imported" not in res.stderr and "Traceback" not in res.stderr
    assert not (tmp_path / "o.cephalon").exists() and not (tmp_path / "pkg").exists()
