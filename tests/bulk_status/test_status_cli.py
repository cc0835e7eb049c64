"""``xfer status`` on run dirs made by the real manifest and shard code, state files as a worker writes them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import msgspec
import pytest

from xfer_core.bulk.state import JobRecord
from xfer_core.manifest.shard import shard_manifest
from xfer_core.testing.cli import xfer_argv

from .rundirs import make_run, put, xfer


def status_json(run: Path, *extra: str) -> tuple[int, dict]:
    proc = xfer("status", "--run-dir", str(run), "--json", "--no-scheduler", *extra)
    assert proc.stderr == ""
    lines = proc.stdout.splitlines()
    assert len(lines) == 1
    return proc.returncode, json.loads(lines[0])


def test_all_done_exits_0_and_counts_everything(tmp_path: Path) -> None:
    run, digests = make_run(tmp_path)
    for i, d in enumerate(digests):
        put(run, f"shard_{i}.done", d)
        put(run, f"shard_{i}.attempt", "1")
    rc, doc = status_json(run)
    assert rc == 0
    assert doc["complete"] is True and doc["exit_code"] == 0
    t = doc["totals"]
    assert t["done"] == t["shards"] == 4 and t["records_done"] == t["records"] == 12
    assert t["bytes_done"] == t["bytes"] == sum(1000 * (i + 1) for i in range(12))
    assert t["attempts"] == 4
    proc = xfer("status", "--run-dir", str(run), "--no-scheduler")
    assert proc.returncode == 0
    assert "shards: 4 total, 4 done" in proc.stdout and "all shards done" in proc.stdout


def test_permanent_failure_exits_1_with_the_reason(tmp_path: Path) -> None:
    run, digests = make_run(tmp_path)
    put(run, "shard_0.done", digests[0])
    put(run, "shard_1.attempt", "2")
    put(run, "shard_1.fail", "attempt 2: rclone exit 5: AccessDenied")
    put(run, "shard_2.attempt", "1")
    put(run, "shard_2.fail", "attempt 1: verify: 3 missing, 1 size mismatch")
    rc, doc = status_json(run)
    assert rc == 1 and doc["exit_code"] == 1
    assert doc["failed"] == [
        {"shard": 1, "attempts": 2, "last_error": "attempt 2: rclone exit 5: AccessDenied"}
    ]
    t = doc["totals"]
    assert (t["done"], t["failed"], t["retrying"], t["pending"]) == (1, 1, 1, 1)
    proc = xfer("status", "--run-dir", str(run), "--no-scheduler")
    assert proc.returncode == 1
    assert "shard 1 (2/2 attempts): attempt 2: rclone exit 5: AccessDenied" in proc.stdout
    assert "shard 2 (1/2 attempts): attempt 1: verify: 3 missing" in proc.stdout


def test_a_new_submission_turns_failed_into_retrying(tmp_path: Path) -> None:
    run, _ = make_run(tmp_path, shards=2)
    put(run, "shard_0.attempt", "2")
    put(run, "shard_0.fail", "attempt 2: boom")
    jobs = [JobRecord(scheduler="local", job_id=f"local-{n}", submitted_at=1.0) for n in (1, 2)]
    (run / "jobs.json").write_bytes(msgspec.json.encode(jobs))
    rc, doc = status_json(run)
    assert rc == 0
    assert doc["shards"][0]["status"] == "retrying" and doc["shards"][0]["attempt_limit"] == 4


def test_stale_done_of_an_older_sharding_is_ignored(tmp_path: Path) -> None:
    run, digests = make_run(tmp_path, shards=3)
    for i in range(3):
        put(run, f"shard_{i}.done", digests[i])
    # re-shard the same manifest differently: every old .done is now stale
    shard_manifest(run / "manifest.jsonl", run / "shards", num_shards=2)
    rc, doc = status_json(run)
    assert rc == 0
    t = doc["totals"]
    assert (t["shards"], t["done"], t["pending"], t["stale_done"]) == (2, 0, 2, 2)
    assert doc["orphans"] == [2]
    proc = xfer("status", "--run-dir", str(run), "--no-scheduler")
    assert "ignored: 2 .done file(s) of an older sharding" in proc.stdout


def test_running_and_dead_workers(tmp_path: Path) -> None:
    run, _ = make_run(tmp_path, shards=3)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        now = int(time.time())
        host = os.uname().nodename.split(".")[0]
        put(run, "shard_0.attempt", "1")
        put(run, "shard_0.running", f"{host} {sleeper.pid} {now} 1")
        put(run, "shard_1.attempt", "2")
        put(run, "shard_1.running", f"{host} {dead.pid} {now} 2")
        rc, doc = status_json(run)
    finally:
        sleeper.kill()
        sleeper.wait()
    assert rc == 1  # shard 1's worker died on its last attempt
    s0, s1, s2 = doc["shards"]
    assert s0["status"] == "running" and s0["running"]["pid"] == sleeper.pid
    assert s1["status"] == "failed" and "worker died" in s1["last_error"]
    assert s2["status"] == "pending"


def test_watch_returns_when_the_run_is_over(tmp_path: Path) -> None:
    run, digests = make_run(tmp_path, shards=2)
    put(run, "shard_0.done", digests[0])
    argv = ["--json", "status", "--run-dir", str(run), "--watch", "--interval", "0.2"]
    proc = subprocess.Popen(
        [*xfer_argv(), *argv, "--no-scheduler"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    first = json.loads(proc.stdout.readline())
    assert first["totals"]["done"] == 1 and not first["finished"]
    put(run, "shard_1.done", digests[1])
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    last = json.loads(out.splitlines()[-1])
    assert last["complete"] is True


def test_slurm_jobs_without_a_reachable_controller_say_so_in_one_line(tmp_path: Path) -> None:
    run, digests = make_run(tmp_path, shards=2)
    put(run, "shard_0.done", digests[0])
    jobs = [JobRecord(scheduler="slurm", job_id="4242", submitted_at=time.time(), shards=[0, 1])]
    (run / "jobs.json").write_bytes(msgspec.json.encode(jobs))
    conf = tmp_path / "nowhere.conf"
    conf.write_text("ClusterName=x\nSlurmctldHost=localhost\nSlurmctldPort=1\n")
    proc = xfer("status", "--run-dir", str(run), env={"SLURM_CONF": str(conf)})
    assert proc.returncode == 0, proc.stderr
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("slurm scheduler:")]
    assert len(lines) == 1 and "state from the run dir only" in lines[0]
    assert "shards: 2 total, 1 done" in proc.stdout


@pytest.mark.parametrize("setup", ["missing", "no-meta", "bad-jobs"])
def test_bad_run_dirs_fail_in_one_line(tmp_path: Path, setup: str) -> None:
    if setup == "missing":
        run = tmp_path / "nope"
    elif setup == "no-meta":
        run = tmp_path / "empty"
        run.mkdir()
    else:
        run, _ = make_run(tmp_path)
        (run / "jobs.json").write_text("[{]")
    proc = xfer("status", "--run-dir", str(run))
    assert proc.returncode == 2
    assert proc.stderr.startswith("xfer: error: ") and "Traceback" not in proc.stderr
    assert str(run) in proc.stderr.splitlines()[0]
