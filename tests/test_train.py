"""Your own model on your own data, through the CLI: `spec init`, `train` on an .npz and on an
image folder, `export --data`, `calibrate`; bad datasets refused in one line before any work."""

import hashlib
import json

import numpy as np
import pytest
from conftest import run_cli_in_process

SIZE = 16


def _digits(n=None):
    from sklearn.datasets import load_digits

    raw = load_digits()
    images = raw.images.astype(np.float32) / 16.0  # [0, 1], 8x8
    return (images if n is None else images[:n]), raw.target[:n] if n else raw.target


def _model_ready(images):
    """8x8 digits at SIZE x SIZE, normalised as the spec's preprocessing says."""
    up = images.repeat(SIZE // 8, 1).repeat(SIZE // 8, 2)[:, None]
    return ((up - 0.305) / 0.41).astype(np.float32)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    root = tmp_path_factory.mktemp("own")
    r = run_cli_in_process("spec", "init", "--like", "digits-exits", "-o", str(root / "spec.json"))
    assert r.returncode == 0, r.stderr
    spec = json.loads((root / "spec.json").read_text())
    spec["name"] = "my-digits"
    spec["modalities"][0]["shape"] = [1, SIZE, SIZE]
    spec["modalities"][0]["preprocessing"]["resize"] = [SIZE, SIZE]
    spec["stages"] = [{"channels": 16, "blocks": 1, "exit": True},
                      {"channels": 32, "blocks": 1, "stride": 2, "skip_blocks": 1}]
    spec["tasks"] = spec["tasks"][:1]
    (root / "spec.json").write_text(json.dumps(spec))
    images, labels = _digits()
    np.savez(root / "digits.npz", image=_model_ready(images), labels=labels.astype(np.int64))
    return root


def _sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_train_on_an_npz_export_with_data_and_calibrate(workdir):
    r = run_cli_in_process("train", str(workdir / "spec.json"), "--data", str(workdir / "digits.npz"), "-o",
                           str(workdir / "m.cephalon"), "--epochs", "4", "--json", str(workdir / "train.json"))
    assert r.returncode == 0, r.stderr
    report = json.loads((workdir / "train.json").read_text())
    history = report["training"]["history"]
    assert [h["epoch"] for h in history] == [1, 2, 3, 4]
    assert set(history[0]["val_exit_accuracy"]) == {"exit0", "final"}
    assert report["best_epoch"] == max(history, key=lambda h: h["val_score"])["epoch"]
    assert report["metrics"]["test"]["final_accuracy"] > 0.6  # it learned the digits

    r = run_cli_in_process("export", str(workdir / "m.cephalon"), "--target", "onnx", "--quantize", "int8", "--data",
                           str(workdir / "digits.npz"), "-o", str(workdir / "pkg"), "--json", str(workdir / "export.json"))
    assert r.returncode == 0, r.stderr
    export = json.loads((workdir / "export.json").read_text())
    parity = export["parity"]
    assert parity["real_accuracy"]["samples"] == 64 and parity["val_top1_agreement"] >= 0.98
    # judged on the user's own digits: int8 accuracy within a few points of PyTorch's
    assert abs(parity["real_accuracy"]["exported"] - parity["real_accuracy"]["pytorch"]) < 0.05
    assert "real samples" in r.stdout

    r = run_cli_in_process("calibrate", str(workdir / "pkg"), "--data", str(workdir / "digits.npz"), "--json",
                           str(workdir / "cal.json"))
    assert r.returncode == 0, r.stderr
    manifest = json.loads((workdir / "pkg" / "manifest.json").read_text())
    assert manifest["exit_policy"]["calibrated"] and len(manifest["calibration_history"]) == 1
    cal = json.loads((workdir / "cal.json").read_text(), parse_constant=_no_nan)
    assert cal["val"]["accuracy_drop"] <= 0.01 + 1e-9
    assert "gate of block1.1" in r.stdout and "block1.1" in cal["test"]["routing_usage"]["gates"]

    # --restore puts the export's policy back
    r = run_cli_in_process("calibrate", str(workdir / "pkg"), "--restore")
    assert r.returncode == 0, r.stderr
    restored = json.loads((workdir / "pkg" / "manifest.json").read_text())
    assert not restored["exit_policy"]["calibrated"] and restored["calibration_history"] == []


def _no_nan(constant):
    raise ValueError(f"not JSON: {constant}")


def test_quantized_export_without_data_is_not_judged(workdir):
    r = run_cli_in_process("train", str(workdir / "spec.json"), "--data", str(workdir / "digits.npz"), "-o",
                           str(workdir / "q.cephalon"), "--epochs", "1")
    assert r.returncode == 0, r.stderr
    r = run_cli_in_process("export", str(workdir / "q.cephalon"), "--target", "onnx", "--quantize", "int8", "-o",
                           str(workdir / "qpkg"), "--json", str(workdir / "q.json"))
    assert r.returncode == 0, r.stderr
    assert "not judged (no data)" in r.stdout and "top-1" not in r.stdout
    assert json.loads((workdir / "q.json").read_text())["parity"]["real_accuracy"] is None


def test_train_on_an_image_folder_with_a_label_map(workdir, tmp_path):
    from PIL import Image

    words = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
    images, labels = _digits()
    for i, (img, y) in enumerate(zip(images, labels)):
        folder = tmp_path / "folder" / words[y]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray((img * 255).astype(np.uint8)).convert("RGB").save(folder / f"{i}.png")  # 8x8 RGB
    args = ["train", str(workdir / "spec.json"), "--data", str(tmp_path / "folder"), "-o", str(tmp_path / "f.cephalon"),
            "--epochs", "4", "--json", str(tmp_path / "f.json")]
    r = run_cli_in_process(*args)
    assert r.returncode == 2 and "match no label of the model" in r.stderr and "--label-map" in r.stderr
    assert not (tmp_path / "f.cephalon").exists()
    (tmp_path / "map.json").write_text(json.dumps({w: str(i) for i, w in enumerate(words)}))
    r = run_cli_in_process(*args, "--label-map", str(tmp_path / "map.json"))
    assert r.returncode == 0, r.stderr
    assert "3 channels converted to the model's 1" in r.stderr and "resized to the model's 16x16" in r.stderr
    assert json.loads((tmp_path / "f.json").read_text())["metrics"]["test"]["final_accuracy"] > 0.5


@pytest.mark.parametrize("bad", ["labels", "raw", "folder"])
def test_bad_data_is_refused_before_work_and_the_package_kept(workdir, tmp_path, bad):
    pkg = workdir / "pkg"
    if not pkg.exists():
        pytest.skip("needs the package of test_train_on_an_npz_export_with_data_and_calibrate")
    before = _sha(pkg / "manifest.json")
    images, labels = _digits(100)
    data = tmp_path / "bad.npz"
    if bad == "labels":
        np.savez(data, image=_model_ready(images), labels=(labels + 5).astype(np.int64))  # 5..14 for 10 classes
        expect = "labels lie outside the model's 10 classes"
    elif bad == "raw":
        raw = (images.repeat(2, 1).repeat(2, 2)[:, None] * 255).astype(np.float32)
        np.savez(data, image=raw, labels=labels.astype(np.int64))
        expect = "raw 0-255 pixels"
    else:
        from PIL import Image

        data = tmp_path / "folder"
        for name in ("cat", "dog", "7"):
            (data / name).mkdir(parents=True)
            Image.new("L", (16, 16)).save(data / name / "a.png")
        expect = "class folders 'cat', 'dog' match no label"
    for args in (["calibrate", str(pkg), "--data", str(data)],
                 ["bench", str(pkg), "--data", str(data), "--runs", "1"],
                 ["compress", str(workdir / "m.cephalon"), "--data", str(data), "--prune", "0.3", "-o", str(tmp_path / "c.cephalon")],
                 ["train", str(workdir / "spec.json"), "--data", str(data), "-o", str(tmp_path / "t.cephalon")]):
        r = run_cli_in_process(*args)
        assert r.returncode == 2, (args[0], r.stderr)
        lines = [line for line in r.stderr.splitlines() if line.startswith("error:")]
        assert len(lines) == 1 and expect in r.stderr, (args[0], r.stderr)
        assert "Traceback" not in r.stderr
    assert _sha(pkg / "manifest.json") == before
    assert not (tmp_path / "c.cephalon").exists() and not (tmp_path / "t.cephalon").exists()
