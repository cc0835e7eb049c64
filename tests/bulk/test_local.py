"""The local scheduler end to end: the same worker.sh, state, attempts and logs as on Slurm."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest

from xfer_core.bulk.pipeline import PrepareOptions, prepare_run
from xfer_core.bulk.render import RenderOptions
from xfer_core.bulk.state import load_run_state
from xfer_core.bulk.submit import submit_run
from xfer_core.procfs import session_pids
from xfer_core.testing.cli import xfer_argv

from .runtools import make_tree, read_tree, slow_rclone, wait_for, xfer


def _states(run: Path) -> dict[str, int]:
    state = load_run_state(run)
    t = state.totals
    return {"done": t.done, "failed": t.failed, "running": t.running, "shards": t.shards}


def test_local_to_local_hostile_names(
    tmp_path: Path, hostile_src: tuple[Path, dict[str, bytes]]
) -> None:
    src, files = hostile_src
    run = tmp_path / "run $(touch CANARY)"
    dst = tmp_path / "dst 'x'"
    proc = xfer(
        "--json",
        "run",
        "--run-dir",
        str(run),
        "--source",
        str(src),
        "--dest",
        str(dst),
        "--num-shards",
        "4",
        "--array-concurrency",
        "2",
        "--scheduler",
        "local",
        "--submit",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    events = [json.loads(line) for line in proc.stdout.splitlines()]
    summary = events[-1]
    assert summary["event"] == "summary"
    assert summary["done"] == summary["shards"] == 4
    assert summary["objects"] == len(files)
    assert read_tree(dst) == files
    assert _states(run)["done"] == 4
    assert not list(tmp_path.rglob("CANARY"))
    jobs = json.loads((run / "jobs.json").read_text())
    assert jobs[0]["scheduler"] == "local" and sorted(jobs[0]["shards"]) == [0, 1, 2, 3]
    # a second run does nothing and still succeeds
    again = xfer("run", "--run-dir", str(run), "--scheduler", "local", "--submit")
    assert again.returncode == 0, again.stderr
    assert "every shard is done" in again.stderr
    assert sorted(p.name for p in (run / "logs").glob("shard_*_attempt_2.log")) == []


def test_missing_source_file_fails_the_shard_until_max_attempts(tmp_path: Path) -> None:
    """rclone copy skips names missing at the source with exit 0: verification catches it."""
    src = tmp_path / "src"
    make_tree(src, [f"f{i}.txt" for i in range(8)])
    run = tmp_path / "run"
    dst = tmp_path / "dst"
    prepare_run(
        run,
        PrepareOptions(source=str(src), dest=str(dst), num_shards=3),
        RenderOptions(max_attempts=2, max_array_size=1001),
    )
    victim = "f5.txt"
    (src / victim).unlink()
    bad = next(
        i for i in range(3) if victim.encode() in (run / f"shards/shard_{i:06d}.files").read_bytes()
    )
    sub = submit_run(run, "local")
    assert sub is not None and sub.finished
    state = load_run_state(run)
    by_index = {s.index: s for s in state.shards}
    assert by_index[bad].status == "failed"
    assert by_index[bad].attempts == 2
    fail = (run / "state" / f"shard_{bad}.fail").read_text()
    assert fail.startswith("attempt 2: verify:")
    # the reason names the file and the log; the log names it too
    log2 = run / "logs" / f"shard_{bad}_attempt_2.log"
    assert f"1 missing at source (first: {victim}))" in fail
    assert fail.rstrip().endswith(f"(log: {log2})")
    assert f"missing at source: {victim}\n" in log2.read_text()
    assert not (run / "state" / f"shard_{bad}.done").exists()
    assert (run / "logs" / f"shard_{bad}_attempt_1.log").is_file()
    assert (run / "logs" / f"shard_{bad}_attempt_2.log").is_file()
    assert all(s.status == "done" for s in state.shards if s.index != bad)
    # the CLI reports it and exits 1; a resubmission gives the shard new attempts
    proc = xfer("run", "--run-dir", str(run), "--scheduler", "local", "--submit")
    assert proc.returncode == 1
    assert f"shard {bad}: failed: attempt 4: verify:" in proc.stderr
    # once the file is back, the next run completes
    (src / victim).write_text("back\n")
    proc = xfer("run", "--run-dir", str(run), "--scheduler", "local", "--submit")
    assert proc.returncode == 0, proc.stderr
    assert not (run / "state" / f"shard_{bad}.fail").exists()
    assert read_tree(dst) == read_tree(src)


def test_resharding_ignores_stale_done(tmp_path: Path) -> None:
    src = tmp_path / "src"
    make_tree(src, [f"f{i}.txt" for i in range(9)])
    run, dst = tmp_path / "run", tmp_path / "dst"
    args = ["run", "--run-dir", str(run), "--source", str(src), "--dest", str(dst)]
    proc = xfer(*args, "--num-shards", "3", "--scheduler", "local", "--submit")
    assert proc.returncode == 0, proc.stderr
    old = {i: (run / f"state/shard_{i}.done").read_text() for i in range(3)}
    proc = xfer(*args, "--num-shards", "2", "--scheduler", "local", "--submit")
    assert proc.returncode == 0, proc.stderr
    # both new shards ran again: their digests differ from the old .done files
    for i in range(2):
        assert (run / f"logs/shard_{i}_attempt_2.log").is_file()
        assert (run / f"state/shard_{i}.done").read_text() != old[i]
    state = load_run_state(run)
    assert state.complete and state.orphans == [2]
    assert read_tree(dst) == read_tree(src)
    # a re-run without --num-shards keeps the current sharding: nothing runs again
    proc = xfer(*args, "--scheduler", "local", "--submit")
    assert proc.returncode == 0, proc.stderr
    assert "every shard is done" in proc.stderr
    assert not (run / "logs/shard_0_attempt_3.log").exists()


def test_kill_9_worker_mid_shard_then_rerun_completes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = tmp_path / "src"
    make_tree(src, [f"f{i}.txt" for i in range(6)])
    run, dst = tmp_path / "run", tmp_path / "dst"
    wrapper, marker = slow_rclone(tmp_path)
    monkeypatch.setenv("XFER_RCLONE", str(wrapper))
    prepare_run(
        run,
        PrepareOptions(source=str(src), dest=str(dst), num_shards=2),
        RenderOptions(max_array_size=1001),
    )
    worker = subprocess.Popen(
        ["bash", str(run / "worker.sh"), "0"],
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    running = run / "state" / "shard_0.running"
    wait_for(running.exists, what="shard 0 running")
    worker.kill()
    worker.wait()
    # the worker is gone: its .running is stale and the state model says so
    shard0 = load_run_state(run).shards[0]
    assert shard0.status == "retrying"
    assert "worker died" in (shard0.last_error or "")
    for pid in session_pids(worker.pid):  # the orphaned tool of the killed worker
        os.kill(pid, signal.SIGKILL)
    marker.unlink()
    sub = submit_run(run, "local")
    assert sub is not None and sorted(sub.shards) == [0, 1]
    state = load_run_state(run)
    assert state.complete
    assert state.shards[0].attempts == 2
    assert not running.exists()
    assert read_tree(dst) == read_tree(src)


def test_ctrl_c_of_xfer_run_leaves_consistent_state_and_rerun_completes(tmp_path: Path) -> None:
    src = tmp_path / "src"
    make_tree(src, [f"f{i}.txt" for i in range(8)])
    run, dst = tmp_path / "run", tmp_path / "dst"
    wrapper, marker = slow_rclone(tmp_path)
    args = [
        "run",
        "--run-dir",
        str(run),
        "--source",
        str(src),
        "--dest",
        str(dst),
        "--num-shards",
        "4",
        "--array-concurrency",
        "2",
        "--scheduler",
        "local",
        "--submit",
    ]
    proc = subprocess.Popen(
        [*xfer_argv(), *args],
        env={**os.environ, "XFER_RCLONE": str(wrapper)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    state_dir = run / "state"
    wait_for(
        lambda: len(list(state_dir.glob("*.running"))) == 2 if state_dir.is_dir() else False,
        what="two shards running",
    )
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "interrupted" in err
    assert not list(state_dir.glob("*.running"))
    fails = sorted(state_dir.glob("*.fail"))
    assert len(fails) == 2
    assert all("interrupted" in f.read_text() for f in fails)
    assert not list(state_dir.glob("*.done"))
    # nothing of the run is left running
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    assert str(wrapper) not in ps
    marker.unlink()
    rerun = xfer(*args)
    assert rerun.returncode == 0, rerun.stderr
    assert load_run_state(run).complete
    assert read_tree(dst) == read_tree(src)


def test_ctrl_c_while_a_worker_starts_stops_that_worker_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C delivered at a chosen point: inside ``Popen``, just after the first worker
    was forked. The interrupt is taken once the worker is known, so it is stopped with
    the others; raised inside ``Popen`` it lost the worker's pid and the worker ran on."""
    src = tmp_path / "src"
    make_tree(src, ["a.txt", "b.txt"])
    run, dst = tmp_path / "run", tmp_path / "dst"
    wrapper, _marker = slow_rclone(tmp_path)  # a worker that got away would hang here
    monkeypatch.setenv("XFER_RCLONE", str(wrapper))
    prepare_run(
        run,
        PrepareOptions(source=str(src), dest=str(dst), num_shards=1),
        RenderOptions(max_array_size=1001),
    )
    forked: list[int] = []

    class CtrlCAfterFork(subprocess.Popen):  # type: ignore[type-arg]
        def _execute_child(self, args: Any, *rest: Any) -> None:
            super()._execute_child(args, *rest)
            if not forked and str(run / "worker.sh") in args:
                forked.append(self.pid)
                signal.raise_signal(signal.SIGINT)

    monkeypatch.setattr(subprocess, "Popen", CtrlCAfterFork)
    try:
        with pytest.raises(KeyboardInterrupt):
            submit_run(run, "local")
        monkeypatch.undo()
        assert forked, "the worker was not started"
        # the worker was stopped and reaped: no process left (a zombie would be unreaped)
        assert not Path(f"/proc/{forked[0]}").exists()
        assert not list((run / "state").glob("*.running"))
    finally:
        for pid in forked:
            for left in session_pids(pid):
                os.kill(left, signal.SIGKILL)


