"""The ``sftp`` transfer backend: pure Python over asyncssh, no rsync needed on either side.

One SSH connection per cluster carries an SFTP session for every pair of that
cluster and an exec channel for the remote ``~``/``$VAR`` expansion. A pair is
moved by listing both sides (excludes applied while walking, so excluded paths
are neither sent nor deleted), planning with :func:`xfer_core.sync.plan.plan_sync`
(rsync's ``--update`` quick check) and applying the plan: several files at once,
each with many SFTP requests in flight, written to a temporary name
(:func:`temp_name`), given its mode and mtime, then renamed into place
(``posix-rename`` when the server has it). Names in the server's listings are
checked (:func:`xfer_core.sync.names.unsafe_name`) and every local path is kept
inside the pair (:meth:`LocalTree.path`); see docs/security.md.

Logging in (ssh config, agent, certificates, jump hosts, prompts at a terminal, the
host-key policy) is :mod:`xfer_backends.sftp_login`; when the user's OpenSSH master
connection to the cluster is open, the session runs through it instead
(:mod:`xfer_backends.sftp_openssh`).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import os
import re
import secrets
import shutil
import stat
import struct
import time
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from xfer_core.errors import ConfigError, TransferError
from xfer_core.hookspecs import hookimpl
from xfer_core.output import display_name, terminal_text
from xfer_core.plugin import AVAILABLE, Availability
from xfer_core.sync import remote_path, ssh_login
from xfer_core.sync.backend import (
    PairJob,
    PairResult,
    PathFilter,
    ProgressSink,
    Remote,
    TransferBackend,
    TransferOptions,
    TransferSession,
)
from xfer_core.sync.names import unsafe_name
from xfer_core.sync.plan import Entry, EntryKind, Plan, attrs_differ, plan_sync

if TYPE_CHECKING:
    import asyncssh

    from xfer_backends.sftp_openssh import OpenSsh

#: Temporary names: ``.NAME.<token><mark>.xfertmp``; ``mark`` proves xfer made the name.
_TEMP = re.compile(r"^\.(.+)\.([0-9a-f]{8})([0-9a-f]{8})\.xfertmp$", re.DOTALL)
_CHUNK = 1 << 20
#: Files up to this size are pushed (or fetched) with a single write (read) request.
_SMALL = 256 * 1024
#: Small files above this size: at most _MEDIUM_FILES at once (bounds the memory held by
#: files in flight: ~_TINY x parallel_files + _SMALL x _MEDIUM_FILES).
_TINY = 32 * 1024
_MEDIUM_FILES = 128
#: Larger files: how many at once, and how many read/write requests each keeps in flight.
_BIG_FILES = 4
_REQUESTS = 64
#: SFTP channels over the one SSH connection for large files (the first is the session's
#: own): each has its own SSH flow-control window, which caps one channel at
#: window/round trip (OpenSSH's sshd: 2 MiB, ~25 MiB/s at 80 ms).
_CHANNELS = 4
#: Files of at least this size are split into one range per channel, sent at once.
_RANGE_MIN = 8 * 1024 * 1024
#: Requests in flight per range (of the server's largest block each).
_RANGE_REQUESTS = 16
#: Transfers of at least this many small files spread them over the channels.
_SPREAD_MIN = 256
#: Writes of at least this many bytes are not joined with others (``_Coalescing``).
_JOIN_MAX = 64 * 1024
#: Directories read at once while listing the remote tree.
_LIST_WIDE = 128
#: Files in flight when the server does not say how many handles it allows
#: (``limits@openssh.com``); with the limit known, up to half of it.
_FILES_UNKNOWN_LIMIT = 64


def _mark(name: str, token: str) -> str:
    return hashlib.sha256(
        f"xfer-temp\0{name}\0{token}".encode("utf-8", "surrogateescape")
    ).hexdigest()[:8]


def temp_name(path: str) -> str:
    """The temporary sibling of ``path`` a file (or symlink) is made as before the rename.

    ``.NAME.<token><mark>.xfertmp``: ``token`` is random, ``mark`` a hash of name and
    token, so a left-over temp file is recognised as xfer's own (:func:`is_own_temp`)
    and a user's file that merely looks alike is never removed.
    """
    parent, _, name = path.rpartition("/")
    name = os.fsencode(name)[:200].decode("utf-8", "surrogateescape") if len(name) > 200 else name
    token = secrets.token_hex(4)
    tmp = f".{name}.{token}{_mark(name, token)}.xfertmp"
    return f"{parent}/{tmp}" if parent else tmp


def is_own_temp(name: str) -> bool:
    """Whether ``name`` is a temporary name made by :func:`temp_name` (a left-over)."""
    m = _TEMP.match(name)
    return m is not None and _mark(m.group(1), m.group(2)) == m.group(3)


def files_in_flight(wanted: int, max_open_handles: int) -> int:
    """How many files a pair moves at once: ``wanted`` (``parallel_files``), at most half
    the open handles the server allows (``limits@openssh.com``; 0 when not offered:
    then at most :data:`_FILES_UNKNOWN_LIMIT`), at least one."""
    cap = max_open_handles // 2 if max_open_handles > 0 else _FILES_UNKNOWN_LIMIT
    return max(1, min(wanted, cap))


def ranges(size: int, parts: int, block: int) -> list[tuple[int, int]]:
    """``size`` bytes cut into at most ``parts`` contiguous ``(offset, length)`` ranges,
    each a whole number of ``block`` bytes except the last; together they cover the file."""
    if size <= 0:
        return [(0, 0)]
    per = -(-size // max(1, parts))
    per = -(-per // block) * block
    return [(off, min(per, size - off)) for off in range(0, size, per)]


def join(root: str, rel: str) -> str:
    """``root/rel`` (``rel`` may be empty: the root itself)."""
    return f"{root.rstrip('/') or '/'}/{rel}" if rel else root


def _kind(mode: int) -> EntryKind:
    return "link" if stat.S_ISLNK(mode) else "dir" if stat.S_ISDIR(mode) else "file"


def _entry_from_stat(st: os.stat_result, target: str = "") -> Entry:
    mode = st.st_mode
    kind = _kind(mode)
    return Entry(
        kind, st.st_size if kind == "file" else 0, int(st.st_mtime), stat.S_IMODE(mode), target
    )


# -- the two sides -------------------------------------------------------------------
class LocalTree:
    """The workstation's side of a pair."""

    def __init__(self, root: str):
        self.root = root
        self._real_root = ""
        #: Directories (relative) known to resolve inside the root.
        self._inside: set[str] = set()

    def path(self, rel: str) -> str:
        """``root/rel``, once ``rel``'s parent is known to resolve inside the root.

        A symlink among the parents (planted in the destination, or made by a hostile
        listing) would send writes and deletions elsewhere: refused (``OSError``).
        """
        parent = rel.rpartition("/")[0]
        if parent not in self._inside:
            if not self._real_root:
                self._real_root = os.path.realpath(self.root)
            real = os.path.realpath(join(self.root, parent))
            if real != self._real_root and not real.startswith(self._real_root.rstrip("/") + "/"):
                raise OSError(
                    errno.EXDEV, "refused: its directory leads outside the destination", parent
                )
            self._inside.add(parent)
        return join(self.root, rel)

    def forget_dirs(self) -> None:
        """Check parents again from now on (directories were replaced by symlinks)."""
        self._inside.clear()

    def _list(self, matcher: PathFilter, clean: bool) -> dict[str, Entry] | None:
        try:
            root_st = os.stat(self.root)
        except FileNotFoundError:
            return None
        out = {"": _entry_from_stat(root_st)}
        stack = [""]
        while stack:
            rel_dir = stack.pop()
            with os.scandir(self.path(rel_dir)) as it:
                for de in it:
                    rel = f"{rel_dir}/{de.name}" if rel_dir else de.name
                    st = de.stat(follow_symlinks=False)
                    is_dir = stat.S_ISDIR(st.st_mode)
                    if matcher.excluded(rel, is_dir):
                        continue
                    if not is_dir and is_own_temp(de.name):
                        if clean:
                            with contextlib.suppress(OSError):
                                os.unlink(de.path)
                        continue
                    target = os.readlink(de.path) if stat.S_ISLNK(st.st_mode) else ""
                    out[rel] = _entry_from_stat(st, target)
                    if is_dir:
                        stack.append(rel)
        return out

    async def listing(self, matcher: PathFilter, *, clean: bool = False) -> dict[str, Entry] | None:
        """Every non-excluded entry below the root (``None`` when the root is missing)."""
        return await asyncio.to_thread(self._list, matcher, clean)

    async def makedirs(self, rel: str) -> None:
        os.makedirs(self.path(rel), exist_ok=True)

    async def remove(self, rel: str, kind: str, *, tree: bool = False) -> None:
        path = self.path(rel)
        if kind == "dir":
            if tree:
                shutil.rmtree(path)
            else:
                os.rmdir(path)
        else:
            os.unlink(path)

    async def symlink(self, target: str, rel: str) -> None:
        os.symlink(target, self.path(rel))

    async def set_attrs(self, rel: str, entry: Entry) -> None:
        path = self.path(rel)
        os.chmod(path, entry.mode)
        os.utime(path, (entry.mtime, entry.mtime))

    async def rename(self, old: str, new: str) -> None:
        os.replace(self.path(old), self.path(new))

    async def digest(self, rel: str) -> bytes:
        def run() -> bytes:
            h = hashlib.sha256()
            with open(self.path(rel), "rb") as fh:
                while chunk := fh.read(_CHUNK):
                    h.update(chunk)
            return h.digest()

        return await asyncio.to_thread(run)


