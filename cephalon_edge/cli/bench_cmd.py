"""`bench`, `devices` and `profiles`: how fast a package is on this host or on a phone."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Optional

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
from cephalon_edge.targets import bench_tools_help

profiles_app = typer.Typer(help="Device profiles.", no_args_is_help=True)


def _ms(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"


def render_mixes(mixes: dict[str, Any] | None) -> None:
    if mixes:
        t = Table(title="end to end per modality mix (ms at batch 1)")
        for col in ("modality", "samples", "accuracy", "mean", "p50", "p90", "static mean", "speedup"):
            t.add_column(col, justify="left" if col == "modality" else "right", no_wrap=col == "modality")
        for name, m in mixes.items():
            e, s = m["end_to_end"], m["static"]
            t.add_row(escape(name), str(e["samples"]), fmt_pct(e["accuracy"]), _ms(e["mean_ms"]), _ms(e["p50_ms"]), _ms(e["p90_ms"]),
                      _ms(s["mean_ms"]) if s else "-", f"{m['speedup']:.2f}x" if m["speedup"] else "-")
        console.print(t)
        console.print("[dim]the static model takes every modality, so it is timed for the full mix only[/]")


def render_placement(rows: list[dict[str, Any]] | None) -> None:
    """Where each segment's ops and time went, each row naming what measured it."""
    if not rows:
        return
    t = Table(title="where each op ran (per segment)")
    for col in ("segment", "accelerator", "nodes on it", "time on it", "fell back to the CPU (share of the segment's time)", "source"):
        t.add_column(col, justify="right" if col.startswith(("nodes", "time")) else "left")
    for r in rows:
        fallback = ", ".join(f"{o['kind']} {fmt_pct(o['share'])}" if o["share"] is not None else o["kind"]
                             for o in r["fallback_ops"][:4]) + (" ..." if len(r["fallback_ops"]) > 4 else "")
        t.add_row(escape(r["segment"]), escape(r["accelerator"]), f"{r['ops_on_accelerator']}/{r['ops']}",
                  fmt_pct(r["time_share_on_accelerator"]) if r["time_share_on_accelerator"] is not None else "-",
                  escape(fallback) or "none", escape(r["source"]))
    console.print(t)


def render_batch(batch: dict[str, Any] | None) -> None:
    if not batch:
        return
    t = Table(title=f"throughput at batch {batch['batch']} ({batch['samples']} samples of {escape(batch['dataset'])}, "
                    f"{batch['rounds']} rounds)")
    for col in ("", "samples/s", "ms per batch (p50)", "p90"):
        t.add_column(col, justify="left" if not col else "right")
    for name in ("routed", "static"):
        if batch[name]:
            b = batch[name]
            t.add_row(name, f"{b['samples_per_s']:.0f}", _ms(b["p50_ms"]), _ms(b["p90_ms"]))
    console.print(t)
    ratio = batch["throughput_ratio"]
    console.print(f"accuracy at batch {batch['batch']}: {fmt_pct(batch['accuracy'])}"
                  + (f"; [bold]routed/static throughput {ratio:.2f}x[/]" if ratio else ""))


