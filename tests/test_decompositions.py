"""Materialising torch's CIA ops once per registration state gives torch's own answer, sees an
op registered inside the block, and puts torch back as it was."""

import torch
from torch._export import utils

from cephalon_edge.toolchain.decompositions import cia_ops_materialised_once


def test_the_same_preservable_ops_and_a_new_op_is_seen():
    theirs = utils._materialize_cpp_cia_ops
    before = utils._collect_all_valid_cia_ops()
    with cia_ops_materialised_once():
        assert utils._materialize_cpp_cia_ops is not theirs
        assert utils._collect_all_valid_cia_ops() == before
        lib = torch.library.Library("cephalon_cia_test", "DEF")  # a functional op, CIA in C++
        lib.define("twice(Tensor x) -> Tensor")
        lib.impl("twice", lambda x: x * 2, "CompositeImplicitAutograd")
        try:
            seen = utils._collect_all_valid_cia_ops()
            new = {torch.ops.cephalon_cia_test.twice.default}
        finally:
            lib._destroy()
        assert seen - before == new
    assert utils._materialize_cpp_cia_ops is theirs  # torch's own function is back


def test_materialising_runs_again_only_when_registrations_change(monkeypatch):
    runs = []
    monkeypatch.setattr(utils, "_materialize_cpp_cia_ops", lambda: runs.append(1))
    with cia_ops_materialised_once():
        for _ in range(5):
            utils._materialize_cpp_cia_ops()
        assert len(runs) == 1
        lib = torch.library.Library("cephalon_cia_test2", "DEF")
        lib.define("thrice(Tensor x) -> Tensor")
        lib.impl("thrice", lambda x: x * 3, "CompositeImplicitAutograd")
        try:
            utils._materialize_cpp_cia_ops()
            utils._materialize_cpp_cia_ops()
        finally:
            lib._destroy()
        assert len(runs) == 2
