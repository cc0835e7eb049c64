"""The one sync engine behind ``xfer sync`` (push) and ``xfer fetch`` (pull).

:func:`run_sync` selects the config's pairs for the direction, merges each
pair's excludes, picks the backend (or the fallback it declares when it cannot run
here: rsync falls back to sftp), opens one backend session per cluster and runs the pairs --
``jobs`` at a time -- reporting through a :class:`~xfer_core.sync.progress.Reporter`.
A cluster that cannot be reached fails its own pairs with one line; the other
clusters go on.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from xfer_core.aio import run_interruptible
from xfer_core.config.load import backend_for, select_partial
from xfer_core.config.model import Cluster, Config
from xfer_core.errors import ConfigError, UnavailableError, XferError
from xfer_core.registry import Registry, get_registry
from xfer_core.sync import ssh_login
from xfer_core.sync.backend import (
    Direction,
    PairJob,
    PairResult,
    TransferBackend,
    TransferOptions,
    TransferSession,
    remote_for,
)
from xfer_core.sync.excludes import ExcludeMatcher, merge_excludes
from xfer_core.sync.progress import Reporter, Summary, summarize_pairs


@dataclass
class SyncRequest:
    """Everything one ``xfer sync``/``fetch`` run needs besides the config."""

    direction: Direction
    clusters: Sequence[str] = ()
    aliases: Sequence[str] = ()
    #: Backend name; None = the cluster's ``transfer_backend``, then ``[global]``'s, then rsync.
    backend: str | None = None
    excludes: Sequence[str] = ()
    dry_run: bool = False
    delete: bool = False
    checksum: bool = False
    #: Pairs run at once (across and within clusters).
    jobs: int = 1
    accept_new_host_key: bool = False
    #: A person can answer login prompts (passphrase, OTP, password) at the terminal.
    interactive: bool = False
    options: TransferOptions = field(default_factory=TransferOptions)


def choose_backend(name: str, registry: Registry, reporter: Reporter) -> TransferBackend:
    """The backend called ``name``; one that cannot run here is replaced by the backend it
    names as its :attr:`~xfer_core.sync.backend.TransferBackend.fallback` (rsync: sftp),
    with one warning, when that one can run."""
    backend: TransferBackend = registry.get("transfer", name)
    avail = backend.check()
    if avail.ok:
        return backend
    if backend.fallback:
        fallback: TransferBackend = registry.get("transfer", backend.fallback)
        if fallback.check().ok:
            reporter.warning(f"{avail.reason}; falling back to the {fallback.name} backend")
            return fallback
    raise UnavailableError(
        f"transfer backend {name!r} cannot run here: {avail.reason}",
        hint="`xfer plugins` shows every backend and what it needs",
    )


def build_jobs(
    config: Config, request: SyncRequest, unknown: list[str] | None = None
) -> list[tuple[Cluster, PairJob]]:
    """The selected pairs as jobs, in config order.

    Names not in the config are a ConfigError when nothing else is selected; otherwise
    they are appended to ``unknown`` (one message per kind) and the rest is built.
    """
    jobs = []
    selected, missing = select_partial(config, request.clusters, request.aliases, request.direction)
    if missing and unknown is None:
        raise missing[0]
    if unknown is not None:
        unknown.extend(str(m) for m in missing)
    for cluster, pair in selected:
        patterns = merge_excludes(config, cluster, pair, request.direction, request.excludes)
        jobs.append(
            (
                cluster,
                PairJob(
                    cluster=cluster.name,
                    alias=pair.alias,
                    direction=request.direction,
                    local=os.path.abspath(pair.local),
                    remote=pair.remote,
                    excludes=ExcludeMatcher(patterns),
                    dry_run=request.dry_run,
                    delete=request.delete,
                    checksum=request.checksum,
                ),
            )
        )
    return jobs


def run_sync(
    config: Config,
    request: SyncRequest,
    reporter: Reporter | None = None,
    registry: Registry | None = None,
) -> Summary:
    """Run ``request`` against ``config`` and return the summary (``summary.ok`` → exit 0).

    Raises :class:`XferError` only for problems of the whole run (bad selection,
    bad exclude pattern, no usable backend); per-pair and per-cluster failures are
    in the summary.
    """
    reporter = reporter or Reporter()
    try:
        if request.jobs < 1:
            raise ConfigError(f"--jobs must be at least 1, not {request.jobs}")
        unknown: list[str] = []
        jobs = build_jobs(config, request, unknown)
        for problem in unknown:  # said up front too: the run may be long
            reporter.warning(f"{problem}; running the rest")
        registry = registry or get_registry()
        chosen: dict[str, TransferBackend] = {}
        backends: dict[str, TransferBackend] = {}
        for cluster, _ in jobs:
            name = backend_for(config, cluster, request.backend)
            if name not in chosen:
                chosen[name] = choose_backend(name, registry, reporter)
            backends[cluster.name] = chosen[name]
        started = time.monotonic()
        term = ssh_login.Terminal(enabled=request.interactive, pause=reporter.paused)
        # signals cancel the run at an await, so cleanup runs on healthy connections
        with ssh_login.use_terminal(term):
            results = run_interruptible(
                run_jobs(
                    backends,
                    jobs,
                    request,
                    reporter,
                    io_timeout=config.global_.io_timeout,
                    config=config,
                )
            )
        names = ",".join(sorted({b.name for b in backends.values()}))
        summary = summarize_pairs(
            request.direction, names, request.dry_run, results, time.monotonic() - started
        )
        summary.unknown = unknown
        reporter.summary(summary)
        return summary
    finally:
        reporter.close()


async def run_jobs(
    backends: dict[str, TransferBackend],
    jobs: list[tuple[Cluster, PairJob]],
    request: SyncRequest,
    reporter: Reporter,
    *,
    io_timeout: float | None = None,
    config: Config | None = None,
) -> list[PairResult]:
    """Run every job, ``request.jobs`` at a time, one session per cluster; results in job order.

    ``backends`` maps each cluster name to the backend that serves it; ``io_timeout`` is
    ``[global] io_timeout`` (a cluster's own wins); ``config`` holds the backends'
    ``[global.NAME]`` tables (each cluster's own ``[clusters.NAME]`` wins).
    """
    global_tables = config.global_.backend_tables if config is not None else {}
    limit = asyncio.Semaphore(request.jobs)
    sessions: dict[str, asyncio.Task[TransferSession]] = {}

    def session_for(cluster: Cluster) -> asyncio.Task[TransferSession]:
        if cluster.name not in sessions:
            backend = backends[cluster.name]
            settings = backend.settings(
                global_tables.get(backend.name, {}), cluster.backend_tables.get(backend.name, {})
            )
            target = remote_for(
                cluster,
                accept_new_host_key=request.accept_new_host_key,
                io_timeout=io_timeout,
                settings=settings,
            )
            sessions[cluster.name] = asyncio.ensure_future(
                backends[cluster.name].open(target, request.options)
            )
        return sessions[cluster.name]

    async def one(cluster: Cluster, job: PairJob) -> PairResult:
        async with limit:
            sink = reporter.pair_start(job)
            started = time.monotonic()
            result = PairResult(job.cluster, job.alias, job.direction, dry_run=job.dry_run)
            problem = job.local_problem()
            if problem:
                result.error = problem
            else:
                try:
                    session = await asyncio.shield(session_for(cluster))
                except XferError as exc:
                    result.error = exc.message
                except OSError as exc:
                    result.error = f"{cluster.name}: cannot connect: {exc}"
                else:
                    result = await session.transfer(job, sink)
            if not result.seconds:
                result.seconds = round(time.monotonic() - started, 3)
            reporter.pair_done(job, result)
            return result

    try:
        return list(await asyncio.gather(*(one(c, j) for c, j in jobs)))
    finally:
        for task in sessions.values():
            if task.done() and not task.cancelled() and task.exception() is None:
                await task.result().close()
            elif not task.done():
                task.cancel()


__all__ = [
    "SyncRequest",
    "build_jobs",
    "choose_backend",
    "remote_for",
    "run_jobs",
    "run_sync",
]
