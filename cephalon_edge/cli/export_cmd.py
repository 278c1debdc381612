"""`export`: a checkpoint into an edge package for one target, verified by parity."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer
from rich.table import Table

from cephalon_edge.cli.options import label_map_option
from cephalon_edge.cli.render import console, escape, fmt_count, fmt_pct, progress, write_report
from cephalon_edge.device.program import DEFAULT_EXIT_THRESHOLD
from cephalon_edge.targets import quantization_help, target_help


def render_coverage(report: dict[str, Any]) -> None:
    rows = report.get("delegate_coverage")
    if rows:
        source = rows[0].get("source", "documented op list")
        table = Table(title=f"delegate coverage ({escape(rows[0]['delegate'])}, from its {source})")
        for col in ("segment", "ops", "delegated" if source == "lowered program" else "supported", "falls back to CPU"):
            table.add_column(col)
        for r in rows:
            table.add_row(escape(r["segment"]), str(r["ops"]), ", ".join(r["supported_ops"]),
                          "[red]" + ", ".join(r["unsupported_ops"]) + "[/]" if r["unsupported_ops"] else "[green]none[/]")
        console.print(table)
    for note in report.get("notes", []):
        console.print(f"[yellow]note:[/] {escape(note)}")


def render_export(report: dict[str, Any]) -> None:
    table = Table(title=f"{report['target']} package {escape(report['package'])}")
    for col in ("segment", "kind", "file", "size", "FLOPs", "params", "max abs err"):
        table.add_column(col, justify="left" if col in ("segment", "kind", "file") else "right")
    files = [s["file"] for s in report["segments"]]
    for s in report["segments"]:
        err = s["max_abs_err"]
        size = "shared" if files.count(s["file"]) > 1 else fmt_count(s["size_bytes"]) + "B"
        table.add_row(s["name"], s["kind"], s["file"], size, fmt_count(s["flops"]),
                      fmt_count(s["params"]), "-" if err is None else f"{err:.1e}")
    console.print(table)
    console.print(f"package size {fmt_count(report['size_bytes'])}B ({report['quantization']})")
    parity = report["parity"]
    verification = report.get("verification") or {}
    if verification.get("kind") == "spec":
        console.print(f"[yellow]{verification['reason']}[/]: {verification['segments_checked']} segments match the "
                      f"manifest's names and shapes (spec version {verification['spec_version']})")
        return
    if parity is None:
        console.print("[yellow]parity not checked (--no-verify)[/]")
    else:
        if parity["quantization"] != "none":
            val, acc = parity["val_top1_agreement"], parity.get("real_accuracy")
            if val is None:  # random inputs say nothing about a quantized model's accuracy
                console.print(f"parity ({parity['quantization']}): [yellow]not judged (no data)[/]: the checkpoint names "
                              f"no dataset; pass --data (a .npz, an image folder or a built-in name) to calibrate and "
                              f"judge the quantized package on real samples")
                return
            console.print(f"parity ({parity['quantization']}) [green]passed[/]: top-1 agreement with fp32 "
                          f"{100 * val:.1f}% on {acc['samples']} real samples (>= {100 * parity['tolerance']:.0f}% required); "
                          f"accuracy on them {fmt_pct(acc['pytorch'])} in PyTorch, {fmt_pct(acc['exported'])} exported")
            return
        console.print(f"parity [green]passed[/] on {parity['samples']} routed samples: max abs error "
                      f"{parity['max_abs_err']:.1e} (tolerance {parity['tolerance']:.0e}), decisions "
                      f"{100 * parity['decision_agreement']:.1f}% identical, top-1 {100 * parity['top1_agreement']:.1f}%"
                      + ("" if parity["static_max_abs_err"] is None else f", static model {parity['static_max_abs_err']:.1e}"))


def export_cmd(
    checkpoint: Path = typer.Argument(..., help="A .cephalon checkpoint."),
    target: str = typer.Option(..., "--target", "-t", help=target_help()),
    output: Path = typer.Option(..., "-o", "--output", help="The package directory to write."),
    quantize: Optional[str] = typer.Option(None, "--quantize", help=quantization_help()),
    profile: Optional[str] = typer.Option(None, "--profile", help="Device profile name."),
    with_static: bool = typer.Option(False, "--with-static", help="Also write the plain network (full depth, task heads, no exit heads): the baseline speedups are measured against."),
    no_fuse: bool = typer.Option(False, "--no-fuse", help="One segment per part (stage, gate, exit...), for per-part diagnosis; slower to run."),
    no_verify: bool = typer.Option(False, "--no-verify", help="Skip the parity check against PyTorch."),
    force: bool = typer.Option(False, "--force", help="Replace an existing package (once the new one is complete)."),
    threshold: float = typer.Option(DEFAULT_EXIT_THRESHOLD, "--threshold", help="Initial exit threshold until `calibrate` sets per-exit ones."),
    data: Optional[str] = typer.Option(None, "--data", help="Real samples for int8 calibration and quantized parity "
                                       "(a .npz, an image folder or a built-in name; default: the checkpoint's own dataset)."),
    label_map: Optional[Path] = label_map_option(),
    json_file: Optional[Path] = typer.Option(None, "--json", help="Write the report as JSON."),
) -> None:
    """Cut a checkpoint into static segments, convert them, verify parity, write the package."""
    from cephalon_edge.toolchain.artifacts import ExportSpec
    from cephalon_edge.toolchain.export import export_package

    spec = ExportSpec(target=target, quantize=quantize, profile=profile, with_static=with_static,
                      fuse=not no_fuse, verify=not no_verify, force=force, threshold=threshold,
                      data=data, label_map=label_map)
    with progress(escape(f"exporting to {target}"), None) as advance:
        report = export_package(checkpoint, output, spec, on_progress=lambda name: advance(escape(f"{target}: {name}")))
    for name, sub in (report.get("variants") or {None: report}).items():
        if name is not None:
            console.rule(f"variant {escape(name)}")
        render_export(sub)
        render_coverage(sub)
    if report.get("variants"):
        sizes = ", ".join(f"{escape(n)} {fmt_count(r['size_bytes'])}B" for n, r in report["variants"].items())
        console.print(f"one package, {len(report['variants'])} width variants, {fmt_count(report['size_bytes'])}B "
                      f"({sizes}); `calibrate` measures its operating points")
    write_report(json_file, report)
    console.print(f"wrote [bold]{escape(str(output))}[/]")


def register(app: typer.Typer) -> None:
    app.command("export")(export_cmd)
