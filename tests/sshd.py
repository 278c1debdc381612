"""A real OpenSSH server on 127.0.0.1 for the board tests: Debian's ``sshd`` as a foreground
process with a throwaway host key and ``authorized_keys`` (no system service, no PAM). The
"board" is this machine through it; its cache (device half, store, runs) lives in ``cache``,
which the server hands to every session (``SetEnv CEPHALON_EDGE_CACHE``)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

SSHD = "/usr/sbin/sshd"
DEADLINE_S = 60


def why_not() -> str | None:
    if not Path(SSHD).is_file():
        return "Debian's openssh-server is not installed (./dev installs it where apt is available)"
    if not shutil.which("ssh") or not shutil.which("ssh-keygen"):
        return "no OpenSSH client here"
    if os.geteuid() != 0:
        return "sshd's privilege separation needs root here"
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def keygen(path: Path) -> str:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True, capture_output=True)
    return (path.with_suffix(".pub") if path.suffix else Path(f"{path}.pub")).read_text().strip()


class SshServer:
    def __init__(self, root: Path, cache: Path, client_key: str, force_command: str | None = None) -> None:
        self.root, self.cache = root, cache
        root.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.host_key = keygen(root / "host_ed25519")
        (root / "authorized_keys").write_text(client_key + "\n")
        (root / "sshd_config").write_text(
            f"Port {self.port}\nListenAddress 127.0.0.1\nHostKey {root / 'host_ed25519'}\n"
            f"AuthorizedKeysFile {root / 'authorized_keys'}\nPasswordAuthentication no\n"
            "KbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\nPermitRootLogin prohibit-password\n"
            f"PidFile {root / 'sshd.pid'}\nSetEnv CEPHALON_EDGE_CACHE={cache}\n"
            + (f"ForceCommand {force_command}\n" if force_command else ""))
        self.process: subprocess.Popen | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def known_hosts_line(self) -> str:
        return f"[127.0.0.1]:{self.port} {' '.join(self.host_key.split()[:2])}"

    def start(self) -> "SshServer":
        Path("/run/sshd").mkdir(exist_ok=True)
        self.process = subprocess.Popen([SSHD, "-D", "-f", str(self.root / "sshd_config"), "-E", str(self.root / "log")],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + DEADLINE_S
        while True:  # until it accepts connections
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return self
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"sshd did not start: {(self.root / 'log').read_text()[-2000:]}")
                time.sleep(0.05)

    def sessions(self) -> list[int]:
        """The per-connection sshd processes (children of the listener)."""
        assert self.process is not None
        out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(self.process.pid)], capture_output=True, text=True)
        return [int(p) for p in out.stdout.split()]

    def drop_sessions(self) -> None:
        """Kill every open connection from the server side (the listener keeps running)."""
        for pid in self.sessions():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def stop(self) -> None:
        """The board disappears: the listener and every connection."""
        if self.process is not None and self.process.poll() is None:
            self.drop_sessions()
            self.process.kill()
            self.process.wait()


def client_config(path: Path, identity: Path, known_hosts: list[str]) -> Path:
    """An ssh_config for the tests' client: this identity, these known hosts, checking on."""
    (path.parent / f"{path.name}.known_hosts").write_text("".join(line + "\n" for line in known_hosts))
    path.write_text(f"Host *\n  IdentityFile {identity}\n  IdentitiesOnly yes\n  IdentityAgent none\n"
                    f"  UserKnownHostsFile {path.parent / f'{path.name}.known_hosts'}\n  GlobalKnownHostsFile /dev/null\n"
                    "  StrictHostKeyChecking yes\n  LogLevel ERROR\n")
    return path