def render_bench(report: dict[str, Any]) -> None:
    for device in report.get("devices") or [report]:
        name = device.get("device", "host")
        table = Table(title=f"segments on {escape(str(name))} ({device.get('profile', report.get('profile'))}, "
                            f"{report['runtime']}), ms at batch 1")
        for col in ("segment", "cold", "min", "p50", "p90", "p99", "mean", "std"):
            table.add_column(col, justify="left" if col == "segment" else "right")
        for s in device.get("segments", []):
            table.add_row(escape(s["name"]), _ms(s.get("cold_ms")), _ms(s.get("min_ms")), _ms(s.get("p50_ms")),
                          _ms(s.get("p90_ms")), _ms(s.get("p99_ms")), _ms(s["mean_ms"]), _ms(s.get("std_ms")))
        console.print(table)
        e2e, static = device.get("end_to_end"), device.get("static")
        measured_here = name == "host" or device.get("platform") == "linux"
        if e2e:
            t = Table(title=f"end to end on {escape(e2e['dataset'])} ({e2e['samples']} real samples)"
                            + ("" if measured_here else " - expected from device segment latency")
                            + (f" - measured on {escape(str(name))} through the router" if name != "host" and measured_here else ""))
            t.add_column("")
            t.add_column("routed", justify="right")
            t.add_column("static", justify="right")
            for key in ("mean_ms", "p50_ms", "p90_ms", "p99_ms"):
                t.add_row(key[:-3], _ms(e2e.get(key)), _ms(static.get(key) if static else None))
            console.print(t)
            rates = ", ".join(f"{k} {100 * v:.1f}%" for k, v in e2e["exit_rates"].items())
            speedup = device.get("speedup", report.get("speedup"))
            console.print(f"exit rates: {rates}" + (f"; accuracy {fmt_pct(e2e['accuracy'])}" if "accuracy" in e2e else "")
                          + (f"; [bold]speedup {speedup:.2f}x[/]" if speedup else ""))
            if speedup is not None and speedup <= 1.0:
                console.print("[yellow]routing does not pay here: the plain static model is as fast or faster[/]")
        if device.get("expected"):
            console.print(f"expected from its segment latencies (as phones are priced): {device['expected']['mean_ms']:.3f} ms "
                          f"mean, {device['expected_vs_measured']:.2f}x the measured")
        render_mixes(device.get("modality_mixes"))
        render_placement(device.get("placement"))
        if device.get("ops_note"):
            console.print(f"[dim]{escape(device['ops_note'])}[/]")
        if device.get("note"):
            console.print(f"[yellow]note:[/] {escape(device['note'])}")
        if device.get("status") == "failed":
            console.print(f"[red]{escape(device['error'])}[/] (results so far kept)")
    render_usage(report.get("routing_usage"))
    render_batch(report.get("batch"))
    if "uploaded_models" in report:  # Qualcomm AI Hub
        console.print(f"[dim]{report['uploaded_models']} model(s) uploaded, {report['reused_models']} already on AI Hub; "
                      f"{escape(report['note'])}[/]")
    if report.get("peak_rss_bytes") is not None:
        console.print(f"peak RSS {fmt_count(report['peak_rss_bytes'])}B")


