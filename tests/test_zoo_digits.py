"""digits-exits, trained as the zoo trains it, reaches what the README claims (a file of its
own: the longest single test, started first on one worker)."""

import pytest
from conftest import run_cli_in_process

from cephalon_edge.toolchain import checkpoint


@pytest.mark.slow
def test_digits_exits_reaches_97_percent(tmp_path):
    out = tmp_path / "digits.cephalon"
    res = run_cli_in_process("zoo", "build", "digits-exits", "-o", str(out))
    assert res.returncode == 0, res.stderr
    for name in ("exit0", "exit1", "exit2", "final"):
        assert name in res.stdout
    meta = checkpoint.read_metadata(out)
    test = meta["provenance"]["metrics"]["test"]
    assert test["final_accuracy"] >= 0.97
    assert test["samples"] == 360
    assert min(test["exit_accuracy"].values()) >= 0.9  # every exit is usable on its own
