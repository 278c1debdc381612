"""The ExecuTorch target: one multi-method .pte, parity against PyTorch, int8, the CLI on the
package, and Android bench with executor_runner through the fake adb."""

import json

import numpy as np
import pytest
import torch
from conftest import PIXEL, balanced_checkpoint, labelled_npz, run_cli_in_process, small_digits_checkpoint

from cephalon_edge.toolchain.artifacts import ExportSpec, identifier
from cephalon_edge.toolchain.export import export_package
from cephalon_edge.errors import DeviceError
from cephalon_edge.tune.bench import executor_runner

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """The tiny net (exits, a skip gate, three experts, a regression head) exported to
    ExecuTorch; (report, package, net, labelled data). ExecuTorch lowers slowly (about 10 s a
    method here): the static model is exported with the small digits model below."""
    root = tmp_path_factory.mktemp("et")
    net = balanced_checkpoint(root / "tiny.cephalon", seed=3, balance_seed=4)
    report = export_package(root / "tiny.cephalon", root / "pkg", ExportSpec("executorch"))
    return report, root / "pkg", net, labelled_npz(net, root / "data.npz", samples=48, seed=2)


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """A small model trained on digits (two segments), exported with its static model;
    (report, package, checkpoint)."""
    root = tmp_path_factory.mktemp("et-small")
    ckpt = small_digits_checkpoint(root / "small.cephalon")
    return export_package(ckpt, root / "pkg", ExportSpec("executorch", with_static=True)), root / "pkg", ckpt


def test_one_program_with_a_method_per_segment_and_parity(tiny):
    from executorch.runtime import Runtime

    from cephalon_edge.toolchain.parity import median_thresholds
    from cephalon_edge.device.router import Router

    report, pkg, net, _ = tiny
    parity = report["parity"]
    assert parity["passed"] and parity["max_abs_err"] < 1e-4 and parity["decision_agreement"] == 1.0
    manifest = json.loads((pkg / "manifest.json").read_text())
    assert {s["file"] for s in manifest["segments"]} == {"segments.pte"}
    program = Runtime.get().load_program(str(pkg / "segments.pte"))
    assert set(program.method_names) == {identifier(s["name"]) for s in manifest["segments"]}
    assert any(s["kind"] == "expert" for s in manifest["segments"]) and any(s["kind"] == "block" for s in manifest["segments"])
    # what XNNPACK took, from the lowered program: every convolution of every segment
    coverage = {r["segment"]: r for r in report["delegate_coverage"]}
    assert set(coverage) == {s["name"] for s in manifest["segments"]}
    assert all(r["delegate"] == "xnnpack" and r["source"] == "lowered program" for r in coverage.values())
    convs = [r for r in coverage.values() if any("convolution" in op for op in r["supported_ops"] + r["unsupported_ops"])]
    assert convs and all(not any("convolution" in op for op in r["unsupported_ops"]) for r in convs)

    # independently of export's check: the router against dynamic_forward, with early exits
    x = torch.randn(32, 1, 12, 12, generator=torch.Generator().manual_seed(9))
    thresholds = median_thresholds(net, {"image": x})
    ref = net.dynamic_forward(x, thresholds=thresholds)
    with Router.open(pkg) as router:
        got = router.predict({"image": x.numpy()}, thresholds=thresholds)
    assert 0 < (got.exit_index < len(net.spec.exit_names) - 1).sum() < 32
    assert np.array_equal(got.exit_index, ref.exit_index.numpy())
    assert np.array_equal(got.gates, ref.gates.numpy()) and np.array_equal(got.experts, ref.experts.numpy())
    assert np.abs(got.logits - ref.logits.numpy()).max() < 1e-4


def test_run_calibrate_and_bench_an_executorch_package(small, tmp_path):
    from cephalon_edge.toolchain import checkpoint
    from cephalon_edge.device.data import builtin

    report, pkg, ckpt = small
    assert report["parity"]["passed"] and report["parity"]["static_max_abs_err"] < 1e-4
    assert json.loads((pkg / "manifest.json").read_text())["static"]["file"] == "static.pte"
    x = builtin("digits", "test").inputs["image"][:6]
    np.save(tmp_path / "x.npy", x)
    res = run_cli_in_process("run", str(pkg), str(tmp_path / "x.npy"), "--threshold", "1.01", "--json", str(tmp_path / "run.json"))
    assert res.returncode == 0, res.stderr
    run = json.loads((tmp_path / "run.json").read_text())
    full_depth = checkpoint.load(ckpt).dynamic_forward(torch.from_numpy(x), thresholds=1.01).logits.argmax(-1).tolist()
    assert [p["prediction"] for p in run["predictions"]] == full_depth
    # the checkpoint's own dataset (digits) is the data of calibrate and bench
    res = run_cli_in_process("calibrate", str(pkg), "--data", "digits", "--max-drop", "0.02", "--json", str(tmp_path / "cal.json"))
    assert res.returncode == 0, res.stderr
    assert json.loads((pkg / "manifest.json").read_text())["exit_policy"]["calibrated"] is True
    res = run_cli_in_process("bench", str(pkg), "--runs", "3", "--samples", "60", "--json", str(tmp_path / "bench.json"))
    assert res.returncode == 0, res.stderr
    bench = json.loads((tmp_path / "bench.json").read_text())
    assert bench["runtime"] == "executorch" and bench["static"]["p50_ms"] > 0
    assert [s["name"] for s in bench["segments"]] == ["adapter.image+stage0+exit0", "stage1+head.class"]


