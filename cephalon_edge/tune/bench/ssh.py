"""Linux boards over the system OpenSSH client (torch-free).

``ssh`` is run with an argument list and ``BatchMode=yes`` (never a password prompt; the
user's ``~/.ssh/config``, keys, agent and jump hosts apply as in their own shell; host keys
are checked as they configured it, never turned off). The remote command is one constant
string, ``AGENT_BOOT``: it reads the agent script and then a JSON line of arguments from
stdin, so nothing the user typed (hosts, paths, names) is ever parsed by a shell on either
side.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import IO, Any, Callable, Iterable

from cephalon_edge.errors import DeviceError, UsageError

# the remote command: the board's python3 reads the agent from stdin and runs it only if it is
# byte for byte this version's agent (its sha256 is part of the command)
AGENT_BOOT = ('python3 -c "import sys, hashlib; b = sys.stdin.buffer; s = b.read(int(b.readline())); '
              "hashlib.sha256(s).hexdigest() == '{sha256}' or sys.exit('cephalon-edge: the agent arrived damaged'); exec(s)\"")
HOST = re.compile(r"^(?:(?P<user>[A-Za-z0-9._][A-Za-z0-9._-]*)@)?(?P<host>[A-Za-z0-9._-]+|\[[0-9A-Fa-f:.]+\])(?::(?P<port>\d{1,5}))?$")
CONNECT_TIMEOUT_S = 15


@dataclass(frozen=True)
class BoardAddress:
    """``[USER@]HOST[:PORT]`` as the user wrote it (``[::1]:2222`` for IPv6)."""

    text: str
    host: str
    user: str | None = None
    port: int | None = None

    @classmethod
    def parse(cls, text: str) -> "BoardAddress":
        match = HOST.match(text.strip())
        if not match or match["host"].startswith("-"):
            raise UsageError(f"not a board address: {text!r}", hint="write [USER@]HOST[:PORT], e.g. pi@raspberrypi.local:22")
        port = int(match["port"]) if match["port"] else None
        if port is not None and not 0 < port < 65536:
            raise UsageError(f"{text!r}: port must be 1-65535")
        return cls(text.strip(), match["host"].strip("[]"), match["user"], port)


def read_hosts_file(path: Path) -> list[str]:
    """One board address per line; blank lines and ``#`` comments skipped."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read the hosts file {path}: {getattr(exc, 'strerror', None) or exc}") from None
    hosts = [line.split("#", 1)[0].strip() for line in lines]
    return [h for h in hosts if h]


def board_addresses(ssh: list[str] | None, ssh_file: Path | None) -> list[str]:
    """``--ssh`` values, then ``--ssh-file``'s lines."""
    return [*(ssh or []), *(read_hosts_file(ssh_file) if ssh_file is not None else [])]


# what ssh prints (its last lines of stderr) -> our one line and hint; exit code 2 for these
KNOWN_FAILURES: tuple[tuple[str, str, str], ...] = (
    ("REMOTE HOST IDENTIFICATION HAS CHANGED", "the board's host key has changed since you last connected",
     "if the board was re-installed, remove the old key with `ssh-keygen -R HOST` and connect once with `ssh` to check "
     "and accept the new one"),
    ("Host key verification failed", "the board's host key is not known to this machine",
     "connect once with `{ssh}` and accept the key after checking its fingerprint "
     "(bench never turns host key checking off)"),
    ("Permission denied", "the board refused authentication",
     "bench uses keys only (no password prompts): load your key into ssh-agent or set IdentityFile for the host in "
     "~/.ssh/config, and check that `{ssh} true` works"),
    ("Could not resolve hostname", "the board's host name does not resolve", "check the name, or use its IP address"),
    ("Connection refused", "the board refused the connection", "is sshd running there, and on that port?"),
    ("Connection timed out", "the board did not answer", "is it powered and on this network?"),
    ("No route to host", "the board is unreachable", "is it powered and on this network?"),
    ("Network is unreachable", "the board is unreachable", "check this machine's network"),
    ("python3: not found", "the board has no python3", "install Python 3.11 or newer there (e.g. apt-get install python3 python3-venv)"),
    ("python3: command not found", "the board has no python3", "install Python 3.11 or newer there (e.g. apt-get install python3 python3-venv)"),
)


class BoardError(DeviceError):
    """A board's failure; ``usage`` when it is the user's to fix before the run (exit 2)."""

    def __init__(self, message: str, hint: str | None = None, usage: bool = False) -> None:
        super().__init__(message, hint=hint)
        self.usage = usage


def ssh_executable() -> str:
    exe = shutil.which("ssh")
    if not exe:
        raise UsageError("no ssh client on PATH", hint="install OpenSSH's client (Debian: apt-get install openssh-client)")
    return exe


