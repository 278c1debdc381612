"""A fake Qualcomm AI Hub for the tests, at the qai-hub client's REST layer.

Loaded as ``sitecustomize`` when a test puts ``tests/fake_hub`` on ``PYTHONPATH`` and sets
``FAKE_HUB_DIR``: it replaces the functions of ``qai_hub.public_rest_api`` that talk HTTP with
ones answering from a state directory, returning the client's own protobuf messages. Everything
above that layer is the real client: its configuration file (``QAIHUB_CLIENT_INI``), ``Client``,
``Device``, ``Model``, ``InferenceJob``, ``JobStatus``, ``download_profile`` and its
``_profile_pb_to_python_dict``, so a change of the client's API breaks the tests.

State (``$FAKE_HUB_DIR``): ``devices.json`` (``[{name, os, attributes}]``), ``token`` (the API
token it accepts), ``fail`` (jobs on models whose name contains this text fail), ``models/`` (the
uploaded files), ``jobs/<id>.json``, ``log`` (one line per upload and per job). A job "runs" its
(ONNX) model on this host with ONNX Runtime; every layer is listed with a
compute unit (NPU, or CPU for the op kinds in ``CPU_OPS``) and a share of the measured time. A
job reports a running state at its first poll and its end at the next.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

STATE = Path(os.environ["FAKE_HUB_DIR"]) if os.environ.get("FAKE_HUB_DIR") else None
CPU_OPS = {"Softmax", "ReduceMax", "ArgMax", "TopK"}
HEAVY_OPS = {"Conv", "Gemm", "MatMul"}
RUNS = 20


def _install() -> None:
    from google.protobuf.timestamp_pb2 import Timestamp
    from qai_hub import public_api_pb2 as pb
    from qai_hub import public_rest_api as api

    def log(line: str) -> None:
        with open(STATE / "log", "a") as f:
            f.write(line + "\n")

    def check(config, what: str) -> None:
        if config.api_token != (STATE / "token").read_text().strip():
            raise api.APIException(status_code=401, url=f"{config.api_url}/api/v1/{what}")

    def now() -> Timestamp:
        t = Timestamp()
        t.GetCurrentTime()
        return t

    def next_id(kind: str) -> str:
        counter = STATE / f"{kind}.count"
        n = int(counter.read_text()) + 1 if counter.exists() else 1
        counter.write_text(str(n))
        return f"{kind[0]}{n:06d}"

    def get_device_list(config, name="", os="", attributes=None, select=False):
        check(config, "devices")
        devices = [d for d in json.loads((STATE / "devices.json").read_text())
                   if (not name or d["name"] == name) and (not os or d["os"] == os)
                   and set(attributes or []) <= set(d["attributes"])]
        if select:
            devices = devices[-1:]
        out = pb.DeviceList(total_query_count=len(devices))
        for d in devices:
            out.devices.append(pb.Device(name=d["name"], os=d["os"], attributes=d["attributes"]))
        return out

    def create_and_upload_model(config, path, model_type, name=None, project_id=None, verbose=None,
                                is_directory=False, use_acceleration=True, logger=None):
        check(config, "models")
        model_id = next_id("model")
        (STATE / "models").mkdir(exist_ok=True)
        shutil.copy(path, STATE / "models" / f"{model_id}{Path(path).suffix}")
        (STATE / "models" / f"{model_id}.json").write_text(json.dumps({"name": name, "type": model_type,
                                                                       "suffix": Path(path).suffix}))
        log(f"upload {model_id} {name}")
        return pb.CreateUpdateResponse(id=model_id, creation_time=now())

    def model_info(config, model_id):
        meta = STATE / "models" / f"{model_id}.json"
        if not meta.exists():
            raise api.APIException(message=json.dumps({"detail": f"Model {model_id} not found."}), status_code=404,
                                   url=f"{config.api_url}/api/v1/models/{model_id}")
        return json.loads(meta.read_text())

    def get_model(config, model_id):
        check(config, "models")
        info = model_info(config, model_id)
        return pb.Model(model_id=model_id, name=info["name"], model_type=info["type"], creation_time=now(),
                        file_upload_complete=True)

    def create_inference_job(config, job_pb, project_id=None):
        check(config, "jobs")
        job_id = next_id("job")
        model_id = job_pb.model.model_id
        info = model_info(config, model_id)
        job = {"model": model_id, "name": job_pb.name, "device": {"name": job_pb.device.name, "os": job_pb.device.os,
                                                                  "attributes": list(job_pb.device.attributes)},
               "polls": 0, "profiling": job_pb.is_profiling_on}
        fail = (STATE / "fail").read_text().strip() if (STATE / "fail").exists() else ""
        if fail and fail in info["name"]:
            job["failure"] = "Failed to load the model on the device: op not supported by this runtime (fake)"
        else:
            job["profile"] = run_model(STATE / "models" / f"{model_id}{info['suffix']}")
        (STATE / "jobs").mkdir(exist_ok=True)
        (STATE / "jobs" / f"{job_id}.json").write_text(json.dumps(job))
        log(f"job {job_id} {model_id} {job_pb.device.name}")
        return pb.CreateUpdateResponse(id=job_id, creation_time=now())

    def load_job(job_id):
        return json.loads((STATE / "jobs" / f"{job_id}.json").read_text())

    def get_job(config, job_id):
        check(config, "jobs")
        job = load_job(job_id)
        job["polls"] += 1
        (STATE / "jobs" / f"{job_id}.json").write_text(json.dumps(job))
        done = job["polls"] > 1
        state = (pb.JobState.JOB_STATE_MEASURING_PERFORMANCE if not done else
                 pb.JobState.JOB_STATE_FAILED if "failure" in job else pb.JobState.JOB_STATE_DONE)
        inference = pb.InferenceJob(inference_job_id=job_id, model=pb.Model(model_id=job["model"]), name=job["name"],
                                    device=pb.Device(**job["device"]), job_state=state, creation_time=now(),
                                    is_profiling_on=job["profiling"], failure_reason=job.get("failure", "") if done else "")
        return pb.Job(inference_job=inference)

    def get_job_results(config, job_id):
        check(config, "jobs")
        job = load_job(job_id)
        p = job["profile"]
        detail = pb.ProfileDetail(major_version=1, minor_version=2, execution_time=p["mean_us"],
                                  after_execution_peak_memory=p["peak_bytes"], cold_load_time=p["cold_us"],
                                  warm_load_time=p["warm_us"], all_execution_times=p["times_us"])
        for i, layer in enumerate(p["layers"]):
            detail.layer_details.append(pb.LayerDetail(
                name=layer["name"], layer_type_name=layer["type"], id=str(i), execution_time=layer["us"],
                compute_unit=pb.ComputeUnit.Value(f"COMPUTE_UNIT_{layer['unit']}")))
        return pb.JobResult(inference_job_result=pb.InferenceJobResult(inference_job_id=job_id, detail=detail))

    api.get_device_list = get_device_list
    api.create_and_upload_model = create_and_upload_model
    api.get_model = get_model
    api.create_inference_job = create_inference_job
    api.get_job = get_job
    api.get_job_results = get_job_results


def run_model(path: Path) -> dict:
    """Time the model on this host and list its layers with a compute unit each."""
    import numpy as np

    import onnx
    import onnxruntime as ort

    graph = onnx.load(str(path)).graph
    layers = [(n.op_type, n.name or f"{n.op_type}_{i}") for i, n in enumerate(graph.node)]
    t0 = time.perf_counter()
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    dtypes = {"tensor(float)": np.float32, "tensor(int64)": np.int64, "tensor(int32)": np.int32}
    feeds = {i.name: np.zeros([d if isinstance(d, int) else 1 for d in i.shape], dtypes[i.type])
             for i in sess.get_inputs()}
    sess.run(None, feeds)
    cold = time.perf_counter() - t0

    def run():
        sess.run(None, feeds)
    times = []
    for _ in range(RUNS):
        t = time.perf_counter()
        run()
        times.append(int((time.perf_counter() - t) * 1e6) + 1)
    mean = int(np.mean(times))
    weights = np.array([4.0 if op in HEAVY_OPS else 1.0 for op, _ in layers])
    shares = weights / weights.sum() if len(layers) else weights
    return {"mean_us": mean, "times_us": times, "cold_us": int(cold * 1e6), "warm_us": int(cold * 5e5),
            "peak_bytes": 3 << 20,
            "layers": [{"type": op, "name": name, "unit": "CPU" if op in CPU_OPS else "NPU", "us": max(1, int(mean * s))}
                       for (op, name), s in zip(layers, shares)]}


if STATE is not None:
    _install()
