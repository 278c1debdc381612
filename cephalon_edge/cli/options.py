"""Options several commands share, defined once."""

from __future__ import annotations

from typing import Any

import typer


def label_map_option() -> Any:
    return typer.Option(None, "--label-map", help='For an image folder whose class folders are not named after the '
                        'model\'s labels: a JSON object from folder name to label, e.g. {"zero": "0"}.')
