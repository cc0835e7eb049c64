"""Submit a rendered run dir's unfinished shards to a scheduler (``xfer slurm submit``,
``xfer run --submit``, ``xfer retry``)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from xfer_core.bulk.jobs import record_submission
from xfer_core.bulk.render import load_resolved, write_job_files
from xfer_core.bulk.rundir import check_run_dir
from xfer_core.bulk.scheduler import Scheduler, Submission, SubmitOptions
from xfer_core.bulk.state import load_run_state, pending_shards, read_jobs
from xfer_core.errors import XferError

if TYPE_CHECKING:
    from xfer_core.bulk.queue_view import SchedulerView


def refuse_if_alive(
    run_dir: str | os.PathLike[str], doing: str, *, scheduler: str | None = None
) -> list[SchedulerView]:
    """Raise when a job of the run (of ``scheduler``, default any) is still queued or
    running: submitting again, retrying or re-listing then would run shards twice.

    ``doing`` completes "…; DOING now would run its shards twice". Returns the
    schedulers' views (for :func:`~xfer_core.bulk.queue_view.jobs_alive`).
    """
    from xfer_core.bulk.queue_view import ask_schedulers

    root = Path(run_dir).resolve()
    jobs = [j for j in read_jobs(root) if scheduler is None or j.scheduler == scheduler]
    views = ask_schedulers(jobs)
    busy = [v for v in views if v.alive]
    if busy:
        from xfer_core.registry import get_registry

        states = ", ".join(f"{n} {st.lower()}" for st, n in sorted(busy[0].states.items()))
        hint = get_registry().get("scheduler", busy[0].scheduler).cancel_hint(busy[0].job_ids)
        raise XferError(
            f"{root}: job {', '.join(busy[0].job_ids)} of this run is still in the queue "
            f"({states}); {doing} now would run its shards twice",
            hint=f"wait for it (xfer status --watch) or {hint}",
        )
    return views


def shards_to_submit(run_dir: str | os.PathLike[str]) -> list[int]:
    """Shards of ``run_dir`` that are not done and not running now.

    Shards out of attempts are included: a new submission gives every unfinished
    shard ``max_attempts`` more tries.
    """
    resolved = load_resolved(run_dir)
    state = load_run_state(run_dir)
    if len(state.shards) != resolved.num_shards:
        raise XferError(
            f"{run_dir}: worker.sh was rendered for {resolved.num_shards} shards but "
            f"shards/ now holds {len(state.shards)}",
            hint="re-render after re-sharding: xfer slurm render --run-dir RUN ...",
        )
    return pending_shards(state, include_failed=True)


def submit_run(
    run_dir: str | os.PathLike[str],
    scheduler: str,
    *,
    concurrency: int | None = None,
    shards: Sequence[int] | None = None,
    max_attempts: int | None = None,
    extra_args: Sequence[str] = (),
    env: dict[str, str] | None = None,
    checked: bool = False,
) -> Submission | None:
    """Submit ``shards`` (default: every shard not done) of a rendered run dir.

    Returns None when there is nothing to submit. Writes the scheduler's job files
    when the run was rendered for another scheduler, and records the submission in
    ``RUN/jobs.json`` (once, whatever the scheduler). Refuses
    (:func:`refuse_if_alive`) while a job of the run is still queued or running.
    ``checked``: the caller has already checked the run dir and refused a live job of
    the run in this command (neither is done twice).
    """
    from xfer_core.registry import get_registry

    if checked:
        root = Path(run_dir).resolve()
    else:
        root = check_run_dir(run_dir)
        refuse_if_alive(root, "submitting again")
    resolved = load_resolved(root)
    todo = list(shards) if shards is not None else shards_to_submit(root)
    if not todo:
        return None
    plugin: Scheduler = get_registry().get("scheduler", scheduler)
    if resolved.scheduler != plugin.name:
        # rendered for another scheduler (or before schedulers rendered their own files)
        # (another scheduler's options do not apply: this one's defaults)
        resolved.scheduler, resolved.scheduler_options = plugin.name, {}
        write_job_files(root, plugin, resolved)

    def record(sub: Submission) -> None:
        record_submission(root, sub)

    options = SubmitOptions(
        max_attempts=max_attempts or resolved.max_attempts,
        extra_args=tuple(extra_args),
        env=dict(env or {}),
        started=record,
        run_dir_checked=True,
    )
    submission = plugin.submit(root, todo, concurrency or resolved.array_concurrency, options)
    record(submission)
    return submission