class RemoteTree:
    """The cluster's side of a pair, over one SFTP session."""

    def __init__(self, sftp: asyncssh.SFTPClient, root: str):
        self.sftp = sftp
        self.root = root
        #: Channels small files are spread over (``sftp`` alone until set).
        self.spread: list[asyncssh.SFTPClient] = [sftp]
        #: Names in the server's listings that were refused (``unsafe_name``), one line each.
        self.refused: list[str] = []

    def path(self, rel: str) -> bytes:
        return os.fsencode(join(self.root, rel))

    async def listing(self, matcher: PathFilter, *, clean: bool = False) -> dict[str, Entry] | None:
        """Every non-excluded entry below the root (``None`` when the root is missing).

        Directories are read concurrently; symlink targets are read as they are found.
        """
        import asyncssh

        # the root's attributes and its names in the same round trip
        root_attrs, root_names = await asyncio.gather(
            self.sftp.stat(self.path("")),
            read_dir(self.sftp, self.path("")),
            return_exceptions=True,
        )
        if isinstance(root_attrs, asyncssh.SFTPNoSuchFile):
            return None
        if isinstance(root_attrs, BaseException):
            raise root_attrs
        if isinstance(root_names, BaseException):
            raise root_names
        out = {"": _entry_from_attrs(root_attrs)}
        wide = asyncio.Semaphore(_LIST_WIDE)

        async def walk(rel_dir: str, names: list[Any] | None = None) -> None:
            # a directory is read as soon as it is found, up to _LIST_WIDE at once
            async with wide:
                entries = await self._scan(rel_dir, matcher, clean, names)
            below = []
            for rel, entry in entries:
                out[rel] = entry
                if entry.kind == "dir":
                    below.append(walk(rel))
            await asyncio.gather(*below)

        await walk("", root_names)
        return out

    async def _scan(
        self, rel_dir: str, matcher: PathFilter, clean: bool, names: list[Any] | None = None
    ) -> list[tuple[str, Entry]]:
        found: list[tuple[str, Entry]] = []
        links: list[tuple[str, Any]] = []
        seen: set[str] = set()
        if names is None:
            names = await read_dir(self.sftp, self.path(rel_dir))
        for name in names:
            raw = name.filename
            fname = os.fsdecode(raw) if isinstance(raw, bytes) else raw
            if fname in (".", ".."):
                continue
            rel = f"{rel_dir}/{fname}" if rel_dir else fname
            # the server's names are not trusted: one that is not a plain name, or that
            # comes twice, is refused (and the pair fails), never joined to a path
            reason = unsafe_name(fname) or ("the name is listed twice" if fname in seen else None)
            if reason is not None:
                self.refused.append(
                    f"{display_name(rel)}: refused a name sent by the server: {reason}"
                )
                continue
            seen.add(fname)
            entry = _entry_from_attrs(name.attrs)
            if matcher.excluded(rel, entry.kind == "dir"):
                continue
            if entry.kind != "dir" and is_own_temp(fname):
                if clean:
                    with contextlib.suppress(Exception):
                        await self.sftp.remove(self.path(rel))
                continue
            if entry.kind == "link":
                links.append((rel, entry))
            else:
                found.append((rel, entry))
        if links:
            targets = await asyncio.gather(
                *(self.sftp.readlink(self.path(rel)) for rel, _ in links)
            )
            for (rel, entry), target in zip(links, targets, strict=True):
                text = os.fsdecode(target) if isinstance(target, bytes) else target
                found.append((rel, Entry("link", 0, entry.mtime, entry.mode, text)))
        return found

    async def makedirs(self, rel: str) -> None:
        """One ``mkdir`` (one round trip) when the parent exists, as it does for every
        directory of a plan; asyncssh's ``makedirs`` (two per path component) otherwise."""
        import asyncssh

        try:
            await self.sftp.mkdir(self.path(rel))
        except asyncssh.SFTPError:
            await self.sftp.makedirs(self.path(rel), exist_ok=True)

    async def remove(self, rel: str, kind: str, *, tree: bool = False) -> None:
        if kind == "dir":
            if tree:
                await self.sftp.rmtree(self.path(rel))
            else:
                await self.sftp.rmdir(self.path(rel))
        else:
            await self.sftp.remove(self.path(rel))

    async def symlink(self, target: str, rel: str) -> None:
        await self.sftp.symlink(os.fsencode(target), self.path(rel))

    async def set_attrs(self, rel: str, entry: Entry) -> None:
        import asyncssh

        attrs = asyncssh.SFTPAttrs(permissions=entry.mode, atime=entry.mtime, mtime=entry.mtime)
        await self.sftp.setstat(self.path(rel), attrs)

    def pick(self, rel: str) -> asyncssh.SFTPClient:
        """The channel for ``rel``'s file operations: always the same one for a path."""
        return self.spread[hash(rel) % len(self.spread)]

    async def rename(self, old: str, new: str) -> None:
        import asyncssh

        sftp = self.pick(new)
        handler = lean_handler(sftp)
        if handler is not None:
            sent = lean_request(
                handler,
                _FXP_EXTENDED,
                _string(_POSIX_RENAME),
                _string(self.path(old)),
                _string(self.path(new)),
            )
            await lean_reply(handler, sent)
            return
        try:
            await sftp.posix_rename(self.path(old), self.path(new))
        except asyncssh.SFTPOpUnsupported:
            with contextlib.suppress(asyncssh.SFTPNoSuchFile):
                await sftp.remove(self.path(new))
            await sftp.rename(self.path(old), self.path(new))

    async def digest(self, rel: str) -> bytes:
        h = hashlib.sha256()
        async with self.sftp.open(self.path(rel), "rb") as fh:
            while chunk := await fh.read(_CHUNK):
                h.update(chunk if isinstance(chunk, bytes) else os.fsencode(chunk))
        return h.digest()


_BACKGROUND: set[asyncio.Future[Any]] = set()


async def read_dir(sftp: asyncssh.SFTPClient, path: bytes) -> list[Any]:
    """The names of a remote directory (``SFTPName``: filename, attrs), in fewer round trips
    than asyncssh's ``scandir``: two READDIR requests go at once (a directory of up to one
    batch -- OpenSSH: 100 names -- takes one round trip, not two: the batch, then the end),
    and the handle is closed without waiting for the answer."""
    from asyncssh import SFTPEOFError

    handler = sftp._handler  # asyncssh's request layer (pinned in uv.lock)
    handle = await handler.opendir(path)
    names: list[Any] = []
    try:
        at_end = False
        while not at_end:
            replies = await asyncio.gather(
                handler.readdir(handle), handler.readdir(handle), return_exceptions=True
            )
            for reply in replies:
                if isinstance(reply, SFTPEOFError):
                    at_end = True
                elif isinstance(reply, BaseException):
                    raise reply
                else:
                    batch, end = reply
                    names += batch
                    at_end = at_end or end
    finally:
        closing = asyncio.ensure_future(handler.close(handle))
        _BACKGROUND.add(closing)
        closing.add_done_callback(_forget)
    return names


