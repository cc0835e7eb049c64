"""Helpers for the manifest build/rebase/combine/verify tests: real trees and the real CLI."""

from __future__ import annotations

import contextlib
import io
import os
import signal
import subprocess
from pathlib import Path

#: Names any POSIX source may hold; each must come out of build unchanged.
HOSTILE_NAMES: list[bytes] = [
    b"plain.txt",
    b"with space",
    b"quote'single",
    b'quote"double',
    b"hash#mark",
    b"semi;colon",
    b"  leading spaces",
    b"-leading-dash",
    b"--looks-like-an-option",
    b"back\\slash",
    b"new\nline",
    b"tab\there",
    "non-ascii-é-ü-日本".encode(),
    b"invalid-utf8-\xff\xfe",
    b"dollar$HOME",
    b"star*glob?[x]",
    b"dir with space/inner;file",
    b"-dashdir/#hash/\xe9latin1",
]


def make_tree(root: Path, names: list[bytes] = HOSTILE_NAMES) -> dict[bytes, int]:
    """Create one file per name under ``root`` (contents differ); {name: size}."""
    made: dict[bytes, int] = {}
    for i, name in enumerate(names):
        full = os.fsencode(root) + b"/" + name
        os.makedirs(os.path.dirname(full), exist_ok=True)
        data = b"x" * (i * 7 + 1)
        with open(full, "wb") as fh:
            fh.write(data)
        made[name] = len(data)
    return made


def xfer(*args: str) -> subprocess.CompletedProcess[str]:
    """Run the CLI in this process (``xfer_core.cli.app.main``), as the console script does.

    Same argument parsing, error lines and exit codes as a real ``xfer`` run,
    without paying an interpreter start per call. Tests that need a separate
    process (signals, dropped privileges) use :func:`xfer_subprocess`.
    """
    from xfer_core.cli.app import main
    from xfer_core.output import Output, set_current

    out = io.TextIOWrapper(io.BytesIO(), encoding="utf-8", write_through=True)
    err = io.StringIO()
    term = signal.getsignal(signal.SIGTERM)
    code: int | str | None = 0
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                main(list(args))
            except SystemExit as exc:
                code = exc.code
    finally:
        signal.signal(signal.SIGTERM, term)
        set_current(Output())
    out.seek(0)
    returncode = code if isinstance(code, int) else (0 if code is None else 1)
    return subprocess.CompletedProcess(
        ["xfer", *args], returncode, out.buffer.getvalue().decode("utf-8"), err.getvalue()
    )


def xfer_subprocess(*args: str) -> subprocess.CompletedProcess[str]:
    """Run the real CLI (``python -m xfer_core.cli``) in a child process."""
    from xfer_core.testing.cli import xfer as run

    return run(*args, timeout=120)
