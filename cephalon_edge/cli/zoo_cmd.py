"""`zoo list` and `zoo build`: reference models trained from data that ships with packages."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from .render import console, err_console, fmt_pct, progress

app = typer.Typer(help="Reference Cephalon models.", no_args_is_help=True)


@app.command("list")
def list_cmd() -> None:
    """List the zoo models."""
    from ..zoo import ZOO

    table = Table(title="cephalon-edge zoo")
    for col in ("name", "dataset", "epochs", "description"):
        table.add_column(col)
    for e in ZOO.values():
        table.add_row(e.name, e.dataset or "untrained", str(e.train.epochs) if e.dataset else "-", e.description)
    console.print(table)


def build_model(name: str, output: Path, epochs: Optional[int], seed: int) -> dict:
    """Build, train and save a zoo model with a progress bar; returns its provenance."""
    from ..checkpoint import save
    from ..zoo import build, get

    entry = get(name)
    total = entry.train.epochs if epochs is None else epochs
    with progress(f"training {name}", total if entry.dataset else 0) as advance:
        net, provenance = build(name, epochs=epochs, seed=seed,
                                on_epoch=lambda epoch, loss: advance(f"training {name} (loss {loss:.3f})"))
    save(net, output, provenance)
    return provenance


@app.command("build")
def build_cmd(
    name: str = typer.Argument(..., help="Zoo model name (see `zoo list`)."),
    output: Path = typer.Option(..., "-o", "--output", help="The .cephalon checkpoint to write."),
    epochs: Optional[int] = typer.Option(None, "--epochs", help="Training epochs (default: the model's own)."),
    seed: int = typer.Option(0, "--seed", help="Seed for weights and data order."),
) -> None:
    """Build (and train) a zoo model into a .cephalon checkpoint."""
    provenance = build_model(name, output, epochs, seed)
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
    console.print(f"wrote [bold]{output}[/]")
