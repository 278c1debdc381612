"""Host bench, device profiles, and Android bench through a fake adb on PATH."""

import json
import shutil

import numpy as np
import pytest
from conftest import GALAXY, PIXEL, run_cli_in_process, small_digits_package

from cephalon_edge.device.profiles import (
    ProfileError,
    load_profile,
    profile_names,
    validate_profile,
)
from cephalon_edge.errors import DeviceError
from cephalon_edge.tune.bench import benchmark_model


# the small digits model's parts, fused: what runs to exit0, and the rest to the final head
FUSED = ["adapter.image+stage0+exit0", "stage1+head.class"]


@pytest.fixture(scope="module")
def packages(tmp_path_factory):
    root = tmp_path_factory.mktemp("bench")
    for target in ("onnx", "tflite"):
        small_digits_package(target, root / target)
    return root


def test_every_profile_validates():
    names = profile_names()
    assert {"host-cpu", "pixel-8", "galaxy-s23", "android-arm64-cpu", "raspberry-pi-5", "iphone-15-pro",
            "mac-apple-silicon"} <= set(names)
    for name in names:
        assert load_profile(name)["name"] == name


@pytest.mark.parametrize("change, field", [
    ({"runtime": {"delegate": "tpu"}}, "runtime.delegate"),
    ({"runtime": {"delegate": "gpu", "threads": 0}}, "runtime.threads"),
    ({"target": "caffe"}, "target"),
    ({"colour": "red"}, "colour"),
    ({"match": {"model": "x"}}, "match.model"),
])
def test_bad_profiles_name_the_field(change, field):
    good = load_profile("pixel-8")
    with pytest.raises(ProfileError, match=f": {field}:"):
        validate_profile({**good, **change}, "test")


def test_benchmark_model_parser_generations():
    v1 = "Average inference timings in us: Warmup: 2475.69, Init: 61254, no stats: 2123.45"
    assert benchmark_model.parse(v1)["avg_us"] == 2123.45
    v2 = ("count=50 first=3627 curr=3571 min=3501 max=3799 avg=3571.33 std=54\n"
          "Inference timings in us: Init: 29337, First inference: 4153, Warmup (avg): 3627.5, Inference (avg): 3571.33")
    parsed = benchmark_model.parse(v2)
    assert parsed["avg_us"] == 3571.33 and parsed["std_us"] == 54 and parsed["min_us"] == 3501 and parsed["init_us"] == 29337
    litert = ("INFO: count=1 curr=9000\n\nINFO: count=20 first=9000 curr=8100 min=8000 max=9100 avg=8.2e+03 std=120\n"
              "INFO: Inference timings in us: Init: 1523, First inference: 9000, Warmup (avg): 9.0e+03, Inference (avg): 8.21e+03\n"
              "INFO: Memory footprint delta from the start of the tool (MB): init=2.875 overall=5.375\n"
              "INFO: Overall peak memory footprint (MB) via periodic monitoring: 7.125")
    parsed = benchmark_model.parse(litert)
    assert parsed["avg_us"] == 8210.0 and parsed["count"] == 20 and parsed["std_us"] == 120
    assert parsed["mem_init_mb"] == 2.875 and parsed["mem_overall_mb"] == 5.375 and parsed["peak_mb"] == 7.125
    for garbage in ("", "Segmentation fault", "Inference timings in us: Init: 12"):
        with pytest.raises(DeviceError, match="could not find an inference average"):
            benchmark_model.parse(garbage)


