"""Linux boards over SSH, for real: Debian's sshd on 127.0.0.1 (started here, throwaway keys)
is the board, this machine behind it. ``--setup`` installs the device half there from this
checkout, the package and data are copied, the board's own ``cephalon-edge bench`` runs the
router and its report comes back. Faults are made at points of the program's own progress."""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import sshd
from conftest import run_cli_in_process, small_digits_package

pytestmark = pytest.mark.skipif(sshd.why_not() is not None, reason=str(sshd.why_not()))

DEADLINE_S = 120  # a safety net for cleanup on the board, never a synchronisation


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """A board (sshd A) and a second one (sshd B) sharing one board cache, the client's key
    and ssh_config, and a calibrated ONNX and a TFLite package of a small digits model."""

    root = tmp_path_factory.mktemp("boards")
    client_key = sshd.keygen(root / "id_ed25519")
    cache = root / "board-cache"
    a = sshd.SshServer(root / "sshd-a", cache, client_key).start()
    b = sshd.SshServer(root / "sshd-b", cache, client_key).start()
    config = sshd.client_config(root / "ssh_config", root / "id_ed25519", [a.known_hosts_line(), b.known_hosts_line()])
    for target in ("onnx", "tflite"):
        small_digits_package(target, root / target)
    res = run_cli_in_process("calibrate", str(root / "onnx"), "--data", "digits:val", "--max-drop", "0.02")
    assert res.returncode == 0, res.stderr
    yield {"root": root, "a": a, "b": b, "config": config, "cache": cache / "board", "key": client_key}
    a.stop()
    b.stop()


def board_bench(lab, package: Path, *args: str, board: str = "a"):
    out = lab["root"] / f"report-{time.monotonic_ns()}.json"
    res = run_cli_in_process("bench", str(package), "--ssh", lab[board].address, "--ssh-config", str(lab["config"]),
                             "--data", "digits:test", "--samples", "120", "--runs", "5", "--warmup", "1", "--json", str(out), *args)
    return res, (json.loads(out.read_text()) if out.exists() else None)


def host_routes(package: Path, samples: int = 120):
    """What the router decides here on the same samples (the board must decide the same)."""
    from cephalon_edge.device.data import load_dataset
    from cephalon_edge.device.data_checks import Contract
    from cephalon_edge.device.manifest import Manifest
    from cephalon_edge.device.router import Router
    from cephalon_edge.device.runtimes import open_runtime

    manifest = Manifest.open(package)
    data = load_dataset("digits:test", Contract.from_manifest(manifest))
    data = data.subset(np.arange(samples))
    with Router(manifest, open_runtime("auto", manifest)) as router:
        pred = router.predict(data.inputs)
    return pred, data


def wait_until(ready, what: str) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not ready():
        assert time.monotonic() < deadline, f"the board never got to: {what}"
        time.sleep(0.05)


def test_setup_then_bench_runs_the_real_router_on_the_board(lab):
    pkg = lab["root"] / "onnx"
    res, report = board_bench(lab, pkg, "--setup")
    assert res.returncode == 0, res.stderr
    installed = json.loads((lab["cache"] / "venv" / "installed.json").read_text())
    assert installed["version"] == "0.1.0" and "onnx" in installed["extras"]
    (board,) = report["devices"]
    assert board["status"] == "ok" and board["device"] == lab["a"].address and board["machine"]
    manifest = json.loads((pkg / "manifest.json").read_text())
    assert [s["name"] for s in board["segments"]] == [s["name"] for s in manifest["segments"]]
    # the board routed the same samples to the same exits with the same answers as this host
    pred, data = host_routes(pkg)
    e2e = board["end_to_end"]
    assert e2e["samples"] == 120 and e2e["dataset"] == data.name
    assert e2e["accuracy"] == pytest.approx(float(np.mean(pred.predicted == data.labels)))
    rates = {name: float(np.mean(pred.exit_index == i)) for i, name in enumerate(e2e["exit_rates"])}
    assert e2e["exit_rates"] == pytest.approx(rates)
    assert 0 < rates["exit0"] < 1  # calibrated: some samples leave early, some go on
    assert board["speedup"] == pytest.approx(board["static"]["mean_ms"] / e2e["mean_ms"])
    assert board["expected_vs_measured"] == pytest.approx(board["expected"]["mean_ms"] / e2e["mean_ms"])
    assert board["copied_files"] == len(list(pkg.iterdir())) + 1  # the package's files and the data
    assert not list((lab["cache"] / "runs").iterdir())  # the run's directory is gone, the store stays
    assert "measured on" in res.stdout and "expected from its segment latencies" in res.stdout

    # again, without --setup: nothing is copied twice
    res, report = board_bench(lab, pkg)
    assert res.returncode == 0, res.stderr
    assert report["devices"][0]["copied_files"] == 0


