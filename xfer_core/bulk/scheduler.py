"""The scheduler interface (plugin kind ``scheduler``): runs a run dir's shards.

A scheduler starts the rendered ``RUN/worker.sh`` for the shards it is given,
at most ``concurrency`` at a time, and retries failed ones up to
``options.max_attempts`` times per submission. Shard state is never kept by the
scheduler: the worker writes it under ``RUN/state/`` and
:mod:`xfer_core.bulk.state` reads it, whoever ran the worker.

``worker.sh`` takes either shard indices (``worker.sh 3 7``) or an array task id
(``worker.sh --task T``: shards ``T, T+TASKS, T+2*TASKS...`` where ``TASKS`` is
frozen in the script). It exits 0 when all its shards are done, 1 otherwise.

A third-party scheduler (PBS, Flux, Kubernetes jobs...) subclasses
:class:`Scheduler` and registers an instance from ``register_schedulers``::

    from xfer_core.bulk.scheduler import Scheduler, Submission, SubmitOptions
    from xfer_core.hookspecs import hookimpl

    class PbsScheduler(Scheduler):
        name = "pbs"
        description = "PBS Pro / OpenPBS job arrays"

        def submit(self, run_dir, shard_indices, concurrency, options):
            job_id = qsub_array(run_dir / "worker.sh", shard_indices, concurrency)
            return Submission(scheduler="pbs", job_id=job_id, shards=list(shard_indices))

    @hookimpl
    def register_schedulers(register):
        register(PbsScheduler())
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar

import msgspec

from xfer_core.plugin import Availability, Kind, Plugin


class SubmitOptions(msgspec.Struct, kw_only=True):
    """How to run a submission; schedulers ignore what does not apply to them."""

    #: Attempts per shard in this submission (the worker's first try included).
    max_attempts: int = 3
    #: Extra arguments for the scheduler's submit command (``sbatch``), already split.
    extra_args: tuple[str, ...] = ()
    #: Environment additions for the scheduler's commands (e.g. ``SLURM_CONF``).
    env: dict[str, str] = {}


class Submission(msgspec.Struct, kw_only=True):
    """What a :meth:`Scheduler.submit` started (recorded in ``RUN/jobs.json``)."""

    scheduler: str
    #: The scheduler's id for the job (Slurm job id; ``local-<pid>-<time>`` locally).
    job_id: str
    submitted_at: float = msgspec.field(default_factory=time.time)
    #: Shards the submission covers.
    shards: list[int] = []
    #: Array task ids submitted (Slurm), empty when tasks are shards.
    tasks: list[int] = []
    #: True when submit() returned after the work ended (local); False when the
    #: work goes on in the background (Slurm).
    finished: bool = False
    #: Commands the user may want next (``squeue -j ID`` ...), printed by the CLI.
    hints: list[str] = []


class JobInfo(msgspec.Struct, kw_only=True):
    """What a scheduler knows about one job (or array task) right now."""

    job_id: str
    #: Array task id, or None for the whole job / a non-array job.
    task: int | None = None
    #: Scheduler's state word (``PENDING``, ``RUNNING``, ``COMPLETED``...).
    state: str = ""
    #: Why it is pending / how it ended, when the scheduler says.
    reason: str = ""
    #: Seconds it has run, when known.
    elapsed: float | None = None


class Scheduler(Plugin):
    """Base class of schedulers (builtins: ``local``, ``slurm``)."""

    kind: ClassVar[Kind] = "scheduler"

    def submit(
        self,
        run_dir: Path,
        shard_indices: Sequence[int],
        concurrency: int,
        options: SubmitOptions,
    ) -> Submission:
        """Run ``RUN/worker.sh`` for ``shard_indices``, ``concurrency`` at a time.

        ``run_dir`` is rendered (``worker.sh``, ``config.resolved.json``). A batch
        scheduler returns once the job is queued (``finished=False``); the local
        scheduler returns when every shard is done or out of attempts. Raise
        :class:`xfer_core.errors.XferError` when the job cannot be submitted.
        The caller records the result in ``RUN/jobs.json``.
        """
        raise NotImplementedError

    def queue_info(
        self, job_ids: Sequence[str], env: dict[str, str] | None = None
    ) -> list[JobInfo]:
        """What the scheduler knows about ``job_ids`` now: one :class:`JobInfo` per job
        or array task still known to it. Jobs it has forgotten are simply absent.
        Default: nothing known (a scheduler without a queue)."""
        return []

    def reachable(self, env: dict[str, str] | None = None) -> Availability:
        """Can jobs be submitted from here right now? May contact the scheduler
        (bounded by a short timeout), unlike :meth:`check`. Used to pick the
        default scheduler of ``xfer run``. Default: :meth:`check`."""
        return self.check()

    def max_tasks(self, env: dict[str, str] | None = None) -> int | None:
        """Most tasks one submission may have (Slurm: ``MaxArraySize``), or None for
        no limit. ``xfer slurm render`` maps several shards per task above it."""
        return None
