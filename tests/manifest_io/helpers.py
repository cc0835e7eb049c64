"""Helpers for the manifest build/rebase/combine/verify tests: real trees and the real CLI."""

from __future__ import annotations

import os
import subprocess
import sys
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


def xfer(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run the real CLI (``python -m xfer_core.cli``) and capture its output."""
    return subprocess.run(
        [sys.executable, "-m", "xfer_core.cli", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=120,
    )
