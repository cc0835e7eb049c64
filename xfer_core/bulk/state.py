"""The state of a run dir: which shards are done, running, retrying, failed or pending.

One model for every scheduler (local, Slurm, third-party). It is derived from the
files the worker writes under ``RUN/state/`` (layout in ``docs/run.md``) and the
current sharding in ``RUN/shards/shards.meta.json``:

- ``shard_<i>.done`` holds the shard's content digest. It counts only when it equals
  the digest of shard ``i`` in the current meta: a ``.done`` from an older sharding is
  *stale* and ignored.
- ``shard_<i>.running`` holds ``host pid start_epoch attempt`` while a worker runs the
  shard. A ``.running`` whose process is gone (same host, pid dead or reused), or whose
  scheduler jobs are all gone (``jobs_alive=False``), is a dead attempt: it counts as
  a failed attempt.
- ``shard_<i>.attempt`` counts attempts started, over every submission; ``shard_<i>.fail``
  holds the reason of the last failed attempt; ``shard_<i>.interrupted`` counts the
  attempts stopped from outside (SIGTERM/SIGINT: a cancel or a requeue by an admin,
  preemption, a node set DOWN, Ctrl-C), which are not the shard's failures. Each
  submission gives a shard ``max_attempts`` tries, so its *attempt limit* is
  ``max_attempts`` times the number of submissions (``jobs.json``) that included it (at
  least one). With ``attempts - interrupted`` at the limit the failure is permanent
  (``failed``), else the shard will be tried again (``retrying``; by the running
  submission, or by the next one).

Precedence: done > running > failed/retrying > pending.

Loading is one ``os.scandir`` of ``state/`` plus one small read per state file
(no per-shard ``stat`` or existence probes), so a run dir with 10,000 shards loads
in a few tens of milliseconds.

``config.resolved.json`` provides ``max_attempts`` (top-level integer key; default
:data:`DEFAULT_MAX_ATTEMPTS`); ``jobs.json`` is a JSON list of :class:`JobRecord`.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Literal

import msgspec

from xfer_core.bulk.rundir import check_state_file
from xfer_core.errors import XferError
from xfer_core.procfs import process_start

#: Attempts per shard when ``config.resolved.json`` does not say.
DEFAULT_MAX_ATTEMPTS = 3

ShardStatus = Literal["done", "running", "retrying", "failed", "pending"]

#: Every status, in display order.
STATUSES: tuple[ShardStatus, ...] = ("done", "running", "retrying", "failed", "pending")

_SUFFIXES = ("done", "running", "attempt", "fail", "interrupted")


class ShardRef(msgspec.Struct, frozen=True):
    """What the state model needs to know of one shard of the current sharding."""

    records: int
    bytes: int
    digest: str


class RunningInfo(msgspec.Struct, frozen=True):
    """Content of ``state/shard_<i>.running``: who runs the shard, since when."""

    host: str
    pid: int
    started_at: float
    attempt: int
    #: False when the process is known to be gone; None when it cannot be told
    #: from here (another host and no scheduler information).
    alive: bool | None = None


class ShardState(msgspec.Struct, kw_only=True):
    """The state of one shard."""

    index: int
    status: ShardStatus
    #: Attempts started so far (``.attempt``), over every submission.
    attempts: int = 0
    #: Of those, attempts stopped from outside (``.interrupted``): not counted against
    #: the attempt limit.
    interrupted: int = 0
    #: Submissions (``jobs.json``) that included this shard.
    submissions: int = 0
    #: ``max_attempts`` x max(1, submissions): a failure at this count is permanent.
    attempt_limit: int = 1
    records: int = 0
    bytes: int = 0
    #: Content digest of the current shard (from ``shards.meta.json``).
    digest: str = ""
    #: True when a ``.done`` exists but holds another digest (older sharding): ignored.
    stale_done: bool = False
    #: Reason of the last failed attempt (``.fail``, or a dead ``.running``).
    last_error: str | None = None
    #: mtime (epoch seconds) of a valid ``.done``.
    done_at: float | None = None
    running: RunningInfo | None = None


class RunTotals(msgspec.Struct, kw_only=True):
    """Counts over all shards; ``done + running + retrying + failed + pending == shards``."""

    shards: int = 0
    done: int = 0
    running: int = 0
    retrying: int = 0
    failed: int = 0
    pending: int = 0
    #: Shards whose ``.done`` belongs to an older sharding.
    stale_done: int = 0
    records: int = 0
    records_done: int = 0
    bytes: int = 0
    bytes_done: int = 0
    #: Attempts started over all shards.
    attempts: int = 0


class JobRecord(msgspec.Struct, kw_only=True):
    """One submission, as recorded in ``jobs.json`` (a JSON list of these)."""

    scheduler: str
    job_id: str
    submitted_at: float
    shards: list[int] = []


class RunState(msgspec.Struct, kw_only=True):
    """The state of a whole run dir at one moment (``loaded_at``)."""

    run_dir: str
    max_attempts: int
    loaded_at: float
    shards: list[ShardState]
    totals: RunTotals
    #: Shard indexes with state files but beyond the current shard count (older sharding).
    orphans: list[int] = []

    @property
    def complete(self) -> bool:
        """Every shard is done."""
        return self.totals.done == self.totals.shards

    @property
    def finished(self) -> bool:
        """Nothing will change without a user action: every shard done or permanently failed."""
        return self.totals.done + self.totals.failed == self.totals.shards


class StateFiles(msgspec.Struct, kw_only=True):
    """The raw content of one shard's state files (None when the file is absent)."""

    done: str | None = None
    done_mtime: float | None = None
    running: str | None = None
    attempt: str | None = None
    fail: str | None = None
    interrupted: str | None = None


