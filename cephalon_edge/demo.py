"""The demo workflow: build the digits-exits zoo model (or mnist-exits) and take it through
every step that exists (compress, inspect, export to every registered target, run, evaluate, calibrate,
bench), then route one multimodal-digits sample per modality mix.

The workflow lives here; how it is shown is the caller's (the CLI passes a ``DemoView`` that
renders each report with rich). Needs both halves.
"""

from __future__ import annotations

import json
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, Callable, Protocol

import numpy as np

from cephalon_edge.toolchain.artifacts import ExportSpec
from cephalon_edge.toolchain.compress.spec import CompressSpec
from cephalon_edge.toolchain.compress.workflow import compress_checkpoint
from cephalon_edge.toolchain.export import export_package
from cephalon_edge.toolchain.inspection import inspect_checkpoint
from cephalon_edge.toolchain.zoo import build_checkpoint, training_epochs
from cephalon_edge.toolchain.zoo import get as get_zoo_entry
from cephalon_edge.device.data import builtin
from cephalon_edge.device.inference import run_package
from cephalon_edge.device.mixes import modality_mixes
from cephalon_edge.device.profiles import load_profile, profile_names
from cephalon_edge.errors import UsageError
from cephalon_edge.formatting import fmt_count, fmt_pct
from cephalon_edge.targets import TARGETS, Target
from cephalon_edge.tune.bench.host import BenchSpec, bench_host
from cephalon_edge.tune.calibrate import CalibrateSpec, calibrate_package
from cephalon_edge.tune.evaluate import evaluate_package
from cephalon_edge.tune.plots import plot_pareto

Advance = Callable[..., None]
Summary = list[tuple[str, str]]


class DemoView(Protocol):
    def section(self, title: str) -> None: ...

    def progress(self, description: str, total: int | None) -> AbstractContextManager[Advance]: ...

    def show(self, kind: str, report: dict[str, Any]) -> None:
        """Render one report: zoo, plan, compress, inspect, export, coverage, run, evaluate,
        calibrate or bench."""


def build_zoo_model(name: str, output: Path, epochs: int | None, view: DemoView) -> dict[str, Any]:
    with view.progress(f"training {name}", training_epochs(name, epochs)) as advance:
        return build_checkpoint(name, output, epochs, seed=0,
                                on_epoch=lambda epoch, loss: advance(f"training {name} (loss {loss:.3f})"))


def showcase_profile(target: Target) -> str | None:
    """A device profile that prefers ``target`` and runs on Android, to show delegate coverage."""
    if target.delegate_coverage != "documented":
        return None
    return next((n for n in profile_names() if load_profile(n)["target"] == target.name
                 and load_profile(n)["os"] == "android"), None)


FINETUNE_EPOCHS = 5  # after pruning; --epochs caps it too (a quick run)
DEMO_MODELS = ("digits-exits", "mnist-exits", "mobilenet-exits", "vit-exits", "text-exits")


def run_demo(output: Path, epochs: int | None, view: DemoView, model: str = "digits-exits") -> Summary:
    """The whole workflow on zoo ``model`` (one of ``DEMO_MODELS``); returns the summary rows
    (what, value)."""
    if model not in DEMO_MODELS:
        raise UsageError(f"the demo runs {', '.join(DEMO_MODELS)}, not {model!r}")
    output.mkdir(parents=True, exist_ok=True)
    ckpt = output / f"{model}.cephalon"
    dataset = get_zoo_entry(model).dataset
    summary: Summary = []

    view.section(f"1. zoo build {model}")
    provenance = build_zoo_model(model, ckpt, epochs, view)
    summary.append(("PyTorch final-exit test accuracy", fmt_pct(provenance["metrics"]["test"]["final_accuracy"])))

    finetune = FINETUNE_EPOCHS if epochs is None else min(epochs, FINETUNE_EPOCHS)
    view.section(f"2. compress --prune 0.5 --finetune-epochs {finetune}")
    trained, ckpt = ckpt, output / f"{model}-pruned.cephalon"
    with view.progress("fine-tuning", finetune) as advance:
        compressed = compress_checkpoint(trained, ckpt, CompressSpec(prune=0.5, finetune_epochs=finetune),
                                         on_plan=lambda plan: view.show("plan", plan),
                                         on_epoch=lambda e, loss: advance(f"fine-tuning (loss {loss:.3f})"))
    view.show("compress", compressed)
    summary.append(("pruned: FLOPs / final accuracy",
                    f"{compressed['after']['flops'] / compressed['before']['flops']:.2f}x / "
                    f"{fmt_pct(compressed['after']['final_accuracy'])}"))

    view.section("3. inspect the compressed checkpoint")
    report = inspect_checkpoint(ckpt)
    view.show("inspect", report)
    summary.append(("parameters", fmt_count(report["params"])))
    summary.append(("full-path FLOPs", fmt_count(report["exits"][-1]["cumulative_flops"])))

    main = _export_every_target(model, ckpt, output, view, summary)

    view.section("5. run a few test samples through the router")
    test_split = builtin(dataset, "test")
    modality = next(iter(test_split.inputs))
    inputs_dir = output / "inputs"
    inputs_dir.mkdir(exist_ok=True)
    files = []
    for i in range(6):
        f = inputs_dir / f"test{i}_label{test_split.labels[i]}.npy"
        np.save(f, test_split.inputs[modality][i])
        files.append(f)
    extra_tasks = [t["name"] for t in json.loads((main / "manifest.json").read_text())["tasks"][1:]]
    view.show("run", run_package(main, files, tasks=extra_tasks))

    view.section("6. the uncalibrated package on the whole test split")
    view.show("evaluate", evaluate_package(main, f"{dataset}:test"))

    view.section(f"7. calibrate --data {dataset}:val --max-drop 0.01")
    with view.progress("calibrating", 4) as advance:
        calibrated = calibrate_package(main, CalibrateSpec(data=f"{dataset}:val", max_drop=0.01),
                                       on_progress=lambda what: advance(f"calibrating: {what}"))
    view.show("calibrate", calibrated)
    plot_pareto(calibrated, output / "pareto.png")
    test = calibrated["test"]
    summary.append(("routed test accuracy (calibrated)", fmt_pct(test["accuracy"])))
    summary.append(("full-depth test accuracy", fmt_pct(test["full_depth_accuracy"])))
    summary.append(("mean latency routed / plain static model (ORT defaults)", f"{test['mean_ms']:.3f} / {test['static_mean_ms']:.3f} ms"))
    summary.append(("speedup at accuracy drop", f"{test['speedup']:.2f}x at {100 * test['accuracy_drop']:.2f} points"))

    view.section("8. bench --profile host-cpu")
    with view.progress("benchmarking", None) as advance:
        bench = bench_host(main, BenchSpec(profile="host-cpu", runs=20), on_progress=advance).to_json()
    view.show("bench", bench)
    summary.append(("bench host-cpu: routed / static mean",
                    f"{bench['end_to_end']['mean_ms']:.3f} / {bench['static']['mean_ms']:.3f} ms ({bench['speedup']:.2f}x)"))

    view.section("9. multimodal-digits: one test sample, routed with each modality mix")
    summary.extend(_multimodal(output, epochs, main_target(), view))
    return summary