def test_a_tflite_package_needs_its_runtime_and_setup_adds_it(lab):
    pkg = lab["root"] / "tflite"
    installed = json.loads((lab["cache"] / "venv" / "installed.json").read_text())
    if "tflite" not in installed["extras"]:
        res, _ = board_bench(lab, pkg)
        assert res.returncode == 2, res.stderr
        assert "no litert runtime" in res.stderr and "--setup" in res.stderr and "Traceback" not in res.stderr
    res, report = board_bench(lab, pkg, "--setup")
    assert res.returncode == 0, res.stderr
    board = report["devices"][0]
    assert board["runtime"] == "litert" and board["status"] == "ok"
    pred, data = host_routes(pkg)
    assert board["end_to_end"]["accuracy"] == pytest.approx(float(np.mean(pred.predicted == data.labels)))
    assert set(json.loads((lab["cache"] / "venv" / "installed.json").read_text())["extras"]) >= {"onnx", "tflite"}


def test_a_board_with_another_version_is_refused_with_the_fix(lab):
    record = lab["cache"] / "venv" / "installed.json"
    if not record.exists():
        board_bench(lab, lab["root"] / "onnx", "--setup")
    original = record.read_text()
    record.write_text(json.dumps({**json.loads(original), "version": "0.0.9"}))
    try:
        res, report = board_bench(lab, lab["root"] / "onnx")
    finally:
        record.write_text(original)
    assert res.returncode == 2 and report is None
    assert "runs cephalon-edge 0.0.9, this host 0.1.0" in res.stderr
    assert f"--ssh {lab['a'].address} --setup" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 2  # error and hint


@pytest.mark.parametrize("fault", ["host key unknown", "auth refused", "unreachable", "no python", "not installed"])
def test_each_board_problem_is_one_line_exit_2_before_any_work(lab, tmp_path, fault):
    config, address = lab["config"], lab["a"].address
    server = None
    if fault == "host key unknown":
        config = sshd.client_config(tmp_path / "cfg", lab["root"] / "id_ed25519", [])
    elif fault == "auth refused":
        sshd.keygen(tmp_path / "other")  # a key the board does not know
        config = sshd.client_config(tmp_path / "cfg", tmp_path / "other", [lab["a"].known_hosts_line()])
    elif fault == "unreachable":
        address = f"127.0.0.1:{sshd.free_port()}"
    else:  # a board of its own: python3 not on its PATH, or an empty cache
        # (the login shell's rc files may put a Python on PATH: sh with an empty PATH runs the command)
        no_python = 'env PATH=/nonexistent /bin/sh -c "$SSH_ORIGINAL_COMMAND"' if fault == "no python" else None
        server = sshd.SshServer(tmp_path / "srv", tmp_path / "cache", lab["key"], force_command=no_python).start()
        address = server.address
        config = sshd.client_config(tmp_path / "cfg", lab["root"] / "id_ed25519", [server.known_hosts_line()])
    try:
        res = run_cli_in_process("bench", str(lab["root"] / "onnx"), "--ssh", address, "--ssh-config", str(config),
                                 "--data", "digits:test", "--json", str(tmp_path / "r.json"))
    finally:
        if server:
            server.stop()
    assert res.returncode == 2, res.stderr
    assert "Traceback" not in res.stderr and not (tmp_path / "r.json").exists()
    error, hint = res.stderr.strip().splitlines()
    expected = {"host key unknown": ("host key is not known", "accept the key"),
                "auth refused": ("refused authentication", "IdentityFile"),
                "unreachable": ("refused the connection", "sshd running"),
                "no python": ("no python3", "install Python 3.11"),
                "not installed": ("device half is not installed", "--setup")}[fault]
    assert error.startswith(f"error: {address}: ") and expected[0] in error, error
    assert expected[1] in hint, hint
    if fault == "host key unknown":
        assert f"ssh -p {address.split(':')[1]} 127.0.0.1" in hint  # the command that shows the key
    if fault == "not installed":
        assert not list((tmp_path / "cache" / "board" / "store").iterdir())  # refused before copying anything


