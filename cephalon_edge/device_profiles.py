"""Device profiles: ``profiles/NAME.toml``, installed as package data (torch-free)."""

from __future__ import annotations

import tomllib
from importlib.resources import files
from typing import Any

from .errors import UsageError


def profile_names() -> list[str]:
    return sorted(p.name[:-5] for p in files("cephalon_edge.profiles").iterdir() if p.name.endswith(".toml"))


def load_profile(name: str) -> dict[str, Any]:
    """The profile ``name`` as a dict; unknown names list the known ones."""
    if name not in profile_names():
        raise UsageError(f"unknown profile {name!r}", hint=f"profiles: {', '.join(profile_names())}")
    data = tomllib.loads(files("cephalon_edge.profiles").joinpath(f"{name}.toml").read_text())
    runtime = data.get("runtime", {})
    threads = runtime.get("threads")
    if threads is not None and (not isinstance(threads, int) or threads < 1):
        raise UsageError(f"profile {name}: runtime.threads must be a positive integer, got {threads!r}")
    return data


def profile_threads(name: str | None, default: int | None = None) -> int | None:
    return default if name is None else load_profile(name).get("runtime", {}).get("threads", default)
