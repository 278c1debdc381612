"""Ed25519 keys for signed updates (the ``cryptography`` package): ``keys new`` writes a
private key (PEM, mode 0600) and its public key; ``diff --sign`` signs an update's header;
``apply --trust`` refuses an update that is unsigned or not signed by the trusted key."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from cephalon_edge.device.updates.archive import UpdateError
from cephalon_edge.errors import UsageError
from cephalon_edge.extras import require
from cephalon_edge.fsutil import regular_file, write_bytes_atomic

MAX_KEY_BYTES = 16 << 10


def new_keypair(private: Path, force: bool = False) -> tuple[Path, Path]:
    """Write a new private key to ``private`` and its public key beside it (``.pub``)."""
    require("update", "making signing keys")
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    private = Path(private)
    public = private.with_name(private.name + ".pub")
    for path in (private, public):
        if path.exists() and not force:
            raise UsageError(f"{path} already exists", hint="pass --force to replace the key pair")
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    write_bytes_atomic(private, pem)
    os.chmod(private, 0o600)
    write_bytes_atomic(public, key.public_key().public_bytes(serialization.Encoding.PEM,
                                                             serialization.PublicFormat.SubjectPublicKeyInfo))
    return private, public


def _load(path: Path, private: bool) -> Any:
    require("update", "signed updates")
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

    what = "private key" if private else "public key"
    raw = regular_file(Path(path), what, UsageError, MAX_KEY_BYTES).read_bytes()
    try:
        key = serialization.load_pem_private_key(raw, password=None) if private else \
            serialization.load_pem_public_key(raw)
    except (ValueError, TypeError) as exc:
        raise UsageError(f"{path} is not a PEM {what} ({str(exc).splitlines()[0][:80]})",
                         hint="make a key pair with `cephalon-edge keys new -o KEY`") from None
    if not isinstance(key, Ed25519PrivateKey if private else Ed25519PublicKey):
        raise UsageError(f"{path} is not an Ed25519 {what}", hint="make one with `cephalon-edge keys new -o KEY`")
    return key


def load_private(path: Path) -> Any:
    return _load(path, private=True)


def sign(data: bytes, private_key: Path) -> bytes:
    return load_private(private_key).sign(data)


def public_pem(path: Path) -> bytes:
    """The PEM bytes of an Ed25519 public key file, checked."""
    _load(path, private=False)
    return Path(path).read_bytes()


def check_signature(data: bytes, signature: bytes | None, trusted: list[bytes], what: str, whose: str) -> None:
    """Refuse (exit 2) ``data`` that is unsigned or not signed by one of the ``trusted`` public
    keys (PEM bytes; ``whose`` names them in the error)."""
    require("update", "signed updates")
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import serialization

    if signature is None:
        raise UpdateError(f"{what} is not signed, and {whose} must sign it; refused",
                          hint="sign updates with `cephalon-edge diff OLD NEW -o UPDATE --sign KEY`")
    for pem in trusted:
        try:
            serialization.load_pem_public_key(pem).verify(signature, data)
            return
        except InvalidSignature:
            continue
    raise UpdateError(f"{what} is not signed by {whose}; refused", hint="it was tampered with, or signed with another key")
