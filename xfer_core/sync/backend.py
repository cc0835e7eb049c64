"""The transfer-backend interface (plugin kind ``transfer``): directory sync for ``xfer sync``/``fetch``.

A backend moves one local/remote directory pair at a time, in the direction it
is told (``push`` for ``xfer sync``, ``pull`` for ``xfer fetch``). The engine
(:mod:`xfer_core.sync.engine`) opens one :class:`TransferSession` per cluster
with :meth:`TransferBackend.open` -- so a backend can reuse one connection for
every pair of that cluster -- calls :meth:`TransferSession.transfer` once per
pair and :meth:`TransferSession.close` at the end.

Every backend keeps the same promises (checked by the conformance suite in
:mod:`xfer_core.testing.conformance`):

- skip rule (rsync ``--update``): a file is sent when the destination lacks it,
  or the destination is not newer and its size or mtime differs (with
  ``checksum``: its content differs); a destination file newer than the source
  is never overwritten;
- mtimes (whole seconds or better) and permission bits are set on the
  destination, so a second run sends nothing;
- files are written under a temporary name and renamed into place;
- symlinks are recreated as links, empty directories are created, missing
  destination parents are created;
- excluded paths (``job.excludes``) are neither sent nor deleted;
- ``dry_run`` changes nothing on either side and still reports every file and
  deletion it would make through the progress sink.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Protocol

import msgspec

from xfer_core.plugin import Kind, Plugin

if TYPE_CHECKING:
    from xfer_core.config.model import Cluster

#: Seconds of silence after which a connection counts as dead (config ``io_timeout``).
DEFAULT_IO_TIMEOUT = 60.0

#: Unanswered keepalives before a connection is given up (at the 4th silent interval).
KEEPALIVE_COUNT_MAX = 3

#: ``push`` = local → remote (``xfer sync``); ``pull`` = remote → local (``xfer fetch``).
Direction = Literal["push", "pull"]

#: What a :meth:`ProgressSink.item` event reports.
Action = Literal["send", "delete", "mkdir", "link"]


class Remote(msgspec.Struct, frozen=True):
    """Where to connect: one cluster, resolved from the config.

    Every backend gets ``name``, ``host``, ``port``, ``user``, the timeouts and
    ``settings`` (its own config keys). The fields marked *ssh* matter to backends
    that log in over SSH (rsync, sftp) and may be ignored by others. ``None`` fields
    are left to ``~/.ssh/config`` (or ``ssh_config``), then to ssh's defaults --
    backends must not invent values for them.
    """

    #: Cluster name from the config (used in messages).
    name: str
    #: Host name or ``Host`` alias of the ssh config.
    host: str
    port: int | None = None
    user: str | None = None
    #: ssh: private key, already ``~``-expanded locally.
    key_path: str | None = None
    #: ssh: known_hosts file to check against (and to append to with ``accept_new_host_key``).
    known_hosts: str | None = None
    #: ssh: an ssh_config file used instead of ``~/.ssh/config`` (``$XFER_SSH_CONFIG``).
    ssh_config: str | None = None
    #: ssh: accept and remember a host key never seen before (``StrictHostKeyChecking=accept-new``).
    #: A key that differs from the known one is always refused.
    accept_new_host_key: bool = False
    #: Seconds to wait for the TCP connection and the login.
    connect_timeout: float = 20.0
    #: Seconds without any answer from the server after which the connection counts as
    #: dead (a dropped link): backends send a keepalive after each quarter of it without
    #: traffic and give up when the fourth quarter passes in silence too (OpenSSH
    #: ``ServerAliveInterval=io_timeout/4``, ``ServerAliveCountMax=3``; asyncssh the same).
    io_timeout: float = DEFAULT_IO_TIMEOUT
    #: The backend's own config keys for this cluster: an instance of its
    #: :attr:`TransferBackend.config_keys` (``[clusters.NAME]`` over ``[global.NAME]``),
    #: or None when it declares none.
    settings: Any = None

    @property
    def keepalive_interval(self) -> float:
        """Seconds of silence before each keepalive (a quarter of ``io_timeout``)."""
        return max(1.0, self.io_timeout / (KEEPALIVE_COUNT_MAX + 1))

    def lost(self, pair: str, reason: str = "") -> str:
        """The one-line error of ``pair`` when the connection died under it mid-transfer."""
        why = reason or "no answer, or the server went away"
        return (
            f"{pair} ({self.label}): connection lost mid-transfer "
            f"({why}; io_timeout {self.io_timeout:g} s); re-run to resume"
        )

    @property
    def label(self) -> str:
        """``user@host:port`` as far as it is known, for messages."""
        text = f"{self.user}@{self.host}" if self.user else self.host
        return f"{text}:{self.port}" if self.port else text


class TransferOptions(msgspec.Struct, frozen=True):
    """Per-run tuning a backend may use when it opens a session."""

    #: Files moved at once within one pair (backends that can parallelise, e.g. sftp;
    #: sftp caps it by the server's open-handle limit).
    parallel_files: int = 1024
    #: Compress data on the wire (``-z``): rsync's ``--compress``, zlib for SSH-based backends.
    compress: bool = False


class PathFilter(Protocol):
    """The exclude matcher every backend applies (``xfer_core.sync.excludes.ExcludeMatcher``).

    A backend that walks the trees itself asks :meth:`excluded`; one that hands the
    filtering to its tool translates :attr:`patterns` into the tool's own options
    (rsync: :func:`xfer_core.sync.excludes.rsync_exclude_arg` of each).
    """

    def excluded(self, relpath: str, is_dir: bool) -> bool:
        """True when ``relpath`` (relative to the pair's root, ``/``-separated) is excluded."""
        ...

    @property
    def patterns(self) -> Sequence[str]:
        """The exclude patterns as configured, in order (rsync's pattern rules)."""
        ...


def local_problem(pair: str, direction: Direction, local: str) -> str:
    """Why the local directory of ``pair`` cannot work (push: source missing; pull: not a
    directory), or ''."""
    if direction == "push" and not os.path.isdir(local):
        what = "is not a directory" if os.path.exists(local) else "does not exist"
        return f"{pair}: local directory {local} {what}"
    if direction == "pull" and os.path.exists(local) and not os.path.isdir(local):
        return f"{pair}: local path {local} is not a directory"
    return ""


@dataclass(frozen=True)
class PairJob:
    """One directory pair to move, in one direction."""

    #: Cluster name and pair alias (for messages and events).
    cluster: str
    alias: str
    direction: Direction
    #: Local directory, already ``~``/``$VAR``-expanded locally.
    local: str
    #: Remote directory exactly as configured: ``~`` and ``$VAR`` are expanded by the remote side.
    remote: str
    excludes: PathFilter
    dry_run: bool = False
    #: Delete destination files absent at the source (never excluded ones).
    delete: bool = False
    #: Compare content instead of size+mtime.
    checksum: bool = False

    def local_problem(self) -> str:
        """Why the local side cannot work (push: source missing; pull: not a directory), or ''."""
        return local_problem(f"{self.cluster}/{self.alias}", self.direction, self.local)

    @property
    def source(self) -> str:
        """The side files are read from, for messages (``local`` or ``cluster:remote``)."""
        return self.local if self.direction == "push" else f"{self.cluster}:{self.remote}"

    @property
    def destination(self) -> str:
        """The side files are written to, for messages."""
        return f"{self.cluster}:{self.remote}" if self.direction == "push" else self.local


class PairResult(msgspec.Struct, omit_defaults=False):
    """What happened to one pair (a row of the final summary)."""

    cluster: str
    alias: str
    direction: Direction
    #: Files (and links) written to the destination (would be, with dry-run).
    files_sent: int = 0
    #: Size of those files.
    bytes_sent: int = 0
    #: Source files already up to date.
    skipped: int = 0
    #: Files that could not be moved.
    failed: int = 0
    #: Destination entries deleted (``--delete``).
    deleted: int = 0
    seconds: float = 0.0
    dry_run: bool = False
    #: One line saying why the pair failed; empty when it succeeded.
    error: str = ""

    @property
    def ok(self) -> bool:
        return not self.error and not self.failed


class ProgressSink:
    """Receives progress from a backend while a pair runs. Every method is optional to call.

    The engine hands each pair its own sink; backends call it from the event loop
    (or, for subprocess output, from the coroutine reading it). The default
    implementation ignores everything.
    """

    def planned(self, files: int, total_bytes: int) -> None:
        """The backend knows how much it is going to send (totals for rate and ETA)."""

    def item(self, action: Action, relpath: str, size: int = 0) -> None:
        """One destination change decided (or, with dry-run, that would be made).

        ``relpath`` is relative to the pair's root (``/``-separated; undecodable
        bytes as surrogate escapes). Called once per file before its bytes flow.
        """

    def advance(self, nbytes: int) -> None:
        """``nbytes`` more bytes of file content reached the destination."""

    def message(self, text: str) -> None:
        """A line worth showing the user (a warning from the remote side, a skipped item)."""


class TransferSession:
    """An open connection (or the means to make them) to one cluster."""

    async def transfer(self, job: PairJob, progress: ProgressSink) -> PairResult:
        """Move one pair and say what happened.

        Failures of the pair (missing source, permission denied, connection lost)
        are returned as ``PairResult.error`` -- one line naming the pair and the
        cause -- not raised, so the engine can go on with the other pairs.
        Raise only for bugs; ``asyncio.CancelledError`` must propagate.
        """
        raise NotImplementedError

    async def close(self) -> None:
        """Release connections. Called once, also after failures; must not raise."""


class TransferBackend(Plugin):
    """Base class of transfer backends (builtins: ``rsync``, ``sftp``).

    Subclasses set ``name`` and ``description`` and implement :meth:`open`;
    :meth:`~xfer_core.plugin.Plugin.check` says whether the backend can run here
    (e.g. rsync is on PATH).
    """

    kind: ClassVar[Kind] = "transfer"
    #: The backend used instead when :meth:`check` fails here (rsync: ``sftp``), with a
    #: warning naming the reason; None: no fallback, the run stops with that reason.
    fallback: ClassVar[str | None] = None
    #: The backend's own config keys: a ``msgspec.Struct`` (every field with a default)
    #: whose fields are the keys of the ``[global.NAME]`` and ``[clusters.NAME]`` tables
    #: of the remotes config, checked like the config's own keys (unknown key, type,
    #: ``msgspec.Meta`` constraints, with ``FILE:LINE``). The session gets them as
    #: ``Remote.settings``. None: the backend has no keys.
    config_keys: ClassVar[type[msgspec.Struct] | None] = None

    def settings(self, *tables: dict[str, Any]) -> Any:
        """:attr:`config_keys` from the backend's tables, a later table winning per key
        (``[global.NAME]``, then ``[clusters.NAME]``); None when it declares no keys."""
        if self.config_keys is None:
            return None
        merged: dict[str, Any] = {}
        for table in tables:
            merged.update(table)
        return msgspec.convert(merged, self.config_keys)

    async def open(self, target: Remote, options: TransferOptions) -> TransferSession:
        """Connect to ``target`` (or prepare to) and return a session for its pairs.

        Raise :class:`xfer_core.errors.TransferError` with a one-line message when
        the cluster cannot be used at all (unreachable, login refused, host key
        unknown or changed); the engine then fails this cluster's pairs with that
        message and goes on with the others. A backend that connects lazily (rsync:
        its first ssh becomes the shared master connection) may instead report
        these as each pair's ``PairResult.error``.
        """
        raise NotImplementedError


def remote_for(
    cluster: Cluster,
    *,
    accept_new_host_key: bool = False,
    io_timeout: float | None = None,
    settings: Any = None,
) -> Remote:
    """The connection target of ``cluster``: config values, the rest left to the ssh config.

    ``io_timeout``: the ``[global]`` one, used when the cluster sets none. ``settings``:
    the backend's own keys (:meth:`~xfer_core.sync.backend.TransferBackend.settings`).

    ``$XFER_SSH_CONFIG`` names an ssh_config file used instead of ``~/.ssh/config``.
    """
    return Remote(
        name=cluster.name,
        host=cluster.host,
        port=cluster.port,
        user=cluster.user,
        key_path=cluster.key_path,
        ssh_config=os.environ.get("XFER_SSH_CONFIG") or None,
        accept_new_host_key=accept_new_host_key,
        io_timeout=cluster.io_timeout or io_timeout or DEFAULT_IO_TIMEOUT,
        settings=settings,
    )
