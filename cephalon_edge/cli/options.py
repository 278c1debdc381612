"""Options several commands share, defined once."""

from __future__ import annotations

from typing import Any

import typer


def label_map_option() -> Any:
    return typer.Option(None, "--label-map", help='For an image folder whose class folders are not named after the '
                        'model\'s labels: a JSON object from folder name to label, e.g. {"zero": "0"}.')


def parse_shape(text: str, flag: str) -> tuple[int, ...]:
    """``3x224x224`` -> (3, 224, 224), or a one-line error naming ``flag``."""
    from cephalon_edge.errors import UsageError

    try:
        shape = tuple(int(d) for d in text.lower().split("x"))
    except ValueError:
        shape = ()
    if len(shape) != 3 or min(shape) < 1:
        raise UsageError(f"{flag} {text!r}: expected CHANNELSxHEIGHTxWIDTH, e.g. 3x224x224")
    return shape
