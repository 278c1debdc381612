"""The step vocabulary's contract, checked the way CI checks it: every walker of the program
`match`es on the step kinds and ends in `assert_never`, so a new step kind that a walker
forgets fails the type check there (`./dev test` runs mypy on the files `dev` lists)."""

import re
import shutil
import subprocess
import sys

from conftest import REPO

NEW_KIND = '''
@dataclass(frozen=True)
class Halt:
    """A step kind no walker knows yet."""


Step = Union[Encode, Run, Gate, Moe, Exit, Final, Halt]
'''


def typed_files() -> list[str]:
    """The files `./dev test` type-checks."""
    return re.search(r'^TYPED="([^"]*)"', (REPO / "dev").read_text(), re.M).group(1).split()


def mypy(root, files):
    return subprocess.run([sys.executable, "-m", "mypy", "--no-error-summary", "--cache-dir", str(root / ".mypy"), *files],
                          capture_output=True, text=True, cwd=root, timeout=600)


def test_a_new_step_kind_fails_at_every_walker_that_forgets_it(tmp_path):
    files = typed_files()
    assert "cephalon_edge/device/program.py" in files and "cephalon_edge/toolchain/segments.py" in files
    shutil.copy(REPO / "pyproject.toml", tmp_path)
    shutil.copytree(REPO / "cephalon_edge", tmp_path / "cephalon_edge", ignore=shutil.ignore_patterns("__pycache__"))
    program = tmp_path / "cephalon_edge" / "device" / "program.py"
    text = program.read_text()
    union = "\nStep = Union[Encode, Run, Gate, Moe, Exit, Final]\n"
    assert union in text, "the Step union moved: update this test"
    program.write_text(text.replace(union, NEW_KIND))

    walkers = {(f, n) for f in files for n, line in enumerate((tmp_path / f).read_text().splitlines(), 1)
               if "assert_never(step)" in line}
    assert len(walkers) >= 5  # the program's own walkers, the router's plan, the torch probe, inspect
    res = mypy(tmp_path, files)
    assert res.returncode == 1, res.stdout + res.stderr
    flagged = {(f, int(n)) for f, n in re.findall(r'^(\S+?):(\d+): error: Argument 1 to "assert_never" has incompatible '
                                                   r'type "Halt"', res.stdout, re.M)}
    assert flagged == walkers, res.stdout
