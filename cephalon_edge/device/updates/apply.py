"""``apply``: turn a package into the update's result, verified, atomically.

The update is read and checked first (every payload against its sha256, the signature when
a trust key is given), then the base: its manifest must be the one the update was made for,
and its files must match their sha256s. The new package is assembled in a temporary
directory next to the destination (kept files hard-linked or copied from the base, changed
ones written or patched), opened and verified against its new manifest, and only then takes
the destination's place in one atomic exchange (the same mechanism as export). On any failure
or kill the package is untouched.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any, Callable

from cephalon_edge.device.manifest import MANIFEST, Manifest, sha256_file
from cephalon_edge.device.updates.archive import Update, UpdateError, member_payload, read_update, sha256_bytes
from cephalon_edge.device.updates.deltas import apply_delta
from cephalon_edge.errors import PackageError, UsageError
from cephalon_edge.fsutil import atomic_directory


def check_base(update: Update, package: Path) -> Manifest:
    """The base package, refused unless it is the one the update was made for."""
    base = Manifest.open(package)
    if base.read_sha256 != update.base_manifest_sha256:
        made_for = update.header["base"]
        raise UpdateError(
            f"{update.path} was made for another package: it applies to manifest {update.base_manifest_sha256[:12]} "
            f"({made_for.get('name')}, {made_for.get('target')}); {package}'s manifest is {base.read_sha256[:12]} "
            f"({base.data.get('name')}, {base.target})",
            hint="apply the updates in order, or ship the whole package")
    return base


def plan(update: Update) -> dict[str, Any]:
    """What the update changes, and the bytes it transfers (``--dry-run``, ``inspect``)."""
    return {"base_manifest_sha256": update.base_manifest_sha256,
            "result_manifest_sha256": update.header["result"]["manifest_sha256"],
            "base": update.header["base"], "signed": update.signature is not None,
            "transfer_bytes": update.transfer_bytes,
            "files": [{"name": f["name"], "action": f["action"], "algorithm": f.get("algorithm"),
                       "payload_bytes": f.get("payload_bytes", 0)} for f in update.files],
            "keep": update.header["keep"], "manifest_only": not update.files,
            "changes": update.header.get("changes", {})}


def _place(src: Path, dst: Path) -> None:
    """A kept file or directory of the base in the new package: hard-linked (files are never
    written in place), copied where links are not possible."""
    if src.is_dir():
        shutil.copytree(src, dst, copy_function=_link_or_copy)
    else:
        _link_or_copy(src, dst)


def _link_or_copy(src: str | Path, dst: str | Path) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def write_file(tmp: Path, base: Manifest, update: Update, entry: dict[str, Any]) -> None:
    """One changed file of the new package, from its payload (whole, patched, or a tree)."""
    name = entry["name"]
    dst = tmp / name
    if entry["action"] == "tree":
        for m in entry["members"]:
            path = dst / m["path"]
            path.parent.mkdir(parents=True, exist_ok=True)
            src = base.member(name) / m["path"]
            if m.get("keep"):
                if not src.is_file() or sha256_file(src) != m["sha256"]:
                    raise UpdateError(f"{update.path}: {name}/{m['path']} is not in the package as the update expects")
                _link_or_copy(src, path)
                continue
            data = update.payloads[member_payload(entry["payload"], m)]
            if m.get("algorithm"):
                data = _patched(update, src, data, m, f"{name}/{m['path']}")
            if sha256_bytes(data) != m["sha256"]:
                raise UpdateError(f"{update.path}: {name}/{m['path']} does not match the sha256 in its header")
            path.write_bytes(data)
        return
    payload = update.payloads[entry["payload"]]
    dst.write_bytes(payload if entry["action"] == "full" else _patched(update, base.member(name), payload, entry, name))


def _patched(update: Update, src: Path, delta: bytes, entry: dict[str, Any], what: str) -> bytes:
    """The base's file ``src`` with ``delta`` applied, checked against the result's sha256."""
    if not src.is_file() or sha256_file(src) != entry["base_sha256"]:
        raise UpdateError(f"{update.path}: the delta of {what} is for another version of it than the package's")
    try:
        data = apply_delta(src.read_bytes(), delta, entry["algorithm"])
    except Exception as exc:  # the delta libraries raise their own errors on corrupt input
        raise UpdateError(f"{update.path}: the delta of {what} does not apply ({str(exc)[:120]})") from None
    if sha256_bytes(data) != entry["sha256"]:
        raise UpdateError(f"{update.path}: patching {what} gave a file that does not match its sha256")
    return data


def apply_update(package: Path, update_path: Path, out: Path | None = None, trust: Path | None = None,
                 dry_run: bool = False, force: bool = False,
                 on_progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Apply ``update_path`` to ``package`` (in place, or into ``out``); returns the report."""
    step = on_progress or (lambda _: None)
    update = read_update(update_path)
    if trust is not None:
        from cephalon_edge.device.updates.keys import check_signature
        check_signature(update.header_bytes, update.signature, trust, f"update {update_path}")
    package = Path(package)
    dest = Path(out) if out is not None else package
    if out is not None and dest.exists():
        if not force:
            raise UsageError(f"{dest} already exists", hint="pass --force to replace it, or omit -o to update in place")
        if not dest.is_dir() or (any(dest.iterdir()) and not (dest / MANIFEST).exists()):
            raise UsageError(f"{dest} is not an edge package; refusing to replace it")
    base = check_base(update, package)
    report = {"schema": "cephalon-edge/apply/1", "package": str(package), "output": str(dest),
              "dry_run": dry_run, **plan(update)}
    if dry_run:
        return report
    step("update verified")
    with atomic_directory(dest, replace=True) as tmp:
        for name in update.header["keep"]:
            _place(base.member(name), tmp / name)
        for entry in update.files:
            write_file(tmp, base, update, entry)
            step(entry["name"])
        (tmp / MANIFEST).write_bytes(update.manifest_bytes)
        try:
            Manifest.open(tmp)  # every file against the new manifest's sha256s
        except PackageError as exc:
            raise UpdateError(f"{update_path}: the updated package does not verify: {exc.message}") from None
        step("package verified")
    return report
