"""The ``sftp`` transfer backend: pure Python over asyncssh, no rsync needed on either side.

One SSH connection per cluster carries an SFTP session for every pair of that
cluster and an exec channel for the remote ``~``/``$VAR`` expansion. A pair is
moved by listing both sides (excludes applied while walking, so excluded paths
are neither sent nor deleted), planning with :func:`xfer_core.sync.plan.plan_sync`
(rsync's ``--update`` quick check) and applying the plan: several files at once,
each with many SFTP requests in flight, written to ``.NAME.XXXXXXXX.xfertmp``,
given its mode and mtime, then renamed into place (``posix-rename`` when the
server has it).

Host keys: a known host must present its known key (a different key is always
refused); an unknown host is refused unless ``accept_new_host_key``, which
appends its key to the known_hosts file, like OpenSSH's ``accept-new``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import re
import secrets
import shutil
import stat
import time
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from xfer_core.errors import ConfigError, TransferError
from xfer_core.hookspecs import hookimpl
from xfer_core.plugin import AVAILABLE, Availability
from xfer_core.sync import remote_path
from xfer_core.sync.backend import (
    KEEPALIVE_COUNT_MAX,
    PairJob,
    PairResult,
    PathFilter,
    ProgressSink,
    Remote,
    TransferBackend,
    TransferOptions,
    TransferSession,
)
from xfer_core.sync.plan import Entry, EntryKind, Plan, attrs_differ, plan_sync
from xfer_core.sync.progress import display_path

if TYPE_CHECKING:
    import asyncssh

#: Temporary names of files being written (also recognised and removed when left over).
_TEMP = re.compile(r"^\..+\.[0-9a-f]{8}\.xfertmp$", re.DOTALL)
_CHUNK = 1 << 20
#: Files up to this size are pushed with a single write request.
_SMALL = 256 * 1024
#: Larger files: how many at once, and how many read/write requests each keeps in flight.
_BIG_FILES = 4
_REQUESTS = 64


def temp_name(path: str) -> str:
    """The temporary sibling of ``path`` a file is written to before the rename."""
    parent, _, name = path.rpartition("/")
    name = os.fsencode(name)[:200].decode("utf-8", "surrogateescape") if len(name) > 200 else name
    tmp = f".{name}.{secrets.token_hex(4)}.xfertmp"
    return f"{parent}/{tmp}" if parent else tmp


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

    def path(self, rel: str) -> str:
        return join(self.root, rel)

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
                    if not is_dir and _TEMP.match(de.name):
                        if clean:
                            with contextlib.suppress(OSError):
                                os.unlink(de.path)
                        continue
                    if matcher.excluded(rel, is_dir):
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

    def path(self, rel: str) -> bytes:
        return os.fsencode(join(self.root, rel))

    async def listing(self, matcher: PathFilter, *, clean: bool = False) -> dict[str, Entry] | None:
        """Every non-excluded entry below the root (``None`` when the root is missing).

        Directories are read concurrently; symlink targets are read as they are found.
        """
        import asyncssh

        try:
            root_attrs = await self.sftp.stat(self.path(""))
        except asyncssh.SFTPNoSuchFile:
            return None
        out = {"": _entry_from_attrs(root_attrs)}
        pending: list[str] = [""]
        while pending:
            batch, pending = pending[:64], pending[64:]
            listings = await asyncio.gather(*(self._scan(rel, matcher, clean) for rel in batch))
            for entries in listings:
                for rel, entry in entries:
                    out[rel] = entry
                    if entry.kind == "dir":
                        pending.append(rel)
        return out

    async def _scan(
        self, rel_dir: str, matcher: PathFilter, clean: bool
    ) -> list[tuple[str, Entry]]:
        found: list[tuple[str, Entry]] = []
        links: list[tuple[str, Any]] = []
        async for name in self.sftp.scandir(self.path(rel_dir)):
            raw = name.filename
            fname = os.fsdecode(raw) if isinstance(raw, bytes) else raw
            if fname in (".", ".."):
                continue
            rel = f"{rel_dir}/{fname}" if rel_dir else fname
            entry = _entry_from_attrs(name.attrs)
            if entry.kind != "dir" and _TEMP.match(fname):
                if clean:
                    with contextlib.suppress(Exception):
                        await self.sftp.remove(self.path(rel))
                continue
            if matcher.excluded(rel, entry.kind == "dir"):
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

    async def rename(self, old: str, new: str) -> None:
        import asyncssh

        try:
            await self.sftp.posix_rename(self.path(old), self.path(new))
        except asyncssh.SFTPOpUnsupported:
            with contextlib.suppress(asyncssh.SFTPNoSuchFile):
                await self.sftp.remove(self.path(new))
            await self.sftp.rename(self.path(old), self.path(new))

    async def digest(self, rel: str) -> bytes:
        h = hashlib.sha256()
        async with self.sftp.open(self.path(rel), "rb") as fh:
            while chunk := await fh.read(_CHUNK):
                h.update(chunk if isinstance(chunk, bytes) else os.fsencode(chunk))
        return h.digest()


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
def _client_class() -> Any:
    import asyncssh

    class HostKeyPolicy(asyncssh.SSHClient):
        """Called by asyncssh only for a key that is not in known_hosts."""

        def __init__(self, known: asyncssh.SSHKnownHosts, accept_new: bool):
            self.known = known
            self.accept_new = accept_new
            self.verdict = ""
            self.new_key: asyncssh.SSHKey | None = None
            self.new_host = ""

        def validate_host_public_key(
            self, host: str, addr: str, port: int, key: asyncssh.SSHKey
        ) -> bool:
            # ``host`` is the name asyncssh matched known_hosts with (HostName, HostKeyAlias)
            trusted = self.known.match(host, addr, port if port != 22 else None)
            if trusted[0] or trusted[1]:
                self.verdict = "mismatch"
                return False
            if not self.accept_new:
                self.verdict = "unknown"
                return False
            self.new_key = key
            self.new_host = _host_pattern(host, port)
            return True

    return HostKeyPolicy


def known_hosts_path(target: Remote) -> Path:
    """The known_hosts file: the target's, else the ssh config's ``UserKnownHostsFile``, else ~/.ssh/known_hosts."""
    if target.known_hosts:
        return Path(target.known_hosts)
    if target.ssh_config:
        import asyncssh

        options = asyncssh.SSHClientConnectionOptions(
            host=target.host, config=[target.ssh_config], known_hosts=()
        )
        known = options.known_hosts
        if isinstance(known, list) and known:
            return Path(os.path.expanduser(str(known[0])))
    return Path("~/.ssh/known_hosts").expanduser()


def _check_key_file(path: str, where: str) -> None:
    """Refuse a private key others can read, as OpenSSH does (``UNPROTECTED PRIVATE KEY FILE``)."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise TransferError(f"{where}: key_path {path} does not exist") from None
    except OSError as exc:
        raise TransferError(f"{where}: cannot read key_path {path}: {exc.strerror}") from None
    if mode & 0o077:
        raise TransferError(
            f"{where}: key_path {path} is accessible by others (mode {stat.S_IMODE(mode):04o}); "
            f"OpenSSH refuses such keys too: chmod 600 {path}"
        )


