"""End to end on the real Slurm and S3 fixtures, through the CLI as a user runs it:
`xfer run` → Slurm array → `xfer status` → `xfer manifest verify`, then faults, each
followed by a re-run that completes with nothing missing."""

from __future__ import annotations

import os
import signal
import uuid
from pathlib import Path

import pytest

from xfer_core.testing.engine_conformance import PORTABLE_NAMES as HOSTILE
from xfer_core.testing.engine_conformance import make_tree, read_tree
from xfer_core.testing.services import S3Server, SlurmCluster

from .helpers import (
    SLURM_ARGS,
    gated_rclone,
    release_held,
    state_text,
    status,
    verify,
    wait_for,
    wait_idle,
    xfer,
)

pytestmark = [pytest.mark.slurm, pytest.mark.s3]

#: rclone gives up fast against a dead endpoint (the default retries take minutes).
FAST_FAIL = "--retries 1 --low-level-retries 1 --contimeout 2s --timeout 5s"


def _prefix(tag: str) -> str:
    return f"{tag}-{uuid.uuid4().hex[:8]}"


def _prepare(
    run: Path,
    source: str,
    dest: str,
    s3: S3Server,
    slurm: SlurmCluster,
    *extra: str,
    env: dict[str, str] | None = None,
) -> None:
    proc = xfer(
        "run",
        "--run-dir",
        str(run),
        "--source",
        source,
        "--dest",
        dest,
        "--rclone-config",
        str(s3.rclone_config),
        "--partition",
        slurm.partition,
        *SLURM_ARGS,
        *extra,
        env={**slurm.env, **(env or {})},
    )
    assert proc.returncode == 0, proc.stderr


def _submit(run: Path, slurm: SlurmCluster) -> str:
    proc = xfer("slurm", "submit", "--run-dir", str(run), env=slurm.env)
    assert proc.returncode == 0, proc.stderr
    job_id = proc.stdout.strip()
    assert job_id.isdigit(), proc.stdout
    return job_id


def _assert_complete(run: Path, slurm: SlurmCluster, s3: S3Server) -> dict:
    rc, doc = status(run, slurm.env)
    assert rc == 0 and doc["complete"], doc["totals"]
    assert doc["totals"]["bytes_done"] == doc["totals"]["bytes"]
    verify(run, s3)
    return doc


def test_s3_to_s3_hostile_names_several_shards_throttled(
    tmp_path: Path, slurm: SlurmCluster, s3: S3Server
) -> None:
    prefix = _prefix("s2s")
    names = HOSTILE + [f"many/obj {i:02d}.bin" for i in range(12)]
    files = make_tree(s3.root / "src" / prefix, names)
    run = tmp_path / "run"
    _prepare(
        run, s3.remote("src", prefix), s3.remote("dst", prefix), s3, slurm,
        "--num-shards", "5", "--array-concurrency", "2",
    )  # fmt: skip
    job_id = _submit(run, slurm)
    shown = slurm.run(["scontrol", "show", "job", job_id]).stdout
    assert "ArrayTaskThrottle=2" in shown
    doc = wait_idle(run, slurm)
    assert doc["totals"]["done"] == 5 and doc["totals"]["records_done"] == len(names)
    assert read_tree(s3.root / "dst" / prefix) == files
    _assert_complete(run, slurm, s3)
    assert not list(tmp_path.rglob("CANARY")) and not list(s3.root.rglob("CANARY"))
    # a re-run submits nothing: every shard is done
    proc = xfer("--json", "slurm", "submit", "--run-dir", str(run), env=slurm.env)
    assert proc.returncode == 0 and '"job_id":null' in proc.stdout


def test_posix_to_s3_hostile_names(tmp_path: Path, slurm: SlurmCluster, s3: S3Server) -> None:
    src = tmp_path / "src 'tree' $(x)"
    files = make_tree(src, HOSTILE + [f"d{i % 3}/f {i}.dat" for i in range(9)])
    prefix = _prefix("p2s")
    run = tmp_path / "run"
    _prepare(
        run, str(src), s3.remote("dst", prefix), s3, slurm,
        "--num-shards", "4", "--array-concurrency", "2", "--submit",
    )  # fmt: skip
    doc = wait_idle(run, slurm)
    assert doc["totals"]["done"] == 4
    assert read_tree(s3.root / "dst" / prefix) == files
    _assert_complete(run, slurm, s3)
    assert not list(tmp_path.rglob("CANARY"))


