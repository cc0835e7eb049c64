"""Builtin scheduler ``local``: runs ``worker.sh`` per shard on this machine, C at a time.

The embedded default when there is no Slurm. It runs the same ``worker.sh`` as a
Slurm array task, so state, attempts, logs and verification are identical; it
retries a failed shard until it has had ``max_attempts`` tries in this
submission. It runs in the foreground: a rich progress display on a TTY, plain
lines otherwise, JSON events with ``--json``.

Ctrl-C (SIGINT) or SIGTERM: every worker gets SIGTERM (its trap stops the tool,
records ``.fail`` "interrupted" and removes ``.running``); whatever is still
alive after a grace period is killed, and ``.running`` files left by killed
workers are removed. Then ``KeyboardInterrupt`` propagates (exit 130). The next
run picks up every shard that is not done.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import select
import signal
import subprocess
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import IO, Any

from xfer_core.bulk.scheduler import Scheduler, Submission, SubmitOptions
from xfer_core.hookspecs import hookimpl
from xfer_core.output import Output, current, human_bytes
from xfer_core.plugin import AVAILABLE, Availability
from xfer_core.procfs import session_pids

_SUBMISSIONS = itertools.count()


def _job_id() -> str:
    """``local-<pid>-<time>``, plus ``.<n>`` for a later submission of the same process
    (two in one second must not share an id: jobs.json records each id once)."""
    n = next(_SUBMISSIONS)
    return f"local-{os.getpid()}-{int(time.time())}" + (f".{n}" if n else "")


#: Seconds a worker gets to clean up after SIGTERM before it is killed.
GRACE_SECONDS = 10.0
#: Without pidfds (Linux < 5.3) the runner looks at its workers this often; with them
#: it wakes the moment one exits, and this is only the longest it sleeps.
_POLL = 0.1
_LONGEST_WAIT = 1.0


def _signal_session(sid: int, sig: int) -> None:
    for pid in session_pids(sid):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


class _Display:
    """Progress of a local run: rich on a TTY, plain lines otherwise, events with --json."""

    def __init__(self, out: Output, total_shards: int, total_bytes: int):
        self.out = out
        self.total_bytes = total_bytes
        self.done_bytes = 0
        self._progress: Any = None
        self._task: Any = None
        if out.is_tty and not out.quiet:
            self._progress = out.byte_progress()
            self._task = self._progress.add_task("", total=total_bytes or 1)
        self.total_shards = total_shards
        self.done = 0
        self.failed = 0
        self.running = 0

    def __enter__(self) -> _Display:
        if self._progress is not None:
            self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()

    def _refresh(self) -> None:
        if self._progress is not None:
            self._progress.update(
                self._task,
                completed=self.done_bytes,
                description=f"shards {self.done}/{self.total_shards} "
                f"({self.running} running, {self.failed} failed)",
            )

    def line(self, message: str) -> None:
        if self._progress is not None:
            self._progress.console.print(message, markup=False, highlight=False)
        else:
            self.out.info(message)

    def started(self, shard: int, attempt: int) -> None:
        self.running += 1
        self.out.event("shard_started", shard=shard, attempt=attempt)
        self._refresh()

    def finished(self, shard: int, nbytes: int, records: int) -> None:
        self.running -= 1
        self.done += 1
        self.done_bytes += nbytes
        self.out.event("shard_done", shard=shard, bytes=nbytes, records=records)
        self.line(f"shard {shard}: done ({records} objects, {human_bytes(nbytes)})")
        self._refresh()

    def failed_attempt(self, shard: int, reason: str, *, retry: bool) -> None:
        self.running -= 1
        if not retry:
            self.failed += 1
        self.out.event("shard_failed", shard=shard, reason=reason, retrying=retry)
        self.line(f"shard {shard}: {reason}" + ("; retrying" if retry else "; giving up"))
        self._refresh()


class LocalScheduler(Scheduler):
    """Run shards as local processes, ``concurrency`` at a time, in the foreground."""

    name = "local"
    description = "runs worker.sh per shard on this machine (embedded default without Slurm)"

    def check(self) -> Availability:
        return AVAILABLE

    def submit(
        self,
        run_dir: Path,
        shard_indices: Sequence[int],
        concurrency: int,
        options: SubmitOptions,
    ) -> Submission:
        """Run the shards to completion here; returns when each is done or out of attempts."""
        from xfer_core.bulk.rundir import check_run_dir
        from xfer_core.bulk.state import load_shard_refs

        if not options.run_dir_checked:
            run_dir = check_run_dir(run_dir)  # called as a library: never an unchecked dir
        submission = Submission(
            scheduler=self.name,
            job_id=_job_id(),
            shards=list(shard_indices),
            finished=True,
        )
        if options.started is not None:
            options.started(submission)  # jobs.json names it while it runs
        refs = load_shard_refs(run_dir)
        at_once = max(1, min(concurrency, len(shard_indices)))
        _say_shares(run_dir, at_once)
        display = _Display(current(), len(shard_indices), sum(refs[i].bytes for i in shard_indices))
        with _open_log(run_dir) as log, display:
            _Runner(run_dir, refs, at_once, options.max_attempts, display, log).run(shard_indices)
        return submission


def _say_shares(run_dir: Path, at_once: int) -> None:
    """Say how the engine's parallelism flags are shared by the shards running at once
    here (each worker computes its share from ``XFER_SHARDS_AT_ONCE``, set below)."""
    from xfer_core.bulk.engine import share_flags
    from xfer_core.bulk.render import load_resolved
    from xfer_core.errors import XferError

    try:
        machine = load_resolved(run_dir).split_flags
    except XferError:  # not rendered by xfer: the workers say what they do
        return
    each = share_flags(machine, at_once)
    if not each:
        return
    out = current()
    out.event("shard_flags", shards_at_once=at_once, machine_flags=machine, shard_flags=each)
    out.info(
        f"local: {at_once} shards at once share {' '.join(machine)}: each runs "
        f"{' '.join(each)} (--no-split-transfers: each the full value)"
    )


@contextlib.contextmanager
def _open_log(run_dir: Path) -> Iterator[IO[bytes]]:
    from xfer_core.bulk.rundir import append_log, make_subdirs

    make_subdirs(run_dir)
    # never through a symlink planted as the log (it would append to its target)
    with open(append_log(run_dir / "logs" / "local_scheduler.log"), "ab") as fh:
        yield fh


@contextlib.contextmanager
def _interrupts_held() -> Iterator[None]:
    """Take Ctrl-C / SIGTERM only after the block: raised inside ``Popen`` once the worker
    was forked, the KeyboardInterrupt lost its pid, and the worker ran on, never stopped."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers run in the main thread only
        return
    held: list[int] = []
    wanted = (signal.SIGINT, signal.SIGTERM)
    previous = {
        sig: signal.signal(sig, lambda signum, _frame: held.append(signum)) for sig in wanted
    }
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, signal.SIG_DFL if handler is None else handler)
        if held:
            signal.raise_signal(held[0])


