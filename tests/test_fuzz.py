"""Property tests of every input surface: bad input ends in a one-line CephalonError, never
in another exception (hypothesis, bounded so the suite stays fast)."""

import json
import os
import shutil

import numpy as np
import pytest
from conftest import make_net
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cephalon_edge.toolchain import checkpoint
from cephalon_edge.toolchain.artifacts import ExportSpec
from cephalon_edge.toolchain.export import export_package
from cephalon_edge.device.data import load_dataset
from cephalon_edge.device.data_checks import Contract
from cephalon_edge.device.manifest import Manifest
from cephalon_edge.device.profiles import load_profile, validate_profile
from cephalon_edge.device.router import Router
from cephalon_edge.errors import CephalonError
from cephalon_edge.tune.bench import benchmark_model

# derandomized: CI sees the same examples every run; CEPHALON_FUZZ_EXAMPLES=500 digs deeper locally
FUZZ = settings(max_examples=int(os.environ.get("CEPHALON_FUZZ_EXAMPLES", 40)), deadline=None,
                derandomize=os.environ.get("CEPHALON_FUZZ_EXAMPLES") is None,
                suppress_health_check=list(HealthCheck))
JSON = st.recursive(st.none() | st.booleans() | st.integers(-10**12, 10**12) | st.floats(allow_nan=False) | st.text(max_size=20),
                    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
                    max_leaves=12)


def one_line(exc: CephalonError) -> None:
    assert exc.message and "\n" not in exc.message.strip()


@pytest.fixture(scope="module")
def ckpt_bytes(tmp_path_factory):
    path = tmp_path_factory.mktemp("fz") / "m.cephalon"
    checkpoint.save(make_net(), path)
    return path.read_bytes()


@FUZZ
@given(data=st.data())
def test_checkpoint_mutations(ckpt_bytes, tmp_path_factory, data):
    raw = bytearray(ckpt_bytes)
    kind = data.draw(st.sampled_from(["truncate", "flip_header", "metadata", "header_size"]))
    if kind == "truncate":
        raw = raw[:data.draw(st.integers(0, len(raw) - 1))]
    elif kind == "flip_header":
        size = int.from_bytes(raw[:8], "little")
        for _ in range(data.draw(st.integers(1, 5))):
            raw[data.draw(st.integers(8, 8 + size - 1))] ^= data.draw(st.integers(1, 255))
    elif kind == "header_size":
        raw[:8] = data.draw(st.integers(0, 2**64 - 1)).to_bytes(8, "little")
    else:
        size = int.from_bytes(raw[:8], "little")
        header = json.loads(raw[8:8 + size])
        meta = json.loads(header["__metadata__"]["cephalon"])
        target = data.draw(st.sampled_from(["spec", "format", "stages", "shape", "whole"]))
        value = data.draw(JSON)
        if target == "whole":
            meta = value
        elif target == "stages":
            meta["spec"]["stages"][0] = value
        elif target == "shape":
            meta["spec"]["modalities"][0]["shape"] = data.draw(st.lists(st.integers(-5, 10**9), max_size=4))
        else:
            meta[target] = value
        header["__metadata__"]["cephalon"] = json.dumps(meta)
        body = json.dumps(header).encode()
        raw = bytearray(len(body).to_bytes(8, "little") + body + raw[8 + size:])
    path = tmp_path_factory.mktemp("m") / "x.cephalon"
    path.write_bytes(bytes(raw))
    try:
        checkpoint.load(path)
    except CephalonError as exc:
        one_line(exc)


@pytest.fixture(scope="module")
def package(tmp_path_factory):
    root = tmp_path_factory.mktemp("fzpkg")
    ckpt = root / "m.cephalon"
    checkpoint.save(make_net(), ckpt)
    export_package(ckpt, root / "pkg", ExportSpec("onnx", verify=False))
    return root / "pkg"


def _mutate(obj, data, depth=0):
    """Replace, delete or retype one value somewhere in a JSON document."""
    if isinstance(obj, dict) and obj:
        key = data.draw(st.sampled_from(sorted(obj)))
        action = data.draw(st.sampled_from(["delete", "replace", "recurse"]))
        if action == "delete":
            del obj[key]
        elif action == "replace" or depth > 4:
            obj[key] = data.draw(JSON)
        else:
            obj[key] = _mutate(obj[key], data, depth + 1)
        return obj
    if isinstance(obj, list) and obj:
        i = data.draw(st.integers(0, len(obj) - 1))
        obj[i] = _mutate(obj[i], data, depth + 1) if data.draw(st.booleans()) else data.draw(JSON)
        return obj
    return data.draw(JSON)


