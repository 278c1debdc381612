"""`inspect` and `import`: look into a checkpoint, or make one from a plain state_dict."""

from __future__ import annotations

from pathlib import Path
from typing import Any, List, Optional, assert_never

import typer
from rich.table import Table
from rich.tree import Tree

from cephalon_edge.cli.render import console, escape, fmt_count, fmt_pct, write_report
from cephalon_edge.device.program import Encode, Exit, Final, Gate, Moe, Program, Run


def render_inspect(report: dict[str, Any]) -> None:
    segs = {s["name"]: s for s in report["parts"]}

    def label(name: str) -> str:
        s = segs[name]
        return f"[cyan]{escape(name)}[/] [dim]{s['kind']}[/]  params {fmt_count(s['params'])}  FLOPs {fmt_count(s['flops'])}"

    tree = Tree(f"[bold]{escape(report['name'])}[/]  params {fmt_count(report['params'])}  "
                f"[dim]{escape(report['checkpoint'])}[/]")
    shared = report["modalities"][0]["encoded_shape"]
    mods = tree.add("modalities" + (f" -> shared space {shared[0]} channels x {shared[1]} tokens (mean fusion)"
                                    if report["backbone"] == "tokens" else ""))
    for m in report["modalities"]:
        mods.add(f"{escape(m['name'])} ({m['kind']}, {'x'.join(map(str, m['shape']))}) -> " + label(f"adapter.{m['name']}"))
    body = tree.add("program")
    program = Program.parse(report["program"], {n: len(s["output_shapes"]) for n, s in segs.items()},
                            [m["name"] for m in report["modalities"]])
    for step in program:
        match step:
            case Encode():
                pass  # the modalities above
            case Run():
                body.add(label(step.part))
            case Gate():
                body.add(label(step.gate) + "  [magenta]skip gate[/]").add(label(step.block))
            case Moe():
                node = body.add(label(step.gate) + f"  [magenta]top-1 of {len(step.experts)}[/]")
                for e in step.experts:
                    node.add(label(e))
            case Exit():
                body.add(label(step.part) + f"  [green]exit {escape(step.exit)}[/]")
            case Final():
                node = body.add(label(step.part) + f"  [green]exit {escape(step.exit)}[/]")
                for part in step.tasks.values():
                    node.add(label(part) + "  [dim]on request[/]")
            case _:
                assert_never(step)
    console.print(tree)
    fused = report.get("fused_segments") or []
    if fused:
        console.print(f"exported fused: {len(fused)} chains run as one segment each "
                      f"({escape(', '.join(f['name'] for f in fused))}); --no-fuse keeps one per part")
    if report.get("preset"):
        console.print(f"imported from {escape(report['preset']['name'])}: exits can go "
                      f"{escape(report['preset']['exits_can_go'])} (`spec from --exits-after`)")
    acc = report.get("provenance", {}).get("metrics", {}).get("test", {}).get("exit_accuracy", {})
    table = Table(title="exit paths (gated blocks counted as run)")
    for col in ("exit", "cumulative FLOPs", "cumulative MACs", "params", "test accuracy"):
        table.add_column(col, justify="right" if col != "exit" else "left")
    for e in report["exits"]:
        table.add_row(e["name"], fmt_count(e["cumulative_flops"]), fmt_count(e["cumulative_macs"]),
                      fmt_count(e["params"]), fmt_pct(acc.get(e["name"])))
    console.print(table)


def inspect_cmd(
    checkpoint: Path = typer.Argument(..., help="A .cephalon checkpoint, or an update file."),
    json_file: Optional[Path] = typer.Option(None, "--json", help="Write the report as JSON."),
) -> None:
    """Show a checkpoint's modalities, stages, exits, gates, experts and heads with params and FLOPs
    (or an update file's base, result, changes and sizes)."""
    from cephalon_edge.device.updates.archive import is_update_file

    if is_update_file(checkpoint):
        from cephalon_edge.cli.update_cmds import render_update_file

        write_report(json_file, render_update_file(checkpoint))
        return
    from cephalon_edge.toolchain.checkpoint import read_metadata

    read_metadata(checkpoint)  # a missing or broken checkpoint is one line, before torch is imported
    from cephalon_edge.toolchain.inspection import inspect_checkpoint

    report = inspect_checkpoint(checkpoint)
    render_inspect(report)
    write_report(json_file, report)


