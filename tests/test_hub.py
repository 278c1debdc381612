"""bench --hub / devices --hub against a fake Qualcomm AI Hub at the qai-hub client's REST layer
(tests/fake_hub): the real client runs above it, its configuration file, jobs and profiles."""

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import HUB_FARM as FARM
from conftest import HUB_TOKEN as TOKEN
from conftest import S24, run_cli, small_digits_package

from cephalon_edge.device.manifest import Manifest


@pytest.fixture(scope="module")
def package(tmp_path_factory):
    root = tmp_path_factory.mktemp("hub")
    return small_digits_package("onnx", root / "pkg")


def log(state: Path, kind: str) -> list[list[str]]:
    lines = (state / "log").read_text().splitlines() if (state / "log").exists() else []
    return [line.split(" ", 3)[1:] for line in lines if line.startswith(kind + " ")]


def test_bench_on_the_farm_then_reuse_the_uploads(package, fake_hub, tmp_path):
    env, state = fake_hub
    out = tmp_path / "r.json"
    r = run_cli("bench", str(package), "--hub", S24, "--data", "digits:test", "--json", str(out), "--plot",
                str(tmp_path / "r.png"), env=env)
    assert r.returncode == 0, r.stderr + r.stdout
    manifest = Manifest.open(package)
    files = sorted({*manifest.segment_files, manifest.static["file"]})
    assert len(log(state, "upload")) == len(files)
    jobs = log(state, "job")
    assert len(jobs) == len(manifest.segments) + 1 and all(device == S24 for _, _, device in jobs)

    report = json.loads(out.read_text())
    (device,) = report["devices"]
    assert device["status"] == "ok" and device["soc"] == "qualcomm-snapdragon-8gen3"
    # the figures are the profiles' (us -> ms), job by job
    for row in device["segments"] + [{**device["static"], "name": "static"}]:
        profile = json.loads((state / "jobs" / f"{row['job']}.json").read_text())["profile"]
        assert row["mean_ms"] == pytest.approx(profile["mean_us"] / 1000)
        assert row["std_ms"] == pytest.approx(np.std(profile["times_us"]) / 1000)
        assert row["url"] == f"https://hub.invalid/jobs/{row['job']}/"
    assert [s["name"] for s in device["segments"]] == list(manifest.segments)
    e2e = device["end_to_end"]
    assert e2e["dataset"] == "digits:test" and e2e["samples"] == 360
    # priced with the exit mix: every sample pays the first segment, those that go on the second
    first, second = (s["mean_ms"] for s in device["segments"])
    assert e2e["mean_ms"] == pytest.approx(first + (1 - e2e["exit_rates"]["exit0"]) * second)
    assert device["speedup"] == pytest.approx(device["static"]["mean_ms"] / e2e["mean_ms"])

    # placement: the fake puts Softmax/ReduceMax/ArgMax/TopK on the CPU; the report finds exactly those nodes
    for row in device["placement"]:
        path = package / (manifest.static["file"] if row["segment"] == "static" else manifest.segments[row["segment"]]["file"])
        kinds = [n.op_type for n in onnx.load(str(path)).graph.node]
        fallback = [k for k in kinds if k in {"Softmax", "ReduceMax", "ArgMax", "TopK"}]
        assert row["source"] == "AI Hub profile" and row["ops"] == len(kinds)
        assert sorted(o["kind"] for o in row["fallback_ops"]) == sorted(fallback)
        assert row["ops_on_accelerator"] == len(kinds) - len(fallback)
        assert 0 < row["time_share_on_accelerator"] <= 1
    assert (tmp_path / "r.png").read_bytes()[:4] == b"\x89PNG"
    assert "microbenchmark" in report["note"]

    # the second run uploads nothing: the models are found by their sha256
    r = run_cli("bench", str(package), "--hub", S24, "--data", "digits:test", "--json", str(out), env=env)
    assert r.returncode == 0, r.stderr
    assert len(log(state, "upload")) == len(files) and len(log(state, "job")) == 2 * len(jobs)
    again = json.loads(out.read_text())
    assert again["uploaded_models"] == 0 and again["reused_models"] == len(files)
    # the API token is the client's: never in our report or cache
    cached = [p.read_text() for p in Path(env["CEPHALON_EDGE_CACHE"]).rglob("*.json")]
    assert cached and not any(TOKEN in text for text in cached + [out.read_text(), r.stdout, r.stderr])