def _forget(fut: asyncio.Future[Any]) -> None:
    _BACKGROUND.discard(fut)
    if not fut.cancelled():
        fut.exception()  # retrieved: a close that fails (e.g. connection lost) is no news


def _entry_from_attrs(attrs: asyncssh.SFTPAttrs) -> Entry:
    mode = attrs.permissions or 0
    kind = _kind(mode)
    return Entry(
        kind,
        (attrs.size or 0) if kind == "file" else 0,
        int(attrs.mtime or 0),
        stat.S_IMODE(mode),
    )


# -- connection ----------------------------------------------------------------------
async def connect(
    target: Remote, settings: ssh_login.SshSettings | None = None, *, compress: bool = False
) -> asyncssh.SSHClientConnection:
    """Log in to ``target`` (:func:`xfer_backends.sftp_login.connect`), tuned for many
    small SFTP requests; failures become one TransferError line. ``compress``: offer
    zlib compression (``-z``) before "none"."""
    from xfer_backends import sftp_login

    conn = await sftp_login.connect(target, settings, compress=compress)
    _coalesce_writes(conn)
    _lean_packets(conn)
    _quiet_orphaned_disconnects(asyncio.get_running_loop())
    return conn


_QUIETED: weakref.WeakSet[asyncio.AbstractEventLoop] = weakref.WeakSet()


def _quiet_orphaned_disconnects(loop: asyncio.AbstractEventLoop) -> None:
    """Do not print asyncssh's orphaned block tasks of a connection lost mid-copy.

    ``SFTPClient.get``/``put`` run many block tasks; when the connection is lost, the
    first failure is raised and the others are never awaited, so asyncio would print a
    traceback for each ("Task exception was never retrieved"). The loss is reported once,
    as the pair's error; every other unretrieved exception is printed as before.
    """
    import asyncssh

    if loop in _QUIETED:
        return
    _QUIETED.add(loop)
    previous = loop.get_exception_handler()

    def handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        lost = (asyncssh.DisconnectError, asyncssh.SFTPConnectionLost)
        if isinstance(context.get("exception"), lost) and "never retrieved" in str(
            context.get("message", "")
        ):
            return
        if previous is not None:
            previous(loop, context)
        else:
            loop.default_exception_handler(context)

    loop.set_exception_handler(handler)


class _Coalescing:
    """Joins everything written during one event-loop iteration into one :meth:`_send`.

    A write of at least :data:`_JOIN_MAX` bytes fills SSH packets on its own: it goes at
    once, after what is pending (joining it would only copy it once more).
    """

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self._loop = loop
        self._pending: list[bytes] = []

    def write(self, data: bytes) -> None:
        if len(data) >= _JOIN_MAX:
            self._flush()
            self._send(data)
            return
        if not self._pending:
            self._loop.call_soon(self._flush)
        self._pending.append(data)

    def _flush(self) -> None:
        if self._pending:
            data = b"".join(self._pending)
            self._pending.clear()
            self._send(data)

    def _send(self, data: bytes) -> None:
        raise NotImplementedError


class _CoalescingTransport(_Coalescing):
    """Sends everything asyncssh wrote during one event-loop iteration in one ``send()``.

    asyncssh writes every SSH packet to the socket at once; with hundreds of small
    files in flight that is one system call (and one wake-up of the server) per
    packet. OpenSSH batches its output per loop iteration; this does the same.
    """

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop):
        super().__init__(loop)
        self._transport = transport

    def _send(self, data: bytes) -> None:
        if not self._transport.is_closing():
            self._transport.write(data)

    def close(self) -> None:
        self._flush()
        self._transport.close()

    def abort(self) -> None:
        self._pending.clear()
        self._transport.abort()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class _CoalescingSftpWriter(_Coalescing):
    """Hands everything an SFTP client wrote during one event-loop iteration to its SSH
    channel in one ``write()``.

    asyncssh sends every SFTP request as its own SSH packet (one encryption, one MAC and
    ~100 us of Python each); 256 files in flight are ~1,300 requests per round trip.
    Requests are a byte stream to the server: joined, they fill 32 KiB SSH packets.
    """

    def __init__(self, writer: Any, loop: asyncio.AbstractEventLoop):
        super().__init__(loop)
        self._writer = writer

    def _send(self, data: bytes) -> None:
        if not self._writer.channel.is_closing():
            with contextlib.suppress(Exception):  # lost: the requests fail on their own
                self._writer.write(data)

    def write_eof(self) -> None:
        self._flush()
        self._writer.write_eof()

    def close(self) -> None:
        self._flush()
        self._writer.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._writer, name)


def coalesce_requests(sftp: asyncssh.SFTPClient) -> asyncssh.SFTPClient:
    """Let ``sftp`` (a client over an asyncssh channel) send its requests in full SSH
    packets (:class:`_CoalescingSftpWriter`); returns it."""
    handler: Any = getattr(sftp, "_handler", None)
    writer = getattr(handler, "_writer", None)
    if handler is not None and writer is not None and hasattr(writer, "channel"):
        handler._writer = _CoalescingSftpWriter(writer, asyncio.get_running_loop())
        _lean_receive(handler)
    return sftp


class _PacketReader:
    """The SFTP client's ``recv_packet``, reading its channel in large pieces.

    asyncssh reads each reply with two ``readexactly`` calls (length, then body), each
    taking the channel's read lock: per small file five replies, ten reads. This keeps
    what one read brought and cuts the packets out of it; the end of the channel is the
    same ``EOFError`` asyncssh's loop expects.
    """

    def __init__(self, reader: Any, max_len: int):
        self._reader = reader
        self._max_len = max_len
        self._buf = b""
        self._at = 0  # where the next packet starts in ``_buf``

    async def __call__(self) -> Any:
        from asyncssh.packet import SSHPacket

        while True:
            buf, at = self._buf, self._at
            if len(buf) - at >= 4:
                n = int.from_bytes(buf[at : at + 4], "big")
                if n > self._max_len:
                    raise asyncssh_error("SFTPBadMessage", "Max packet size exceeded")
                if len(buf) - at >= 4 + n:
                    self._at = at + 4 + n
                    return SSHPacket(buf[at + 4 : at + 4 + n])
                missing = 4 + n - (len(buf) - at)
                if missing > _JOIN_MAX:  # a large reply (read data): the rest in one piece
                    self._buf, self._at = b"", 0
                    return SSHPacket(buf[at + 4 :] + await self._reader.readexactly(missing))
            chunk = await self._reader.read(1 << 18)
            if not chunk:
                self._buf, self._at = b"", 0
                raise asyncio.IncompleteReadError(buf[at:], None)
            self._buf, self._at = buf[at:] + chunk if at < len(buf) else chunk, 0


def _lean_receive(handler: Any) -> None:
    """Replies read in large pieces (:class:`_PacketReader`); unless asyncssh's debug log
    is on, received packets are not formatted for it."""
    import logging

    import asyncssh.sftp

    reader = getattr(handler, "_reader", None)
    max_len = getattr(asyncssh.sftp, "MAX_SFTP_PACKET_LEN", None)
    if reader is None or not isinstance(max_len, int) or not hasattr(handler, "recv_packet"):
        return
    handler.recv_packet = _PacketReader(reader, max_len)
    if not logging.getLogger("asyncssh").isEnabledFor(logging.DEBUG):
        handler.log_received_packet = _no_log


def _no_log(*_args: Any, **_kwargs: Any) -> None:
    """Stands in for a packet-logging method while the log would drop its record."""


def _coalesce_writes(conn: asyncssh.SSHClientConnection) -> None:
    transport = getattr(conn, "_transport", None)
    if isinstance(transport, asyncio.Transport):
        wrapper: Any = _CoalescingTransport(transport, asyncio.get_running_loop())
        conn._transport = wrapper


