"""Threshold search and the calibrate command."""

import itertools
import json
import os

import numpy as np
import pytest
import torch
from conftest import labelled_npz, make_net, run_cli_in_process

from cephalon_edge.toolchain import checkpoint
from cephalon_edge.toolchain.artifacts import ExportSpec
from cephalon_edge.toolchain.export import export_package
from cephalon_edge.device.manifest import Manifest
from cephalon_edge.tune.calibrate import CalibrateSpec, calibrate_package, choose
from cephalon_edge.tune.search import ExitTable, search


def brute_force(table: ExitTable, max_drop: float, z: float = 0.0):
    """Independent reference: every per-exit threshold among the distinct scores, plain loops;
    a combination qualifies when its drop plus ``z`` standard errors of the paired per-sample
    difference (from the decisions lost and gained, plus one) is within ``max_drop``."""
    n, k = table.scores.shape[0], table.scores.shape[1] - 1
    options = [sorted(set(table.scores[:, j].tolist())) + [2.0] for j in range(k)]
    best = None
    for ts in itertools.product(*options):
        correct = cost = 0.0
        lost = gained = early = 0
        for i in range(n):
            e = next((j for j in range(k) if table.scores[i, j] >= ts[j]), k)
            correct += table.correct[i, e]
            cost += table.cost_ms[i, e]
            full, here = bool(table.correct[i, k]), bool(table.correct[i, e])
            lost, gained, early = lost + (full and not here), gained + (here and not full), early + (e < k)
        acc, cost = correct / n, cost / n
        bound = (lost - gained) / n + z * ((lost + gained + 1) ** 0.5) / n if early else 0.0
        if bound <= max_drop + 1e-9 and (best is None or (cost, -acc) < (best[0], -best[1])):
            best = (cost, acc, ts)
    return best


def synthetic(n: int, k: int, seed: int) -> ExitTable:
    rng = np.random.default_rng(seed)
    scores = rng.random((n, k + 1)).round(2)
    # later exits are more often right, and right more often when confident
    correct = rng.random((n, k + 1)) < np.clip(0.35 + 0.2 * np.arange(k + 1) + 0.3 * scores, 0, 1)
    cost = np.cumsum(rng.uniform(0.5, 1.5, (n, k + 1)), axis=1)
    return ExitTable([f"exit{j}" for j in range(k)] + ["final"], scores, correct, cost, cost * 1e6)


@pytest.mark.parametrize("seed, k, max_drop, confidence", [(0, 1, 0.0, 0.5), (1, 2, 0.02, 0.5), (2, 2, 0.0, 0.5),
                                                            (3, 3, 0.05, 0.5), (1, 2, 0.05, 0.9), (3, 3, 0.1, 0.9),
                                                            (4, 2, 0.08, 0.95)])
def test_search_finds_the_optimum(seed, k, max_drop, confidence):
    """0.5: the validation drop alone; above: the drop's upper confidence bound must fit."""
    table = synthetic(30 if k == 3 else 40, k, seed)
    result = search(table, never=2.0)
    spec = CalibrateSpec(data="x", max_drop=max_drop, confidence=confidence)
    chosen = choose(result, table, spec)
    cost, acc, _ = brute_force(table, max_drop, spec.z)
    assert result.cost_ms[chosen] == pytest.approx(cost, abs=1e-9)
    assert result.accuracy[chosen] == pytest.approx(acc, abs=1e-9)


def test_search_on_a_model_with_known_exits():
    """exit0 is right exactly when its score >= 0.8, exit1 always; the final exit is dearest."""
    rng = np.random.default_rng(4)
    n = 50
    s0 = rng.uniform(0.3, 1.0, n)
    scores = np.column_stack([s0, rng.uniform(0.5, 1.0, n), np.ones(n)])
    correct = np.column_stack([s0 >= 0.8, np.ones(n, bool), np.ones(n, bool)])
    cost = np.tile([1.0, 2.0, 5.0], (n, 1))
    table = ExitTable(["exit0", "exit1", "final"], scores, correct, cost, cost)
    result = search(table, never=2.0)
    i = choose(result, table, CalibrateSpec(data="x", max_drop=0.0, confidence=0.5))
    thresholds = result.thresholds(i, ["exit0", "exit1"])
    assert thresholds["exit0"] == pytest.approx(s0[s0 >= 0.8].min())
    assert thresholds["exit1"] <= scores[:, 1].min()  # everyone else leaves at exit1
    assert result.accuracy[i] == 1.0
    assert result.cost_ms[i] == pytest.approx((s0 >= 0.8).mean() * 1 + (s0 < 0.8).mean() * 2)
    budget = choose(result, table, CalibrateSpec(data="x", latency_budget_ms=1.0))
    assert result.cost_ms[budget] <= 1.0 and result.accuracy[budget] == pytest.approx((s0 >= 0.8).mean())
    # 50 samples cannot promise a zero drop at 90%: even a combination that changes no decision
    # carries z / 50, so nothing exits early
    sure = choose(result, table, CalibrateSpec(data="x", max_drop=0.0, confidence=0.9))
    assert result.flops[sure] == pytest.approx(5.0) and result.accuracy[sure] == 1.0
    # 3 points at 90% do: the no-loss combination's bound is z * sqrt(1) / 50 = 2.6 points
    assert choose(result, table, CalibrateSpec(data="x", max_drop=0.03, confidence=0.9)) == i


