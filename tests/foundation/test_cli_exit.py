"""The script's fast exit (``xfer_core.cli.exit_now``): the status of ``sys.exit``, atexit
callbacks run and buffered output flushed first, the normal exit while a thread lives."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

PROBE = """
import atexit, sys, threading, time
from xfer_core.cli import exit_now

class Teardown:
    def __del__(self):
        print("teardown ran")

keep = Teardown()  # freed only by the interpreter's teardown
atexit.register(lambda: print("atexit ran"))
if sys.argv[2] == "thread":
    threading.Thread(target=lambda: (time.sleep(0.2), print("thread done"))).start()
sys.stdout.write("buffered;")  # no newline: still in the pipe's buffer
code = sys.argv[1]
exit_now(int(code) if code.lstrip("-").isdigit() else None if code == "none" else code)
print("normal exit")
"""


def _probe(code: str, mode: str = "alone") -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    return subprocess.run(
        [sys.executable, "-c", PROBE, code, mode],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )


@pytest.mark.parametrize(("code", "status"), [("0", 0), ("3", 3), ("none", 0), ("-1", 255)])
def test_exits_with_the_status_after_atexit_and_flush(code: str, status: int) -> None:
    res = _probe(code)
    assert res.returncode == status
    # the teardown (the object's __del__) is skipped; nothing after the call runs
    assert res.stdout == "buffered;atexit ran\n"


def test_a_message_is_printed_with_status_1() -> None:
    res = _probe("bad config")
    assert (res.returncode, res.stderr, res.stdout) == (1, "bad config\n", "buffered;atexit ran\n")


def test_a_live_thread_gets_the_normal_exit() -> None:
    res = _probe("0", "thread")
    assert res.returncode == 0
    assert res.stdout.splitlines() == [
        "buffered;normal exit",
        "thread done",
        "atexit ran",
        "teardown ran",
    ]


def test_the_script_ends_with_the_commands_status() -> None:
    res = subprocess.run(
        [sys.executable, "-m", "xfer_core.cli", "config", "show", "--config", "/nonexistent"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode == 2
    assert res.stderr.startswith("xfer: error: no config file at /nonexistent")