def bench_cmd(
    package: Path = typer.Argument(..., help="An edge package directory."),
    profile: str = typer.Option("host-cpu", "--profile", help="Device profile (threads, delegate)."),
    device: Optional[str] = typer.Option(None, "--device", help=bench_tools_help()),
    team_id: Optional[str] = typer.Option(None, "--team-id", help="iPhone bench: Apple development team that signs coremltools' model-runner app (or CEPHALON_IOS_TEAM_ID)."),
    data: Optional[str] = typer.Option(None, "--data", help="Real inputs for end-to-end timing (default: the package's test split)."),
    label_map: Optional[Path] = label_map_option(),
    runs: int = typer.Option(50, "--runs", help="Timed runs per segment."),
    warmup: int = typer.Option(5, "--warmup", help="Warm-up runs per segment."),
    threads: Optional[int] = typer.Option(None, "--threads", help="Override the profile's thread count (host)."),
    samples: Optional[int] = typer.Option(None, "--samples", help="Use at most this many data samples."),
    benchmark_binary: Optional[Path] = typer.Option(None, "--benchmark-binary", help="The device tool for the ABI: LiteRT benchmark_model (TFLite) or ExecuTorch executor_runner."),
    keep: bool = typer.Option(False, "--keep", help="Leave the pushed files on the device."),
    modality: Optional[str] = typer.Option(
        None, "--modality", help="Modality mix to time, e.g. image or image,signal (default: every mix the data allows)."),
    budget_ms: Optional[float] = typer.Option(None, "--budget-ms", help="A variants package: mark the operating point "
                                              "the router picks for this latency budget."),
    ssh: Optional[list[str]] = typer.Option(None, "--ssh", help="A Linux board, [USER@]HOST[:PORT] (repeatable): the "
                                            "package runs there through the real router, end to end."),
    ssh_file: Optional[Path] = typer.Option(None, "--ssh-file", help="Boards to bench, one [USER@]HOST[:PORT] per line."),
    ssh_config: Optional[Path] = typer.Option(None, "--ssh-config", help="An ssh_config file for the boards "
                                              "(default: your ~/.ssh/config)."),
    setup: bool = typer.Option(False, "--setup", help="Boards: first install this checkout's device half there "
                               "(its own venv in the board's cache, with the package target's extra)."),
    hub: Optional[list[str]] = typer.Option(None, "--hub", help="A Qualcomm AI Hub device name (repeatable), e.g. "
                                            "'Samsung Galaxy S24 (Family)': every segment profiled on the farm's real "
                                            "phone (the hub extra; `qai-hub configure` first)."),
    hub_file: Optional[Path] = typer.Option(None, "--hub-file", help="AI Hub device names, one per line."),
    batch: Optional[int] = typer.Option(None, "--batch", help="Host: also throughput (samples/s) at this batch size, "
                                        "the routed package against its static model on the same batches."),
    ops: bool = typer.Option(False, "--ops", help="Android: also profile each segment op by op (benchmark_model's "
                             "op profiling): the top ops, the ops that fell back from the delegate, where the time went."),
    json_file: Optional[Path] = typer.Option(None, "--json", help="Write the report as JSON."),
    plot: Optional[Path] = typer.Option(None, "--plot", help="Write per-segment bars and the latency histogram as PNG "
                                        "(a variants package: accuracy vs latency of every operating point)."),
) -> None:
    """Per-segment and end-to-end latency on this host, on Android devices over adb, on iPhones (macOS), or on
    Linux boards over SSH."""
    from cephalon_edge.device.variants import is_variants_package
    from cephalon_edge.errors import UsageError
    from cephalon_edge.tune.bench.host import BenchSpec, bench_host, validate
    from cephalon_edge.tune.bench.hub import hub_names
    from cephalon_edge.tune.bench.ssh import board_addresses

    spec = BenchSpec(profile=profile, data=data, label_map=label_map, runs=runs, warmup=warmup, threads=threads, samples=samples,
                     device=device, benchmark_binary=benchmark_binary, keep=keep, modality=modality, ops=ops, batch=batch)
    validate(spec)
    hosts = board_addresses(ssh, ssh_file)
    farm = hub_names(hub, hub_file)
    if batch is not None and (device or hosts or farm):
        raise UsageError("--batch measures throughput on this host", hint="bench without --device, --ssh or --hub")
    if ops and not device:
        raise UsageError("--ops profiles op by op on Android devices", hint="use it with --device SERIAL "
                         "(AI Hub's profiles, --hub, always carry per-layer placement)")
    if farm:
        if device or hosts:
            raise UsageError("--hub benches on Qualcomm AI Hub's phones, not on --device or --ssh ones",
                             hint="bench each kind of device in its own run")
        if is_variants_package(package):
            _bench_variants(package, spec, budget_ms, team_id, json_file, plot, farm)
        else:
            _bench_hub(package, spec, farm, json_file, plot)
        return
    if hosts:
        if device:
            raise UsageError("--device and --ssh pick different kinds of device", hint="bench phones and boards in two runs")
        _bench_boards(package, spec, hosts, ssh_config, setup, json_file, plot)
        return
    if setup:
        raise UsageError("--setup installs the device half on a board", hint="use it with --ssh HOST")
    if is_variants_package(package):
        _bench_variants(package, spec, budget_ms, team_id, json_file, plot)
        return
    if budget_ms is not None:
        raise UsageError("--budget-ms chooses among width variants; this package has one",
                         hint="make variants with `compress --widths 1.0,0.5`, then export and calibrate")
    with progress("benchmarking", None) as advance:
        if device:
            from cephalon_edge.tune.bench.devices import bench_on_devices

            report = bench_on_devices(package, spec, team_id=team_id, on_progress=advance).to_json()
        else:
            report = bench_host(package, spec, on_progress=advance).to_json()
    _finish(report, json_file, plot)


def _finish(report: dict[str, Any], json_file: Path | None, plot: Path | None,
            failure: Callable[[dict[str, Any]], str] = lambda f: f.get("error", "")) -> None:
    """Render, write the JSON and the plot, then exit 1 naming what failed (results kept)."""
    from cephalon_edge.errors import DeviceError
    from cephalon_edge.tune.plots import plot_bench

    render_bench(report)
    write_report(json_file, report)
    if plot is not None:
        plot_bench(report, plot)
    if report.get("failed"):
        raise DeviceError("; ".join(map(failure, report["failed"])))