def test_kill_9_of_a_worker_mid_shard_then_retry(
    tmp_path: Path, slurm: SlurmCluster, s3: S3Server
) -> None:
    prefix = _prefix("kill")
    files = make_tree(s3.root / "src" / prefix, [f"k/o{i}.bin" for i in range(8)])
    wrapper, gate = gated_rclone(tmp_path)
    run = tmp_path / "run"
    _prepare(
        run, s3.remote("src", prefix), s3.remote("dst", prefix), s3, slurm,
        "--num-shards", "2", "--array-concurrency", "2",
        env={"XFER_RCLONE": str(wrapper)},
    )  # fmt: skip
    gate.touch()
    job_id = _submit(run, slurm)
    running = run / "state" / "shard_0.running"
    wait_for(running.exists, "shard 0 to start")
    host, pid, _start, attempt = running.read_text().split()
    os.kill(int(pid), signal.SIGKILL)
    wait_for((run / "state" / "shard_1.running").exists, "shard 1 to start")
    # the killed task leaves the queue a moment later (COMPLETING counts as running)
    wait_for(
        lambda: (
            len(slurm.run(["squeue", "-h", "-r", "-j", job_id, "-o", "%i"]).stdout.split()) == 1
        ),
        "the killed task to leave the queue",
    )
    # shard 1 is held at the gate: status shows the queue, retry refuses to double-run
    proc = xfer("status", "--run-dir", str(run), env=slurm.env)
    assert "slurm scheduler: 1 running" in proc.stdout, proc.stdout
    proc = xfer("retry", "--run-dir", str(run), env=slurm.env)
    assert proc.returncode == 2 and "still in the queue" in proc.stderr
    gate.unlink()
    doc = wait_idle(run, slurm)
    s0, s1 = doc["shards"]
    assert s1["status"] == "done"
    assert s0["status"] == "retrying" and "worker died" in s0["last_error"]
    assert f"pid {pid} on {host}" in s0["last_error"]

    proc = xfer("--json", "retry", "--run-dir", str(run), env=slurm.env)
    assert proc.returncode == 0, proc.stderr
    assert '"shards":[0]' in proc.stdout
    doc = wait_idle(run, slurm)
    assert read_tree(s3.root / "dst" / prefix) == files
    doc = _assert_complete(run, slurm, s3)
    assert doc["shards"][0]["attempts"] == int(attempt) + 1


def test_s3_server_stopped_mid_run_and_restarted(
    tmp_path: Path, slurm: SlurmCluster, s3: S3Server
) -> None:
    prefix = _prefix("s3down")
    files = make_tree(s3.root / "src" / prefix, [f"o{i}.bin" for i in range(6)])
    wrapper, gate = gated_rclone(tmp_path)
    run = tmp_path / "run"
    _prepare(
        run, s3.remote("src", prefix), s3.remote("dst", prefix), s3, slurm,
        "--num-shards", "1", "--rclone-flags", FAST_FAIL,
        env={"XFER_RCLONE": str(wrapper)},
    )  # fmt: skip
    gate.touch()
    _submit(run, slurm)
    wait_for((run / "state" / "shard_0.running").exists, "shard 0 to start")
    s3.stop()
    try:
        gate.unlink()
        # attempt 1 fails against the dead endpoint; the task requeues itself (held)
        wait_for((run / "state" / "shard_0.fail").exists, "attempt 1 to fail", timeout=120)
        assert state_text(run, "shard_0.fail").startswith("attempt 1: ")
    finally:
        s3.start()
    doc = wait_idle(run, slurm)
    if not doc["complete"]:  # every attempt of the submission fell in the outage
        assert xfer("retry", "--run-dir", str(run), env=slurm.env).returncode == 0
        wait_idle(run, slurm)
    doc = _assert_complete(run, slurm, s3)
    assert doc["shards"][0]["attempts"] >= 2
    assert read_tree(s3.root / "dst" / prefix) == files
    assert (run / "logs" / "shard_0_attempt_1.log").is_file()


def test_a_shard_that_always_fails_reaches_max_attempts(
    tmp_path: Path, slurm: SlurmCluster, s3: S3Server
) -> None:
    prefix = _prefix("fail")
    files = make_tree(s3.root / "src" / prefix, [f"f/o{i}.bin" for i in range(6)])
    run = tmp_path / "run"
    _prepare(
        run, s3.remote("src", prefix), s3.remote("dst", prefix), s3, slurm,
        "--num-shards", "2", "--max-attempts", "2",
    )  # fmt: skip
    # an object listed in the manifest is gone before the copy: its shard can never verify
    victim = s3.root / "src" / prefix / "f/o3.bin"
    victim.unlink()
    _submit(run, slurm)
    doc = wait_idle(run, slurm)
    rc, doc = status(run, slurm.env)
    assert rc == 1, (doc["shards"], doc["schedulers"])
    [failed] = doc["failed"]
    assert failed["attempts"] == 2
    assert (
        failed["last_error"].startswith("attempt 2: ")
        and "missing at source" in (failed["last_error"])
    )
    assert state_text(run, f"shard_{failed['shard']}.fail") == failed["last_error"]
    logs = {p.name for p in (run / "logs").iterdir()}
    assert {f"shard_{failed['shard']}_attempt_{k}.log" for k in (1, 2)} <= logs
    # retry leaves a shard out of attempts alone unless asked
    proc = xfer("retry", "--run-dir", str(run), env=slurm.env)
    assert proc.returncode == 1 and "--include-failed" in proc.stderr

    victim.write_bytes(files["f/o3.bin"])
    proc = xfer("retry", "--run-dir", str(run), "--include-failed", env=slurm.env)
    assert proc.returncode == 0, proc.stderr
    wait_idle(run, slurm)
    _assert_complete(run, slurm, s3)
    assert read_tree(s3.root / "dst" / prefix) == files
    assert not (run / "state" / f"shard_{failed['shard']}.fail").exists()