def test_two_boards_in_parallel_one_lost_mid_bench(lab, monkeypatch, tmp_path):
    """Board B goes away once its bench has started there: A's row is complete, B's says what
    happened, the command exits 1, and B's run directory is removed by the board's agent."""
    from typer.testing import CliRunner

    from cephalon_edge.cli import app
    from cephalon_edge.tune.bench import boards

    if not (lab["cache"] / "venv" / "installed.json").exists():
        board_bench(lab, lab["root"] / "onnx", "--setup")
    b = sshd.SshServer(tmp_path / "sshd-b2", lab["cache"].parent, lab["key"]).start()
    config = sshd.client_config(tmp_path / "cfg", lab["root"] / "id_ed25519",
                                [lab["a"].known_hosts_line(), b.known_hosts_line()])
    real_event = boards._BoardRun._event

    def event(self, message):
        real_event(self, message)
        if self.board.name == b.address and message.get("event") == "started":
            b.stop()  # the board disappears while its bench runs

    monkeypatch.setattr(boards._BoardRun, "_event", event)
    out = tmp_path / "r.json"
    res = CliRunner().invoke(app, ["bench", str(lab["root"] / "onnx"), "--ssh", lab["a"].address, "--ssh", b.address,
                                   "--ssh-config", str(config), "--data", "digits:test", "--samples", "60",
                                   "--runs", "3", "--warmup", "1", "--json", str(out)], env={"COLUMNS": "200"})
    b.stop()
    assert res.exit_code == 1, res.output
    rows = {d["device"]: d for d in json.loads(out.read_text())["devices"]}
    assert rows[lab["a"].address]["status"] == "ok" and rows[lab["a"].address]["end_to_end"]["samples"] == 60
    lost = rows[b.address]
    assert lost["status"] == "failed" and lost["step"] == "bench" and "connection lost during bench" in lost["error"]
    wait_until(lambda: not list((lab["cache"] / "runs").iterdir()), "removing the lost run's directory")


def test_a_connection_dropped_mid_copy_leaves_no_partial_file(lab, monkeypatch, tmp_path):
    from cephalon_edge.errors import UsageError
    from cephalon_edge.tune.bench import boards
    from cephalon_edge.tune.bench.host import BenchSpec

    if not (lab["cache"] / "venv" / "installed.json").exists():
        board_bench(lab, lab["root"] / "onnx", "--setup")
    pkg = tmp_path / "pkg"
    shutil.copytree(lab["root"] / "onnx", pkg)
    for upload in boards.package_uploads(pkg):  # make the board need every file again
        (lab["cache"] / "store" / upload.sha256).unlink(missing_ok=True)
    seen: list[str] = []

    def progress(message: str) -> None:
        seen.append(message)
        if ": copied " in message and len([m for m in seen if ": copied " in m]) == 1:
            lab["a"].drop_sessions()  # from the server's side, after the first file arrived

    spec = BenchSpec(data="digits:test", samples=30, runs=2, warmup=0)
    try:
        report = boards.bench_boards(pkg, spec, [lab["a"].address], lab["config"], on_progress=progress).to_json()
    except UsageError as exc:  # pragma: no cover - the failure must be the run's, not the user's
        pytest.fail(str(exc))
    (row,) = report["devices"]
    assert row["status"] == "failed" and row["step"] == "copy" and "connection lost during copy" in row["error"]
    store = lab["cache"] / "store"
    wait_until(lambda: not list(store.glob(".part-*")), "removing the partial file")
    assert not list((lab["cache"] / "runs").iterdir())


