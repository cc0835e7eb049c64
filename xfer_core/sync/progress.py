"""How a sync run reports: JSON lines, plain lines, or a rich live display.

The engine calls a :class:`Reporter` at the start and end of each pair and for
the final summary; each pair gets its own :class:`~xfer_core.sync.backend.ProgressSink`
from :meth:`Reporter.pair_start`, which the backend feeds.

``--json`` events (one object per line on stdout)::

    {"event": "pair_start", "cluster": "a", "alias": "proj", "direction": "push",
     "source": "/home/me/proj", "destination": "a:~/proj", "dry_run": false}
    {"event": "file", "cluster": "a", "alias": "proj", "action": "send", "path": "x.py", "size": 12}
    {"event": "pair_done", "cluster": "a", "alias": "proj", "files_sent": 1, ...}
    {"event": "summary", "ok": true, "pairs": [...], "files_sent": 1, "bytes_sent": 12, ...}

``action`` is ``send``, ``link``, ``mkdir`` or ``delete``. A name that is not
valid UTF-8 is shown with ``\\xNN`` escapes and its exact bytes are in
``path_b64``.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

import msgspec

from xfer_core.manifest.record import path_fields
from xfer_core.output import display_name, human_bytes, terminal_text
from xfer_core.sync.backend import Action, PairJob, PairResult, ProgressSink

if TYPE_CHECKING:
    from rich.progress import Progress, TaskID

    from xfer_core.output import Output


class Summary(msgspec.Struct):
    """The final summary of a run (also the ``summary`` JSON event)."""

    direction: str
    backend: str
    dry_run: bool
    pairs: list[PairResult]
    files_sent: int = 0
    bytes_sent: int = 0
    skipped: int = 0
    failed: int = 0
    deleted: int = 0
    failed_pairs: int = 0
    seconds: float = 0.0
    #: Names given with -c/-a that are not in the config (the rest still ran).
    unknown: list[str] = []

    @property
    def ok(self) -> bool:
        return self.failed_pairs == 0 and not self.unknown


def summarize_pairs(
    direction: str, backend: str, dry_run: bool, results: list[PairResult], seconds: float
) -> Summary:
    """Totals over every pair."""
    return Summary(
        direction=direction,
        backend=backend,
        dry_run=dry_run,
        pairs=results,
        files_sent=sum(r.files_sent for r in results),
        bytes_sent=sum(r.bytes_sent for r in results),
        skipped=sum(r.skipped for r in results),
        failed=sum(r.failed for r in results),
        deleted=sum(r.deleted for r in results),
        failed_pairs=sum(not r.ok for r in results),
        seconds=round(seconds, 3),
    )


#: A name safe to print on one line, unambiguously (controls escaped, see docs/security.md).
display_path = display_name


class Reporter:
    """Receives the run's events; the base class reports nothing (library use)."""

    def pair_start(self, job: PairJob) -> ProgressSink:
        """A pair begins; returns the sink its backend will feed."""
        return ProgressSink()

    def pair_done(self, job: PairJob, result: PairResult) -> None:
        """A pair ended (successfully or not)."""

    def warning(self, message: str) -> None:
        """A warning about the whole run (e.g. the rsync → sftp fallback)."""

    def summary(self, summary: Summary) -> None:
        """The run ended."""

    def close(self) -> None:
        """Stop any live display."""

    def paused(self) -> AbstractContextManager[object]:
        """Hide any live display while a login prompt is on the terminal."""
        return contextlib.nullcontext()


class CollectingSink(ProgressSink):
    """Remembers every item (used by the conformance suite and by tests)."""

    def __init__(self) -> None:
        self.items: list[tuple[Action, str, int]] = []
        self.bytes = 0
        self.messages: list[str] = []

    def item(self, action: Action, relpath: str, size: int = 0) -> None:
        self.items.append((action, relpath, size))

    def advance(self, nbytes: int) -> None:
        self.bytes += nbytes

    def message(self, text: str) -> None:
        self.messages.append(text)

    def paths(self, action: Action) -> set[str]:
        """Relative paths reported with ``action``."""
        return {p for a, p, _ in self.items if a == action}