def main_target() -> Target:
    """The first registered target whose packages run on this machine: the demo's package."""
    return next(t for t in TARGETS.values() if t.why_not_here() is None)


def _export_every_target(model: str, ckpt: Path, output: Path, view: DemoView, summary: Summary) -> Path:
    """Export to every registered target; the main target's package (with the static model)
    is the one the rest of the demo runs."""
    main = main_target()
    for target in TARGETS.values():
        profile = showcase_profile(target)
        view.section(f"4. export --target {target.name}" + (" --with-static" if target is main else "")
                     + (f" --profile {profile}" if profile else ""))
        pkg = output / f"{model}-{target.name}"
        with view.progress(f"exporting to {target.name}", None) as advance:
            exported = export_package(ckpt, pkg, ExportSpec(target.name, profile=profile, with_static=target is main,
                                                            force=True),
                                      on_progress=lambda name, t=target.name: advance(f"{t}: {name}"))
        view.show("export" if target is main else "coverage", exported)
        if exported["parity"]:
            summary.append((f"{target.display} parity max abs error", f"{exported['parity']['max_abs_err']:.1e}"))
        else:
            check = exported["verification"]
            summary.append((target.display, f"{check.get('segments_checked', len(exported['segments']))} segments, "
                                            f"spec-checked ({check['reason']})"))
        if exported["delegate_coverage"]:
            fallback = sum(1 for r in exported["delegate_coverage"] if r["unsupported_ops"])
            delegate = exported["delegate_coverage"][0]["delegate"]
            lowered = exported["delegate_coverage"][0].get("source") == "lowered program"
            summary.append((f"{target.display} segments with ops left to the portable kernels" if lowered
                            else f"{target.display} segments falling back from {delegate}",
                            f"{fallback} of {len(exported['delegate_coverage'])}"))
    return output / f"{model}-{main.name}"


def _multimodal(output: Path, epochs: int | None, target: Target, view: DemoView) -> Summary:
    """Build and export multimodal-digits, then run one test sample as image, signal and both."""
    ckpt = output / "multimodal-digits.cephalon"
    provenance = build_zoo_model("multimodal-digits", ckpt, None if epochs is None else min(epochs, training_epochs("multimodal-digits")), view)
    pkg = output / f"multimodal-digits-{target.name}"
    with view.progress(f"exporting multimodal-digits to {target.name}", None) as advance:
        exported = export_package(ckpt, pkg, ExportSpec(target.name, with_static=True, force=True),
                                  on_progress=lambda name: advance(f"{target.name}: {name}"))
    sample = builtin("multimodal", "test").subset(np.arange(1))
    files = {}
    for name, x in sample.inputs.items():
        files[name] = output / "inputs" / f"multimodal_{name}_label{sample.labels[0]}.npy"
        files[name].parent.mkdir(exist_ok=True)
        np.save(files[name], x[0])
    rows = [(f"multimodal-digits {target.display} parity (every mix)", f"{exported['parity']['max_abs_err']:.1e}")]
    by_mix = provenance["metrics"]["test_by_modality"]
    for mix in modality_mixes(list(sample.inputs)):
        report = run_package(pkg, [files[m] for m in mix], modality=",".join(mix))
        view.show("run", report)
        p = report["predictions"][0]
        rows.append((f"multimodal {'+'.join(mix)}: test accuracy / one sample (label {sample.labels[0]})",
                     f"{fmt_pct(by_mix['+'.join(mix)]['final_accuracy'])} / {p['label']} at {p['exit']}"))
    return rows