@pytest.fixture(scope="module")
def package(tmp_path_factory):
    root = tmp_path_factory.mktemp("cal")
    net = make_net(seed=2)
    ckpt = root / "tiny.cephalon"
    checkpoint.save(net, ckpt)
    pkg = root / "pkg"
    export_package(ckpt, pkg, ExportSpec("onnx", with_static=True))
    # full depth is right on 6 of 7 samples
    return pkg, labelled_npz(net, root / "data.npz", samples=120, seed=9, wrong_every=7)


def test_calibrate_command(package, tmp_path):
    pkg, data = package
    report_file, plot = tmp_path / "cal.json", tmp_path / "cal.png"
    res = run_cli_in_process("calibrate", str(pkg), "--data", str(data), "--max-drop", "0", "--json", str(report_file),
                             "--plot", str(plot))
    assert res.returncode == 0, res.stderr
    assert "speedup" in res.stdout
    report = json.loads(report_file.read_text())
    assert report["schema"] == "cephalon-edge/calibrate/1"
    assert report["val"]["accuracy"] == report["val"]["full_depth_accuracy"]  # --max-drop 0
    # a zero drop cannot be promised at 99% from any sample count: nothing exits early, and it is said
    assert report["val"]["confidence"] == 0.99 and report["val"]["accuracy_drop_bound"] == 0.0
    assert report["val"]["exit_rates"]["final"] == 1.0 and "no sample exits early" in " ".join(res.stderr.split())
    for key in ("accuracy", "full_depth_accuracy", "accuracy_drop", "exit_rates", "flops_ratio", "mean_ms",
                "static_mean_ms", "speedup"):
        assert key in report["test"], key
    assert sum(report["test"]["exit_rates"].values()) == pytest.approx(1.0)
    assert report["test"]["static_source"] == "static model"
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    manifest = Manifest.open(pkg)
    assert manifest.data["exit_policy"]["calibrated"] is True
    assert manifest.thresholds == report["thresholds"]
    assert manifest.data["calibration"]["dataset"].endswith("(half A)")

    again_file = tmp_path / "again.json"
    res = run_cli_in_process("calibrate", str(pkg), "--data", str(data), "--max-drop", "0", "--json", str(again_file))
    assert res.returncode == 0, res.stderr
    again = json.loads(again_file.read_text())
    assert again["thresholds"] == report["thresholds"]
    assert again["segment_latency"]["measured_now"] is False


def test_calibrate_promises_the_drop_at_a_confidence(package, tmp_path):
    """A higher confidence never lets more samples leave early; the bound is reported beside
    the validation drop and is never below it."""
    pkg, data = package
    finals = []
    for confidence in ("0.5", "0.99"):
        out = tmp_path / f"cal-{confidence}.json"
        res = run_cli_in_process("calibrate", str(pkg), "--data", str(data), "--max-drop", "0.05", "--confidence", confidence,
                                 "--json", str(out))
        assert res.returncode == 0, res.stderr
        val = json.loads(out.read_text())["val"]
        assert val["confidence"] == float(confidence) and val["accuracy_drop_bound"] >= val["accuracy_drop"] - 1e-12
        assert val["accuracy_drop_bound"] <= 0.05 + 1e-9
        finals.append(val["exit_rates"]["final"])
    assert finals[1] >= finals[0]
    assert "at most" in res.stdout and "99% confidence" in " ".join(res.stdout.split())


