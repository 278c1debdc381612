"""Field updates: diff / apply / signed updates / Router.reload, on real exports of a small
digits model before and after calibration and an exit-head fine-tune."""

import copy
import json
import os
import shutil
import signal
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from conftest import run_cli_in_process, small_digits_checkpoint, spawn_parked

from cephalon_edge.toolchain.artifacts import ExportSpec
from cephalon_edge.toolchain.export import export_package
from cephalon_edge.device.updates.apply import Policy, apply_update
from cephalon_edge.device.updates.diff import make_update

pytestmark = pytest.mark.slow
UNSIGNED = Policy(allow_unsigned=True)  # these tests' updates are unsigned unless they say so


def tree_bytes(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def finetune_exit_heads(ckpt: Path, out: Path) -> Path:
    """A real fine-tune of the early exit heads only (trunk and final head frozen), on digits."""
    from cephalon_edge.toolchain import checkpoint
    from cephalon_edge.device.data import builtin

    net, meta = checkpoint.load_with_metadata(ckpt)
    for p in net.parameters():
        p.requires_grad_(False)
    heads = [p for name, p in net.named_parameters() if name.startswith("exits.")]
    assert heads, [n for n, _ in net.named_parameters()]
    for p in heads:
        p.requires_grad_(True)
    train = builtin("digits", "train")
    x, y = torch.from_numpy(train.inputs["image"][:256]), torch.from_numpy(train.labels[:256]).long()
    opt = torch.optim.SGD(heads, lr=0.05)
    net.eval()
    for _ in range(3):
        loss = sum(torch.nn.functional.cross_entropy(logits, y) for logits in net(x).exit_logits[:-1])
        opt.zero_grad()
        loss.backward()
        opt.step()
    checkpoint.save(net, out, meta.get("provenance"))
    return out


@pytest.fixture(scope="module")
def packages(tmp_path_factory):
    """ONNX (one segment per part) and TFLite packages of the model, of its exit-head fine-tune,
    and of the model after calibration."""
    from cephalon_edge.tune.calibrate import CalibrateSpec, calibrate_package

    root = tmp_path_factory.mktemp("updates")
    ckpt = small_digits_checkpoint(root / "small.cephalon")
    tuned = finetune_exit_heads(ckpt, root / "tuned.cephalon")
    for name, source in (("base", ckpt), ("tuned", tuned)):
        export_package(source, root / f"onnx-{name}", ExportSpec("onnx", fuse=False, verify=False))
        export_package(source, root / f"tflite-{name}", ExportSpec("tflite", verify=False))
        export_package(source, root / f"coreml-{name}", ExportSpec("coreml", verify=False))
    for target in ("onnx", "tflite"):
        shutil.copytree(root / f"{target}-base", root / f"{target}-calibrated")
        calibrate_package(root / f"{target}-calibrated", CalibrateSpec(data="digits:val", max_drop=0.02))
    return root


def test_a_threshold_update_is_manifest_only_and_gives_the_calibrated_package(packages, tmp_path):
    update = tmp_path / "thresholds.update"
    report = make_update(packages / "onnx-base", packages / "onnx-calibrated", update)
    assert report["manifest_only"] and report["files"] == [] and update.stat().st_size < 10_000
    assert "exit_policy" in report["changes"]["manifest_sections"]
    device = tmp_path / "device"
    shutil.copytree(packages / "onnx-base", device)
    from cephalon_edge.device.router import Router

    with Router.open(device) as router:
        apply_update(device, update, policy=UNSIGNED)
        assert tree_bytes(device) == tree_bytes(packages / "onnx-calibrated")
        assert router.reload() == {"reopened": [], "kept": sorted(router.manifest.segments)}
        assert router.manifest.calibrated and router.manifest.thresholds == Router.open(device).manifest.thresholds
    # TFLite: the one multi-signature file stays; no model bytes travel
    report = make_update(packages / "tflite-base", packages / "tflite-calibrated", tmp_path / "t.update")
    assert report["manifest_only"] and report["bytes"] < 10_000


def test_an_exit_head_finetune_ships_only_the_exit_segment_and_reloads_in_place(packages, tmp_path):
    from cephalon_edge.device.data import builtin
    from cephalon_edge.device.router import Router

    update = tmp_path / "heads.update"
    report = make_update(packages / "onnx-base", packages / "onnx-tuned", update)
    assert [f["name"] for f in report["files"]] == ["exit0.onnx"]
    assert report["changes"]["segments"] == {"added": [], "removed": [], "changed": ["exit0"]}
    device = tmp_path / "device"
    shutil.copytree(packages / "onnx-base", device)
    x = builtin("digits", "test").inputs["image"][:64]
    with Router.open(device) as router:
        before = router.predict({"image": x}, thresholds=0.5)
        apply_update(device, update, policy=UNSIGNED)
        assert tree_bytes(device) == tree_bytes(packages / "onnx-tuned")
        reloaded = router.reload()
        assert reloaded["reopened"] == ["exit0"] and "stage1" in reloaded["kept"]
        after = router.predict({"image": x}, thresholds=0.5)
    with Router.open(packages / "onnx-tuned") as fresh:
        expected = fresh.predict({"image": x}, thresholds=0.5)
    assert np.array_equal(after.exit_index, expected.exit_index)
    assert np.abs(after.logits - expected.logits).max() < 1e-5
    assert not np.array_equal(before.scores, after.scores)  # the new exit head is the one answering


def test_a_tflite_finetune_travels_as_a_small_binary_delta(packages, tmp_path):
    update = tmp_path / "heads.update"
    report = make_update(packages / "tflite-base", packages / "tflite-tuned", update)
    (entry,) = report["files"]
    assert entry["name"] == "segments.tflite" and entry["action"] == "delta" and entry["algorithm"] == "bsdiff4"
    assert report["bytes"] < 0.3 * report["package_bytes"]
    out = tmp_path / "applied"
    apply_update(packages / "tflite-base", update, out=out, policy=UNSIGNED)
    assert tree_bytes(out) == tree_bytes(packages / "tflite-tuned")
    detools = make_update(packages / "tflite-base", packages / "tflite-tuned", tmp_path / "d.update", algorithm="detools")
    apply_update(packages / "tflite-base", tmp_path / "d.update", out=tmp_path / "applied-detools", policy=UNSIGNED)
    assert tree_bytes(tmp_path / "applied-detools") == tree_bytes(packages / "tflite-tuned")
    assert detools["files"][0]["action"] == "delta"


def test_a_core_ml_update_ships_only_the_changed_files_of_its_model_packages(packages, tmp_path):
    update = tmp_path / "heads.update"
    report = make_update(packages / "coreml-base", packages / "coreml-tuned", update)
    assert all(f["action"] == "tree" for f in report["files"])
    # the weights of the segment without the exit head are kept; what changed travels
    exit_segment = next(f for f in report["files"] if "exit0" in f["name"])
    assert exit_segment["payload_bytes"] > 0
    assert report["bytes"] < 0.3 * report["package_bytes"]
    out = tmp_path / "applied"
    apply_update(packages / "coreml-base", update, out=out, policy=UNSIGNED)
    assert tree_bytes(out) == tree_bytes(packages / "coreml-tuned")


def _rewrite(update: Path, out: Path, member: str, change) -> Path:
    with zipfile.ZipFile(update) as src, zipfile.ZipFile(out, "w") as dst:
        for info in src.infolist():
            data = src.read(info.filename)
            dst.writestr(info.filename, change(data) if info.filename == member else data)
    return out


def test_tampered_wrong_base_and_bad_signatures_are_refused_untouched(packages, tmp_path):
    device = tmp_path / "device"
    shutil.copytree(packages / "onnx-base", device)
    before = tree_bytes(device)
    heads = tmp_path / "heads.update"
    assert run_cli_in_process("keys", "new", "-o", str(tmp_path / "key")).returncode == 0
    assert run_cli_in_process("keys", "new", "-o", str(tmp_path / "other")).returncode == 0
    res = run_cli_in_process("diff", str(packages / "onnx-base"), str(packages / "onnx-tuned"), "-o", str(heads),
                             "--sign", str(tmp_path / "key"))
    assert res.returncode == 0, res.stderr
    flip = lambda data: data[:100] + bytes([data[100] ^ 1]) + data[101:]  # noqa: E731
    cases = {
        "tampered payload": (_rewrite(heads, tmp_path / "t1", "files/exit0.onnx.bsdiff4"
                                      if "files/exit0.onnx.bsdiff4" in zipfile.ZipFile(heads).namelist()
                                      else "files/exit0.onnx", flip), [], "does not match the sha256"),
        "tampered manifest": (_rewrite(heads, tmp_path / "t2", "manifest.json",
                                       lambda d: d.replace(b'"calibrated": false', b'"calibrated": true ')), [],
                              "does not match the sha256"),
        "wrong base": (tmp_path / "cal.update", [], "was made for another package"),
        "other key": (heads, ["--trust", str(tmp_path / "other.pub")], "not signed by the trusted key"),
        "unsigned": (tmp_path / "unsigned.update", ["--trust", str(tmp_path / "key.pub")], "is not signed"),
        "forged header": (_rewrite(heads, tmp_path / "t3", "update.json", lambda d: d.replace(b'"name"', b'"name" ')),
                          ["--trust", str(tmp_path / "key.pub")], "not signed by the trusted key"),
    }
    make_update(packages / "onnx-calibrated", packages / "onnx-tuned", tmp_path / "cal.update")
    make_update(packages / "onnx-base", packages / "onnx-tuned", tmp_path / "unsigned.update")
    for what, (update, extra, message) in cases.items():
        res = run_cli_in_process("apply", str(device), str(update), *extra, "--allow-unsigned")
        assert res.returncode == 2 and message in res.stderr, (what, res.stderr)
        assert "Traceback" not in res.stderr and tree_bytes(device) == before, what
    # the genuine signed update applies, and `inspect` describes an update file
    res = run_cli_in_process("apply", str(device), str(heads), "--trust", str(tmp_path / "key.pub"), "--dry-run")
    assert res.returncode == 0 and "would update" in res.stdout and tree_bytes(device) == before
    res = run_cli_in_process("inspect", str(heads), "--json", str(tmp_path / "inspect.json"))
    assert res.returncode == 0, res.stderr
    described = json.loads((tmp_path / "inspect.json").read_text())
    assert described["signed"] and [f["name"] for f in described["files"]] == ["exit0.onnx"]
    res = run_cli_in_process("apply", str(device), str(heads), "--trust", str(tmp_path / "key.pub"))
    assert res.returncode == 0, res.stderr
    assert tree_bytes(device) == tree_bytes(packages / "onnx-tuned")


def test_sigkill_mid_apply_leaves_the_package_as_it_was(packages, tmp_path):
    device = tmp_path / "device"
    shutil.copytree(packages / "onnx-base", device)
    before = tree_bytes(device)
    update = tmp_path / "heads.update"
    make_update(packages / "onnx-base", packages / "onnx-tuned", update)
    # parked while the changed file is being written into the new package, then killed
    proc = spawn_parked(tmp_path, "call:cephalon_edge.device.updates.apply:write_file", "apply", str(device), str(update),
                        "--allow-unsigned")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert tree_bytes(device) == before
    # and the next apply goes through (the dead writer's temporary directory is cleared)
    res = run_cli_in_process("apply", str(device), str(update), "--allow-unsigned")
    assert res.returncode == 0, res.stderr
    assert tree_bytes(device) == tree_bytes(packages / "onnx-tuned")
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".device.")]


