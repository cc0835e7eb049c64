"""Hook specifications: the whole contract between xfer and its plugins.

xfer has five kinds of plugin. Each kind has one registration hook, called once
when the plugin manager loads; the hook gets a ``register`` callable and calls it
with one instance per plugin object it provides. The builtins in
``xfer_backends/`` use exactly these hooks, through the same entry-point groups
(``xfer.KIND``: imported when a plugin of that kind is first needed) that
third-party distributions use::

    # pyproject.toml of a plugin distribution
    [project.entry-points."xfer.transfer"]
    mybackend = "xfer_mybackend"

    # xfer_mybackend.py
    from xfer_core.hookspecs import hookimpl
    from xfer_core.sync.backend import TransferBackend

    class MyBackend(TransferBackend):
        name = "mybackend"
        ...

    @hookimpl
    def register_transfer_backends(register):
        register(MyBackend())

Hooks are called per plugin, so a plugin that raises is reported by ``xfer
plugins`` with its error and the others still load. Every hook here is
documented with a working example in ``plugins.md`` (a test enforces it).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from xfer_core.bulk.engine import ShardEngine
    from xfer_core.bulk.runtime import ContainerRuntime
    from xfer_core.bulk.scheduler import Scheduler
    from xfer_core.manifest.lister import Lister
    from xfer_core.sync.backend import TransferBackend

PROJECT = "xfer"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def register_transfer_backends(register: Callable[[TransferBackend], None]) -> None:
    """Register directory-sync backends used by ``xfer sync`` and ``xfer fetch``.

    Called once at plugin load. Call ``register(backend)`` for each
    :class:`xfer_core.sync.backend.TransferBackend` instance this plugin provides
    (builtins: ``rsync``, ``sftp``). A backend opens one session per cluster and
    moves one local/remote directory pair at a time in the direction it is given;
    it must pass the conformance suite in ``xfer_core.testing`` (see ``plugins.md``).
    """


@hookspec
def register_shard_engines(register: Callable[[ShardEngine], None]) -> None:
    """Register shard engines: what copies one shard of a manifest (builtin: ``rclone``).

    Called once at plugin load. Call ``register(engine)`` for each
    :class:`xfer_core.bulk.engine.ShardEngine` instance. An engine renders the
    bash that ``worker.sh`` runs on a compute node to copy one shard's file list
    and to verify it at the destination; it runs no Python there.
    """


@hookspec
def register_schedulers(register: Callable[[Scheduler], None]) -> None:
    """Register schedulers that run a run dir's shards (builtins: ``local``, ``slurm``).

    Called once at plugin load. Call ``register(scheduler)`` for each
    :class:`xfer_core.bulk.scheduler.Scheduler` instance. A scheduler submits the
    rendered ``worker.sh`` once per shard (or per group of shards), with a
    concurrency limit, and reports what it knows about its jobs; shard state
    itself always lives in the run dir. It owns everything scheduler-specific: its
    job files, its options (``-O NAME=VALUE``), the requeue hooks its job file gives
    the worker, the mapping of its queue states onto ``JobState``, cancel, and
    whether it is reachable. Core records each submission in ``RUN/jobs.json``.
    """


@hookspec
def register_runtimes(register: Callable[[ContainerRuntime], None]) -> None:
    """Register container runtimes that wrap the engine's command line.

    Called once at plugin load. Call ``register(runtime)`` for each
    :class:`xfer_core.bulk.runtime.ContainerRuntime` instance (builtins:
    ``host``, ``pyxis``, ``enroot``, ``apptainer``, ``podman``, ``docker``). A
    runtime turns an argv plus read-only mounts into the argv that runs it
    inside the container image.
    """


@hookspec
def register_listers(register: Callable[[Lister], None]) -> None:
    """Register listers that stream a source tree into manifest entries.

    Called once at plugin load. Call ``register(lister)`` for each
    :class:`xfer_core.manifest.lister.Lister` instance (builtins: ``posix``,
    ``rclone``). ``manifest build --lister auto`` asks each lister whether it
    handles the source and takes the first that does.
    """