def test_board_addresses_profiles_and_the_agent_refuse_what_they_should(tmp_path, monkeypatch):
    from cephalon_edge.device.profiles import match_board
    from cephalon_edge.errors import UsageError
    from cephalon_edge.tune.bench import board_agent
    from cephalon_edge.tune.bench.ssh import Board, BoardAddress, agent_boot, agent_source, read_hosts_file

    a = BoardAddress.parse("pi@raspberrypi.local:2222")
    assert (a.user, a.host, a.port) == ("pi", "raspberrypi.local", 2222)
    assert BoardAddress.parse("[::1]:22").host == "::1"
    for bad in ("-oProxyCommand=touch x", "pi@host:99999", "host;rm -rf ~", "pi@", "a b"):
        with pytest.raises(UsageError):
            BoardAddress.parse(bad)
    command = Board(a).command()
    assert command[-3:] == ["--", "raspberrypi.local", agent_boot(agent_source())]  # the host is never an option
    assert hashlib.sha256(agent_source()).hexdigest() in command[-1]  # the board runs only this agent
    assert ["-p", "2222"] == command[command.index("-p"):command.index("-p") + 2] and "BatchMode=yes" in command
    (tmp_path / "hosts").write_text("# lab\npi@a.local\n\n  b.local:2200  # the second\n")
    assert read_hosts_file(tmp_path / "hosts") == ["pi@a.local", "b.local:2200"]

    assert match_board("Raspberry Pi 5 Model B Rev 1.0", "aarch64") == "raspberry-pi-5"
    assert match_board("NVIDIA Jetson Orin Nano Developer Kit", "aarch64") == "jetson-orin-nano"
    assert match_board("Rockchip RK3588 EVB", "aarch64") == "linux-aarch64"
    assert match_board(None, "x86_64") == "host-cpu"

    # the agent's own checks, on the board's side
    monkeypatch.setenv("CEPHALON_EDGE_CACHE", str(tmp_path / "cache"))
    for op, args in (("bench", {"run_id": "../../x", "files": {}, "data": "0" * 64, "bench_args": []}),
                     ("clean", {"run_id": "/etc"}),
                     ("setup", {"wheel": "evil.whl; rm", "extras": [], "sha256": "0" * 64, "run_id": "ab12cd34"})):
        monkeypatch.setattr(board_agent, "installed", lambda: {"version": "x"})
        with pytest.raises(board_agent.Refused):
            board_agent.OPERATIONS[op](args, None)
    staged = {"run_id": "ab12cd34", "files": {"../escape": "0" * 64}, "data": "0" * 64, "bench_args": []}
    with pytest.raises(board_agent.Refused, match="bad package path"):
        board_agent.op_bench(staged, None)
    assert not (tmp_path / "cache" / "board" / "runs" / "ab12cd34").exists()


def test_devices_describes_each_board_and_says_which_cannot_be_reached(lab, tmp_path):
    import os
    import platform

    if not (lab["cache"] / "venv" / "installed.json").exists():
        board_bench(lab, lab["root"] / "onnx", "--setup")
    closed = f"127.0.0.1:{sshd.free_port()}"
    res = run_cli_in_process("devices", "--ssh", lab["a"].address, "--ssh", closed, "--ssh-config", str(lab["config"]),
                             "--json", str(tmp_path / "d.json"))
    assert res.returncode == 0, res.stderr
    board, gone = json.loads((tmp_path / "d.json").read_text())["devices"]
    assert board["state"] == "ready" and board["machine"] == platform.machine() and board["cores"] == os.cpu_count()
    assert tuple(map(int, board["python"].split(".")[:2])) >= (3, 11)  # it runs the device half
    assert board["device_half"] == "0.1.0" and "onnxruntime" in board["runtimes"] and board["profile"] == "host-cpu"
    assert gone["state"] == "unreachable" and "refused the connection" in gone["message"]
    assert "unreachable" in res.stdout