# -- JSON -----------------------------------------------------------------------
class _JsonSink(ProgressSink):
    def __init__(self, out: Output, job: PairJob):
        self.out = out
        self.job = job

    def item(self, action: Action, relpath: str, size: int = 0) -> None:
        path, meta = path_fields(relpath.encode("utf-8", "surrogateescape"))
        fields: dict[str, Any] = {"action": action, "path": path, "size": size}
        if meta:
            fields.update(meta)
        self.out.event("file", cluster=self.job.cluster, alias=self.job.alias, **fields)

    def message(self, text: str) -> None:
        self.out.event("message", cluster=self.job.cluster, alias=self.job.alias, message=text)


class JsonReporter(Reporter):
    """``--json``: one object per line on stdout."""

    def __init__(self, out: Output):
        self.out = out

    def pair_start(self, job: PairJob) -> ProgressSink:
        self.out.event(
            "pair_start",
            cluster=job.cluster,
            alias=job.alias,
            direction=job.direction,
            source=job.source,
            destination=job.destination,
            dry_run=job.dry_run,
        )
        return _JsonSink(self.out, job)

    def pair_done(self, job: PairJob, result: PairResult) -> None:
        self.out.emit_json({"event": "pair_done", **msgspec.to_builtins(result)})

    def warning(self, message: str) -> None:
        self.out.warn(message)

    def summary(self, summary: Summary) -> None:
        self.out.emit_json({"event": "summary", "ok": summary.ok, **msgspec.to_builtins(summary)})


# -- plain lines ----------------------------------------------------------------
class _PlainSink(ProgressSink):
    def __init__(self, reporter: PlainReporter, job: PairJob):
        self.reporter = reporter
        self.job = job

    def item(self, action: Action, relpath: str, size: int = 0) -> None:
        if self.reporter.list_items:
            verb = _item_verb(action, self.job.direction)
            prefix = "would " if self.job.dry_run else ""
            self.reporter.line(
                f"{self.job.cluster}/{self.job.alias}: {prefix}{verb} {display_path(relpath)}"
            )

    def message(self, text: str) -> None:
        self.reporter.line(f"{self.job.cluster}/{self.job.alias}: {text}")


class PlainReporter(Reporter):
    """Not a TTY: one line per pair start/end (and per item with dry-run or -v), then a summary."""

    def __init__(self, out: Output, *, dry_run: bool):
        self.out = out
        self.list_items = dry_run or out.verbose > 0

    def line(self, text: str) -> None:
        if not self.out.quiet:
            print(terminal_text(text), file=sys.stderr, flush=True)

    def pair_start(self, job: PairJob) -> ProgressSink:
        self.line(f"{job.cluster}/{job.alias}: {job.source} -> {job.destination}")
        return _PlainSink(self, job)

    def pair_done(self, job: PairJob, result: PairResult) -> None:
        self.line(pair_line(result))

    def warning(self, message: str) -> None:
        self.out.warn(message)

    def summary(self, summary: Summary) -> None:
        self.line(summary_line(summary))


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _item_verb(action: Action, direction: str) -> str:
    """What happens to one item: a pulled file is fetched, not sent."""
    return "fetch" if action == "send" and direction == "pull" else action


def _verb(direction: str, dry_run: bool) -> str:
    """``sent`` for a push, ``fetched`` for a pull (``would send`` / ``would fetch``)."""
    if direction == "pull":
        return "would fetch" if dry_run else "fetched"
    return "would send" if dry_run else "sent"


