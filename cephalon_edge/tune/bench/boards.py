"""Linux boards over SSH: the real router, end to end, on the board.

``bench --ssh HOST`` copies the package and the data split (as an ``.npz``) to the board,
runs the board's own ``cephalon-edge bench`` there (the torch-free device half, installed by
``--setup`` from this checkout) at the board profile's settings and brings its report back:
measured routed latency, per-segment latency, the static model at the runtime's defaults and
the honest speedup, in the shape of the Android report (``devices[]``). Beside it, the
expected latency priced from the board's segment latencies the way phones are priced
(``price_on_device``): the gap says how far the phones' estimate can be trusted. Boards run in
parallel; one failing is reported in its row and the others finish.
"""

from __future__ import annotations

import hashlib
import secrets
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from cephalon_edge.device.data import save_npz
from cephalon_edge.device.manifest import Manifest
from cephalon_edge.device.mixes import mix_name
from cephalon_edge.device.profiles import match_board
from cephalon_edge.device.router import Router
from cephalon_edge.device.runtimes import open_runtime
from cephalon_edge.device.variants import is_variants_package
from cephalon_edge.errors import DeviceError, UsageError
from cephalon_edge.targets import Target, get_target
from cephalon_edge.tune.bench.device_wheel import device_wheel, host_version
from cephalon_edge.tune.bench.host import BenchSpec, bench_data, validate
from cephalon_edge.tune.bench.parallel import run_each
from cephalon_edge.tune.bench.pricing import price_on_device
from cephalon_edge.tune.bench.report import DeviceRow, DevicesReport
from cephalon_edge.tune.bench.ssh import Board, BoardAddress, BoardError, ssh_executable

DATA_NAME = "data.npz"


@dataclass(frozen=True)
class Upload:
    name: str  # path inside the package (or the data file's name)
    path: Path
    sha256: str
    size: int


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def package_uploads(package: Path) -> list[Upload]:
    """Every regular file of the package (symbolic links are refused: a package holds files)."""
    uploads = []
    for path in sorted(Path(package).rglob("*")):
        if path.is_symlink():
            raise UsageError(f"{path}: a link inside the package", hint="a package holds plain files; re-export it")
        if path.is_file():
            uploads.append(Upload(path.relative_to(package).as_posix(), path, sha256_file(path), path.stat().st_size))
    return uploads


def boards(addresses: list[str], config: Path | None) -> list[Board]:
    if not addresses:
        raise UsageError("no board given", hint="pass --ssh [USER@]HOST[:PORT] (repeatable) or --ssh-file HOSTS")
    if config is not None and not Path(config).is_file():
        raise UsageError(f"ssh config not found: {config}")
    parsed = [BoardAddress.parse(a) for a in addresses]
    seen = [a.text for a in parsed]
    if len(set(seen)) != len(seen):
        raise UsageError("a board is given twice", hint="each --ssh names one board once")
    ssh_executable()
    return [Board(a, config) for a in parsed]


def _describe(probe: dict[str, Any]) -> dict[str, Any]:
    half = probe.get("device_half")
    return {"model": probe.get("model"), "machine": probe.get("machine"), "cores": probe.get("cores"),
            "memory_bytes": probe.get("memory_bytes"), "os": probe.get("os"), "python": probe.get("python"),
            "device_half": half["version"] if half else None, "extras": half["extras"] if half else [],
            "runtimes": probe.get("runtimes", []), "profile": match_board(probe.get("model"), probe.get("machine")),
            "cache": probe.get("cache"), "free_bytes": probe.get("free_bytes")}


