"""Multi-modal models: adapters into one token space, fusion over any modality subset, export
of every adapter as its own segment, routing by the modalities given, mixes on the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import PIXEL, balance_gates, run_cli_in_process

from cephalon_edge.device.mixes import modality_mixes, parse_mix
from cephalon_edge.errors import DataError, SpecError, UsageError

VOCAB = 30


def mm_spec_dict(**overrides) -> dict:
    """Image (conv stem), signal (patch embedding) and text (token embedding), 16 tokens each."""
    spec = {
        "name": "tiny-mm",
        "backbone": "tokens",
        "modalities": [
            {"name": "image", "kind": "image", "shape": [1, 8, 8],
             "adapter": {"kind": "conv_stem", "channels": 12, "stride": 2}},
            {"name": "signal", "kind": "signal", "shape": [1, 32],
             "adapter": {"kind": "patch_embed", "channels": 12, "patch": 2}},
            {"name": "text", "kind": "text", "shape": [16],
             "adapter": {"kind": "embedding", "channels": 12, "vocab": VOCAB}},
        ],
        "stages": [
            {"channels": 12, "blocks": 1, "exit": True},
            {"channels": 16, "blocks": 1, "stride": 2, "skip_blocks": 1, "exit": True},
            {"channels": 16, "blocks": 1, "experts": 2},
        ],
        "tasks": [{"name": "class", "outputs": 4}],
    }
    spec.update(overrides)
    return spec


def mm_inputs(n: int, seed: int) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return {"image": torch.randn(n, 1, 8, 8, generator=gen), "signal": torch.randn(n, 1, 32, generator=gen),
            "text": torch.randint(0, VOCAB, (n, 16), generator=gen).float()}


def make_mm_net(seed: int = 0):
    from cephalon_edge.toolchain.model import CephalonNet
    from cephalon_edge.toolchain.spec import ModelSpec

    torch.manual_seed(seed)
    net = CephalonNet(ModelSpec.from_dict(mm_spec_dict())).eval()
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm1d | torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
    balance_gates(net, mm_inputs(64, seed=1))
    return net


@pytest.fixture(scope="module")
def mm_checkpoint(tmp_path_factory) -> Path:
    from cephalon_edge.toolchain import checkpoint

    path = tmp_path_factory.mktemp("mm") / "mm.cephalon"
    checkpoint.save(make_mm_net(), path)
    return path


# ---- spec and model ----------------------------------------------------------------------

def test_spec_names_token_mismatch_and_misplaced_adapters():
    from cephalon_edge.toolchain.spec import ModelSpec

    bad = mm_spec_dict()
    bad["modalities"][1]["adapter"]["patch"] = 4  # 8 tokens against 16
    with pytest.raises(SpecError, match=r"same number of tokens \(got image: 16, signal: 8, text: 16\)"):
        ModelSpec.from_dict(bad)
    with pytest.raises(SpecError, match='text needs "backbone": "tokens"'):
        ModelSpec.from_dict(mm_spec_dict(backbone="native", modalities=mm_spec_dict()["modalities"][2:]))
    bad = mm_spec_dict()
    bad["modalities"][0]["adapter"]["kind"] = "embedding"
    with pytest.raises(SpecError, match=r"modalities\[0\]\.adapter\.kind: 'embedding' is the text adapter"):
        ModelSpec.from_dict(bad)
    bad = mm_spec_dict()
    bad["modalities"][1]["adapter"]["patch"] = 5
    with pytest.raises(SpecError, match="patch 5 must divide the sample size"):
        ModelSpec.from_dict(bad)
    bad = mm_spec_dict(backbone="native")
    bad["modalities"] = bad["modalities"][:2]
    with pytest.raises(SpecError, match="different rank need"):
        ModelSpec.from_dict(bad)


def test_present_masks_fuse_like_the_subset_given():
    net = make_mm_net()
    x = mm_inputs(6, seed=2)
    present = {"image": torch.tensor([1, 1, 0, 1, 0, 1], dtype=torch.bool),
               "signal": torch.tensor([1, 0, 1, 1, 0, 0], dtype=torch.bool),
               "text": torch.tensor([0, 0, 0, 1, 1, 1], dtype=torch.bool)}
    with torch.no_grad():
        fused = net.encode(x, present)
        for i in range(6):
            given = {m: v[i:i + 1] for m, v in x.items() if present[m][i]}
            torch.testing.assert_close(fused[i:i + 1], net.encode(given), rtol=1e-5, atol=1e-6)


def test_info_nce_prefers_aligned_embeddings():
    from cephalon_edge.toolchain.train import info_nce

    gen = torch.Generator().manual_seed(0)
    a = torch.randn(16, 8, generator=gen)
    both = {"image": torch.ones(16, dtype=torch.bool), "signal": torch.ones(16, dtype=torch.bool)}
    aligned = info_nce({"image": a, "signal": a + 0.01 * torch.randn(16, 8, generator=gen)}, both, 0.1)
    shuffled = info_nce({"image": a, "signal": a[torch.randperm(16, generator=gen)]}, both, 0.1)
    assert aligned < 0.1 < shuffled
    # pairs where one side is absent do not count
    none = {"image": torch.ones(16, dtype=torch.bool), "signal": torch.zeros(16, dtype=torch.bool)}
    assert float(info_nce({"image": a, "signal": a.flip(0)}, none, 0.1)) == 0.0


def test_mix_parsing():
    assert modality_mixes(["image", "signal"]) == [("image",), ("signal",), ("image", "signal")]
    assert parse_mix("signal, image", ["image", "signal"]) == ("image", "signal")
    for bad, message in (("audio", "unknown modality 'audio'"), ("", "names no modality"),
                         ("image,,signal", "names no modality"), ("image,image", "twice")):
        with pytest.raises(UsageError, match=message):
            parse_mix(bad, ["image", "signal"])


# ---- datasets ----------------------------------------------------------------------------

def test_npz_present_masks(tmp_path):
    from cephalon_edge.device.data import load_dataset

    n = 10
    image, signal = np.random.rand(n, 1, 8, 8).astype(np.float32), np.random.rand(n, 1, 32).astype(np.float32)
    has_signal = np.arange(n) % 3 != 0
    signal[~has_signal] = 0.0
    np.savez(tmp_path / "d.npz", image=image, signal=signal, present_signal=has_signal,
             labels=np.arange(n) % 4)
    ds = load_dataset(str(tmp_path / "d.npz"))
    assert ds.mixes() == [("image",), ("signal",), ("image", "signal")]
    both = ds.with_mix(("image", "signal"))
    assert len(both) == int(has_signal.sum()) and set(both.inputs) == {"image", "signal"}
    assert np.array_equal(both.inputs["signal"], signal[has_signal])
    assert len(ds.with_mix(("image",))) == n
    with pytest.raises(DataError, match="has no sample holding text"):
        ds.select_mixes("text", ["image", "signal", "text"])

    np.savez(tmp_path / "bad.npz", image=image, present_audio=np.ones(n, bool), labels=np.arange(n) % 4)
    with pytest.raises(DataError, match="masks a modality 'audio'"):
        load_dataset(str(tmp_path / "bad.npz"))
    np.savez(tmp_path / "bad2.npz", image=image, present_image=np.arange(n) % 2, labels=np.arange(n) % 4)
    with pytest.raises(DataError, match="must be a boolean array"):
        load_dataset(str(tmp_path / "bad2.npz"))
    np.savez(tmp_path / "bad3.npz", image=image, present_image=np.arange(n) % 2 == 0, labels=np.arange(n) % 4)
    with pytest.raises(DataError, match="some samples have no modality present"):
        load_dataset(str(tmp_path / "bad3.npz"))


def test_multimodal_pairing_is_by_label_and_fixed():
    from cephalon_edge.device.data import builtin

    a, b = builtin("multimodal", "val"), builtin("multimodal", "val")
    assert set(a.inputs) == {"image", "signal"} and a.inputs["image"].shape[1:] == (1, 8, 8)
    assert np.array_equal(a.inputs["signal"], b.inputs["signal"])
    # every signal is an mnist1d sample of the image's own class, each used once
    from mnist1d.data import get_dataset_args, make_dataset

    from cephalon_edge.device.data import (
        MNIST1D_PREPROCESSING,
        MULTIMODAL_SIGNAL_LENGTH,
    )
    from cephalon_edge.device.preprocess import normalize

    args = get_dataset_args()
    args.final_seq_length = MULTIMODAL_SIGNAL_LENGTH
    d = make_dataset(args)
    pool = normalize(np.concatenate([d["x"], d["x_test"]]).astype(np.float32)[:, None], MNIST1D_PREPROCESSING)
    pool_y = np.concatenate([d["y"], d["y_test"]])
    match = [np.flatnonzero((pool == s).all((1, 2))) for s in a.inputs["signal"]]
    assert all(len(m) == 1 for m in match)
    assert np.array_equal(pool_y[[m[0] for m in match]], a.labels)
    assert len({m[0] for m in match}) == len(a)


# ---- export: every subset, each target ----------------------------------------------------

@pytest.fixture(scope="module")
def mm_exports(mm_checkpoint, tmp_path_factory) -> dict:
    """target -> (export report, package dir), exported once for the module."""
    from cephalon_edge.toolchain.artifacts import ExportSpec
    from cephalon_edge.toolchain.export import export_package

    done = {}

    def get(target: str):
        if target not in done:
            pkg = tmp_path_factory.mktemp(f"mm-{target}") / "pkg"
            done[target] = (export_package(mm_checkpoint, pkg, ExportSpec(target, with_static=True)), pkg)
        return done[target]

    return get


@pytest.mark.slow
@pytest.mark.parametrize("target", ["onnx", "tflite", "executorch"])
def test_adapter_and_routed_parity_for_every_subset(mm_checkpoint, mm_exports, target):
    from cephalon_edge.toolchain import checkpoint
    from cephalon_edge.toolchain.parity import median_thresholds
    from cephalon_edge.device.router import Router

    report, pkg = mm_exports(target)
    parity = report["parity"]
    assert parity["passed"] and set(parity["modality_mixes"]) == {
        "image", "signal", "text", "image+signal", "image+text", "signal+text", "image+signal+text"}
    assert all(m["decision_agreement"] == 1.0 and m["max_abs_err"] < 1e-4 for m in parity["modality_mixes"].values())
    assert parity["static_max_abs_err"] < 1e-4
    adapters = {s["name"]: s for s in report["segments"] if s["kind"] == "adapter"}
    assert set(adapters) == {"adapter.image", "adapter.signal", "adapter.text"}
    assert all(s["max_abs_err"] < 1e-4 for s in adapters.values())

    # independently of export's own check: each adapter against its module, and the router
    # against dynamic_forward for every subset, at thresholds where some samples exit early
    net = checkpoint.load(mm_checkpoint)
    x = mm_inputs(24, seed=5)
    with Router.open(pkg) as router:
        for m, xs in x.items():
            with torch.no_grad():
                ref = net.adapters[m](xs).numpy()
            got = router.runtime.run(f"adapter.{m}", (xs.numpy(),))[0]
            assert np.abs(got - ref).max() < 1e-4
        for mix in modality_mixes(list(x)):
            given = {m: x[m] for m in mix}
            thresholds = median_thresholds(net, given)  # about half leave at each exit
            ref = net.dynamic_forward(given, thresholds=thresholds)
            got = router.predict({m: v.numpy() for m, v in given.items()}, thresholds=thresholds)
            assert 0 < (got.exit_index < 2).sum() < 24, mix  # some leave early, some do not
            assert np.array_equal(got.exit_index, ref.exit_index.numpy()), mix
            assert np.array_equal(got.gates, ref.gates.numpy()) and np.array_equal(got.experts, ref.experts.numpy())
            assert np.abs(got.logits - ref.logits.numpy()).max() < 1e-4, mix
            # only the adapters of the modalities given ran
            assert {s for s in got.segment_us if s.startswith("adapter.")} == {f"adapter.{m}" for m in mix}


@pytest.mark.slow
def test_coreml_multimodal_spec(mm_checkpoint, tmp_path):
    from cephalon_edge.toolchain.artifacts import ExportSpec
    from cephalon_edge.toolchain.export import export_package

    report = export_package(mm_checkpoint, tmp_path / "pkg", ExportSpec("coreml", with_static=True))
    manifest = json.loads((tmp_path / "pkg" / "manifest.json").read_text())
    assert {"adapter.image", "adapter.signal", "adapter.text"} <= {s["name"] for s in manifest["segments"]}
    assert manifest["static"]["inputs"] == ["image", "signal", "text"]
    if report["verification"]["kind"] == "spec":  # off macOS: every segment's spec is checked
        assert report["verification"]["segments_checked"] == len(manifest["segments"])


# ---- CLI ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def mm_package(mm_exports) -> Path:
    return mm_exports("onnx")[1]


@pytest.fixture(scope="module")
def mm_npz(tmp_path_factory) -> Path:
    """Self-labelled data where a third of the samples lack their text."""
    net = make_mm_net()
    x = mm_inputs(90, seed=7)
    labels = net.dynamic_forward(x, thresholds=1.01).logits.argmax(-1).numpy()
    has_text = np.arange(90) % 3 != 0
    arrays = {k: v.numpy() for k, v in x.items()}
    arrays["text"][~has_text] = 0
    path = tmp_path_factory.mktemp("mmdata") / "mm.npz"
    np.savez(path, **arrays, present_text=has_text, labels=labels.astype(np.int64))
    return path


@pytest.mark.slow
def test_run_routes_the_mix_given(mm_package, tmp_path):
    from cephalon_edge.device.router import Router

    x = mm_inputs(3, seed=9)
    for m, v in x.items():
        np.save(tmp_path / f"{m}.npy", v.numpy())
    out = run_cli_in_process("run", str(mm_package), str(tmp_path / "text.npy"), str(tmp_path / "image.npy"),
                             "--modality", "text,image", "--json", str(tmp_path / "r.json"))
    assert out.returncode == 0, out.stderr
    report = json.loads((tmp_path / "r.json").read_text())
    with Router.open(mm_package) as router:
        ref = router.predict({"image": x["image"].numpy(), "text": x["text"].numpy()})
    assert report["modality"] == "image,text"
    assert [r["prediction"] for r in report["predictions"]] == ref.predicted.tolist()
    assert [r["exit"] for r in report["predictions"]] == ref.exits

    np.save(tmp_path / "text_ids.npy", x["text"].numpy().astype(np.int64))  # ids saved as integers work too
    out = run_cli_in_process("run", str(mm_package), str(tmp_path / "text_ids.npy"), "--modality", "text",
                             "--json", str(tmp_path / "t.json"))
    assert out.returncode == 0, out.stderr
    with Router.open(mm_package) as router:
        ref = router.predict({"text": x["text"].numpy()})
    assert [r["prediction"] for r in json.loads((tmp_path / "t.json").read_text())["predictions"]] == ref.predicted.tolist()
    np.save(tmp_path / "bad_text.npy", x["text"].numpy() + 0.5)
    out = run_cli_in_process("run", str(mm_package), str(tmp_path / "bad_text.npy"), "--modality", "text")
    assert out.returncode == 2 and f"whole numbers in [0, {VOCAB})" in out.stderr
    for args, message in (
            (["--modality", "audio"], "unknown modality 'audio'"),
            (["--modality", ""], "names no modality"),
            ([], "several inputs; say which"),
            (["--modality", "image,signal"], "takes one INPUT per modality (2), got 1")):
        out = run_cli_in_process("run", str(mm_package), str(tmp_path / "image.npy"), *args)
        assert out.returncode == 2 and message in out.stderr, (args, out.stderr)
        assert "Traceback" not in out.stderr


@pytest.mark.slow
def test_bench_and_calibrate_per_mix(mm_package, mm_npz, tmp_path):
    out = run_cli_in_process("bench", str(mm_package), "--data", str(mm_npz), "--runs", "2", "--warmup", "1",
                             "--json", str(tmp_path / "b.json"))
    assert out.returncode == 0, out.stderr
    bench = json.loads((tmp_path / "b.json").read_text())
    mixes = bench["modality_mixes"]
    assert set(mixes) == {"image", "signal", "text", "image+signal", "image+text", "signal+text", "image+signal+text"}
    assert mixes["text"]["end_to_end"]["samples"] == 60 and mixes["image"]["end_to_end"]["samples"] == 90
    assert mixes["image+signal+text"]["static"] is not None and mixes["image"]["static"] is None
    assert bench["modality"] == "image+signal+text"

    out = run_cli_in_process("bench", str(mm_package), "--data", str(mm_npz), "--runs", "2", "--modality", "signal",
                             "--json", str(tmp_path / "b1.json"))
    assert out.returncode == 0, out.stderr
    assert set(json.loads((tmp_path / "b1.json").read_text())["modality_mixes"]) == {"signal"}
    out = run_cli_in_process("bench", str(mm_package), "--data", str(mm_npz), "--modality", "audio")
    assert out.returncode == 2 and "unknown modality 'audio'" in out.stderr

    out = run_cli_in_process("calibrate", str(mm_package), "--data", str(mm_npz), "--max-drop", "0.05",
                             "--json", str(tmp_path / "c.json"))
    assert out.returncode == 0, out.stderr
    cal = json.loads((tmp_path / "c.json").read_text())
    assert len(cal["val"]["modality_mixes"]) == 7
    per_mix = cal["test"]["modality_mixes"]
    assert set(per_mix) == set(mixes)
    assert per_mix["image+signal+text"]["static_source"] == "static model"
    assert per_mix["image"]["static_source"].startswith("routed at full depth")
    manifest = json.loads((mm_package / "manifest.json").read_text())
    assert manifest["exit_policy"]["thresholds"] == cal["thresholds"]


def test_evaluate_routes_each_sample_with_what_it_holds(mm_package, mm_npz):
    from cephalon_edge.device.data import load_dataset
    from cephalon_edge.device.router import Router
    from cephalon_edge.tune.evaluate import evaluate_router

    data = load_dataset(str(mm_npz))
    groups = data.by_own_mix()
    assert sorted(len(g) for g in groups) == [30, 60] and sum(len(g) for g in groups) == len(data)
    assert {tuple(g.inputs) for g in groups} == {("image", "signal"), ("image", "signal", "text")}
    with Router.open(mm_package) as router:
        report = evaluate_router(router, data, thresholds=1.01, batch_size=16)
        # the labels are the net's own full-depth predictions given every modality: the 30
        # samples without text are routed without it, the other 60 reproduce their labels
        full = router.predict({k: v for k, v in groups[-1].inputs.items()}, thresholds=1.01)
        assert (full.predicted == groups[-1].labels).all()
    assert report["samples"] == 90 and report["exit_rates"]["final"] == 1.0


@pytest.mark.slow
def test_compress_keeps_the_shared_space(mm_checkpoint, tmp_path):
    from cephalon_edge.toolchain import checkpoint
    from cephalon_edge.toolchain.compress.spec import CompressSpec
    from cephalon_edge.toolchain.compress.workflow import compress_checkpoint
    from cephalon_edge.toolchain.spec import ModelSpec

    np.savez(tmp_path / "d.npz", **{k: v.numpy() for k, v in mm_inputs(64, seed=3).items()},
             labels=np.arange(64) % 4)
    report = compress_checkpoint(mm_checkpoint, tmp_path / "p.cephalon",
                                 CompressSpec(prune=0.4, data=str(tmp_path / "d.npz")))
    assert report["after"]["flops"] < 0.75 * report["before"]["flops"]
    pruned = checkpoint.load(tmp_path / "p.cephalon")
    before = ModelSpec.from_dict(mm_spec_dict())
    assert [m.adapter.channels for m in pruned.spec.modalities] == [m.adapter.channels for m in before.modalities]
    with torch.no_grad():  # every subset still runs through the pruned model
        for mix in modality_mixes(["image", "signal", "text"]):
            out = pruned.dynamic_forward({m: v for m, v in mm_inputs(4, seed=4).items() if m in mix})
            assert out.logits.shape == (4, 4) and torch.isfinite(out.logits).all()


@pytest.mark.slow
def test_device_bench_of_one_mix(mm_exports, mm_npz, fake_adb, tmp_path):
    env, devices, _, binary = fake_adb
    devices([{"serial": "PX8", "state": "device", "props": PIXEL}])
    out = tmp_path / "bench.json"
    res = run_cli_in_process("bench", str(mm_exports("tflite")[1]), "--device", "PX8", "--benchmark-binary", str(binary),
                             "--data", str(mm_npz), "--modality", "text,image", "--runs", "3", "--warmup", "1",
                             "--json", str(out), env=env)
    assert res.returncode == 0, res.stderr
    report = json.loads(out.read_text())
    assert report["modality"] == "image+text"
    device = report["devices"][0]
    seg = {s["name"]: s["mean_ms"] for s in device["segments"]}
    assert {"adapter.image", "adapter.signal", "adapter.text"} <= set(seg)
    # the expected latency follows each sample's path given image and text: never the signal
    # adapter, at least up to the first exit, at most every segment but that adapter
    floor = seg["adapter.image"] + seg["adapter.text"] + seg["stage0+exit0"]  # adapters of several modalities stay apart
    e2e = device["end_to_end"]
    assert e2e["samples"] == 60
    assert floor * 0.999 <= e2e["mean_ms"] <= (sum(seg.values()) - seg["adapter.signal"]) * 1.001
    assert device["static"]["mean_ms"] > 0  # the static graph takes all three inputs


def test_one_threshold_set_keeps_the_drop_for_every_mix():
    """Pooled, a cheap operating point looks fine; per mix, one mix would lose too much."""
    from cephalon_edge.tune.calibrate import CalibrateSpec, choose
    from cephalon_edge.tune.search import ExitTable, search, stack_tables

    rng = np.random.default_rng(0)
    n = 200

    def table(early_correct: float) -> ExitTable:
        # exit0 is right on a fraction of samples; the final exit always is
        scores = np.column_stack([rng.uniform(0.5, 1.0, n), np.zeros(n)])
        correct = np.column_stack([rng.random(n) < early_correct, np.ones(n, bool)])
        cost = np.tile([1.0, 3.0], (n, 1))
        return ExitTable(["exit0", "final"], scores, correct, cost, cost * 1e3)

    strong, weak = table(0.995), table(0.9)
    pooled = stack_tables([strong, weak])
    spec = CalibrateSpec(data="x", max_drop=0.03, confidence=0.5)  # the validation drops alone
    alone = search(pooled, 1.01)  # pooled accuracy only
    loose = alone.accuracy[choose(alone, pooled, spec)]
    result = search(pooled, 1.01)  # and every mix on its own
    per_mix = [search(t, 1.01, result.candidates) for t in (strong, weak)]
    result.mix_accuracy = np.stack([r.accuracy for r in per_mix])
    result.mix_both = np.stack([r.both for r in per_mix])
    result.mix_full_depth, result.mix_samples = np.asarray([1.0, 1.0]), np.asarray([n, n])
    i = choose(result, pooled, spec)
    assert (result.mix_accuracy[:, i] >= 1.0 - 0.03 - 1e-9).all()
    # pooling alone would have accepted a point that breaks the weak mix's budget
    j = choose(alone, pooled, spec)
    assert loose >= 0.97 and search(weak, 1.01, alone.candidates).accuracy[j] < 0.97
    assert result.cost_ms[i] > alone.cost_ms[j]


@pytest.mark.slow
def test_a_tflite_text_package_calibrates_and_benches(tmp_path):
    """Text segments are timed on token ids (random normals are out of the embedding's range:
    LiteRT's EMBEDDING_LOOKUP refuses them), with data and without."""
    from cephalon_edge.toolchain import checkpoint
    from cephalon_edge.toolchain.model import CephalonNet
    from cephalon_edge.toolchain.spec import ModelSpec

    text = mm_spec_dict(name="tiny-text", modalities=[mm_spec_dict()["modalities"][2]])
    torch.manual_seed(3)
    net = CephalonNet(ModelSpec.from_dict(text)).eval()
    ids = torch.randint(0, VOCAB, (80, 16), generator=torch.Generator().manual_seed(4)).float()
    labels = net.dynamic_forward({"text": ids}, thresholds=1.01).logits.argmax(-1).numpy()
    labels[::6] = (labels[::6] + 1) % 4  # full depth is not perfect
    checkpoint.save(net, tmp_path / "t.cephalon")
    np.savez(tmp_path / "t.npz", text=ids.numpy().astype(np.int64), labels=labels.astype(np.int64))

    out = run_cli_in_process("export", str(tmp_path / "t.cephalon"), "--target", "tflite", "--with-static", "-o", str(tmp_path / "pkg"))
    assert out.returncode == 0, out.stderr
    out = run_cli_in_process("calibrate", str(tmp_path / "pkg"), "--data", str(tmp_path / "t.npz"), "--json", str(tmp_path / "c.json"))
    assert out.returncode == 0, out.stderr
    assert json.loads((tmp_path / "c.json").read_text())["val"]["accuracy_drop"] <= 0.01 + 1e-9
    out = run_cli_in_process("bench", str(tmp_path / "pkg"), "--data", str(tmp_path / "t.npz"), "--runs", "3", "--json",
                             str(tmp_path / "b.json"))
    assert out.returncode == 0, out.stderr
    bench = json.loads((tmp_path / "b.json").read_text())
    assert bench["end_to_end"]["samples"] == 80 and bench["static"] is not None
    assert all(s["mean_ms"] > 0 for s in bench["segments"])
    # no data and none named by the package: segments timed on synthetic token ids, end to end skipped
    out = run_cli_in_process("bench", str(tmp_path / "pkg"), "--runs", "3", "--json", str(tmp_path / "b0.json"))
    assert out.returncode == 0, out.stderr
    bare = json.loads((tmp_path / "b0.json").read_text())
    assert bare["end_to_end"] is None and "end to end skipped" in bare["note"]
    assert {s["name"] for s in bare["segments"]} == {s["name"] for s in bench["segments"]}