def _crafted(update: Path, out: Path, edit, extra: dict[str, bytes] | None = None) -> Path:
    """``update`` with its header edited by ``edit(header)`` (unsigned: the header is all that
    changes) and ``extra`` members added."""
    from cephalon_edge.device.updates.archive import encode_header

    def edited(data: bytes) -> bytes:
        header = json.loads(data)
        edit(header)
        return encode_header(header)

    _rewrite(update, out, "update.json", edited)
    with zipfile.ZipFile(out, "a") as z:
        for name, data in (extra or {}).items():
            z.writestr(name, data)
    return out


def test_crafted_updates_never_write_into_the_base(packages, tmp_path):
    """Kept files are links into the base: an update that names the manifest or a member twice,
    nests members, or brings files its manifest does not name is refused, and the base — and
    with -o, everything — stays as it was."""
    import hashlib

    onnx, coreml = tmp_path / "onnx", tmp_path / "coreml"
    shutil.copytree(packages / "onnx-base", onnx)
    shutil.copytree(packages / "coreml-base", coreml)
    heads, tree = tmp_path / "heads.update", tmp_path / "tree.update"
    make_update(onnx, packages / "onnx-tuned", heads)
    make_update(coreml, packages / "coreml-tuned", tree)
    onnx_files = sorted(p.name for p in onnx.iterdir() if p.name != "manifest.json")

    def tree_entry(header):
        return next(f for f in header["files"] if f["action"] == "tree" and any(not m.get("keep") for m in f["members"]))

    def twice(header):  # a member kept (a link into the base), then written with new bytes
        entry = tree_entry(header)
        changed = next(m for m in entry["members"] if not m.get("keep"))
        entry["members"].insert(0, {**changed, "keep": True, "algorithm": None})

    def nested(header):
        entry = tree_entry(header)
        entry["members"].append({**entry["members"][0], "path": entry["members"][0]["path"] + "/inner"})

    def dot(header):
        tree_entry(header)["members"][0]["path"] = "./" + tree_entry(header)["members"][0]["path"]

    def manifest_tree(header):
        tree_entry(header)["name"] = "manifest.json"

    payload = b"not a segment"
    digest = hashlib.sha256(payload).hexdigest()
    cases = {
        "keep lists the manifest": (heads, lambda h: h.update(keep=onnx_files + ["manifest.json"]), None, onnx),
        "keep lists a file twice": (heads, lambda h: h.update(keep=h["keep"] + h["keep"][:1]), None, onnx),
        "keep lists a file the base does not have": (heads, lambda h: h.update(keep=["x"]), None, onnx),  # hypothesis found it
        "a full file no manifest names": (heads, lambda h: h["files"].append(
            {"name": "extra.bin", "action": "full", "payload": "files/extra.bin", "payload_sha256": digest,
             "sha256": digest, "payload_bytes": len(payload)}), {"files/extra.bin": payload}, onnx),
        "a tree member kept, then written": (tree, twice, None, coreml),
        "a member that is a file and a directory": (tree, nested, None, coreml),
        "a member path with '.'": (tree, dot, None, coreml),
        "a tree named manifest.json": (tree, manifest_tree, None, coreml),
    }
    for what, (update, edit, extra, base) in cases.items():
        before = tree_bytes(base)
        crafted = _crafted(update, tmp_path / "crafted.update", edit, extra)
        res = run_cli_in_process("apply", str(base), str(crafted), "-o", str(tmp_path / "new"), "--allow-unsigned")
        assert res.returncode == 2 and "Traceback" not in res.stderr, (what, res.stderr)
        assert tree_bytes(base) == before and not (tmp_path / "new").exists(), what


