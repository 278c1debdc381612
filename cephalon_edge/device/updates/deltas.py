"""Binary deltas of one file against its previous version: ``bsdiff4`` (bsdiff with bz2) or
``detools`` (bsdiff with lzma). Both are maintained libraries; BENCHMARKS.md compares their
update sizes and apply times on our packages."""

from __future__ import annotations

import io

from cephalon_edge.extras import require

DEFAULT_ALGORITHM = "bsdiff4"


def make_delta(old: bytes, new: bytes, algorithm: str) -> bytes:
    require("update", "binary deltas")
    if algorithm == "bsdiff4":
        import bsdiff4

        return bsdiff4.diff(old, new)
    import detools

    patch = io.BytesIO()
    detools.create_patch(io.BytesIO(old), io.BytesIO(new), patch, compression="lzma")
    return patch.getvalue()


def apply_delta(old: bytes, delta: bytes, algorithm: str, limit: int) -> bytes:
    """``old`` patched by ``delta``; refused (``ValueError``) before allocating when the result
    would exceed ``limit`` bytes (the size the result manifest gives the file)."""
    require("update", "applying a binary delta")
    if algorithm == "bsdiff4":
        import bsdiff4

        declared = _bsdiff4_size(delta)
        if declared > limit:
            raise ValueError(f"it declares a {declared}-byte result, more than the {limit} its manifest allows")
        return bsdiff4.patch(old, delta)
    import detools

    out = _Bounded(limit)
    detools.apply_patch(io.BytesIO(old), io.BytesIO(delta), out)
    return out.getvalue()


def _bsdiff4_size(delta: bytes) -> int:
    """The result size a bsdiff4 patch's header declares (bytes 24..32, sign and magnitude)."""
    if len(delta) < 32 or delta[:8] != b"BSDIFF40":
        raise ValueError("not a bsdiff4 patch")
    raw = bytearray(delta[24:32])
    negative = raw[7] & 0x80
    raw[7] &= 0x7F
    size = int.from_bytes(raw, "little")
    if negative:
        raise ValueError("a negative result size")
    return size


class _Bounded(io.BytesIO):
    """A result buffer that refuses to grow past ``limit`` bytes."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit

    def write(self, data) -> int:  # type: ignore[no-untyped-def, override]
        if self.tell() + len(data) > self.limit:
            raise ValueError(f"the result grows past the {self.limit} bytes its manifest allows")
        return super().write(data)
