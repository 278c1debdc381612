"""User-facing errors: one line, an optional hint, and an exit code.

Anything that is not a ``CephalonError`` is a bug and keeps its traceback.
"""

from __future__ import annotations


class CephalonError(Exception):
    """An error caused by the user's input or environment, not by a bug."""

    exit_code: int = 2

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


class SpecError(CephalonError):
    """An architecture spec is malformed; the message names the bad field."""


class CheckpointError(CephalonError):
    """A checkpoint file cannot be read or does not match its spec."""


class DataError(CephalonError):
    """A dataset or input file is missing, malformed or of the wrong shape."""


class PackageError(CephalonError):
    """An edge package is malformed, tampered with or incomplete."""


class UsageError(CephalonError):
    """A flag, name or combination of options is invalid."""


class ExportError(CephalonError):
    """A converter failed on a segment."""

    exit_code = 1


class ParityError(CephalonError):
    """An exported package does not reproduce the PyTorch reference."""

    exit_code = 1


class RuntimeFailure(CephalonError):
    """A runtime failed while running a segment."""

    exit_code = 1


class DeviceError(CephalonError):
    """An attached device is missing, unauthorized or was lost."""

    exit_code = 1


class CalibrationRefused(CephalonError):
    """The thresholds a budget asks for cost more accuracy than allowed; nothing is written."""

    exit_code = 1


class ConcurrentChange(CephalonError):
    """Another process changed an output while this command was working on it."""

    exit_code = 1


class Note(UserWarning):
    """Something the user should know that is not an error (images converted, a held-out
    drop over budget): ``warnings.warn(text, Note)``; the CLI prints it as ``note: text``."""