def agent_source() -> bytes:
    return files("cephalon_edge.tune.bench").joinpath("board_agent.py").read_bytes()


def agent_boot(script: bytes) -> str:
    return AGENT_BOOT.format(sha256=hashlib.sha256(script).hexdigest())


class Board:
    """One board: each ``call`` is one ssh connection running one agent operation."""

    def __init__(self, address: BoardAddress, config: Path | None = None, timeout: float = 3600) -> None:
        self.address, self.config, self.timeout = address, config, timeout
        self.exe = ssh_executable()
        self.process: subprocess.Popen[bytes] | None = None  # the live connection (Ctrl-C kills it)
        self.script = agent_source()

    @property
    def name(self) -> str:
        return self.address.text

    def command(self) -> list[str]:
        a = self.address
        return [self.exe, "-o", "BatchMode=yes", "-o", f"ConnectTimeout={CONNECT_TIMEOUT_S}",
                "-o", "ServerAliveInterval=15", "-o", "ServerAliveCountMax=4",
                *(["-F", str(self.config)] if self.config else []), *(["-p", str(a.port)] if a.port else []),
                *(["-l", a.user] if a.user else []), "-T", "--", a.host, agent_boot(self.script)]

    def call(self, operation: str, args: dict[str, Any] | None = None, payload: Iterable[bytes] = (),
             on_event: Callable[[dict[str, Any]], None] | None = None, step: str | None = None) -> Any:
        """Run ``operation`` on the board; events go to ``on_event``. ``payload`` chunks are written
        one at a time, each after the agent acknowledged the one before (``put``)."""
        step = step or operation
        script = self.script
        try:
            cmd = self.command()
            proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, start_new_session=True)
        except OSError as exc:
            raise BoardError(f"{self.name}: cannot start ssh: {exc.strerror or exc}") from None
        self.process = proc
        assert proc.stdin is not None and proc.stdout is not None
        result: Any = None
        error: dict[str, Any] | None = None
        try:
            proc.stdin.write(b"%d\n" % len(script) + script + json.dumps({"operation": operation, **(args or {})}).encode() + b"\n")
            proc.stdin.flush()
            chunks = iter(payload)
            first = next(chunks, None)
            if first is not None:
                proc.stdin.write(first)
                proc.stdin.flush()
            for message in _messages(proc.stdout):
                if "result" in message:
                    result = message["result"]
                    break
                if "error" in message:
                    error = message
                    break
                if on_event:
                    on_event(message)
                if message.get("event") == "stored":
                    chunk = next(chunks, None)
                    if chunk is not None:
                        proc.stdin.write(chunk)
                        proc.stdin.flush()
        except (BrokenPipeError, ConnectionResetError):
            pass  # the connection is gone: ssh's own message says why
        finally:
            self.process = None
            try:
                proc.stdin.close()
            except BrokenPipeError:
                pass
            proc.stdin = None  # closed: communicate only drains stdout and stderr
            try:
                _, err_bytes = proc.communicate(timeout=self.timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                _, err_bytes = proc.communicate()
        if error is not None:
            raise BoardError(f"{self.name}: {error['error']}", usage=error.get("kind") in ("python", "usage", "refused"))
        if result is None:
            raise self.explain(err_bytes.decode("utf-8", "replace"), proc.returncode, step)
        return result

    def explain(self, stderr: str, code: int | None, step: str) -> BoardError:
        """ssh's failure as one line: known causes get a hint and exit 2; a connection lost
        after the board answered is the run's failure (exit 1)."""
        a = self.address
        ssh = " ".join(["ssh", *(["-p", str(a.port)] if a.port else []), f"{a.user}@{a.host}" if a.user else a.host])
        for needle, message, hint in KNOWN_FAILURES:
            if needle in stderr:
                return BoardError(f"{self.name}: {message}", hint=hint.format(ssh=ssh), usage=True)
        last = [line.strip() for line in stderr.strip().splitlines() if line.strip()]
        why = last[-1][:300] if last else f"ssh exited with {code}"
        if code is not None and code < 0:
            why = "ssh was stopped"
        if step == "connect":  # nothing ran yet: the board's setup is the user's to fix
            return BoardError(f"{self.name}: the board did not run the agent ({why})", usage=True,
                              hint=f"check that `{ssh} python3 --version` works")
        return BoardError(f"{self.name}: connection lost during {step} ({why})")

    def kill(self) -> None:
        proc = self.process
        if proc is not None and proc.poll() is None:
            proc.kill()


def _messages(stream: IO[bytes]) -> Iterable[dict[str, Any]]:
    """The agent's JSON lines; anything else on stdout (a login banner from a shell rc file)
    is skipped."""
    for line in stream:
        try:
            message = json.loads(line)
        except ValueError:
            continue
        if isinstance(message, dict):
            yield message