def _lean_packets(conn: asyncssh.SSHClientConnection) -> None:
    """Send SSH packets with less Python work than asyncssh's ``send_packet``:

    - no empty ``SSH_MSG_IGNORE`` before every packet unless the cipher is CBC: asyncssh
      sends one each time (RFC 4251 9.3.1, the countermeasure against a chosen-plaintext
      attack on CBC mode, whose next IV is the last block sent); no other mode needs it
      (OpenSSH sends none), and it costs one more encryption and ~9 us per packet;
    - channel data under AES-GCM (the cipher xfer prefers) is framed and encrypted here:
      one join and one encryption per packet (asyncssh: four more copies of the packet, a
      new cipher object per packet, packet logging that is off), with the same bytes on
      the wire, sequence numbers, IV and rekey accounting. Anything else -- other
      packets, another cipher, compression, a rekey due or under way, asyncssh's debug
      logging on, an asyncssh without these internals (pinned in uv.lock) -- goes
      through asyncssh's own ``send_packet``.

    256 MiB are ~8,200 channel data packets of 32 KiB (OpenSSH's sshd takes no more).
    """
    import logging

    from asyncssh.constants import MSG_CHANNEL_DATA, MSG_IGNORE
    from asyncssh.packet import String
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    send = conn.send_packet
    empty = String(b"")
    debug = logging.getLogger("asyncssh")
    c: Any = conn
    joined = isinstance(getattr(conn, "_transport", None), _CoalescingTransport)
    # per key exchange: [encryption, is CBC, its GCM cipher and AESGCM (or None)]
    keys: list[Any] = [None, True, None, None]

    def refresh(current: Any) -> None:
        name = conn.get_extra_info("send_cipher") or ""
        gcm: Any = getattr(current, "_cipher", None)
        aead = None
        if (
            type(current).__name__ == "GCMEncryption"
            and type(gcm).__name__ == "GCMCipher"
            and isinstance(getattr(gcm, "_key", None), bytes)
            and isinstance(getattr(gcm, "_iv", None), bytes)
            and all(hasattr(c, a) for a in _LEAN_ATTRS)
        ):
            aead = AESGCM(gcm._key)
        keys[:] = [current, current is None or name.endswith("-cbc"), gcm, aead]

    def send_packet(pkttype: int, *args: bytes, handler: Any = None) -> None:
        current = getattr(c, "_send_encryption", None)
        if current is not keys[0]:
            refresh(current)
        if pkttype == MSG_IGNORE and args == (empty,) and not keys[1]:
            return
        aead = keys[3]
        if (
            pkttype != MSG_CHANNEL_DATA
            or aead is None
            or not c._kex_complete
            or not c._auth_complete
            or c._compressor is not None
            or c._rekey_bytes_sent >= c._rekey_bytes
            or (c._rekey_seconds and time.monotonic() >= c._rekey_time)
            or debug.isEnabledFor(logging.DEBUG)
        ):
            send(pkttype, *args, handler=handler)
            return
        # padding length, type, payload, random padding: a whole number of cipher blocks
        size = 1 + sum(map(len, args))
        blocksize = c._send_blocksize
        padlen = -(c._send_enchdrlen + size) % blocksize
        if padlen < 4:
            padlen += blocksize
        packet = b"".join((bytes((padlen, pkttype)), *args, os.urandom(padlen)))
        header = len(packet).to_bytes(4, "big")
        gcm = keys[2]
        iv = gcm._iv
        sealed = aead.encrypt(iv, packet, header)  # the length is the associated data
        invocation = (int.from_bytes(iv[4:], "big") + 1) & 0xFFFFFFFFFFFFFFFF
        gcm._iv = iv[:4] + invocation.to_bytes(8, "big")
        if joined:  # the transport joins them (no copy of the packet here)
            c._send(header)
            c._send(sealed)
        else:
            c._send(header + sealed)
        c._send_seq = (c._send_seq + 1) & 0xFFFFFFFF
        c._rekey_bytes_sent += len(packet)

    conn.send_packet = send_packet  # type: ignore[method-assign]


#: The connection's attributes :func:`_lean_packets` reads and keeps up to date.
_LEAN_ATTRS = (
    "_kex_complete",
    "_auth_complete",
    "_compressor",
    "_rekey_bytes_sent",
    "_rekey_bytes",
    "_rekey_seconds",
    "_rekey_time",
    "_send_blocksize",
    "_send_enchdrlen",
    "_send",
    "_send_seq",
)


# -- backend -------------------------------------------------------------------------
class SftpBackend(TransferBackend):
    """SFTP over asyncssh: one connection per cluster, several files at once."""

    name = "sftp"
    description = "SFTP over asyncssh (no rsync needed; parallel files, temp file + rename)"

    def check(self) -> Availability:
        return AVAILABLE

    async def open(self, target: Remote, options: TransferOptions) -> TransferSession:
        from xfer_backends import sftp_login

        # ``ssh -G`` runs while asyncssh is imported (~0.15 s of CPU)
        asking = asyncio.get_running_loop().run_in_executor(
            None, ssh_login.openssh_settings, target
        )
        sftp_login.import_asyncssh()
        settings = await asking
        if await asyncio.to_thread(ssh_login.user_master, target, settings):
            # the user's OpenSSH master is logged in (e.g. 2FA): ride on it, no new login
            from xfer_backends.sftp_openssh import OpenSsh

            openssh = OpenSsh(target, settings)
            sftp = await openssh.start_sftp()
            _quiet_orphaned_disconnects(asyncio.get_running_loop())
            return SftpSession(None, sftp, target, options, openssh=openssh)
        conn = await connect(target, settings, compress=options.compress)
        try:
            sftp = coalesce_requests(await conn.start_sftp_client())
        except Exception as exc:
            conn.close()
            raise TransferError(f"{target.name}: cannot start SFTP: {exc}") from None
        return SftpSession(conn, sftp, target, options)


class SftpSession(TransferSession):
    """One cluster: an SSH connection, its SFTP client, and the pairs moved over them."""

    def __init__(
        self,
        conn: asyncssh.SSHClientConnection | None,
        sftp: asyncssh.SFTPClient,
        target: Remote,
        options: TransferOptions,
        *,
        openssh: OpenSsh | None = None,
    ):
        #: ``conn`` is None when the session runs through the user's OpenSSH (``openssh``).
        self.conn = conn
        self.sftp = sftp
        self.target = target
        self.options = options
        self.openssh = openssh
        #: The SFTP channels large files are spread over (``sftp`` first), once opened.
        self._channels: list[asyncssh.SFTPClient] = []
        self._channels_lock = asyncio.Lock()
        #: Files copied in ranges over several channels (``_copy_ranges``).
        self.ranged = 0
        #: Asked at once, answered while the first pair is listed.
        self._handles = asyncio.ensure_future(server_handles(sftp))

    async def handles(self) -> int:
        """Open handles the server allows (``limits@openssh.com``), 0 when not said."""
        return await asyncio.shield(self._handles)

    async def channels(self) -> list[asyncssh.SFTPClient]:
        """The session's SFTP client and up to ``_CHANNELS - 1`` more on the same SSH
        connection, opened at once the first time a large file needs them. A channel the
        server refuses (e.g. ``MaxSessions``) is done without; through the user's OpenSSH
        master there is only the one."""
        async with self._channels_lock:
            if not self._channels:
                self._channels = [self.sftp]
                if self.conn is not None and _CHANNELS > 1:
                    conn = self.conn
                    more = await asyncio.gather(
                        *(self._open_channel(conn) for _ in range(_CHANNELS - 1)),
                        return_exceptions=True,
                    )
                    for extra in more:
                        if isinstance(extra, BaseException):
                            if not isinstance(extra, Exception):
                                raise extra
                            continue
                        self._channels.append(extra)
        return self._channels

    async def _run(self, command: str) -> tuple[int, bytes, bytes]:
        """Run ``command`` on the cluster: (exit status, stdout, stderr)."""
        if self.openssh is not None:
            return await self.openssh.run(command)
        assert self.conn is not None
        res = await self.conn.run(command, check=False, encoding=None)
        out = res.stdout if isinstance(res.stdout, bytes) else b""
        err = res.stderr if isinstance(res.stderr, bytes) else b""
        return res.exit_status or 0, out, err

    async def resolve(self, path: str) -> str:
        """The remote path with ``~``/``$VAR`` expanded by the remote side."""
        if not remote_path.needs_expansion(path):
            return path
        wanted = remote_path.refs(path)
        status, out, err = await self._run(remote_path.query_command(wanted))
        if status != 0:
            reason = err.decode(errors="replace").strip()
            raise TransferError(f"{self.target.name}: cannot expand {path!r}: {reason}")
        return remote_path.substitute(path, wanted, out, cluster=self.target.name)

    async def transfer(self, job: PairJob, progress: ProgressSink) -> PairResult:
        import asyncssh

        started = time.monotonic()
        result = PairResult(job.cluster, job.alias, job.direction, dry_run=job.dry_run)
        try:
            problem = job.local_problem()
            if problem:
                raise TransferError(problem)
            await _PairRun(self, job, progress, result, await self.resolve(job.remote)).run()
        except (TransferError, ConfigError) as exc:
            result.error = exc.message
        except (asyncssh.DisconnectError, asyncssh.SFTPConnectionLost, BrokenPipeError) as exc:
            reason = getattr(exc, "reason", "") or getattr(exc, "strerror", "") or ""
            result.error = self.target.lost(f"{job.cluster}/{job.alias}", reason)
        except (asyncssh.Error, OSError) as exc:
            result.error = f"{job.cluster}/{job.alias}: {_describe(exc)}"
        result.seconds = round(time.monotonic() - started, 3)
        return result

    @staticmethod
    async def _open_channel(conn: asyncssh.SSHClientConnection) -> asyncssh.SFTPClient:
        return coalesce_requests(await conn.start_sftp_client())

    async def close(self) -> None:
        self._handles.cancel()
        with contextlib.suppress(BaseException):
            await self._handles
        for extra in self._channels[1:]:
            with contextlib.suppress(Exception):
                extra.exit()
        with contextlib.suppress(Exception):
            self.sftp.exit()
        if self.openssh is not None:
            await self.openssh.close()
        if self.conn is not None:
            self.conn.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.conn.wait_closed(), 5)


