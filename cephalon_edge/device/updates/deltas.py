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


def apply_delta(old: bytes, delta: bytes, algorithm: str) -> bytes:
    require("update", "applying a binary delta")
    if algorithm == "bsdiff4":
        import bsdiff4

        return bsdiff4.patch(old, delta)
    import detools

    out = io.BytesIO()
    detools.apply_patch(io.BytesIO(old), io.BytesIO(delta), out)
    return out.getvalue()