# --- pure core -------------------------------------------------------------------------


def shard_status(
    *,
    done_valid: bool,
    running_alive: bool | None,
    has_fail: bool,
    attempts: int,
    max_attempts: int,
) -> ShardStatus:
    """The status of one shard from its facts (rules in the module docstring).

    ``running_alive``: None without a ``.running``; True when its worker is alive or
    cannot be checked from here; False for a dead worker (counts as a failed attempt).
    """
    if done_valid:
        return "done"
    if running_alive:
        return "running"
    if has_fail or running_alive is False:
        return "failed" if attempts >= max_attempts else "retrying"
    return "pending"


def parse_running(text: str) -> RunningInfo | None:
    """Parse ``host pid start_epoch attempt``; None when malformed (treated as absent)."""
    parts = text.split()
    if len(parts) != 4:
        return None
    try:
        return RunningInfo(
            host=parts[0], pid=int(parts[1]), started_at=float(parts[2]), attempt=int(parts[3])
        )
    except ValueError:
        return None


def parse_attempts(text: str | None) -> int:
    """The integer in ``.attempt`` (0 when absent or malformed)."""
    if text is None:
        return 0
    try:
        return max(0, int(text.strip() or "0"))
    except ValueError:
        return 0


def build_shard_state(
    index: int,
    ref: ShardRef,
    files: StateFiles,
    *,
    max_attempts: int,
    submissions: int,
    liveness: _Liveness,
) -> ShardState:
    """One :class:`ShardState` from the shard's meta and the content of its state files."""
    attempts = parse_attempts(files.attempt)
    interrupted = parse_attempts(files.interrupted)
    done_digest = files.done.strip() if files.done is not None else None
    done_valid = done_digest is not None and done_digest == ref.digest
    running = parse_running(files.running) if files.running is not None else None
    if running is not None:
        running = msgspec.structs.replace(running, alive=liveness(running))
        attempts = max(attempts, running.attempt)
    running_alive = None if running is None else running.alive is not False
    last_error = None
    if files.fail is not None:
        last_error = files.fail.strip() or f"attempt {attempts}: failed (no reason recorded)"
    if running is not None and running.alive is False and not done_valid:
        last_error = (
            f"attempt {running.attempt}: worker died "
            f"(pid {running.pid} on {running.host} is gone, no result recorded)"
        )
    limit = max_attempts * max(1, submissions)
    status = shard_status(
        done_valid=done_valid,
        running_alive=running_alive,
        has_fail=files.fail is not None,
        attempts=attempts - min(interrupted, attempts),
        max_attempts=limit,
    )
    return ShardState(
        index=index,
        status=status,
        attempts=attempts,
        interrupted=min(interrupted, attempts),
        submissions=submissions,
        attempt_limit=limit,
        records=ref.records,
        bytes=ref.bytes,
        digest=ref.digest,
        stale_done=done_digest is not None and not done_valid,
        last_error=last_error if status != "done" else None,
        done_at=files.done_mtime if done_valid else None,
        running=running if status == "running" else None,
    )


def count_submissions(jobs: Iterable[JobRecord], num_shards: int) -> list[int]:
    """Per shard, how many of ``jobs`` included it (a job with no shard list: all of them)."""
    counts = [0] * num_shards
    for job in jobs:
        if not job.shards:
            counts = [c + 1 for c in counts]
            continue
        for i in set(job.shards):
            if 0 <= i < num_shards:
                counts[i] += 1
    return counts


