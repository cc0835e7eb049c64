"""``RUN/jobs.json``: the submissions of a run, appended atomically.

Read with :func:`xfer_core.bulk.state.read_jobs`. Core records every submission
(:func:`xfer_core.bulk.submit.submit_run`); schedulers never write it.
"""

from __future__ import annotations

import os
from pathlib import Path

import msgspec

from xfer_core.atomic import atomic_write_bytes
from xfer_core.bulk.scheduler import Submission
from xfer_core.bulk.state import JobRecord, read_jobs


def record_submission(run_dir: str | os.PathLike[str], submission: Submission) -> None:
    """Append ``submission`` to ``RUN/jobs.json`` (temp file + rename), once: a job id
    already recorded for its scheduler is not added again."""
    jobs = read_jobs(run_dir)
    if any(j.scheduler == submission.scheduler and j.job_id == submission.job_id for j in jobs):
        return
    jobs.append(
        JobRecord(
            scheduler=submission.scheduler,
            job_id=submission.job_id,
            submitted_at=submission.submitted_at,
            shards=list(submission.shards),
        )
    )
    data = msgspec.json.format(msgspec.json.encode(jobs))
    atomic_write_bytes(Path(run_dir) / "jobs.json", data + b"\n", perms=0o600)
