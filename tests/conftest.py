"""Shared helpers: tiny specs and models built inline, the CLI run in a subprocess or in this
worker, artifacts shared by the workers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

# One torch thread, in the test process and in every CLI it starts (OMP_NUM_THREADS, below):
# `./dev test` runs two pytest workers on two cores, and trained weights then do not depend
# on the machine or the runner (int8 agreement of a small model hangs on a sample or two).
torch.set_num_threads(1)
REPO = Path(__file__).resolve().parents[1]
# The CLI's consoles read COLUMNS once, when first imported: an xdist worker inherits 80 from a
# controller without a terminal, and tables run in this process (run_cli_in_process) would wrap
# where the subprocesses' (COLUMNS=200, run_cli) do not.
os.environ["COLUMNS"] = "200"

# The test files that take longest, scheduled first so that two workers finish together.
LONGEST_FIRST = ["test_zoo_digits.py", "test_demo.py", "test_architectures_export.py", "test_zoo.py", "test_architectures.py", "test_retrofit.py", "test_tflite_coreml.py", "test_multimodal.py", "test_executorch.py",
                 "test_train.py", "test_variants.py", "test_boards.py",
                 "test_export_specs.py",
                 "test_install.py", "test_hardening.py", "test_faults.py", "test_compress.py"]


def pytest_configure(config):
    """One directory per test session for artifacts the workers share (trained checkpoints):
    made by the controller, handed to the workers through the environment."""
    import tempfile

    if not hasattr(config, "workerinput") and "CEPHALON_TEST_SHARED" not in os.environ:
        os.environ["CEPHALON_TEST_SHARED"] = config._cephalon_shared = tempfile.mkdtemp(prefix="cephalon-test-shared-")


def pytest_unconfigure(config):
    import shutil

    if getattr(config, "_cephalon_shared", None):
        shutil.rmtree(config._cephalon_shared, ignore_errors=True)


def pytest_collection_modifyitems(items):
    def rank(item):
        name = Path(str(item.fspath)).name
        return LONGEST_FIRST.index(name) if name in LONGEST_FIRST else len(LONGEST_FIRST)

    items.sort(key=rank)  # stable: the order within a file is kept


def tiny_spec_dict(**overrides) -> dict:
    """A small image model with every kind of dynamism: exits, a skip gate, an MoE, two tasks."""
    spec = {
        "name": "tiny",
        "modalities": [{"name": "image", "kind": "image", "shape": [1, 12, 12],
                        "adapter": {"kind": "conv_stem", "channels": 8}}],
        "stages": [
            {"channels": 8, "blocks": 1, "exit": True},
            {"channels": 12, "blocks": 1, "stride": 2, "skip_blocks": 2, "exit": True},
            {"channels": 16, "blocks": 1, "stride": 2, "experts": 3, "se": True, "exit": True},
            {"channels": 16, "blocks": 1, "block": "bottleneck"},
        ],
        "tasks": [{"name": "class", "outputs": 5}, {"name": "aux", "kind": "regression", "outputs": 2}],
        "labels": ["a", "b", "c", "d", "e"],
    }
    spec.update(overrides)
    return spec


def make_net(seed: int = 0, **overrides):
    from cephalon_edge.toolchain.model import CephalonNet
    from cephalon_edge.toolchain.spec import ModelSpec

    torch.manual_seed(seed)
    net = CephalonNet(ModelSpec.from_dict(tiny_spec_dict(**overrides)))
    # non-trivial batch-norm statistics, so eval mode is not an identity
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    return net.eval()


SMALL_STAGES = [{"channels": 8, "blocks": 1, "exit": True}, {"channels": 8, "blocks": 1}]


def small_net(seed: int = 5):
    """Two stages, one early exit, one task: five parts, two fused segments. For tests of
    mechanics (errors, files, tampering) where every kind of step is not the point: each
    conversion is a fraction of the tiny net's."""
    return make_net(seed=seed, stages=SMALL_STAGES, tasks=[{"name": "class", "outputs": 5}])


