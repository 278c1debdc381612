"""What the code may never do, checked in the source itself."""

import re

import pytest
from conftest import REPO

SOURCES = sorted(p for d in ("cephalon_edge", "converters", "runtimes") for p in (REPO / d).rglob("*.py"))
FORBIDDEN = {
    r"(?<![.\w])eval\(": "eval (the builtin; nn.Module.eval() is fine)",
    r"(?<![.\w])exec\(": "exec",
    r"shell\s*=\s*True": "shell=True",
    r"os\.system\(": "os.system",
    r"\bpickle\.loads?\(": "pickle.load",
    r"allow_pickle\s*=\s*True": "allow_pickle=True",
}


@pytest.mark.parametrize("pattern, what", FORBIDDEN.items())
def test_source_never_does(pattern, what):
    hits = [f"{p.relative_to(REPO)}:{i}" for p in SOURCES for i, line in enumerate(p.read_text().splitlines(), 1)
            if re.search(pattern, line)]
    assert not hits, f"{what} found at {hits}"


def test_every_torch_load_is_weights_only():
    for p in SOURCES:
        for i, line in enumerate(p.read_text().splitlines(), 1):
            if "torch.load(" in line:
                assert "weights_only=True" in line, f"{p.relative_to(REPO)}:{i}"


def test_subprocesses_take_argument_lists():
    for p in SOURCES:
        text = p.read_text()
        for m in re.finditer(r"subprocess\.(run|Popen|call|check_output)\(([^,\n]+)", text):
            assert m.group(2).strip().startswith(("cmd", "[")), f"{p.relative_to(REPO)}: {m.group(0)}"


def test_device_paths_are_confined():
    from cephalon_edge.errors import UsageError
    from cephalon_edge.tune.bench.adb import device_path, safe_arg
    assert device_path("segments.tflite") == "/data/local/tmp/cephalon-edge/segments.tflite"
    for name in ("../etc/passwd", "a/b", "x;rm -rf /", "$(reboot)", "..", "a b"):
        with pytest.raises(UsageError):
            device_path(name)
    for arg in ("--graph=/x;reboot", "`id`", "a|b", "--x=$(id)"):
        with pytest.raises(UsageError):
            safe_arg(arg)


# ---- the two halves (DESIGN.md §2) -----------------------------------------------------------

DEVICE_SIDE = sorted(p for d in ("cephalon_edge/device", "cephalon_edge/tune", "runtimes") for p in (REPO / d).rglob("*.py"))


# ExecuTorch's Python runtime takes and returns torch tensors: its runtime imports torch when
# it opens a package (never at module level), and its extra brings torch to a device install.
TORCH_AT_RUN_TIME = {"runtimes/executorch.py"}


def test_device_half_and_tuning_never_import_the_build_half():
    lines = [(str(p.relative_to(REPO)), i, line) for p in DEVICE_SIDE
             for i, line in enumerate(p.read_text().splitlines(), 1)]
    assert not [f"{f}:{i}" for f, i, line in lines if re.search(r"^\s*(from|import) (cephalon_edge\.toolchain|\.\.toolchain)\b", line)]
    torch = [(f, i, line) for f, i, line in lines if re.search(r"^\s*(from|import) torch\b", line)]
    assert {f for f, _, _ in torch} <= TORCH_AT_RUN_TIME
    assert all(line.startswith(" ") for _, _, line in torch)  # inside a function: imported when used


def test_device_half_tuning_and_cli_import_without_torch():
    import subprocess
    import sys

    modules = sorted(".".join(("cephalon_edge", *p.relative_to(REPO / "cephalon_edge").with_suffix("").parts))
                     for d in ("device", "tune", "cli") for p in (REPO / "cephalon_edge" / d).rglob("*.py"))
    modules = [m.removesuffix(".__init__") for m in modules] + [
        "cephalon_edge.device.runtimes.onnxruntime", "cephalon_edge.device.runtimes.litert",
        "cephalon_edge.device.runtimes.coreml", "cephalon_edge.device.runtimes.executorch", "cephalon_edge.targets",
        "cephalon_edge.extras"]
    code = f"""
import importlib, sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('torch', 'tensorflow', 'coremltools', 'sklearn', 'matplotlib'):
            raise ImportError('no ' + name + ' on this device')
sys.meta_path.insert(0, Block())
for m in {modules!r}:
    importlib.import_module(m)
assert not {{'torch', 'coremltools'}} & set(sys.modules)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]


def test_the_step_vocabulary_lives_in_the_program_module():
    """Readers of a program use the typed steps; only program.py reads or writes step JSON."""
    program = REPO / "cephalon_edge" / "device" / "program.py"
    hits = [f"{p.relative_to(REPO)}:{i}" for p in SOURCES if p != program
            for i, line in enumerate(p.read_text().splitlines(), 1) if re.search(r"""["']op["']""", line)]
    assert not hits


def test_target_names_are_spelled_only_in_the_registry():
    """Outside the target registry (and each target's own converter and runtime modules),
    nothing compares against or passes a target name."""
    library = [p for p in (REPO / "cephalon_edge").rglob("*.py") if p.name not in ("targets.py",)]
    hits = [f"{p.relative_to(REPO)}:{i}" for p in library for i, line in enumerate(p.read_text().splitlines(), 1)
            if re.search(r"""(==|!=|\bin \(|ExportSpec\(|get_target\()\s*["'](onnx|tflite|coreml)["']""", line)]
    assert not hits
