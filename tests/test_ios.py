"""iPhones and iPads: listing through a fake `xcrun devicectl`, profile matching, and the
bench's failure paths off macOS. The benchmark itself needs macOS, Xcode and a device."""

import json
import os
import platform
import shutil
import sys

import pytest
from conftest import IPHONE_15_PRO, PIXEL, make_net, run_cli_in_process, small_net

from cephalon_edge.toolchain import checkpoint
from cephalon_edge.toolchain.artifacts import ExportSpec
from cephalon_edge.toolchain.export import export_package
from cephalon_edge.device.profiles import ProfileError, validate_profile

IPAD = {"udid": "00008103-000A1B2C3D4E5F60", "name": "[bold]lab iPad", "type": "iPad", "product": "iPad13,8",
        "marketing": "iPad Pro (12.9-inch) (5th generation)", "os": "17.6", "developer_mode": "disabled"}
MAC = {"udid": "00006000-000111222333444E", "name": "build Mac", "type": "Mac", "product": "Mac14,6", "os": "15.1"}


def both(adb_env, xcrun_env):
    """One environment with the fake adb and the fake xcrun first on PATH."""
    return {**adb_env, **xcrun_env, "PATH": f"{xcrun_env['PATH'].split(os.pathsep)[0]}{os.pathsep}{adb_env['PATH']}"}


def test_devices_lists_iphones_beside_android_phones(fake_adb, fake_xcrun, tmp_path):
    adb_env, adb_devices, _, _ = fake_adb
    xcrun_env, ios_devices = fake_xcrun
    adb_devices([{"serial": "PX8", "state": "device", "props": PIXEL}])
    ios_devices([IPHONE_15_PRO, IPAD, MAC])
    out = tmp_path / "devices.json"
    res = run_cli_in_process("devices", "--json", str(out), env=both(adb_env, xcrun_env))
    assert res.returncode == 0, res.stderr
    rows = {d["serial"]: d for d in json.loads(out.read_text())["devices"]}
    assert set(rows) == {"PX8", IPHONE_15_PRO["udid"], IPAD["udid"]}  # a Mac is not a bench target
    phone = rows[IPHONE_15_PRO["udid"]]
    assert phone["platform"] == "ios" and phone["profile"] == "iphone-15-pro"
    assert phone["product_type"] == "iPhone16,1" and phone["ios"] == "18.1" and phone["message"] is None
    assert rows["PX8"]["platform"] == "android" and rows["PX8"]["profile"] == "pixel-8"
    ipad = rows[IPAD["udid"]]
    assert ipad["profile"] is None and ipad["developer_mode"] == "disabled"
    assert "Developer Mode" in ipad["message"] and "Settings > Privacy & Security" in ipad["message"]
    assert "iOS 18.1" in res.stdout and "Android 15" in res.stdout and "iphone-15-pro" in res.stdout
    assert "[bold]lab iPad" in res.stdout  # device text is data, not markup


def test_without_xcrun_ios_is_one_note_not_an_error(fake_adb, tmp_path):
    env, devices, _, _ = fake_adb
    devices([{"serial": "PX8", "state": "device", "props": PIXEL}])
    assert shutil.which("xcrun", path=env["PATH"]) is None or platform.system() == "Darwin"
    out = tmp_path / "devices.json"
    res = run_cli_in_process("devices", "--json", str(out), env=env)
    assert res.returncode == 0, res.stderr
    report = json.loads(out.read_text())
    assert [d["serial"] for d in report["devices"]] == ["PX8"]
    if platform.system() != "Darwin":
        assert report["notes"] == ["iOS devices need macOS with Xcode (xcrun devicectl); none listed here"]
        assert "iOS devices need macOS with Xcode" in " ".join(res.stdout.split())


def test_no_adb_and_no_xcrun_is_one_line_exit_2(tmp_path):
    empty = tmp_path / "empty-path"
    empty.mkdir()
    res = run_cli_in_process("devices", env={"PATH": str(empty)})
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert "adb not found on PATH" in res.stderr and "iOS devices need macOS with Xcode" in res.stderr


