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
            print(terminal_text(message), file=sys.stderr, flush=True)

    def debug(self, message: str) -> None:
        """Shown with -v only."""
        if self.verbose and not self.json:
            print(terminal_text(message), file=sys.stderr, flush=True)

    def warn(self, message: str) -> None:
        """A warning line on stderr (shown even with -q; as an event with --json)."""
        if self.json:
            self.event("warning", message=message)
        else:
            print(f"xfer: warning: {terminal_text(message)}", file=sys.stderr, flush=True)


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


# -- text that reaches a terminal ------------------------------------------------
#: Unicode categories never printed raw: controls (C0, DEL, C1), format characters
#: (bidi overrides, zero-width), line/paragraph separators, and lone surrogates
#: (the undecodable bytes of a name read with ``surrogateescape``).
_UNSAFE_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})
_SHORT = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape_char(ch: str) -> str:
    code = ord(ch)
    if ch in _SHORT:
        return _SHORT[ch]
    if 0xDC80 <= code <= 0xDCFF:  # an undecodable byte (surrogateescape)
        return f"\\x{code - 0xDC00:02x}"
    if code < 0x80:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"


def _escape(text: str, *, backslash: bool) -> str:
    if text.isprintable() and not (backslash and "\\" in text):
        return text  # the common case, at C speed
    import unicodedata

    out = []
    for ch in text:
        if ch == "\\" and backslash:
            out.append("\\\\")
        elif ch != " " and unicodedata.category(ch) in _UNSAFE_CATEGORIES:
            out.append(_escape_char(ch))
        else:
            out.append(ch)
    return "".join(out)


def terminal_text(text: str) -> str:
    """``text`` safe to print: no control, format or separator character reaches the terminal.

    Every line xfer prints (plans, warnings, errors) passes through here, so a name
    sent by a server cannot move the cursor, clear lines or reorder the text.
    Escapes: ``\\n`` ``\\r`` ``\\t``, ``\\xNN`` (C0, DEL, undecodable bytes),
    ``\\uNNNN`` (C1, bidi and zero-width characters). Idempotent on its own output.
    """
    return _escape(text, backslash=False)


def display_name(name: str) -> str:
    """A file name for the terminal: :func:`terminal_text` plus ``\\\\`` for a backslash.

    Reversible (:func:`parse_display_name`): two names never print the same.
    """
    return _escape(name, backslash=True)


def parse_display_name(shown: str) -> str:
    """The name :func:`display_name` printed as ``shown`` (undecodable bytes as surrogates)."""
    import re

    def one(m: re.Match[str]) -> str:
        esc = m.group(0)
        if esc == "\\\\":
            return "\\"
        if esc in ("\\n", "\\r", "\\t"):
            return {"\\n": "\n", "\\r": "\r", "\\t": "\t"}[esc]
        code = int(esc[2:], 16)
        if esc[1] == "x" and code >= 0x80:
            return chr(0xDC00 + code)
        return chr(code)

    return re.sub(r"\\(?:\\|[nrt]|x[0-9a-f]{2}|u[0-9a-f]{4}|U[0-9a-f]{8})", one, shown)
