"""Helpers of the reliability suite: the CLI in a subprocess, trees, a hang guard."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import FrameType

#: Shell-looking names; every one must arrive byte-identical and run nothing.
INJECTION_NAMES = [
    "$(touch CANARY).txt",
    "`touch CANARY`.txt",
    "a;touch CANARY;b.txt",
    "q'$(touch CANARY)'.txt",
    'dq"$(touch CANARY)".txt',
    "pipe|touch CANARY.txt",
    "amp&&touch CANARY.txt",
    "nl\ntouch CANARY.txt",
    "-e touch CANARY.txt",
    "sub dir $(touch CANARY)/inner `touch CANARY`.txt",
]


class Hang(Exception):
    """Raised by :func:`bounded` when the guarded code runs too long."""


@contextlib.contextmanager
def bounded(seconds: int = 10) -> Iterator[None]:
    """Fail (raise :class:`Hang`) if the body does not finish within ``seconds``."""

    def on_alarm(signum: int, frame: FrameType | None) -> None:
        raise Hang(f"did not finish within {seconds}s")

    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def xfer(
    *args: str,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    timeout: float = 180,
) -> subprocess.CompletedProcess[str]:
    """Run the xfer CLI in a subprocess."""
    return subprocess.run(
        [sys.executable, "-m", "xfer_core.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**os.environ, "XFER_PLAIN": "1", **(env or {})},
        timeout=timeout,
        check=False,
    )


def popen_xfer(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "xfer_core.cli", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "XFER_PLAIN": "1", **(env or {})},
    )


def write_tree(root: Path, names: list[str], size: int = 0) -> dict[str, bytes]:
    """Files named ``names`` under ``root`` with distinct contents (``size`` pads them)."""
    files = {}
    for i, name in enumerate(names):
        data = (f"{i}:{name}\n".encode() * (1 + size // max(1, len(name) + 8)))[: max(size, 1)]
        if not size:
            data = f"{i}:{name}\n".encode()
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        files[name] = data
    return files


def read_tree(root: Path) -> dict[str, bytes]:
    """Every regular file under ``root`` by relative name (symlinks not followed)."""
    out = {}
    for dirpath, _dirs, names in os.walk(root):
        for name in names:
            path = Path(dirpath) / name
            if path.is_file() and not path.is_symlink():
                out[str(path.relative_to(root))] = path.read_bytes()
    return out


def canaries(*roots: Path) -> list[Path]:
    """Every file named CANARY under ``roots`` and in the current directory."""
    found = [p for root in roots if root.exists() for p in root.rglob("CANARY")]
    if Path("CANARY").exists():
        found.append(Path("CANARY").resolve())
    return found