def test_host_bench_report(packages, tmp_path):
    report_file, plot = tmp_path / "bench.json", tmp_path / "bench.png"
    res = run_cli_in_process("bench", str(packages / "onnx"), "--profile", "host-cpu", "--runs", "5", "--warmup", "1",
                             "--samples", "40", "--batch", "16", "--json", str(report_file), "--plot", str(plot))
    assert res.returncode == 0, res.stderr
    report = json.loads(report_file.read_text())
    assert report["schema"] == "cephalon-edge/bench/1" and report["runtime"] == "onnxruntime"
    assert report["profile"] == "host-cpu" and report["threads"] == 2 and report["device"] == "host"
    assert [s["name"] for s in report["segments"]] == FUSED
    for s in report["segments"]:
        assert s["cold_ms"] > 0 and s["min_ms"] > 0 and s["min_ms"] <= s["p50_ms"] <= s["p99_ms"]
    e2e = report["end_to_end"]
    assert e2e["samples"] == 40 and sum(e2e["exit_rates"].values()) == pytest.approx(1.0)
    assert report["static"]["mean_ms"] > 0
    assert report["speedup"] == pytest.approx(report["static"]["mean_ms"] / e2e["mean_ms"])
    assert report["routing_pays"] == (report["speedup"] > 1)
    assert report["peak_rss_bytes"] > 50e6
    assert plot.read_bytes()[:4] == b"\x89PNG"
    # --batch 16: the two full batches of the 40 samples, routed and static on the same batches
    batch = report["batch"]
    assert batch["batch"] == 16 and batch["batches"] == 2 and batch["samples"] == 32
    assert batch["routed"]["samples_per_s"] == pytest.approx(16_000 / batch["routed"]["mean_ms"])
    assert batch["throughput_ratio"] == pytest.approx(batch["routed"]["samples_per_s"] / batch["static"]["samples_per_s"])
    assert sum(batch["exit_rates"].values()) == pytest.approx(1.0)
    # routing a batch decides per sample: the same predictions as one sample at a time
    from cephalon_edge.device.data import load_dataset
    from cephalon_edge.device.data_checks import Contract
    from cephalon_edge.device.router import Router

    with Router.open(packages / "onnx") as router:
        data = load_dataset("digits:test", Contract.from_manifest(router.manifest)).subset(np.arange(32))
        alone = np.array([router.predict({"image": data.inputs["image"][i:i + 1]}).predicted[0] for i in range(32)])
    assert batch["accuracy"] == pytest.approx(float(np.mean(alone == data.labels)))
    res = run_cli_in_process("bench", str(packages / "onnx"), "--batch", "64", "--samples", "40")
    assert res.returncode == 2 and "--batch 64 is larger than the 40 samples" in res.stderr
    res = run_cli_in_process("bench", str(packages / "onnx"), "--batch", "0")
    assert res.returncode == 2 and "--batch must be >= 1" in res.stderr


def test_devices_listing_and_matching(fake_adb, tmp_path):
    env, devices, _, _ = fake_adb
    devices([{"serial": "PX8", "state": "device", "props": PIXEL},
             {"serial": "S23", "state": "device", "props": GALAXY},
             {"serial": "NEW1", "state": "unauthorized", "props": {}}])
    out = tmp_path / "devices.json"
    res = run_cli_in_process("devices", "--json", str(out), env=env)
    assert res.returncode == 0, res.stderr
    rows = {d["serial"]: d for d in json.loads(out.read_text())["devices"]}
    assert rows["PX8"]["profile"] == "pixel-8" and rows["PX8"]["soc"] == "Tensor G3" and rows["PX8"]["android"] == "15"
    assert rows["S23"]["profile"] == "galaxy-s23" and rows["S23"]["abi"] == "arm64-v8a"
    assert rows["NEW1"]["state"] == "unauthorized" and "accept the USB debugging prompt" in rows["NEW1"]["message"]


@pytest.mark.parametrize("fmt", ["litert", "v2", "v1"])
def test_full_device_bench(packages, fake_adb, tmp_path, fmt):
    env, devices, state, binary = fake_adb
    devices([{"serial": "PX8", "state": "device", "props": PIXEL},
             {"serial": "S23", "state": "device", "props": GALAXY}])
    out = tmp_path / "bench.json"
    res = run_cli_in_process("bench", str(packages / "tflite"), "--device", "all", "--benchmark-binary", str(binary),
                             "--runs", "5", "--warmup", "1", "--samples", "60", "--json", str(out), env={**env, "FAKE_ADB_FORMAT": fmt})
    assert res.returncode == 0, res.stderr
    report = json.loads(out.read_text())
    by_serial = {d["device"]: d for d in report["devices"]}
    assert by_serial["PX8"]["profile"] == "pixel-8" and by_serial["PX8"]["delegate"] == "gpu"
    assert by_serial["S23"]["delegate"] == "nnapi" and "deprecated from Android 15" in by_serial["S23"]["note"]
    for d in by_serial.values():
        assert d["status"] == "ok"
        assert [s["name"] for s in d["segments"]] == FUSED
        e2e = d["end_to_end"]
        assert e2e["samples"] == 60 and e2e["p50_ms"] <= e2e["p99_ms"]
        seg = {s["name"]: s["mean_ms"] for s in d["segments"]}
        rates = e2e["exit_rates"]
        # expected latency = every sample's own path: exit0 leavers pay the first (fused) segment
        lower = seg[FUSED[0]]
        full = sum(seg.values())
        assert e2e["mean_ms"] == pytest.approx(rates["exit0"] * lower + rates["final"] * full, rel=1e-6)
        assert d["static"]["mean_ms"] > 0 and d["speedup"] > 0
    assert not any(list((state / serial).glob("*")) for serial in ("PX8", "S23"))  # cleaned up without --keep