def run_totals(shards: Iterable[ShardState]) -> RunTotals:
    """Totals over ``shards``."""
    t = RunTotals()
    for s in shards:
        t.shards += 1
        t.records += s.records
        t.bytes += s.bytes
        t.attempts += s.attempts
        if s.stale_done:
            t.stale_done += 1
        if s.status == "done":
            t.done += 1
            t.records_done += s.records
            t.bytes_done += s.bytes
        elif s.status == "running":
            t.running += 1
        elif s.status == "retrying":
            t.retrying += 1
        elif s.status == "failed":
            t.failed += 1
        else:
            t.pending += 1
    return t


def pending_shards(
    run_state: RunState,
    max_attempts: int | None = None,
    *,
    include_failed: bool = False,
    include_running: bool = False,
) -> list[int]:
    """The shard indexes a (re)submission should run, ascending.

    Not done, not permanently failed (attempts at the shard's attempt limit, computed
    with ``max_attempts`` when given) unless ``include_failed``, and not running unless
    ``include_running``.
    """
    out = []
    for s in run_state.shards:
        if s.status == "done":
            continue
        if s.status == "running" and not include_running:
            continue
        limit = s.attempt_limit if max_attempts is None else max_attempts * max(1, s.submissions)
        counted = s.attempts - s.interrupted
        if s.status in ("failed", "retrying") and counted >= limit and not include_failed:
            continue
        out.append(s.index)
    return out


class Throughput(msgspec.Struct, kw_only=True):
    """Throughput and ETA of a run (method in :func:`estimate_throughput`)."""

    #: Start of the measuring window (epoch seconds), None when nothing is known.
    since: float | None = None
    #: End of the window: now while the run goes on, else the last completion.
    until: float | None = None
    #: Bytes and shards completed inside the window.
    bytes: int = 0
    shards: int = 0
    bytes_per_second: float | None = None
    #: Seconds until every shard that can still succeed is done; None when unknown or finished.
    eta_seconds: float | None = None


def estimate_throughput(run_state: RunState, jobs: Sequence[JobRecord] = ()) -> Throughput:
    """Throughput and ETA from the ``.done`` mtimes.

    The window starts at the latest submission (``jobs.json``), or without one at the
    earliest known shard start or completion, so a retry days later is not averaged
    with the first run. Rate = bytes of the shards completed inside the window / its
    length; the window ends now while shards are running or waiting, else at the last
    completion. ETA = bytes still to do (not done, not permanently failed) / rate.
    """
    starts = [j.submitted_at for j in jobs]
    if starts:
        since: float | None = max(starts)
    else:
        known = [s.done_at for s in run_state.shards if s.done_at is not None]
        known += [s.running.started_at for s in run_state.shards if s.running is not None]
        since = min(known) if known else None
    if since is None:
        return Throughput()
    in_window = [s for s in run_state.shards if s.done_at is not None and s.done_at >= since - 1]
    done_bytes = sum(s.bytes for s in in_window)
    if run_state.finished:
        until = max((s.done_at or since for s in in_window), default=since)
    else:
        until = run_state.loaded_at
    elapsed = until - since
    rate = done_bytes / elapsed if elapsed > 0 and in_window else None
    eta = None
    if rate and not run_state.finished:
        todo = sum(s.bytes for s in run_state.shards if s.status not in ("done", "failed"))
        eta = todo / rate
    return Throughput(
        since=since,
        until=until,
        bytes=done_bytes,
        shards=len(in_window),
        bytes_per_second=rate,
        eta_seconds=eta,
    )


# --- I/O edge --------------------------------------------------------------------------


class _Liveness:
    """Decides whether the worker of a ``.running`` file is still there."""

    def __init__(self, jobs_alive: bool | None):
        self.jobs_alive = jobs_alive
        self.host = socket.gethostname()

    def __call__(self, info: RunningInfo) -> bool | None:
        if self.jobs_alive is False:
            return False
        if info.host not in (self.host, self.host.split(".")[0]):
            return self.jobs_alive
        return self._pid_alive(info.pid, info.started_at)

    def _pid_alive(self, pid: int, started_at: float) -> bool:
        if pid <= 0:
            return False
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            pass
        # the pid exists; a process that started well after the .running was written
        # is another process that got the same pid
        start = process_start(pid)
        return start is None or start <= started_at + 5