def pair_line(r: PairResult) -> str:
    """One line per pair for the summary."""
    head = f"{r.cluster}/{r.alias}:"
    if r.error:
        return f"{head} FAILED: {r.error}"
    verb = _verb(r.direction, r.dry_run)
    text = (
        f"{head} {verb} {r.files_sent} files ({human_bytes(r.bytes_sent)}), {r.skipped} up to date"
    )
    if r.deleted:
        text += f", {'would delete' if r.dry_run else 'deleted'} {r.deleted}"
    if r.failed:
        text += f", {r.failed} FAILED"
    return f"{text} in {r.seconds:.1f}s"


def summary_line(s: Summary) -> str:
    """The last line of a run."""
    verb = _verb(s.direction, s.dry_run)
    text = (
        f"{_count(len(s.pairs), 'pair')}: {verb} {_count(s.files_sent, 'file')} "
        f"({human_bytes(s.bytes_sent)}), {s.skipped} up to date"
    )
    if s.deleted:
        text += f", deleted {s.deleted}"
    if s.failed_pairs:
        text += f"; {_count(s.failed_pairs, 'pair')} FAILED"
    for problem in s.unknown:
        text += f"; not run: {problem}"
    return f"{text} in {s.seconds:.1f}s"


# -- rich -----------------------------------------------------------------------
class _RichSink(ProgressSink):
    def __init__(self, reporter: RichReporter, job: PairJob, task: TaskID):
        self.reporter = reporter
        self.job = job
        self.task = task
        self.files = 0

    def planned(self, files: int, total_bytes: int) -> None:
        self.reporter.progress.update(self.task, total=max(total_bytes, 1))

    def item(self, action: Action, relpath: str, size: int = 0) -> None:
        if action in ("send", "link"):
            self.files += 1
            self.reporter.progress.update(self.task, files=self.files)
        if self.job.dry_run:
            self.reporter.say(
                f"{self.job.cluster}/{self.job.alias}: would {_item_verb(action, self.job.direction)} "
                f"{display_path(relpath)}"
            )

    def advance(self, nbytes: int) -> None:
        self.reporter.progress.advance(self.task, nbytes)

    def message(self, text: str) -> None:
        self.reporter.say(f"{self.job.cluster}/{self.job.alias}: {text}")


class RichReporter(Reporter):
    """A TTY: one live progress row per pair (files, bytes, rate, ETA), then the summary."""

    def __init__(self, out: Output):
        from rich.progress import TextColumn

        self.out = out
        self.progress: Progress = out.byte_progress(TextColumn("{task.fields[files]} files"))
        self.progress.start()
        self._tasks: dict[tuple[str, str], TaskID] = {}

    def pair_start(self, job: PairJob) -> ProgressSink:
        task = self.progress.add_task(f"{job.cluster}/{job.alias}", total=None, files=0)
        self._tasks[(job.cluster, job.alias)] = task
        return _RichSink(self, job, task)

    def pair_done(self, job: PairJob, result: PairResult) -> None:
        task = self._tasks.get((job.cluster, job.alias))
        if task is not None:
            done = self.progress.tasks[task].completed
            self.progress.update(task, total=max(done, 1), completed=max(done, 1))
        self.say(pair_line(result))

    def warning(self, message: str) -> None:
        self.say(f"xfer: warning: {message}")

    def say(self, text: str) -> None:
        """Print one line above the live display (escaped: :func:`terminal_text`)."""
        self.progress.console.print(terminal_text(text), markup=False)

    def summary(self, summary: Summary) -> None:
        self.close()
        self.out.console.print(summary_line(summary), markup=False)

    def close(self) -> None:
        self.progress.stop()

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        self.progress.stop()
        try:
            yield
        finally:
            self.progress.start()


def reporter_for(out: Output, *, dry_run: bool) -> Reporter:
    """The reporter matching the output mode: JSON, rich on a TTY, or plain lines."""
    if out.json:
        return JsonReporter(out)
    if out.is_tty and not out.quiet and os.environ.get("XFER_PLAIN") is None:
        return RichReporter(out)
    return PlainReporter(out, dry_run=dry_run)