def _host_pattern(host: str, port: int) -> str:
    return host if port == 22 else f"[{host}]:{port}"


async def connect(target: Remote) -> asyncssh.SSHClientConnection:
    """Log in to ``target`` with xfer's host-key policy; failures become one TransferError line."""
    import asyncssh

    kh_path = known_hosts_path(target)
    text = kh_path.read_text(errors="replace") if kh_path.is_file() else ""
    known = asyncssh.import_known_hosts(text)
    policy = _client_class()(known, target.accept_new_host_key)
    where = f"{target.name} ({target.label})"
    kwargs: dict[str, Any] = {
        "known_hosts": known,
        "config": [target.ssh_config] if target.ssh_config else (),
        "connect_timeout": target.connect_timeout,
        "login_timeout": target.connect_timeout,
        "client_factory": lambda: policy,
        # a dropped link is noticed after io_timeout s of silence instead of TCP's ~15 min
        "keepalive_interval": target.keepalive_interval,
        "keepalive_count_max": KEEPALIVE_COUNT_MAX,
        # AES-GCM costs asyncssh one cryptography call per packet (chacha20-poly1305: three)
        "encryption_algs": [
            "aes128-gcm@openssh.com",
            "aes256-gcm@openssh.com",
            "chacha20-poly1305@openssh.com",
            "aes128-ctr",
            "aes256-ctr",
        ],
    }
    if target.port:
        kwargs["port"] = target.port
    if target.user:
        kwargs["username"] = target.user
    if target.key_path:
        _check_key_file(target.key_path, where)
        kwargs["client_keys"] = [target.key_path]
        kwargs["agent_path"] = None
    try:
        conn = await asyncssh.connect(target.host, **kwargs)
    except asyncssh.HostKeyNotVerifiable:
        if policy.verdict == "mismatch":
            raise TransferError(
                f"{where}: host key does not match {kh_path} (possible man-in-the-middle); "
                "if the server's key really changed, remove the old line with `ssh-keygen -R`"
            ) from None
        raise TransferError(
            f"{where}: host key is unknown (not in {kh_path}); "
            "add it or re-run with --accept-new-host-key"
        ) from None
    except asyncssh.PermissionDenied as exc:
        raise TransferError(
            f"{where}: login refused (check user and key_path): {exc.reason}"
        ) from None
    except (OSError, asyncio.TimeoutError) as exc:
        # asyncio's "Connect call failed ('h', 22)" hides the cause: say "No route to host"
        errno = getattr(exc, "errno", None)
        reason = (
            (os.strerror(errno) if errno else None)
            or getattr(exc, "strerror", None)
            or str(exc)
            or type(exc).__name__
        )
        raise TransferError(f"{where}: unreachable: {reason}") from None
    except (asyncssh.Error, ValueError) as exc:
        raise TransferError(f"{where}: ssh failed: {exc}") from None
    _coalesce_writes(conn)
    _quiet_orphaned_disconnects(asyncio.get_running_loop())
    if policy.new_key is not None:
        _remember(kh_path, policy.new_host, policy.new_key)
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