def _bench_hub(package: Path, spec: Any, names: list[str], json_file: Path | None, plot: Path | None) -> None:
    from cephalon_edge.tune.bench.hub import bench_hub

    with progress("profiling on Qualcomm AI Hub", None) as advance:
        report = bench_hub(package, spec, names, on_progress=advance).to_json()
    _finish(report, json_file, plot)


def _bench_boards(package: Path, spec: Any, hosts: list[str], ssh_config: Path | None, setup: bool,
                  json_file: Path | None, plot: Path | None) -> None:
    from cephalon_edge.tune.bench.boards import bench_boards

    with progress("benchmarking on boards", None) as advance:
        report = bench_boards(package, spec, hosts, ssh_config, setup, on_progress=advance).to_json()
    _finish(report, json_file, plot, lambda f: f"{f['error']} (during {f['step']})")


def _bench_variants(package: Path, spec: Any, budget_ms: float | None, team_id: str | None,
                    json_file: Path | None, plot: Path | None, farm: list[str] | None = None) -> None:
    """A variants package: every variant benched, every operating point measured (host) or
    re-priced from the device's segment latencies (``--device`` or ``--hub``, written into the table)."""
    from cephalon_edge.cli.calibrate_cmd import render_operating_points
    from cephalon_edge.errors import DeviceError
    from cephalon_edge.tune.plots import plot_operating_points
    from cephalon_edge.tune.variants import bench_variants, bench_variants_on_devices

    with progress("benchmarking", None) as advance:
        if farm:
            from cephalon_edge.tune.bench.hub import bench_hub

            report = bench_variants_on_devices(package, spec, lambda pkg, step: bench_hub(pkg, spec, farm, step), advance)
        elif spec.device:
            from cephalon_edge.tune.bench.devices import bench_on_devices

            report = bench_variants_on_devices(
                package, spec, lambda pkg, step: bench_on_devices(pkg, spec, team_id=team_id, on_progress=step), advance)
        else:
            report = bench_variants(package, spec, budget_ms, on_progress=advance)
    for name, sub in report["variants"].items():
        console.rule(f"variant {escape(name)}")
        render_bench(sub)
    render_operating_points(report["operating_points"], report.get("reference"), report.get("budget"))
    if report.get("budget"):
        from cephalon_edge.cli.run_cmd import describe_point

        console.print(f"budget {report['budget']['budget_ms']:g} ms -> " + describe_point(report["budget"]))
    if report.get("repriced_on"):
        console.print(f"operating points re-priced with {escape(report['repriced_on'])}'s segment latencies and "
                      f"written into {escape(str(package / 'variants.json'))}")
    write_report(json_file, report)
    if plot is not None and report["operating_points"]:
        plot_operating_points(report["operating_points"], report.get("reference"), plot,
                              f"{package.name} on {report.get('repriced_on') or report.get('device', 'host')}")
    if report.get("failed"):
        raise DeviceError("; ".join(f.get("error", "") for f in report["failed"]))


def devices_cmd(
    hub: bool = typer.Option(False, "--hub", help="List Qualcomm AI Hub's devices (name, OS, chipset, frameworks)."),
    ssh: Optional[list[str]] = typer.Option(None, "--ssh", help="Describe a Linux board, [USER@]HOST[:PORT] (repeatable)."),
    ssh_file: Optional[Path] = typer.Option(None, "--ssh-file", help="Boards, one [USER@]HOST[:PORT] per line."),
    ssh_config: Optional[Path] = typer.Option(None, "--ssh-config", help="An ssh_config file (default: your ~/.ssh/config)."),
    json_file: Optional[Path] = typer.Option(None, "--json", help="Write the list as JSON."),
) -> None:
    """List attached Android devices (adb) and iPhones/iPads (xcrun, macOS) with model, SoC, OS, ABI and matching
    profile; with --ssh, what a Linux board is, its device half and runtimes; with --hub, Qualcomm AI Hub's phones."""
    from cephalon_edge.tune.bench.ssh import board_addresses

    hosts = board_addresses(ssh, ssh_file)
    if hub:
        _hub_devices(json_file)
        return
    if hosts:
        _board_devices(hosts, ssh_config, json_file)
        return
    from cephalon_edge.tune.bench.devices import list_devices

    report = list_devices()
    if not report["devices"]:
        console.print("no devices attached")
    else:
        table = Table(title="attached devices")
        for col in ("serial", "state", "model", "SoC", "OS", "ABI", "profile"):
            table.add_column(col)
        for d in report["devices"]:
            state = escape(d["state"])
            os_name = f"Android {d['android']}" if d["platform"] == "android" and d["android"] else \
                f"iOS {d['ios']}" if d["platform"] == "ios" and d["ios"] else None
            table.add_row(escape(d["serial"]), state if not d["message"] else f"[red]{state}[/]",
                          *(escape(v or "-") for v in (d["model"], d["soc"], os_name, d["abi"], d["profile"])))
        console.print(table)
        for d in report["devices"]:
            if d["message"]:
                console.print(f"[yellow]{escape(d['message'])}[/]")
    for note in report["notes"]:
        console.print(f"[dim]{escape(note)}[/]")
    write_report(json_file, report)


