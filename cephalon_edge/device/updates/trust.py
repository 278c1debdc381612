"""What a package trusts: the public keys it accepts updates from (TUF/Uptane-style pinning).

``keys trust PKG KEY.pub`` writes ``PKG/trust.json``. It is no file of the manifest's, and no
update may name it: an update cannot replace it, and ``apply`` carries it into the new
package. Once a package pins keys, ``apply`` refuses updates that are unsigned or signed by
any other key, with no flag to pass. Keys rotate by an update signed with a pinned key whose
header names the next keys (``diff --rotate-trust NEW.pub``); whoever can write the package
directory itself can always re-pin (``keys trust --replace``).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from cephalon_edge.device.manifest import TRUST_FILE
from cephalon_edge.errors import PackageError, UsageError
from cephalon_edge.fsutil import loads_json, regular_file, write_bytes_atomic, writer_lock

FORMAT = "cephalon-edge-trust/1"
MAX_TRUST_BYTES = 64 << 10
MAX_KEYS = 16


def fingerprint(pem: bytes) -> str:
    return hashlib.sha256(pem).hexdigest()[:16]


def pinned_keys(package: Path) -> list[bytes]:
    """The public keys (PEM) ``package`` accepts updates from; empty when it pins none."""
    path = Path(package) / TRUST_FILE
    if not path.exists() and not path.is_symlink():
        return []
    regular_file(path, "trust file", PackageError, MAX_TRUST_BYTES, allow_symlink=False)
    data = loads_json(path.read_bytes(), str(path), PackageError)
    return parse_keys(data, str(path))


def parse_keys(data: Any, where: str) -> list[bytes]:
    keys = data.get("keys") if isinstance(data, dict) and data.get("format") == FORMAT else None
    if not isinstance(keys, list) or not keys or len(keys) > MAX_KEYS \
            or not all(isinstance(k, dict) and isinstance(k.get("pem"), str) for k in keys):
        raise PackageError(f"{where}: not a {FORMAT} list of 1 to {MAX_KEYS} public keys",
                           hint="pin the key again: cephalon-edge keys trust PKG KEY.pub --replace")
    return [k["pem"].encode() for k in keys]


def trust_document(pems: list[bytes]) -> bytes:
    return (json.dumps({"format": FORMAT, "keys": [{"fingerprint": fingerprint(p), "pem": p.decode()} for p in pems]},
                       indent=1) + "\n").encode()


def pin(package: Path, public_keys: list[Path], replace: bool = False) -> list[str]:
    """Pin ``public_keys`` for ``package``; returns their fingerprints."""
    from cephalon_edge.device.manifest import Manifest
    from cephalon_edge.device.updates.keys import public_pem

    package = Path(package)
    Manifest.open(package, verify=False)  # an edge package, nothing else
    pems = [public_pem(k) for k in public_keys]
    with writer_lock(package):
        already = pinned_keys(package)
        if already and not replace:
            raise UsageError(f"{package} already pins {len(already)} key(s)",
                             hint="rotate with an update signed by a pinned key (diff --rotate-trust), "
                                  "or pass --replace to re-pin here")
        write_bytes_atomic(package / TRUST_FILE, trust_document(pems))
    return [fingerprint(p) for p in pems]