def read_state_files(state_dir: Path) -> dict[int, StateFiles]:
    """The content of every ``shard_<i>.<kind>`` file in ``state_dir``, by shard index.

    One ``scandir``; files are opened relative to the directory. Temp files (leading
    dot) and unknown names are ignored; a file that vanishes meanwhile counts as absent.
    """
    out: dict[int, StateFiles] = {}
    try:
        dir_fd = os.open(state_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except FileNotFoundError:
        return out
    try:
        with os.scandir(dir_fd) as it:
            names = [e.name for e in it]
        for name in names:
            if not name.startswith("shard_"):
                continue
            stem, _, kind = name.rpartition(".")
            if kind not in _SUFFIXES:
                continue
            try:
                index = int(stem[6:])
            except ValueError:
                continue
            if index < 0:
                continue
            try:
                # a symlink is never followed (ELOOP): it counts as absent
                fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=dir_fd)
            except OSError:
                continue
            try:
                st = os.fstat(fd)
                # another user's file (a planted .done would skip a shard): refused
                check_state_file(state_dir / name, st)
                data = os.read(fd, 65536).decode("utf-8", "replace")
                mtime = st.st_mtime if kind == "done" else None
            finally:
                os.close(fd)
            files = out.get(index)
            if files is None:
                files = out[index] = StateFiles()
            if kind == "done":
                files.done = data
                files.done_mtime = mtime
            elif kind == "running":
                files.running = data
            elif kind == "attempt":
                files.attempt = data
            elif kind == "interrupted":
                files.interrupted = data
            else:
                files.fail = data
    finally:
        os.close(dir_fd)
    return out


def read_max_attempts(run_dir: str | os.PathLike[str]) -> int:
    """``max_attempts`` from ``RUN/config.resolved.json`` (default when absent)."""
    path = Path(run_dir) / "config.resolved.json"
    try:
        data = msgspec.json.decode(path.read_bytes())
    except FileNotFoundError:
        return DEFAULT_MAX_ATTEMPTS
    except msgspec.DecodeError as exc:
        raise XferError(
            f"{path}: not valid JSON ({exc})", hint="re-render the run dir (xfer slurm render)"
        ) from None
    value = data.get("max_attempts") if isinstance(data, dict) else None
    if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
        return value
    return DEFAULT_MAX_ATTEMPTS


def read_jobs(run_dir: str | os.PathLike[str]) -> list[JobRecord]:
    """The submissions recorded in ``RUN/jobs.json`` (empty when none)."""
    path = Path(run_dir) / "jobs.json"
    try:
        return msgspec.json.decode(path.read_bytes(), type=list[JobRecord])
    except FileNotFoundError:
        return []
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise XferError(
            f"{path}: {exc}", hint="the file is written by xfer; was it edited?"
        ) from None


def load_shard_refs(run_dir: str | os.PathLike[str]) -> list[ShardRef]:
    """Records, bytes and digest of every shard of the current sharding of ``run_dir``."""
    from xfer_core.manifest.shard import load_shard_meta

    # no per-shard file checks: state is read often (status --watch) and must stay fast
    meta = load_shard_meta(Path(run_dir) / "shards", check_files=False)
    return [ShardRef(records=s.records, bytes=s.bytes, digest=s.sha256) for s in meta.shards]


def load_run_state(
    run_dir: str | os.PathLike[str],
    *,
    shards: Sequence[ShardRef] | None = None,
    max_attempts: int | None = None,
    jobs: Sequence[JobRecord] | None = None,
    jobs_alive: bool | None = None,
    now: float | None = None,
) -> RunState:
    """The state of every shard of ``run_dir``.

    ``shards`` defaults to the run's ``shards/shards.meta.json``; ``max_attempts`` to
    the run's ``config.resolved.json``; ``jobs`` to its ``jobs.json``. ``jobs_alive`` is what the scheduler knows:
    False when none of the run's jobs is queued or running any more (every
    ``.running`` is then a dead attempt), None when unknown.
    """
    import time

    root = Path(run_dir)
    refs = list(shards) if shards is not None else load_shard_refs(root)
    limit = read_max_attempts(root) if max_attempts is None else max_attempts
    files = read_state_files(root / "state")
    submissions = count_submissions(read_jobs(root) if jobs is None else jobs, len(refs))
    liveness = _Liveness(jobs_alive)
    empty = StateFiles()
    states = [
        build_shard_state(
            i,
            ref,
            files.get(i, empty),
            max_attempts=limit,
            submissions=submissions[i],
            liveness=liveness,
        )
        for i, ref in enumerate(refs)
    ]
    orphans = sorted(i for i in files if i >= len(refs))
    return RunState(
        run_dir=str(root),
        max_attempts=limit,
        loaded_at=time.time() if now is None else now,
        shards=states,
        totals=run_totals(states),
        orphans=orphans,
    )
