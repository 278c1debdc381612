"""The board's side of ``bench --ssh``: a standard-library script that ``ssh`` feeds to the
board's ``python3`` on stdin (``boards.AGENT_BOOT``), one operation per connection.

It runs before the device half is installed there, so it imports nothing of ours and works
on any Python >= 3.10 (the device half itself needs 3.11: ``probe`` says which the board has).
The host writes, on the connection's stdin, the length of this script, the script, one JSON
line ``{"operation": ..., ...}`` and then any payload; the agent answers with JSON lines on stdout:
events while it works and a last ``{"result": ...}`` or ``{"error": ..., "kind": ...}``.

Everything lives under one directory on the board, ``$CEPHALON_EDGE_CACHE/board`` (default
``~/.cache/cephalon-edge/board``): ``store/<sha256>`` (files by content: the cache that lets a
second bench skip what the board already has), ``venv/`` (the device half) and
``runs/<id>/`` (one bench: the package staged from the store, the data, the report), which is
removed when the run ends, fails or loses its connection (stdin closing is how the agent
notices that the host is gone).
"""

import hashlib
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import threading

HEX = re.compile(r"^[0-9a-f]{64}$")
RUN_ID = re.compile(r"^[0-9a-f]{8,32}$")
PART = re.compile(r"^[A-Za-z0-9._+-]+$")
WHEEL = re.compile(r"^cephalon_edge-[A-Za-z0-9._+-]+\.whl$")
EXTRA = re.compile(r"^[a-z0-9_-]+$")
# module -> the runtime's name in cephalon-edge's target registry (``Target.runtime``)
RUNTIME_MODULES = {"onnxruntime": "onnxruntime", "ai_edge_litert": "litert", "executorch": "executorch",
                   "coremltools": "coreml"}
CHUNK = 1 << 20


class Refused(Exception):
    def __init__(self, message, kind="refused"):
        super().__init__(message)
        self.kind = kind


def root():
    base = os.environ.get("CEPHALON_EDGE_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "cephalon-edge")
    return os.path.join(base, "board")


def venv_python():
    return os.path.join(root(), "venv", "bin", "python")


def say(**event):
    sys.stdout.write(json.dumps(event) + "\n")
    sys.stdout.flush()


def read_exact(stream, size):
    """``size`` bytes of the payload, or None when the host went away first."""
    parts, left = [], size
    while left:
        chunk = stream.read(min(left, CHUNK))
        if not chunk:
            return None
        parts.append(chunk)
        left -= len(chunk)
    return b"".join(parts)


def installed():
    path = os.path.join(root(), "venv", "installed.json")
    if not os.path.isfile(venv_python()) or not os.path.isfile(path):
        return None
    with open(path) as f:
        return json.load(f)


def runtimes(python):
    """The runtimes ``python`` can import (checked in that interpreter, by module spec)."""
    code = ("import importlib.util, json, sys; "
            f"print(json.dumps([m for m in {list(RUNTIME_MODULES)!r} if importlib.util.find_spec(m)]))")
    try:
        out = subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=60)
        return [RUNTIME_MODULES[m] for m in json.loads(out.stdout)] if out.returncode == 0 else []
    except (OSError, ValueError, subprocess.TimeoutExpired):
        return []


def read_text(path, limit=256):
    try:
        with open(path, "rb") as f:
            return f.read(limit).replace(b"\0", b"").decode("utf-8", "replace").strip() or None
    except OSError:
        return None


def os_name():
    text = read_text("/etc/os-release", 4096) or ""
    match = re.search(r'^PRETTY_NAME="?([^"\n]*)"?', text, re.M)
    return match.group(1) if match else platform.platform()


def memory_bytes():
    text = read_text("/proc/meminfo", 4096) or ""
    match = re.search(r"^MemTotal:\s+(\d+) kB", text, re.M)
    return int(match.group(1)) * 1024 if match else None


