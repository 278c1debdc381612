"""`train` a Cephalon model from a spec (or retrofit the exits of a checkpoint) on one's own data."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer

from cephalon_edge.cli.options import label_map_option
from cephalon_edge.cli.render import console, escape, fmt_count, progress, write_report


def train_cmd(
    source: Path = typer.Argument(..., metavar="SPEC.json|CHECKPOINT", help="The architecture spec (JSON; `spec init --like "
                                  "NAME` or `spec from LIB:MODEL` writes one), or a .cephalon checkpoint to train on from its weights."),
    data: str = typer.Option(..., "--data", help="Training data: a built-in name (digits, mnist1d, multimodal, mnist), "
                             "a .npz or an image folder (split 60/20/20 train/val/test by a fixed seed)."),
    output: Path = typer.Option(..., "-o", "--output", help="The .cephalon checkpoint to write (the best epoch)."),
    epochs: int = typer.Option(30, "--epochs", help="Most epochs to train."),
    lr: float = typer.Option(3e-3, "--lr", help="Peak learning rate (one-cycle schedule, AdamW)."),
    batch_size: int = typer.Option(64, "--batch-size", help="Samples per step."),
    seed: int = typer.Option(0, "--seed", help="Seed for weights and data order."),
    patience: int = typer.Option(8, "--patience", help="Stop after this many epochs without a better validation score."),
    shift: int = typer.Option(2, "--shift", help="Random translation augmentation in pixels/steps (0: none)."),
    freeze: str = typer.Option("", "--freeze", help="Parts of a checkpoint that keep their weights, comma-separated: "
                               "backbone (adapters, plain blocks, task heads), gates, experts, exits. "
                               "--freeze backbone trains the exit heads alone (soft targets from the final head)."),
    val_data: Optional[str] = typer.Option(None, "--val-data", help="Validation data (default: 20% of --data, or its val split)."),
    label_map: Optional[Path] = label_map_option(),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing output file."),
    json_file: Optional[Path] = typer.Option(None, "--json", help="Write the report (per-epoch history) as JSON."),
) -> None:
    """Train a Cephalon model (exits, gates, experts, adapters) from a spec on your data."""
    from cephalon_edge.toolchain.checkpoint import load_with_metadata, save
    from cephalon_edge.toolchain.fit import FitSpec, parse_freeze, train_from_spec, validate
    from cephalon_edge.toolchain.state_import import load_spec
    from cephalon_edge.toolchain.train import TrainSpec
    from cephalon_edge.errors import UsageError

    fit_spec = FitSpec(data=data, train=TrainSpec(epochs=epochs, lr=lr, batch_size=batch_size, seed=seed, shift=shift,
                                                  freeze=parse_freeze(freeze)),
                       patience=patience, val_data=val_data, label_map=label_map)
    validate(fit_spec)
    if output.exists() and not force:
        raise UsageError(f"{output} exists", hint="pass --force to overwrite it, or write elsewhere with -o")
    start, earlier = load_with_metadata(source) if source.suffix.lower() != ".json" else (None, {})
    model = start.spec if start is not None else load_spec(source)
    with progress(f"training {model.name}", epochs) as advance:
        def on_epoch(e: dict[str, Any]) -> None:
            acc = " ".join(f"{k} {100 * v:.1f}" for k, v in e["val_exit_accuracy"].items())
            advance(f"training {model.name}: loss {e['loss']:.3f}, val {acc}")
        net, provenance = train_from_spec(model, fit_spec, on_epoch, start)
    if start is not None:  # where the weights came from: an import keeps its preset and source
        provenance["started_from"] = {"checkpoint": str(source), **{k: earlier["provenance"][k] for k in
                                      ("creator", "source", "preset") if k in earlier.get("provenance", {})}}
    save(net, output, provenance)
    render_training(provenance)
    if provenance["frozen"]:
        console.print(f"trained {fmt_count(provenance['trained_params'])} of {fmt_count(provenance['params'])} parameters "
                      f"({escape(', '.join(provenance['frozen']))} frozen, bit for bit)")
    console.print(f"wrote [bold]{escape(str(output))}[/] (epoch {provenance['best_epoch']} of {provenance['epochs']})")
    write_report(json_file, {"schema": "cephalon-edge/train/1", "spec": str(source), "output": str(output), **provenance})


def render_training(provenance: dict[str, Any]) -> None:
    from cephalon_edge.cli.zoo_cmd import render_zoo_build

    t = provenance["training"]
    if t["stopped_early"]:
        console.print(f"stopped early after epoch {t['epochs_run']}: no better validation score since epoch {t['best_epoch']}")
    render_zoo_build(provenance.get("zoo") or "trained", provenance)


def register(app: typer.Typer) -> None:
    app.command("train")(train_cmd)