@FUZZ
@given(data=st.data())
def test_manifest_mutations(package, tmp_path_factory, data):
    pkg = tmp_path_factory.mktemp("p") / "pkg"
    shutil.copytree(package, pkg)
    manifest = json.loads((pkg / "manifest.json").read_text())
    manifest = _mutate(manifest, data)
    (pkg / "manifest.json").write_text(json.dumps(manifest))
    try:
        with Router.open(pkg) as router:
            router.predict({"image": np.zeros((2, 1, 12, 12), np.float32)}, thresholds=0.5)
    except CephalonError as exc:
        one_line(exc)


@FUZZ
@given(shape=st.lists(st.integers(0, 14), min_size=0, max_size=5),
       dtype=st.sampled_from(["float32", "float64", "int32", "bool", "complex64"]),
       poison=st.sampled_from([None, np.nan, np.inf]), labels=st.integers(-1, 5))
def test_npz_datasets(tmp_path_factory, shape, dtype, poison, labels):
    arr = np.zeros(shape, dtype=dtype)
    if poison is not None and arr.size and np.issubdtype(arr.dtype, np.floating):
        arr.flat[0] = poison
    path = tmp_path_factory.mktemp("d") / "d.npz"
    np.savez(path, image=arr, labels=np.zeros(max(labels, 0), np.int64) if labels >= 0 else np.zeros((2, 2)))
    try:
        ds = load_dataset(str(path), Contract(({"name": "image", "shape": [1, 12, 12]},), ("0",)))
        assert ds.inputs["image"].shape[1:] == (1, 12, 12) and np.isfinite(ds.inputs["image"]).all()
    except CephalonError as exc:
        one_line(exc)


@FUZZ
@given(masks=st.dictionaries(st.sampled_from(["image", "signal", "audio"]),
                             st.tuples(st.sampled_from(["bool", "int8", "float32"]), st.integers(0, 8),
                                       st.integers(0, 255)), max_size=3))
def test_npz_presence_masks(tmp_path_factory, masks):
    n = 6
    arrays = {"image": np.zeros((n, 1, 12, 12), np.float32), "signal": np.zeros((n, 1, 16), np.float32),
              "labels": np.zeros(n, np.int64)}
    for name, (dtype, length, bits) in masks.items():
        arrays[f"present_{name}"] = np.asarray([(bits >> i) & 1 for i in range(length)], dtype=dtype)
    path = tmp_path_factory.mktemp("d") / "d.npz"
    np.savez(path, **arrays)
    try:
        ds = load_dataset(str(path))
    except CephalonError as exc:
        one_line(exc)
        return
    # what loads is consistent: every sample holds a modality, and grouping by what each
    # sample holds partitions the samples
    held = np.stack([ds.has(m) for m in ds.inputs], 1)
    assert held.any(1).all()
    assert sum(len(g) for g in ds.by_own_mix()) == len(ds)
    assert all(len(ds.with_mix(mix)) > 0 for mix in ds.mixes())


@FUZZ
@given(data=st.data())
def test_run_inputs(package, tmp_path_factory, data):
    from cephalon_edge.device.inference import run_package
    root = tmp_path_factory.mktemp("in")
    kind = data.draw(st.sampled_from(["npy", "png", "junk"]))
    if kind == "npy":
        shape = data.draw(st.lists(st.integers(0, 13), max_size=4))
        arr = np.full(shape, data.draw(st.sampled_from([0.0, np.nan, np.inf])),
                      dtype=data.draw(st.sampled_from(["float32", "float16", "int8"])))
        path = root / "x.npy"
        np.save(path, arr)
    elif kind == "png":
        from PIL import Image
        size = (data.draw(st.integers(1, 40)), data.draw(st.integers(1, 40)))
        path = root / "x.png"
        Image.new(data.draw(st.sampled_from(["L", "RGB", "RGBA", "LA", "P", "1"])), size).save(path)
    else:
        path = root / data.draw(st.sampled_from(["x.png", "x.npy", "x.jpg"]))
        path.write_bytes(data.draw(st.binary(max_size=200)))
    try:
        report = run_package(package, [path])
        assert report["predictions"]
    except CephalonError as exc:
        one_line(exc)


@FUZZ
@given(data=st.data())
def test_profiles(data):
    profile = load_profile(data.draw(st.sampled_from(["pixel-8", "host-cpu", "iphone-15-pro"])))
    profile = _mutate(json.loads(json.dumps(profile)), data)
    try:
        validate_profile(profile, "fuzz")
    except CephalonError as exc:
        one_line(exc)


GOOD_OUTPUT = ("INFO: count=20 first=9000 curr=8100 min=8000 max=9100 avg=8.2e+03 std=120\n"
               "INFO: Inference timings in us: Init: 1523, First inference: 9000, Warmup (avg): 9.0e+03, "
               "Inference (avg): 8.21e+03\n")


