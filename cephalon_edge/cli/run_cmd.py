"""`run`: route inputs through an edge package and show what each sample did."""

from __future__ import annotations

from pathlib import Path
from typing import Any, List, Optional

import typer
from rich.table import Table

from cephalon_edge.cli.render import console, escape, write_report


def render_run(report: dict[str, Any]) -> None:
    table = Table(title=f"{escape(report['package'])} ({report['runtime']})")
    for col in ("input", "prediction", "label", "confidence", "exit", "latency"):
        table.add_column(col, justify="right" if col in ("prediction", "confidence", "latency") else "left")
    extra = sorted({t for r in report["predictions"] for t in r["tasks"]})
    for t in extra:
        table.add_column(t, justify="right")
    for r in report["predictions"]:
        tasks = [f"class {r['task_classes'][t]}" if t in r.get("task_classes", {}) else
                 ", ".join(f"{v:.3g}" for v in r["tasks"][t]) for t in extra]
        table.add_row(escape(" + ".join(Path(p).name for p in r["input"].split(" + "))), str(r["prediction"]),
                      escape(r["label"]), f"{r['score']:.3f}", escape(r["exit"]),
                      f"{r['latency_us'] / 1000:.3f} ms", *tasks)
    console.print(table)
    console.print(f"[dim]latency: each input's own, batch 1, after a first (cold) call of "
                  f"{report['cold_start_us'] / 1000:.3f} ms[/]")
    point = report.get("operating_point")
    if point:
        console.print(describe_point(point))


def describe_point(point: dict[str, Any]) -> str:
    """One line on the operating point a variants package routed with."""
    acc = "-" if point.get("accuracy") is None else f"{100 * point['accuracy']:.2f}%"
    ms = "not measured" if point.get("latency_ms") is None else f"{point['latency_ms']:.3f} ms"
    fits = "" if point.get("fits_budget", True) else " [yellow](no point fits the budget: the fastest)[/]"
    return (f"operating point: variant [bold]{escape(point['variant'])}[/], thresholds "
            f"{escape(', '.join(f'{k} {v:.3g}' for k, v in point['thresholds'].items()))}; "
            f"validation accuracy {acc}, latency {ms}{fits}")


def run_cmd(
    package: Path = typer.Argument(..., help="An edge package directory."),
    inputs: List[Path] = typer.Argument(..., help=".npy arrays (model-ready; a sample or a batch) or images."),
    modality: Optional[str] = typer.Option(
        None, "--modality", help="Which input(s) the files are: one modality, or a mix like image,signal "
                                 "with one INPUT per modality in that order (default: the only input)."),
    threshold: Optional[float] = typer.Option(None, "--threshold", help="Override every exit threshold."),
    task: List[str] = typer.Option([], "--task", help="Also run this task head (repeatable)."),
    runtime: str = typer.Option("auto", "--runtime", help="Runtime (auto: the package target's default)."),
    threads: Optional[int] = typer.Option(None, "--threads", help="Runtime threads."),
    budget_ms: Optional[float] = typer.Option(None, "--budget-ms", help="A variants package: route with the most "
                                              "accurate operating point whose latency fits this budget."),
    variant: Optional[str] = typer.Option(None, "--variant", help="A variants package: route with this width variant (e.g. w0.5)."),
    json_file: Optional[Path] = typer.Option(None, "--json", help="Write the report as JSON."),
) -> None:
    """Route inputs through a package, printing prediction, label, exit taken and latency."""
    from cephalon_edge.device.inference import run_package

    report = run_package(package, inputs, modality=modality, thresholds=threshold, tasks=task,
                         runtime=runtime, threads=threads, budget_ms=budget_ms, variant=variant)
    render_run(report)
    write_report(json_file, report)


def register(app: typer.Typer) -> None:
    app.command("run")(run_cmd)
