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
