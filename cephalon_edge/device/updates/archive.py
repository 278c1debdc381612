"""The update file: one zip archive holding a header, the new manifest and only what changed.

Members::

    update.json            the header (below); what a signature signs, byte for byte
    manifest.json          the new package's manifest
    files/<name>           a changed file, whole ("full"), or
    files/<name>.<algo>    its binary delta against the base's file of the same name ("delta")
    files/<dir>/<path>     the changed files of a changed directory (Core ML .mlpackage, "tree");
                           its unchanged files are kept from the base's directory
    signature.ed25519      optional: Ed25519 signature of update.json's bytes

The header pins everything by sha256: the base manifest it applies to, the resulting
manifest, each payload and each resulting file. Reading validates names, sizes and every
payload's digest before anything is written (torch-free).
"""

from __future__ import annotations

import hashlib
import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from cephalon_edge.device.manifest import TRUST_FILE
from cephalon_edge.errors import PackageError, UsageError
from cephalon_edge.fsutil import loads_json, regular_file

FORMAT = "cephalon-edge-update/1"
HEADER = "update.json"
MANIFEST = "manifest.json"
SIGNATURE = "signature.ed25519"
MAX_HEADER_BYTES = 4 << 20
MAX_SIGNATURE_BYTES = 1024
MAX_TOTAL_BYTES = 8 << 30  # uncompressed, all members: a bound against archive bombs
ACTIONS = ("full", "delta", "tree")
ALGORITHMS = ("bsdiff4", "detools")


class UpdateError(UsageError):
    """An update file that is malformed, tampered with, or made for another package (exit 2)."""


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass
class Update:
    """A read and validated update file: header, raw header bytes (what is signed), the new
    manifest's bytes (and parsed), the payloads by member name, and the signature if any."""

    path: Path
    header: dict[str, Any]
    header_bytes: bytes
    manifest_bytes: bytes
    payloads: dict[str, bytes]
    signature: bytes | None
    result: dict[str, Any] = field(default_factory=dict)  # the new manifest, parsed once

    @property
    def result_sizes(self) -> dict[str, int]:
        """The size the new manifest gives each file (a tree: all its members)."""
        files = [*(self.result.get("segments") or []),
                 *([self.result["static"]] if isinstance(self.result.get("static"), dict) else [])]
        return {f["file"]: f["size_bytes"] for f in files if isinstance(f, dict) and isinstance(f.get("file"), str)
                and isinstance(f.get("size_bytes"), int) and not isinstance(f.get("size_bytes"), bool)}

    @property
    def base_manifest_sha256(self) -> str:
        return self.header["base"]["manifest_sha256"]

    @property
    def files(self) -> list[dict[str, Any]]:
        return self.header["files"]

    @property
    def transfer_bytes(self) -> int:
        return self.path.stat().st_size


def member_payload(tree_payload: str, member: dict[str, Any]) -> str:
    """The archive member holding a changed file of a directory: whole, or its delta."""
    return f"{tree_payload}/{member['path']}" + (f".{member['algorithm']}" if member.get("algorithm") else "")


def encode_header(header: dict[str, Any]) -> bytes:
    """The header's bytes as stored: what a signature covers."""
    return (json.dumps(header, indent=1, sort_keys=True) + "\n").encode()


