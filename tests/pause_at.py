"""Run the cephalon-edge CLI and stop it for good at a named point of its own progress.

Kill tests use it instead of sleeping: the test waits for MARKER to appear (the program has
reached POINT and is parked there), then kills it. Nothing depends on how fast the machine is.

usage: python pause_at.py MARKER POINT CLI-ARGS...

POINT is one of
  call:MODULE:ATTR[:N]   on the N-th call (default 1) of MODULE.ATTR, before it runs
  replace:NAME           before ``os.replace`` moves a file onto a path named NAME
  replaced:NAME          right after it did
"""

from __future__ import annotations

import functools
import importlib
import os
import sys
import threading
from pathlib import Path


def park(marker: Path) -> None:
    """Say where we are, then wait for good: no timeout, only a signal ends the wait."""
    marker.write_text(str(os.getpid()))
    threading.Event().wait()


def install(point: str, marker: Path) -> None:
    kind, _, rest = point.partition(":")
    if kind == "call":
        module_name, attr, *nth = rest.split(":")
        module = importlib.import_module(module_name)
        real, wanted, calls = getattr(module, attr), int(nth[0]) if nth else 1, [0]

        @functools.wraps(real)
        def wrapper(*args, **kwargs):
            calls[0] += 1
            if calls[0] == wanted:
                park(marker)
            return real(*args, **kwargs)

        setattr(module, attr, wrapper)
    elif kind in ("replace", "replaced"):
        real_replace = os.replace

        def replace(src, dst, *args, **kwargs):
            hit = Path(dst).name == rest
            if hit and kind == "replace":
                park(marker)
            result = real_replace(src, dst, *args, **kwargs)
            if hit:
                park(marker)
            return result

        os.replace = replace
    else:
        raise SystemExit(f"pause_at: unknown point {point!r}")


if __name__ == "__main__":
    marker_file, where, *cli_args = sys.argv[1:]
    install(where, Path(marker_file))
    from cephalon_edge.cli import main

    main(cli_args)
