"""`zoo list` and `zoo build`: reference models trained from data that ships with packages."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from cephalon_edge.cli.render import console, err_console, escape, fmt_pct, progress

app = typer.Typer(help="Reference Cephalon models.", no_args_is_help=True)


@app.command("list")
def list_cmd() -> None:
    """List the zoo models."""
    from cephalon_edge.toolchain.zoo import ZOO

    table = Table(title="cephalon-edge zoo")
    for col in ("name", "dataset", "epochs", "description"):
        table.add_column(col)
    for e in ZOO.values():
        table.add_row(e.name, e.dataset or "untrained", str(e.train.epochs) if e.dataset else "-", e.description)
    console.print(table)


@app.command("build")
def build_cmd(
    name: str = typer.Argument(..., help="Zoo model name (see `zoo list`)."),
    output: Path = typer.Option(..., "-o", "--output", help="The .cephalon checkpoint to write."),
    epochs: Optional[int] = typer.Option(None, "--epochs", help="Training epochs (default: the model's own)."),
    seed: int = typer.Option(0, "--seed", help="Seed for weights and data order."),
) -> None:
    """Build (and train) a zoo model into a .cephalon checkpoint."""
    from cephalon_edge.toolchain.zoo import build_checkpoint, training_epochs

    with progress(f"training {name}", training_epochs(name, epochs)) as advance:
        provenance = build_checkpoint(name, output, epochs, seed,
                                      on_epoch=lambda epoch, loss: advance(f"training {name} (loss {loss:.3f})"))
    render_zoo_build(name, provenance)
    console.print(f"wrote [bold]{escape(str(output))}[/]")


def render_zoo_build(name: str, provenance: dict) -> None:
    metrics = provenance.get("metrics", {}).get("test")
    by_mix = provenance.get("metrics", {}).get("test_by_modality") or {"": metrics}
    if metrics:
        table = Table(title=f"{name}: accuracy per exit on {metrics['dataset']} ({metrics['samples']} samples)")
        table.add_column("exit")
        for mix in by_mix:
            table.add_column(f"{mix} only" if mix and "+" not in mix else mix or "accuracy", justify="right")
        for exit_name in metrics["exit_accuracy"]:
            table.add_row(exit_name, *(fmt_pct(m["exit_accuracy"][exit_name]) for m in by_mix.values()))
        console.print(table)
    else:
        err_console.print(f"{name}: {provenance.get('note', '')}")