def _board_devices(hosts: list[str], ssh_config: Path | None, json_file: Path | None) -> None:
    from cephalon_edge.errors import DeviceError
    from cephalon_edge.tune.bench.boards import list_boards

    with progress("asking the boards", None):
        rows = list_boards(hosts, ssh_config)
    table = Table(title="Linux boards over SSH")
    for col in ("board", "model", "arch", "cores", "memory", "OS", "Python", "device half", "runtimes", "profile"):
        table.add_column(col)
    for r in rows:
        if r["state"] != "ready":
            table.add_row(escape(r["serial"]), "[red]unreachable[/]", *["-"] * 8)
            continue
        table.add_row(*(escape(str(v)) if v else "-" for v in (
            r["serial"], r["model"], r["machine"], r["cores"], r["memory_bytes"] and f"{r['memory_bytes'] / 2**30:.1f} GiB",
            r["os"], r["python"], r["device_half"], ", ".join(r["runtimes"]), r["profile"])))
    console.print(table)
    for r in rows:
        if r["message"]:
            console.print(f"[yellow]{escape(r['message'])}[/]")
    write_report(json_file, {"schema": "cephalon-edge/devices/1", "devices": rows, "notes": []})
    if all(r["state"] != "ready" for r in rows):
        raise DeviceError(rows[0]["message"] if len(rows) == 1 else "no board could be reached")


def _hub_devices(json_file: Path | None) -> None:
    from cephalon_edge.tune.bench.hub import Hub, device_rows

    with progress("asking Qualcomm AI Hub", None):
        rows = device_rows(Hub())
    table = Table(title="Qualcomm AI Hub devices")
    for col in ("device", "OS", "chipset", "frameworks", "profile"):
        table.add_column(col)
    for r in rows:
        table.add_row(*(escape(v or "-") for v in (r["model"], r["os"], r["soc"], ", ".join(r["frameworks"]), r["profile"])))
    console.print(table)
    note = "bench a package there with `cephalon-edge bench PKG --hub NAME`"
    console.print(f"[dim]{note}[/]")
    write_report(json_file, {"schema": "cephalon-edge/devices/1", "devices": rows, "notes": [note]})


@profiles_app.command("list")
def profiles_list() -> None:
    """List the device profiles."""
    from cephalon_edge.device.profiles import DEPRECATED, load_profile, profile_names

    table = Table(title="device profiles")
    for col in ("name", "os", "target", "delegate", "threads", "description"):
        table.add_column(col)
    for name in profile_names():
        p = load_profile(name)
        delegate = p["runtime"]["delegate"] + (" (deprecated)" if p["runtime"]["delegate"] in DEPRECATED else "")
        table.add_row(name, p["os"], p["target"], delegate, str(p["runtime"].get("threads", 1)), p["description"])
    console.print(table)


@profiles_app.command("show")
def profiles_show(name: str = typer.Argument(..., help="Profile name.")) -> None:
    """Show one profile in full."""
    import json

    from cephalon_edge.device.profiles import DEPRECATED, load_profile

    profile = load_profile(name)
    console.print_json(json.dumps(profile))
    note = DEPRECATED.get(profile["runtime"]["delegate"])
    if note:
        console.print(f"[yellow]note:[/] {note}")
    if "estimate" in profile:
        console.print("[dim]estimate figures are estimates, not measurements[/]")


def register(app: typer.Typer) -> None:
    app.command("bench")(bench_cmd)
    app.command("devices")(devices_cmd)
    app.add_typer(profiles_app, name="profiles")