def test_restore_refuses_a_history_entry_that_is_no_exit_policy(package, tmp_path):
    """Each would have been written into the manifest, leaving a package that no longer opens."""
    import math
    import shutil

    from cephalon_edge.errors import UsageError
    from cephalon_edge.tune.calibrate import restore_previous

    pkg = tmp_path / "pkg"
    shutil.copytree(package[0], pkg)
    manifest = json.loads((pkg / "manifest.json").read_text())
    good = manifest["exit_policy"]
    histories = {
        "a NaN threshold": [{"exit_policy": {**good, "thresholds": {k: math.nan for k in good["thresholds"]}}}],
        "a string threshold": [{"exit_policy": {**good, "thresholds": {k: "0.5" for k in good["thresholds"]}}}],
        "an unknown score": [{"exit_policy": {**good, "score": "rm -rf"}}],
        "a policy that is a number": [{"exit_policy": 5}],
        "an entry that is a number": [7],
        "a history that is an object": {"exit_policy": good},
    }
    for what, history in histories.items():
        (pkg / "manifest.json").write_text(json.dumps({**manifest, "calibration_history": history}))
        before = (pkg / "manifest.json").read_bytes()
        with pytest.raises(UsageError, match="nothing was restored"):
            restore_previous(pkg)
        assert (pkg / "manifest.json").read_bytes() == before, what
    res = run_cli_in_process("calibrate", str(pkg), "--restore")
    assert res.returncode == 2 and "calibration_history is not a list" in res.stderr and "Traceback" not in res.stderr
    (pkg / "manifest.json").write_text(json.dumps({**manifest, "calibration_history": [{"exit_policy": good}]}))
    assert restore_previous(pkg)["history_left"] == 0  # a good entry still restores


def test_calibrate_says_when_routing_does_not_pay(tmp_path):
    """Exits that are never confident: every sample runs to full depth, through the exit heads
    and one call per segment, which cannot beat the plain network in one call."""
    net = make_net(seed=3, stages=[{"channels": 8, "blocks": 1, "exit": True}, {"channels": 8, "blocks": 1}],
                   tasks=[{"name": "class", "outputs": 5}])
    with torch.no_grad():
        for param in net.exits.parameters():
            param.zero_()  # uniform logits: max-softmax 0.2 on every sample
    checkpoint.save(net, tmp_path / "m.cephalon")
    export_package(tmp_path / "m.cephalon", tmp_path / "pkg", ExportSpec("onnx", with_static=True, verify=False))
    data = labelled_npz(net, tmp_path / "data.npz", samples=80, seed=4)
    report_file = tmp_path / "cal.json"
    res = run_cli_in_process("calibrate", str(tmp_path / "pkg"), "--data", str(data), "--max-drop", "0",
                             "--json", str(report_file))
    assert res.returncode == 0, res.stderr
    report = json.loads(report_file.read_text())
    assert report["test"]["exit_rates"]["final"] == 1.0
    # the verdict follows the measured speedup (timing itself is never asserted: that races the clock)
    assert report["routing_pays"] is (report["test"]["speedup"] > 1.0)
    assert ("routing does not pay here" in res.stdout) is not report["routing_pays"]
    # expected latencies price the router's own work per call, not only the segments
    assert report["router_ms_per_call"] > 0
    calls = len(report["segment_ms"])
    assert report["val"]["full_depth_ms"] == pytest.approx(sum(report["segment_ms"].values())
                                                           + calls * report["router_ms_per_call"])


def test_calibrate_rejects_bad_input(package, tmp_path):
    pkg, _ = package
    before = (pkg / "manifest.json").read_bytes()
    bad = tmp_path / "bad.npz"
    np.savez(bad, image=np.zeros((10, 1, 8, 8), np.float32), labels=np.zeros(10, np.int64))
    for args in (["--data", str(bad)], ["--data", "digits:val"], ["--data", str(bad), "--max-drop", "2"],
                 ["--data", str(bad), "--max-drop", "0.1", "--latency-budget-ms", "1"],
                 ["--data", str(bad), "--score", "vibes"], ["--data", str(bad), "--confidence", "1.5"]):
        res = run_cli_in_process("calibrate", str(pkg), *args)
        assert res.returncode == 2, (args, res.stderr)
        assert res.stderr.startswith("error: ") and "Traceback" not in res.stderr
    res = run_cli_in_process("calibrate", str(pkg), "--data", str(package[1]), "--confidence", "1.5")
    assert res.returncode == 2 and "--confidence is a probability in [0.5, 1)" in res.stderr
    assert (pkg / "manifest.json").read_bytes() == before


