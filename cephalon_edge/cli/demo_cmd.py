"""`demo`: the whole workflow on the digits-exits zoo model, then the multimodal-digits model
routed with each modality mix, ending with a summary table."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.rule import Rule
from rich.table import Table

from .bench_cmd import render_bench
from .calibrate_cmd import render_calibrate
from .checkpoint_cmds import render_inspect
from .compress_cmd import render_compress, render_plan
from .export_cmd import render_coverage, render_export
from .render import console, fmt_count, fmt_pct, progress
from .run_cmd import render_run
from .zoo_cmd import build_model


def demo_cmd(
    output: Path = typer.Option(Path("cephalon-demo"), "-o", "--output", help="Directory for the demo's files."),
    epochs: int = typer.Option(30, "--epochs", help="Training epochs for digits-exits (and at most this many for multimodal-digits)."),
) -> None:
    """Build digits-exits and take it through every step that exists, then route one
    multimodal-digits sample per modality mix, ending with a summary."""
    import numpy as np

    from ..artifacts import ExportSpec
    from ..bench.host import BenchSpec, bench_host
    from ..calibrate import CalibrateSpec, calibrate_package, plot_pareto
    from ..compress import CompressSpec, compress_checkpoint
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

    console.print(Rule("2. compress --prune 0.5 --finetune-epochs 5"))
    trained = ckpt
    ckpt = output / "digits-exits-pruned.cephalon"
    with progress("fine-tuning", 5) as advance:
        compressed = compress_checkpoint(trained, ckpt, CompressSpec(prune=0.5, finetune_epochs=5), on_plan=render_plan,
                                         on_epoch=lambda e, loss: advance(f"fine-tuning (loss {loss:.3f})"))
    render_compress(compressed)
    summary.append(("pruned: FLOPs / final accuracy",
                    f"{compressed['after']['flops'] / compressed['before']['flops']:.2f}x / "
                    f"{fmt_pct(compressed['after']['final_accuracy'])}"))

    console.print(Rule("3. inspect the compressed checkpoint"))
    report = inspect_checkpoint(ckpt)
    render_inspect(report)
    summary.append(("parameters", fmt_count(report["params"])))
    summary.append(("full-path FLOPs", fmt_count(report["exits"][-1]["cumulative_flops"])))

    console.print(Rule("4. export --target onnx --with-static"))
    pkg = output / "digits-exits-onnx"
    with progress("exporting to onnx", None) as advance:
        exported = export_package(ckpt, pkg, ExportSpec("onnx", with_static=True, force=True),
                                  on_progress=lambda name: advance(f"onnx: {name}"))
    render_export(exported)
    summary.append(("ONNX parity max abs error", f"{exported['parity']['max_abs_err']:.1e}"))

    console.print(Rule("5. export --target tflite --profile android-arm64-cpu, and --target coreml"))
    with progress("exporting to tflite and coreml", None) as advance:
        tflite = export_package(ckpt, output / "digits-exits-tflite",
                                ExportSpec("tflite", profile="android-arm64-cpu", force=True),
                                on_progress=lambda name: advance(f"tflite: {name}"))
        coreml = export_package(ckpt, output / "digits-exits-coreml", ExportSpec("coreml", force=True),
                                on_progress=lambda name: advance(f"coreml: {name}"))
    render_coverage(tflite)
    summary.append(("TFLite parity max abs error", f"{tflite['parity']['max_abs_err']:.1e}"))
    fallback = sum(1 for r in tflite["delegate_coverage"] if r["unsupported_ops"])
    summary.append(("TFLite segments falling back from XNNPACK", f"{fallback} of {len(tflite['delegate_coverage'])}"))
    check = coreml["verification"]
    summary.append(("Core ML", f"{check.get('segments_checked', len(coreml['segments']))} segments, "
                               f"{'spec-checked (predictions need macOS)' if check['kind'] == 'spec' else 'parity passed'}"))

    console.print(Rule("6. run a few test digits through the router"))
    test_split = builtin("digits", "test")
    inputs_dir = output / "inputs"
    inputs_dir.mkdir(exist_ok=True)
    files = []
    for i in range(6):
        f = inputs_dir / f"test{i}_label{test_split.labels[i]}.npy"
        np.save(f, test_split.inputs["image"][i])
        files.append(f)
    render_run(run_package(pkg, files, tasks=["ink"]))

    console.print(Rule("7. the uncalibrated package on the whole test split"))
    routed = evaluate_package(pkg, "digits:test")
    rates = ", ".join(f"{k} {100 * v:.0f}%" for k, v in routed["exit_rates"].items())
    console.print(f"thresholds 0.9 (uncalibrated): accuracy {fmt_pct(routed['accuracy'])}, exits: {rates}")

    console.print(Rule("8. calibrate --data digits:val --max-drop 0.01"))
    with progress("calibrating", 4) as advance:
        calibrated = calibrate_package(pkg, CalibrateSpec(data="digits:val", max_drop=0.01),
                                       on_progress=lambda what: advance(f"calibrating: {what}"))
    render_calibrate(calibrated)
    plot_pareto(calibrated, output / "pareto.png")
    test = calibrated["test"]
    summary.append(("ONNX routed test accuracy (calibrated)", fmt_pct(test["accuracy"])))
    summary.append(("ONNX full-depth test accuracy", fmt_pct(test["full_depth_accuracy"])))
    summary.append(("mean latency routed / static.onnx",
                    f"{test['mean_ms']:.3f} / {test['static_mean_ms']:.3f} ms"))
    summary.append(("speedup at accuracy drop", f"{test['speedup']:.2f}x at {100 * test['accuracy_drop']:.2f} points"))

    console.print(Rule("9. bench --profile host-cpu"))
    with progress("benchmarking", None) as advance:
        bench = bench_host(pkg, BenchSpec(profile="host-cpu", runs=20), on_progress=advance)
    render_bench(bench)
    summary.append(("bench host-cpu: routed / static mean",
                    f"{bench['end_to_end']['mean_ms']:.3f} / {bench['static']['mean_ms']:.3f} ms ({bench['speedup']:.2f}x)"))

    console.print(Rule("10. multimodal-digits: one test sample, routed with each modality mix"))
    summary.extend(_multimodal(output, epochs))

    table = Table(title="demo summary")
    table.add_column("what")
    table.add_column("value", justify="right")
    for row in summary:
        table.add_row(*row)
    console.print(table)
    console.print(f"files in [bold]{output}[/]")


def _multimodal(output: Path, epochs: int) -> list[tuple[str, str]]:
    """Build and export multimodal-digits, then run one test sample as image, signal and both."""
    import numpy as np

    from ..artifacts import ExportSpec
    from ..data import builtin
    from ..export import export_package
    from ..inference import run_package
    from ..mixes import modality_mixes
    from ..zoo import get

    ckpt = output / "multimodal-digits.cephalon"
    provenance = build_model("multimodal-digits", ckpt, min(epochs, get("multimodal-digits").train.epochs), seed=0)
    pkg = output / "multimodal-digits-onnx"
    with progress("exporting multimodal-digits to onnx", None) as advance:
        exported = export_package(ckpt, pkg, ExportSpec("onnx", with_static=True, force=True),
                                  on_progress=lambda name: advance(f"onnx: {name}"))
    sample = builtin("multimodal", "test").subset(np.arange(1))
    files = {}
    for name, x in sample.inputs.items():
        files[name] = output / "inputs" / f"multimodal_{name}_label{sample.labels[0]}.npy"
        files[name].parent.mkdir(exist_ok=True)
        np.save(files[name], x[0])
    rows = [("multimodal-digits ONNX parity (every mix)", f"{exported['parity']['max_abs_err']:.1e}")]
    by_mix = provenance["metrics"]["test_by_modality"]
    for mix in modality_mixes(list(sample.inputs)):
        report = run_package(pkg, [files[m] for m in mix], modality=",".join(mix))
        render_run(report)
        p = report["predictions"][0]
        rows.append((f"multimodal {'+'.join(mix)}: test accuracy / one sample (label {sample.labels[0]})",
                     f"{fmt_pct(by_mix['+'.join(mix)]['final_accuracy'])} / {p['label']} at {p['exit']}"))
    return rows


def register(app: typer.Typer) -> None:
    app.command("demo")(demo_cmd)