class _Runner:
    def __init__(
        self,
        run_dir: Path,
        refs: Sequence[Any],
        concurrency: int,
        max_attempts: int,
        display: _Display,
        log: IO[bytes],
    ):
        self.run_dir = run_dir
        self.worker = run_dir / "worker.sh"
        self.refs = refs
        self.concurrency = max(1, concurrency)
        self.max_attempts = max(1, max_attempts)
        self.display = display
        self.log = log
        self.running: dict[int, tuple[int, subprocess.Popen[bytes]]] = {}
        self.tries: dict[int, int] = {}
        #: pid -> a pidfd of each running worker (readable once it exits), when the
        #: kernel has them; the next shard then starts the moment one finishes
        self.pidfds: dict[int, int] = {}
        self.waiter = select.poll() if hasattr(os, "pidfd_open") else None

    def run(self, shards: Sequence[int]) -> None:
        queue = deque(shards)
        try:
            while queue or self.running:
                while queue and len(self.running) < self.concurrency:
                    self._start(queue.popleft())
                self._wait()
                for pid, (shard, proc) in list(self.running.items()):
                    rc = proc.poll()
                    if rc is None:
                        continue
                    del self.running[pid]
                    self._forget(pid)
                    # a worker killed hard leaves its tool's process group behind
                    _signal_session(pid, signal.SIGKILL)
                    self._clear_running(shard, pid)
                    if self._finished(shard, rc):
                        queue.append(shard)
        except BaseException:
            self._stop_all()
            raise
        finally:
            for pid in list(self.pidfds):
                self._forget(pid)

    def _wait(self) -> None:
        """Sleep until a worker exits: at once through its pidfd, else the next poll."""
        if self.waiter is None or len(self.pidfds) < len(self.running):
            time.sleep(_POLL)
            return
        # a signal (Ctrl-C, SIGTERM) interrupts the wait by raising in its handler
        self.waiter.poll(_LONGEST_WAIT * 1000)

    def _watch(self, pid: int) -> None:
        if self.waiter is None:
            return
        try:
            fd = os.pidfd_open(pid)
        except OSError:  # no pidfds here (an old kernel, a seccomp filter): poll instead
            self.waiter = None
            return
        self.pidfds[pid] = fd
        self.waiter.register(fd, select.POLLIN)

    def _forget(self, pid: int) -> None:
        fd = self.pidfds.pop(pid, None)
        if fd is not None:
            if self.waiter is not None:
                self.waiter.unregister(fd)
            os.close(fd)

    def _start(self, shard: int) -> None:
        self.tries[shard] = self.tries.get(shard, 0) + 1
        with _interrupts_held():
            proc = subprocess.Popen(
                ["bash", str(self.worker), str(shard)],
                # the machine's --transfers/--checkers are shared by the workers at once
                env={**os.environ, "XFER_SHARDS_AT_ONCE": str(self.concurrency)},
                stdin=subprocess.DEVNULL,
                stdout=self.log,
                stderr=self.log,
                start_new_session=True,
            )
            self.running[proc.pid] = (shard, proc)
        self._watch(proc.pid)
        self.display.started(shard, self.tries[shard])

    def _finished(self, shard: int, rc: int) -> bool:
        """Record the outcome; True when the shard should be tried again."""
        ref = self.refs[shard]
        if rc == 0:
            self.display.finished(shard, ref.bytes, ref.records)
            return False
        from xfer_core.bulk.rundir import read_nofollow

        fail = self.run_dir / "state" / f"shard_{shard}.fail"
        try:
            reason = read_nofollow(fail, 4096).decode(errors="replace").strip()
        except OSError:
            reason = ""
        reason = reason or f"worker exit {rc}"
        retry = self.tries[shard] < self.max_attempts
        self.display.failed_attempt(shard, reason, retry=retry)
        return retry

    def _stop_all(self) -> None:
        """Terminate every worker and leave consistent state (no .running of ours)."""
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            for _shard, proc in self.running.values():
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
            deadline = time.monotonic() + GRACE_SECONDS
            for _shard, proc in self.running.values():
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            for shard, proc in self.running.values():
                # the worker's trap stops its tool; anything left in its session goes now
                _signal_session(proc.pid, signal.SIGKILL)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=5)
                self._clear_running(shard, proc.pid)
            self.running.clear()
        finally:
            signal.signal(signal.SIGINT, previous)

    def _clear_running(self, shard: int, pid: int) -> None:
        from xfer_core.bulk.rundir import read_nofollow

        path = self.run_dir / "state" / f"shard_{shard}.running"
        try:
            fields = read_nofollow(path, 4096).decode(errors="replace").split()
        except OSError:
            return
        if len(fields) == 4 and fields[1] == str(pid):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()


@hookimpl
def register_schedulers(register: Callable[[Scheduler], None]) -> None:
    register(LocalScheduler())