def test_a_missing_method_is_a_one_line_package_error(tiny, tmp_path):
    import shutil

    _, pkg, _, data = tiny
    broken = tmp_path / "broken"
    shutil.copytree(pkg, broken)
    manifest = json.loads((broken / "manifest.json").read_text())
    manifest["segments"][1]["signature"] = "no_such_method"
    (broken / "manifest.json").write_text(json.dumps(manifest))
    res = run_cli_in_process("run", str(broken), str(data))
    assert res.returncode == 2 and "has no method 'no_such_method'" in res.stderr
    assert "Traceback" not in res.stderr


def test_int8_agrees_with_fp32_and_is_smaller(small, tmp_path):
    fp32, _, ckpt = small
    int8 = export_package(ckpt, tmp_path / "int8", ExportSpec("executorch", quantize="int8"))
    parity = int8["parity"]
    assert parity["passed"] and parity["quantization"] == "int8"
    assert parity["val_top1_agreement"] >= 0.98  # real digits of the validation split
    # only the convolutions are int8 (heads, gates and exit scores stay float): the program
    # shrinks by about three quarters of their weights' bytes
    from cephalon_edge.toolchain import checkpoint

    net = checkpoint.load(ckpt)
    conv = sum(m.weight.numel() for m in net.modules() if isinstance(m, torch.nn.Conv2d))
    share = conv / sum(p.numel() for p in net.parameters())
    assert share > 0.5
    assert int8["size_bytes"] < fp32["size_bytes"] * (1 - 0.5 * share)


def test_executor_runner_output_parsing():
    stamp = "I 00:00:01.000100 executorch:executor_runner.cpp:412]"
    text = "\n".join([f"{stamp} Model loaded in 3.5 ms."] +
                     [f"{stamp} Iteration {i + 1} of 5: {ms} ms" for i, ms in enumerate([9.0, 2.0, 1.0, 3.0, 2.0])] +
                     [f"{stamp} Model executed successfully 5 time(s) in 17.0 ms."])
    parsed = executor_runner.parse(text, warmup=1)  # the first iteration is the warm-up
    assert parsed["count"] == 4 and parsed["avg_us"] == pytest.approx(2000) and parsed["min_us"] == pytest.approx(1000)
    assert parsed["first_us"] == pytest.approx(9000) and parsed["init_us"] == pytest.approx(3500)
    total_only = executor_runner.parse(f"{stamp} Model executed successfully 4 time(s) in 10.0 ms.")
    assert total_only["avg_us"] == pytest.approx(2500)
    with pytest.raises(DeviceError, match="cannot select a method"):
        executor_runner.parse("ERROR: unknown command line flag 'method_name'")
    for garbage in ("", "Iteration x of 5: fast", f"{stamp} Model executed successfully 0 time(s) in 0 ms."):
        with pytest.raises(DeviceError):
            executor_runner.parse(garbage)
    assert executor_runner.command("/d/executor_runner", "/d/segments.pte", "exit1", {"threads": 2}, 10, 2) == [
        "/d/executor_runner", "--model_path=/d/segments.pte", "--method_name=exit1", "--num_executions=12",
        "--cpu_threads=2"]


def test_android_bench_runs_each_method_with_executor_runner(small, fake_adb, tmp_path):
    env, devices, state, _ = fake_adb
    _, pkg, _ = small
    runner = tmp_path / "executor_runner"
    runner.write_bytes(b"\x7fELF fake executor_runner")
    devices([{"serial": "PX8", "state": "device", "props": PIXEL}])
    res = run_cli_in_process("bench", str(pkg), "--device", "PX8", env=env)
    assert res.returncode == 2 and "no executor_runner binary for arm64-v8a" in res.stderr and "XNNPACK" in res.stderr
    out = tmp_path / "bench.json"
    res = run_cli_in_process("bench", str(pkg), "--device", "PX8", "--benchmark-binary", str(runner), "--samples", "40",
                             "--runs", "3", "--warmup", "1", "--ops", "--json", str(out), env=env)
    assert res.returncode == 0, res.stderr
    report = json.loads(out.read_text())
    assert report["runtime"] == "executorch (executor_runner)"
    device = report["devices"][0]
    manifest = json.loads((pkg / "manifest.json").read_text())
    assert [s["name"] for s in device["segments"]] == [s["name"] for s in manifest["segments"]]
    assert device["delegate"] == "xnnpack" and device["static"]["mean_ms"] > 0
    # one run per method of the one program, then the static program's forward
    runs = (state / "PX8.runs").read_text().split()
    assert runs == ["--model_path=/data/local/tmp/cephalon-edge/segments.pte"] * len(manifest["segments"]) + [
        "--model_path=/data/local/tmp/cephalon-edge/static.pte"]
    # --ops: the runner times no op, so placement is what the partitioner lowered (the manifest's)
    assert "reports no per-op times" in device["ops_note"]
    for row, entry in zip(device["placement"], manifest["segments"]):
        lowered = entry["delegation"]
        assert row["segment"] == entry["name"] and row["source"].startswith("lowered program")
        assert row["ops_on_accelerator"] == sum(lowered["delegated"].values()) > 0
        assert sorted({o["kind"] for o in row["fallback_ops"]}) == sorted(lowered["portable"])
    seg = {s["name"]: s["mean_ms"] for s in device["segments"]}
    e2e = device["end_to_end"]
    assert seg["adapter.image+stage0+exit0"] * 0.999 <= e2e["mean_ms"] <= sum(seg.values()) * 1.001
    # a runner that cannot select a method: one line saying which runner is needed
    res = run_cli_in_process("bench", str(pkg), "--device", "PX8", "--benchmark-binary", str(runner), "--samples", "20",
                             "--runs", "2", env={**env, "FAKE_ADB_RUNNER": "old"})
    assert res.returncode == 1 and "cannot select a method" in res.stderr and "ExecuTorch 1.0 or newer" in res.stderr