def op_probe(args, stdin):
    venv = installed()
    model = read_text("/proc/device-tree/model") or read_text("/sys/class/dmi/id/product_name")
    store = os.path.join(root(), "store")
    os.makedirs(store, exist_ok=True)
    disk = shutil.disk_usage(store)
    return {"model": model, "machine": platform.machine(), "cores": os.cpu_count(), "memory_bytes": memory_bytes(),
            "os": os_name(), "kernel": platform.release(), "python": platform.python_version(),
            "python_ok": sys.version_info >= (3, 11), "cache": root(), "free_bytes": disk.free,
            "device_half": venv, "runtimes": runtimes(venv_python()) if venv else []}


def op_have(args, stdin):
    store = os.path.join(root(), "store")
    return {"have": [h for h in args["hashes"] if HEX.match(h) and os.path.isfile(os.path.join(store, h))]}


def op_put(args, stdin):
    """Files by content: each ``{"sha256", "size", "name"}`` followed by its bytes; each is
    written to a partial file, checked and renamed, then acknowledged (the host's progress)."""
    store = os.path.join(root(), "store")
    os.makedirs(store, exist_ok=True)
    for item in args["files"]:
        digest, size = item["sha256"], int(item["size"])
        if not HEX.match(digest):
            raise Refused("bad file hash")
        partial = os.path.join(store, f".part-{digest}-{os.getpid()}")
        try:
            with open(partial, "wb") as out:
                hasher, left = hashlib.sha256(), size
                while left:
                    chunk = stdin.read(min(left, CHUNK))
                    if not chunk:
                        raise Refused(f"connection closed while receiving {item['name']}", "lost")
                    hasher.update(chunk)
                    out.write(chunk)
                    left -= len(chunk)
                out.flush()
                os.fsync(out.fileno())
            if hasher.hexdigest() != digest:
                raise Refused(f"{item['name']} arrived damaged (sha256 differs)", "failed")
            os.replace(partial, os.path.join(store, digest))
        except OSError as exc:
            raise Refused(f"cannot store {item['name']}: {exc.strerror or exc}", "failed") from None
        finally:
            if os.path.exists(partial):
                os.remove(partial)
        say(event="stored", name=item["name"])
    return {"stored": len(args["files"])}


def _store_file(digest):
    if not HEX.match(digest):
        raise Refused("bad file hash")
    path = os.path.join(root(), "store", digest)
    if not os.path.isfile(path):
        raise Refused(f"file {digest[:12]} is not on the board", "failed")
    return path


def _run_dir(run_id):
    if not RUN_ID.match(run_id):
        raise Refused("bad run id")
    return os.path.join(root(), "runs", run_id)


def _link(source, dest):
    try:
        os.link(source, dest)
    except OSError:
        shutil.copyfile(source, dest)


def op_setup(args, stdin):
    """The device half into ``venv/`` from the wheel in the store (pip uses the board's own
    index for the dependencies); skipped when that very wheel and extras are installed."""
    wheel, extras = args["wheel"], args["extras"]
    if not WHEEL.match(wheel) or not all(EXTRA.match(e) for e in extras):
        raise Refused("bad wheel name or extra")
    if sys.version_info < (3, 11):
        raise Refused(f"the board has Python {platform.python_version()}; the device half needs 3.11 or newer",
                      "python")
    have = installed()
    if have and have["wheel_sha256"] == args["sha256"] and set(extras) <= set(have["extras"]):
        return {"installed": have, "skipped": True, "runtimes": runtimes(venv_python())}
    source = _store_file(args["sha256"])
    venv = os.path.join(root(), "venv")
    work = _run_dir(args["run_id"])
    os.makedirs(work, exist_ok=True)
    try:
        if not os.path.isfile(venv_python()):
            say(event="step", step="creating the venv")
            made = subprocess.run([sys.executable, "-m", "venv", venv], capture_output=True, text=True)
            if made.returncode != 0:
                shutil.rmtree(venv, ignore_errors=True)
                raise Refused("cannot create a venv: " + _tail(made.stderr), "setup")
        local = os.path.join(work, wheel)
        _link(source, local)
        wanted = sorted(set(extras) | set(have["extras"] if have else []))
        spec = local + (f"[{','.join(wanted)}]" if wanted else "")
        say(event="step", step="pip install " + wheel + (f"[{','.join(wanted)}]" if wanted else ""))
        pip = subprocess.run([venv_python(), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                              "--force-reinstall", "--no-deps", local], capture_output=True, text=True)
        if pip.returncode == 0:
            pip = subprocess.run([venv_python(), "-m", "pip", "install", "-q", "--disable-pip-version-check", spec],
                                 capture_output=True, text=True)
        if pip.returncode != 0:
            raise Refused("pip install failed on the board: " + _tail(pip.stderr or pip.stdout), "setup")
        record = {"version": args["version"], "wheel": wheel, "wheel_sha256": args["sha256"], "extras": wanted}
        with open(os.path.join(venv, "installed.json.part"), "w") as f:
            json.dump(record, f)
        os.replace(os.path.join(venv, "installed.json.part"), os.path.join(venv, "installed.json"))
        return {"installed": record, "skipped": False, "runtimes": runtimes(venv_python())}
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _tail(text, lines=3):
    kept = [line.strip() for line in (text or "").strip().splitlines() if line.strip()]
    return " / ".join(kept[-lines:])[-600:] or "no message"


