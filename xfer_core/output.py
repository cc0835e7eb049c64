"""How commands talk to the user: rich on a TTY, plain lines otherwise, JSON lines with ``--json``.

Messages and progress go to stderr; results go to stdout. With ``--json`` every
event and the final summary are single-line JSON objects on stdout, for CI.
``NO_COLOR`` is honoured by rich itself.
"""

from __future__ import annotations

import functools
import os
import sys
from functools import cached_property
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import msgspec
    from rich.console import Console
    from rich.progress import Progress, ProgressColumn


class Output:
    """Output mode of one CLI invocation (``--json``, ``-q``, ``-v``)."""

    def __init__(self, *, json: bool = False, quiet: bool = False, verbose: int = 0):
        self.json = json
        self.quiet = quiet
        self.verbose = verbose

    @property
    def is_tty(self) -> bool:
        """True when rich live displays make sense (stderr is a terminal, not --json)."""
        return not self.json and sys.stderr.isatty() and os.environ.get("TERM") != "dumb"

    @cached_property
    def console(self) -> Console:
        """A rich console on stderr (imported lazily: rich is slow to import)."""
        from rich.console import Console

        return Console(stderr=True, highlight=False)

    def byte_progress(self, *extra: ProgressColumn) -> Progress:
        """A rich live display on :attr:`console`, not started: description, bar,
        ``extra`` columns, bytes done/total (binary units), rate and time left."""
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            ProgressColumn,
            Task,
            TextColumn,
            TimeRemainingColumn,
        )
        from rich.text import Text

        class BinarySpeedColumn(ProgressColumn):
            """``12.3 MiB/s``, the units of the sizes beside it; the average since the
            start while rich has no recent samples (a tool that reports rarely)."""

            def render(self, task: Task) -> Text:
                speed = task.speed
                if speed is None and task.elapsed and task.completed:
                    speed = task.completed / task.elapsed
                if speed is None:
                    return Text("-", style="progress.data.speed")
                return Text(f"{human_bytes(speed)}/s", style="progress.data.speed")

        return Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            *extra,
            DownloadColumn(binary_units=True),
            BinarySpeedColumn(),
            TimeRemainingColumn(),
            console=self.console,
            transient=False,
        )

    @cached_property
    def stdout(self) -> Console:
        """A rich console on stdout, for tables and results."""
        from rich.console import Console

        return Console(highlight=False)

    def event(self, event: str, **fields: Any) -> None:
        """Emit one JSON event line (only with ``--json``)."""
        if self.json:
            self.emit_json({"event": event, **fields})

    def emit_json(self, obj: Any) -> None:
        """Write one JSON object as a line on stdout."""
        sys.stdout.buffer.write(_json_encoder().encode(obj) + b"\n")
        sys.stdout.flush()

    def info(self, message: str) -> None:
        """A progress/info line on stderr (hidden by -q and --json)."""
        if not self.quiet and not self.json:
            print(message, file=sys.stderr, flush=True)

    def debug(self, message: str) -> None:
        """Shown with -v only."""
        if self.verbose and not self.json:
            print(message, file=sys.stderr, flush=True)

    def warn(self, message: str) -> None:
        """A warning line on stderr (shown even with -q; as an event with --json)."""
        if self.json:
            self.event("warning", message=message)
        else:
            print(f"xfer: warning: {message}", file=sys.stderr, flush=True)


@functools.cache
def _json_encoder() -> msgspec.json.Encoder:
    # msgspec is imported on first use: `xfer --help` and friends never need it
    import msgspec

    return msgspec.json.Encoder()


#: Set by the CLI's root callback; library code may also build its own.
_current = Output()


def human_bytes(n: float) -> str:
    """``1.5 MiB`` style sizes (binary units, ``512 B`` below 1 KiB)."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} PiB"


def current() -> Output:
    """The Output of the running command."""
    return _current


def set_current(output: Output) -> None:
    global _current
    _current = output