def import_cmd(
    state_dict: Optional[Path] = typer.Argument(None, help="A PyTorch state_dict file (.pt); loaded with weights_only=True."),
    spec: Path = typer.Option(..., "--spec", help="The architecture spec (JSON) the weights belong to."),
    output: Optional[Path] = typer.Option(None, "-o", "--output", help="The .cephalon checkpoint to write."),
    mapping: List[str] = typer.Option([], "--map", help="Rename a name prefix, OLD=NEW (repeatable; the first match wins). "
                                      "module./model. wrappers are stripped without asking."),
    expected: bool = typer.Option(False, "--expected", help="List the tensor names and shapes the spec expects, and stop."),
    preset: Optional[str] = typer.Option(None, "--preset", help="The weights are this library model's (e.g. torchvision:resnet50; "
                                         "`spec presets` lists them): map its names to the spec made by `spec from`."),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing output file."),
    json_file: Optional[Path] = typer.Option(None, "--json", help="Write the report as JSON."),
) -> None:
    """Make a .cephalon checkpoint from weights trained elsewhere (a plain PyTorch state_dict)."""
    from cephalon_edge import __version__
    from cephalon_edge.toolchain.checkpoint import save
    from cephalon_edge.toolchain.state_import import PrefixRule, expected_tensors, import_state_dict, load_spec
    from cephalon_edge.errors import UsageError

    rules = [PrefixRule.parse(m) for m in mapping]
    if expected:
        tensors = expected_tensors(load_spec(spec))
        table = Table(title=f"tensors a state_dict for {escape(str(spec))} holds")
        for col in ("name", "shape", "dtype"):
            table.add_column(col)
        for t in tensors:
            table.add_row(escape(t["name"]), str(t["shape"]), t["dtype"] + (" (optional)" if t["optional"] else ""))
        console.print(table)
        write_report(json_file, {"schema": "cephalon-edge/import-expected/1", "spec": str(spec), "tensors": tensors})
        return
    if state_dict is None or output is None:
        raise UsageError("import needs STATE_DICT and -o OUT.cephalon", hint="or --expected to list what the spec expects")
    if output.exists() and not force:
        raise UsageError(f"{output} exists", hint="pass --force to overwrite it, or write elsewhere with -o")
    model, info = import_state_dict(state_dict, spec, rules, preset)
    params = sum(p.numel() for p in model.parameters())
    save(model, output, {"creator": f"cephalon-edge {__version__} import", "source": str(state_dict),
                         "map": [f"{r.old}={r.new}" for r in rules], **info})
    console.print(f"wrote [bold]{escape(str(output))}[/] ({escape(model.spec.name)}, {fmt_count(params)} params)")
    render_preset_import(info)
    write_report(json_file, {"schema": "cephalon-edge/import/1", "output": str(output), "source": str(state_dict),
                             "spec": str(spec), "params": params, "map": [f"{r.old}={r.new}" for r in rules], **info})


def render_preset_import(info: dict[str, Any]) -> None:
    if not info:
        return
    if info["initialised"]:
        console.print(f"initialised the new exit heads {escape(', '.join(info['initialised']))}: train them with "
                      "`cephalon-edge train MODEL.cephalon --freeze backbone --data DATA -o OUT.cephalon`")
    if info["reference_max_abs_error"] is not None:
        console.print(f"full depth is {escape(info['preset'])}'s function: logits within "
                      f"{info['reference_max_abs_error']:.1e} of the library's own model on random inputs")


def register(app: typer.Typer) -> None:
    app.command("inspect")(inspect_cmd)
    app.command("import")(import_cmd)
