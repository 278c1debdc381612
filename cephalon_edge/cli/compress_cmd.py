"""`compress`: prune, fine-tune and record a quantization recipe, showing what it cost."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer
from rich.table import Table

from cephalon_edge.cli.options import label_map_option
from cephalon_edge.cli.render import console, escape, fmt_count, fmt_pct, progress, write_report


def render_plan(plan: dict[str, Any]) -> None:
    table = Table(title=f"pruning plan: {plan['channel_ratio']:.0%} of the channels of every group "
                        f"({plan['criterion']}), FLOPs x{plan['flops_ratio']:.2f}")
    for col in ("part", "channels", "inner width"):
        table.add_column(col)
    for row in plan["stages"]:
        inner = f"{row['inner_before']} -> {row['inner_after']}" if "inner_before" in row else "-"
        table.add_row(escape(row["part"]), f"{row['before']} -> {row['after']}", inner)
    console.print(table)


def render_compress(report: dict[str, Any]) -> None:
    before, after = report["before"], report["after"]
    table = Table(title=f"before -> after on {escape(str(report['dataset']['test']))}")
    table.add_column("")
    table.add_column("before", justify="right")
    table.add_column("after", justify="right")
    quant = after.get("quantized")
    if quant:
        table.add_column(f"after + {quant['mode']} (simulated)", justify="right")
    def row(label: str, a: str, b: str, q: str = "") -> None:
        table.add_row(label, a, b, *([q] if quant else []))
    row("full-path FLOPs", fmt_count(before["flops"]), fmt_count(after["flops"]))
    row("params", fmt_count(before["params"]), fmt_count(after["params"]))
    row("size", fmt_count(before["size_bytes"]) + "B", fmt_count(after["size_bytes"]) + "B",
        (fmt_count(quant["estimated_size_bytes"]) + "B (est.)") if quant else "")
    for name, acc in before["exit_accuracy"].items():
        row(f"{name} accuracy", fmt_pct(acc), fmt_pct(after["exit_accuracy"][name]),
            fmt_pct(quant["exit_accuracy"][name]) if quant else "")
    for task, metric in before.get("tasks", {}).items():
        key = next(iter(metric))
        fmt = fmt_pct if key == "accuracy" else (lambda v: f"{v:.4g}")
        row(f"{task} {'accuracy' if key == 'accuracy' else 'MSE'}", fmt(metric[key]),
            fmt(after["tasks"][task][key]), fmt(quant["tasks"][task][key]) if quant else "")
    for name, flops in before["exit_flops"].items():
        row(f"{name} path FLOPs", fmt_count(flops), fmt_count(after["exit_flops"][name]))
    console.print(table)


def render_variants(report: dict[str, Any]) -> None:
    variants = report["variants"]
    table = Table(title=f"width variants on {escape(str(report['dataset']['test']))}")
    table.add_column("variant")
    for col in ("width", "full-path FLOPs", "params", *variants[0]["exit_accuracy"]):
        table.add_column(col if col in ("width", "full-path FLOPs", "params") else f"{col} acc.", justify="right")
    for v in variants:
        table.add_row(escape(v["name"]), f"{v['width']:g}", fmt_count(v["flops"]), fmt_count(v["params"]),
                      *(fmt_pct(a) for a in v["exit_accuracy"].values()))
    console.print(table)
    console.print(f"one checkpoint, {fmt_count(report['after']['size_bytes'])}B; "
                  "`export` puts every variant into one package")


def compress_cmd(
    checkpoint: Path = typer.Argument(..., help="A .cephalon checkpoint."),
    output: Path = typer.Option(..., "-o", "--output", help="The compressed .cephalon to write."),
    prune: Optional[float] = typer.Option(None, "--prune", help="Fraction of full-depth FLOPs to remove (0.5 = half)."),
    widths: Optional[str] = typer.Option(None, "--widths", help="Width variants in one checkpoint, e.g. 1.0,0.75,0.5: "
                                         "the narrower ones pruned from the full model and distilled from it."),
    criterion: str = typer.Option("l1", "--prune-criterion", help="l1 | l2 | taylor channel importance."),
    finetune_epochs: int = typer.Option(0, "--finetune-epochs", help="Recovery fine-tuning epochs (distilled from the original)."),
    data: Optional[str] = typer.Option(None, "--data", help="Dataset (default: the checkpoint's own)."),
    label_map: Optional[Path] = label_map_option(),
    quantize: str = typer.Option("none", "--quantize", help="none | int8 | int8-dynamic | fp16 recipe for export."),
    calib_samples: int = typer.Option(128, "--calib-samples", help="Calibration samples stored with the recipe."),
    json_file: Optional[Path] = typer.Option(None, "--json", help="Write the report as JSON."),
) -> None:
    """Structured pruning, recovery fine-tuning and a quantization recipe, with the cost in accuracy."""
    from cephalon_edge.toolchain.compress.spec import CompressSpec, parse_widths, validate

    spec = CompressSpec(prune=prune, criterion=criterion, finetune_epochs=finetune_epochs, data=data, label_map=label_map,
                        quantize=quantize, calib_samples=calib_samples,
                        widths=parse_widths(widths) if widths is not None else None)
    validate(checkpoint, output, spec)  # before torch is imported
    from cephalon_edge.toolchain.compress.workflow import compress_checkpoint

    epochs = finetune_epochs * (len(spec.widths) - 1 if spec.widths else 1)
    with progress("fine-tuning", epochs or None) as advance:
        report = compress_checkpoint(checkpoint, output, spec, on_plan=render_plan,
                                     on_epoch=lambda e, loss: advance(f"fine-tuning (loss {loss:.3f})"))
    if report.get("variants"):
        render_variants(report)
    else:
        render_compress(report)
    write_report(json_file, report)
    console.print(f"wrote [bold]{escape(str(output))}[/]")


def register(app: typer.Typer) -> None:
    app.command("compress")(compress_cmd)
