"""Resource-adaptive packages: width variants in one checkpoint and one package, the
operating-point table, the router's choice by budget, and a phone's latencies replacing the
host's."""

import hashlib
import json

import numpy as np
import pytest
from conftest import PIXEL, balanced_checkpoint, labelled_npz, run_cli_in_process, small_net

from cephalon_edge.device.manifest import Manifest
from cephalon_edge.device.variants import AdaptiveRouter, OperatingPoint, VariantTable, choose_point
from cephalon_edge.errors import UsageError


def _points():
    # variant, accuracy, latency: w1 is more accurate, w0.5 faster; early exits trade more
    return [OperatingPoint("w1", {"exit0": 0.99}, 0.990, 1.00), OperatingPoint("w1", {"exit0": 0.8}, 0.975, 0.60),
            OperatingPoint("w0.5", {"exit0": 0.99}, 0.980, 0.45), OperatingPoint("w0.5", {"exit0": 0.7}, 0.960, 0.20),
            OperatingPoint("w0.5", {"exit0": 0.5}, 0.900, 0.10)]


@pytest.mark.parametrize("budget, expected", [(2.0, ("w1", 1.00)), (0.99, ("w0.5", 0.45)), (0.6, ("w0.5", 0.45)),
                                              (0.44, ("w0.5", 0.20)), (0.1, ("w0.5", 0.10))])
def test_the_most_accurate_point_that_fits_is_chosen(budget, expected):
    point, fits = choose_point(_points(), budget)
    assert (point.variant, point.latency_ms) == expected and fits
    # it is the best there is: nothing that fits is more accurate
    assert all(p.accuracy <= point.accuracy for p in _points() if p.latency_ms <= budget)


def test_no_fitting_point_gives_the_fastest_flagged_and_bad_budgets_are_refused():
    point, fits = choose_point(_points(), 0.05)
    assert point.latency_ms == 0.10 and not fits
    assert choose_point(_points(), 0.6, variant="w1")[0].latency_ms == 0.60
    with pytest.raises(UsageError, match="positive"):
        choose_point(_points(), -1.0)
    with pytest.raises(UsageError, match="no measured latency"):
        choose_point([OperatingPoint("w1", {}, 0.9, None)], 1.0)


@pytest.fixture(scope="module")
def variants_package(tmp_path_factory):
    """A tiny model with widths 1.0/0.5 (fine-tuned briefly), exported to ONNX and calibrated."""
    root = tmp_path_factory.mktemp("variants")
    net = balanced_checkpoint(root / "m.cephalon", seed=4, balance_seed=2)
    labelled_npz(net, root / "d.npz", 200, seed=3, wrong_every=9)
    r = run_cli_in_process("compress", str(root / "m.cephalon"), "--widths", "1.0,0.5", "--finetune-epochs", "2", "--data",
                           str(root / "d.npz"), "-o", str(root / "v.cephalon"), "--json", str(root / "c.json"))
    assert r.returncode == 0, r.stderr
    r = run_cli_in_process("export", str(root / "v.cephalon"), "--target", "onnx", "--with-static", "-o", str(root / "pkg"),
                           "--json", str(root / "e.json"))
    assert r.returncode == 0, r.stderr
    r = run_cli_in_process("calibrate", str(root / "pkg"), "--data", str(root / "d.npz"), "--json", str(root / "cal.json"))
    assert r.returncode == 0, r.stderr
    return root


def test_compress_widths_reports_each_variant(variants_package):
    report = json.loads((variants_package / "c.json").read_text())
    variants = {v["name"]: v for v in report["variants"]}
    assert set(variants) == {"w1", "w0.5"}
    assert variants["w0.5"]["flops"] < 0.5 * variants["w1"]["flops"]  # half the channels: about a quarter
    assert variants["w0.5"]["params"] < variants["w1"]["params"]
    assert set(variants["w0.5"]["exit_accuracy"]) == {"exit0", "exit1", "exit2", "final"}  # every exit kept


def test_every_variant_exports_with_parity_and_the_full_one_is_the_plain_export(variants_package, tmp_path):
    export = json.loads((variants_package / "e.json").read_text())
    for name, sub in export["variants"].items():
        assert sub["parity"]["passed"] and sub["parity"]["decision_agreement"] == 1.0, name
    assert export["variants"]["w1"]["static"] is not None and export["variants"]["w0.5"]["static"] is None
    # the full variant is byte for byte what exporting the model alone gives: the package
    # grows by the narrower variant's own files only
    r = run_cli_in_process("export", str(variants_package / "m.cephalon"), "--target", "onnx", "--with-static", "-o",
                           str(tmp_path / "alone"), "--no-verify")
    assert r.returncode == 0, r.stderr
    alone = sorted(p.name for p in (tmp_path / "alone").iterdir() if p.suffix == ".onnx")
    assert alone and all(hashlib.sha256((tmp_path / "alone" / f).read_bytes()).digest() ==
                         hashlib.sha256((variants_package / "pkg" / "w1" / f).read_bytes()).digest() for f in alone)


