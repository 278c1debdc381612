"""`demo`: the whole workflow on the digits-exits zoo model, ending with a summary table."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.rule import Rule
from rich.table import Table

from .checkpoint_cmds import render_inspect
from .render import console, fmt_count, fmt_pct
from .zoo_cmd import build_model


def demo_cmd(
    output: Path = typer.Option(Path("cephalon-demo"), "-o", "--output", help="Directory for the demo's files."),
    epochs: int = typer.Option(30, "--epochs", help="Training epochs for digits-exits."),
) -> None:
    """Build digits-exits and take it through every step that exists."""
    from ..inspection import inspect_checkpoint

    output.mkdir(parents=True, exist_ok=True)
    ckpt = output / "digits-exits.cephalon"
    summary: list[tuple[str, str]] = []

    console.print(Rule("1. zoo build digits-exits"))
    provenance = build_model("digits-exits", ckpt, epochs, seed=0)
    test = provenance["metrics"]["test"]
    summary.append(("final-exit test accuracy", fmt_pct(test["final_accuracy"])))

    console.print(Rule("2. inspect"))
    report = inspect_checkpoint(ckpt)
    render_inspect(report)
    summary.append(("parameters", fmt_count(report["params"])))
    summary.append(("full-path FLOPs", fmt_count(report["exits"][-1]["cumulative_flops"])))

    for step in STEPS:
        summary.extend(step(ckpt, output))

    table = Table(title="demo summary")
    table.add_column("what")
    table.add_column("value", justify="right")
    for row in summary:
        table.add_row(*row)
    console.print(table)


STEPS: list = []  # later steps (export, run, ...) append (ckpt, out_dir) -> [(what, value)]


def register(app: typer.Typer) -> None:
    app.command("demo")(demo_cmd)