@FUZZ
@given(text=st.text(max_size=300), cut=st.integers(0, len(GOOD_OUTPUT)), comma=st.booleans())
def test_benchmark_model_output(text, cut, comma):
    for candidate in (text, GOOD_OUTPUT[:cut], GOOD_OUTPUT.replace(".", ",") if comma else GOOD_OUTPUT + text):
        try:
            parsed = benchmark_model.parse(candidate)
            assert isinstance(parsed["avg_us"], float) and parsed["avg_us"] == parsed["avg_us"]
        except CephalonError as exc:
            one_line(exc)


RUNNER_OUTPUT = ("I 00:00:00.001 executorch:executor_runner.cpp:311] Model loaded in 3.25 ms.\n"
                 "I 00:00:00.002 executorch:executor_runner.cpp:412] Iteration 1 of 2: 0.9 ms\n"
                 "I 00:00:00.003 executorch:executor_runner.cpp:412] Iteration 2 of 2: 0.8 ms\n"
                 "I 00:00:00.004 executorch:executor_runner.cpp:420] Model executed successfully 2 time(s) in 1.7 ms.\n")


@FUZZ
@given(text=st.text(max_size=300), cut=st.integers(0, len(RUNNER_OUTPUT)), warmup=st.integers(0, 5))
def test_executor_runner_output(text, cut, warmup):
    from cephalon_edge.tune.bench import executor_runner

    for candidate in (text, RUNNER_OUTPUT[:cut], RUNNER_OUTPUT + text, text + RUNNER_OUTPUT):
        try:
            parsed = executor_runner.parse(candidate, warmup)
            assert 0 < parsed["avg_us"] < float("inf") and parsed["count"] >= 1
        except CephalonError as exc:
            one_line(exc)


@FUZZ
@given(data=st.binary(max_size=400), member=st.sampled_from(["update.json", "manifest.json", "files/x.onnx"]))
def test_hostile_update_files_are_one_line_errors(tmp_path_factory, data, member):
    import zipfile

    from cephalon_edge.device.updates.archive import read_update

    path = tmp_path_factory.mktemp("upd") / "u"
    for raw in (data, None):
        if raw is None:  # a zip whose members are the fuzz
            with zipfile.ZipFile(path, "w") as z:
                if member != "update.json":
                    z.writestr("update.json", b'{"format": "cephalon-edge-update/1"}')
                z.writestr(member, data)
        else:
            path.write_bytes(raw)
        try:
            read_update(path)
        except CephalonError as exc:
            one_line(exc)


def test_huge_declared_shapes_are_refused_before_allocating(tmp_path):
    from conftest import tiny_spec_dict

    from cephalon_edge.toolchain.spec import ModelSpec
    for field, value in (("channels", 10**9), ("blocks", 10**6)):
        spec = tiny_spec_dict()
        spec["stages"][0][field] = value
        with pytest.raises(CephalonError, match="too large"):
            ModelSpec.from_dict(spec)
    spec = tiny_spec_dict()
    spec["modalities"][0]["shape"] = [1, 10**7, 10**7]
    with pytest.raises(CephalonError, match="too large"):
        ModelSpec.from_dict(spec)
    spec = tiny_spec_dict()
    spec["stages"][3]["channels"] = 60000  # every field in bounds, the whole far too big
    with pytest.raises(CephalonError, match=r"estimated parameters\): \d+ is too large"):
        ModelSpec.from_dict(spec)