def write_update(path: Path, header_bytes: bytes, manifest_bytes: bytes, payloads: dict[str, bytes],
                 signature: bytes | None = None) -> None:
    """Write the archive to ``path`` (a temporary path: the caller renames it into place)."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr(HEADER, header_bytes)
        z.writestr(MANIFEST, manifest_bytes)
        for name, data in payloads.items():
            z.writestr(name, data)
        if signature is not None:
            z.writestr(SIGNATURE, signature)


def is_update_file(path: Path) -> bool:
    """Whether ``path`` is an update file (a zip archive with an update header). Only a regular
    file is opened: a FIFO would block the read."""
    if not Path(path).is_file():
        return False
    try:
        with zipfile.ZipFile(path) as z:
            return HEADER in z.namelist()
    except (zipfile.BadZipFile, OSError):
        return False


def _bad(path: Path, why: str) -> UpdateError:
    return UpdateError(f"update {path}: {why}", hint="make the update again with `cephalon-edge diff OLD NEW -o UPDATE`")


def read_update(path: Path, verify: Callable[[bytes, bytes | None, str], None] | None = None) -> Update:
    """Read ``path`` and validate it; every payload's sha256 is checked here. ``verify(header,
    signature, what)`` checks the signature before anything large is read; every member is
    read with a bound (the header's own sizes, the manifest's cap)."""
    from cephalon_edge.device.manifest import MAX_MANIFEST_BYTES

    path = regular_file(Path(path), "update file", UpdateError)
    if not zipfile.is_zipfile(path):
        raise _bad(path, "not an update file (not a zip archive)")
    with zipfile.ZipFile(path) as z:
        infos = {i.filename: i for i in z.infolist()}
        if sum(i.file_size for i in infos.values()) > MAX_TOTAL_BYTES:
            raise _bad(path, f"its members unpack to more than {MAX_TOTAL_BYTES} bytes")
        for name in (HEADER, MANIFEST):
            if name not in infos:
                raise _bad(path, f"no {name}")
        try:
            header_bytes = _read(path, z, infos[HEADER], MAX_HEADER_BYTES)
            signature = _read(path, z, infos[SIGNATURE], MAX_SIGNATURE_BYTES) if SIGNATURE in infos else None
            if verify is not None:
                verify(header_bytes, signature, f"update {path}")
            header = loads_json(header_bytes, f"{path}: {HEADER}", UpdateError)
            _validate_header(path, header)
            manifest_bytes = _read(path, z, infos[MANIFEST], MAX_MANIFEST_BYTES)
            wanted = {f["payload"]: f for f in header["files"] if f["action"] != "tree"} | {
                member_payload(f["payload"], m): f for f in header["files"] if f["action"] == "tree"
                for m in f["members"] if not m.get("keep")}
            missing = sorted(set(wanted) - set(infos))
            if missing:
                raise _bad(path, f"payload {missing[0]} is missing")
            for f in header["files"]:  # the sizes the (signed) header states, before reading
                declared = sum(infos[name].file_size for name, entry in wanted.items() if entry is f)
                if declared != f.get("payload_bytes", declared):
                    raise _bad(path, f"the payload of {f['name']} is not the size its header states")
            payloads = {name: _read(path, z, infos[name], infos[name].file_size) for name in sorted(wanted)}
        except (zipfile.BadZipFile, OSError, EOFError) as exc:
            raise _bad(path, f"corrupt archive ({exc})") from None
    if sha256_bytes(manifest_bytes) != header["result"]["manifest_sha256"]:
        raise _bad(path, "its manifest does not match the sha256 in its header (tampered or corrupt)")
    for f in header["files"]:
        pairs = [(f["payload"], f["payload_sha256"])] if f["action"] != "tree" else \
            [(member_payload(f["payload"], m), None) for m in f["members"] if not m.get("keep")]
        for name, digest in pairs:  # a directory's files are checked as they are written (apply)
            if digest is not None and sha256_bytes(payloads[name]) != digest:
                raise _bad(path, f"payload {name} does not match the sha256 in its header (tampered or corrupt)")
    result = loads_json(manifest_bytes, f"{path}: {MANIFEST}", UpdateError)
    if not isinstance(result, dict):
        raise _bad(path, f"its {MANIFEST} is not a manifest")
    return Update(path, header, header_bytes, manifest_bytes, payloads, signature, result)


def _read(path: Path, z: zipfile.ZipFile, info: zipfile.ZipInfo, limit: int) -> bytes:
    """A member's bytes, never more than ``limit`` of them (whatever its entry claims)."""
    if info.file_size > limit:
        raise _bad(path, f"{info.filename} is larger than {limit} bytes")
    with z.open(info) as member:
        data = member.read(limit + 1)
    if len(data) > limit:
        raise _bad(path, f"{info.filename} unpacks to more than {limit} bytes")
    return data


