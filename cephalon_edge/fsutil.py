"""Atomic file writes: a crash never leaves a half-written output or destroys the old one."""

from __future__ import annotations

import json
import math
import os
import shutil
import stat
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale(parent: Path, name: str) -> list[Path]:
    """Remove temporaries that a killed cephalon-edge left next to ``name``: they carry the
    writer's pid (``.NAME.PID.XXXX.partial|old|tmp``) and are removed only if it is gone."""
    removed = []
    for p in Path(parent).glob(f".{name}.*"):
        parts = p.name[len(name) + 2:].split(".")
        if len(parts) < 3 or not parts[0].isdigit() or parts[-1] not in ("partial", "old", "tmp"):
            continue
        if int(parts[0]) != os.getpid() and not _alive(int(parts[0])):
            shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
            removed.append(p)
    return removed


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def atomic_path(dest: Path) -> Iterator[Path]:
    """Yield a temporary path next to ``dest``; it replaces ``dest`` only if the block succeeds."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    remove_stale(dest.parent, dest.name)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.{os.getpid()}.", suffix=".tmp", dir=dest.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes 0600; outputs get the usual mode
        os.replace(tmp_path, dest)
    finally:
        tmp_path.unlink(missing_ok=True)


def write_bytes_atomic(dest: Path, data: bytes) -> None:
    with atomic_path(dest) as tmp:
        tmp.write_bytes(data)


def json_safe(obj: Any) -> Any:
    """``obj`` with every NaN or infinity as ``None`` (and numpy scalars as Python ones): JSON has
    no NaN, and a strict parser refuses the bare ``NaN`` Python would write."""
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if hasattr(obj, "item") and callable(obj.item) and getattr(obj, "ndim", None) == 0:
        obj = obj.item()  # a numpy scalar
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def dumps_strict(obj: Any) -> str:
    """JSON text a strict parser accepts: NaN and infinities written as ``null``."""
    return json.dumps(json_safe(obj), indent=2, sort_keys=False, allow_nan=False)


def write_json_atomic(dest: Path, obj: Any) -> None:
    write_bytes_atomic(dest, (dumps_strict(obj) + "\n").encode())


@contextmanager
def writer_lock(dest: Path) -> Iterator[None]:
    """Hold the advisory lock of ``dest``'s writers (``fcntl.flock`` on ``.NAME.lock`` beside
    it): two exports, or an export and a calibrate, never interleave their writes. The lock
    file is removed on release; a waiter that locked a removed file locks again."""
    import fcntl

    dest = Path(dest)
    lock = dest.parent / f".{dest.name}.lock"
    while True:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            if os.fstat(fd).st_ino == os.stat(lock).st_ino:
                break
        except FileNotFoundError:
            pass
        os.close(fd)  # the holder removed it while we waited: lock the new one
    try:
        yield
    finally:
        lock.unlink(missing_ok=True)
        os.close(fd)


def exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths (Linux ``renameat2(RENAME_EXCHANGE)``); False where the
    system or file system cannot, so the caller falls back to two renames."""
    import ctypes
    import errno

    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(str(a)), at_fdcwd, os.fsencode(str(b)), rename_exchange) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP, errno.EPERM):
        return False
    raise OSError(code, os.strerror(code), str(b))


@contextmanager
def atomic_directory(dest: Path, replace: bool) -> Iterator[Path]:
    """Yield a fresh temporary directory next to ``dest``; on success it takes ``dest``'s place.

    Writers of ``dest`` hold its lock throughout. The new directory replaces an existing one
    in one atomic exchange (Linux), so ``dest`` always names a complete package, whatever
    signal arrives. Elsewhere the fallback is two renames (``dest`` -> ``.old``, new -> ``dest``);
    should a crash fall between them, the next writer puts ``.old`` back instead of deleting it.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    with writer_lock(dest):
        restore_stale_old(dest)
        remove_stale(dest.parent, dest.name)
        tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.{os.getpid()}.", suffix=".partial", dir=dest.parent))
        os.chmod(tmp, 0o777 & ~_umask())
        try:
            yield tmp
            if dest.exists() and not replace:
                raise FileExistsError(dest)
            if not dest.exists():
                os.replace(tmp, dest)
            elif exchange(tmp, dest):
                shutil.rmtree(tmp, ignore_errors=True)  # now the previous package
            else:
                old = Path(tempfile.mkdtemp(prefix=f".{dest.name}.{os.getpid()}.", suffix=".old", dir=dest.parent))
                old.rmdir()
                os.replace(dest, old)
                os.replace(tmp, dest)
                shutil.rmtree(old, ignore_errors=True)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)


def restore_stale_old(dest: Path) -> None:
    """A writer killed between the fallback's two renames left ``dest`` missing and the
    previous package as ``.NAME.PID.XXXX.old``: put it back."""
    if dest.exists():
        return
    olds = [p for p in dest.parent.glob(f".{dest.name}.*.old") if p.is_dir()]
    pids = [p.name[len(dest.name) + 2:].split(".")[0] for p in olds]
    dead = [p for p, pid in zip(olds, pids) if pid.isdigit() and not _alive(int(pid))]
    if dead:
        os.replace(max(dead, key=lambda p: p.stat().st_mtime), dest)

def regular_file(path: Path, what: str, error: type[Exception], max_bytes: int | None = None,
                 allow_symlink: bool = True, allow_dir: bool = False) -> Path:
    """``path`` if it is a regular file (a FIFO, device or socket would hang or never end a
    read), at most ``max_bytes`` long; else ``error`` with one line naming it. With
    ``allow_symlink=False`` a symlink is refused too (it could point out of a package)."""
    path = Path(path)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        raise error(f"{what} not found: {path}") from None
    except OSError as exc:
        raise error(f"{what} {path}: {exc.strerror}") from None
    if stat.S_ISLNK(st.st_mode):
        if not allow_symlink:
            raise error(f"{what} {path} is a symlink; refused (it could point anywhere)")
        try:
            st = os.stat(path)
        except OSError:
            raise error(f"{what} {path} is a dangling symlink") from None
    if stat.S_ISDIR(st.st_mode) and allow_dir:
        return path
    if not stat.S_ISREG(st.st_mode):
        kind = "a directory" if stat.S_ISDIR(st.st_mode) else "not a regular file"
        raise error(f"{what} {path} is {kind}")
    if max_bytes is not None and st.st_size > max_bytes:
        raise error(f"{what} {path} is {st.st_size} bytes; more than the {max_bytes} allowed")
    return path


def loads_json(raw: bytes | str, what: str, error: type[Exception]) -> Any:
    """``json.loads`` whose failures, nesting too deep included, are one-line ``error``s."""
    try:
        return json.loads(raw)
    except RecursionError:
        raise error(f"{what}: JSON nested too deeply") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise error(f"{what}: not valid JSON ({exc})") from None
