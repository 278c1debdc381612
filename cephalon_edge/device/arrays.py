"""Bounded reads of ``.npy`` and ``.npz`` files: what an array's header declares is checked
against the bytes the file holds and a cap before numpy allocates anything (a header can
declare 2^40 samples; a deflated member can unpack a megabyte into gigabytes)."""

from __future__ import annotations

import math
import zipfile
from pathlib import Path
from typing import IO

import numpy as np

from cephalon_edge.errors import DataError

MAX_ARRAY_BYTES = 4 << 30  # one dataset's arrays, unpacked
# a member that unpacks past this size at more than this ratio is a deflate bomb, not data
# (float data compresses a few times; np.savez, uncompressed, is 1:1)
BOMB_BYTES, BOMB_RATIO = 100 << 20, 100


def declared_bytes(stream: IO[bytes], what: str) -> int:
    """The bytes an ``.npy`` stream's header says its data takes (the stream is left after
    the header)."""
    try:
        version = np.lib.format.read_magic(stream)
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(stream)
        elif version == (2, 0):
            shape, _, dtype = np.lib.format.read_array_header_2_0(stream)
        else:
            raise ValueError(f"unsupported .npy version {version}")
    except (ValueError, EOFError, OSError) as exc:
        raise DataError(f"{what}: not a readable .npy array ({str(exc).splitlines()[0] if str(exc) else 'bad header'})") from None
    if dtype.hasobject:
        raise DataError(f"{what}: holds Python objects; only numeric arrays are read")
    return math.prod(shape) * dtype.itemsize


def check_npy(path: Path, what: str, limit: int = MAX_ARRAY_BYTES) -> None:
    """Refuse an ``.npy`` file whose header declares more data than it holds, or than ``limit``."""
    with open(path, "rb") as f:
        need = declared_bytes(f, what)
        held = Path(path).stat().st_size - f.tell()
    _check(need, held, limit, what)


def check_npz(path: Path, what: str, limit: int = MAX_ARRAY_BYTES) -> None:
    """Refuse an ``.npz`` archive whose members unpack to more than ``limit`` bytes, or whose
    arrays declare more data than their members hold."""
    try:
        with zipfile.ZipFile(path) as z:
            infos = z.infolist()
            total = sum(i.file_size for i in infos)
            if total > limit:
                raise DataError(f"{what}: its arrays unpack to {total} bytes, more than the {limit} read")
            for info in infos:
                if info.file_size > BOMB_BYTES and info.file_size > BOMB_RATIO * max(1, info.compress_size):
                    raise DataError(f"{what}: {info.filename} unpacks {info.compress_size} bytes into {info.file_size}; "
                                    "refused as a decompression bomb",
                                    hint="real data saved with numpy.savez (uncompressed) is read as it is")
                with z.open(info) as member:
                    need = declared_bytes(member, f"{what}: {info.filename}")
                    header = member.tell()
                _check(need, info.file_size - header, limit, f"{what}: {info.filename}")
    except zipfile.BadZipFile as exc:
        raise DataError(f"{what}: not a readable .npz ({exc})") from None


def _check(need: int, held: int, limit: int, what: str) -> None:
    if need > limit:
        raise DataError(f"{what}: its header declares {need} bytes of data, more than the {limit} read")
    if need > held:
        raise DataError(f"{what}: its header declares {need} bytes of data; the file holds {held}")
