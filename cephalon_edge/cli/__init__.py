"""The `cephalon-edge` command line: a thin Typer layer over the library.

Commands parse arguments, call one library function and render the result. Errors that are
the user's (``CephalonError``) print one line and a hint; anything else is a bug and keeps
its traceback.
"""

from __future__ import annotations

import errno
import os
import signal
import sys
import threading
import warnings

import typer

from cephalon_edge import __version__
from cephalon_edge.cli import (
    bench_cmd,
    calibrate_cmd,
    checkpoint_cmds,
    compress_cmd,
    demo_cmd,
    export_cmd,
    run_cmd,
    spec_cmds,
    train_cmd,
    update_cmds,
    zoo_cmd,
)
from cephalon_edge.cli.render import err_console, error_lines, plain
from cephalon_edge.errors import CephalonError, Note

# operating-system failures a user can act on: one line instead of a traceback
OS_ERRORS = {errno.ENOSPC: ("no space left on device", 1), errno.EDQUOT: ("disk quota exceeded", 1),
             errno.EROFS: ("read-only file system", 2), errno.EACCES: ("permission denied", 2)}

app = typer.Typer(name="cephalon-edge", no_args_is_help=True, add_completion=False,
                  help="Ship dynamic neural networks to phones and boards.", pretty_exceptions_enable=False)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"cephalon-edge {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Show the version and exit."),
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks for user errors too (or CEPHALON_DEBUG=1)."),
) -> None:
    if debug:
        os.environ["CEPHALON_DEBUG"] = "1"


app.add_typer(zoo_cmd.app, name="zoo")
train_cmd.register(app)
spec_cmds.register(app)
checkpoint_cmds.register(app)
compress_cmd.register(app)
export_cmd.register(app)
run_cmd.register(app)
calibrate_cmd.register(app)
bench_cmd.register(app)
update_cmds.register(app)
demo_cmd.register(app)


def _show_notes() -> None:
    """Print ``Note`` warnings as ``note: …`` lines (data, never markup); others as Python does."""
    from rich.text import Text

    default = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):  # type: ignore[no-untyped-def]
        if issubclass(category, Note):
            err_console.print(Text.assemble(("note:", "cyan"), " ", plain(str(message))), highlight=False, soft_wrap=True)
        else:
            default(message, category, filename, lineno, file, line)

    warnings.showwarning = show
    warnings.simplefilter("always", Note)


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the program is, so every cleanup runs as for Ctrl-C."""


def _terminate(signum: int, frame: object) -> None:
    raise Terminated()


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: Typer handles usage errors (exit 2); user errors print one
    line and a hint and exit with their code; other exceptions are bugs and keep the traceback.
    SIGTERM is handled like Ctrl-C (temporaries removed, outputs as they were), exit 143."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _terminate)
    _show_notes()
    try:
        app(args=argv, prog_name="cephalon-edge")
    except SystemExit as exc:  # Typer turns Ctrl-C into exit 130; SIGTERM gets its own 143
        cause = exc.__context__
        while cause is not None and not isinstance(cause, Terminated):
            cause = cause.__cause__ or cause.__context__
        if cause is not None:
            err_console.print("error: terminated; outputs are as they were", highlight=False)
            sys.exit(128 + signal.SIGTERM)
        raise
    except CephalonError as exc:
        if os.environ.get("CEPHALON_DEBUG") == "1":
            err_console.print_exception()
        for line in error_lines(exc.message, exc.hint):
            err_console.print(line, highlight=False, soft_wrap=True)
        sys.exit(exc.exit_code)
    except OSError as exc:
        if exc.errno not in OS_ERRORS:
            raise
        what, code = OS_ERRORS[exc.errno]
        for line in error_lines(f"{what}: {exc.filename or exc.strerror}",
                                "nothing was replaced: outputs are written next to their destination and renamed "
                                "into place only when complete"):
            err_console.print(line, highlight=False, soft_wrap=True)
        sys.exit(code)
