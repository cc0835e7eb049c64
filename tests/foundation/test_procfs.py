"""The one /proc reader: a process's start time and a session's pids (Linux)."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from xfer_core.procfs import boot_time, process_start, session_pids, stat_fields


def test_a_child_started_after_this_process_and_before_now() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        mine, theirs, boot = process_start(os.getpid()), process_start(child.pid), boot_time()
        assert boot is not None and mine is not None and theirs is not None
        assert boot <= mine <= theirs <= time.time() + 1
    finally:
        child.kill()
        child.wait()


def test_session_pids_are_the_processes_of_that_session_only() -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(30)"], start_new_session=True
    )
    try:
        assert session_pids(child.pid) == [child.pid]
        assert child.pid not in session_pids(os.getsid(0))
        assert os.getpid() in session_pids(os.getsid(0))
    finally:
        child.kill()
        child.wait()


def test_a_gone_process_has_no_stat() -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    assert stat_fields(child.pid) is None and process_start(child.pid) is None