def test_calibrate_writes_the_operating_point_table(variants_package):
    table = VariantTable.open(variants_package / "pkg")
    points = table.points
    assert {p.variant for p in points} == {"w1", "w0.5"}
    assert all(p.latency_ms > 0 and 0 <= p.accuracy <= 1 and p.flops > 0 for p in points)
    assert table.data["reference"]["static_ms"] > 0
    cal = json.loads((variants_package / "cal.json").read_text())
    assert set(cal["variants"]) == {"w1", "w0.5"}


def test_the_router_follows_injected_latencies(variants_package, tmp_path):
    import shutil

    pkg = tmp_path / "pkg"
    shutil.copytree(variants_package / "pkg", pkg)
    table = VariantTable.open(pkg)
    # inject a table where the narrow variant is both the fastest and, at its own point, accurate
    injected = []
    for i, p in enumerate(table.points):
        injected.append({**p.to_dict(), "latency_ms": 10.0 + i if p.variant == "w1" else 1.0 + i / 100})
    table.write(operating_points=injected)
    x = np.load(variants_package / "d.npz")["image"][:3]
    with AdaptiveRouter.open(pkg) as router:
        for budget in (0.5, 1.05, 5.0, 100.0):
            pred = router.predict({"image": x}, budget_ms=budget)
            want, fits = choose_point(VariantTable.open(pkg).points, budget)
            assert pred.operating_point["variant"] == want.variant and pred.operating_point["thresholds"] == want.thresholds
            assert pred.operating_point["fits_budget"] == fits
            # the prediction is that variant's own, at that point's thresholds
            direct = router.routers[want.variant].predict({"image": x}, thresholds=want.thresholds)
            assert np.array_equal(pred.predicted, direct.predicted)
        router.set_budget(5.0)
        assert router.predict({"image": x}).operating_point["variant"] == "w0.5"
        router.set_budget(None)
        assert router.predict({"image": x}).operating_point["variant"] == "w1"  # no budget: the full model
    np.save(tmp_path / "x.npy", x)
    r = run_cli_in_process("run", str(pkg), str(tmp_path / "x.npy"), "--budget-ms", "5", "--json", str(tmp_path / "r.json"))
    assert r.returncode == 0, r.stderr
    assert json.loads((tmp_path / "r.json").read_text())["operating_point"]["variant"] == "w0.5"
    assert "variant w0.5" in r.stdout
    r = run_cli_in_process("run", str(variants_package / "pkg" / "w1"), str(tmp_path / "x.npy"), "--budget-ms", "5")
    assert r.returncode == 2 and "this package has one" in r.stderr


def test_a_malformed_variants_table_is_one_line_when_opened(variants_package, tmp_path):
    """Each used to pass (or give a TypeError traceback in run --budget-ms and bench)."""
    import shutil

    from cephalon_edge.errors import PackageError

    pkg = tmp_path / "pkg"
    shutil.copytree(variants_package / "pkg", pkg)
    good = json.loads((pkg / "variants.json").read_text())
    point = good["operating_points"][0]
    broken = {
        "a width as text": {"variants": [{**good["variants"][0], "width": "1.0"}, *good["variants"][1:]]},
        "a width over 1": {"variants": [{**good["variants"][0], "width": 2}, *good["variants"][1:]]},
        "a negative latency": {"operating_points": [{**point, "latency_ms": -5}]},
        "a huge threshold": {"operating_points": [{**point, "thresholds": {k: 1e300 for k in point["thresholds"]}}]},
        "a negative threshold": {"operating_points": [{**point, "thresholds": {k: -1e300 for k in point["thresholds"]}}]},
        "an accuracy over 1": {"operating_points": [{**point, "accuracy": 3.0}]},
    }
    for what, change in broken.items():
        (pkg / "variants.json").write_text(json.dumps({**good, **change}))
        with pytest.raises(PackageError):
            VariantTable.open(pkg)
        r = run_cli_in_process("run", str(pkg), str(tmp_path / "missing.npy"), "--budget-ms", "5")
        assert r.returncode == 2 and "Traceback" not in r.stderr and "variants.json" in r.stderr, (what, r.stderr)