class _CoalescingTransport:
    """Sends everything asyncssh wrote during one event-loop iteration in one ``send()``.

    asyncssh writes every SSH packet to the socket at once; with hundreds of small
    files in flight that is one system call (and one wake-up of the server) per
    packet. OpenSSH batches its output per loop iteration; this does the same.
    """

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop):
        self._transport = transport
        self._loop = loop
        self._pending: list[bytes] = []

    def write(self, data: bytes) -> None:
        if not self._pending:
            self._loop.call_soon(self._flush)
        self._pending.append(data)

    def _flush(self) -> None:
        if self._pending:
            data = b"".join(self._pending)
            self._pending.clear()
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


def _coalesce_writes(conn: asyncssh.SSHClientConnection) -> None:
    transport = getattr(conn, "_transport", None)
    if isinstance(transport, asyncio.Transport):
        wrapper: Any = _CoalescingTransport(transport, asyncio.get_running_loop())
        conn._transport = wrapper


def _remember(path: Path, pattern: str, key: asyncssh.SSHKey) -> None:
    """Append ``pattern key`` to the known_hosts file (created 0600 with its directory)."""
    line = key.export_public_key("openssh").decode().split()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    with os.fdopen(fd, "a") as fh:
        fh.write(f"{pattern} {line[0]} {line[1]}\n")


# -- backend -------------------------------------------------------------------------
class SftpBackend(TransferBackend):
    """SFTP over asyncssh: one connection per cluster, several files at once."""

    name = "sftp"
    description = "SFTP over asyncssh (no rsync needed; parallel files, temp file + rename)"

    def check(self) -> Availability:
        return AVAILABLE

    async def open(self, target: Remote, options: TransferOptions) -> TransferSession:
        conn = await connect(target)
        try:
            sftp = await conn.start_sftp_client()
        except Exception as exc:
            conn.close()
            raise TransferError(f"{target.name}: cannot start SFTP: {exc}") from None
        return SftpSession(conn, sftp, target, options)


