"""A fake `adb` for the tests: emulates Android devices kept in a state directory.

State: ``$FAKE_ADB_DIR/devices.json`` = ``[{serial, state, props, vanish_at?}]``; each device's
files live in ``$FAKE_ADB_DIR/<serial>/``. It answers ``devices [-l]``, ``shell getprop``,
``push``, ``shell mkdir/chmod/rm`` and runs ``benchmark_model`` by loading the pushed .tflite
with the LiteRT interpreter on the host and printing benchmark_model's real output format
(``$FAKE_ADB_FORMAT``: ``litert`` (default), ``v2`` or ``v1``), and ExecuTorch's
``executor_runner`` by running the pushed .pte's method with ``executorch.runtime`` and printing
the runner's log lines (``$FAKE_ADB_RUNNER=old``: a runner without ``--method_name``). ``vanish_at`` (push, chmod,
run, cleanup) makes the device disappear at that step, as an unplugged phone does; ``hang_at: run``
makes a benchmark run last until it is interrupted. Each run is logged to ``<serial>.runs``.
``--enable_op_profiling=true`` adds the op table of LiteRT's profile summary: the signature's
ops, those the run's delegate documents (``delegate_ops.json``) as one delegated partition per
run of consecutive ops (the NNAPI and GPU delegates' ``TfLite...Delegate`` rows), or each op as
``Delegate/<op>:<n>`` (XNNPACK profiles its own ops, in the newer space-separated layout without
``[start]``), the rest as CPU kernel rows; the measured average is shared out by op weight.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from pathlib import Path

STATE = Path(os.environ["FAKE_ADB_DIR"])
DEVICE_ROOT = "/data/local/tmp/cephalon-edge"


def load() -> list[dict]:
    return json.loads((STATE / "devices.json").read_text())


def save(devices: list[dict]) -> None:
    (STATE / "devices.json").write_text(json.dumps(devices))


def fail(message: str) -> None:
    print(f"adb: error: {message}", file=sys.stderr)
    sys.exit(1)


def local(serial: str, remote: str) -> Path:
    if not remote.startswith(DEVICE_ROOT):
        fail(f"remote path {remote} outside the test area")
    return STATE / serial / remote[len(DEVICE_ROOT):].lstrip("/")


def vanish(devices: list[dict], device: dict, step: str) -> None:
    """Disappear at ``step``; ``run:N`` means at the N-th benchmark run."""
    rule = device.get("vanish_at", "")
    if step == "run" and rule.startswith("run:"):
        device["runs"] = device.get("runs", 0) + 1
        save(devices)
        if device["runs"] < int(rule.split(":")[1]):
            return
        rule = "run"
    if rule == step:
        save([d for d in devices if d["serial"] != device["serial"]])
        fail(f"device '{device['serial']}' not found")


def benchmark(serial: str, args: list[str]) -> None:
    import numpy as np
    from ai_edge_litert.interpreter import Interpreter

    binary = local(serial, args[0])
    if not binary.exists() or not os.access(binary, os.X_OK):
        print(f"/system/bin/sh: {args[0]}: can't execute: Permission denied", file=sys.stderr)
        sys.exit(126)
    opts = dict(a[2:].split("=", 1) for a in args[1:] if a.startswith("--"))
    graph = local(serial, opts["graph"])
    interp = Interpreter(model_path=str(graph), num_threads=int(opts.get("num_threads", 1)))
    runner = interp.get_signature_runner(opts.get("signature_to_run_for") or None)
    details = runner.get_input_details()
    feeds = {k: np.zeros(v["shape"], v["dtype"]) for k, v in details.items()}
    t0 = time.perf_counter()
    runner(**feeds)
    first = (time.perf_counter() - t0) * 1e6
    times = []
    for _ in range(int(opts.get("num_runs", 10))):
        t = time.perf_counter()
        runner(**feeds)
        times.append((time.perf_counter() - t) * 1e6)
    avg, std = float(np.mean(times)), float(np.std(times))
    fmt = os.environ.get("FAKE_ADB_FORMAT", "litert")
    print("INFO: STARTING!")
    print(f"INFO: Graph: [{opts['graph']}]")
    print(f"INFO: Signature to run: [{opts.get('signature_to_run_for', '')}]")
    print(f"INFO: #threads used for CPU inference: [{opts.get('num_threads', 1)}]")
    if fmt == "v1":
        print(f"Average inference timings in us: Warmup: {first:.2f}, Init: 1523, no stats: {avg:.2f}")
        return
    print("INFO: The input model file size (MB): 0.5")
    print("INFO: Initialized session in 1.523ms.")
    print("INFO: Running benchmark for at least 1 iterations and at least 0.5 seconds but terminate if exceeding 150 seconds.")
    print(f"INFO: count=1 curr={first:.0f}\n")
    print(f"INFO: Running benchmark for at least {len(times)} iterations and at least 1 seconds but terminate if exceeding 150 seconds.")
    print(f"INFO: count={len(times)} first={times[0]:.0f} curr={times[-1]:.0f} min={min(times):.0f} "
          f"max={max(times):.0f} avg={avg:.6g} std={std:.0f}\n")
    if fmt == "v2":
        print(f"INFO: Inference timings in us: Init: 1523, First inference: {first:.0f}, "
              f"Warmup (avg): {first:.2f}, Inference (avg): {avg:.2f}")
    else:
        print(f"INFO: Inference timings in us: Init: 1523, First inference: {first:.0f}, "
              f"Warmup (avg): {first:.6e}, Inference (avg): {avg:.6e}")
    print("INFO: Note: as the benchmark tool itself affects memory footprint, the following is only APPROXIMATE to the actual memory footprint of the model at runtime. Take the information at your discretion.")
    print("INFO: Memory footprint delta from the start of the tool (MB): init=2.875 overall=5.375")
    print("INFO: Overall peak memory footprint (MB) via periodic monitoring: 7.125")
    if opts.get("enable_op_profiling") == "true":
        op_table(graph, opts.get("signature_to_run_for") or "serving_default", delegate_of(opts), avg)


def delegate_of(opts: dict) -> str:
    for flag, name in (("use_gpu", "gpu"), ("use_nnapi", "nnapi")):
        if opts.get(flag) == "true":
            return name
    return "cpu" if opts.get("use_xnnpack") == "false" else "xnnpack"


def op_table(graph: Path, signature: str, delegate: str, avg_us: float) -> None:
    from cephalon_edge.toolchain.delegates import documented_ops, tflite_ops

    ops = tflite_ops(graph)[signature]
    supported = set() if delegate == "cpu" else set(documented_ops()[delegate]["ops"])
    weights = [4.0 if op in ("CONV_2D", "FULLY_CONNECTED", "DEPTHWISE_CONV_2D", "BATCH_MATMUL") else 1.0 for op in ops]
    ms = [avg_us / 1000 * w / sum(weights) for w in weights]
    rows = []  # (node type, avg ms, name)
    node = {"gpu": "TfLiteGpuDelegateV2", "nnapi": "TfLiteNnapiDelegate"}.get(delegate)
    for i, op in enumerate(ops):
        if op not in supported:
            rows.append((op, ms[i], f"[{op.lower()}_{i}]:{i}"))
        elif node is None:  # XNNPACK: its own ops, by its operator names
            rows.append((f"{op.title().replace('_', ' ')} (NC, F32)", ms[i], f"Delegate/{op.title()} (NC, F32):{i}"))
        elif rows and rows[-1][0] == node:
            rows[-1] = (node, rows[-1][1] + ms[i], rows[-1][2])
        else:
            rows.append((node, ms[i], f"[partition_{i}]:{i}"))
    total = sum(r[1] for r in rows)
    print("INFO: Operator-wise Profiling Info for Regular Benchmark Runs:")
    print("============================== Run Order ==============================")
    if node is None:
        print(f"{'[node type]':>40}{'[first]':>16}{'[avg ms]':>16}{'[%]':>16}{'[cdf%]':>16}{'[mem KB]':>16}"
              f"{'[times called]':>22}  [Name]")
    else:
        print("\t" + "\t".join(f"{c:>16}" for c in ("[node type]", "[start]", "[first]", "[avg ms]", "[%]", "[cdf%]",
                                                     "[mem KB]", "[times called]")) + "\t[Name]")
    start = cdf = 0.0
    for kind, t, name in rows:
        cdf += 100 * t / total
        if node is None:
            print(f"{kind:>40}{t:>16.3f}{t:>16.3f}{100 * t / total:>15.3f}%{cdf:>15.3f}%{0.0:>16.3f}{1:>22}  {name}")
        else:
            print("\t" + "\t".join(f"{v:>16}" for v in (kind, f"{start:.3f}", f"{t:.3f}", f"{t:.3f}", f"{100 * t / total:.3f}%",
                                                         f"{cdf:.3f}%", "0.000", "1")) + f"\t{name}")
        start += t
    print("")
    print("============================== Top by Computation Time ==============================")


def executor_runner(serial: str, args: list[str]) -> None:
    import torch
    from executorch.extension.pybindings import _C  # what executorch.runtime wraps, without the compiler

    if not os.access(local(serial, args[0]), os.X_OK):
        print(f"/system/bin/sh: {args[0]}: can't execute: Permission denied", file=sys.stderr)
        sys.exit(126)
    opts = dict(a[2:].split("=", 1) for a in args[1:] if a.startswith("--"))
    if os.environ.get("FAKE_ADB_RUNNER") == "old" and "method_name" in opts:
        print("ERROR: unknown command line flag 'method_name'", file=sys.stderr)
        sys.exit(1)
    stamp = "I 00:00:00.001234 executorch:executor_runner.cpp"
    t0 = time.perf_counter()
    program = _C._load_program(str(local(serial, opts["model_path"])))
    name = opts.get("method_name") or program.get_method_name(0)
    method = program.load_method(name)
    print(f"{stamp}:311] Model loaded in {(time.perf_counter() - t0) * 1000:.6f} ms.")
    meta = method.method_meta()
    inputs = [torch.ones(meta.input_tensor_meta(i).sizes()) for i in range(meta.num_inputs())]
    runs, total = int(opts.get("num_executions", 1)), 0.0
    for i in range(runs):
        t = time.perf_counter()
        method.call(inputs)
        ms = (time.perf_counter() - t) * 1000
        total += ms
        print(f"{stamp}:412] Iteration {i + 1} of {runs}: {ms:.6f} ms")
    print(f"{stamp}:420] Model executed successfully {runs} time(s) in {total:.6f} ms.")
    print(f"{stamp}:424] {meta.num_outputs()} outputs: ")


def main(argv: list[str]) -> None:
    serial = os.environ.get("ANDROID_SERIAL")
    if argv[:1] == ["-s"]:
        serial, argv = argv[1], argv[2:]
    devices = load()
    if argv[:1] == ["devices"]:
        print("List of devices attached")
        for d in devices:
            extra = f" product:x model:{d['props'].get('ro.product.model', '').replace(' ', '_')} device:x transport_id:1" \
                if d["state"] == "device" else " transport_id:1"
            print(f"{d['serial']}\t{d['state']}{extra}")
        print()
        return
    ready = [d for d in devices if d["state"] == "device"]
    if serial is None:
        if len(ready) != 1:
            fail("more than one device/emulator" if ready else "no devices/emulators found")
        serial = ready[0]["serial"]
    device = next((d for d in devices if d["serial"] == serial), None)
    if device is None:
        fail(f"device '{serial}' not found")
    if device["state"] != "device":
        fail(f"device {device['state']}")
    cmd = argv[0]
    if cmd == "push":
        vanish(devices, device, "push")
        dst = local(serial, argv[2])
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(argv[1], dst)
        print(f"{argv[1]}: 1 file pushed, 0 skipped.")
    elif cmd == "shell":
        args = argv[1:]
        if args == ["getprop"]:
            for k, v in device["props"].items():
                print(f"[{k}]: [{v}]")
        elif args[0] == "mkdir":
            local(serial, args[-1]).mkdir(parents=True, exist_ok=True)
        elif args[0] == "chmod":
            vanish(devices, device, "chmod")
            local(serial, args[-1]).chmod(0o755)
        elif args[0] == "rm":
            vanish(devices, device, "cleanup")
            shutil.rmtree(local(serial, args[-1]), ignore_errors=True)
        elif args[0].endswith(("/benchmark_model", "/executor_runner")):
            vanish(devices, device, "run")
            with open(STATE / f"{serial}.runs", "a") as log:
                log.write(args[1] + "\n")
            if device.get("hang_at") == "run":  # a long run: says it started, then runs until interrupted
                (STATE / f"{serial}.running").write_text("1")
                # only the interrupt ends it; short sleeps, not signal.pause(): an interrupt that
                # lands between the line above and pause() would leave pause() waiting for good
                while True:
                    time.sleep(0.05)
            (executor_runner if args[0].endswith("/executor_runner") else benchmark)(serial, args)
        else:
            fail(f"fake adb: unsupported shell command {args}")
    else:
        fail(f"fake adb: unsupported command {cmd}")


if __name__ == "__main__":
    main(sys.argv[1:])
