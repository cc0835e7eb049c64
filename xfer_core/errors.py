"""The one error type the CLI prints, and the exit codes every command shares.

Every error a user can cause is raised as an :class:`XferError` (or a subclass)
carrying the exit code. The CLI prints ``xfer: error: <message>`` as one line
(with the hint on a second line when there is one) and a traceback only with ``-v``.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """Exit codes, the same for every command (documented in docs/exit-codes.md)."""

    OK = 0
    #: Some items (pairs, shards, objects) failed; the rest went on.
    FAILED = 1
    #: Usage or configuration error: bad flags, bad config, bad manifest line.
    USAGE = 2
    #: A required tool or service is unavailable (rsync, rclone, sshd, slurmctld).
    UNAVAILABLE = 3
    #: Interrupted (SIGINT / SIGTERM).
    INTERRUPTED = 130


class XferError(Exception):
    """An error with a one-line message for the user and an exit code."""

    exit_code: ExitCode = ExitCode.USAGE

    def __init__(self, message: str, *, hint: str | None = None, exit_code: ExitCode | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint
        if exit_code is not None:
            self.exit_code = exit_code

    def __str__(self) -> str:
        return self.message


class ConfigError(XferError):
    """Bad config file, key or value (exit 2)."""


class ManifestError(XferError):
    """Bad manifest line or file (exit 2). The message starts with ``FILE:LINE:``."""


class UnavailableError(XferError):
    """A required tool or service is not available (exit 3)."""

    exit_code = ExitCode.UNAVAILABLE


class TransferError(XferError):
    """Something that was tried failed (exit 1): a pair, a shard, a verification."""

    exit_code = ExitCode.FAILED
