"""`diff`, `apply`, `keys new`: field updates that carry only what changed."""

from __future__ import annotations

from pathlib import Path
from typing import Any, List, Optional

import typer
from rich.table import Table

from cephalon_edge.cli.render import console, escape, fmt_count, progress, write_report

keys_app = typer.Typer(help="Ed25519 keys that sign updates.", no_args_is_help=True)


def render_update(report: dict[str, Any], title: str) -> None:
    """The files an update carries, and what it keeps."""
    table = Table(title=title)
    for col in ("file", "travels as", "bytes"):
        table.add_column(col, justify="right" if col == "bytes" else "left")
    for f in report["files"]:
        how = f"{f['action']} ({f['algorithm']})" if f.get("algorithm") else f["action"]
        table.add_row(escape(f["name"]), how, fmt_count(f["payload_bytes"]) + "B")
    if report["files"]:
        console.print(table)
    kept = report["keep"]
    if kept:
        console.print(f"kept from the base: {len(kept)} file(s) ({escape(', '.join(kept[:6]))}"
                      + (", …" if len(kept) > 6 else "") + ")")
    segments = report.get("changes", {}).get("segments", {})
    moved = ", ".join(f"{k}: {', '.join(v)}" for k, v in segments.items() if v)
    sections = ", ".join(report.get("changes", {}).get("manifest_sections", []))
    console.print(f"segments {escape(moved) if moved else 'unchanged'}; manifest sections changed: "
                  f"{escape(sections) or 'none'}")


def diff_cmd(
    old: Path = typer.Argument(..., help="The package on the device (the base)."),
    new: Path = typer.Argument(..., help="The package it should become."),
    output: Path = typer.Option(..., "-o", "--output", help="The update file to write."),
    delta: str = typer.Option("bsdiff4", "--delta", help="Binary delta of changed files: bsdiff4 | detools."),
    sign: Optional[Path] = typer.Option(None, "--sign", help="Sign the update with this Ed25519 private key."),
    rotate_trust: List[Path] = typer.Option([], "--rotate-trust", help="Hand the package's trust to these public keys "
                                            "(repeatable; the update must be signed with a key the package pins)."),
    force: bool = typer.Option(False, "--force", help="Replace an existing update file."),
    json_file: Optional[Path] = typer.Option(None, "--json", help="Write the report as JSON."),
) -> None:
    """Make an update file from OLD to NEW holding only what changed (deltas of changed files)."""
    from cephalon_edge.device.updates.diff import make_update

    with progress("diffing", None) as advance:
        report = make_update(old, new, output, algorithm=delta, sign_key=sign, force=force, rotate_trust=rotate_trust,
                             on_progress=lambda what: advance(f"diffing: {what}"))
    render_update(report, f"update {escape(str(output))}")
    kind = "manifest-only update" if report["manifest_only"] else "update"
    console.print(f"wrote {kind} [bold]{escape(str(output))}[/]: {fmt_count(report['bytes'])}B, "
                  f"{100 * report['ratio']:.1f}% of the {fmt_count(report['package_bytes'])}B package"
                  + (" (signed)" if report["signed"] else ""))
    write_report(json_file, report)


def apply_cmd(
    package: Path = typer.Argument(..., help="The package to update."),
    update: Path = typer.Argument(..., help="An update file made by `cephalon-edge diff`."),
    output: Optional[Path] = typer.Option(None, "-o", "--output", help="Write the updated package here (default: in place)."),
    trust: Optional[Path] = typer.Option(None, "--trust", help="Refuse updates not signed by this Ed25519 public key "
                                         "(a package that pins keys with `keys trust` needs no flag)."),
    allow_unsigned: bool = typer.Option(False, "--allow-unsigned", help="Apply an update whose signature nothing checks "
                                        "(the package pins no key and no --trust is given)."),
    allow_downgrade: bool = typer.Option(False, "--allow-downgrade", help="Apply an update that does not make the "
                                         "package newer (a rollback, or an old update replayed)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Say what would change and the bytes to transfer; write nothing."),
    force: bool = typer.Option(False, "--force", help="Replace an existing -o directory."),
    json_file: Optional[Path] = typer.Option(None, "--json", help="Write the report as JSON."),
) -> None:
    """Verify an update against its base and apply it atomically (the package is untouched on any failure)."""
    from cephalon_edge.device.updates.apply import Policy, apply_update

    policy = Policy(trust=trust, allow_unsigned=allow_unsigned, allow_downgrade=allow_downgrade)
    with progress("applying", None) as advance:
        report = apply_update(package, update, out=output, policy=policy, dry_run=dry_run, force=force,
                              on_progress=lambda what: advance(f"applying: {what}"))
    render_update(report, f"update {escape(str(update))} for {escape(str(package))}")
    verb = "would update" if dry_run else "updated"
    console.print(f"{verb} [bold]{escape(report['output'])}[/] ({fmt_count(report['transfer_bytes'])}B transferred"
                  + (", signature checked" if report["signature_checked"] else ", unsigned") + ")")
    write_report(json_file, report)


@keys_app.command("new")
def keys_new_cmd(
    output: Path = typer.Option(..., "-o", "--output", help="The private key file to write (its public key: OUTPUT.pub)."),
    force: bool = typer.Option(False, "--force", help="Replace an existing key pair."),
) -> None:
    """Make an Ed25519 key pair for signing updates."""
    from cephalon_edge.device.updates.keys import new_keypair

    private, public = new_keypair(output, force=force)
    console.print(f"wrote private key [bold]{escape(str(private))}[/] (keep it secret: `diff --sign`) and public key "
                  f"[bold]{escape(str(public))}[/] (ship it: `apply --trust`)")


@keys_app.command("trust")
def keys_trust_cmd(
    package: Path = typer.Argument(..., help="The package (on the device) that should accept updates from these keys only."),
    public_keys: List[Path] = typer.Argument(..., help="Ed25519 public keys (KEY.pub from `keys new`)."),
    replace: bool = typer.Option(False, "--replace", help="Re-pin a package that already pins keys."),
) -> None:
    """Pin the keys a package accepts updates from: once pinned, apply refuses unsigned and
    foreign-signed updates without any flag."""
    from cephalon_edge.device.updates.trust import pin

    fingerprints = pin(package, public_keys, replace=replace)
    console.print(f"[bold]{escape(str(package))}[/] now accepts updates signed by "
                  f"{escape(', '.join(fingerprints))} only (kept in trust.json, which no update can replace)")


def render_update_file(path: Path) -> dict[str, Any]:
    """`inspect UPDATE`: base, result, what changes, sizes."""
    from cephalon_edge.device.updates.apply import plan
    from cephalon_edge.device.updates.archive import read_update

    report = {"schema": "cephalon-edge/update/1", "update": str(path), **plan(read_update(path))}
    base = report["base"]
    console.print(f"update for [bold]{escape(str(base.get('name')))}[/] ({escape(str(base.get('target')))}): manifest "
                  f"{report['base_manifest_sha256'][:12]} -> {report['result_manifest_sha256'][:12]}, "
                  f"{fmt_count(report['transfer_bytes'])}B" + (", signed" if report["signed"] else ", unsigned"))
    render_update(report, f"update {escape(str(path))}")
    return report


def register(app: typer.Typer) -> None:
    app.command("diff")(diff_cmd)
    app.command("apply")(apply_cmd)
    app.add_typer(keys_app, name="keys")
