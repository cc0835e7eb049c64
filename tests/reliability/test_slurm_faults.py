"""Slurm faults on the real single-node fixture: the node drained or set DOWN mid-array,
slurmctld restarted (and down while tasks finish), requeue storms by an admin.

Each: inject the fault while array tasks are held mid-shard (a gated rclone), check
that `xfer status` tells the truth (nothing done that is not, nothing failed for good
that will still run), then let the run finish (by itself, or with `xfer retry`) and
compare the destination with the source byte for byte.

(Worker kill -9, S3 stopped mid-run, time limit and max attempts are in tests/e2e.)
"""

from __future__ import annotations

import json
import stat
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.helpers import SLURM_ARGS, release_held, status, wait_for, wait_idle
from xfer_core.bulk.state import load_run_state, read_jobs
from xfer_core.testing.services import SlurmCluster
from xfer_core.tools import find_rclone

from .conftest import Tally
from .helpers import read_tree, write_tree, xfer

CLASS = "faults: Slurm"

pytestmark = [pytest.mark.slurm]


#: The runs of the current test (cleaned up after it, see :func:`_cleanup`).
_LIVE: list[Run] = []


class Run:
    """A posix → posix run on Slurm whose rclone waits while ``gate`` exists and
    fails once (exit 1, before copying) each time ``fail_once`` is created."""

    def __init__(self, tmp: Path, slurm: SlurmCluster, shards: int, *extra: str):
        self.slurm = slurm
        self.src, self.dst, self.dir = tmp / "src", tmp / "dst", tmp / "run"
        self.files = write_tree(self.src, [f"d{i % 3}/f {i:02d}.dat" for i in range(4 * shards)])
        self.gate, self.fail_once = tmp / "gate", tmp / "fail_once"
        wrapper = tmp / "rclone-gated"
        wrapper.write_text(
            "#!/usr/bin/env bash\n"
            f"while [ -e '{self.gate}' ]; do sleep 0.2; done\n"
            f"if rm '{self.fail_once}' 2>/dev/null; then echo 'injected failure' >&2; exit 1; fi\n"
            f"exec '{find_rclone()}' \"$@\"\n"
        )
        wrapper.chmod(wrapper.stat().st_mode | stat.S_IXUSR)
        self.gate.touch()
        proc = xfer(
            *["run", "--run-dir", str(self.dir), "--source", str(self.src)],
            *["--dest", str(self.dst), "--num-shards", str(shards), *SLURM_ARGS],
            *["--partition", slurm.partition, *extra, "--submit"],
            env={**slurm.env, "XFER_RCLONE": str(wrapper)},
        )
        _LIVE.append(self)
        assert proc.returncode == 0, proc.stderr

    def state(self, name: str) -> Path:
        return self.dir / "state" / name

    def wait_running(self, *shards: int) -> None:
        for i in shards:
            wait_for(self.state(f"shard_{i}.running").exists, f"shard {i} to start")

    def status(self) -> tuple[int, dict[str, Any]]:
        return status(self.dir, self.slurm.env)

    def by_status(self, doc: dict[str, Any]) -> dict[str, list[int]]:
        out: dict[str, list[int]] = {}
        for s in doc["shards"]:
            out.setdefault(s["status"], []).append(s["index"])
        return out

    def false_done(self) -> int:
        """Shards the state calls done although a file of theirs is missing or differs."""
        got = read_tree(self.dst) if self.dst.exists() else {}
        meta = self.dir / "shards"
        bad = 0
        for s in load_run_state(self.dir).shards:
            if s.status != "done":
                continue
            lines = (meta / f"shard_{s.index:06d}.jsonl").read_text().splitlines()
            paths = [json.loads(line)["path"] for line in lines]
            bad += any(got.get(p) != self.files[p] for p in paths)
        return bad

    def finish(self, timeout: float = 150) -> dict[str, Any]:
        """Wait for the queue to empty; `xfer retry` what is left (once); check it all."""
        doc = wait_idle(self.dir, self.slurm, timeout=timeout)
        if not doc["complete"]:
            proc = xfer("retry", "--run-dir", str(self.dir), env=self.slurm.env)
            assert proc.returncode == 0, proc.stderr
            doc = wait_idle(self.dir, self.slurm, timeout=timeout)
        rc, doc = self.status()
        assert rc == 0 and doc["complete"], doc["totals"]
        assert read_tree(self.dst) == self.files
        return doc