def test_manifest_update_is_atomic(package, monkeypatch):
    pkg, data = package
    before = (pkg / "manifest.json").read_bytes()
    real_replace = os.replace

    def crash(src, dst):
        if str(dst).endswith("manifest.json"):
            raise OSError("disk full (simulated)")
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        calibrate_package(pkg, CalibrateSpec(data=str(data), max_drop=0.05, rounds=1))
    assert (pkg / "manifest.json").read_bytes() == before
    assert sorted(p.name for p in pkg.iterdir() if p.name.startswith(".")) == []


def test_plain_flops_count_one_expert_and_no_exit_heads(package, tmp_path):
    """The static model's FLOPs are the final path's (one expert of the mixture, as `inspect`
    counts), not every expert's."""
    from cephalon_edge.toolchain.segments import build_segments

    pkg, data = package
    res = run_cli_in_process("calibrate", str(pkg), "--data", str(data), "--json", str(tmp_path / "c.json"))
    assert res.returncode == 0, res.stderr
    static_flops = json.loads((tmp_path / "c.json").read_text())["test"]["static_flops"]
    segset = build_segments(checkpoint.load(pkg.parent / "tiny.cephalon"))
    final = segset.exit_paths()[-1]
    exits = sum(2 * segset.parts[p].macs for p in final["segments"] if segset.parts[p].kind == "exit")
    assert static_flops == pytest.approx(final["cumulative_flops"] - exits)
    experts = [p for p in segset.parts if ".expert" in p]
    assert len(experts) == 3 and sum(p.startswith("moe2.expert") for p in final["segments"]) == 1


def test_run_reports_each_inputs_own_latency_in_strict_json(package, tmp_path):
    pkg, _ = package
    np.save(tmp_path / "x.npy", np.random.default_rng(0).standard_normal((4, 1, 12, 12)).astype(np.float32))
    res = run_cli_in_process("run", str(pkg), str(tmp_path / "x.npy"), "--task", "aux", "--threshold", "0",
                             "--json", str(tmp_path / "r.json"))
    assert res.returncode == 0, res.stderr
    text = (tmp_path / "r.json").read_text()
    report = json.loads(text, parse_constant=lambda c: (_ for _ in ()).throw(ValueError(c)))  # no NaN
    rows = report["predictions"]
    assert all(r["exit"] == "exit0" and r["tasks"]["aux"] == [None, None] for r in rows)  # left before the head
    assert report["cold_start_us"] > 0 and all(r["latency_us"] > 0 for r in rows)
    # each input's latency is its own path's: the segments it ran, not the batch's
    assert sum(r["latency_us"] for r in rows) == pytest.approx(sum(report["segment_us"].values()), rel=1e-6)
    assert "cold" in res.stdout


def test_a_held_out_drop_over_budget_is_said():
    import warnings

    from cephalon_edge.errors import Note
    from cephalon_edge.tune.calibrate import warn_held_out_drop

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert warn_held_out_drop({"accuracy_drop": 0.03, "dataset": "d (half B)"}, 0.01) is True
        assert warn_held_out_drop({"accuracy_drop": 0.005, "dataset": "d (half B)"}, 0.01) is False
    notes = [w for w in caught if issubclass(w.category, Note)]
    assert len(notes) == 1 and "3.00 points" in str(notes[0].message)


def test_alternating_blocks_times_each_runner_in_blocks_with_an_injected_clock():
    from cephalon_edge.tune.timing import alternating_blocks

    now = [0]
    calls: list[tuple[str, int]] = []
    cost = {"routed": 1_000_000, "static": 3_000_000}  # ns per call

    def runner(name):
        def run(i):
            calls.append((name, i))
            now[0] += cost[name]
            return (name, i)
        return run

    times, results = alternating_blocks(5, {"routed": runner("routed"), "static": runner("static")}, rounds=2,
                                        block=2, clock=lambda: now[0])
    assert times["routed"].tolist() == [1.0] * 10 and times["static"].tolist() == [3.0] * 10
    assert results["static"] == [("static", i) for i in range(5)]
    # blocks of 2: an untimed warm call, then the block, under one runner before the next
    assert calls[:6] == [("routed", 0), ("routed", 0), ("routed", 1), ("static", 0), ("static", 0), ("static", 1)]