def balance_gates(net, x) -> None:
    """Set every skip gate's bias and MoE gate so decisions split the batch ``x``."""
    with torch.no_grad():
        feats = {}
        hooks = [m.register_forward_pre_hook(lambda mod, args, name=name: feats.__setitem__(name, args[0]))
                 for name, m in net.named_modules() if name.endswith(("skip_gates.0", "skip_gates.1", "moe_gate"))]
        net(x)
        for h in hooks:
            h.remove()
        for name, h in feats.items():
            fc = net.get_submodule(name).fc
            pooled = h.flatten(2).mean(-1)
            if fc.out_features == 1:  # skip gate: put the decision boundary at the median
                logit = pooled @ fc.weight[0]
                fc.bias.fill_(-float(logit.median()))
            else:  # MoE gate: spread the choices with a larger random weight
                fc.weight.normal_(0, 3.0)


def balanced_checkpoint(path: Path, seed: int, balance_seed: int, provenance: dict | None = None):
    """A tiny net whose gates and experts split batches, saved to ``path``; returns the net."""
    from cephalon_edge.toolchain import checkpoint

    net = make_net(seed=seed)
    balance_gates(net, torch.randn(64, 1, 12, 12, generator=torch.Generator().manual_seed(balance_seed)))
    checkpoint.save(net, path, provenance)
    return net


def labelled_npz(net, path: Path, samples: int, seed: int, wrong_every: int = 0) -> Path:
    """Random inputs labelled with the net's own full-depth predictions (every ``wrong_every``-th
    label shifted, so full depth is not perfect), saved as a dataset .npz."""
    import numpy as np

    x = torch.randn(samples, *net.spec.modalities[0].shape, generator=torch.Generator().manual_seed(seed))
    labels = net.dynamic_forward(x, thresholds=1.01).logits.argmax(-1).numpy()
    if wrong_every:
        labels[::wrong_every] = (labels[::wrong_every] + 1) % net.spec.classes
    np.savez(path, image=x.numpy(), labels=labels.astype(np.int64))
    return path


@pytest.fixture
def tiny_net():
    return make_net()


def run_cli(*args: str, cwd: Path | None = None, env: dict | None = None, timeout: float = 600):
    """Run the real console script in a subprocess; returns CompletedProcess."""
    exe = Path(sys.executable).parent / "cephalon-edge"
    full_env = {**os.environ, "COLUMNS": "200", "OMP_NUM_THREADS": "1", **(env or {})}
    full_env.pop("CEPHALON_DEBUG", None)
    return subprocess.run([str(exe), *args], capture_output=True, text=True, cwd=cwd, env=full_env, timeout=timeout)


def run_cli_in_process(*args: str, cwd: Path | None = None, env: dict | None = None):
    """The console script's entry point (``cephalon_edge.cli.main``) run in this process, with
    its stdout, stderr, environment, working directory, warning filters and SIGTERM handler
    kept to the call; returns a CompletedProcess like ``run_cli``. A subprocess would spend
    1-3 s importing again what this worker has imported already (torch, litert-torch,
    ExecuTorch, the runtimes). What only a process shows (what it imports, signals, exit codes
    of a crash, a fake module on PYTHONPATH) is tested with ``run_cli``."""
    import contextlib
    import io
    import signal
    import warnings

    from cephalon_edge.cli import main

    out, err = io.StringIO(), io.StringIO()
    saved_env, saved_sigterm = dict(os.environ), signal.getsignal(signal.SIGTERM)
    os.environ.update({"COLUMNS": "200", **(env or {})})
    os.environ.pop("CEPHALON_DEBUG", None)
    try:
        with warnings.catch_warnings(), contextlib.chdir(cwd or Path.cwd()), \
                contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                main(list(args))
                code = 0
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    finally:
        os.environ.clear()
        os.environ.update(saved_env)
        signal.signal(signal.SIGTERM, saved_sigterm)
    return subprocess.CompletedProcess(["cephalon-edge", *args], code, out.getvalue(), err.getvalue())


PIXEL = {"ro.product.model": "Pixel 8", "ro.product.manufacturer": "Google", "ro.soc.model": "Tensor G3",
         "ro.build.version.release": "15", "ro.build.version.sdk": "35", "ro.product.cpu.abi": "arm64-v8a"}
GALAXY = {"ro.product.model": "SM-S911B", "ro.product.manufacturer": "samsung", "ro.soc.model": "SM8550",
          "ro.build.version.release": "14", "ro.build.version.sdk": "34", "ro.product.cpu.abi": "arm64-v8a"}


