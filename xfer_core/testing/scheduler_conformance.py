"""The scheduler conformance suite: what every scheduler must do with real jobs.

The builtin ``local`` and ``slurm`` schedulers and third-party ones (``xfer-sge``)
run the same tests against a real instance: the worker a scheduler starts is the
real ``worker.sh``, with a probe shard engine (``conformance-probe``, registered by
the suite in-process) whose ``xfer_copy`` records how many shards run at once,
which attempt of which shard ran, and can hang once per shard until the job's time
limit (or a cancel) stops it. A plugin author runs it with one class::

    # tests/test_scheduler_conformance.py
    import pytest
    from xfer_core.testing.scheduler_conformance import SchedulerConformance

    class TestMyScheduler(SchedulerConformance):
        @pytest.fixture
        def scheduler(self, my_cluster):       # a fixture that starts the real thing
            return "mysched"                    # the name it registers

        @pytest.fixture
        def scheduler_env(self, my_cluster):
            return my_cluster.env               # what its commands need (config, ports)

What it checks, through core's own :func:`~xfer_core.bulk.submit.submit_run`:

- **submit**: every shard runs and is done; a re-submission has nothing left;
- **submission recorded**: ``RUN/jobs.json`` names the job once, with its shards
  (core records it; the scheduler only returns it);
- **throttle**: with concurrency 1, never two shards at once;
- **requeue on time limit**: a shard stopped by the job's time limit (USR1 from the
  scheduler) is requeued by the scheduler's job file and done on the next attempt
  (a scheduler without time limits: a failed attempt is retried);
- **cancel**: a cancelled job leaves no shard done and none running (as core reads
  the run dir once the queue no longer has the job alive) (a scheduler whose submit returns after the work: nothing
  to cancel, nothing left running);
- **state mapping**: every state word the queue shows for a live job maps onto
  :class:`~xfer_core.bulk.scheduler.JobState` (not UNKNOWN), alive while it runs.

Override :attr:`SchedulerConformance.time_limit` / ``signal_seconds`` when the
scheduler's time limit cannot be as short as the default (Slurm's unit is a
minute: the suite uses ``1`` minute and USR1 55 s before it).
"""

from __future__ import annotations

import json
import os
import shlex
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest

from xfer_core.bulk.engine import EngineContext, ShardEngine
from xfer_core.bulk.render import RenderOptions
from xfer_core.bulk.scheduler import ALIVE_STATES, JobState, Scheduler
from xfer_core.hookspecs import hookimpl

PROBE = "conformance-probe"

#: The probe's bash: ``PROBE_DIR`` holds ``running/`` (one file per copy running now),
#: ``concurrency`` (how many ran at each start), ``copied`` ("SHARD ATTEMPT" lines),
#: and ``hang`` (when present, each shard's first attempt waits until it is stopped).
PROBE_BASH = r"""
xfer_copy() {  # FILES LOG
    local me=$BASHPID
    mkdir -p "$PROBE_DIR/running"
    trap 'rm -f "$PROBE_DIR/running/$me"; exit 143' TERM INT
    : >"$PROBE_DIR/running/$me"
    ls "$PROBE_DIR/running" | wc -l >>"$PROBE_DIR/concurrency"
    echo "$CUR_SHARD $CUR_ATTEMPT start" >>"$PROBE_DIR/copied"
    if [ -e "$PROBE_DIR/hang" ] && [ ! -e "$PROBE_DIR/hung_$CUR_SHARD" ]; then
        : >"$PROBE_DIR/hung_$CUR_SHARD"
        sleep 600 &
        wait $!
    fi
    sleep "$PROBE_HOLD"
    rm -f "$PROBE_DIR/running/$me"
    echo "$CUR_SHARD $CUR_ATTEMPT done" >>"$PROBE_DIR/copied"
}
xfer_verify() { return 0; }
"""


class ProbeEngine(ShardEngine):
    """Copies nothing; records what the scheduler made it do (see :data:`PROBE_BASH`)."""

    name = PROBE
    tool = "bash"
    description = "scheduler conformance probe (tests only)"
    probe_dir: ClassVar[str] = ""
    hold_seconds: ClassVar[float] = 1.0

    def render_functions(self, ctx: EngineContext) -> str:
        return (
            f"PROBE_DIR={shlex.quote(str(Path(ctx.run_dir) / 'probe'))}\n"
            f"PROBE_HOLD={shlex.quote(str(self.hold_seconds))}\n" + PROBE_BASH
        )


class _ProbePlugin:
    @hookimpl
    def register_shard_engines(self, register: Callable[[ShardEngine], None]) -> None:
        register(ProbeEngine())


def _install_probe() -> None:
    from xfer_core.registry import get_registry

    registry = get_registry()
    if PROBE not in registry.names("shard_engine"):
        registry.add(_ProbePlugin(), distribution="xfer_core.testing")


def wait_until(cond: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.5)