def list_boards(addresses: list[str], config: Path | None = None) -> list[dict[str, Any]]:
    """``devices --ssh``: each board's description, or the reason it could not be reached."""
    chosen = boards(addresses, config)
    rows: list[dict[str, Any]] = [{} for _ in chosen]

    def one(i: int, board: Board) -> None:
        row: dict[str, Any] = {"platform": "linux", "serial": board.name}
        try:
            row |= {"state": "ready", "message": None, **_describe(board.call("probe", step="connect"))}
            if not row["device_half"]:
                row["message"] = f"{board.name}: the device half is not installed (bench --ssh {board.name} --setup installs it)"
            elif row["device_half"] != host_version():
                row["message"] = (f"{board.name}: cephalon-edge {row['device_half']} is installed, this host runs "
                                  f"{host_version()} (bench --ssh {board.name} --setup updates it)")
        except BoardError as exc:
            row |= {"state": "unreachable", "message": exc.message + (f" ({exc.hint})" if exc.hint else ""),
                    "profile": None}
        rows[i] = row

    with ThreadPoolExecutor(max_workers=len(chosen)) as pool:
        list(pool.map(one, range(len(chosen)), chosen))
    return rows


class _BoardRun:
    """One board's bench; keeps what it learnt so far when the board goes away."""

    def __init__(self, board: Board, target: Target, spec: BenchSpec, setup: bool,
                 on_progress: Callable[[str], None]) -> None:
        self.board, self.target, self.spec, self.setup = board, target, spec, setup  # setup: install first
        self.uploads: list[Upload] = []
        self.copied = 0
        self.on_progress = on_progress
        self.run_id = secrets.token_hex(8)
        self.step = "connect"
        self.probe: dict[str, Any] = {}
        self.profile_name: str | None = None
        self.uploaded: list[str] = []
        self.report: dict[str, Any] | None = None
        self.cancelled = threading.Event()

    def _next(self, step: str) -> None:
        if self.cancelled.is_set():
            raise BoardError(f"{self.board.name}: cancelled before {step}")
        self.step = step
        self.on_progress(f"{self.board.name}: {step}")

    def connect(self) -> None:
        """What the board is, and whether it can run the package (or be set up to): before
        any data is loaded."""
        self._next("connect")
        self.probe = self.board.call("probe", step="connect")
        self.profile_name = self.spec.profile if self.spec.profile != "host-cpu" else \
            match_board(self.probe.get("model"), self.probe.get("machine"))
        self._check_python()
        if not self.setup:
            self._check_runtime(self._check_installed())

    def run(self, uploads: list[Upload], wheel: Upload | None) -> None:
        self.uploads = uploads
        if wheel is not None:
            self._check_runtime(self.install(wheel))
        self.copied = self.copy(self.uploads)
        self._next("bench")
        result = self.board.call("bench", {"run_id": self.run_id, "bench_args": self._bench_args(),
                                           "files": {u.name: u.sha256 for u in self.uploads if u.name != DATA_NAME},
                                           "data": next(u.sha256 for u in self.uploads if u.name == DATA_NAME)},
                                 on_event=self._event, step="bench")
        self.report = result["report"]

    def _event(self, event: dict[str, Any]) -> None:
        if event.get("event") == "started":
            self.on_progress(f"{self.board.name}: benchmarking on the board")
        elif event.get("event") == "step":
            self.on_progress(f"{self.board.name}: {event.get('step')}")

    def _check_runtime(self, runtimes: list[str]) -> None:
        if self.target.runtime not in runtimes:
            raise BoardError(f"{self.board.name}: no {self.target.runtime} runtime in the board's device half for "
                             f"this {self.target.display} package",
                             hint=f"bench --ssh {self.board.name} --setup installs the '{self.target.extra}' extra",
                             usage=True)

    def _check_python(self) -> None:
        if not self.probe.get("python_ok"):
            raise BoardError(f"{self.board.name}: the board has Python {self.probe.get('python')}; "
                             "the device half needs 3.11 or newer", usage=True,
                             hint="install python3.11 (and its venv module) on the board")

    def _check_installed(self) -> list[str]:
        half = self.probe.get("device_half")
        fix = f"cephalon-edge bench PACKAGE --ssh {self.board.name} --setup"
        if not half:
            raise BoardError(f"{self.board.name}: the device half is not installed on the board", usage=True,
                             hint=f"`{fix}` installs it into the board's cache")
        if half["version"] != host_version():
            raise BoardError(f"{self.board.name}: the board runs cephalon-edge {half['version']}, this host "
                             f"{host_version()}", usage=True, hint=f"`{fix}` installs this host's version")
        return list(self.probe.get("runtimes", []))

    def install(self, wheel: Upload) -> list[str]:
        """This checkout's device half into the board's venv, with the target's extra; the
        runtimes it then has."""
        self.copy([wheel])
        self._next("setup")
        done = self.board.call("setup", {"run_id": self.run_id, "wheel": wheel.name, "sha256": wheel.sha256,
                                         "extras": [self.target.extra], "version": host_version()},
                               on_event=self._event, step="setup")
        self.probe["device_half"] = done["installed"]
        return list(done["runtimes"])

    def copy(self, uploads: list[Upload]) -> int:
        """The files the board does not have yet (by sha256), each acknowledged as stored;
        returns how many were copied."""
        self._next("copy")
        have = set(self.board.call("have", {"hashes": [u.sha256 for u in uploads]}, step="copy")["have"])
        missing = list({u.sha256: u for u in uploads if u.sha256 not in have}.values())
        if not missing:
            return 0
        need, free = sum(u.size for u in missing), self.probe.get("free_bytes")
        if free is not None and need > free:
            raise BoardError(f"{self.board.name}: the board has {free / 1e6:.1f} MB free in {self.probe.get('cache')} "
                             f"and this run copies {need / 1e6:.1f} MB", usage=True,
                             hint="free space there (old runs' files are in its store/ directory)")
        self.uploaded += [u.sha256 for u in missing]

        def stored(event: dict[str, Any]) -> None:
            if event.get("event") == "stored":
                self.on_progress(f"{self.board.name}: copied {event.get('name')}")

        self.board.call("put", {"files": [{"sha256": u.sha256, "size": u.size, "name": u.name} for u in missing]},
                        payload=(u.path.read_bytes() for u in missing), on_event=stored, step="copy")
        return len(missing)

    def _bench_args(self) -> list[str]:
        spec = self.spec
        args = ["--profile", str(self.profile_name), "--runs", str(spec.runs), "--warmup", str(spec.warmup)]
        if spec.threads:
            args += ["--threads", str(spec.threads)]
        if spec.modality:
            args += ["--modality", spec.modality]
        return args

    def cancel(self) -> None:
        """Ctrl-C: stop the connection, then remove the run and what this run copied."""
        self.cancelled.set()
        self.board.kill()
        try:
            self.board.call("clean", {"run_id": self.run_id, "uploaded": self.uploaded}, step="cleanup")
        except (BoardError, DeviceError):
            pass


