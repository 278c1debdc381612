"""`train` a Cephalon model from a spec on one's own data, and `spec init` a spec to start from."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer
from rich.markup import escape

from cephalon_edge.cli.options import label_map_option
from cephalon_edge.cli.render import console, progress, write_report

spec_app = typer.Typer(help="Architecture specs.", no_args_is_help=True)


def train_cmd(
    spec: Path = typer.Argument(..., help="The architecture spec (JSON); `spec init --like NAME` writes one to edit."),
    data: str = typer.Option(..., "--data", help="Training data: a built-in name (digits, mnist1d, multimodal, mnist), "
                             "a .npz or an image folder (split 60/20/20 train/val/test by a fixed seed)."),
    output: Path = typer.Option(..., "-o", "--output", help="The .cephalon checkpoint to write (the best epoch)."),
    epochs: int = typer.Option(30, "--epochs", help="Most epochs to train."),
    lr: float = typer.Option(3e-3, "--lr", help="Peak learning rate (one-cycle schedule, AdamW)."),
    batch_size: int = typer.Option(64, "--batch-size", help="Samples per step."),
    seed: int = typer.Option(0, "--seed", help="Seed for weights and data order."),
    patience: int = typer.Option(8, "--patience", help="Stop after this many epochs without a better validation score."),
    shift: int = typer.Option(2, "--shift", help="Random translation augmentation in pixels/steps (0: none)."),
    val_data: Optional[str] = typer.Option(None, "--val-data", help="Validation data (default: 20% of --data, or its val split)."),
    label_map: Optional[Path] = label_map_option(),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing output file."),
    json_file: Optional[Path] = typer.Option(None, "--json", help="Write the report (per-epoch history) as JSON."),
) -> None:
    """Train a Cephalon model (exits, gates, experts, adapters) from a spec on your data."""
    from cephalon_edge.toolchain.checkpoint import save
    from cephalon_edge.toolchain.fit import FitSpec, train_from_spec, validate
    from cephalon_edge.toolchain.state_import import load_spec
    from cephalon_edge.toolchain.train import TrainSpec
    from cephalon_edge.errors import UsageError

    fit_spec = FitSpec(data=data, train=TrainSpec(epochs=epochs, lr=lr, batch_size=batch_size, seed=seed, shift=shift),
                       patience=patience, val_data=val_data, label_map=label_map)
    validate(fit_spec)
    if output.exists() and not force:
        raise UsageError(f"{output} exists", hint="pass --force to overwrite it, or write elsewhere with -o")
    model = load_spec(spec)
    with progress(f"training {model.name}", epochs) as advance:
        def on_epoch(e: dict[str, Any]) -> None:
            acc = " ".join(f"{k} {100 * v:.1f}" for k, v in e["val_exit_accuracy"].items())
            advance(f"training {model.name}: loss {e['loss']:.3f}, val {acc}")
        net, provenance = train_from_spec(model, fit_spec, on_epoch)
    save(net, output, provenance)
    render_training(provenance)
    console.print(f"wrote [bold]{escape(str(output))}[/] (epoch {provenance['best_epoch']} of {provenance['epochs']})")
    write_report(json_file, {"schema": "cephalon-edge/train/1", "spec": str(spec), "output": str(output), **provenance})


def render_training(provenance: dict[str, Any]) -> None:
    from cephalon_edge.cli.zoo_cmd import render_zoo_build

    t = provenance["training"]
    if t["stopped_early"]:
        console.print(f"stopped early after epoch {t['epochs_run']}: no better validation score since epoch {t['best_epoch']}")
    render_zoo_build(provenance.get("zoo") or "trained", provenance)


@spec_app.command("init")
def spec_init_cmd(
    like: str = typer.Option(..., "--like", help="The zoo model whose spec to start from (see `zoo list`)."),
    output: Path = typer.Option(..., "-o", "--output", help="The spec JSON to write."),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing file."),
) -> None:
    """Write an editable spec (modalities, stages, exits, gates, experts, tasks) to start from."""
    from cephalon_edge.toolchain.zoo import get
    from cephalon_edge.errors import UsageError
    from cephalon_edge.fsutil import write_json_atomic

    if output.exists() and not force:
        raise UsageError(f"{output} exists", hint="pass --force to overwrite it")
    spec = get(like).build_spec()
    write_json_atomic(output, spec.to_dict())
    console.print(f"wrote [bold]{escape(str(output))}[/]: the spec of {escape(like)}; edit it, then "
                  f"`cephalon-edge train {escape(str(output))} --data DATASET -o MODEL.cephalon`")


def register(app: typer.Typer) -> None:
    app.command("train")(train_cmd)
    app.add_typer(spec_app, name="spec")
