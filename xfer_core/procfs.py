"""The one reader of Linux ``/proc``: a process's ``stat`` line, its start time, a session's pids.

``/proc/PID/stat`` is ``PID (COMMAND) STATE PPID PGRP SESSION ...``; the command
may hold spaces and parentheses, so fields are counted after the last ``)``.
Every function answers None (or nothing) where ``/proc`` is missing or the
process is gone, never raises for that.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

#: Indexes into the fields after ``)``: field 6 (session) and 22 (starttime) of proc(5).
_SESSION = 3
_STARTTIME = 19


def stat_fields(pid: int | str) -> list[str] | None:
    """The fields of ``/proc/PID/stat`` after the command name (``STATE`` first), or None."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text.rpartition(")")[2].split()


@functools.cache
def boot_time() -> float | None:
    """When the machine booted (``btime`` of ``/proc/stat``, POSIX seconds), or None."""
    try:
        for line in Path("/proc/stat").read_text().splitlines():
            if line.startswith("btime "):
                return float(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def process_start(pid: int) -> float | None:
    """When process ``pid`` started (POSIX seconds), or None when that cannot be known."""
    fields = stat_fields(pid)
    boot = boot_time()
    if fields is None or boot is None:
        return None
    try:
        ticks = int(fields[_STARTTIME])
    except (ValueError, IndexError):
        return None
    tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    return boot + ticks / tick


def session_pids(sid: int) -> list[int]:
    """Pids of every process in session ``sid``."""
    out: list[int] = []
    try:
        entries = [e.name for e in os.scandir("/proc") if e.name.isdigit()]
    except OSError:
        return out
    for name in entries:
        fields = stat_fields(name)
        try:
            if fields is not None and int(fields[_SESSION]) == sid:
                out.append(int(name))
        except (ValueError, IndexError):
            continue
    return out