def test_only_xcrun_lists_iphones_and_notes_adb(fake_xcrun, tmp_path):
    env, devices = fake_xcrun
    devices([IPHONE_15_PRO])
    env = {**env, "PATH": env["PATH"].split(os.pathsep)[0] + os.pathsep + os.path.dirname(sys.executable)}
    out = tmp_path / "d.json"
    res = run_cli_in_process("devices", "--json", str(out), env=env)
    assert res.returncode == 0, res.stderr
    report = json.loads(out.read_text())
    assert [d["profile"] for d in report["devices"]] == ["iphone-15-pro"]
    assert any("adb not found" in n for n in report["notes"])


@pytest.mark.parametrize("mode, message", [("fail", "xcrun devicectl list devices failed: ERROR: The operation"),
                                           ("garbage", "xcrun devicectl gave no device list")])
def test_devicectl_failures_are_one_line(fake_adb, fake_xcrun, mode, message):
    adb_env, adb_devices, _, _ = fake_adb
    adb_devices([])
    xcrun_env, _ = fake_xcrun
    res = run_cli_in_process("devices", env={**both(adb_env, xcrun_env), "FAKE_XCRUN_MODE": mode})
    assert res.returncode == 1 and message in res.stderr and "Traceback" not in res.stderr


def test_ios_match_rules_are_validated():
    profile = {"name": "x", "description": "x", "os": "ios", "abi": "arm64", "target": "coreml",
               "quantization": "fp16", "runtime": {"delegate": "npu"}, "match": {"ios.product_type": "iPhone16,"}}
    assert validate_profile(profile, "x")["match"] == {"ios.product_type": "iPhone16,"}
    profile["match"] = {"model": "iPhone"}
    with pytest.raises(ProfileError, match="ios.product_type"):
        validate_profile(profile, "x")


@pytest.fixture(scope="module")
def coreml_package(tmp_path_factory):
    root = tmp_path_factory.mktemp("ios")
    checkpoint.save(small_net(), root / "m.cephalon")
    export_package(root / "m.cephalon", root / "cml", ExportSpec("coreml", verify=False))
    return root / "cml"


@pytest.mark.skipif(platform.system() == "Darwin", reason="checks the error path off macOS")
def test_iphone_bench_off_macos_is_one_line_exit_2(coreml_package, fake_xcrun, tmp_path):
    env, devices = fake_xcrun
    devices([IPHONE_15_PRO])
    for device in (IPHONE_15_PRO["udid"], "all-ios"):
        res = run_cli_in_process("bench", str(coreml_package), "--device", device, "--team-id", "ABCDE12345", env=env)
        assert res.returncode == 2 and "Traceback" not in res.stderr
        assert "benchmarking on an iPhone needs macOS with Xcode" in res.stderr
        assert len([line for line in res.stderr.splitlines() if line.startswith("error:")]) == 1


def test_iphone_bench_refuses_other_targets(tmp_path, fake_xcrun):
    env, _ = fake_xcrun
    net = make_net(seed=5, stages=[{"channels": 8, "blocks": 1}], tasks=[{"name": "class", "outputs": 5}])
    checkpoint.save(net, tmp_path / "m.cephalon")
    export_package(tmp_path / "m.cephalon", tmp_path / "pkg", ExportSpec("onnx", verify=False))
    res = run_cli_in_process("bench", str(tmp_path / "pkg"), "--device", "all-ios", env=env)
    assert res.returncode == 2 and "iPhone bench runs Core ML packages; this one is onnx" in res.stderr


@pytest.mark.skipif(platform.system() != "Darwin" or not os.environ.get("CEPHALON_IOS_TEST_UDID"),
                    reason="needs macOS with Xcode, an attached iPhone in Developer Mode (CEPHALON_IOS_TEST_UDID) "
                           "and a signing team (CEPHALON_IOS_TEAM_ID)")
def test_iphone_bench_on_a_real_device(coreml_package, tmp_path):
    out = tmp_path / "bench.json"
    res = run_cli_in_process("bench", str(coreml_package), "--device", os.environ["CEPHALON_IOS_TEST_UDID"],
                             "--runs", "5", "--data", "digits:test", "--json", str(out))
    assert res.returncode == 0, res.stderr
    device = json.loads(out.read_text())["devices"][0]
    assert device["status"] == "ok" and [s["name"] for s in device["segments"]] == ["adapter.image+stage0+exit0",
                                                                                       "stage1+head.class"]
    assert all(s["mean_ms"] > 0 for s in device["segments"]) and device["end_to_end"]["mean_ms"] > 0
