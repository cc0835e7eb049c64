"""What the schedulers say about a run's jobs (their ``queue_info``), for status and retry.

Optional by design: a scheduler that cannot be asked (its commands missing here, its
controller down, not installed) gives a view with ``reachable=False`` and a one-line ``message``;
the run dir alone still tells the state.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import msgspec

from xfer_core.bulk.scheduler import ALIVE_STATES, JobInfo, Scheduler
from xfer_core.bulk.state import JobRecord
from xfer_core.errors import XferError


class SchedulerView(msgspec.Struct, kw_only=True):
    """What one scheduler says about the run's jobs it ran."""

    scheduler: str
    job_ids: list[str]
    #: False when the scheduler could not be asked; ``message`` says why.
    reachable: bool
    message: str | None = None
    jobs: list[JobInfo] = []
    #: Jobs/tasks by state word (``RUNNING``, ``PENDING``...).
    states: dict[str, int] = {}

    @property
    def alive(self) -> bool | None:
        """Whether any job may still run a worker (None: cannot tell)."""
        if not self.reachable:
            return None
        return any(j.status in ALIVE_STATES for j in self.jobs)


def ask_schedulers(jobs: Sequence[JobRecord]) -> list[SchedulerView]:
    """Each recorded scheduler's view of its jobs, states mapped onto
    :class:`~xfer_core.bulk.scheduler.JobState`; never raises."""
    from xfer_core.registry import get_registry

    by_name: dict[str, list[str]] = {}
    for job in jobs:
        by_name.setdefault(job.scheduler, []).append(job.job_id)
    views = []
    for name, ids in by_name.items():
        view = SchedulerView(scheduler=name, job_ids=ids, reachable=False)
        try:
            sched = get_registry().get("scheduler", name)
            if type(sched).queue_info is Scheduler.queue_info:
                # no queue to ask (local): liveness comes from the .running pids alone
                views.append(view)
                continue
            avail = sched.reachable()
            if not avail.ok:
                view.message = f"not reachable ({avail.reason}); state from the run dir only"
            else:
                view.jobs = [
                    msgspec.structs.replace(j, status=sched.job_state(j.state))
                    for j in sched.queue_info(ids)
                ]
                view.reachable = True
                view.states = dict(Counter(j.state for j in view.jobs))
        except XferError as exc:
            view.message = f"{exc.message}; state from the run dir only"
        views.append(view)
    return views


def jobs_alive(views: Sequence[SchedulerView]) -> bool | None:
    """For :func:`~xfer_core.bulk.state.load_run_state`: False when every scheduler was
    asked and none has a job of the run left, True when one has, None when unknown."""
    alive = [v.alive for v in views]
    if not alive or None in alive:
        return None
    return any(alive)
