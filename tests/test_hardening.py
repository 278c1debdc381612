"""Hardening, round two: one regression test per broken promise of issue 14 (each failed on
the code before it). Fault timing is synchronised on the program's own progress
(pause_at.py), never on the clock."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import PIXEL, interruptible, run_cli, run_cli_in_process, small_package, spawn_parked, tiny_spec_dict, wait_for

from cephalon_edge.toolchain.artifacts import ExportSpec
from cephalon_edge.toolchain.export import export_package
from cephalon_edge.device.manifest import Manifest
from cephalon_edge.errors import DeviceError, PackageError, SpecError


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """A 5-segment ONNX package with its static model, its checkpoint and labelled data."""
    root = small_package(tmp_path_factory.mktemp("small"), samples=400, with_static=True)
    np.save(root / "x.npy", np.zeros((1, 12, 12), np.float32))
    return root


@pytest.fixture
def pkg(small, tmp_path):
    shutil.copytree(small / "pkg", tmp_path / "pkg")
    return tmp_path / "pkg"


def snapshot(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


# 1 ---------------------------------------------------------------------------------------------

def test_benchmark_model_parser_is_linear_on_garbled_output():
    """Repeated stats fields without std= took ~n^5 (n=2000 hung past 300 s)."""
    code = ("from cephalon_edge.tune.bench import benchmark_model as b\n"
            "from cephalon_edge.errors import DeviceError\n"
            "for n in (2000, 100000):\n"
            "    for text in ('count=1 min=1 max=1 avg=1 ' * n, ('count=1 min=1 max=1 avg=1\\n' * n)):\n"
            "        try:\n            b.parse(text)\n        except DeviceError:\n            pass\n"
            "print('done')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "done", out.stderr


@pytest.mark.parametrize("figure", ["1e400", "0", "-5", "nan"])
def test_benchmark_model_figures_must_be_finite_and_positive(figure):
    from cephalon_edge.tune.bench import benchmark_model

    text = f"INFO: Inference timings in us: Init: 1, First inference: 2, Warmup (avg): 3, Inference (avg): {figure}"
    with pytest.raises(DeviceError):
        benchmark_model.parse(text)
    stats = f"count=5 first=1 curr=1 min=1 max=2 avg={figure} std=0"
    with pytest.raises(DeviceError):
        benchmark_model.parse(stats)


# 2 ---------------------------------------------------------------------------------------------

def test_spec_bound_counts_every_part_before_building(tmp_path):
    tasks = [{"name": "class", "outputs": 5}] + [{"name": f"t{i}", "kind": "regression", "outputs": 1_000_000}
                                                 for i in range(41)]
    with pytest.raises(SpecError, match="estimated parameters"):
        from cephalon_edge.toolchain.spec import ModelSpec
        ModelSpec.from_dict(tiny_spec_dict(tasks=tasks))
    spec = tmp_path / "huge.json"
    spec.write_text(json.dumps(tiny_spec_dict(tasks=tasks)))
    torch = pytest.importorskip("torch")
    torch.save({}, tmp_path / "w.pt")
    res = run_cli_in_process("import", str(tmp_path / "w.pt"), "--spec", str(spec), "-o", str(tmp_path / "o.cephalon"))
    assert res.returncode == 2 and "estimated parameters" in res.stderr and "Traceback" not in res.stderr


# 3 ---------------------------------------------------------------------------------------------

def test_manifest_shapes_are_bounded_by_their_product(pkg):
    data = json.loads((pkg / "manifest.json").read_text())
    data["inputs"][0]["shape"] = [1, 1048576, 1048576]
    (pkg / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(PackageError, match="elements per sample"):
        Manifest.open(pkg, verify=False)


def test_image_decompression_bombs_are_one_line(pkg, tmp_path):
    from PIL import Image

    big = tmp_path / "big.png"
    Image.new("L", (9000, 9000)).save(big)  # 81 Mpx: over the cap, small on disk
    res = run_cli_in_process("run", str(pkg), str(big))
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert "pixels" in res.stderr or "decompression bomb" in res.stderr


# 4 ---------------------------------------------------------------------------------------------

def test_sigint_at_the_swap_never_loses_the_package(small, tmp_path):
    """Interrupted right where the old code renamed dest away: dest still names a complete
    package (the old one or the new), and the next export leaves no strays."""
    pkg = tmp_path / "pkg"
    shutil.copytree(small / "pkg", pkg)
    before = snapshot(pkg)
    proc = spawn_parked(tmp_path, "call:cephalon_edge.fsutil:exchange", "export", str(small / "m.cephalon"),
                  "--target", "onnx", "-o", str(pkg), "--force", "--no-verify")
    proc.send_signal(signal.SIGINT)  # parked in a sleep: the interrupt lands there
    proc.wait(timeout=60)
    assert proc.returncode == 130
    assert snapshot(pkg) == before
    assert [p.name for p in tmp_path.glob(".pkg.*")] == []  # the partial was cleaned up


def test_a_crash_between_fallback_renames_is_recovered(small, tmp_path):
    """Where the atomic exchange is unavailable, a writer killed between its two renames
    leaves the previous package as .old: the next writer restores it, never deletes it."""
    from cephalon_edge.fsutil import restore_stale_old

    pkg = tmp_path / "pkg"
    shutil.copytree(small / "pkg", tmp_path / ".pkg.999999.abcd.old")  # pid 999999: not running
    restore_stale_old(pkg)
    assert Manifest.open(pkg).data["format"] == "cephalon-edge/2"
    assert not list(tmp_path.glob(".pkg.*"))


def test_concurrent_exports_both_succeed_one_after_the_other(small, tmp_path):
    """Two exports to one destination: the writer lock serialises them (one crashed with
    'Directory not empty' before)."""
    pkg = tmp_path / "pkg"
    args = ["export", str(small / "m.cephalon"), "--target", "onnx", "-o", str(pkg), "--force", "--no-verify"]
    exe = Path(sys.executable).parent / "cephalon-edge"
    procs = [subprocess.Popen([str(exe), *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) for _ in range(2)]
    errors = [p.communicate(timeout=600)[1].decode() for p in procs]
    assert [p.returncode for p in procs] == [0, 0], errors
    assert Manifest.open(pkg).data["format"] == "cephalon-edge/2"
    assert [p.name for p in tmp_path.glob(".pkg*")] == []


# 5 ---------------------------------------------------------------------------------------------

def test_calibrate_refuses_to_write_over_a_replaced_package(small, tmp_path, monkeypatch):
    """An export replaces the package while calibrate measures: calibrate exits 1 naming the
    race and the new package keeps its own manifest (it was marked calibrated with the old
    model's thresholds before)."""
    import cephalon_edge.tune.calibrate as calibrate
    from cephalon_edge.errors import ConcurrentChange

    pkg = tmp_path / "pkg"
    shutil.copytree(small / "pkg", pkg)
    real = calibrate.measure_test

    def replaced_meanwhile(*args, **kwargs):
        export_package(small / "m.cephalon", pkg, ExportSpec("onnx", verify=False, force=True, threshold=0.5))
        return real(*args, **kwargs)

    monkeypatch.setattr(calibrate, "measure_test", replaced_meanwhile)
    with pytest.raises(ConcurrentChange, match="changed while this command ran"):
        calibrate.calibrate_package(pkg, calibrate.CalibrateSpec(data=str(small / "data.npz")))
    manifest = Manifest.open(pkg)
    assert manifest.calibrated is False and set(manifest.thresholds.values()) == {0.5}
    assert ConcurrentChange.exit_code == 1


def test_a_swapped_static_model_is_refused_when_opened(pkg, tmp_path):
    from cephalon_edge.device.router import Router

    with Router.open(pkg) as router:
        (pkg / "static.onnx").write_bytes((pkg / "adapter.image+stage0+exit0.onnx").read_bytes())
        with pytest.raises(PackageError, match="static.onnx does not match its sha256"):
            router.runtime.static_runner()


# 6 ---------------------------------------------------------------------------------------------

def test_bracketed_paths_are_printed_as_text(pkg, tmp_path):
    odd = tmp_path / "odd[dir]"
    odd.mkdir()
    res = run_cli_in_process("run", str(pkg), str(odd / "missing[bold].npy"))
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert "odd[dir]/missing[bold].npy" in res.stderr
    res = run_cli_in_process("run", str(pkg), str(tmp_path / "[/x].npy"))
    assert res.returncode == 2 and "[/x].npy" in res.stderr and "MarkupError" not in res.stderr
    bad = tmp_path / "bad.npy"
    np.save(bad, np.zeros((2, 3), np.float32))
    res = run_cli_in_process("run", str(pkg), str(bad))
    assert "[batch, 1, 12, 12]" in res.stderr  # shapes keep their brackets


def test_bracketed_serials_and_device_lines_are_text(small, fake_adb, tmp_path):
    env, devices, state, binary = fake_adb
    devices([{"serial": "[/x]", "state": "unauthorized", "props": {}},
             {"serial": "[bold]phone one", "state": "device", "props": PIXEL}])
    res = run_cli_in_process("devices", env=env)
    assert res.returncode == 0, res.stderr
    assert "[/x]" in res.stdout and "[bold]phone one" in res.stdout


# 7 ---------------------------------------------------------------------------------------------

def test_a_segment_of_another_shape_is_refused_at_open(pkg):
    from cephalon_edge.device.manifest import sha256_file
    from cephalon_edge.device.router import Router

    data = json.loads((pkg / "manifest.json").read_text())
    first, last = data["segments"]  # adapter.image+stage0+exit0, stage1+head.class
    # a valid graph of another shape: 12x12 in, 8 channels at 12x12 out, where 8 channels at 6x6 go in
    shutil.copy(pkg / first["file"], pkg / last["file"])
    last["sha256"] = sha256_file(pkg / last["file"])
    (pkg / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(PackageError, match="segment stage1\\+head.class"):
        Router.open(pkg)


# 8 ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("where", ["manifest", "checkpoint_header", "metadata", "spec"])
def test_deep_json_nesting_is_one_line(small, tmp_path, where):
    deep = "[" * 100_000 + "]" * 100_000
    if where == "manifest":
        pkg = tmp_path / "pkg"
        shutil.copytree(small / "pkg", pkg)
        (pkg / "manifest.json").write_text(deep)
        res = run_cli_in_process("run", str(pkg), str(small / "x.npy"))
    elif where == "spec":
        (tmp_path / "s.json").write_text(deep)
        pytest.importorskip("torch").save({}, tmp_path / "s.pt")
        res = run_cli_in_process("import", str(tmp_path / "s.pt"), "--spec", str(tmp_path / "s.json"), "-o", str(tmp_path / "o"))
    else:
        header = deep if where == "checkpoint_header" else json.dumps({"__metadata__": {"cephalon": deep}})
        raw = header.encode()
        (tmp_path / "c.cephalon").write_bytes(len(raw).to_bytes(8, "little") + raw)
        res = run_cli_in_process("inspect", str(tmp_path / "c.cephalon"))
    assert res.returncode == 2, res.stderr
    assert "Traceback" not in res.stderr and "RecursionError" not in res.stderr


@pytest.mark.parametrize("metadata", [["a"], {"cephalon": ["x"]}, {"cephalon": 5}])
def test_metadata_of_the_wrong_type_is_one_line(tmp_path, metadata):
    raw = json.dumps({"__metadata__": metadata}).encode()
    (tmp_path / "c.cephalon").write_bytes(len(raw).to_bytes(8, "little") + raw)
    res = run_cli_in_process("inspect", str(tmp_path / "c.cephalon"))
    assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr


def test_manifest_that_is_a_directory_and_huge_thresholds(small, tmp_path):
    pkg = tmp_path / "pkg"
    shutil.copytree(small / "pkg", pkg)
    text = (pkg / "manifest.json").read_text()
    (pkg / "manifest.json").unlink()
    (pkg / "manifest.json").mkdir()
    res = run_cli_in_process("run", str(pkg), str(small / "x.npy"))
    assert res.returncode == 2 and "Traceback" not in res.stderr and "directory" in res.stderr
    (pkg / "manifest.json").rmdir()
    (pkg / "manifest.json").write_text(text.replace('"exit0": 0.9', '"exit0": 1e400'))
    res = run_cli_in_process("run", str(pkg), str(small / "x.npy"))
    assert res.returncode == 2 and "finite" in res.stderr and "Traceback" not in res.stderr


def test_npz_renamed_npy_and_float64_overflow(small, tmp_path):
    np.savez(tmp_path / "a.npz", x=np.zeros((1, 12, 12), np.float32))
    os.rename(tmp_path / "a.npz", tmp_path / "a.npy")
    res = run_cli_in_process("run", str(small / "pkg"), str(tmp_path / "a.npy"))
    assert res.returncode == 2 and ".npz archive" in res.stderr and "Traceback" not in res.stderr
    np.save(tmp_path / "big.npy", np.full((1, 12, 12), 1e300))
    res = run_cli_in_process("run", str(small / "pkg"), str(tmp_path / "big.npy"))
    assert res.returncode == 2 and "float32" in res.stderr


def test_nan_gate_threshold_is_refused(pkg):
    from cephalon_edge.device.program import Program

    with pytest.raises(PackageError, match="threshold"):
        Program.parse([{"op": "encode", "adapters": {"image": "a"}},
                       {"op": "gate", "gate": "g", "block": "b", "index": 0, "threshold": float("nan")},
                       {"op": "final", "part": "h", "exit": "final", "index": 0, "tasks": {}}],
                      {"a": 1, "g": 1, "b": 1, "h": 2}, ["image"])


def test_undecodable_adb_output_is_data(tmp_path):
    from cephalon_edge.tune.bench.adb import Adb

    fake = tmp_path / "adb"
    fake.write_text("#!/bin/sh\nprintf 'List of devices attached\\n\\377\\376phone\\toffline\\n'\n")
    fake.chmod(0o755)
    found = Adb(str(fake)).devices()
    assert [d.state for d in found] == ["offline"] and "\ufffd" in found[0].serial


# 9 ---------------------------------------------------------------------------------------------

def test_fifos_and_symlinked_manifests_are_refused(small, tmp_path):
    pkg = tmp_path / "pkg"
    shutil.copytree(small / "pkg", pkg)
    (pkg / "manifest.json").unlink()
    os.mkfifo(pkg / "manifest.json")
    res = run_cli("run", str(pkg), str(small / "x.npy"), timeout=120)
    assert res.returncode == 2 and "not a regular file" in res.stderr
    (pkg / "manifest.json").unlink()
    os.symlink("/dev/zero", pkg / "manifest.json")
    res = run_cli("run", str(pkg), str(small / "x.npy"), timeout=120)
    assert res.returncode == 2 and "symlink" in res.stderr
    os.mkfifo(tmp_path / "in.npy")
    res = run_cli("run", str(small / "pkg"), str(tmp_path / "in.npy"), timeout=120)
    assert res.returncode == 2 and "not a regular file" in res.stderr
    os.mkfifo(tmp_path / "c.cephalon")
    res = run_cli("inspect", str(tmp_path / "c.cephalon"), timeout=120)
    assert res.returncode == 2 and "not a regular file" in res.stderr


def test_manifest_size_is_capped(pkg):
    data = json.loads((pkg / "manifest.json").read_text())
    data["padding"] = "x" * (9 << 20)
    (pkg / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(PackageError, match="bytes; more than"):
        Manifest.open(pkg)


def test_too_many_adb_devices_is_one_line(tmp_path):
    from cephalon_edge.tune.bench.adb import Adb

    fake = tmp_path / "adb"
    fake.write_text("#!/bin/sh\necho 'List of devices attached'\nseq 1 200000 | sed 's/$/\\tdevice/'\n")
    fake.chmod(0o755)
    with pytest.raises(DeviceError, match="at most"):
        Adb(str(fake)).devices()


# 10 --------------------------------------------------------------------------------------------

def test_sigterm_cleans_up_like_ctrl_c(small, tmp_path):
    pkg = tmp_path / "pkg"
    proc = spawn_parked(tmp_path, "call:torch.onnx:export:2", "export", str(small / "m.cephalon"), "--target", "onnx",
                  "-o", str(pkg), "--no-verify")
    assert list(tmp_path.glob(".pkg.*.partial"))  # half written
    proc.terminate()
    proc.wait(timeout=60)
    assert proc.returncode == 143
    assert not pkg.exists() and not list(tmp_path.glob(".pkg*"))


# 11 --------------------------------------------------------------------------------------------

def test_device_abi_must_be_known_and_serials_may_hold_spaces(small, fake_adb, tmp_path):
    env, devices, state, binary = fake_adb
    tfl = tmp_path / "tfl"
    export_package(small / "m.cephalon", tfl, ExportSpec("tflite", verify=False))
    devices([{"serial": "phone one", "state": "device", "props": {**PIXEL, "ro.product.cpu.abi": "../../evilabi"}}])
    res = run_cli_in_process("bench", str(tfl), "--device", "phone one", "--data", str(small / "data.npz"), env=env)
    assert res.returncode == 1 and "unknown CPU ABI" in res.stderr, res.stderr
    devices([{"serial": "phone one", "state": "device", "props": PIXEL}])
    res = run_cli_in_process("devices", "--json", str(tmp_path / "d.json"), env=env)
    assert json.loads((tmp_path / "d.json").read_text())["devices"][0]["serial"] == "phone one"


# 13 --------------------------------------------------------------------------------------------

def test_export_checks_paths_before_importing_torch(tmp_path):
    code = ("import sys\nfrom cephalon_edge.cli import main\n"
            "try:\n    main(['export', 'nope.cephalon', '--target', 'onnx', '-o', 'out'])\n"
            "except SystemExit as e:\n    print(e.code, 'torch' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert out.stdout.split() == ["2", "False"], out.stderr
    assert "checkpoint not found: nope.cephalon" in out.stderr


def test_compress_writes_its_output_last(small, tmp_path):
    """Parked in the final evaluation (the second measure), the output must not exist yet."""
    out = tmp_path / "c.cephalon"
    proc = spawn_parked(tmp_path, "call:cephalon_edge.toolchain.compress.workflow:measure:2", "compress", str(small / "m.cephalon"),
                  "-o", str(out), "--prune", "0.3", "--data", str(small / "data.npz"))
    proc.kill()
    proc.wait()
    assert not out.exists()
    res = run_cli_in_process("compress", str(small / "m.cephalon"), "-o", str(out), "--prune", "0.3", "--data",
                             str(small / "data.npz"), "--json", str(tmp_path / "r.json"))
    assert res.returncode == 0, res.stderr
    assert json.loads((tmp_path / "r.json").read_text())["after"]["size_bytes"] == out.stat().st_size


def test_ctrl_c_during_device_bench_stops_and_cleans_up(small, fake_adb, tmp_path):
    """Ctrl-C (to the whole process group, as a terminal sends it) while a device runs its
    first segment: no further segment starts, the device folder is removed, exit 130."""
    env, devices, state, binary = fake_adb
    tfl = tmp_path / "tfl"
    export_package(small / "m.cephalon", tfl, ExportSpec("tflite", verify=False))
    devices([{"serial": "p1", "state": "device", "props": PIXEL, "hang_at": "run"}])
    exe = Path(sys.executable).parent / "cephalon-edge"
    proc = subprocess.Popen([str(exe), "bench", str(tfl), "--device", "p1", "--data", str(small / "data.npz"),
                             "--benchmark-binary", str(binary), "--runs", "2", "--warmup", "0"],
                            env={**os.environ, **env}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True, preexec_fn=interruptible)
    # the first segment's run has started on the device
    wait_for((state / "p1.running").exists, proc, "the first segment ran on the device")
    os.killpg(proc.pid, signal.SIGINT)
    proc.wait(timeout=120)
    assert proc.returncode == 130
    assert len((state / "p1.runs").read_text().splitlines()) == 1  # nothing started after Ctrl-C
    assert not (state / "p1" / "data" / "local" / "tmp" / "cephalon-edge").exists() and \
        not [p for p in (state / "p1").rglob("*") if p.is_file()]


def test_control_characters_are_shown_never_sent_to_the_terminal(tmp_path):
    """An OSC-8 hyperlink or any ESC sequence in user text (here a path) prints as \\xNN."""
    from cephalon_edge.cli.render import escape, plain

    assert plain("a\x1b[31mb\x9bc\td\n") == "a\\x1b[31mb\\x9bc\td\n" and escape("[x]\x07") == "\\[x]\\x07"
    evil = tmp_path / "x\x1b]8;;https:evil.example\x07click\x1b]8;;\x07.cephalon"
    res = run_cli_in_process("inspect", str(evil))
    assert res.returncode == 2 and "not found" in res.stderr
    assert not {"\x1b", "\x07"} & set(res.stderr) and "\\x1b]8;;https:evil.example\\x07click" in res.stderr


def test_array_headers_and_deflate_bombs_are_checked_before_loading(pkg, tmp_path):
    """A header declaring 2^40 samples, a header declaring more than the file holds, and an .npz
    whose member unpacks a little file into gigabytes: one line each, nothing allocated."""
    import zipfile

    from cephalon_edge.device.arrays import check_npz
    from cephalon_edge.device.data import load_npz
    from cephalon_edge.errors import DataError

    header = np.lib.format.header_data_from_array_1_0(np.zeros((1, 1, 8, 8), np.float32))
    huge = tmp_path / "huge.npy"
    with open(huge, "wb") as f:
        np.lib.format.write_array_header_1_0(f, {**header, "shape": (1 << 40, 1, 8, 8)})
        f.write(b"\0" * 256)
    res = run_cli_in_process("run", str(pkg), str(huge))  # was an _ArrayMemoryError traceback
    assert res.returncode == 2 and "declares 281474976710656 bytes" in " ".join(res.stderr.split()) and "Traceback" not in res.stderr
    short = tmp_path / "short.npz"
    with zipfile.ZipFile(short, "w") as z:
        with z.open("image.npy", "w") as f:
            np.lib.format.write_array_header_1_0(f, {**header, "shape": (1000, 1, 8, 8)})
            f.write(b"\0" * 256)
        z.writestr("labels.npy", b"")
    with pytest.raises(DataError, match="declares 256000 bytes of data; the file holds 256"):
        load_npz(short)
    bomb = tmp_path / "bomb.npz"
    with zipfile.ZipFile(bomb, "w", compression=zipfile.ZIP_DEFLATED) as z:
        with z.open("image.npy", "w") as f:
            np.lib.format.write_array_header_1_0(f, {**header, "shape": (1 << 16, 1, 8, 8)})
            for _ in range(16):
                f.write(b"\0" * (1 << 20))
    assert bomb.stat().st_size < 100_000
    with pytest.raises(DataError, match="unpack to .* more than the 1000000 read"):
        check_npz(bomb, "bomb.npz", limit=1_000_000)
    big = tmp_path / "big.npz"  # under the cap, but 1 MB unpacking into 128 MB: a bomb, not data
    with zipfile.ZipFile(big, "w", compression=zipfile.ZIP_DEFLATED) as z:
        with z.open("image.npy", "w") as f:
            np.lib.format.write_array_header_1_0(f, {**header, "shape": (1 << 19, 1, 8, 8)})
            for _ in range(128):
                f.write(b"\0" * (1 << 20))
    with pytest.raises(DataError, match="refused as a decompression bomb"):
        load_npz(big)