def test_op_profiles_on_the_phone(packages, fake_adb, tmp_path):
    """--ops: a second run per segment with benchmark_model's op profiling; per segment, where
    each op ran and what fell back from the profile's delegate (GPU, NNAPI, XNNPACK)."""
    from cephalon_edge.device.manifest import Manifest
    from cephalon_edge.toolchain.delegates import documented_ops, tflite_ops

    env, devices, state, binary = fake_adb
    other = {**GALAXY, "ro.product.model": "SM-A546B"}  # no profile of its own: android-arm64-cpu (XNNPACK)
    devices([{"serial": "PX8", "state": "device", "props": PIXEL}, {"serial": "S23", "state": "device", "props": GALAXY},
             {"serial": "A54", "state": "device", "props": other}])
    out, png = tmp_path / "bench.json", tmp_path / "bench.png"
    res = run_cli_in_process("bench", str(packages / "tflite"), "--device", "all", "--benchmark-binary", str(binary), "--ops",
                             "--runs", "3", "--warmup", "1", "--samples", "20", "--json", str(out), "--plot", str(png), env=env)
    assert res.returncode == 0, res.stderr
    assert "where each op ran" in res.stdout and png.read_bytes()[:4] == b"\x89PNG"
    manifest = Manifest.open(packages / "tflite")
    ops = tflite_ops(manifest.member(manifest.segments[FUSED[0]]["file"]))
    report = {d["device"]: d for d in json.loads(out.read_text())["devices"]}
    for serial, delegate, unit in (("PX8", "gpu", "GPU"), ("S23", "nnapi", "NNAPI"), ("A54", "xnnpack", "XNNPACK")):
        entry = report[serial]
        assert entry["delegate"] == delegate and [p["segment"] for p in entry["placement"]] == FUSED
        supported = set(documented_ops()[delegate]["ops"])
        for row in entry["placement"]:
            seg_ops = ops[manifest.segments[row["segment"]]["signature"]]
            assert row["source"] == "device op profile (benchmark_model)" and row["accelerator"] == unit
            assert sorted(o["kind"] for o in row["fallback_ops"]) == sorted(o for o in seg_ops if o not in supported)
            assert all(o["unit"] == "CPU" and o["share"] > 0 for o in row["fallback_ops"])
            fallback_share = sum(o["share"] for o in row["fallback_ops"])
            assert row["time_share_on_accelerator"] == pytest.approx(1 - fallback_share)
            assert [o["us"] for o in row["top_ops"]] == sorted((o["us"] for o in row["top_ops"]), reverse=True)
    # the op profile is its own run: the latency runs stay free of the profiler's overhead
    runs = (state / "PX8.runs").read_text().splitlines()
    assert len(runs) == 2 * len(FUSED) + 1
    res = run_cli_in_process("bench", str(packages / "onnx"), "--ops", env=env)
    assert res.returncode == 2 and "--ops profiles op by op on Android devices" in res.stderr


def test_hub_takes_one_model_per_file(packages):
    res = run_cli_in_process("bench", str(packages / "tflite"), "--hub", "Samsung Galaxy S24 (Family)")
    assert res.returncode == 2 and "signatures of one file" in res.stderr and "snapdragon-ai-hub" in res.stderr


def test_device_vanishing_mid_run_keeps_results(packages, fake_adb, tmp_path):
    env, devices, _, binary = fake_adb
    devices([{"serial": "PX8", "state": "device", "props": PIXEL, "vanish_at": "run:2"}])
    out = tmp_path / "bench.json"
    res = run_cli_in_process("bench", str(packages / "tflite"), "--device", "PX8", "--benchmark-binary", str(binary),
                             "--runs", "3", "--samples", "20", "--json", str(out), env=env)
    assert res.returncode == 1
    assert "device PX8" in res.stderr and f"run {FUSED[1]}" in res.stderr and "Traceback" not in res.stderr
    report = json.loads(out.read_text())
    entry = report["devices"][0]
    assert entry["status"] == "failed" and [s["name"] for s in entry["segments"]] == FUSED[:1]


