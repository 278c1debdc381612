"""``diff``: an update that turns one package into another, carrying only what changed.

Unchanged files (same name, same sha256) are kept from the base; a changed file travels as a
binary delta against the base's file of the same name when that is smaller, else whole; a
changed directory (Core ML ``.mlpackage``) travels whole. A threshold-only change
(``calibrate``) is a manifest-only update.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any, Callable

from cephalon_edge import __version__
from cephalon_edge.device.manifest import MANIFEST, Manifest, package_version_of, size_bytes
from cephalon_edge.device.updates.archive import (
    ALGORITHMS,
    FORMAT,
    encode_header,
    member_payload,
    sha256_bytes,
    write_update,
)
from cephalon_edge.device.updates.deltas import DEFAULT_ALGORITHM, make_delta
from cephalon_edge.errors import Note, UsageError
from cephalon_edge.fsutil import atomic_path


def package_files(manifest: Manifest) -> dict[str, str]:
    """Every file of a package (segment files, the static model) -> its sha256."""
    files = {s["file"]: s["sha256"] for s in manifest.data["segments"]}
    if manifest.static:
        files[manifest.static["file"]] = manifest.static["sha256"]
    return files


def segment_changes(old: Manifest, new: Manifest) -> dict[str, list[str]]:
    """Segments added, removed, and changed (another file content, or another entry)."""
    a, b = old.segments, new.segments
    return {"added": [n for n in b if n not in a], "removed": [n for n in a if n not in b],
            "changed": [n for n in b if n in a and a[n] != b[n]]}


def changed_sections(old: Manifest, new: Manifest) -> list[str]:
    keys = list(dict.fromkeys([*old.data, *new.data]))
    return [k for k in keys if old.data.get(k) != new.data.get(k)]


def _tree_entry(name: str, digest: str, path: Path, base: Path | None, payloads: dict[str, bytes],
                algorithm: str) -> dict[str, Any]:
    """A changed directory (Core ML ``.mlpackage``): its files that the base's directory of the
    same name holds unchanged are kept; a changed one travels as a delta against the base's
    file of the same path when that is smaller, else whole."""
    members, sent = [], 0
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        rel = file.relative_to(path).as_posix()
        data = file.read_bytes()
        member = {"path": rel, "sha256": sha256_bytes(data)}
        old = base / rel if base is not None and base.is_dir() and (base / rel).is_file() else None
        old_bytes = old.read_bytes() if old is not None else None
        if old_bytes is not None and sha256_bytes(old_bytes) == member["sha256"]:
            member["keep"] = True
        else:
            payload = data
            if old_bytes is not None:
                delta = make_delta(old_bytes, data, algorithm)
                if len(delta) < len(data):
                    member.update(algorithm=algorithm, base_sha256=sha256_bytes(old_bytes))
                    payload = delta
            payloads[member_payload(f"files/{name}", member)] = payload
            sent += len(payload)
        members.append(member)
    return {"name": name, "action": "tree", "sha256": digest, "payload": f"files/{name}", "members": members,
            "payload_bytes": sent}


def make_update(old_dir: Path, new_dir: Path, out: Path, algorithm: str = DEFAULT_ALGORITHM,
                sign_key: Path | None = None, force: bool = False, rotate_trust: list[Path] | None = None,
                on_progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Write the update from package ``old_dir`` to package ``new_dir`` at ``out``; returns the report."""
    if algorithm not in ALGORITHMS:
        raise UsageError(f"unknown delta algorithm {algorithm!r}", hint=f"one of {', '.join(ALGORITHMS)}")
    out = Path(out)
    if out.exists() and not force:
        raise UsageError(f"{out} already exists", hint="pass --force to replace it")
    if sign_key is not None:
        from cephalon_edge.device.updates.keys import load_private
        load_private(sign_key)  # a bad key fails before any work
    trust = None
    if rotate_trust:
        from cephalon_edge.device.updates.keys import public_pem
        from cephalon_edge.device.updates.trust import trust_document

        if sign_key is None:
            raise UsageError("--rotate-trust hands the package's trust to new keys: sign it with a pinned key (--sign)")
        trust = json.loads(trust_document([public_pem(k) for k in rotate_trust]))
    old, new = Manifest.open(Path(old_dir)), Manifest.open(Path(new_dir))
    if old.target != new.target:
        raise UsageError(f"{old_dir} is a {old.target} package and {new_dir} a {new.target} one",
                         hint="an update changes a package, not its target: ship the new package whole")
    step = on_progress or (lambda _: None)
    old_files, new_files = package_files(old), package_files(new)
    entries, payloads, keep = [], {}, []
    for name, digest in new_files.items():
        if old_files.get(name) == digest:
            keep.append(name)
            continue
        path = new.member(name)
        if path.is_dir():
            entries.append(_tree_entry(name, digest, path, old.member(name) if name in old_files else None, payloads,
                                       algorithm))
            step(f"{name}: {sum(1 for m in entries[-1]['members'] if not m.get('keep'))} changed file(s)")
            continue
        data = path.read_bytes()
        entry = {"name": name, "action": "full", "sha256": digest, "bytes": len(data), "payload": f"files/{name}"}
        payload = data
        base = old.member(name) if name in old_files else None
        if base is not None and base.is_file():
            delta = make_delta(base.read_bytes(), data, algorithm)
            if len(delta) < len(data):
                entry.update(action="delta", algorithm=algorithm, base_sha256=old_files[name],
                             payload=f"files/{name}.{algorithm}")
                payload = delta
        entry.update(payload_sha256=sha256_bytes(payload), payload_bytes=len(payload))
        payloads[entry["payload"]] = payload
        entries.append(entry)
        step(f"{name}: {entry['action']}")
    manifest_bytes = (new.root / MANIFEST).read_bytes()
    header = {
        "format": FORMAT, "created_by": f"cephalon-edge {__version__}",
        "base": {"manifest_sha256": old.read_sha256, "name": old.data.get("name"), "target": old.target,
                 "version": package_version_of(old.data)},
        "result": {"manifest_sha256": sha256_bytes(manifest_bytes), "name": new.data.get("name"),
                   "version": package_version_of(new.data)},
        "files": entries, "keep": keep,
        "changes": {"segments": segment_changes(old, new), "manifest_sections": changed_sections(old, new)},
        **({"trust": trust} if trust is not None else {}),
    }
    if package_version_of(new.data) <= package_version_of(old.data):
        warnings.warn(f"{new_dir} is not newer than {old_dir} (version {package_version_of(new.data)} <= "
                      f"{package_version_of(old.data)}): apply refuses it without --allow-downgrade", Note, stacklevel=2)
    header_bytes = encode_header(header)
    signature = None
    if sign_key is not None:
        from cephalon_edge.device.updates.keys import sign
        signature = sign(header_bytes, sign_key)
    with atomic_path(out) as tmp:
        write_update(tmp, header_bytes, manifest_bytes, payloads, signature)
    size = out.stat().st_size
    package_bytes = sum(size_bytes(new.member(n)) for n in new_files) + len(manifest_bytes)
    return {"schema": "cephalon-edge/diff/1", "update": str(out), "base": str(old_dir), "target": str(new_dir),
            "bytes": size, "package_bytes": package_bytes, "ratio": size / package_bytes,
            "manifest_only": not entries, "signed": signature is not None, "algorithm": algorithm,
            "files": [{k: e.get(k) for k in ("name", "action", "algorithm", "payload_bytes", "bytes")} for e in entries],
            "keep": keep, "changes": header["changes"], "base_manifest_sha256": old.read_sha256}