def test_bench_reports_every_point_and_the_budget_choice(variants_package, tmp_path):
    r = run_cli_in_process("bench", str(variants_package / "pkg"), "--data", str(variants_package / "d.npz"), "--runs", "2",
                           "--samples", "40", "--budget-ms", "1000", "--json", str(tmp_path / "b.json"))
    assert r.returncode == 0, r.stderr
    report = json.loads((tmp_path / "b.json").read_text())
    assert len(report["operating_points"]) == len(VariantTable.open(variants_package / "pkg").points)
    assert all(p["measured"]["mean_ms"] > 0 and p["measured"]["samples"] == 40 for p in report["operating_points"])
    assert report["budget"]["fits_budget"] and set(report["variants"]) == {"w1", "w0.5"}


def test_ai_hub_latencies_replace_the_hosts(variants_package, fake_hub, tmp_path):
    """bench --hub of a variants package: every variant's segments profiled on the farm, every
    operating point re-priced with the farm phone's segment latencies."""
    import shutil

    from conftest import S24, run_cli

    env, state = fake_hub  # the fake hub is imported by the CLI's process (PYTHONPATH)
    pkg = tmp_path / "pkg"
    shutil.copytree(variants_package / "pkg", pkg)
    host = {(p.variant, tuple(p.thresholds.values())): p for p in VariantTable.open(pkg).points}
    r = run_cli("bench", str(pkg), "--hub", S24, "--data", str(variants_package / "d.npz"), "--json",
                str(tmp_path / "b.json"), env=env)
    assert r.returncode == 0, r.stderr
    report = json.loads((tmp_path / "b.json").read_text())
    assert set(report["variants"]) == {"w1", "w0.5"} and report["repriced_on"] == S24
    jobs = [line for line in (state / "log").read_text().splitlines() if line.startswith("job ")]
    manifests = [Manifest.open(VariantTable.open(pkg).package(n)) for n in ("w1", "w0.5")]
    assert len(jobs) == sum(len(m.segments) + bool(m.static) for m in manifests)
    after = VariantTable.open(pkg).points
    assert {(p.variant, tuple(p.thresholds.values())) for p in after} == set(host)
    assert all(p.source.startswith(f"device {S24}") and p.latency_ms > 0 for p in after)


@pytest.fixture(scope="module")
def small_variants(tmp_path_factory):
    """The two-stage net with widths 1.0/0.5 (the TFLite test converts it: a fraction of the
    tiny net's signatures) and data labelled by it."""
    from cephalon_edge.toolchain import checkpoint
    from cephalon_edge.toolchain.compress.spec import CompressSpec
    from cephalon_edge.toolchain.compress.workflow import compress_checkpoint

    root = tmp_path_factory.mktemp("small-variants")
    net = small_net()
    checkpoint.save(net, root / "m.cephalon")
    labelled_npz(net, root / "d.npz", 200, seed=3, wrong_every=9)
    compress_checkpoint(root / "m.cephalon", root / "v.cephalon",
                        CompressSpec(widths=(1.0, 0.5), finetune_epochs=1, data=str(root / "d.npz")))
    return root


@pytest.mark.slow
def test_tflite_variants_parity_and_the_phones_latencies_replace_the_hosts(small_variants, fake_adb, tmp_path):
    env, devices, _, binary = fake_adb
    pkg = tmp_path / "tpkg"
    r = run_cli_in_process("export", str(small_variants / "v.cephalon"), "--target", "tflite", "-o", str(pkg),
                           "--json", str(tmp_path / "e.json"))
    assert r.returncode == 0, r.stderr
    assert all(s["parity"]["passed"] for s in json.loads((tmp_path / "e.json").read_text())["variants"].values())
    r = run_cli_in_process("calibrate", str(pkg), "--data", str(small_variants / "d.npz"))
    assert r.returncode == 0, r.stderr
    host = {(p.variant, tuple(p.thresholds.values())): p for p in VariantTable.open(pkg).points}
    devices([{"serial": "PX8", "state": "device", "props": PIXEL}])
    r = run_cli_in_process("bench", str(pkg), "--device", "PX8", "--benchmark-binary", str(binary), "--data",
                           str(small_variants / "d.npz"), "--runs", "3", "--warmup", "1", "--json", str(tmp_path / "b.json"),
                           env=env)
    assert r.returncode == 0, r.stderr
    after = VariantTable.open(pkg).points
    assert {(p.variant, tuple(p.thresholds.values())) for p in after} == set(host)  # the same points
    assert all(p.source.startswith("device PX8") and p.latency_ms > 0 for p in after)
    assert any(p.latency_ms != host[(p.variant, tuple(p.thresholds.values()))].latency_ms for p in after)