def _validate_header(path: Path, header: Any) -> None:
    def need(cond: bool, why: str) -> None:
        if not cond:
            raise _bad(path, why)

    need(isinstance(header, dict) and header.get("format") == FORMAT, f"unsupported format (this cephalon-edge reads {FORMAT})")
    for key in ("base", "result"):
        need(isinstance(header.get(key), dict) and isinstance(header[key].get("manifest_sha256"), str),
             f"{HEADER}: {key}.manifest_sha256 missing")
    need(isinstance(header.get("files"), list) and isinstance(header.get("keep"), list), f"{HEADER}: files/keep missing")
    names = set()
    for f in header["files"]:
        need(isinstance(f, dict) and f.get("action") in ACTIONS, f"{HEADER}: a file entry has no known action")
        need(isinstance(f.get("name"), str) and f["name"] not in names, f"{HEADER}: file names must be unique strings")
        need(isinstance(f.get("payload_bytes", 0), int) and not isinstance(f.get("payload_bytes", 0), bool),
             f"{HEADER}: {f['name']}: payload_bytes must be a number of bytes")
        names.add(f["name"])
        _plain_member(path, f["name"], "file")
        need(f.get("payload") == f"files/{f['name']}" + (f".{f.get('algorithm')}" if f["action"] == "delta" else ""),
             f"{HEADER}: {f['name']}: unexpected payload name")
        if f["action"] == "delta":
            need(f.get("algorithm") in ALGORITHMS and isinstance(f.get("base_sha256"), str),
                 f"{HEADER}: {f['name']}: a delta needs a known algorithm and its base's sha256")
        if f["action"] == "tree":
            need(isinstance(f.get("members"), list), f"{HEADER}: {f['name']}: a tree lists its members")
            for m in f["members"]:
                rel = m.get("path") if isinstance(m, dict) else None
                need(isinstance(rel, str) and rel and not set(rel.split("/")) & {"", ".", ".."}
                     and "\\" not in rel and "\x00" not in rel, f"{HEADER}: {f['name']}: bad member path")
                need(isinstance(m.get("sha256"), str), f"{HEADER}: {f['name']}: {rel}: sha256 missing")
                need(m.get("algorithm") is None or (m["algorithm"] in ALGORITHMS and isinstance(m.get("base_sha256"), str)),
                     f"{HEADER}: {f['name']}: {rel}: a delta needs a known algorithm and its base's sha256")
            paths = [m["path"] for m in f["members"]]
            need(len(set(paths)) == len(paths), f"{HEADER}: {f['name']}: a member is listed twice")
            folders = {p.rsplit("/", k)[0] for p in paths for k in range(1, p.count("/") + 1)}
            need(not folders & set(paths), f"{HEADER}: {f['name']}: a member is both a file and a directory")
        else:
            need(isinstance(f.get("payload_sha256"), str) and isinstance(f.get("sha256"), str),
                 f"{HEADER}: {f['name']}: sha256s missing")
    kept = header["keep"]
    need(all(isinstance(name, str) for name in kept) and len(set(kept)) == len(kept),
         f"{HEADER}: keep must list each unchanged file once")
    for name in kept:
        need(name not in names, f"{HEADER}: keep names unchanged files only")
        _plain_member(path, name, "kept file")


def _plain_member(path: Path, name: str, what: str) -> None:
    """A package file an update may place: a plain name inside the package, never the manifest
    (the update's own manifest is the new package's)."""
    from cephalon_edge.device.manifest import safe_member

    if name in (MANIFEST, TRUST_FILE):
        raise _bad(path, f"a {what} named {name}: the update's own manifest is the new package's, and what the "
                         "package trusts is not an update's to replace")
    try:
        safe_member(Path("."), name)
    except PackageError:
        raise _bad(path, f"{what} name {str(name)[:60]!r} would leave the package") from None
