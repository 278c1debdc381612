"""Torch's decompositions without their repeated work: CIA ops materialised once per
registration state give torch's own answer and see an op registered inside the block; reused
``py_impl`` decorators still check and register; the decomposed graph is torch's; torch is put
back as it was."""

import pytest
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


def test_py_impl_decorators_are_reused_and_still_check_and_register():
    from torch._ops import OperatorBase

    from cephalon_edge.toolchain.decompositions import py_impl_decorators_reused

    theirs = OperatorBase.py_impl
    op = torch.ops.aten.linear.default
    key = torch._C.DispatchKey.AutogradXLA  # a key no kernel is registered to here
    assert key not in op.py_kernels
    with py_impl_decorators_reused():
        first = op.py_impl(key)
        assert op.py_impl(key) is first and op.py_impl(torch._C.DispatchKey.AutogradLazy) is not first
        kernel = first(lambda *args: None)
        try:
            assert op.py_kernels[key] is kernel  # registered by torch's decorator
            with pytest.raises(RuntimeError, match="override a python impl"):
                op.py_impl(key)(lambda *args: None)  # torch's own check, made when called
        finally:
            del op.py_kernels[key]
            op._dispatch_cache.clear()
    assert OperatorBase.py_impl is theirs


def test_decompositions_give_torch_s_graph():
    from cephalon_edge.toolchain.decompositions import decompositions_without_repeated_work

    class Block(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(6, 4)
            self.norm = torch.nn.LayerNorm(4)

        def forward(self, x):
            return torch.nn.functional.gelu(self.norm(self.fc(x))).softmax(-1)

    def decomposed(keep_linear: bool) -> str:
        ep = torch.export.export(Block().eval(), (torch.randn(2, 6),))
        table = torch.export.default_decompositions()
        if keep_linear:
            del table[torch.ops.aten.linear.default]
        return ep.run_decompositions(table).graph_module.code

    for keep_linear in (False, True):
        plain = decomposed(keep_linear)
        with decompositions_without_repeated_work():
            ours = decomposed(keep_linear)
            again = decomposed(keep_linear)
        assert ours == plain == again
        assert ("aten.linear" in plain) == keep_linear
