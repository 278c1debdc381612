"""`demo`: the whole workflow on the digits-exits zoo model, ending with a summary table."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.rule import Rule
from rich.table import Table

from .checkpoint_cmds import render_inspect
from .export_cmd import render_export
from .render import console, fmt_count, fmt_pct, progress
from .run_cmd import render_run
from .zoo_cmd import build_model


def demo_cmd(
    output: Path = typer.Option(Path("cephalon-demo"), "-o", "--output", help="Directory for the demo's files."),
    epochs: int = typer.Option(30, "--epochs", help="Training epochs for digits-exits."),
) -> None:
    """Build digits-exits and take it through every step that exists, ending with a summary."""
    import numpy as np

    from ..artifacts import ExportSpec
    from ..data import builtin
    from ..evaluate import evaluate_package
    from ..export import export_package
    from ..inference import run_package
    from ..inspection import inspect_checkpoint

    output.mkdir(parents=True, exist_ok=True)
    ckpt = output / "digits-exits.cephalon"
    summary: list[tuple[str, str]] = []

    console.print(Rule("1. zoo build digits-exits"))
    provenance = build_model("digits-exits", ckpt, epochs, seed=0)
    summary.append(("PyTorch final-exit test accuracy", fmt_pct(provenance["metrics"]["test"]["final_accuracy"])))

    console.print(Rule("2. inspect"))
    report = inspect_checkpoint(ckpt)
    render_inspect(report)
    summary.append(("parameters", fmt_count(report["params"])))
    summary.append(("full-path FLOPs", fmt_count(report["exits"][-1]["cumulative_flops"])))

    console.print(Rule("3. export --target onnx --with-static"))
    pkg = output / "digits-exits-onnx"
    with progress("exporting to onnx", None) as advance:
        exported = export_package(ckpt, pkg, ExportSpec("onnx", with_static=True, force=True),
                                  on_progress=lambda name: advance(f"onnx: {name}"))
    render_export(exported)
    summary.append(("ONNX parity max abs error", f"{exported['parity']['max_abs_err']:.1e}"))

    console.print(Rule("4. run a few test digits through the router"))
    test = builtin("digits", "test")
    inputs_dir = output / "inputs"
    inputs_dir.mkdir(exist_ok=True)
    files = []
    for i in range(6):
        f = inputs_dir / f"test{i}_label{test.labels[i]}.npy"
        np.save(f, test.inputs["image"][i])
        files.append(f)
    render_run(run_package(pkg, files, tasks=["ink"]))

    console.print(Rule("5. the routed package on the whole test split"))
    routed = evaluate_package(pkg, "digits:test")
    full = evaluate_package(pkg, "digits:test", thresholds=1.01)
    rates = ", ".join(f"{k} {100 * v:.0f}%" for k, v in routed["exit_rates"].items())
    console.print(f"thresholds 0.9 (uncalibrated): accuracy {fmt_pct(routed['accuracy'])}, exits: {rates}")
    console.print(f"full depth: accuracy {fmt_pct(full['accuracy'])}")
    summary.append(("ONNX routed accuracy (threshold 0.9)", fmt_pct(routed["accuracy"])))
    summary.append(("ONNX full-depth accuracy", fmt_pct(full["accuracy"])))
    summary.append(("mean latency routed / full depth",
                    f"{routed['mean_ms']:.3f} / {full['mean_ms']:.3f} ms ({full['mean_ms'] / routed['mean_ms']:.2f}x)"))

    table = Table(title="demo summary")
    table.add_column("what")
    table.add_column("value", justify="right")
    for row in summary:
        table.add_row(*row)
    console.print(table)
    console.print(f"files in [bold]{output}[/]")


def register(app: typer.Typer) -> None:
    app.command("demo")(demo_cmd)
