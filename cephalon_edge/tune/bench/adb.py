"""Android devices over the real ``adb`` binary (torch-free).

Commands are argument lists (never a shell string on the host); device paths are confined to
``/data/local/tmp/cephalon-edge/`` and checked. ``ANDROID_SERIAL`` and ``ADB_SERVER_SOCKET``
reach adb through the environment, as adb itself defines them.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from cephalon_edge.errors import DeviceError, UsageError

DEVICE_ROOT = "/data/local/tmp/cephalon-edge"
SAFE = re.compile(r"^[A-Za-z0-9._=:+-]+$")
KNOWN_ABIS = ("arm64-v8a", "armeabi-v7a", "armeabi", "x86_64", "x86", "riscv64")
MAX_DEVICES = 256  # lines of `adb devices` considered; more is not a USB hub, it is garbage
PROPS = ("ro.product.model", "ro.product.manufacturer", "ro.soc.model", "ro.board.platform",
         "ro.build.version.release", "ro.build.version.sdk", "ro.product.cpu.abi")


@dataclass
class Device:
    serial: str
    state: str  # device | unauthorized | offline | ...
    props: dict[str, str] = field(default_factory=dict)

    @property
    def ready(self) -> bool:
        return self.state == "device"


def device_path(name: str) -> str:
    """``/data/local/tmp/cephalon-edge/<name>`` for a plain file name; anything else is refused."""
    if not SAFE.match(name) or name in (".", ".."):
        raise UsageError(f"refusing device file name {name!r}")
    return f"{DEVICE_ROOT}/{name}"


def safe_arg(arg: str) -> str:
    if not SAFE.match(arg.split("=", 1)[-1].replace("/", "")):
        raise UsageError(f"refusing device argument {arg!r}")
    return arg


class Adb:
    def __init__(self, executable: str | None = None, timeout: float = 600) -> None:
        self.exe = executable or shutil.which("adb")
        if not self.exe:
            raise UsageError("adb not found on PATH",
                             hint="install it (Debian: apt-get install adb; or Android SDK platform-tools)")
        self.timeout = timeout

    def _run(self, args: list[str], serial: str | None = None, step: str = "") -> str:
        cmd = [self.exe, *(["-s", serial] if serial else []), *args]
        try:
            # device output is data: undecodable bytes are replaced, never a traceback
            out = subprocess.run(cmd, capture_output=True, text=True, encoding="utf-8", errors="replace",
                                 timeout=self.timeout)
        except subprocess.TimeoutExpired:
            raise DeviceError(f"{serial or 'adb'}: {step or args[0]} timed out after {self.timeout:.0f} s") from None
        if out.returncode != 0:
            message = (out.stderr.strip() or out.stdout.strip() or f"exit code {out.returncode}").splitlines()[-1]
            raise DeviceError(f"device {serial}: {step or args[0]} failed: {message}" if serial else f"adb {args[0]} failed: {message}")
        return out.stdout

    def devices(self) -> list[Device]:
        """Attached devices: ``adb devices`` prints ``SERIAL<TAB>STATE`` (a serial may hold spaces)."""
        text = self._run(["devices"])
        lines = [line for line in text.splitlines()[1:] if "\t" in line and not line.startswith("*")]
        if len(lines) > MAX_DEVICES:
            raise DeviceError(f"adb listed {len(lines)} devices; at most {MAX_DEVICES} are supported",
                              hint="check `adb devices`: its output does not look like a device list")
        found = []
        for line in lines:
            serial, _, state = line.partition("\t")
            if serial.strip() and state.split():
                found.append(Device(serial.strip(), state.split()[0]))
        for d in found:
            if d.ready:
                d.props = self.getprops(d.serial)
        return found

    def abi(self, device: Device) -> str:
        """The device's primary ABI, one of ``KNOWN_ABIS`` (it names a host directory)."""
        abi = device.props.get("ro.product.cpu.abi") or "arm64-v8a"
        if abi not in KNOWN_ABIS:
            raise DeviceError(f"device {device.serial} reports an unknown CPU ABI {abi[:60]!r}",
                              hint=f"known ABIs: {', '.join(KNOWN_ABIS)}")
        return abi

    def getprops(self, serial: str) -> dict[str, str]:
        text = self._run(["shell", "getprop"], serial, "getprop")
        props = dict(re.findall(r"^\[([^\]]+)\]:\s*\[([^\]]*)\]", text, re.M))
        return {k: props.get(k, "") for k in PROPS} | {k: v for k, v in props.items() if k.startswith("ro.")}

    def push(self, serial: str, local: Path, name: str) -> str:
        remote = device_path(name)
        self._run(["push", str(local), remote], serial, f"push {name}")
        return remote

    def shell(self, serial: str, args: list[str], step: str) -> str:
        return self._run(["shell", *[safe_arg(a) for a in args]], serial, step)

    def prepare(self, serial: str) -> None:
        self.shell(serial, ["mkdir", "-p", DEVICE_ROOT], "mkdir")

    def cleanup(self, serial: str) -> None:
        self.shell(serial, ["rm", "-rf", DEVICE_ROOT], "cleanup")
