"""What ``xfer status`` reports and what ``xfer retry`` resubmits, for any front end.

:class:`StatusReport` is one look at a run dir: its state files, its submissions
(``jobs.json``), the schedulers' view of them and the throughput so far, plus
the exit status they mean. :func:`plan_retry` decides which shards a retry runs
and on which scheduler, refusing while a job of the run is alive. The CLI
(``xfer_core.cli.status_cmd``) only parses options and renders these.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from xfer_core.errors import ExitCode, XferError

if TYPE_CHECKING:
    from xfer_core.bulk.queue_view import SchedulerView
    from xfer_core.bulk.state import JobRecord, RunState, Throughput


def check_status_dir(run_dir: Path) -> None:
    """Refuse what is not a sharded run dir (missing, unsafe, or without ``shards/``)."""
    from xfer_core.bulk.rundir import check_run_dir

    if not run_dir.is_dir():
        raise XferError(f"{run_dir}: no such run dir")
    check_run_dir(run_dir)
    if not (run_dir / "shards" / "shards.meta.json").is_file():
        raise XferError(
            f"{run_dir}: not a run dir (no shards/shards.meta.json)",
            hint="create one with `xfer run` or `xfer manifest shard --outdir RUN/shards`",
        )


class StatusReport:
    """One look at a run: its state files, its jobs and the schedulers' view of them."""

    def __init__(self, run_dir: Path, *, ask_scheduler: bool = True):
        from xfer_core.bulk.queue_view import ask_schedulers, jobs_alive
        from xfer_core.bulk.state import estimate_throughput, load_run_state, read_jobs

        self.jobs: list[JobRecord] = read_jobs(run_dir)
        # the schedulers are asked before the state files are read: a task that ends in
        # between then shows as done, never as a dead worker
        self.views: list[SchedulerView] = ask_schedulers(self.jobs) if ask_scheduler else []
        self.state: RunState = load_run_state(
            run_dir, jobs=self.jobs, jobs_alive=jobs_alive(self.views)
        )
        #: Throughput and ETA (``progress`` in the JSON).
        self.progress: Throughput = estimate_throughput(self.state, self.jobs)

    @property
    def exit_code(self) -> int:
        """1 when any shard failed for good, else 0 (also while the run goes on)."""
        return int(ExitCode.FAILED) if self.state.totals.failed else int(ExitCode.OK)

    def to_json(self) -> dict[str, Any]:
        """The report as ``xfer status --json`` prints it."""
        import msgspec

        st = self.state
        return {
            "run_dir": st.run_dir,
            "max_attempts": st.max_attempts,
            "complete": st.complete,
            "finished": st.finished,
            "totals": msgspec.to_builtins(st.totals),
            "progress": msgspec.to_builtins(self.progress),
            "failed": [
                {"shard": s.index, "attempts": s.attempts, "last_error": s.last_error}
                for s in st.shards
                if s.status == "failed"
            ],
            "jobs": msgspec.to_builtins(self.jobs),
            "schedulers": msgspec.to_builtins(self.views),
            "orphans": st.orphans,
            "shards": msgspec.to_builtins(st.shards),
            "exit_code": self.exit_code,
            "loaded_at": st.loaded_at,
            "plan": _plan_json(st.run_dir),
        }


def _plan_json(run_dir: str) -> Any:
    import msgspec

    from xfer_core.bulk.plan import load_plan

    plan = load_plan(run_dir)
    return None if plan is None else msgspec.to_builtins(plan)


@dataclass(frozen=True)
class RetryPlan:
    """What a retry runs: ``shards`` (ascending; empty: nothing to do) on ``scheduler``."""

    root: Path
    scheduler: str
    shards: list[int]
    #: The run's state when it was decided (totals for the "nothing to retry" message).
    state: RunState

    @property
    def exit_code(self) -> int:
        """With nothing to run: 1 when shards failed for good (left out without
        ``include_failed``), else 0."""
        return int(ExitCode.FAILED) if not self.shards and self.state.totals.failed else 0


def plan_retry(
    run_dir: Path, *, include_failed: bool = False, scheduler: str | None = None
) -> RetryPlan:
    """The shards a retry of ``run_dir`` runs: pending and retrying ones, and with
    ``include_failed`` those that used up their attempts.

    ``scheduler`` defaults to the one of the run's last submission. Raises
    :class:`XferError` when nothing was ever submitted, when a job of the run is still
    queued or running, and when ``worker.sh`` was rendered for another sharding.
    """
    from xfer_core.bulk.queue_view import jobs_alive
    from xfer_core.bulk.render import load_resolved
    from xfer_core.bulk.state import load_run_state, pending_shards, read_jobs
    from xfer_core.bulk.submit import refuse_if_alive

    check_status_dir(run_dir)
    root = run_dir.resolve()
    resolved = load_resolved(root)
    jobs = read_jobs(root)
    chosen = scheduler or (jobs[-1].scheduler if jobs else None)
    if chosen is None:
        raise XferError(
            f"{root}: nothing was submitted yet, so there is nothing to retry",
            hint=f"start it: xfer run --run-dir {root} --submit (or xfer slurm submit)",
        )
    views = refuse_if_alive(root, "retrying", scheduler=chosen)
    state = load_run_state(root, jobs=jobs, jobs_alive=jobs_alive(views))
    if len(state.shards) != resolved.num_shards:
        raise XferError(
            f"{root}: worker.sh was rendered for {resolved.num_shards} shards but shards/ "
            f"now holds {len(state.shards)}",
            hint="re-render after re-sharding: xfer slurm render --run-dir RUN ... (or xfer run)",
        )
    todo = pending_shards(state, include_failed=include_failed)
    return RetryPlan(root=root, scheduler=chosen, shards=todo, state=state)