def _node_state(slurm: SlurmCluster) -> str:
    return slurm.run(["sinfo", "-h", "-n", slurm.node, "-o", "%T"]).stdout.strip()


def _set_node(slurm: SlurmCluster, state: str) -> None:
    reason = [] if state == "RESUME" else ["Reason=xfer fault test"]
    res = slurm.run(["scontrol", "update", f"NodeName={slurm.node}", f"State={state}", *reason])
    # (RESUME of a node that is not down or drained any more is refused: fine)
    assert res.returncode == 0 or state == "RESUME", res.stderr


@pytest.fixture(autouse=True)
def _cleanup(slurm: SlurmCluster) -> Iterator[None]:
    """After each test: open the gates, cancel what its runs left in the queue."""
    yield
    for run in _LIVE:
        run.gate.unlink(missing_ok=True)
        ids = [job.job_id for job in read_jobs(run.dir)]
        if ids:
            slurm.run(["scancel", *ids])
    _LIVE.clear()


@pytest.fixture
def node(slurm: SlurmCluster) -> Iterator[SlurmCluster]:
    """The cluster; its node is resumed afterwards whatever the test did to it."""
    yield slurm
    if _node_state(slurm) != "idle":
        slurm.run(["scontrol", "update", f"NodeName={slurm.node}", "State=RESUME"])
    slurm.wait_idle()


def test_node_drained_mid_array(tmp_path: Path, node: SlurmCluster, tally: Tally) -> None:
    run = Run(tmp_path, node, 4, "--array-concurrency", "2")
    run.wait_running(0, 1)
    _set_node(node, "DRAIN")
    assert _node_state(node) in ("draining", "drained"), _node_state(node)
    rc, doc = run.status()
    assert rc == 0 and run.by_status(doc) == {"running": [0, 1], "pending": [2, 3]}
    run.gate.unlink()
    # the running tasks finish on the draining node; the pending ones stay pending
    wait_for(lambda: load_run_state(run.dir).totals.done == 2, "the running tasks to end")
    wait_for(lambda: _node_state(node) == "drained", "the node to be drained")
    time.sleep(2)
    rc, doc = run.status()
    assert rc == 0 and not doc["complete"]
    assert run.by_status(doc) == {"done": [0, 1], "pending": [2, 3]}
    assert not run.state("shard_2.attempt").exists() and not run.state("shard_3.attempt").exists()
    [view] = doc["schedulers"]
    assert {j["state"] for j in view["jobs"]} == {"PENDING"} and len(view["jobs"]) == 2
    assert run.false_done() == 0
    plain = xfer("status", "--run-dir", str(run.dir), env=node.env)
    assert "2 done, 0 running, 0 retrying, 0 failed, 2 pending" in plain.stdout, plain.stdout
    _set_node(node, "RESUME")
    doc = run.finish()
    assert [s["attempts"] for s in doc["shards"]] == [1, 1, 1, 1]
    tally(cases=1, lost=0, false_done=0)


def test_node_down_mid_array(tmp_path: Path, node: SlurmCluster, tally: Tally) -> None:
    run = Run(tmp_path, node, 3, "--array-concurrency", "2")
    run.wait_running(0, 1)
    _set_node(node, "DOWN")
    # the running tasks get SIGTERM and are requeued (held); the fixture's node comes back
    # at once (ReturnToService=2), so task 2 may start meanwhile: still held at the gate
    wait_for(
        lambda: not any(run.state(f"shard_{i}.running").exists() for i in (0, 1)),
        "the killed workers to record their end",
    )
    rc, doc = run.status()
    assert rc == 0 and doc["totals"]["done"] == 0 and doc["totals"]["failed"] == 0, doc["totals"]
    states = {s["index"]: s["status"] for s in doc["shards"]}
    assert states[0] == states[1] == "retrying" and states[2] in ("pending", "running"), states
    # stopped from outside: not counted against --max-attempts
    assert [s["interrupted"] for s in doc["shards"][:2]] == [1, 1]
    for i in (0, 1):
        text = run.state(f"shard_{i}.fail").read_text()
        assert text.startswith("attempt 1: interrupted (SIGTERM)"), text
    assert run.false_done() == 0
    assert not run.dst.exists() or not read_tree(run.dst)  # killed before copying a byte
    run.gate.unlink()
    _set_node(node, "RESUME")
    run.finish()
    tally(cases=1, lost=0, false_done=0)


