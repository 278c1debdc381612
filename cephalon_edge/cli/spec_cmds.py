"""`spec init`, `spec from` and `spec presets`: architecture specs to start from."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from cephalon_edge.cli.render import console, escape

app = typer.Typer(help="Architecture specs.", no_args_is_help=True)


def _exit_points_help() -> str:
    """Each preset's exit boundaries, from the registry (the build half; without it, a pointer)."""
    from cephalon_edge.extras import MissingExtra

    try:
        from cephalon_edge.toolchain.presets import PRESETS
    except (ImportError, MissingExtra):
        return "boundary numbers (`spec presets` lists each model's)"
    return "; ".join(f"{name}: {p.exit_help()}" for name, p in PRESETS.items())


def _refuse_existing(output: Path, force: bool) -> None:
    from cephalon_edge.errors import UsageError

    if output.exists() and not force:
        raise UsageError(f"{output} exists", hint="pass --force to overwrite it")


@app.command("init")
def spec_init_cmd(
    like: str = typer.Option(..., "--like", help="The zoo model whose spec to start from (see `zoo list`)."),
    output: Path = typer.Option(..., "-o", "--output", help="The spec JSON to write."),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing file."),
) -> None:
    """Write an editable spec (modalities, stages, exits, gates, experts, tasks) to start from."""
    from cephalon_edge.fsutil import write_json_atomic
    from cephalon_edge.toolchain.zoo import get

    _refuse_existing(output, force)
    spec = get(like).build_spec()
    write_json_atomic(output, spec.to_dict())
    console.print(f"wrote [bold]{escape(str(output))}[/]: the spec of {escape(like)}; edit it, then "
                  f"`cephalon-edge train {escape(str(output))} --data DATASET -o MODEL.cephalon`")


@app.command("from")
def spec_from_cmd(
    preset: str = typer.Argument(..., help="A library model: LIBRARY:MODEL (see `spec presets`)."),
    exits_after: str = typer.Option("", "--exits-after", help="Where exit heads go, comma-separated: "
                                    + _exit_points_help() + ". None: the plain model."),
    output: Path = typer.Option(..., "-o", "--output", help="The spec JSON to write."),
    classes: int = typer.Option(1000, "--classes", help="Classes of the final classifier (your fine-tuned head's)."),
    input_shape: Optional[str] = typer.Option(None, "--input", help="One sample, channels first, e.g. 3x224x224 "
                                              "(1xHxW: a grey-scale first conv)."),
    exit_channels: int = typer.Option(0, "--exit-channels", help="A 3x3 conv of this width in each exit head "
                                      "before pool + linear (0: pool + linear)."),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing file."),
) -> None:
    """Write the spec of a torchvision/timm model with exits after chosen blocks: at full depth it
    is the library's function; `import --preset` maps the library's weights onto it."""
    from cephalon_edge.cli.options import parse_shape
    from cephalon_edge.fsutil import write_json_atomic
    from cephalon_edge.toolchain import presets

    chosen = presets.get(preset)
    exits = presets.parse_exits(chosen, exits_after)
    shape = parse_shape(input_shape, "--input") if input_shape else None
    _refuse_existing(output, force)
    spec = presets.preset_spec(chosen, exits, shape, classes, exit_channels)
    write_json_atomic(output, spec.to_dict())
    table = Table(title=f"{escape(spec.name)}: {escape(chosen.summary)}, input {'x'.join(map(str, spec.modalities[0].shape))}")
    for col in ("stage", "block", "blocks", "channels", "stride", "exit after"):
        table.add_column(col, justify="left" if col in ("stage", "block") else "right")
    for k, s in enumerate(spec.stages):
        table.add_row(f"stage{k}", s.block, str(s.blocks), str(s.channels), str(s.stride), "exit" if s.exit else "")
    console.print(table)
    console.print(f"wrote [bold]{escape(str(output))}[/]; next: `cephalon-edge import WEIGHTS.pth --spec "
                  f"{escape(str(output))} --preset {escape(preset)} -o MODEL.cephalon`")


@app.command("presets")
def spec_presets_cmd() -> None:
    """List the library models `spec from` knows, and where each can take exits."""
    from cephalon_edge.toolchain import presets

    table = Table(title="library models exits can be retrofitted onto")
    for col in ("preset", "architecture", "exits can go", "default input"):
        table.add_column(col, no_wrap=col == "preset")
    for name, p in presets.PRESETS.items():
        table.add_row(name, p.summary, p.exit_help(), "x".join(map(str, p.default_input)))
    console.print(table)


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="spec")
