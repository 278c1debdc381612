"""The collector runs less often during an export, and Python's settings are back after."""

import gc

import pytest
from conftest import small_net

from cephalon_edge.toolchain import checkpoint, export
from cephalon_edge.toolchain.artifacts import ExportSpec
from cephalon_edge.toolchain.gc_policy import GEN0_THRESHOLD, collected_less_often


def test_thresholds_are_raised_in_the_block_never_lowered_and_restored():
    before = gc.get_threshold()
    try:
        gc.set_threshold(700, 10, 10)
        with collected_less_often():
            assert gc.get_threshold() == (GEN0_THRESHOLD, 10, 10)
        assert gc.get_threshold() == (700, 10, 10)
        gc.set_threshold(50_000, 5, 5)  # a program that already collects less often keeps its setting
        with pytest.raises(KeyError), collected_less_often():
            assert gc.get_threshold() == (50_000, 5, 5)
            raise KeyError("an error in the block")
        assert gc.get_threshold() == (50_000, 5, 5)
    finally:
        gc.set_threshold(*before)


def test_export_converts_with_the_collector_run_less_often(tmp_path, monkeypatch):
    checkpoint.save(small_net(), tmp_path / "m.cephalon")
    seen = []

    def converting(*args, **kwargs):
        seen.append(gc.get_threshold()[0])
        raise RuntimeError("stop here")

    monkeypatch.setattr(export, "_export_into", converting)
    before = gc.get_threshold()
    with pytest.raises(RuntimeError, match="stop here"):
        export.export_package(tmp_path / "m.cephalon", tmp_path / "pkg", ExportSpec("onnx"))
    assert seen == [max(GEN0_THRESHOLD, before[0])] and gc.get_threshold() == before
    assert not (tmp_path / "pkg").exists()