def test_ctrl_c_stops_every_board_and_removes_what_the_run_copied(lab, tmp_path):
    """Ctrl-C while the boards bench: the interrupt surfaces in a board's progress callback
    (as it would anywhere); every connection is stopped, and each board loses the run's
    directory and the files this run copied there. The cache from earlier runs stays."""
    from cephalon_edge.tune.bench import boards
    from cephalon_edge.tune.bench.host import BenchSpec

    if not (lab["cache"] / "venv" / "installed.json").exists():
        board_bench(lab, lab["root"] / "onnx", "--setup")
    pkg = tmp_path / "pkg"
    shutil.copytree(lab["root"] / "onnx", pkg)
    manifest = json.loads((pkg / "manifest.json").read_text())
    manifest["source"]["note"] = "a copy for the interrupt test"  # a manifest the board has never seen
    (pkg / "manifest.json").write_text(json.dumps(manifest))
    new = boards.sha256_file(pkg / "manifest.json")
    store = lab["cache"] / "store"
    kept = sorted(p.name for p in store.iterdir())

    def progress(message: str) -> None:
        if message == f"{lab['a'].address}: benchmarking on the board":
            raise KeyboardInterrupt

    spec = BenchSpec(data="digits:test", samples=30, runs=2, warmup=0)
    with pytest.raises(KeyboardInterrupt):
        boards.bench_boards(pkg, spec, [lab["a"].address, lab["b"].address], lab["config"], on_progress=progress)
    wait_until(lambda: not list((lab["cache"] / "runs").iterdir()), "removing the runs' directories")
    assert not (store / new).exists()  # copied by this run: removed
    assert set(kept) <= {p.name for p in store.iterdir()}  # the cache of earlier runs: kept


@pytest.mark.parametrize("when", ["before the run", "during the copy"])
def test_a_full_disk_on_the_board(lab, tmp_path, when):
    """The board's store on a small tmpfs: too small from the start is refused before copying
    (exit 2); filled up while the files arrive, the row says so and nothing partial stays."""
    import subprocess

    from cephalon_edge.tune.bench import boards
    from cephalon_edge.tune.bench.host import BenchSpec

    if not (lab["cache"] / "venv" / "installed.json").exists():
        board_bench(lab, lab["root"] / "onnx", "--setup")
    cache = tmp_path / "cache"
    store = cache / "board" / "store"
    store.mkdir(parents=True)
    (cache / "board" / "venv").symlink_to(lab["cache"] / "venv")  # the device half, shared
    size = "64k" if when == "before the run" else "2m"
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(store)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    server = sshd.SshServer(tmp_path / "srv", cache, lab["key"]).start()
    try:
        config = sshd.client_config(tmp_path / "cfg", lab["root"] / "id_ed25519", [server.known_hosts_line()])
        spec = BenchSpec(data="digits:test", samples=60, runs=2, warmup=0)

        def progress(message: str) -> None:
            if message == f"{server.address}: copy" and when == "during the copy":
                with open(store / "filler", "wb") as f:  # someone else fills the disk
                    try:
                        f.write(b"\0" * (2 << 20))
                    except OSError:
                        pass

        if when == "before the run":
            res = run_cli_in_process("bench", str(lab["root"] / "onnx"), "--ssh", server.address, "--ssh-config", str(config),
                                     "--data", "digits:test")
            assert res.returncode == 2, res.stderr
            assert "MB free in" in res.stderr and "this run copies" in res.stderr and "Traceback" not in res.stderr
        else:
            report = boards.bench_boards(lab["root"] / "onnx", spec, [server.address], config, on_progress=progress).to_json()
            (row,) = report["devices"]
            assert row["status"] == "failed" and row["step"] == "copy"
            assert "No space left on device" in row["error"], row["error"]
        assert [p.name for p in store.iterdir()] in ([], ["filler"])  # no partial file
    finally:
        server.stop()
        subprocess.run(["umount", str(store)], capture_output=True)