def fake_tool(tmp_path: Path, name: str) -> tuple[Path, Path]:
    """``tmp_path/<name>-bin/<name>``, a shell stub running ``tests/fake_<name>.py``; returns
    (its bin directory, an empty state directory for the fake)."""
    bindir, state = tmp_path / f"{name}-bin", tmp_path / f"{name}-state"
    bindir.mkdir()
    state.mkdir()
    tool = bindir / name
    tool.write_text(f"#!/bin/sh\nexec {sys.executable} {REPO / 'tests' / f'fake_{name}.py'} \"$@\"\n")
    tool.chmod(0o755)
    return bindir, state


@pytest.fixture
def fake_adb(tmp_path):
    """A fake `adb` first on PATH; returns (env, write_devices, state_dir, benchmark binary)."""
    bindir, state = fake_tool(tmp_path, "adb")
    binary = tmp_path / "benchmark_model"
    binary.write_bytes(b"\x7fELF fake benchmark_model")
    env = {"PATH": f"{bindir}:{os.environ['PATH']}", "FAKE_ADB_DIR": str(state),
           "CEPHALON_EDGE_CACHE": str(tmp_path / "cache")}

    def devices(entries):
        (state / "devices.json").write_text(json.dumps(entries))

    return env, devices, state, binary


@pytest.fixture
def fake_xcrun(tmp_path):
    """A fake `xcrun` (devicectl) first on PATH; returns (env, write_devices)."""
    bindir, state = fake_tool(tmp_path, "xcrun")
    env = {"PATH": f"{bindir}:{os.environ['PATH']}", "FAKE_XCRUN_DIR": str(state)}

    def devices(entries):
        (state / "devices.json").write_text(json.dumps(entries))

    devices([])
    return env, devices


S24 = "Samsung Galaxy S24 (Family)"
HUB_FARM = [
    {"name": S24, "os": "14", "attributes": ["framework:onnx", "framework:tflite", "framework:qnn", "os:android",
                                            "chipset:qualcomm-snapdragon-8gen3", "format:phone", "vendor:samsung"]},
    {"name": "Samsung Galaxy S23", "os": "13", "attributes": ["framework:onnx", "framework:tflite", "os:android",
                                                              "chipset:qualcomm-snapdragon-8gen2"]},
    {"name": "Samsung Galaxy S23", "os": "14", "attributes": ["framework:onnx", "framework:tflite", "os:android",
                                                              "chipset:qualcomm-snapdragon-8gen2"]},
    {"name": "Apple iPhone 15 Pro", "os": "17.4", "attributes": ["framework:coreml", "os:ios"]},
]
HUB_TOKEN = "tok-3f9a-not-a-real-token"




@pytest.fixture
def fake_hub(tmp_path):
    """A fake Qualcomm AI Hub (``tests/fake_hub``, at the qai-hub client's REST layer) and the
    environment that points the real client at it; returns (env, its state directory)."""
    state = tmp_path / "hub-state"
    state.mkdir()
    (state / "devices.json").write_text(json.dumps(HUB_FARM))
    (state / "token").write_text(HUB_TOKEN)
    ini = tmp_path / "client.ini"
    ini.write_text(f"[api]\napi_token = {HUB_TOKEN}\napi_url = https://hub.invalid\nweb_url = https://hub.invalid\n")
    env = {"FAKE_HUB_DIR": str(state), "PYTHONPATH": str(REPO / "tests" / "fake_hub"), "QAIHUB_CLIENT_INI": str(ini),
           "CEPHALON_EDGE_CACHE": str(tmp_path / "cache")}
    return env, state


IPHONE_15_PRO = {"udid": "00008130-001A2B3C4D5E6F70", "name": "Ada's iPhone", "product": "iPhone16,1",
                 "marketing": "iPhone 15 Pro", "os": "18.1"}