@pytest.mark.parametrize("meanwhile", ["apply", "calibrate"])
def test_a_writer_that_finished_meanwhile_is_never_overwritten(packages, tmp_path, monkeypatch, meanwhile):
    """The interleaving that lost an update: B checks its base, another writer (an apply, or
    calibrate writing thresholds) finishes, then B takes the lock. B must see the change."""
    from cephalon_edge.device.manifest import Manifest
    from cephalon_edge.device.updates import apply as apply_module
    from cephalon_edge.device.updates.archive import UpdateError

    device = tmp_path / "device"
    shutil.copytree(packages / "onnx-base", device)
    first, second = tmp_path / "first.update", tmp_path / "second.update"
    make_update(packages / "onnx-base", packages / "onnx-tuned", first)
    make_update(packages / "onnx-base", packages / "onnx-calibrated", second)
    real, raced = apply_module.check_base, []

    def racing(update, package):
        base = real(update, package)
        if not raced:  # the second apply has checked its base: the other writer lands now
            raced.append(meanwhile)
            if meanwhile == "apply":
                apply_update(device, first, policy=UNSIGNED)
            else:
                manifest = Manifest.open(device, verify=False)
                manifest.write_sections(exit_policy={**manifest.data["exit_policy"], "calibrated": True})
        return base

    monkeypatch.setattr(apply_module, "check_base", racing)
    with pytest.raises(UpdateError, match="was made for another package"):
        apply_update(device, second, policy=UNSIGNED)
    assert raced == [meanwhile]
    # the other writer's result stands, untouched
    if meanwhile == "apply":
        assert tree_bytes(device) == tree_bytes(packages / "onnx-tuned")
    else:
        assert json.loads((device / "manifest.json").read_text())["exit_policy"]["calibrated"] is True


