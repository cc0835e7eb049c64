"""The CLI frame: version, exit codes, one-line errors."""

from __future__ import annotations

import subprocess
import sys

from xfer_core import __version__


def run_xfer(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "xfer_core.cli", *args], capture_output=True, text=True, timeout=60
    )


def test_version() -> None:
    res = run_xfer("--version")
    assert res.returncode == 0
    assert res.stdout.strip() == f"xfer {__version__}"


def test_unknown_command_is_usage_error() -> None:
    res = run_xfer("no-such-command")
    assert res.returncode == 2
    assert "no-such-command" in res.stderr