def shared_artifact(name: str, make) -> Path:
    """A file made once per test session and shared by every worker: ``make(path)`` writes it
    into the session's shared directory (``pytest_configure``), under a lock."""
    import fcntl
    import tempfile

    root = Path(os.environ.get("CEPHALON_TEST_SHARED") or Path(tempfile.gettempdir()) / "cephalon-test-shared")
    root.mkdir(parents=True, exist_ok=True)
    path = root / name
    with open(root / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not path.exists():
            tmp = root / f".partial-{name}"  # keeps the suffix: a CLI may check it
            make(tmp)
            tmp.rename(path)
    return path


def small_digits_checkpoint(path: Path) -> Path:
    """A small model trained briefly on digits (so accuracy and quantization are judged on
    real data); trained once per test session, copied to ``path``."""
    import shutil

    shutil.copyfile(shared_artifact("small-digits.cephalon", _train_small_digits), path)
    return path


def _train_small_digits(path: Path) -> None:
    from cephalon_edge.toolchain import checkpoint
    from cephalon_edge.toolchain.model import CephalonNet
    from cephalon_edge.toolchain.spec import ModelSpec
    from cephalon_edge.toolchain.train import TrainSpec, train
    from cephalon_edge.toolchain.zoo import digits_exits_spec
    from cephalon_edge.device.data import builtin

    spec = digits_exits_spec().to_dict()
    spec["stages"] = [{"channels": 16, "blocks": 1, "stride": 2, "exit": True},
                      {"channels": 32, "blocks": 1, "stride": 2}]
    spec["tasks"] = spec["tasks"][:1]
    torch.manual_seed(0)
    net = CephalonNet(ModelSpec.from_dict(spec))
    train(net, builtin("digits", "train"), TrainSpec(epochs=6))
    checkpoint.save(net, path, {"dataset": "digits"})


def small_digits_package(target: str, dest: Path) -> Path:
    """The small digits model exported to ``target`` with its static model (verified), once per
    test session; copied to ``dest`` (a test may calibrate or break its copy)."""
    import shutil

    def export(path: Path) -> None:
        from cephalon_edge.toolchain.artifacts import ExportSpec
        from cephalon_edge.toolchain.export import export_package

        ckpt = small_digits_checkpoint(path.parent / f"{path.name}.cephalon")
        export_package(ckpt, path, ExportSpec(target, with_static=True))
        ckpt.unlink()

    shutil.copytree(shared_artifact(f"small-digits-{target}", export), dest)
    return dest


def small_package(root: Path, samples: int, with_static: bool = False) -> Path:
    """A 5-segment net (quick to export), its checkpoint ``m.cephalon``, its ONNX package
    ``pkg`` and ``data.npz`` labelled with its own predictions, in ``root``."""
    from cephalon_edge.toolchain import checkpoint
    from cephalon_edge.toolchain.artifacts import ExportSpec
    from cephalon_edge.toolchain.export import export_package

    net = small_net()
    checkpoint.save(net, root / "m.cephalon")
    export_package(root / "m.cephalon", root / "pkg", ExportSpec("onnx", with_static=with_static, verify=False))
    labelled_npz(net, root / "data.npz", samples=samples, seed=1)
    return root


def interruptible() -> None:
    """In a child about to start: Ctrl-C back to its default. A suite started in the background
    (``nohup ... &``) inherits SIGINT ignored, and Python then never raises KeyboardInterrupt:
    the interrupt tests would wait for an exit that cannot come."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)


def spawn_parked(tmp_path: Path, point: str, *args: str) -> subprocess.Popen:
    """Start the CLI; it parks for good once its own progress reaches ``point`` (see
    pause_at.py). Returns the process once it is parked there: what a test then does to it
    (kill, signal) never depends on the clock."""
    marker = tmp_path / f"parked.{abs(hash(point))}"
    marker.unlink(missing_ok=True)
    proc = subprocess.Popen([sys.executable, str(REPO / "tests" / "pause_at.py"), str(marker), point, *args],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env={**os.environ, "OMP_NUM_THREADS": "1"},
                            preexec_fn=interruptible)
    wait_for(marker.exists, proc, f"reaching {point}")
    return proc


POLL_DEADLINE_S = 600  # a safety net for a hung run, never a synchronisation: far above any step


def wait_for(ready, proc: subprocess.Popen, what: str) -> None:
    """Poll until ``ready()``; fail if ``proc`` ends first, or kill it after a generous deadline."""
    import time

    deadline = time.monotonic() + POLL_DEADLINE_S
    while not ready():
        if proc.poll() is not None:
            pytest.fail(f"the run ended (exit {proc.returncode}) before {what}: "
                        f"{proc.stderr.read().decode()[-2000:] if proc.stderr else ''}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"the run hung before {what} (killed after {POLL_DEADLINE_S} s)")
        time.sleep(0.02)