class SftpSession(TransferSession):
    """One cluster: an SSH connection, its SFTP client, and the pairs moved over them."""

    def __init__(
        self,
        conn: asyncssh.SSHClientConnection,
        sftp: asyncssh.SFTPClient,
        target: Remote,
        options: TransferOptions,
    ):
        self.conn = conn
        self.sftp = sftp
        self.target = target
        self.options = options

    async def resolve(self, path: str) -> str:
        """The remote path with ``~``/``$VAR`` expanded by the remote side."""
        if not remote_path.needs_expansion(path):
            return path
        wanted = remote_path.refs(path)
        res = await self.conn.run(remote_path.query_command(wanted), check=False, encoding=None)
        out = res.stdout if isinstance(res.stdout, bytes) else b""
        if res.exit_status != 0:
            err = res.stderr.decode(errors="replace") if isinstance(res.stderr, bytes) else ""
            raise TransferError(f"{self.target.name}: cannot expand {path!r}: {err.strip()}")
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

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            self.sftp.exit()
        self.conn.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.conn.wait_closed(), 5)


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
        self.failures: list[str] = []

    async def run(self) -> None:
        job = self.job
        clean = not job.dry_run
        src = await self.src.listing(job.excludes)
        if src is None:
            raise TransferError(
                f"{job.cluster}/{job.alias}: remote directory {job.remote!r} does not exist"
            )
        if src[""].kind != "dir":
            raise TransferError(f"{job.cluster}/{job.alias}: {job.source} is not a directory")
        dst = await self.dst.listing(job.excludes, clean=clean) or {}
        plan = plan_sync(src, dst, delete=job.delete, checksum=job.checksum)
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
        dst_tree = self.dst
        for path in plan.blocked:
            self.failures.append(
                f"{display_path(path)}: cannot replace a non-empty directory (no --delete)"
            )
        # directories written into are made writable first (rsync -p sets a directory's
        # mode before its content; a read-only source directory gets its mode back last)
        for path in plan.dir_attrs:
            old = dst.get(path)
            if old is not None and old.kind == "dir" and old.mode != src[path].mode | 0o700:
                writable = Entry("dir", 0, old.mtime, src[path].mode | 0o700)
                await self._attempt(path, dst_tree.set_attrs(path, writable))
        for path in plan.replace:
            await self._attempt(path, self._replace(path, dst))
        await dst_tree.makedirs("")
        for path in plan.mkdirs:
            await self._attempt(path, dst_tree.makedirs(path))
        wide = max(1, self.session.options.parallel_files)
        # big files each keep _REQUESTS blocks in flight already: fewer at once bounds memory
        big = asyncio.Semaphore(min(wide, _BIG_FILES))
        todo = iter(plan.send)

        async def worker() -> None:
            # ``wide`` workers, not a task per file: memory stays flat for 100,000 files
            for path in todo:
                async with big if src[path].size > _SMALL else contextlib.nullcontext():
                    await self._attempt(path, self._copy(path, src[path]))

        await asyncio.gather(*(worker() for _ in range(min(wide, len(plan.send)))))
        for path in plan.links:
            await self._attempt(path, self._link(path, src[path], dst.get(path)))
        for path in plan.delete:  # read-only directories to empty: writable first (rsync)
            await self._attempt(path, self._writable(path, dst[path]))
        for path in plan.delete:
            await self._attempt(path, self._delete(path, dst[path]))
        for path in plan.file_attrs:
            await self._attempt(path, dst_tree.set_attrs(path, src[path]))
        for path in plan.dir_attrs:
            await self._attempt(path, dst_tree.set_attrs(path, src[path]))

    async def _attempt(self, path: str, op: Any) -> None:
        import asyncssh

        try:
            await op
        except (asyncssh.DisconnectError, asyncssh.SFTPConnectionLost, BrokenPipeError):
            raise  # the whole pair fails with one line (``transfer``)
        except (asyncssh.SFTPError, OSError) as exc:
            self.failures.append(display_path(f"{path}: {_describe(exc)}"))  # one line, UTF-8

    async def _copy(self, path: str, entry: Entry) -> None:
        tmp = temp_name(path)
        try:
            if self.job.direction == "push" and entry.size <= _SMALL:
                await self._put_small(path, tmp, entry)
            else:
                await self._copy_large(path, tmp)
                await self.dst.set_attrs(tmp, entry)
            await self.dst.rename(tmp, path)
        except BaseException:
            with contextlib.suppress(Exception):
                await asyncio.shield(self.dst.remove(tmp, "file"))
            raise
        self.result.files_sent += 1
        self.result.bytes_sent += entry.size

    async def _put_small(self, path: str, tmp: str, entry: Entry) -> None:
        """Open, then write, set mode+mtime and close in flight together."""
        import asyncssh

        with open(join(self.job.local, path), "rb") as fh:
            data = fh.read()
        remote_tmp = os.fsencode(join(self.remote_root, tmp))
        sftp = self.session.sftp
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

    async def _copy_large(self, path: str, tmp: str) -> None:
        """asyncssh's parallel copy: many read/write requests in flight."""
        seen = 0

        def advanced(_s: bytes, _d: bytes, copied: int, _total: int) -> None:
            nonlocal seen
            if copied > seen:
                self.progress.advance(copied - seen)
                seen = copied

        sftp = self.session.sftp
        local, remote = join(self.job.local, path), join(self.remote_root, path)
        if self.job.direction == "push":
            remote_tmp = os.fsencode(join(self.remote_root, tmp))
            await sftp.put(
                os.fsencode(local), remote_tmp, max_requests=_REQUESTS, progress_handler=advanced
            )
        else:
            local_tmp = os.fsencode(join(self.job.local, tmp))
            await sftp.get(
                os.fsencode(remote), local_tmp, max_requests=_REQUESTS, progress_handler=advanced
            )

    async def _link(self, path: str, entry: Entry, old: Entry | None) -> None:
        if old is not None:
            await self.dst.remove(path, old.kind)
        await self.dst.symlink(entry.target, path)
        self.result.files_sent += 1

    async def _writable(self, path: str, entry: Entry) -> None:
        """Make a read-only destination directory writable before its content goes, as
        rsync does when it must (not as root: a local directory root can write to stays)."""
        if isinstance(self.dst, LocalTree) and os.access(self.dst.path(path), os.W_OK):
            return
        if entry.kind == "dir" and not entry.mode & 0o200:
            await self.dst.set_attrs(path, Entry("dir", 0, entry.mtime, entry.mode | 0o700))

    async def _replace(self, path: str, dst: dict[str, Entry]) -> None:
        """Remove the destination's ``path`` (of another kind than the source's). A
        directory goes with its listed content only: excluded entries inside keep it, and
        the pair fails, as rsync's "could not make way" does."""
        inside = sorted((p for p in dst if p.startswith(path + "/")), key=lambda p: -p.count("/"))
        for p in [path, *inside]:
            await self._writable(p, dst[p])
        for child in inside:
            await self.dst.remove(child, dst[child].kind)
        await self.dst.remove(path, dst[path].kind)

    async def _delete(self, path: str, entry: Entry) -> None:
        import asyncssh

        try:
            await self.dst.remove(path, entry.kind)
        except (OSError, asyncssh.SFTPError) as exc:
            if entry.kind != "dir":
                raise
            # excluded entries inside are kept, as rsync keeps them
            text = f"cannot delete non-empty directory {path}: {_describe(exc)}"
            self.progress.message(display_path(text))


@hookimpl
def register_transfer_backends(register: Callable[[TransferBackend], None]) -> None:
    """Register the builtin sftp backend."""
    register(SftpBackend())