def op_bench(args, stdin):
    """Stage the package and data from the store, run the board's ``cephalon-edge bench`` on
    them and return its report. The run directory goes whatever happens; if the host goes
    away (stdin closes), the bench is stopped first."""
    if not installed():
        raise Refused("the device half is not installed on the board", "setup")
    work = _run_dir(args["run_id"])
    package = os.path.join(work, "package")
    try:
        for rel, digest in args["files"].items():
            parts = rel.split("/")
            if not all(PART.match(p) and p not in (".", "..") for p in parts):
                raise Refused(f"bad package path {rel!r}")
            dest = os.path.join(package, *parts)
            os.makedirs(os.path.dirname(dest), exist_ok=True)
            _link(_store_file(digest), dest)
        data = os.path.join(work, "data.npz")
        _link(_store_file(args["data"]), data)
        report = os.path.join(work, "report.json")
        exe = os.path.join(root(), "venv", "bin", "cephalon-edge")
        env = {**os.environ, "COLUMNS": "160", "NO_COLOR": "1"}
        child = subprocess.Popen([exe, "bench", package, "--data", data, "--json", report, *args["bench_args"]],
                                 stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                 text=True, errors="replace", env=env, cwd=work)
        watch = threading.Thread(target=_stop_when_host_leaves, args=(stdin, child), daemon=True)
        watch.start()
        say(event="started")
        _, err = child.communicate()
        if child.returncode < 0:
            raise Refused(f"the bench on the board was killed (signal {-child.returncode})", "failed")
        if child.returncode != 0 or not os.path.isfile(report):
            raise Refused(f"the bench on the board failed (exit {child.returncode}): {_tail(err, 2)}",
                          "usage" if child.returncode == 2 else "failed")
        with open(report) as f:
            return {"report": json.load(f)}
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _stop_when_host_leaves(stdin, child):
    stdin.read()  # EOF: the connection is gone (the host never writes after the operation line)
    if child.poll() is None:
        child.kill()


def op_clean(args, stdin):
    """Remove a run's directory and the store files it uploaded (Ctrl-C: nothing of the run stays)."""
    shutil.rmtree(_run_dir(args["run_id"]), ignore_errors=True)
    removed = 0
    for digest in args.get("uploaded", []):
        if HEX.match(digest) and os.path.isfile(os.path.join(root(), "store", digest)):
            os.remove(os.path.join(root(), "store", digest))
            removed += 1
    return {"removed": removed}


OPERATIONS = {"probe": op_probe, "have": op_have, "put": op_put, "setup": op_setup, "bench": op_bench, "clean": op_clean}


def main():
    stdin = sys.stdin.buffer
    try:
        args = json.loads(stdin.readline())
        say(result=OPERATIONS[args["operation"]](args, stdin))
    except Refused as exc:
        say(error=str(exc), kind=exc.kind)
    except Exception as exc:  # the host reports it as the board's failure, with its type
        say(error=f"{type(exc).__name__}: {exc}", kind="failed")


if __name__ == "__main__":  # fed to python3 by ssh (the tests import the operations)
    if sys.version_info < (3, 10):
        say(error=f"the board has Python {platform.python_version()}; cephalon-edge needs 3.11 or newer", kind="python")
    else:
        main()
