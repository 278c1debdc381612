"""Device profiles: ``profiles/NAME.toml``, installed as package data of
``cephalon_edge.profiles`` and validated against one schema (torch-free).

(The module is not called ``profiles.py``: that name belongs to the package-data package.)
"""

from __future__ import annotations

import tomllib
from importlib.resources import files
from typing import Any

from cephalon_edge.errors import UsageError
from cephalon_edge.targets import COREML_COMPUTE_UNITS, EXECUTORCH_BACKENDS, QUANTIZATION_MODES, TARGETS

OS = ("linux", "android", "ios", "macos")
DELEGATES = ("xnnpack", "gpu", "nnapi", "npu", "cpu")
IOS_MATCH_KEYS = ("ios.product_type",)  # from `xcrun devicectl list devices`: hardwareProperties.productType
# Linux boards over SSH: the device-tree model (or DMI product name) and `uname -m`
BOARD_MATCH_KEYS = ("board.model", "board.machine")
HUB_MATCH_KEYS = ("hub.device",)  # a Qualcomm AI Hub device name ("Samsung Galaxy S23 (Family)")
DEPRECATED = {"nnapi": "NNAPI is deprecated from Android 15; prefer the GPU delegate or a vendor accelerator"}

# every registered target may have a section of its own
TOP = {"name": str, "description": str, "os": str, "abi": str, "target": str, "quantization": str,
       "runtime": dict, "match": dict, "estimate": dict, **{name: dict for name in TARGETS}}
REQUIRED = ("name", "description", "os", "abi", "target", "quantization", "runtime")


class ProfileError(UsageError):
    """A profile file breaks the schema; the message names the field."""


def profile_names() -> list[str]:
    return sorted(p.name[:-5] for p in files("cephalon_edge.profiles").iterdir() if p.name.endswith(".toml"))


def validate_profile(data: Any, source: str) -> dict[str, Any]:
    """Check one profile against the schema; raise ``ProfileError`` naming the first bad field."""
    def bad(field: str, why: str) -> ProfileError:
        return ProfileError(f"profile {source}: {field}: {why}")

    if not isinstance(data, dict):
        raise bad("(top)", "expected a table")
    for key in data:
        if key not in TOP:
            raise bad(key, f"unknown field (known: {', '.join(TOP)})")
    for key in REQUIRED:
        if key not in data:
            raise bad(key, "required field is missing")
    for key, kind in TOP.items():
        if key in data and not isinstance(data[key], kind):
            raise bad(key, f"must be a {'table' if kind is dict else 'string'}")
    for key, allowed in (("os", OS), ("target", tuple(TARGETS)), ("quantization", QUANTIZATION_MODES)):
        if data[key] not in allowed:
            raise bad(key, f"must be one of {', '.join(allowed)}, got {data[key]!r}")
    runtime = data["runtime"]
    if runtime.get("delegate") not in DELEGATES:
        raise bad("runtime.delegate", f"must be one of {', '.join(DELEGATES)}, got {runtime.get('delegate')!r}")
    if "fallback" in runtime and runtime["fallback"] not in DELEGATES:
        raise bad("runtime.fallback", f"must be one of {', '.join(DELEGATES)}")
    threads = runtime.get("threads", 1)
    if not isinstance(threads, int) or isinstance(threads, bool) or threads < 1:
        raise bad("runtime.threads", f"must be a positive integer, got {threads!r}")
    if not isinstance(runtime.get("spinning", False), bool):
        raise bad("runtime.spinning", "must be true or false")
    unknown = set(runtime) - {"delegate", "threads", "fallback", "spinning"}
    if unknown:
        raise bad(f"runtime.{sorted(unknown)[0]}", "unknown field")
    coreml = data.get("coreml", {})
    if "compute_units" in coreml and coreml["compute_units"] not in COREML_COMPUTE_UNITS:
        raise bad("coreml.compute_units", f"must be one of {', '.join(COREML_COMPUTE_UNITS)}")
    if "deployment_target" in coreml and not isinstance(coreml["deployment_target"], str):
        raise bad("coreml.deployment_target", "must be a string such as iOS17")
    tflite = data.get("tflite", {})
    if set(tflite) - {"per_segment_files"} or not isinstance(tflite.get("per_segment_files", False), bool):
        raise bad("tflite", "the only field is per_segment_files = true|false")
    executorch = data.get("executorch", {})
    if set(executorch) - {"backend"} or executorch.get("backend", "xnnpack") not in EXECUTORCH_BACKENDS:
        raise bad("executorch", f"the only field is backend = {' | '.join(map(repr, EXECUTORCH_BACKENDS))}")
    for key, value in data.get("match", {}).items():
        if not isinstance(value, str) or not (key.startswith("ro.") or key in IOS_MATCH_KEYS + BOARD_MATCH_KEYS + HUB_MATCH_KEYS):
            raise bad(f"match.{key}", "match rules are getprop keys (ro.*, Android), ios.product_type "
                                      "(iOS model identifiers such as iPhone16,1) or board.model / board.machine "
                                      "(a Linux board's device-tree model and uname -m) or hub.device (a Qualcomm "
                                      "AI Hub device name) with string values")
    for key, value in data.get("estimate", {}).items():
        if key not in ("peak_gflops", "memory_gbps") or not isinstance(value, (int, float)) or value <= 0:
            raise bad(f"estimate.{key}", "estimates are positive peak_gflops / memory_gbps figures")
    return data


