"""`calibrate`: choose per-exit thresholds on the package that will ship."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer
from rich.table import Table

from cephalon_edge.cli.options import label_map_option
from cephalon_edge.cli.render import (
    escape,
    console,
    fmt_count,
    fmt_pct,
    progress,
    render_usage,
    write_report,
)


def render_calibrate(report: dict[str, Any]) -> None:
    val, test = report["val"], report["test"]
    thresholds = ", ".join(f"{k} {v:.4g}" for k, v in report["thresholds"].items())
    console.print(f"[bold]thresholds[/] ({report['score']}, {report['mode']} mode): {thresholds}")
    table = Table(title="operating points on the validation split (Pareto front)")
    for col in ("", "thresholds", "accuracy", "expected latency", "FLOPs ratio"):
        table.add_column(col, justify="right" if col not in ("", "thresholds") else "left")
    for p in report["pareto"]:
        table.add_row("[red]*[/]" if p["chosen"] else "", ", ".join(f"{v:.3g}" for v in p["thresholds"].values()),
                      fmt_pct(p["accuracy"]), f"{p['expected_ms']:.3f} ms", f"{p['flops_ratio']:.3f}")
    console.print(table)
    result = Table(title=f"held-out {escape(test['dataset'])} ({test['samples']} samples, batch 1)")
    result.add_column("")
    result.add_column("routed", justify="right")
    result.add_column("static" if test["static_source"] == "static model" else "full depth", justify="right")
    result.add_row("accuracy", fmt_pct(test["accuracy"]), fmt_pct(test["full_depth_accuracy"]))
    for key in ("mean_ms", "p50_ms", "p90_ms", "p99_ms"):
        result.add_row(key.replace("_ms", " latency"), f"{test[key]:.3f} ms", f"{test['static_' + key]:.3f} ms")
    result.add_row("FLOPs per sample", fmt_count(test["mean_flops"]), fmt_count(test["static_flops"]))
    console.print(result)
    rates = ", ".join(f"{k} {100 * v:.1f}%" for k, v in test["exit_rates"].items())
    console.print(f"exit rates: {rates}")
    render_usage(test.get("routing_usage"))
    if test.get("modality_mixes"):
        mixes = Table(title="held-out, per modality mix (one set of thresholds for all)")
        for col in ("mix", "n", "acc", "full", "drop", "ms", "speedup"):
            mixes.add_column(col, justify="left" if col == "mix" else "right", no_wrap=True)
        for name, m in test["modality_mixes"].items():
            mixes.add_row(escape(name), str(m["samples"]), fmt_pct(m["accuracy"]), fmt_pct(m["full_depth_accuracy"]),
                          f"{100 * m['accuracy_drop']:.2f}", f"{m['mean_ms']:.3f}",
                          f"{m['speedup']:.2f}x" + ("" if m["static_source"] == "static model" else "*"))
        console.print(mixes)
        console.print("[dim]* against the package at full depth: the static model takes every modality[/]")
    console.print(f"[bold]speedup {test['speedup']:.2f}x[/] at an accuracy drop of {100 * test['accuracy_drop']:.2f} points "
                  f"(FLOPs speedup {test['flops_speedup']:.2f}x; measured/FLOPs {test['speedup_vs_flops']:.2f}); "
                  f"validation drop {100 * val['accuracy_drop']:.2f} points"
                  + (f", at most {100 * val['accuracy_drop_bound']:.2f} on unseen data at {val['confidence']:.0%} confidence"
                     if "accuracy_drop_bound" in val and "confidence" in val else ""))
    if test.get("routing_pays") is False:
        console.print(f"[yellow]routing does not pay here: the plain static model ({test['static_mean_ms']:.3f} ms) is not "
                      f"slower than the routed package ({test['mean_ms']:.3f} ms); ship the static model, or calibrate "
                      f"for a larger drop or a tighter --latency-budget-ms[/]")


def render_operating_points(points: list[dict[str, Any]], reference: dict[str, Any] | None,
                            chosen: dict[str, Any] | None = None) -> None:
    """The operating-point table of a variants package, fastest first."""
    table = Table(title="operating points (variant x thresholds): what the router picks from by budget")
    for col in ("", "variant", "thresholds", "accuracy", "latency", "FLOPs", "source"):
        table.add_column(col, justify="right" if col in ("accuracy", "latency", "FLOPs") else "left")
    for p in sorted(points, key=lambda p: (p.get("latency_ms") is None, p.get("latency_ms") or 0)):
        mark = "[red]*[/]" if chosen and p["variant"] == chosen["variant"] and p["thresholds"] == chosen["thresholds"] else ""
        measured = p.get("measured")
        table.add_row(mark, escape(p["variant"]), escape(", ".join(f"{v:.3g}" for v in p["thresholds"].values())),
                      fmt_pct(measured["accuracy"] if measured else p.get("accuracy")),
                      f"{(measured or {}).get('mean_ms', p.get('latency_ms')) or 0:.3f} ms",
                      fmt_count(p["flops"]) if p.get("flops") is not None else "-", escape(str(p.get("source") or "-")))
    console.print(table)
    if reference and reference.get("static_ms") is not None:
        console.print(f"reference: the plain static model {reference['static_ms']:.3f} ms"
                      + (f", accuracy {fmt_pct(reference['accuracy'])}" if reference.get("accuracy") is not None else ""))


def calibrate_cmd(
    package: Path = typer.Argument(..., help="An edge package directory."),
    data: Optional[str] = typer.Option(None, "--data", help="Validation data: digits[:val], mnist1d:val, a .npz or an image folder."),
    max_drop: Optional[float] = typer.Option(None, "--max-drop", help="Allowed validation drop below full depth (default 0.01 = 1 point); "
                                             "with a budget, a guard: thresholds costing more are not written."),
    latency_budget_ms: Optional[float] = typer.Option(None, "--latency-budget-ms", help="Budget mode: mean latency per sample."),
    flops_budget: Optional[float] = typer.Option(None, "--flops-budget", help="Budget mode: FLOPs per sample (<= 1: fraction of full depth)."),
    score: str = typer.Option("max_softmax", "--score", help="max_softmax | entropy | patience."),
    test_data: Optional[str] = typer.Option(None, "--test-data", help="Held-out data for the report (default: the built-in test split, or half of --data)."),
    label_map: Optional[Path] = label_map_option(),
    profile: Optional[str] = typer.Option(None, "--profile", help="Device profile whose runtime settings to measure with."),
    threads: Optional[int] = typer.Option(None, "--threads", help="Runtime threads (overrides the profile)."),
    remeasure: bool = typer.Option(False, "--remeasure", help="Measure segment latency again instead of reusing this host's cached figures."),
    modality: Optional[str] = typer.Option(
        None, "--modality", help="Multi-modal packages: calibrate for this mix only, e.g. image "
                                 "(default: one set of thresholds for every mix the data allows)."),
    restore: bool = typer.Option(False, "--restore", help="Put back the exit policy from before the last calibration "
                                 "(the manifest keeps the last 5)."),
    confidence: float = typer.Option(0.99, "--confidence", help="Accuracy mode: how sure the --max-drop is to hold on "
                                     "unseen data like the validation data (an upper confidence bound on the drop; "
                                     "0.5: the validation drop alone)."),
    json_file: Optional[Path] = typer.Option(None, "--json", help="Write the report as JSON."),
    plot: Optional[Path] = typer.Option(None, "--plot", help="Write the Pareto curve as a PNG."),
) -> None:
    """Choose per-exit thresholds for an accuracy drop or a latency/FLOPs budget; write them into the package."""
    from cephalon_edge.errors import UsageError
    from cephalon_edge.tune.calibrate import (
        CalibrateSpec,
        calibrate_package,
        restore_previous,
        validate_spec,
    )
    from cephalon_edge.tune.plots import plot_pareto

    if restore:
        if data is not None:
            raise UsageError("--restore puts back the previous thresholds; it takes no --data")
        report = restore_previous(package)
        thresholds = ", ".join(f"{k} {v:.4g}" for k, v in report["exit_policy"]["thresholds"].items())
        console.print(f"restored the previous exit policy of {escape(str(package))}: {escape(thresholds)} "
                      f"({report['history_left']} earlier left)")
        write_report(json_file, report)
        return
    if data is None:
        raise UsageError("calibrate needs --data (validation data)", hint="or --restore to put back the previous thresholds")
    spec = CalibrateSpec(data=data, max_drop=max_drop, latency_budget_ms=latency_budget_ms, flops_budget=flops_budget,
                         score=score, test_data=test_data, label_map=label_map, profile=profile, threads=threads,
                         remeasure=remeasure, modality=modality, confidence=confidence)
    validate_spec(spec)
    from cephalon_edge.device.variants import is_variants_package

    if is_variants_package(package):
        from cephalon_edge.tune.plots import plot_operating_points
        from cephalon_edge.tune.variants import calibrate_variants

        with progress("calibrating", None) as advance:
            report = calibrate_variants(package, spec, on_progress=lambda what: advance(f"calibrating {what}"))
        for name, sub in report["variants"].items():
            console.rule(f"variant {escape(name)}")
            render_calibrate(sub)
        render_operating_points(report["operating_points"], report["reference"])
        write_report(json_file, report)
        if plot is not None:
            plot_operating_points(report["operating_points"], report["reference"], plot, f"{package.name}: operating points")
            console.print(f"plot written to {escape(str(plot))}")
        return
    with progress("calibrating", 4) as advance:
        report = calibrate_package(package, spec, on_progress=lambda what: advance(f"calibrating: {what}"))
    render_calibrate(report)
    write_report(json_file, report)
    if plot is not None:
        plot_pareto(report, plot)
        console.print(f"plot written to {escape(str(plot))}")


def register(app: typer.Typer) -> None:
    app.command("calibrate")(calibrate_cmd)