def test_regressions_found_by_the_fuzzers(package, tmp_path):
    """Each of these once escaped as a raw exception."""
    from cephalon_edge.device.inference import run_package
    from cephalon_edge.errors import DataError, PackageError
    junk = tmp_path / "x.npy"
    junk.write_bytes(b"")  # np.load raised EOFError
    with pytest.raises(DataError, match="not a readable .npy"):
        run_package(package, [junk])
    bad_zip = tmp_path / "d.npz"
    bad_zip.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(DataError, match="not a readable .npz"):
        load_dataset(str(bad_zip))
    pkg = tmp_path / "pkg"
    shutil.copytree(package, pkg)
    manifest = json.loads((pkg / "manifest.json").read_text())
    manifest["target"] = []  # an unhashable target raised TypeError in the runtime registry
    (pkg / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(PackageError, match="target: unknown target"):
        Manifest.open(pkg)


def test_tensor_of_the_wrong_dtype(tmp_path):
    from safetensors.torch import load_file, save_file
    path = tmp_path / "m.cephalon"
    checkpoint.save(make_net(), path)
    tensors = load_file(str(path))
    tensors["stages.0.plain.0.branch.0.weight"] = tensors["stages.0.plain.0.branch.0.weight"].half()
    save_file(tensors, str(path), metadata={"cephalon": json.dumps(checkpoint.read_metadata(path))})
    with pytest.raises(CephalonError, match="dtype torch.float16, the spec expects torch.float32"):
        checkpoint.load(path)


# ---- surfaces the first round missed (issue 14) ------------------------------------------------

BRACKETED = st.lists(st.sampled_from(list("[]/ab =x\\") + ["[/x]", "[bold]", "[/]", "[red]"]),
                     max_size=12).map("".join)


@FUZZ
@given(name=BRACKETED)
def test_bracketed_text_is_printed_as_text(tmp_path_factory, name):
    """User text in an error reaches the terminal unchanged (rich markup never applies)."""
    import io

    from rich.console import Console

    from cephalon_edge.cli.render import error_lines

    out = io.StringIO()
    for line in error_lines(f"input not found: {name}", f"check {name}"):
        Console(file=out, width=400, highlight=False).print(line, soft_wrap=True)
    assert out.getvalue() == f"error: input not found: {name}\nhint: check {name}\n"


@FUZZ
@given(depth=st.integers(1, 200_000), where=st.sampled_from(["manifest", "spec", "header", "metadata"]))
def test_deep_nesting(package, tmp_path_factory, depth, where):
    from cephalon_edge.toolchain.spec import ModelSpec

    deep = "[" * depth + "]" * depth
    try:
        if where == "manifest":
            pkg = tmp_path_factory.mktemp("deep") / "pkg"
            shutil.copytree(package, pkg)
            (pkg / "manifest.json").write_text(deep)
            Manifest.open(pkg)
        elif where == "spec":
            ModelSpec.from_json(deep)
        else:
            header = deep if where == "header" else json.dumps({"__metadata__": {"cephalon": deep}})
            path = tmp_path_factory.mktemp("deep") / "c.cephalon"
            path.write_bytes(len(header).to_bytes(8, "little") + header.encode())
            checkpoint.read_metadata(path)
    except CephalonError as exc:
        one_line(exc)


@FUZZ
@given(metadata=JSON)
def test_wrong_typed_metadata(tmp_path_factory, metadata):
    path = tmp_path_factory.mktemp("meta") / "c.cephalon"
    header = json.dumps({"__metadata__": metadata}).encode()
    path.write_bytes(len(header).to_bytes(8, "little") + header)
    try:
        checkpoint.read_metadata(path)
    except CephalonError as exc:
        one_line(exc)


@FUZZ
@given(line=st.sampled_from(["count=1 min=1 max=1 avg=1 ", "count=1 first=2 curr=3 min=1 max=2 avg=1e400 std=",
                             "Inference (avg): ", "[/x] ", "overall=" * 3, "std=0 "]),
       repeat=st.integers(1, 50_000), newline=st.booleans(), figure=st.sampled_from(["1", "0", "-1", "1e400", "nan"]))
def test_hostile_benchmark_model_lines(line, repeat, newline, figure):
    text = (line + ("\n" if newline else "")) * repeat + f"Inference timings in us: Inference (avg): {figure}"
    try:
        parsed = benchmark_model.parse(text)
        assert 0 < parsed["avg_us"] < float("inf")
    except CephalonError as exc:
        one_line(exc)


@FUZZ
@given(shape=st.lists(st.integers(1, 1 << 20), min_size=1, max_size=6))
def test_manifest_shapes_by_product(package, tmp_path_factory, shape):
    from math import prod

    from cephalon_edge.device.manifest import MAX_ELEMENTS

    pkg = tmp_path_factory.mktemp("shape") / "pkg"
    shutil.copytree(package, pkg)
    manifest = json.loads((pkg / "manifest.json").read_text())
    manifest["inputs"][0]["shape"] = shape
    (pkg / "manifest.json").write_text(json.dumps(manifest))
    try:
        Manifest.open(pkg, verify=False)
        assert prod(shape) <= MAX_ELEMENTS
    except CephalonError as exc:
        one_line(exc)


@FUZZ
@given(abi=st.text(max_size=40) | st.sampled_from(["../../evilabi", "arm64-v8a/../x", "", "x86_64"]),
       serial=st.text(alphabet=st.characters(blacklist_characters="\t\n\r\x00"), min_size=1, max_size=30))
def test_device_property_strings(tmp_path_factory, abi, serial):
    from cephalon_edge.tune.bench.adb import KNOWN_ABIS, Adb, Device

    adb = Adb.__new__(Adb)
    try:
        got = adb.abi(Device(serial, "device", {"ro.product.cpu.abi": abi}))
        assert got in KNOWN_ABIS
    except CephalonError as exc:
        one_line(exc)