async def server_handles(sftp: asyncssh.SFTPClient) -> int:
    """The open handles an OpenSSH-like server allows (``limits@openssh.com``), 0 when the
    server does not offer the extension or the answer cannot be read.

    asyncssh asks for the limits itself but keeps only the read and write lengths; this
    asks again for the handle count (asyncssh's request and decoding, pinned in uv.lock).
    """
    from asyncssh.sftp import SFTPLimits

    handler = getattr(sftp, "_handler", None)
    if handler is None or not getattr(handler, "_supports_limits", False):
        return 0
    try:
        packet = await handler._make_request(b"limits@openssh.com")
        return int(SFTPLimits.decode(packet).max_open_handles)
    except Exception:
        return 0


def _describe(exc: BaseException) -> str:
    import asyncssh

    if isinstance(exc, asyncssh.DisconnectError | asyncssh.SFTPConnectionLost):
        return f"connection lost: {exc.reason}"
    if isinstance(exc, asyncssh.SFTPError):
        return exc.reason
    if isinstance(exc, OSError):
        return f"{exc.strerror or exc}" + (f": {exc.filename}" if exc.filename else "")
    return str(exc)


class _PairRun:
    """One pair, one direction: list, plan, report, apply."""

    def __init__(
        self,
        session: SftpSession,
        job: PairJob,
        progress: ProgressSink,
        result: PairResult,
        remote_root: str,
    ):
        self.session = session
        self.job = job
        self.progress = progress
        self.result = result
        local = LocalTree(job.local)
        remote = RemoteTree(session.sftp, remote_root)
        self.remote_root = remote_root
        self.src: LocalTree | RemoteTree = local if job.direction == "push" else remote
        self.dst: LocalTree | RemoteTree = remote if job.direction == "push" else local
        self.local = local
        self.remote = remote
        self.failures: list[str] = []
        #: New entries made beside a directory they replace, swapped in once it is empty.
        self.swaps: list[tuple[str, str, Entry]] = []

    async def run(self) -> None:
        job = self.job
        clean = not job.dry_run
        # both sides are listed at once (the local walk runs in a thread)
        listed = await asyncio.gather(
            self.src.listing(job.excludes),
            self.dst.listing(job.excludes, clean=clean),
            return_exceptions=True,
        )
        for outcome in listed:
            if isinstance(outcome, BaseException):
                raise outcome
        src, dst_or_none = listed
        assert not isinstance(src, BaseException) and not isinstance(dst_or_none, BaseException)
        if src is None:
            raise TransferError(
                f"{job.cluster}/{job.alias}: remote directory {job.remote!r} does not exist"
            )
        if src[""].kind != "dir":
            raise TransferError(f"{job.cluster}/{job.alias}: {job.source} is not a directory")
        dst = dst_or_none or {}
        self.failures += self.remote.refused
        plan = plan_sync(src, dst, delete=job.delete, checksum=job.checksum)
        for path in plan.blocked:
            self.failures.append(
                f"{display_name(path)}: cannot delete non-empty directory to put a "
                f"{'symlink' if src[path].kind == 'link' else 'file'} in its place "
                "(--delete removes its content first)"
            )
        if plan.compare:
            await self._compare(plan, src, dst)
        self._report(plan, src)
        if not job.dry_run:
            await self._apply(plan, src, dst)
        if self.failures:
            self.result.failed = len(self.failures)
            self.result.error = (
                f"{job.cluster}/{job.alias}: {len(self.failures)} failed, first: {self.failures[0]}"
            )

    async def _compare(self, plan: Plan, src: dict[str, Entry], dst: dict[str, Entry]) -> None:
        digests = await asyncio.gather(
            *(asyncio.gather(self.src.digest(p), self.dst.digest(p)) for p in plan.compare)
        )
        for path, (a, b) in zip(plan.compare, digests, strict=True):
            if a != b:
                plan.send_compared(path, src)
            else:
                plan.skipped += 1
                if attrs_differ(src[path], dst.get(path)):
                    plan.file_attrs.append(path)

    def _report(self, plan: Plan, src: dict[str, Entry]) -> None:
        result, progress = self.result, self.progress
        progress.planned(len(plan.send), plan.send_bytes(src))
        for path in plan.delete:
            progress.item("delete", path)
        for path in plan.mkdirs:
            progress.item("mkdir", path)
        for path in plan.send:
            progress.item("send", path, src[path].size)
        for path in plan.links:
            progress.item("link", path)
        if self.job.dry_run:  # a real run counts files as they arrive (_copy, _link)
            result.files_sent = len(plan.send) + len(plan.links)
            result.bytes_sent = plan.send_bytes(src)
        result.skipped = plan.skipped
        result.deleted = len(plan.delete)

    async def _apply(self, plan: Plan, src: dict[str, Entry], dst: dict[str, Entry]) -> None:
        # the SFTP channels of large files (ranges) and of many small files either way (each
        # is its own SFTP server process on OpenSSH: opens, reads, writes and renames are
        # handled side by side) open while the directories are made (a few round trips
        # each; opened channels belong to the session, which closes them)
        spread = sum(1 for p in plan.send if src[p].size <= _SMALL) >= _SPREAD_MIN
        large = any(src[p].size >= _RANGE_MIN for p in plan.send)
        opening = asyncio.ensure_future(self.session.channels()) if spread or large else None
        dst_tree = self.dst
        # directories written into are made writable first (rsync -p sets a directory's
        # mode before its content; a read-only source directory gets its mode back last)
        writable = {}
        for path in plan.dir_attrs:
            old = dst.get(path)
            if old is not None and old.kind == "dir" and old.mode != src[path].mode | 0o700:
                writable[path] = Entry("dir", 0, old.mtime, src[path].mode | 0o700)
        await self._each(list(writable), lambda p: dst_tree.set_attrs(p, writable[p]))
        root = dst.get("")
        if root is None or root.kind != "dir":
            await dst_tree.makedirs("")
        # parents first: one level at a time, each level's directories at once
        await self._by_depth(plan.mkdirs, lambda p: self._mkdir(p, dst.get(p)))
        if opening is not None:
            opened = list(await opening)
            if spread:  # many small files: spread over the channels too
                self.remote.spread = opened
        wide = files_in_flight(self.session.options.parallel_files, await self.session.handles())
        # big files each keep many blocks in flight already, and a small file is held in
        # memory whole: fewer of those at once bounds memory
        big = asyncio.Semaphore(min(wide, _BIG_FILES))
        medium = asyncio.Semaphore(min(wide, _MEDIUM_FILES))
        todo = iter(plan.send)

        def gate(size: int) -> Any:
            return big if size > _SMALL else medium if size > _TINY else contextlib.nullcontext()

        async def worker() -> None:
            # ``wide`` workers, not a task per file: memory stays flat for 100,000 files
            for path in todo:
                async with gate(src[path].size):
                    await self._attempt(path, self._copy(path, src[path], dst.get(path)))

        await asyncio.gather(*(worker() for _ in range(min(wide, len(plan.send)))))
        await self._each(plan.links, lambda p: self._link(p, src[p], dst.get(p)))
        if isinstance(dst_tree, LocalTree):
            dst_tree.forget_dirs()
        # read-only directories to empty (gone, or replaced by a file or link): writable
        # first, as rsync makes them
        emptied = [*plan.replace, *plan.delete]
        await self._by_depth(emptied, lambda p: self._writable(p, dst[p]))
        # children first: the deepest level at once, then the next
        await self._by_depth(plan.delete, lambda p: self._delete(p, dst[p]), deepest_first=True)
        for path, tmp, entry in self.swaps:
            await self._attempt(path, self._swap_dir(path, tmp, entry))
        if isinstance(dst_tree, LocalTree):
            dst_tree.forget_dirs()
        await self._each(plan.file_attrs, lambda p: dst_tree.set_attrs(p, src[p]))

        # a directory's mode may take away the search right its children's need: then deepest
        # first, one level at a time; otherwise all at once (a child's attributes are not its
        # parent's content: setting them changes no parent's mtime)
        def dir_attrs(p: str) -> Any:
            return dst_tree.set_attrs(p, src[p])

        if all(src[p].mode & 0o100 for p in plan.dir_attrs):
            await self._each(plan.dir_attrs, dir_attrs)
        else:
            await self._by_depth(plan.dir_attrs, dir_attrs, deepest_first=True)

    async def _each(self, paths: list[str], op: Callable[[str], Any]) -> None:
        """``op(path)`` for every path, many at once; failures are kept in path order."""
        if not paths:
            return
        found: dict[int, str] = {}
        todo = iter(enumerate(paths))

        async def worker() -> None:
            for i, path in todo:
                failure = await self._try(path, op(path))
                if failure is not None:
                    found[i] = failure

        await asyncio.gather(*(worker() for _ in range(min(_LIST_WIDE, len(paths)))))
        self.failures += [found[i] for i in sorted(found)]

    async def _by_depth(
        self, paths: list[str], op: Callable[[str], Any], *, deepest_first: bool = False
    ) -> None:
        """:meth:`_each` one directory depth at a time (parents before children, or after)."""
        levels: dict[int, list[str]] = {}
        for path in paths:
            levels.setdefault(path.count("/"), []).append(path)
        for depth in sorted(levels, reverse=deepest_first):
            await self._each(levels[depth], op)

    async def _attempt(self, path: str, op: Any) -> None:
        failure = await self._try(path, op)
        if failure is not None:
            self.failures.append(failure)

    async def _try(self, path: str, op: Any) -> str | None:
        """Await ``op``; an SFTP or OS error is returned as the path's one failure line."""
        import asyncssh

        try:
            await op
        except (asyncssh.DisconnectError, asyncssh.SFTPConnectionLost, BrokenPipeError):
            raise  # the whole pair fails with one line (``transfer``)
        except (asyncssh.SFTPError, OSError) as exc:
            # one line, escaped whole (the OS error may name an undecodable path)
            return f"{display_name(path)}: {terminal_text(_describe(exc))}"
        return None

    async def _mkdir(self, path: str, old: Entry | None) -> None:
        """Make a directory; a file or symlink in its place is moved aside first, removed after."""
        if old is None or old.kind == "dir":
            await self.dst.makedirs(path)
            return
        aside = temp_name(path)
        await self.dst.rename(path, aside)
        try:
            await self.dst.makedirs(path)
        except BaseException:
            with contextlib.suppress(Exception):
                await asyncio.shield(self.dst.rename(aside, path))
            raise
        await self.dst.remove(aside, old.kind)

    async def _put_in_place(self, path: str, tmp: str, entry: Entry, old: Entry | None) -> bool:
        """Rename ``tmp`` (made complete) over ``path``; a directory there waits (``_swap_dir``).

        True when done now. On failure ``tmp`` is removed.
        """
        try:
            if old is not None and old.kind == "dir":
                self.swaps.append((path, tmp, entry))
                return False
            # rename(2) replaces a file or symlink atomically: never a moment without either
            await self.dst.rename(tmp, path)
        except BaseException:
            with contextlib.suppress(Exception):
                await asyncio.shield(self.dst.remove(tmp, "file"))
            raise
        return True

    async def _swap_dir(self, path: str, tmp: str, entry: Entry) -> None:
        """Put the new file or symlink ``tmp`` where an (emptied) directory is."""
        import asyncssh

        try:
            await self.dst.remove(path, "dir")
        except (OSError, asyncssh.SFTPError):
            with contextlib.suppress(Exception):
                await self.dst.remove(tmp, "file")
            raise OSError(
                errno.ENOTEMPTY,
                f"cannot delete non-empty directory to put a "
                f"{'symlink' if entry.kind == 'link' else 'file'} in its place "
                "(it holds excluded or unlisted entries)",
            ) from None
        await self._put_in_place(path, tmp, entry, None)
        self._count(entry)

    def _count(self, entry: Entry) -> None:
        self.result.files_sent += 1
        self.result.bytes_sent += entry.size if entry.kind == "file" else 0

    async def _copy(self, path: str, entry: Entry, old: Entry | None) -> None:
        tmp = temp_name(path)
        push = self.job.direction == "push"
        try:
            if entry.size <= _SMALL:
                if push:
                    await self._put_small(path, tmp, entry)
                else:  # mode and mtime are set on the open temp file
                    await self._get_small(path, tmp, entry)
            else:
                channels = await self.session.channels() if entry.size >= _RANGE_MIN else []
                if len(channels) > 1:
                    await self._copy_ranges(path, tmp, entry, channels)
                else:
                    await self._copy_large(path, tmp)
                await self.dst.set_attrs(tmp, entry)
        except BaseException:
            with contextlib.suppress(Exception):
                await asyncio.shield(self.dst.remove(tmp, "file"))
            raise
        if await self._put_in_place(path, tmp, entry, old):
            self._count(entry)

    async def _put_small(self, path: str, tmp: str, entry: Entry) -> None:
        """Open, then write, set mode+mtime and close in flight together."""
        import asyncssh

        with open(self.local.path(path), "rb") as fh:
            data = fh.read()
        remote_tmp = os.fsencode(join(self.remote_root, tmp))
        sftp = self.remote.pick(path)
        handler = lean_handler(sftp)
        if (
            handler is not None
            and len(data) <= sftp.limits.max_write_len
            and 0 <= entry.mtime < 1 << 32
        ):
            await self._put_small_lean(handler, remote_tmp, data, entry)
            return
        # block_size=0: one write request, sent at once (no block tasks)
        whole = 0 if len(data) <= sftp.limits.max_write_len else -1
        out = await sftp.open(
            remote_tmp, "wb", asyncssh.SFTPAttrs(permissions=0o600), block_size=whole
        )
        attrs = asyncssh.SFTPAttrs(permissions=entry.mode, atime=entry.mtime, mtime=entry.mtime)
        try:
            if whole == 0:
                # one round trip for all three: the server handles a channel's requests in
                # order; the rename waits for the replies, so a failed write never lands
                done = await asyncio.gather(
                    out.write(data), out.setstat(attrs), out.close(), return_exceptions=True
                )
                for outcome in done:
                    if isinstance(outcome, BaseException):
                        raise outcome
            else:
                await out.write(data)
                await asyncio.gather(out.setstat(attrs), out.close())
        finally:
            await out.close()
        self.progress.advance(len(data))

    async def _put_small_lean(
        self, handler: Any, remote_tmp: bytes, data: bytes, entry: Entry
    ) -> None:
        """:meth:`_put_small` as plain requests: open (0600), then write, set mode+mtime and
        close sent at once, without a task or asyncssh's per-request layers."""
        name = _string(remote_tmp)
        opened = lean_request(
            handler, _FXP_OPEN, name, struct.pack(">III", _FXF_WB, _ATTR_PERM, 0o600)
        )
        handle = _string(await lean_reply(handler, opened, _FXP_HANDLE))
        # the server handles a channel's requests in order; the rename waits for all three
        # replies, so a failed write never lands
        sent = (
            lean_request(handler, _FXP_WRITE, handle, struct.pack(">Q", 0), _string(data)),
            lean_request(
                handler,
                _FXP_FSETSTAT,
                handle,
                struct.pack(">IIII", _ATTR_PERM_TIMES, entry.mode, entry.mtime, entry.mtime),
            ),
            lean_request(handler, _FXP_CLOSE, handle),
        )
        await lean_replies(handler, sent)
        self.progress.advance(len(data))

    async def _get_small(self, path: str, tmp: str, entry: Entry) -> None:
        """Open, then read and close in flight together; the local temp file is written
        at once, its mode and mtime set through its descriptor."""
        sftp = self.remote.pick(path)
        remote = self.remote.path(path)
        handler = lean_handler(sftp)
        if handler is not None and entry.size <= sftp.limits.max_read_len:
            data = await get_small_lean(handler, remote, entry.size)
        else:
            data = await get_small(sftp, remote, entry.size)
        # the file system's work (~0.1 ms a file) in a thread, beside the event loop's
        await in_thread(write_new, self.local.path(tmp), data, entry)
        self.progress.advance(len(data))

    async def _copy_ranges(
        self, path: str, tmp: str, entry: Entry, channels: list[asyncssh.SFTPClient]
    ) -> None:
        """One large file as one range per channel, all at once, into the temp file.

        Each channel opens the temp file itself (the first creates it, 0600) and keeps
        ``_RANGE_REQUESTS`` blocks in flight; the size of the result is checked before
        the rename in ``_copy``.
        """
        push = self.job.direction == "push"
        main = channels[0]
        size = entry.size
        if push:
            block = min(c.limits.max_write_len for c in channels)
        else:
            block = min(c.limits.max_read_len for c in channels)
        parts = ranges(size, len(channels), block)
        remote = os.fsencode(join(self.remote_root, tmp if push else path))
        local = self.local.path(path if push else tmp)
        handles: list[Any] = []
        if push:
            import asyncssh

            fd = os.open(local, os.O_RDONLY)
            handles.append(
                await main.open(remote, "wb", asyncssh.SFTPAttrs(permissions=0o600), block_size=0)
            )
        else:
            fd = os.open(local, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        try:
            opened = await asyncio.gather(
                *(
                    c.open(remote, "r+b" if push else "rb", block_size=0)
                    for c in channels[1 if push else 0 : len(parts)]
                ),
                return_exceptions=True,
            )
            failed = [h for h in opened if isinstance(h, BaseException)]
            handles += [h for h in opened if not isinstance(h, BaseException)]
            if failed:
                raise failed[0]
            move = self._send_range if push else self._receive_range
            await asyncio.gather(
                *(
                    move(fd, handle, off, length, block)
                    for handle, (off, length) in zip(handles, parts, strict=False)
                )
            )
            if push:
                await asyncio.gather(*(h.close() for h in handles))
                got = (await main.stat(remote)).size
            else:
                got = os.fstat(fd).st_size
        finally:
            os.close(fd)
            for handle in handles:
                with contextlib.suppress(Exception):
                    await asyncio.shield(handle.close())
        if got != size:
            raise OSError(errno.EIO, f"copy has {got} bytes, expected {size} (file changed?)")
        self.session.ranged += 1

    async def _send_range(self, fd: int, out: Any, off: int, length: int, block: int) -> None:
        async def write(at: int, n: int) -> None:
            await write_block(out, fd, at, n)
            self.progress.advance(n)

        await _pipeline(off, length, block, write)

    async def _receive_range(self, fd: int, inp: Any, off: int, length: int, block: int) -> None:
        async def read(at: int, n: int) -> None:
            while n > 0:
                data = await inp.read(n, at)
                if not data:
                    raise OSError(errno.EIO, "the file shrank while being fetched")
                os.pwrite(fd, data, at)
                self.progress.advance(len(data))
                at, n = at + len(data), n - len(data)

        await _pipeline(off, length, block, read)

    async def _copy_large(self, path: str, tmp: str) -> None:
        """asyncssh's parallel copy: many read/write requests in flight."""
        seen = 0

        def advanced(_s: bytes, _d: bytes, copied: int, _total: int) -> None:
            nonlocal seen
            if copied > seen:
                self.progress.advance(copied - seen)
                seen = copied

        sftp = self.session.sftp
        remote = join(self.remote_root, path)
        if self.job.direction == "push":
            remote_tmp = os.fsencode(join(self.remote_root, tmp))
            await sftp.put(
                os.fsencode(self.local.path(path)),
                remote_tmp,
                max_requests=_REQUESTS,
                progress_handler=advanced,
            )
        else:
            local_tmp = os.fsencode(self.local.path(tmp))
            await sftp.get(
                os.fsencode(remote), local_tmp, max_requests=_REQUESTS, progress_handler=advanced
            )

    async def _link(self, path: str, entry: Entry, old: Entry | None) -> None:
        """Make the symlink under a temporary name, then rename it over what is there."""
        if old is None:
            await self.dst.symlink(entry.target, path)
            self._count(entry)
            return
        tmp = temp_name(path)
        await self.dst.symlink(entry.target, tmp)
        if await self._put_in_place(path, tmp, entry, old):
            self._count(entry)

    async def _writable(self, path: str, entry: Entry) -> None:
        """Make a read-only destination directory writable before its content goes, as
        rsync does when it must (not as root: a local directory root can write to stays)."""
        if isinstance(self.dst, LocalTree) and os.access(self.dst.path(path), os.W_OK):
            return
        if entry.kind == "dir" and not entry.mode & 0o200:
            await self.dst.set_attrs(path, Entry("dir", 0, entry.mtime, entry.mode | 0o700))

    async def _delete(self, path: str, entry: Entry) -> None:
        import asyncssh

        try:
            await self.dst.remove(path, entry.kind)
        except (OSError, asyncssh.SFTPError) as exc:
            if entry.kind != "dir":
                raise
            # excluded entries inside are kept, as rsync keeps them
            self.progress.message(
                f"cannot delete non-empty directory {display_name(path)}: "
                f"{terminal_text(_describe(exc))}"
            )


#: SFTP's write request (``SSH_FXP_WRITE``, draft-ietf-secsh-filexfer-02).
_FXP_WRITE = 6


async def write_block(out: asyncssh.SFTPClientFile, fd: int, at: int, n: int) -> None:
    """Write ``n`` bytes of the local file ``fd`` at offset ``at`` to the remote file
    ``out`` (same offset), with one SFTP write request; an error reply is raised.

    The bytes are read straight into the request's packet: asyncssh's ``write`` copies a
    block six times on its way to the channel (the request's fields, then its length,
    each a new ``bytes``), which costs as much as encrypting it. Uses asyncssh's request
    layer (pinned in uv.lock); without it, ``out.write``.
    """
    handler: Any = getattr(out, "_handler", None)
    handle = getattr(out, "_handle", None)
    if not (
        isinstance(handle, bytes)
        and hasattr(handler, "_requests")
        and hasattr(handler, "_next_pktid")
        and hasattr(handler, "_writer")
    ):
        data = os.pread(fd, n, at)
        if len(data) != n:
            raise OSError(errno.EIO, "the file shrank while being sent")
        await out.write(data, at)
        return
    # uint32 length, byte type, uint32 id, string handle, uint64 offset, string data
    head = 4 + 1 + 4 + 4 + len(handle) + 8 + 4
    packet = bytearray(head + n)
    if os.preadv(fd, [memoryview(packet)[head:]], at) != n:
        raise OSError(errno.EIO, "the file shrank while being sent")
    if not handler._writer:
        raise asyncssh_error("SFTPNoConnection", "Connection not open")
    pktid = handler._next_pktid
    handler._next_pktid = (pktid + 1) & 0xFFFFFFFF
    struct.pack_into(">IBII", packet, 0, head - 4 + n, _FXP_WRITE, pktid, len(handle))
    packet[13 : 13 + len(handle)] = handle
    struct.pack_into(">QI", packet, 13 + len(handle), at, n)
    waiter: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    handler._requests[pktid] = waiter
    handler._writer.write(packet)
    kind, reply = await waiter
    # the reply is decoded as asyncssh decodes its own (a failure status raises)
    process = handler._packet_handlers.get(kind) if kind == _FXP_STATUS else None
    if process is None:
        raise asyncssh_error("SFTPBadMessage", f"Unexpected response type: {kind}")
    process(handler, reply)


#: SFTP's status reply (``SSH_FXP_STATUS``).
_FXP_STATUS = 101


def asyncssh_error(name: str, reason: str) -> Exception:
    """asyncssh's exception class ``name`` (imported late) with ``reason``."""
    import asyncssh

    error: Exception = getattr(asyncssh, name)(reason)
    return error


#: SFTP request types (draft-ietf-secsh-filexfer-02) the small-file path sends itself.
_FXP_OPEN, _FXP_CLOSE, _FXP_READ, _FXP_FSETSTAT, _FXP_EXTENDED = 3, 4, 5, 10, 200
#: Its replies beside the status: a handle, read data.
_FXP_HANDLE, _FXP_DATA = 102, 103
#: ``rb``: SSH_FXF_READ; ``wb``: SSH_FXF_WRITE | SSH_FXF_CREAT | SSH_FXF_TRUNC.
_FXF_READ, _FXF_WB = 0x01, 0x02 | 0x08 | 0x10
#: Version 3 attributes: SSH_FILEXFER_ATTR_PERMISSIONS, with ``| ACMODTIME`` the times too.
_ATTR_PERM, _ATTR_PERM_TIMES = 0x04, 0x04 | 0x08
_POSIX_RENAME = b"posix-rename@openssh.com"


def lean_handler(sftp: asyncssh.SFTPClient) -> Any:
    """``sftp``'s request handler when :func:`lean_request` can speak for it (SFTP
    version 3 with ``posix-rename@openssh.com``, asyncssh's request layer as pinned in
    uv.lock), else None: the caller then uses asyncssh's own methods."""
    handler: Any = getattr(sftp, "_handler", None)
    if (
        getattr(handler, "_version", None) == 3
        and getattr(handler, "_supports_posix_rename", False)
        and hasattr(handler, "_requests")
        and hasattr(handler, "_next_pktid")
        and hasattr(handler, "_writer")
        and isinstance(getattr(handler, "_packet_handlers", None), dict)
    ):
        return handler
    return None


def lean_request(handler: Any, kind: int, *fields: bytes) -> asyncio.Future[Any]:
    """Send one SFTP request (``kind`` and its encoded fields) at once; the future gets
    the reply, to read with :func:`lean_reply`.

    asyncssh's request path (client method, handler, logging of every request and of its
    attributes as text, ``send_packet``) is most of the client's CPU per small file; this
    writes the same bytes to the same writer and waits on the same reply table.
    """
    if not handler._writer:
        raise asyncssh_error("SFTPNoConnection", "Connection not open")
    pktid = handler._next_pktid
    handler._next_pktid = (pktid + 1) & 0xFFFFFFFF
    waiter: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    handler._requests[pktid] = waiter
    body = b"".join(fields)
    handler._writer.write(struct.pack(">IBI", len(body) + 5, kind, pktid) + body)
    return waiter


async def lean_reply(handler: Any, waiter: asyncio.Future[Any], expected: int = 0) -> Any:
    """The reply to a :func:`lean_request`, decoded as asyncssh decodes its own: a failure
    status raises; ``expected`` (a reply type such as a handle) returns its value (a
    handle's or read data's bytes: :func:`reply_string`)."""
    kind, reply = await waiter
    if kind != _FXP_STATUS and kind != expected:
        raise asyncssh_error("SFTPBadMessage", f"Unexpected response type: {kind}")
    if kind in (_FXP_HANDLE, _FXP_DATA):
        # asyncssh's decoders would format a debug log line for each (even with it off)
        return reply_string(reply.get_remaining_payload())
    if kind == _FXP_STATUS and not expected:
        code = reply.get_uint32()
        if code == 0:
            return None  # SSH_FX_OK (asyncssh would build, then drop, an error object)
        from asyncssh.packet import SSHPacket  # a failure: asyncssh raises it as its own

        reply = SSHPacket(struct.pack(">I", code) + reply.get_remaining_payload())
    result = handler._packet_handlers[kind](handler, reply)
    if expected and result is None:
        raise asyncssh_error("SFTPBadMessage", "Unexpected FX_OK response")
    return result


async def lean_replies(
    handler: Any, sent: tuple[asyncio.Future[Any], ...], *expected: int
) -> list[Any]:
    """The replies to requests sent together (:func:`lean_reply`; ``expected[i]`` for the
    ``i``-th, 0 past its end): all are awaited, then the first failure is raised."""
    results: list[Any] = []
    failure: BaseException | None = None
    for i, waiter in enumerate(sent):
        try:
            results.append(
                await lean_reply(handler, waiter, expected[i] if i < len(expected) else 0)
            )
        except Exception as exc:
            results.append(None)
            failure = failure or exc
    if failure is not None:
        raise failure
    return results


async def in_thread(fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(*args)`` in the loop's default thread pool. A cancelled caller still waits for
    it to end: what it made is there for the caller's clean-up (a thread cannot be
    stopped half-way)."""
    work = asyncio.get_running_loop().run_in_executor(None, fn, *args)
    try:
        return await asyncio.shield(work)
    except asyncio.CancelledError:
        await asyncio.wait([work])
        raise


def write_new(path: str, data: bytes, entry: Entry) -> None:
    """Create ``path`` (a new file, never through a symlink) holding ``data``, with
    ``entry``'s mode and mtime set through its descriptor."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fchmod(fd, entry.mode)
        os.utime(fd, (entry.mtime, entry.mtime))


async def get_small(sftp: asyncssh.SFTPClient, remote: bytes, size: int) -> bytes:
    """:func:`get_small_lean` with asyncssh's own requests (any server)."""
    whole = 0 if size <= sftp.limits.max_read_len else -1
    inp = await sftp.open(remote, "rb", block_size=whole)
    try:
        # the server answers a handle's requests in order: the read before the close
        done = await asyncio.gather(inp.read(max(1, size), 0), inp.close(), return_exceptions=True)
        for outcome in done:
            if isinstance(outcome, BaseException):
                raise outcome
        data = done[0]
        assert isinstance(data, bytes)
        return data
    finally:
        await inp.close()


async def get_small_lean(handler: Any, remote: bytes, size: int) -> bytes:
    """The first ``size`` bytes (at least one asked for) of the remote file ``remote`` as
    plain requests (:func:`lean_request`): open, then one read and the close sent at once
    (the server answers a handle's requests in order). Fewer bytes when the file is
    shorter; an empty file's end-of-file is ``b""``, as asyncssh's ``read`` returns it."""
    import asyncssh

    opened = lean_request(handler, _FXP_OPEN, _string(remote), struct.pack(">II", _FXF_READ, 0))
    handle = _string(await lean_reply(handler, opened, _FXP_HANDLE))
    sent = (
        lean_request(handler, _FXP_READ, handle, struct.pack(">QI", 0, max(1, size))),
        lean_request(handler, _FXP_CLOSE, handle),
    )
    try:
        data, _ = await lean_replies(handler, sent, _FXP_DATA)
    except asyncssh.SFTPEOFError:
        return b""
    assert isinstance(data, bytes)
    return data


def reply_string(payload: bytes) -> bytes:
    """The one string an SFTP version 3 handle or data reply carries after its type and
    id (``payload``): ``uint32`` length, then the bytes. Anything else, short or with bytes
    after it, is ``SFTPBadMessage`` (asyncssh: a packet decode error)."""
    if len(payload) < 4 or int.from_bytes(payload[:4], "big") != len(payload) - 4:
        raise asyncssh_error("SFTPBadMessage", "Invalid string in SFTP reply")
    return payload[4:]


def _string(data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + data


async def _pipeline(off: int, length: int, block: int, start: Callable[[int, int], Any]) -> None:
    """``start(at, n)`` for each block of ``[off, off+length)``, ``_RANGE_REQUESTS`` in
    flight; the first failure stops it (the rest are cancelled, then awaited)."""
    flight: set[asyncio.Future[Any]] = set()
    at, end = off, off + length
    try:
        while at < end or flight:
            while at < end and len(flight) < _RANGE_REQUESTS:
                n = min(block, end - at)
                flight.add(asyncio.ensure_future(start(at, n)))
                at += n
            done, flight = await asyncio.wait(flight, return_when=asyncio.FIRST_COMPLETED)
            for fut in done:
                fut.result()
    finally:
        for fut in flight:
            fut.cancel()
        if flight:
            await asyncio.gather(*flight, return_exceptions=True)


@hookimpl
def register_transfer_backends(register: Callable[[TransferBackend], None]) -> None:
    """Register the builtin sftp backend."""
    register(SftpBackend())