@pytest.mark.parametrize("step", ["push", "chmod", "run", "cleanup"])
def test_device_vanishing_at_each_step(packages, fake_adb, step):
    env, devices, _, binary = fake_adb
    devices([{"serial": "PX8", "state": "device", "props": PIXEL, "vanish_at": step}])
    res = run_cli_in_process("bench", str(packages / "tflite"), "--device", "PX8", "--benchmark-binary", str(binary),
                             "--runs", "2", "--samples", "10", env=env)
    assert res.returncode == 1 and f"during {step}" in res.stderr and "not found" in res.stderr


def test_unauthorized_missing_binary_and_unknown_device(packages, fake_adb):
    env, devices, _, binary = fake_adb
    devices([{"serial": "NEW1", "state": "unauthorized", "props": {}}])
    res = run_cli_in_process("bench", str(packages / "tflite"), "--device", "all", "--benchmark-binary", str(binary), env=env)
    assert res.returncode == 1 and "NEW1 is unauthorized" in res.stderr
    devices([{"serial": "PX8", "state": "device", "props": PIXEL}])
    res = run_cli_in_process("bench", str(packages / "tflite"), "--device", "PX8", env=env)
    assert res.returncode == 2 and "no benchmark_model binary for arm64-v8a" in res.stderr and "LiteRT" in res.stderr
    assert "--benchmark-binary" in res.stderr
    res = run_cli_in_process("bench", str(packages / "tflite"), "--device", "ZZZ", "--benchmark-binary", str(binary), env=env)
    assert res.returncode == 2 and "device 'ZZZ' is not attached" in res.stderr and "PX8" in res.stderr
    res = run_cli_in_process("bench", str(packages / "onnx"), "--device", "PX8", "--benchmark-binary", str(binary), env=env)
    assert res.returncode == 2 and "device bench runs TFLite and ExecuTorch packages" in res.stderr


@pytest.mark.skipif(shutil.which("adb") is None, reason="Debian's adb is not installed")
def test_real_adb_without_devices(packages):
    import subprocess
    try:
        _check_real_adb(packages)
    finally:  # the adb server daemon started here must not outlive the test run
        subprocess.run(["adb", "kill-server"], capture_output=True, timeout=60)


def _check_real_adb(packages):
    res = run_cli_in_process("devices")
    assert res.returncode == 0 and "no devices attached" in res.stdout
    res = run_cli_in_process("bench", str(packages / "tflite"), "--device", "all")
    assert res.returncode == 2 and "no Android device attached" in res.stderr and "Traceback" not in res.stderr


def test_a_litert_package_runs_on_one_thread_pool(packages):
    """Every signature of a package runs in one interpreter: one XNNPACK pool of ``threads``
    (the caller plus threads - 1 workers), not one per segment, and ``threads`` is honoured."""
    import gc
    import os

    from cephalon_edge.device.program import NEVER_EXIT
    from cephalon_edge.device.router import Router

    def live_threads() -> int:
        return len(os.listdir("/proc/self/task"))

    for threads in (1, 3):
        gc.collect()
        before = live_threads()
        with Router.open(packages / "tflite", threads=threads) as router:
            x = np.zeros((1, *router.inputs["image"]["shape"]), np.float32)
            pred = router.predict({"image": x}, thresholds=NEVER_EXIT)  # every segment runs
            assert len(pred.segment_us) == len(router.manifest.segments) == 2
            assert live_threads() - before == threads - 1


def test_onnx_workers_spin_only_while_a_run_lasts(packages, monkeypatch):
    """A multi-threaded segment's workers spin during its run and stop when it returns (left
    spinning, they tax the next segment's session); a profile's ``spinning = true`` keeps ONNX
    Runtime's default (they go on spinning)."""
    from cephalon_edge.device.manifest import Manifest
    from cephalon_edge.device.runtimes import onnxruntime as ort_runtime

    monkeypatch.setattr(ort_runtime, "SINGLE_THREAD_FLOPS", 0)  # every segment of this small model gets a pool
    manifest = Manifest.open(packages / "onnx")
    for spinning in (False, True):
        runtime = ort_runtime.OnnxRuntime(manifest, threads=2, spinning=spinning)
        for session in runtime._sessions.values():
            options = session.get_session_options()
            assert options.intra_op_num_threads == 2
            assert options.get_session_config_entry("session.intra_op.allow_spinning") == "1"
            if spinning:
                with pytest.raises(RuntimeError, match="does not have configuration"):
                    options.get_session_config_entry("session.force_spinning_stop")
            else:
                assert options.get_session_config_entry("session.force_spinning_stop") == "1"
        runtime.close()
