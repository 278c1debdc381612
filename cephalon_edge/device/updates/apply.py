"""``apply``: turn a package into the update's result, verified, atomically.

The update is read and checked first: its signature against the keys the package pins
(``trust.json``) or ``--trust`` before anything large is read (unsigned updates only with
``--allow-unsigned``), then every payload against its sha256. Then the base, under its
writers' lock (an ``apply`` or ``calibrate`` that finished meanwhile is seen, never
overwritten): its manifest must be the one the update was made for, its files must match
their sha256s, and the result must be newer (``--allow-downgrade`` otherwise). The new package is assembled in a
temporary directory next to the destination (kept files hard-linked or copied from the base,
changed ones written or patched into new files: nothing is ever written through a link into
the base), opened and verified against its new manifest, and only then takes the
destination's place in one atomic exchange (the same mechanism as export). On any failure or
kill the package is untouched.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Callable

from cephalon_edge.device.manifest import MANIFEST, Manifest, package_version_of, sha256_file
from cephalon_edge.device.updates.archive import (
    MAX_TOTAL_BYTES,
    Update,
    UpdateError,
    member_payload,
    read_update,
    sha256_bytes,
)
from cephalon_edge.device.updates.deltas import apply_delta
from cephalon_edge.device.updates.trust import TRUST_FILE, parse_keys, pinned_keys, trust_document
from cephalon_edge.errors import PackageError, UsageError
from cephalon_edge.fsutil import atomic_directory, writer_lock


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
    named = base.member_files()
    strange = next((name for name in update.header["keep"] if name not in named), None)
    if strange is not None:  # the base matches, yet the update keeps a file it does not have
        raise UpdateError(f"{update.path} keeps {strange!r}, which {package}'s manifest does not name",
                          hint="the update was not made by `cephalon-edge diff` for this package; ship the whole package")
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
        try:
            shutil.copytree(src, dst, copy_function=_link_or_copy)
        except FileExistsError:
            raise UpdateError(f"{dst.name} is placed twice in the new package") from None
    else:
        _link_or_copy(src, dst)


def _link_or_copy(src: str | Path, dst: str | Path) -> None:
    """``dst`` as a new name of ``src``'s file, or a new copy of it; never over an existing file
    (a copy over a kept link would write into the base package)."""
    try:
        os.link(src, dst)
        return
    except FileExistsError:
        raise UpdateError(f"{Path(dst).name} is placed twice in the new package") from None
    except OSError:  # another file system, or links not allowed: copy into a new file
        pass
    with open(src, "rb") as reader, _new_file(Path(dst)) as writer:
        shutil.copyfileobj(reader, writer)
    shutil.copystat(src, dst)


def _new_file(path: Path) -> BinaryIO:
    """``path`` opened for writing only if nothing is there yet: an update that names a file
    twice is refused instead of writing through the first one (perhaps a link into the base)."""
    try:
        return open(path, "xb")
    except FileExistsError:
        raise UpdateError(f"{path.name} is written twice in the new package") from None


def _write_new(path: Path, data: bytes) -> None:
    with _new_file(path) as f:
        f.write(data)


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
            _write_new(path, data)
        return
    payload = update.payloads[entry["payload"]]
    _write_new(dst, payload if entry["action"] == "full" else _patched(update, base.member(name), payload, entry, name))


def _patched(update: Update, src: Path, delta: bytes, entry: dict[str, Any], what: str) -> bytes:
    """The base's file ``src`` with ``delta`` applied, checked against the result's sha256; the
    result may not outgrow the size the new manifest gives its file."""
    if not src.is_file() or sha256_file(src) != entry["base_sha256"]:
        raise UpdateError(f"{update.path}: the delta of {what} is for another version of it than the package's")
    limit = update.result_sizes.get(what.split("/", 1)[0], MAX_TOTAL_BYTES)
    try:
        data = apply_delta(src.read_bytes(), delta, entry["algorithm"], limit)
    except Exception as exc:  # the delta libraries raise their own errors on corrupt input
        raise UpdateError(f"{update.path}: the delta of {what} does not apply ({str(exc)[:120]})") from None
    if sha256_bytes(data) != entry["sha256"]:
        raise UpdateError(f"{update.path}: patching {what} gave a file that does not match its sha256")
    return data


@dataclass(frozen=True)
class Policy:
    """What ``apply`` accepts: ``--trust KEY.pub`` (checked against the package's pins), and
    the explicit consent flags for unsigned updates and downgrades."""

    trust: Path | None = None
    allow_unsigned: bool = False
    allow_downgrade: bool = False


def _signature_check(package: Path, policy: Policy) -> tuple[Callable[[bytes, bytes | None, str], None] | None, list[bytes]]:
    """How the update's signature is checked for ``package``, and the keys it pins. Pinned keys
    rule; without them, ``--trust``; with neither, unsigned updates need ``--allow-unsigned``."""
    from cephalon_edge.device.updates.keys import check_signature, public_pem

    pinned = pinned_keys(package)
    if pinned:
        if policy.trust is not None and public_pem(policy.trust) not in pinned:
            raise UsageError(f"{package} pins other keys than {policy.trust}; refused",
                             hint="the package's pinned keys decide (keys trust ... --replace re-pins them)")
        return (lambda data, sig, what: check_signature(data, sig, pinned, what, f"a key {package} pins")), pinned
    if policy.trust is not None:
        trusted = [public_pem(policy.trust)]
        return (lambda data, sig, what: check_signature(data, sig, trusted, what, f"the trusted key {policy.trust}")), []
    if not policy.allow_unsigned:
        raise UpdateError(f"{package} pins no key and no --trust was given: nothing can check the update's signature",
                          hint=f"pin the publisher's key (cephalon-edge keys trust {package} KEY.pub), pass --trust "
                               "KEY.pub, or --allow-unsigned to apply it unchecked")
    return None, []


def _refuse_rollback(update: Update, base: Manifest, policy: Policy) -> None:
    """An update must make the package newer (its manifest's version, covered by the signed
    header's sha256), unless ``--allow-downgrade``."""
    new, now = package_version_of(update.result), package_version_of(base.data)
    if new <= now and not policy.allow_downgrade:
        raise UpdateError(f"{update.path} would take {base.root} from version {now} to {new}, not newer; refused",
                          hint="an old update replayed, or a rollback: pass --allow-downgrade if you mean it")


def apply_update(package: Path, update_path: Path, out: Path | None = None, policy: Policy = Policy(),
                 dry_run: bool = False, force: bool = False,
                 on_progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Apply ``update_path`` to ``package`` (in place, or into ``out``); returns the report."""
    step = on_progress or (lambda _: None)
    package = Path(package)
    verify, pinned = _signature_check(package, policy)
    update = read_update(update_path, verify)  # the signature before anything large is read
    rotation = update.header.get("trust")
    if rotation is not None:
        rotation = parse_keys(rotation, f"{update_path}: update.json trust")
        if not pinned:
            raise UpdateError(f"{update_path} rotates trusted keys, but {package} pins none to authorise it",
                              hint=f"pin the current key first: cephalon-edge keys trust {package} KEY.pub")
    dest = Path(out) if out is not None else package
    if out is not None and dest.exists():
        if not force:
            raise UsageError(f"{dest} already exists", hint="pass --force to replace it, or omit -o to update in place")
        if not dest.is_dir() or (any(dest.iterdir()) and not (dest / MANIFEST).exists()):
            raise UsageError(f"{dest} is not an edge package; refusing to replace it")
    base = check_base(update, package)
    _refuse_rollback(update, base, policy)
    report = {"schema": "cephalon-edge/apply/1", "package": str(package), "output": str(dest),
              "dry_run": dry_run, "signature_checked": verify is not None, **plan(update)}
    if dry_run:
        return report
    step("update verified")
    with contextlib.ExitStack() as held:
        if dest.resolve() != package.resolve():  # the base's writers wait too (in place, the next lock is its)
            held.enter_context(writer_lock(package))
        tmp = held.enter_context(atomic_directory(dest, replace=True))
        base = check_base(update, package)  # again, under the lock: a writer may have finished meanwhile
        for name in update.header["keep"]:
            _place(base.member(name), tmp / name)
        for entry in update.files:
            write_file(tmp, base, update, entry)
            step(entry["name"])
        _write_new(tmp / MANIFEST, update.manifest_bytes)
        try:
            result = Manifest.open(tmp)  # every file against the new manifest's sha256s
        except PackageError as exc:
            raise UpdateError(f"{update_path}: the updated package does not verify: {exc.message}") from None
        unnamed = sorted(set(os.listdir(tmp)) - set(result.member_files()) - {MANIFEST})
        if unnamed:
            raise UpdateError(f"{update_path}: brings files its manifest does not name: {', '.join(unnamed[:5])}")
        if rotation is not None:  # signed by a pinned key: the next keys take over
            _write_new(tmp / TRUST_FILE, trust_document(rotation))
        elif pinned:
            _write_new(tmp / TRUST_FILE, trust_document(pinned))
        step("package verified")
    return report