class SchedulerConformance:
    """Subclass with a ``scheduler`` fixture (its name) and optionally ``scheduler_env``."""

    #: Time limit per array task as ``--time-limit`` takes it, and when USR1 comes.
    time_limit: ClassVar[str] = "1"
    signal_seconds: ClassVar[int] = 55
    #: Seconds a submission may take to run its shards here.
    run_timeout: ClassVar[float] = 180.0
    #: The scheduler's own options (``-O NAME=VALUE``) for every run of the suite.
    scheduler_options: ClassVar[dict[str, str]] = {}

    @pytest.fixture
    def scheduler_env(self) -> dict[str, str]:
        """Environment the scheduler's commands need (added to ``os.environ``)."""
        return {}

    def send_time_limit_warning(self, sub: Any) -> None:
        """Deliver the time-limit warning to the hung first attempt of ``sub`` now.

        The default waits for the scheduler's own warning (Grid Engine's ``s_rt`` arrives
        on time). Override it where the scheduler's warning comes at a moment the test
        cannot choose: Slurm checks its time limits periodically, and CI saw a job reach
        its limit without the ``--signal`` warning, so the Slurm class sends the same
        signal the same way (``scancel --batch --signal=USR1``) once the attempt hangs.
        """

    @pytest.fixture
    def sched(
        self, scheduler: str, scheduler_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
    ) -> Iterator[Scheduler]:
        from xfer_core.registry import get_registry

        for key, value in scheduler_env.items():
            monkeypatch.setenv(key, value)
        _install_probe()
        plugin = get_registry().get("scheduler", scheduler)
        avail = plugin.reachable()
        assert avail.ok, f"scheduler {scheduler} is not reachable: {avail.reason}"
        yield plugin

    # -- helpers ---------------------------------------------------------------------
    def prepare(self, tmp_path: Path, sched: Scheduler, shards: int, **render: Any) -> Path:
        from xfer_core.bulk.pipeline import PrepareOptions, prepare_run

        src, run = tmp_path / "src", tmp_path / "run"
        src.mkdir()
        for i in range(shards * 2):
            (src / f"f{i}.txt").write_text(f"{i}\n" * (i + 1))
        options = RenderOptions(
            scheduler=sched.name,
            engine=PROBE,
            cpus_per_task=1,
            mem="100M",
            time_limit=self.time_limit,
            signal_seconds=self.signal_seconds,
            scheduler_options=dict(self.scheduler_options),
            **render,
        )
        prepare_run(
            run,
            PrepareOptions(source=str(src), dest=str(tmp_path / "dst"), num_shards=shards),
            options,
        )
        (run / "probe").mkdir()
        return run

    def submit(self, run: Path, sched: Scheduler, concurrency: int) -> Any:
        from xfer_core.bulk.submit import submit_run

        return submit_run(run, sched.name, concurrency=concurrency)

    def wait_done(self, run: Path, sched: Scheduler, sub: Any, shards: int) -> None:
        from xfer_core.bulk.state import load_run_state

        def finished() -> bool:
            if len(list((run / "state").glob("shard_*.done"))) < shards:
                return False
            return not any(
                sched.job_state(j.state) in ALIVE_STATES for j in sched.queue_info([sub.job_id])
            )

        wait_until(finished, self.run_timeout, f"{shards} shards done and the job ended")
        state = load_run_state(run)
        assert state.totals.done == shards, [s.status for s in state.shards]

    @staticmethod
    def copied(run: Path) -> list[tuple[int, int, str]]:
        path = run / "probe" / "copied"
        lines = path.read_text().splitlines() if path.exists() else []
        return [(int(a), int(b), c) for a, b, c in (line.split() for line in lines)]

    # -- the suite ---------------------------------------------------------------------
    def test_submit_runs_every_shard_and_core_records_it_once(
        self, tmp_path: Path, sched: Scheduler
    ) -> None:
        from xfer_core.bulk.state import read_jobs

        run = self.prepare(tmp_path, sched, shards=3)
        resolved = json.loads((run / "config.resolved.json").read_text())
        assert resolved["scheduler"] == sched.name
        for name in resolved["job_files"]:
            assert (run / name).is_file(), name
        sub = self.submit(run, sched, concurrency=3)
        assert sub is not None and sub.scheduler == sched.name and sub.job_id
        self.wait_done(run, sched, sub, 3)
        assert sorted(s for s, _a, what in self.copied(run) if what == "done") == [0, 1, 2]
        jobs = read_jobs(run)
        assert [(j.scheduler, j.job_id, sorted(j.shards)) for j in jobs] == [
            (sched.name, sub.job_id, [0, 1, 2])
        ]
        # nothing left: no second job, nothing recorded
        assert self.submit(run, sched, concurrency=3) is None
        assert len(read_jobs(run)) == 1

    def test_throttle_runs_at_most_concurrency_shards_at_once(
        self, tmp_path: Path, sched: Scheduler
    ) -> None:
        ProbeEngine.hold_seconds = 2.0
        try:
            run = self.prepare(tmp_path, sched, shards=3, array_concurrency=1)
        finally:
            ProbeEngine.hold_seconds = 1.0
        sub = self.submit(run, sched, concurrency=1)
        self.wait_done(run, sched, sub, 3)
        seen = [int(n) for n in (run / "probe" / "concurrency").read_text().split()]
        assert len(seen) == 3 and max(seen) == 1, seen

    def test_time_limit_requeues_and_the_next_attempt_finishes(
        self, tmp_path: Path, sched: Scheduler
    ) -> None:
        run = self.prepare(tmp_path, sched, shards=1, max_attempts=3)
        (run / "probe" / "hang").touch()
        if not sched.job_files(run, _resolved(run), sched.parse_options(self.scheduler_options)):
            # no time limit here (the local scheduler): a failed attempt is retried
            self._retry_without_time_limit(run, sched)
            return
        sub = self.submit(run, sched, concurrency=1)
        wait_until(lambda: (run / "probe" / "hung_0").exists(), 120, "the first attempt")
        self.send_time_limit_warning(sub)
        self.wait_done(run, sched, sub, 1)
        attempts = [(a, what) for _s, a, what in self.copied(run)]
        assert attempts == [(1, "start"), (2, "start"), (2, "done")], attempts
        logs = "".join(p.read_text() for p in (run / "logs").glob("shard_0_attempt_1.log"))
        assert "attempt 1: time limit" in logs
        assert "requeueing task" in (run / "logs" / "shard_0_attempt_1.log").read_text() or any(
            "requeueing task" in p.read_text(errors="replace") for p in (run / "logs").iterdir()
        )
        assert list((run / "state").glob("task_*.requeues"))

    def _retry_without_time_limit(self, run: Path, sched: Scheduler) -> None:
        # the hung first attempt is stopped from outside: the worker's own TERM path
        import signal
        import threading

        def stop_first() -> None:
            wait_until(lambda: (run / "probe" / "hung_0").exists(), 60, "the first attempt")
            for line in (run / "state" / "shard_0.running").read_text().split()[1:2]:
                os.kill(int(line), signal.SIGUSR1)

        stopper = threading.Thread(target=stop_first)
        stopper.start()
        sub = self.submit(run, sched, concurrency=1)
        stopper.join()
        assert sub is not None and sub.finished
        attempts = [(a, what) for _s, a, what in self.copied(run)]
        assert attempts == [(1, "start"), (2, "start"), (2, "done")], attempts

    def test_cancel_stops_the_job_and_nothing_is_done(
        self, tmp_path: Path, sched: Scheduler
    ) -> None:
        run = self.prepare(tmp_path, sched, shards=2)
        if not sched.job_files(run, _resolved(run), sched.parse_options(self.scheduler_options)):
            sub = self.submit(run, sched, concurrency=2)
            assert sub is not None and sub.finished  # returned after the work: nothing to cancel
            assert not list((run / "state").glob("*.running"))
            return
        (run / "probe" / "hang").touch()
        sub = self.submit(run, sched, concurrency=2)
        wait_until(lambda: (run / "probe" / "hung_0").exists(), 120, "the first shard running")
        sched.cancel([sub.job_id])
        wait_until(
            lambda: (
                not any(
                    sched.job_state(j.state) in ALIVE_STATES for j in sched.queue_info([sub.job_id])
                )
            ),
            120,
            "the cancelled job to leave the queue",
        )
        # a worker stopped with a signal it can catch removes its .running; one killed
        # outright (qdel's SIGKILL) leaves it, and core counts it dead once the job is gone
        from xfer_core.bulk.state import load_run_state

        state = load_run_state(run, jobs_alive=False)
        assert [s.status for s in state.shards if s.status in ("running", "done")] == []
        assert not list((run / "state").glob("*.done"))
        assert all(what == "start" for _s, _a, what in self.copied(run))

    def test_queue_states_map_onto_job_states(self, tmp_path: Path, sched: Scheduler) -> None:
        run = self.prepare(tmp_path, sched, shards=2)
        if not sched.job_files(run, _resolved(run), sched.parse_options(self.scheduler_options)):
            assert sched.queue_info(["local-1-1"]) == []  # no queue: liveness from the run dir
            return
        (run / "probe" / "hang").touch()
        sub = self.submit(run, sched, concurrency=1)  # one runs, one waits (throttle)
        wait_until(lambda: (run / "probe" / "hung_0").exists(), 120, "the first shard to run")
        seen: dict[str, JobState] = {}
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and {JobState.PENDING, JobState.RUNNING} - set(
            seen.values()
        ):
            for job in sched.queue_info([sub.job_id]):
                seen[job.state] = sched.job_state(job.state)
            time.sleep(0.5)
        try:
            assert seen, "the queue shows nothing for a running job"
            assert JobState.UNKNOWN not in seen.values(), seen
            assert JobState.RUNNING in seen.values(), seen
        finally:
            sched.cancel([sub.job_id])
            wait_until(
                lambda: (
                    not any(
                        sched.job_state(j.state) in ALIVE_STATES
                        for j in sched.queue_info([sub.job_id])
                    )
                ),
                120,
                "the job to leave the queue",
            )


def _resolved(run: Path) -> Any:
    from xfer_core.bulk.render import load_resolved

    return load_resolved(run)