def test_an_update_is_read_within_bounds_and_signatures_come_first(packages, tmp_path):
    """A small archive whose manifest.json deflates to 24 MB (it used to be read whole, even
    before the signature check), and a payload longer than its signed header says."""
    from cephalon_edge.device.updates.archive import UpdateError, read_update

    update = tmp_path / "heads.update"
    make_update(packages / "onnx-base", packages / "onnx-tuned", update)
    bomb = tmp_path / "bomb.update"
    with zipfile.ZipFile(update) as src, zipfile.ZipFile(bomb, "w", compression=zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            dst.writestr(info.filename, b" " * (24 << 20) if info.filename == "manifest.json" else src.read(info.filename))
    assert bomb.stat().st_size < 1 << 20
    with pytest.raises(UpdateError, match="manifest.json is larger than 8388608 bytes"):
        read_update(bomb)
    assert run_cli_in_process("keys", "new", "-o", str(tmp_path / "key")).returncode == 0
    res = run_cli_in_process("apply", str(packages / "onnx-base"), str(bomb), "--trust", str(tmp_path / "key.pub"), "--dry-run")
    assert res.returncode == 2 and "is not signed" in res.stderr  # refused before the manifest is read
    longer = _rewrite(update, tmp_path / "longer.update", next(n for n in zipfile.ZipFile(update).namelist()
                                                                 if n.startswith("files/")), lambda d: d + b"\0")
    with pytest.raises(UpdateError, match="is not the size its header states"):
        read_update(longer)


def test_a_delta_declaring_a_huge_result_is_refused_before_patching(packages, tmp_path):
    """A 2.8 KB bsdiff4 payload used to reach 2.1 GB: the size a delta declares must fit the
    size the new manifest gives the file."""
    import hashlib

    from cephalon_edge.device.updates.archive import encode_header
    from cephalon_edge.device.updates.deltas import apply_delta

    update = tmp_path / "heads.update"
    make_update(packages / "onnx-base", packages / "onnx-tuned", update)
    with zipfile.ZipFile(update) as z:
        members = {n: z.read(n) for n in z.namelist()}
    header = json.loads(members["update.json"])
    entry = next(f for f in header["files"] if f["action"] == "delta")
    delta = bytearray(members[entry["payload"]])
    delta[24:32] = (1 << 40).to_bytes(8, "little")  # a terabyte
    members[entry["payload"]] = bytes(delta)
    entry["payload_sha256"] = hashlib.sha256(delta).hexdigest()
    members["update.json"] = encode_header(header)
    crafted = tmp_path / "huge.update"
    with zipfile.ZipFile(crafted, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)
    device = tmp_path / "device"
    shutil.copytree(packages / "onnx-base", device)
    before = tree_bytes(device)
    res = run_cli_in_process("apply", str(device), str(crafted), "--allow-unsigned")
    assert res.returncode == 2 and "declares a 1099511627776-byte result" in " ".join(res.stderr.split())
    assert tree_bytes(device) == before
    with pytest.raises(ValueError, match="grows past the 10 bytes"):  # detools: bounded as it writes
        from cephalon_edge.device.updates.deltas import make_delta
        apply_delta(b"a" * 100, make_delta(b"a" * 100, b"b" * 100, "detools"), "detools", 10)


def test_a_pinned_package_takes_its_keys_updates_only_and_never_goes_back(packages, tmp_path):
    """Trust pinning (no flag needed once pinned), anti-rollback, and key rotation by a signed
    update; every refusal leaves the package as it was."""
    device = tmp_path / "device"
    shutil.copytree(packages / "onnx-base", device)
    for name in ("key", "other", "next"):
        assert run_cli_in_process("keys", "new", "-o", str(tmp_path / name)).returncode == 0

    def diff(old, new, out, *extra):
        res = run_cli_in_process("diff", str(packages / old), str(packages / new), "-o", str(tmp_path / out), *extra)
        assert res.returncode == 0, res.stderr
        return str(tmp_path / out)

    def apply(update, *extra):
        return run_cli_in_process("apply", str(device), update, *extra)

    def files():
        return {k: v for k, v in tree_bytes(device).items() if k != "trust.json"}

    signed = diff("onnx-base", "onnx-tuned", "signed.update", "--sign", str(tmp_path / "key"))
    foreign = diff("onnx-base", "onnx-tuned", "foreign.update", "--sign", str(tmp_path / "other"))
    unsigned = diff("onnx-base", "onnx-tuned", "unsigned.update")
    before = files()
    res = apply(unsigned)  # unsigned updates are no longer taken by default
    assert res.returncode == 2 and "pins no key and no --trust was given" in " ".join(res.stderr.split())
    assert run_cli_in_process("keys", "trust", str(device), str(tmp_path / "key.pub")).returncode == 0
    pins = (device / "trust.json").read_bytes()
    for update, extra, message in ((unsigned, [], "is not signed"), (unsigned, ["--allow-unsigned"], "is not signed"),
                                   (foreign, [], "is not signed by a key"),
                                   (signed, ["--trust", str(tmp_path / "other.pub")], "pins other keys")):
        res = apply(update, *extra)
        assert res.returncode == 2 and message in " ".join(res.stderr.split()), (update, extra, res.stderr)
        assert files() == before and (device / "trust.json").read_bytes() == pins
    res = apply(signed)  # signed by the pinned key: no flag needed
    assert res.returncode == 0 and "signature checked" in res.stdout, res.stderr
    assert files() == tree_bytes(packages / "onnx-tuned") and (device / "trust.json").read_bytes() == pins

    back = diff("onnx-tuned", "onnx-base", "back.update", "--sign", str(tmp_path / "key"))
    res = apply(back)  # signed, but older: a rollback
    assert res.returncode == 2 and "not newer" in res.stderr and files() == tree_bytes(packages / "onnx-tuned")
    assert apply(signed).returncode == 2  # and the same update replayed on its own result
    assert apply(back, "--allow-downgrade").returncode == 0 and files() == tree_bytes(packages / "onnx-base")
    res = run_cli_in_process("keys", "trust", str(device), str(tmp_path / "other.pub"))
    assert res.returncode == 2 and "already pins" in res.stderr

    rotate = diff("onnx-base", "onnx-tuned", "rotate.update", "--sign", str(tmp_path / "key"),
                  "--rotate-trust", str(tmp_path / "next.pub"))
    assert apply(rotate).returncode == 0 and (device / "trust.json").read_bytes() != pins
    old_key = diff("onnx-tuned", "onnx-calibrated", "old-key.update", "--sign", str(tmp_path / "key"))
    res = apply(old_key)  # the rotated-out key no longer counts
    assert res.returncode == 2 and "is not signed by a key" in " ".join(res.stderr.split())
    new_key = diff("onnx-tuned", "onnx-calibrated", "new-key.update", "--sign", str(tmp_path / "next"))
    assert apply(new_key).returncode == 0 and files() == tree_bytes(packages / "onnx-calibrated")


def _leaves(node, path=()):
    """Every position in a JSON document, as a path of keys and indices (containers too)."""
    yield path
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _leaves(v, (*path, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _leaves(v, (*path, i))


HOSTILE = [None, 5, -1, True, "", ".", "..", "x", "../x", "a/b", "manifest.json", "trust.json", [], {}, ["x", "x"],
           {"path": "."}, "files/x", 1e300]


@given(edits=st.lists(st.tuples(st.integers(0, 10**6), st.sampled_from(range(len(HOSTILE))), st.booleans()),
                      min_size=1, max_size=3), tree=st.booleans())
@settings(max_examples=int(os.environ.get("CEPHALON_FUZZ_EXAMPLES", 40)), deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_fuzzed_update_headers_leave_the_base_untouched(packages, tmp_path, edits, tree):
    """update.json with 1-3 fields replaced by hostile values (or list entries duplicated),
    on an ONNX update and a Core ML one (tree members): apply either refuses in one line or
    produces a package that verifies; the base is byte-identical either way."""
    import tempfile

    from cephalon_edge.device.manifest import Manifest
    from cephalon_edge.errors import CephalonError

    kind = "coreml" if tree else "onnx"
    source = tmp_path / f"{kind}.update"
    if not source.exists():
        make_update(packages / f"{kind}-base", packages / f"{kind}-tuned", source)
    with zipfile.ZipFile(source) as z:
        header = json.loads(z.read("update.json"))
    for position, value, duplicate in edits:
        paths = [p for p in _leaves(header) if p]
        path = paths[position % len(paths)]
        parent = header
        for key in path[:-1]:
            parent = parent[key]
        # copies: the same list or dict placed twice (or inside itself, or the shared HOSTILE
        # entries mutated by a later edit) would make the header circular, not hostile
        if duplicate and isinstance(parent, list):
            parent.append(copy.deepcopy(parent[path[-1]]))
        else:
            parent[path[-1]] = copy.deepcopy(HOSTILE[value])
    base = packages / f"{kind}-base"
    before = tree_bytes(base)
    with tempfile.TemporaryDirectory(dir=tmp_path) as work:
        crafted = _crafted(source, Path(work) / "fuzzed.update", lambda h: (h.clear(), h.update(header)))
        try:
            apply_update(base, crafted, out=Path(work) / "new", policy=Policy(allow_unsigned=True, allow_downgrade=True))
        except CephalonError:
            assert not (Path(work) / "new").exists()
        else:
            Manifest.open(Path(work) / "new")  # what was accepted verifies
    assert tree_bytes(base) == before