def load_profile(name: str) -> dict[str, Any]:
    """The profile ``name``, validated; unknown names list the known ones."""
    if name not in profile_names():
        raise UsageError(f"unknown profile {name!r}", hint=f"profiles: {', '.join(profile_names())}")
    text = files("cephalon_edge.profiles").joinpath(f"{name}.toml").read_text()
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ProfileError(f"profile {name}: not valid TOML ({exc})") from None
    validate_profile(data, name)
    if data["name"] != name:
        raise ProfileError(f"profile {name}: name: must match the file name, got {data['name']!r}")
    return data


def profile_threads(name: str | None, default: int | None = None) -> int | None:
    return default if name is None else load_profile(name)["runtime"].get("threads", default)


# ONNX Runtime's intra-op workers spin between calls unless told not to. A routed package makes
# many short calls into several sessions; measured here (BENCHMARKS.md, "spinning"), spinning
# between calls gains little idle and loses much when another process holds a core, so by
# default workers spin only while a run lasts and stop when it returns; a profile's
# `spinning = true` keeps them spinning between runs.
DEFAULT_SPINNING = False


def profile_spinning(name: str | None) -> bool:
    return DEFAULT_SPINNING if name is None else load_profile(name)["runtime"].get("spinning", DEFAULT_SPINNING)


def _namespace(key: str) -> str:
    return key.split(".", 1)[0]


def matches(profile: dict[str, Any], props: dict[str, str]) -> bool:
    """A profile matches a device when every ``match`` rule of the device's kind (``ro.*`` for
    Android, ``ios.*``, ``board.*``, ``hub.*``) is a substring of its property; rules of other
    kinds let one profile match the same phone over adb and on AI Hub."""
    kinds = {_namespace(k) for k in props}
    rules = {k: v for k, v in profile.get("match", {}).items() if _namespace(k) in kinds}
    return bool(rules) and all(value.lower() in props.get(key, "").lower() for key, value in rules.items())


def match_device(props: dict[str, str]) -> str | None:
    """The first profile whose rules match, else a generic one for the device's ABI."""
    for name in profile_names():
        if matches(load_profile(name), props):
            return name
    if props.get("ro.product.cpu.abi", "").startswith("arm64"):
        return "android-arm64-cpu"
    return None


def match_board(model: str | None, machine: str | None) -> str:
    """A Linux board's profile: the first whose ``board.*`` rules match, else a generic one
    for its CPU (``linux-aarch64``), else ``host-cpu``."""
    props = {"board.model": model or "", "board.machine": machine or ""}
    for name in profile_names():
        profile = load_profile(name)
        if profile["os"] == "linux" and matches(profile, props):
            return name
    return "linux-aarch64" if machine in ("aarch64", "arm64") else "host-cpu"