def test_slurmctld_down_and_restarted_mid_array(
    tmp_path: Path, slurm: SlurmCluster, tally: Tally
) -> None:
    run = Run(tmp_path, slurm, 4, "--array-concurrency", "2")
    run.wait_running(0, 1)
    slurm.restart_ctld()
    rc, doc = run.status()
    assert rc == 0 and run.by_status(doc) == {"running": [0, 1], "pending": [2, 3]}
    slurm.stop_ctld()
    try:
        # controller down: status says so and tells the state from the run dir alone
        rc, doc = run.status()
        assert rc == 0 and run.by_status(doc) == {"running": [0, 1], "pending": [2, 3]}
        [view] = doc["schedulers"]
        assert not view["reachable"] and "state from the run dir only" in view["message"]
        # the workers finish while the controller is down
        run.gate.unlink()
        wait_for(lambda: load_run_state(run.dir).totals.done == 2, "tasks to end, ctld down")
        rc, doc = run.status()
        assert rc == 0 and run.by_status(doc) == {"done": [0, 1], "pending": [2, 3]}
        assert run.false_done() == 0
    finally:
        slurm.start_ctld()
    doc = run.finish()
    # nothing ran twice
    assert [s["attempts"] for s in doc["shards"]] == [1, 1, 1, 1]
    tally(cases=2, lost=0, false_done=0)


def _attempt_running(run: Run, shard: int) -> int:
    try:
        return int(run.state(f"shard_{shard}.running").read_text().split()[3])
    except (OSError, IndexError, ValueError):
        return 0


@pytest.mark.parametrize(
    "rounds", [2, pytest.param(8, marks=[pytest.mark.soak, pytest.mark.timeout(900)])]
)
def test_requeue_storm_by_an_admin(
    tmp_path: Path, slurm: SlurmCluster, tally: Tally, rounds: int
) -> None:
    """`scontrol requeue` of both running tasks, 3 times back to back, for ``rounds``
    rounds, each time while the workers are in their copy step: the attempts they stop
    are counted as interrupted, not against --max-attempts (2), so the shards stay
    `retrying` (never `failed`), and a real failure after the storm still gets its
    retries: the task requeues itself and the run completes without `xfer retry`."""
    run = Run(tmp_path, slurm, 2, "--array-concurrency", "2", "--max-attempts", "2")
    job = read_jobs(run.dir)[-1].job_id
    tasks = f"{job}_0,{job}_1"
    requeues = 0
    for k in range(1, rounds + 1):
        wait_for(lambda k=k: all(_attempt_running(run, i) == k for i in (0, 1)), f"round {k}")
        for _ in range(3):  # the first stops both; the others hit pending tasks (refused)
            slurm.run(["scontrol", "requeue", tasks])
            requeues += 1
        wait_for(
            lambda: not any(run.state(f"shard_{i}.running").exists() for i in (0, 1)),
            "the requeued workers to record their end",
        )
        rc, doc = run.status()
        assert rc == 0 and doc["totals"]["failed"] == 0 and doc["totals"]["done"] == 0, doc
        for s in doc["shards"]:
            assert s["status"] == "retrying", s
            assert (s["attempts"], s["interrupted"]) == (k, k), s
            assert s["last_error"] == f"attempt {k}: interrupted (SIGTERM)", s
        assert run.false_done() == 0

        # the held tasks start again ~3 s later (Slurm would wait cred_expire+1 s)
        def restarted(k: int = k) -> bool:
            release_held(slurm)
            return all(_attempt_running(run, i) > k for i in (0, 1))

        wait_for(restarted, f"round {k} restart")
    # the storm is over; now one real failure: the task must still requeue itself
    run.fail_once.touch()
    run.gate.unlink()
    doc = wait_idle(run.dir, slurm)
    assert doc["complete"], doc["totals"]
    assert read_tree(run.dst) == run.files
    shards = doc["shards"]
    assert sorted(s["attempts"] for s in shards) == [rounds + 1, rounds + 2]
    assert [s["interrupted"] for s in shards] == [rounds, rounds]
    failed = next(s["index"] for s in shards if s["attempts"] == rounds + 2)
    log = (run.dir / "logs" / f"shard_{failed}_attempt_{rounds + 1}.log").read_text()
    assert "requeueing task" in log and "restart 1 of 1" in log, log
    plain = xfer("status", "--run-dir", str(run.dir), env=slurm.env)
    assert plain.returncode == 0 and "all shards done" in plain.stdout
    tally(cases=requeues, lost=0, false_done=0)
