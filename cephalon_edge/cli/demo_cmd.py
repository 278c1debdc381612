"""`demo`: the whole workflow (``cephalon_edge.demo``), rendered step by step."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer
from rich.rule import Rule
from rich.table import Table

from cephalon_edge.cli.bench_cmd import render_bench
from cephalon_edge.cli.calibrate_cmd import render_calibrate
from cephalon_edge.cli.checkpoint_cmds import render_inspect
from cephalon_edge.cli.compress_cmd import render_compress, render_plan
from cephalon_edge.cli.export_cmd import render_coverage, render_export
from cephalon_edge.cli.render import console, escape, fmt_pct, progress
from cephalon_edge.cli.run_cmd import render_run


def render_evaluate(report: dict[str, Any]) -> None:
    rates = ", ".join(f"{k} {100 * v:.0f}%" for k, v in report["exit_rates"].items())
    console.print(f"uncalibrated thresholds: accuracy {fmt_pct(report['accuracy'])}, exits: {rates}")


class RichView:
    """Shows the demo's steps with the commands' own renderers."""

    RENDER = {"plan": render_plan, "compress": render_compress, "inspect": render_inspect,
              "export": lambda r: (render_export(r), render_coverage(r)), "coverage": render_coverage,
              "run": render_run, "evaluate": render_evaluate, "calibrate": render_calibrate, "bench": render_bench}

    def section(self, title: str) -> None:
        console.print(Rule(title))

    progress = staticmethod(progress)

    def show(self, kind: str, report: dict[str, Any]) -> None:
        self.RENDER[kind](report)


def demo_cmd(
    output: Path = typer.Option(Path("cephalon-demo"), "-o", "--output", help="Directory for the demo's files."),
    epochs: Optional[int] = typer.Option(None, "--epochs", help="Training epochs for the model (default: the zoo's own; "
                                         "at most this many for multimodal-digits and for the fine-tuning "
                                         "after pruning, 5 by default): a quick run."),
    model: str = typer.Option("digits-exits", "--model", help="The zoo model taken through the workflow: any "
                              "trained single-input zoo model (see `zoo list`)."),
) -> None:
    """Build digits-exits (or another --model) and take it through every step that exists, then
    route one multimodal-digits sample per modality mix, ending with a summary."""
    from cephalon_edge.demo import run_demo

    summary = run_demo(output, epochs, RichView(), model)
    table = Table(title="demo summary")
    table.add_column("what")
    table.add_column("value", justify="right")
    for row in summary:
        table.add_row(*row)
    console.print(table)
    console.print(f"files in [bold]{escape(str(output))}[/]")


def register(app: typer.Typer) -> None:
    app.command("demo")(demo_cmd)
