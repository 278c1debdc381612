"""Rich rendering shared by the commands: consoles, tables, progress, JSON reports."""

from __future__ import annotations

import re
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from rich.console import Console
from rich.markup import escape as escape_markup
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
)
from rich.text import Text

from cephalon_edge.formatting import fmt_count, fmt_pct  # noqa: F401  (re-exported for the commands)

console = Console()
err_console = Console(stderr=True)

# C0 and C1 control characters (ESC, OSC, BEL...) but tab and newline: shown as \xNN, never
# sent to the terminal (an OSC-8 sequence in a path would print a clickable link)
CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def plain(text: str) -> str:
    """``text`` with every control character shown as its ``\\xNN`` escape."""
    return CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


def escape(text: str) -> str:
    """User, device or package text for a rich markup string: controls shown, markup escaped."""
    return escape_markup(plain(text))


def write_report(path: Path | None, report: dict[str, Any]) -> None:
    """Write a command's JSON report atomically, when ``--json FILE`` was given."""
    if path is None:
        return
    from cephalon_edge.fsutil import write_json_atomic

    write_json_atomic(Path(path), report)
    err_console.print(f"report written to {escape(str(path))}", highlight=False)


@contextmanager
def progress(description: str, total: int | None) -> Iterator[Any]:
    """A progress bar on stderr; yields ``advance(description=None)``."""
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=err_console, transient=False,
                  disable=not err_console.is_terminal) as bar:
        task = bar.add_task(escape(description), total=total)

        def advance(text: str | None = None) -> None:
            bar.update(task, advance=1, **({"description": escape(text)} if text else {}))

        yield advance


def error_lines(message: str, hint: str | None = None) -> list[Text]:
    """``error: …`` and ``hint: …`` as rich Text: the message is data (paths, serials, device
    output), shown exactly as it is, never read as markup."""
    lines = [Text.assemble(("error:", "bold red"), " ", plain(message))]
    if hint:
        lines.append(Text.assemble(("hint:", "yellow"), " ", plain(hint)))
    return lines


def render_usage(usage: dict[str, Any] | None) -> None:
    """Gate fire rates and expert shares (``device.usage.routing_usage``), when the model has any."""
    if not usage or not (usage["gates"] or usage["experts"]):
        return
    from rich.table import Table

    table = Table(title="routing decisions (of the samples reaching each)")
    for col in ("decision", "reached", "use"):
        table.add_column(col, justify="left" if col != "reached" else "right")
    for block, g in usage["gates"].items():
        table.add_row(f"gate of {escape(block)}", fmt_pct(g["reached"]),
                      "-" if g["fire_rate"] is None else f"block ran {fmt_pct(g['fire_rate'])}")
    for gate, m in usage["experts"].items():
        shares = ", ".join(f"{escape(e.rsplit('.', 1)[-1])} {fmt_pct(s)}" for e, s in m["shares"].items() if s is not None)
        table.add_row(escape(gate), fmt_pct(m["reached"]), shares or "-")
    console.print(table)