def bench_boards(package: Path, spec: BenchSpec, addresses: list[str], config: Path | None = None,
                 setup: bool = False, on_progress: Callable[[str], None] | None = None) -> DevicesReport:
    """``bench --ssh``: ``package`` on every board in parallel; failures are in ``failed``."""
    validate(spec)
    step = on_progress or (lambda _: None)
    chosen = boards(addresses, config)
    if is_variants_package(Path(package)):
        raise UsageError("bench --ssh takes one package; this is a variants package",
                         hint="bench one variant's package directory (e.g. PKG/w0.5) on the board")
    manifest = Manifest.open(Path(package))
    target = get_target(manifest.target)
    runs = [_BoardRun(b, target, spec, setup, step) for b in chosen]
    errors = _run_all(runs, _BoardRun.connect)
    _refuse_if_no_board_can_run(runs, errors)  # before any data is loaded
    data = bench_data(manifest, spec.data, spec.label_map)
    if spec.samples:
        data = data.subset(np.arange(min(spec.samples, len(data))))
    mix = data.select_mixes(spec.modality, list(manifest.inputs))[-1]
    # the routes this package takes on the data, here: priced with the board's segment
    # latencies as a phone's would be (the expected latency beside the measured one)
    with Router(manifest, open_runtime("auto", manifest)) as router:
        pred = router.predict(data.with_mix(mix).inputs)
    step("exit mix measured")
    with tempfile.TemporaryDirectory(prefix="cephalon-board-") as tmp:
        data_file = Path(tmp) / DATA_NAME
        save_npz(data, data_file)
        uploads = package_uploads(Path(package))
        if any(u.name == DATA_NAME for u in uploads):
            raise UsageError(f"the package holds a file named {DATA_NAME}, which bench --ssh uses for the data")
        uploads.append(Upload(DATA_NAME, data_file, sha256_file(data_file), data_file.stat().st_size))
        wheel = None
        if setup:  # built here once, whatever the number of boards
            path = device_wheel()
            wheel = Upload(path.name, path, sha256_file(path), path.stat().st_size)
        errors |= _run_all([r for r in runs if r.board.name not in errors], lambda r: r.run(uploads, wheel))
    _refuse_if_no_board_can_run(runs, errors)  # e.g. the data does not fit on the only board
    devices = [_entry(run, errors.get(run.board.name), manifest, pred, list(data.with_mix(mix).inputs), data.name)
               for run in runs]
    return DevicesReport(str(package), target.runtime, mix_name(mix), spec.profile, devices,
                         details={"dataset": data.name})


