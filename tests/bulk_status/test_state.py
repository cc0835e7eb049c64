"""The run-dir state model: generated state dirs, checked against the contract of docs/run.md."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from xfer_core.bulk.state import (
    DEFAULT_MAX_ATTEMPTS,
    JobRecord,
    RunState,
    ShardRef,
    estimate_throughput,
    load_run_state,
    pending_shards,
    read_jobs,
    read_max_attempts,
)
from xfer_core.errors import XferError

HOST = socket.gethostname()
CURRENT = "a" * 64
OLD = "b" * 64


_dead: list[int] = []


def _dead_pid() -> int:
    """A pid that no process or thread has now. Checked at each use, not taken once at
    import: minutes of tests later (pid_max 32768 wraps in ~10 min of this suite) the pid
    can belong to a live process again, whose worker would then count as alive."""
    while not _dead or os.path.exists(f"/proc/{_dead[0]}"):
        proc = subprocess.Popen([sys.executable, "-c", "pass"])
        proc.wait()
        _dead[:] = [proc.pid]
    return _dead[0]


#: One shard's files: done ∈ {None, current, old}, attempt, fail, running ∈ {None, alive, dead, remote}
shard_files = st.fixed_dictionaries(
    {
        "done": st.sampled_from([None, "current", "old"]),
        "attempt": st.one_of(st.none(), st.integers(0, 5)),
        # attempts stopped from outside (scancel, admin requeue, node DOWN): not counted
        "interrupted": st.one_of(st.none(), st.integers(0, 5)),
        "fail": st.one_of(st.none(), st.text(min_size=1, max_size=30).map(str.strip)),
        "running": st.sampled_from([None, "alive", "dead", "remote", "garbage"]),
        "bytes": st.integers(0, 10**12),
        "records": st.integers(1, 10**6),
    }
)


def _write_state(state: Path, i: int, spec: dict) -> None:
    if spec["done"] is not None:
        (state / f"shard_{i}.done").write_text(
            (CURRENT if spec["done"] == "current" else OLD) + "\n"
        )
    if spec["attempt"] is not None:
        (state / f"shard_{i}.attempt").write_text(f"{spec['attempt']}\n")
    if spec["fail"] is not None:
        (state / f"shard_{i}.fail").write_text(spec["fail"] + "\n")
    if spec["interrupted"] is not None:
        (state / f"shard_{i}.interrupted").write_text(f"{spec['interrupted']}\n")
    running = spec["running"]
    if running is not None:
        attempt = spec["attempt"] or 1
        text = {
            "alive": f"{HOST} {os.getpid()} {time.time():.0f} {attempt}",
            "dead": f"{HOST} {_dead_pid()} {time.time():.0f} {attempt}",
            "remote": f"node-elsewhere-17 4242 {time.time():.0f} {attempt}",
            "garbage": "not a running line",
        }[running]
        (state / f"shard_{i}.running").write_text(text + "\n")


def _load(
    specs: list[dict],
    max_attempts: int,
    jobs_alive: bool | None = None,
    jobs: list[JobRecord] | None = None,
) -> RunState:
    with tempfile.TemporaryDirectory() as tmp:
        state = Path(tmp) / "state"
        state.mkdir()
        for i, spec in enumerate(specs):
            _write_state(state, i, spec)
        (state / ".shard_0.done.x1y2.tmp").write_text("in flight")  # temp files are ignored
        refs = [ShardRef(records=s["records"], bytes=s["bytes"], digest=CURRENT) for s in specs]
        if jobs is not None:
            (Path(tmp) / "jobs.json").write_bytes(msgspec.json.encode(jobs))
        return load_run_state(tmp, shards=refs, max_attempts=max_attempts, jobs_alive=jobs_alive)


@settings(max_examples=60, deadline=None)
@given(
    specs=st.lists(shard_files, max_size=12),
    max_attempts=st.integers(1, 4),
    jobs_alive=st.sampled_from([None, True, False]),
    job_shards=st.lists(st.lists(st.integers(0, 11), max_size=6), max_size=3),
)
def test_generated_state_dirs_follow_the_contract(
    specs: list[dict], max_attempts: int, jobs_alive: bool | None, job_shards: list[list[int]]
) -> None:
    jobs = [
        JobRecord(scheduler="slurm", job_id=str(n), submitted_at=1.0, shards=shards)
        for n, shards in enumerate(job_shards)
    ]
    rs = _load(specs, max_attempts, jobs_alive, jobs)
    assert len(rs.shards) == len(specs)
    for spec, s in zip(specs, rs.shards, strict=True):
        # each submission that included the shard (an empty list: all) gives max_attempts tries
        subs = sum(1 for shards in job_shards if not shards or s.index in shards)
        assert s.submissions == subs
        limit = max_attempts * max(1, subs)
        assert s.attempt_limit == limit
        # done iff the .done digest matches the current shard; a stale .done is flagged
        assert (s.status == "done") == (spec["done"] == "current")
        assert s.stale_done == (spec["done"] == "old")
        if s.status == "done":
            assert s.done_at is not None and s.last_error is None
            continue
        live_worker = spec["running"] == "alive" or (
            spec["running"] == "remote" and jobs_alive is not False
        )
        dead_worker = spec["running"] == "dead" or (
            spec["running"] in ("alive", "remote") and jobs_alive is False
        )
        if live_worker and jobs_alive is not False:
            assert s.status == "running"
            assert s.running is not None
        elif dead_worker or spec["fail"] is not None:
            assert s.interrupted == min(spec["interrupted"] or 0, s.attempts)
            counted = s.attempts - s.interrupted
            assert s.status == ("failed" if counted >= limit else "retrying")
            assert s.last_error
            if dead_worker:
                assert "worker died" in s.last_error
            else:
                assert s.last_error == (spec["fail"].strip() or s.last_error)
        else:
            assert s.status == "pending"
        assert s.attempts >= (spec["attempt"] or 0)

    t = rs.totals
    assert t.shards == len(specs)
    assert t.done + t.running + t.retrying + t.failed + t.pending == t.shards
    assert t.bytes == sum(s["bytes"] for s in specs)
    assert t.bytes_done == sum(s.bytes for s in rs.shards if s.status == "done")
    assert t.records_done == sum(s.records for s in rs.shards if s.status == "done")
    assert t.stale_done == sum(1 for s in specs if s["done"] == "old")
    assert rs.complete == (t.done == t.shards)

    todo = pending_shards(rs)
    everything = pending_shards(rs, include_failed=True, include_running=True)
    assert everything == [s.index for s in rs.shards if s.status != "done"]
    assert set(todo) <= set(everything)
    for s in rs.shards:
        assert (s.index in todo) == (s.status in ("pending", "retrying"))
    # a larger attempt budget brings permanently failed shards back
    assert pending_shards(rs, include_failed=True) == [
        s.index for s in rs.shards if s.status in ("pending", "retrying", "failed")
    ]
    assert pending_shards(rs, max_attempts=99) == [
        s.index for s in rs.shards if s.status in ("pending", "retrying", "failed")
    ]
    # the whole state encodes as JSON (what `xfer status --json` prints)
    assert msgspec.json.decode(msgspec.json.encode(rs))["totals"]["shards"] == len(specs)


def test_orphans_and_unknown_files(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    (state / "shard_0.done").write_text(CURRENT)
    (state / "shard_7.done").write_text(CURRENT)  # beyond the current 2 shards
    (state / "shard_x.done").write_text(CURRENT)
    (state / "notes.txt").write_text("hello")
    (state / "shard_1.attempt").write_text("garbage")
    refs = [ShardRef(records=1, bytes=10, digest=CURRENT)] * 2
    rs = load_run_state(tmp_path, shards=refs, max_attempts=2)
    assert [s.status for s in rs.shards] == ["done", "pending"]
    assert rs.shards[1].attempts == 0
    assert rs.orphans == [7]


def test_interrupted_attempts_do_not_use_up_the_limit(tmp_path: Path) -> None:
    """An admin's requeue storm (5 attempts stopped from outside) leaves the shard
    retrying; its own failures alone reach the limit."""
    state = tmp_path / "state"
    state.mkdir()
    for i, (attempts, interrupted) in enumerate([(6, 5), (6, 4), (2, 0)]):
        (state / f"shard_{i}.attempt").write_text(f"{attempts}\n")
        (state / f"shard_{i}.interrupted").write_text(f"{interrupted}\n")
        (state / f"shard_{i}.fail").write_text(f"attempt {attempts}: boom\n")
    refs = [ShardRef(records=1, bytes=10, digest=CURRENT)] * 3
    rs = load_run_state(tmp_path, shards=refs, max_attempts=2)
    assert [s.status for s in rs.shards] == ["retrying", "failed", "failed"]
    assert [s.interrupted for s in rs.shards] == [5, 4, 0]
    assert pending_shards(rs) == [0]


def test_missing_state_dir_means_all_pending(tmp_path: Path) -> None:
    refs = [ShardRef(records=1, bytes=10, digest=CURRENT)] * 3
    rs = load_run_state(tmp_path, shards=refs)
    assert rs.max_attempts == DEFAULT_MAX_ATTEMPTS
    assert rs.totals.pending == 3 and pending_shards(rs) == [0, 1, 2]


def test_max_attempts_from_resolved_config(tmp_path: Path) -> None:
    assert read_max_attempts(tmp_path) == DEFAULT_MAX_ATTEMPTS
    (tmp_path / "config.resolved.json").write_text('{"max_attempts": 5, "job_name": "x"}')
    assert read_max_attempts(tmp_path) == 5
    (tmp_path / "config.resolved.json").write_text("{not json")
    with pytest.raises(XferError, match=r"config\.resolved\.json: not valid JSON"):
        read_max_attempts(tmp_path)


def test_jobs_json_round_trip_and_bad_file(tmp_path: Path) -> None:
    assert read_jobs(tmp_path) == []
    jobs = [JobRecord(scheduler="slurm", job_id="12", submitted_at=100.0, shards=[0, 1])]
    (tmp_path / "jobs.json").write_bytes(msgspec.json.encode(jobs))
    assert read_jobs(tmp_path) == jobs
    (tmp_path / "jobs.json").write_text('[{"scheduler": "slurm"}]')
    with pytest.raises(XferError, match=r"jobs\.json"):
        read_jobs(tmp_path)


def _run_with_done_times(tmp_path: Path, done_at: list[float | None], now: float) -> RunState:
    state = tmp_path / "state"
    state.mkdir(exist_ok=True)
    for i, t in enumerate(done_at):
        if t is not None:
            p = state / f"shard_{i}.done"
            p.write_text(CURRENT)
            os.utime(p, (t, t))
    refs = [ShardRef(records=1, bytes=1000, digest=CURRENT)] * len(done_at)
    return load_run_state(tmp_path, shards=refs, max_attempts=3, now=now)


def test_progress_window_starts_at_latest_submission(tmp_path: Path) -> None:
    # shard 0 was done by an earlier submission; 1 and 2 by the latest one (at t=1000)
    rs = _run_with_done_times(tmp_path, [500.0, 1010.0, 1020.0, None, None], now=1040.0)
    jobs = [
        JobRecord(scheduler="local", job_id="a", submitted_at=400.0),
        JobRecord(scheduler="local", job_id="b", submitted_at=1000.0),
    ]
    p = estimate_throughput(rs, jobs)
    assert p.since == 1000.0 and p.until == 1040.0
    assert p.shards == 2 and p.bytes == 2000
    assert p.bytes_per_second == pytest.approx(50.0)
    assert p.eta_seconds == pytest.approx(2000 / 50.0)


def test_progress_of_a_finished_run_ends_at_last_completion(tmp_path: Path) -> None:
    rs = _run_with_done_times(tmp_path, [1010.0, 1020.0], now=99999.0)
    p = estimate_throughput(rs, [JobRecord(scheduler="slurm", job_id="1", submitted_at=1000.0)])
    assert p.until == 1020.0 and p.bytes_per_second == pytest.approx(100.0)
    assert p.eta_seconds is None


def test_progress_unknown_without_any_times(tmp_path: Path) -> None:
    rs = _run_with_done_times(tmp_path, [None, None], now=50.0)
    p = estimate_throughput(rs)
    assert p.bytes_per_second is None and p.eta_seconds is None