def test_a_failing_job_keeps_the_others(package, fake_hub, tmp_path):
    env, state = fake_hub
    second = list(Manifest.open(package).segments)[1]
    (state / "fail").write_text(second)
    out = tmp_path / "r.json"
    r = run_cli("bench", str(package), "--hub", S24, "--hub", "Samsung Galaxy S23", "--data", "digits:test",
                "--json", str(out), env=env)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "failed: Failed to load the model on the device" in r.stderr and "https://hub.invalid/jobs/" in r.stderr
    report = json.loads(out.read_text())
    assert [d["device"] for d in report["devices"]] == [S24, "Samsung Galaxy S23"]
    for device in report["devices"]:
        assert device["status"] == "failed" and second in device["error"]
        assert [s["name"] for s in device["segments"]] != [] and second not in [s["name"] for s in device["segments"]]
        assert device["static"]["mean_ms"] > 0 and device["end_to_end"] is None and device["speedup"] is None
        assert {j["part"]: j["status"] for j in device["jobs"]}[second] == "failed"
    assert report["devices"][1]["profile"] == "galaxy-s23"  # matched by its AI Hub name


def test_hub_errors_are_one_line(package, fake_hub, tmp_path):
    env, state = fake_hub
    r = run_cli("bench", str(package), "--hub", "Samsung Galaxy S25", env=env)
    assert r.returncode == 2 and "no device named 'Samsung Galaxy S25'" in r.stderr and "Galaxy S24" in r.stderr
    r = run_cli("bench", str(package), "--hub", "Apple iPhone 15 Pro", env=env)
    assert r.returncode == 2 and "does not run onnx models" in r.stderr
    r = run_cli("bench", str(package), "--hub", S24, env={**env, "QAIHUB_CLIENT_INI": str(tmp_path / "none.ini")})
    assert r.returncode == 2 and "not configured" in r.stderr and "qai-hub configure --api_token" in r.stderr
    (state / "token").write_text("another")
    r = run_cli("bench", str(package), "--hub", S24, env=env)
    assert r.returncode == 2 and "refused the API token" in r.stderr
    for result in (r,):
        assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 2
    assert not log(state, "upload")  # nothing went up before the checks


def test_devices_on_the_farm(fake_hub, tmp_path):
    env, _ = fake_hub
    out = tmp_path / "d.json"
    r = run_cli("devices", "--hub", "--json", str(out), env=env)
    assert r.returncode == 0, r.stderr
    rows = json.loads(out.read_text())["devices"]
    assert [(d["model"], d["os"]) for d in rows] == [(d["name"], d["os"]) for d in FARM]
    assert {d["model"]: d["profile"] for d in rows}["Samsung Galaxy S23"] == "galaxy-s23"
    assert rows[0]["soc"] == "qualcomm-snapdragon-8gen3" and rows[0]["frameworks"] == ["onnx", "qnn", "tflite"]


def test_client_messages_become_one_line():
    from qai_hub.client import RateLimitedError, UserError, _visible_textbox

    from cephalon_edge.errors import DeviceError, UsageError
    from cephalon_edge.tune.bench.hub import Hub, one_line

    boxed = UserError("Failed to authenticate.\n" + _visible_textbox("Failure to authenticate is likely caused by a bad token."))
    assert one_line(boxed) == "Failed to authenticate. Failure to authenticate is likely caused by a bad token."
    hub = Hub.__new__(Hub)  # no configuration needed to map errors

    def raises(exc):
        def call():
            raise exc
        return call

    with pytest.raises(UsageError, match="refused the API token"):
        hub.call("listing devices", raises(boxed))
    with pytest.raises(DeviceError, match=r"rate limit while submitting \(after the client.s own retries\): Could not create"):
        hub.call("submitting", raises(RateLimitedError("Could not create a job after retrying for 10 minutes.")))
