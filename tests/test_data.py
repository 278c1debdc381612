import numpy as np
import pytest

from cephalon_edge.device.data import builtin, load_dataset
from cephalon_edge.errors import DataError


def test_builtin_splits_are_fixed_and_disjoint():
    parts = {s: builtin("digits", s) for s in ("train", "val", "test")}
    assert [len(p) for p in parts.values()] == [1078, 359, 360]
    assert parts["train"].inputs["image"].shape[1:] == (1, 32, 32)
    again = builtin("digits", "val")
    assert np.array_equal(again.labels, parts["val"].labels)
    # samples never appear in two splits
    keys = [set(map(bytes, p.inputs["image"].reshape(len(p), -1).round(4))) for p in parts.values()]
    assert not (keys[1] & keys[2])
    mnist = builtin("mnist1d", "test")
    assert mnist.inputs["signal"].shape == (1000, 1, 40)
    assert set(np.unique(mnist.labels)) == set(range(10))


def test_dataset_errors(tmp_path):
    with pytest.raises(DataError, match="unknown dataset 'nope'"):
        load_dataset("nope:val")
    with pytest.raises(DataError, match="unknown split 'dev'"):
        load_dataset("digits:dev")
    f = tmp_path / "d.npz"
    np.savez(f, image=np.zeros((3, 1, 32, 32), np.float32))
    with pytest.raises(DataError, match="no 'labels' array"):
        load_dataset(str(f))
    np.savez(f, image=np.full((3, 1, 32, 32), np.nan, np.float32), labels=np.arange(3))
    with pytest.raises(DataError, match="NaN"):
        load_dataset(str(f))
    np.savez(f, image=np.zeros((3, 1, 16, 16), np.float32), labels=np.arange(3))
    with pytest.raises(DataError, match=r"shape \[1, 16, 16\], the model expects \[1, 32, 32\]"):
        load_dataset(str(f), modalities=[{"name": "image", "shape": [1, 32, 32]}])
