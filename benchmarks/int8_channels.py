"""int8 against fp32 LiteRT for a strided 3x3 convolution by its number of input channels: where
XNNPACK's int8 kernels lose to float32 (the rule behind ``FLOAT_BELOW_CHANNELS`` in
``cephalon_edge/toolchain/compress/spec.py``: convolutions this narrow stay float32 in int8
packages).

For each input-channel count C: a stem (Conv2d(C, 24, 3, stride 2, padding 1), ReLU) then a
Conv2d(24, 32, 3, stride 2) and ReLU on a C x 32 x 32 input, converted with litert-torch and
quantized three ways: not at all (fp32), static int8 throughout (the recipe of every int8
export until 2026-12-02), and int8 with the stem left float32. Batch 1, one thread, the
three interpreters timed in alternating blocks, medians.

    .venv/bin/python benchmarks/int8_channels.py [--channels 1,2,3,4,8,16] [--blocks 30]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def stem_model(channels: int):
    import torch.nn as nn

    return nn.Sequential(nn.Conv2d(channels, 24, 3, stride=2, padding=1), nn.ReLU(),
                         nn.Conv2d(24, 32, 3, stride=2, padding=1), nn.ReLU()).eval()


def convert(channels: int, workdir: Path) -> dict[str, Path]:
    import litert_torch
    import torch

    from cephalon_edge.capture import captured_output
    from converters import tflite

    torch.manual_seed(channels)
    model = stem_model(channels)
    x = torch.rand(1, channels, 32, 32)
    fp32 = workdir / f"c{channels}-fp32.tflite"
    with captured_output():
        litert_torch.convert(model, (x,)).export(str(fp32))
    calibration = {"serving_default": [{"args_0": torch.rand(1, channels, 32, 32).numpy()} for _ in range(16)]}
    paths = {"fp32": fp32}
    for name, below in (("int8", 0), ("int8, stem float", channels + 1)):
        path = workdir / f"c{channels}-{name.replace(', ', '-').replace(' ', '')}.tflite"
        path.write_bytes(fp32.read_bytes())
        tflite._quantize(path, "int8", calibration, "the stem", float_below=below)
        paths[name] = path
    return paths


def timed(paths: dict[str, Path], channels: int, blocks: int) -> dict[str, float]:
    from ai_edge_litert.interpreter import Interpreter

    x = np.random.default_rng(0).random((1, channels, 32, 32), dtype=np.float32)
    calls = {}
    for name, path in paths.items():
        interp = Interpreter(model_path=str(path), num_threads=1)
        interp.allocate_tensors()
        index = interp.get_input_details()[0]["index"]
        calls[name] = (lambda i=interp, k=index: (i.set_tensor(k, x), i.invoke()))
    times: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(blocks):
        for name, call in calls.items():
            for _ in range(100):
                t0 = time.perf_counter_ns()
                call()
                times[name].append(time.perf_counter_ns() - t0)
    return {name: float(np.median(t)) / 1e3 for name, t in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--channels", default="1,2,3,4,8,16")
    parser.add_argument("--blocks", type=int, default=30)
    args = parser.parse_args()
    print("strided 3x3 stem, C x 32 x 32 input, batch 1, one thread, median us (alternating blocks)")
    print(f"  {'C':>3} {'fp32':>7} {'int8':>7} {'int8/fp32':>9} {'stem float':>10} {'/fp32':>6}")
    with tempfile.TemporaryDirectory(prefix="cephalon-int8-channels-") as tmp:
        for channels in (int(c) for c in args.channels.split(",")):
            t = timed(convert(channels, Path(tmp)), channels, args.blocks)
            print(f"  {channels:3d} {t['fp32']:7.1f} {t['int8']:7.1f} {t['int8'] / t['fp32']:9.2f} "
                  f"{t['int8, stem float']:10.1f} {t['int8, stem float'] / t['fp32']:6.2f}")


if __name__ == "__main__":
    main()
