"""The scheduler interface (plugin kind ``scheduler``): runs a run dir's shards.

A scheduler starts the rendered ``RUN/worker.sh`` for the shards it is given,
at most ``concurrency`` at a time, and retries failed ones up to
``options.max_attempts`` times per submission. Shard state is never kept by the
scheduler: the worker writes it under ``RUN/state/`` and
:mod:`xfer_core.bulk.state` reads it, whoever ran the worker.

``worker.sh`` takes either shard indices (``worker.sh 3 7``) or an array task id
(``worker.sh --task T``: shards ``T, T+TASKS, T+2*TASKS...`` where ``TASKS`` is
frozen in the script). It exits 0 when all its shards are done, 1 otherwise.

Everything scheduler-specific lives in the scheduler, not in core:

- the job files it submits (:meth:`Scheduler.job_files`, written at render and
  before a submission);
- its own options (:attr:`Scheduler.Options`, given as ``-O NAME=VALUE``);
- the requeue on a time limit: its job file defines the bash functions
  ``xfer_task_id TASK`` and ``xfer_requeue ID`` and then sources ``worker.sh``
  (``. worker.sh --task T``), which calls them (see ``worker.sh``);
- its queue's state words mapped onto :class:`JobState` (:meth:`Scheduler.job_state`);
- whether it can be reached (:meth:`Scheduler.reachable`, for the default choice),
  how many tasks one submission may have, and how to cancel.

Core records each submission in ``RUN/jobs.json`` (:mod:`xfer_core.bulk.submit`);
a scheduler only returns it. A third-party scheduler (PBS, Flux, Kubernetes jobs...)
subclasses :class:`Scheduler` and registers an instance from ``register_schedulers``::

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

import enum
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import msgspec

from xfer_core.errors import ConfigError, XferError
from xfer_core.plugin import Availability, Kind, Plugin

if TYPE_CHECKING:
    from xfer_core.bulk.render import ResolvedConfig


class JobState(str, enum.Enum):
    """One scheduler-independent state of a job or array task."""

    #: Queued, held, or waiting to be started again (requeued).
    PENDING = "pending"
    #: Running (a worker may be writing the run dir).
    RUNNING = "running"
    #: Ended by itself (whatever its exit code: the run dir says how the shards went).
    ENDED = "ended"
    #: Ended from outside: cancelled, killed, preempted, node failure.
    CANCELLED = "cancelled"
    #: A word the scheduler does not map: treated as still alive (never run twice).
    UNKNOWN = "unknown"


#: States in which a job may still run a worker.
ALIVE_STATES = frozenset({JobState.PENDING, JobState.RUNNING, JobState.UNKNOWN})


class NoOptions(msgspec.Struct, forbid_unknown_fields=True):
    """A scheduler without options of its own."""


class SubmitOptions(msgspec.Struct, kw_only=True):
    """How to run a submission; schedulers ignore what does not apply to them."""

    #: Attempts per shard in this submission (the worker's first try included).
    max_attempts: int = 3
    #: Extra arguments for the scheduler's submit command, already split.
    extra_args: tuple[str, ...] = ()
    #: Environment additions for the scheduler's commands (e.g. its config file).
    env: dict[str, str] = {}
    #: Called by a scheduler that runs in the foreground as soon as its job exists, so
    #: ``RUN/jobs.json`` names it while it runs; core records the returned submission
    #: otherwise (once either way).
    started: Callable[[Submission], None] | None = None
    #: True when core has checked the run dir in this command (``check_run_dir``): a
    #: scheduler that runs ``worker.sh`` itself checks it otherwise (a library call).
    run_dir_checked: bool = False


class Submission(msgspec.Struct, kw_only=True):
    """What a :meth:`Scheduler.submit` started (recorded in ``RUN/jobs.json``)."""

    scheduler: str
    #: The scheduler's id for the job (Slurm job id; ``local-<pid>-<time>`` locally).
    job_id: str
    submitted_at: float = msgspec.field(default_factory=time.time)
    #: Shards the submission covers.
    shards: list[int] = []
    #: Array task ids submitted (batch schedulers), empty when tasks are shards.
    tasks: list[int] = []
    #: True when submit() returned after the work ended (local); False when the
    #: work goes on in the background (Slurm).
    finished: bool = False
    #: Commands the user may want next (watch, throttle, cancel), printed by the CLI.
    hints: list[str] = []


class JobInfo(msgspec.Struct, kw_only=True):
    """What a scheduler knows about one job (or array task) right now."""

    job_id: str
    #: Array task id, or None for the whole job / a non-array job.
    task: int | None = None
    #: Scheduler's own state word (``PENDING``, ``qw``, ``RUNNING``...).
    state: str = ""
    #: ``state`` mapped by :meth:`Scheduler.job_state` (filled in by core).
    status: JobState = JobState.UNKNOWN
    #: Why it is pending / how it ended, when the scheduler says.
    reason: str = ""
    #: Seconds it has run, when known.
    elapsed: float | None = None


class Scheduler(Plugin):
    """Base class of schedulers (builtins: ``local``, ``slurm``)."""

    kind: ClassVar[Kind] = "scheduler"
    #: The scheduler's own options (``-O NAME=VALUE`` on ``xfer run`` / ``render``),
    #: a msgspec Struct with defaults; frozen into ``config.resolved.json``.
    Options: ClassVar[type[msgspec.Struct]] = NoOptions

    def parse_options(self, values: dict[str, Any]) -> msgspec.Struct:
        """``values`` (strings as typed, or values from config.resolved.json) checked
        against :attr:`Options`; a :class:`ConfigError` naming the known options otherwise."""
        try:
            return msgspec.convert(values, type=self.Options, strict=False)
        except msgspec.ValidationError as exc:
            known = ", ".join(self.Options.__struct_fields__) or "none"
            raise ConfigError(
                f"scheduler {self.name} option: {exc}",
                hint=f"options of {self.name}: {known} (`xfer plugins --json` describes them)",
            ) from None

    def job_files(self, run_dir: Path, resolved: ResolvedConfig, options: Any) -> dict[str, str]:
        """The job files to write into ``run_dir`` (name -> text, mode 0700): what the
        scheduler submits. A job file runs array task T as ``. worker.sh --task T``
        after defining ``xfer_task_id`` and ``xfer_requeue`` (see ``worker.sh``).
        Raise :class:`ConfigError` for values it cannot write. Default: none."""
        return {}

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
        scheduler returns when every shard is done or out of attempts (and calls
        ``options.started`` first). Raise :class:`xfer_core.errors.XferError` when the
        job cannot be submitted. Core records the result in ``RUN/jobs.json``.
        """
        raise NotImplementedError

    def queue_info(
        self, job_ids: Sequence[str], env: dict[str, str] | None = None
    ) -> list[JobInfo]:
        """What the scheduler knows about ``job_ids`` now: one :class:`JobInfo` per job
        or array task still known to it. Jobs it has forgotten are simply absent.
        Default: nothing known (a scheduler without a queue)."""
        return []

    def job_state(self, word: str) -> JobState:
        """Map one of the scheduler's state words (as in :attr:`JobInfo.state`) onto
        :class:`JobState`. Default: UNKNOWN (treated as alive)."""
        return JobState.UNKNOWN

    def pending_help(self, reason: str) -> str | None:
        """What a pending reason of this scheduler means for the user, or None."""
        return None

    def cancel(self, job_ids: Sequence[str], env: dict[str, str] | None = None) -> None:
        """Stop ``job_ids`` (queued or running). A worker stopped this way records its
        shard as interrupted, never done. Default: nothing to cancel (a scheduler
        whose submit returns after the work ended)."""
        raise XferError(f"scheduler {self.name} cannot cancel jobs")

    def cancel_hint(self, job_ids: Sequence[str]) -> str:
        """The command a user runs to cancel ``job_ids`` (shown in errors)."""
        return "wait for it to end"

    def reachable(self, env: dict[str, str] | None = None) -> Availability:
        """Can jobs be submitted from here right now? May contact the scheduler
        (bounded by a short timeout), unlike :meth:`check`. Used to pick the
        default scheduler of ``xfer run``. Default: :meth:`check`."""
        return self.check()

    def max_tasks(self, env: dict[str, str] | None = None) -> int | None:
        """Most tasks one submission may have (Slurm: ``MaxArraySize``), or None for
        no limit. Rendering maps several shards per task above it."""
        return None