def test_time_limit_is_caught_by_usr1_and_recorded(
    tmp_path: Path, slurm: SlurmCluster, s3: S3Server
) -> None:
    prefix = _prefix("tlimit")
    files = make_tree(s3.root / "src" / prefix, [f"t/o{i}.bin" for i in range(4)])
    wrapper, gate = gated_rclone(tmp_path)
    run = tmp_path / "run"
    # a 1-minute limit; USR1 comes at slurmctld's first check (~30 s in)
    _prepare(
        run, s3.remote("src", prefix), s3.remote("dst", prefix), s3, slurm,
        "--num-shards", "1", "--time-limit", "1",
        env={"XFER_RCLONE": str(wrapper)},
    )  # fmt: skip
    assert "--signal=B:USR1@" in (run / "sbatch_array.sh").read_text()
    gate.touch()
    _submit(run, slurm)
    fail = run / "state" / "shard_0.fail"
    wait_for(fail.exists, "the time-limit signal", timeout=100)
    assert state_text(run, "shard_0.fail") == "attempt 1: time limit"
    assert not (run / "state" / "shard_0.running").exists()
    gate.unlink()
    doc = wait_idle(run, slurm)
    if not doc["complete"]:
        assert xfer("retry", "--run-dir", str(run), env=slurm.env).returncode == 0
        wait_idle(run, slurm)
    doc = _assert_complete(run, slurm, s3)
    assert doc["shards"][0]["attempts"] == 2
    assert read_tree(s3.root / "dst" / prefix) == files


def test_resharding_after_a_partial_run_ignores_stale_done(
    tmp_path: Path, slurm: SlurmCluster, s3: S3Server
) -> None:
    prefix = _prefix("reshard")
    names = [f"r/o{i:02d}.bin" for i in range(12)]
    files = make_tree(s3.root / "src" / prefix, names)
    src, dst = s3.remote("src", prefix), s3.remote("dst", prefix)
    run = tmp_path / "run"
    _prepare(run, src, dst, s3, slurm, "--num-shards", "4", "--max-attempts", "1")
    victim = s3.root / "src" / prefix / "r/o05.bin"
    victim.unlink()
    _submit(run, slurm)
    wait_idle(run, slurm)
    rc, doc = status(run, slurm.env)
    assert rc == 1 and doc["totals"]["done"] == 3  # a partial run
    done_before = {s["index"] for s in doc["shards"] if s["status"] == "done"}

    victim.write_bytes(files["r/o05.bin"])
    _prepare(run, src, dst, s3, slurm, "--num-shards", "3")
    rc, doc = status(run, slurm.env)
    t = doc["totals"]
    # the old .done files hold digests of the old shards: none counts
    assert (t["shards"], t["done"]) == (3, 0)
    assert t["stale_done"] == len(done_before & {0, 1, 2})
    assert doc["orphans"] == [3]
    _submit(run, slurm)
    wait_idle(run, slurm)
    doc = _assert_complete(run, slurm, s3)
    assert all(s["attempts"] >= 1 for s in doc["shards"])
    assert read_tree(s3.root / "dst" / prefix) == files


def test_more_shards_than_max_array_size(tmp_path: Path, slurm: SlurmCluster, s3: S3Server) -> None:
    prefix = _prefix("maxarr")
    files = make_tree(s3.root / "src" / prefix, [f"m/o{i}.bin" for i in range(10)])
    run = tmp_path / "run"
    _prepare(
        run, s3.remote("src", prefix), s3.remote("dst", prefix), s3, slurm,
        "--num-shards", "5", "--max-array-size", "2", "--array-concurrency", "2", "--submit",
    )  # fmt: skip
    doc = wait_idle(run, slurm)
    assert doc["totals"]["done"] == 5
    job = doc["jobs"][-1]
    shown = slurm.run(["scontrol", "show", "job", job["job_id"]]).stdout
    assert "ArrayTaskId=0-1" in shown or "ArrayTaskId=0" in shown
    assert read_tree(s3.root / "dst" / prefix) == files
    _assert_complete(run, slurm, s3)
    release_held(slurm)
