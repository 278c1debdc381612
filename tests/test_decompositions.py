"""Torch's export passes without their repeated work: CIA ops materialised once per
registration state give torch's own answer and see an op registered inside the block; reused
``py_impl`` decorators still check and register; shared provenance chains hold the same links;
the decomposed graph and its provenance are torch's; torch is put back as it was."""

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


def test_a_node_source_shares_its_node_s_chain_and_records_the_same():
    from torch.fx.traceback import NodeSource, NodeSourceAction

    from cephalon_edge.toolchain.decompositions import provenance_shared

    theirs = NodeSource.__init__
    graph = torch.export.export(torch.nn.Linear(3, 2), (torch.randn(1, 3),)).graph
    node = next(n for n in graph.nodes if n.op == "call_function")
    node.meta["from_node"] = [NodeSource(None, "earlier", NodeSourceAction.CREATE)]
    copied = NodeSource(node, "a pass", NodeSourceAction.REPLACE)
    with provenance_shared():
        shared = NodeSource(node, "a pass", NodeSourceAction.REPLACE)
        orphan = NodeSource(None, "a pass")
    assert NodeSource.__init__ is theirs
    assert shared.to_dict() == copied.to_dict() and shared.from_node[0] is node.meta["from_node"][0]
    assert copied.from_node[0] is not node.meta["from_node"][0]  # torch's own: a deep copy
    assert shared.from_node is not node.meta["from_node"]  # a new list: the node's may grow
    assert len(node.meta["from_node"]) == 1 and orphan.from_node == [] and orphan.node_info is None


def test_decompositions_give_torch_s_graph_and_provenance():
    from cephalon_edge.toolchain.decompositions import passes_without_repeated_work

    class Block(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(6, 4)
            self.norm = torch.nn.LayerNorm(4)

        def forward(self, x):
            return torch.nn.functional.gelu(self.norm(self.fc(x))).softmax(-1)

    def decomposed(keep_linear: bool) -> tuple[str, list]:
        ep = torch.export.export(Block().eval(), (torch.randn(2, 6),))
        table = torch.export.default_decompositions()
        if keep_linear:
            del table[torch.ops.aten.linear.default]
        gm = ep.run_decompositions(table).graph_module
        provenance = [[links(s) for s in n.meta.get("from_node", [])] for n in gm.graph.nodes]
        return gm.code, provenance

    def links(source) -> list:  # a chain, less the graphs' ids (those differ run to run)
        return [source.name, source.target, source.pass_name, source.action, [links(s) for s in source.from_node]]

    for keep_linear in (False, True):
        plain = decomposed(keep_linear)
        with passes_without_repeated_work():
            ours = decomposed(keep_linear)
            again = decomposed(keep_linear)
        assert ours == plain == again
        assert any(plain[1]) and ("aten.linear" in plain[0]) == keep_linear