def _refuse_if_no_board_can_run(runs: list[_BoardRun], errors: dict[str, DeviceError]) -> None:
    """Every board failed, each for a reason the user fixes before running: one line, exit 2."""
    usage = [e for e in errors.values() if isinstance(e, BoardError) and e.usage]
    if len(usage) == len(runs):
        raise UsageError("; ".join(e.message for e in usage), hint=usage[0].hint)


def _run_all(runs: list[_BoardRun], work: Callable[[_BoardRun], None]) -> dict[str, DeviceError]:
    """``work`` on every board in parallel; each board's failure is kept by its name. Ctrl-C:
    every connection is killed, then each board loses what this run copied there."""
    errors: dict[str, DeviceError] = {}

    def one(run: _BoardRun) -> None:
        try:
            work(run)
        except DeviceError as exc:  # BoardError included
            errors[run.board.name] = exc

    def stop(run: _BoardRun) -> None:
        run.cancelled.set()
        run.board.kill()

    run_each(runs, one, stop)
    return errors


def _entry(run: _BoardRun, error: DeviceError | None, manifest: Manifest, pred: Any,
           modalities: list[str], dataset: str) -> DeviceRow:
    probe = run.probe
    row = DeviceRow(run.board.name, probe.get("model"), run.profile_name)
    row.details |= {"platform": "linux", "machine": probe.get("machine"), "cores": probe.get("cores"),
                    "os": probe.get("os"), "copied_files": run.copied}
    if error is not None:
        row.fail(error.message + (f" ({error.hint})" if error.hint else ""), run.step)
        return row
    report = run.report or {}  # the board's own bench report: the router measured there
    row.segments, row.static, row.speedup = report.get("segments") or [], report.get("static"), report.get("speedup")
    measured = row.end_to_end = report.get("end_to_end")
    for key in ("runtime", "threads", "routing_pays", "modality_mixes", "routing_usage", "peak_rss_bytes", "note"):
        row.details[key] = report.get(key)
    for e2e in [measured, *[m["end_to_end"] for m in (report.get("modality_mixes") or {}).values()]]:
        if e2e:
            e2e["dataset"] = dataset  # the host's name for it, not the copy's path on the board
    if row.segments and measured:
        expected = price_on_device(manifest, pred, row.segments, modalities)
        row.details |= {"expected": expected, "expected_vs_measured": expected["mean_ms"] / measured["mean_ms"]}
    return row