def test_time_limit_signal_records_fail(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Slurm's `--signal=B:USR1@N` before the time limit: the worker stops the tool,
    records .fail "time limit" and clears .running (outside Slurm it does not requeue)."""
    src = tmp_path / "src"
    make_tree(src, ["a.txt", "b.txt"])
    run, dst = tmp_path / "run", tmp_path / "dst"
    wrapper, _marker = slow_rclone(tmp_path)
    monkeypatch.setenv("XFER_RCLONE", str(wrapper))
    prepare_run(
        run,
        PrepareOptions(source=str(src), dest=str(dst), num_shards=1),
        RenderOptions(max_array_size=1001),
    )
    worker = subprocess.Popen(
        ["bash", str(run / "worker.sh"), "0"],
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_for((run / "state" / "shard_0.running").exists, what="shard 0 running")
    worker.send_signal(signal.SIGUSR1)
    assert worker.wait(timeout=30) == 1
    assert (run / "state" / "shard_0.fail").read_text() == "attempt 1: time limit\n"
    assert not (run / "state" / "shard_0.running").exists()
    assert "time limit" in (run / "logs" / "shard_0_attempt_1.log").read_text()
    assert (
        str(wrapper)
        not in subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    )


def _pidfds() -> int:
    """Open pidfds of this process."""
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):  # the listing's own fd, closed by now
            count += os.readlink(f"/proc/self/fd/{fd}").startswith("anon_inode:[pidfd]")
    return count


@pytest.mark.parametrize("pidfds", [True, False], ids=["pidfd", "no-pidfd"])
def test_runner_wakes_on_worker_exit_and_falls_back_to_polling(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pidfds: bool
) -> None:
    """The local scheduler waits on a pidfd per worker (the next shard starts as one
    exits) and closes each; where the kernel refuses pidfds it polls, and every shard
    still runs once."""
    if pidfds and not hasattr(os, "pidfd_open"):
        pytest.skip("no os.pidfd_open here")
    src = tmp_path / "src"
    make_tree(src, [f"d{i % 3}/f{i}.txt" for i in range(12)])
    run = tmp_path / "run"
    dst = tmp_path / "dst"
    prepare_run(
        run,
        PrepareOptions(source=str(src), dest=str(dst), num_shards=5),
        RenderOptions(max_array_size=1001),
    )
    opened: list[int] = []
    real = getattr(os, "pidfd_open", None)

    def pidfd_open(pid: int, flags: int = 0) -> int:
        opened.append(pid)
        if not pidfds or real is None:
            raise OSError(38, "Function not implemented")
        return real(pid, flags)

    monkeypatch.setattr(os, "pidfd_open", pidfd_open, raising=False)
    before = _pidfds()
    sub = submit_run(run, "local", concurrency=2)
    assert sub is not None and sub.finished
    assert _states(run) == {"done": 5, "failed": 0, "running": 0, "shards": 5}
    assert read_tree(dst) == read_tree(src)
    assert sorted(p.name for p in (run / "logs").glob("shard_*_attempt_*.log")) == [
        f"shard_{i}_attempt_1.log" for i in range(5)
    ]
    # a pidfd for each worker (with pidfds), or one refused try and polling after it
    assert len(opened) == (5 if pidfds else 1)
    assert _pidfds() == before
    # the workers' state files are whole and private; no temp file of theirs is left
    assert not list((run / "state").glob(".tmp.*"))
    for path in (run / "state").glob("shard_*.*"):
        assert path.stat().st_mode & 0o077 == 0, path


def test_a_name_missing_at_source_is_named_from_the_shards_sub_root(tmp_path: Path) -> None:
    """A shard copied in its sub-root (the directory holding all its names) and verified
    from the copy's report: a name the source lost fails the shard, and the reason and
    the log give it in full (sub-root included), not relative to the sub-root."""
    src = tmp_path / "src"
    make_tree(src, [f"deep/dir/f{i}.txt" for i in range(6)])
    run = tmp_path / "run"
    prepare_run(
        run,
        PrepareOptions(source=str(src), dest=str(tmp_path / "dst"), num_shards=1),
        RenderOptions(max_attempts=1, max_array_size=1001),
    )
    from xfer_core.manifest.shard import load_shard_meta

    assert load_shard_meta(run / "shards").shards[0].subdir == "deep/dir"
    (src / "deep/dir/f3.txt").unlink()
    sub = submit_run(run, "local")
    assert sub is not None and sub.finished
    fail = (run / "state" / "shard_0.fail").read_text()
    assert "verify: 1 of 6 records not verified" in fail
    assert "(first: deep/dir/f3.txt))" in fail
    log = (run / "logs" / "shard_0_attempt_1.log").read_text()
    assert "5 of 6 sent or equal" in log
    assert "missing at source: deep/dir/f3.txt\n" in log
    assert not (run / "state" / "shard_0.done").exists()
    assert not list((run / "logs").glob("*.list"))
