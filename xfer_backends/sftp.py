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
import dataclasses
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
from xfer_core.sync import remote_path, ssh_login
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
from xfer_core.sync.plan import Entry, EntryKind, Plan, plan_sync

if TYPE_CHECKING:
    import asyncssh

    from xfer_backends.sftp_openssh import OpenSsh

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

    class LoginClient(asyncssh.SSHClient):
        """xfer's host-key policy, and the answers a login asks a person for (:class:`_Login`).

        asyncssh calls ``validate_host_public_key`` only for a key not in known_hosts.
        """

        def __init__(self, known: asyncssh.SSHKnownHosts, accept_new: bool, login: _Login):
            self.known = known
            self.accept_new = accept_new
            self.login = login
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

        async def public_key_auth_requested(self) -> Any:
            return await self.login.locked_key()

        def kbdint_auth_requested(self) -> str | None:
            return self.login.kbdint_requested()

        async def kbdint_challenge_received(
            self, name: str, instructions: str, lang: str, prompts: Any
        ) -> list[str] | None:
            return await self.login.challenge(name, instructions, prompts)

        async def password_auth_requested(self) -> str | None:
            return await self.login.password()

    return LoginClient


class _Login:
    """What one asyncssh login may ask a person: a key passphrase (keys the agent does not
    hold), keyboard-interactive answers (OTP) and a password -- each at most once, at the
    run's terminal with the server's prompt text. Without a terminal nothing is asked and
    :attr:`needed` says what would have been (the one-line error)."""

    def __init__(self, where: str, host: str, locked: list[str], certs: list[str]):
        self.where = where
        self.host = host
        self.locked = list(locked)
        self.certs = certs
        self.term = ssh_login.terminal()
        self.needed = ""
        self.answered = ""
        self._kbdint_tries = 0
        self._password_tries = 0

    def _need(self, what: str, *, key: str | None = None) -> None:
        self.needed = self.needed or ssh_login.needs_person(
            self.where, what, key=key, host=self.host
        )

    async def locked_key(self) -> Any:
        import asyncssh

        while self.locked:
            path = self.locked.pop(0)
            phrase = self.term.passphrases.get(path)
            if phrase is None:
                if not self.term.enabled:
                    self._need("", key=path)
                    continue
                async with self.term.use():
                    phrase = await self.term.ask(f"Enter passphrase for key '{path}': ")
                self.answered = f"the passphrase of {path} given at the terminal was not accepted"
            try:
                keys = asyncssh.load_keypairs(path, phrase, self.certs)
            except (ValueError, OSError) as exc:
                self.answered = f"cannot use key {path} ({exc})"
                continue
            self.term.passphrases[path] = phrase
            return keys
        return None

    def kbdint_requested(self) -> str | None:
        if self.term.enabled and self._kbdint_tries >= 1:
            return None  # asked once this run: no second round of prompts
        self._kbdint_tries += 1
        return ""  # let the server pick the submethods (PAM)

    async def challenge(
        self, name: str, instructions: str, prompts: list[tuple[str, bool]]
    ) -> list[str] | None:
        if not prompts:
            return []
        if not self.term.enabled:
            self._need(f"keyboard-interactive ({prompts[0][0].strip()!r})")
            return None
        async with self.term.use():
            header = "\n".join(t for t in (name, instructions) if t)
            answers = []
            for i, (prompt, echo) in enumerate(prompts):
                text = f"{header}\n{prompt}" if header and i == 0 else prompt
                answers.append(await self.term.ask(text, echo=echo))
        self.answered = "the answer given at the terminal was not accepted"
        return answers

    async def password(self) -> str | None:
        if not self.term.enabled:
            self._need("a password")
            return None
        if self._password_tries >= 1:
            return None
        self._password_tries += 1
        async with self.term.use():
            answer = await self.term.ask(f"{self.host}'s password: ")
        self.answered = "the password given at the terminal was not accepted"
        return answer


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


def _read_known(paths: list[Path]) -> str:
    texts = []
    for path in paths:
        with contextlib.suppress(OSError):
            texts.append(path.read_text(errors="replace"))
    return "\n".join(texts)


def _client_keys(
    target: Remote, settings: ssh_login.SshSettings, where: str
) -> tuple[list[Any], list[str], list[str]]:
    """(keys loaded now, encrypted key files for later, certificate files): the identity
    files OpenSSH would offer (``key_path`` first), as OpenSSH skips unreadable defaults."""
    import asyncssh

    if target.key_path:
        _check_key_file(target.key_path, where)
    paths = list(settings.identity_files) or ([target.key_path] if target.key_path else [])
    certs = [c for c in settings.certificate_files if os.path.isfile(c)]
    loaded: list[Any] = []
    locked: list[str] = []
    for path in dict.fromkeys(paths):
        if not os.path.isfile(path):
            continue
        try:
            loaded.extend(asyncssh.load_keypairs(path, None, certs))
        except (ValueError, OSError) as exc:
            if "assphrase" in str(exc):
                locked.append(path)
            elif path == target.key_path:
                raise TransferError(f"{where}: cannot read key_path {path}: {exc}") from None
    return loaded, locked, certs


def _agent_path(settings: ssh_login.SshSettings) -> str | None:
    agent = settings.identity_agent
    if agent is None:
        return os.environ.get("SSH_AUTH_SOCK") or None
    return None if agent == "none" else agent


def _agent_identities(settings: ssh_login.SshSettings) -> list[str] | None:
    """With ``IdentitiesOnly``: the agent keys to offer (those of the identity files)."""
    if not settings.identities_only:
        return None
    pubs = [f"{p}.pub" for p in settings.identity_files if os.path.isfile(f"{p}.pub")]
    return pubs + [c for c in settings.certificate_files if os.path.isfile(c)] or None


def _jump_hops(target: Remote, jump: str) -> list[Remote]:
    """The ``ProxyJump`` hosts (``[user@]host[:port]``, comma-separated) as targets."""
    hops = []
    for i, spec in enumerate(h.strip() for h in jump.split(",") if h.strip()):
        user, _, rest = spec.rpartition("@")
        host, port = rest, None
        m = re.fullmatch(r"\[?([^\]]+?)\]?:(\d+)", rest)
        if m:
            host, port = m.group(1), int(m.group(2))
        hops.append(
            Remote(
                name=f"{target.name} (jump host {i + 1})",
                host=host,
                port=port,
                user=user or None,
                ssh_config=target.ssh_config,
                accept_new_host_key=target.accept_new_host_key,
                connect_timeout=target.connect_timeout,
                io_timeout=target.io_timeout,
            )
        )
    return hops


async def connect(
    target: Remote, settings: ssh_login.SshSettings | None = None
) -> asyncssh.SSHClientConnection:
    """Log in to ``target`` as the user's OpenSSH would (host, user, port, keys, agent,
    certificates, jump hosts from the ssh config) with xfer's host-key policy; on a
    terminal, passphrases and keyboard-interactive/password answers are asked for.
    Failures become one TransferError line."""
    if settings is None:
        settings = await asyncio.to_thread(ssh_login.openssh_settings, target)
    hops: list[asyncssh.SSHClientConnection] = []
    try:
        for hop in _jump_hops(target, settings.proxy_jump or ""):
            hop_settings = await asyncio.to_thread(ssh_login.openssh_settings, hop)
            hop_settings = dataclasses.replace(hop_settings, proxy_jump=None)
            hops.append(await _connect_one(hop, hop_settings, hops[-1] if hops else None))
        conn = await _connect_one(target, settings, hops[-1] if hops else None)
    except BaseException:
        for hop_conn in hops:
            hop_conn.close()
        raise
    if hops:  # the jump connections close with the cluster's
        task = asyncio.ensure_future(_close_hops_after(conn, hops))
        _HOP_TASKS.add(task)
        task.add_done_callback(_HOP_TASKS.discard)
    return conn


_HOP_TASKS: set[asyncio.Future[None]] = set()


async def _close_hops_after(
    conn: asyncssh.SSHClientConnection, hops: list[asyncssh.SSHClientConnection]
) -> None:
    with contextlib.suppress(Exception):
        await conn.wait_closed()
    for hop in reversed(hops):
        hop.close()


async def _connect_one(
    target: Remote,
    settings: ssh_login.SshSettings,
    tunnel: asyncssh.SSHClientConnection | None,
) -> asyncssh.SSHClientConnection:
    import asyncssh

    where = f"{target.name} ({target.label})"
    users, globals_ = ssh_login.known_hosts_files(target, settings)
    kh_path = users[0]
    known = asyncssh.import_known_hosts(_read_known([*users, *globals_]))
    loaded, locked, certs = await asyncio.to_thread(_client_keys, target, settings, where)
    login = _Login(where, target.host, locked, certs)
    policy = _client_class()(known, ssh_login.accept_new_host_key(target, settings), login)
    resolved = bool(settings.options)  # ssh -G answered: give asyncssh its values
    kwargs: dict[str, Any] = {
        "known_hosts": known,
        "config": [],
        "connect_timeout": target.connect_timeout,
        "login_timeout": target.connect_timeout,
        "client_factory": lambda: policy,
        "client_keys": loaded,
        "ignore_encrypted": True,
        "agent_path": _agent_path(settings),
        "agent_identities": _agent_identities(settings),
        "kbdint_auth": True,
        "password_auth": True,
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
    if tunnel is not None:
        kwargs["tunnel"] = tunnel
    host = settings.hostname if resolved else target.host
    if not resolved:
        # no OpenSSH here: asyncssh reads the ssh config itself
        config = target.ssh_config or os.path.join(ssh_login.account_home(), ".ssh", "config")
        kwargs["config"] = [config] if os.path.isfile(config) else []
        del kwargs["client_keys"], kwargs["agent_identities"]
        if target.key_path:
            kwargs["client_keys"] = loaded
    port = settings.port or target.port
    user = settings.user or target.user
    if port:
        kwargs["port"] = port
    if user:
        kwargs["username"] = user
    try:
        conn = await asyncssh.connect(host, **kwargs)
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
        if login.needed:
            raise TransferError(login.needed) from None
        if login.answered:
            raise TransferError(
                f"{where}: login refused: {exc.reason} ({login.answered})"
            ) from None
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
        settings = await asyncio.to_thread(ssh_login.openssh_settings, target)
        if await asyncio.to_thread(ssh_login.user_master, target, settings):
            # the user's OpenSSH master is logged in (e.g. 2FA): ride on it, no new login
            from xfer_backends.sftp_openssh import OpenSsh

            openssh = OpenSsh(target, settings)
            sftp = await openssh.start_sftp()
            _quiet_orphaned_disconnects(asyncio.get_running_loop())
            return SftpSession(None, sftp, target, options, openssh=openssh)
        conn = await connect(target, settings)
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

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            self.sftp.exit()
        if self.openssh is not None:
            await self.openssh.close()
        if self.conn is not None:
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
            await self._compare(plan)
        self._report(plan, src)
        if not job.dry_run:
            await self._apply(plan, src, dst)
        if self.failures:
            self.result.failed = len(self.failures)
            self.result.error = (
                f"{job.cluster}/{job.alias}: {len(self.failures)} failed, first: {self.failures[0]}"
            )

    async def _compare(self, plan: Plan) -> None:
        digests = await asyncio.gather(
            *(asyncio.gather(self.src.digest(p), self.dst.digest(p)) for p in plan.compare)
        )
        for path, (a, b) in zip(plan.compare, digests, strict=True):
            if a != b:
                plan.send.append(path)
            else:
                plan.skipped += 1

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
        for path in plan.replace:
            await dst_tree.remove(path, dst[path].kind, tree=True)
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
        for path in plan.delete:
            await self._attempt(path, self._delete(path, dst[path]))
        for path in plan.dir_attrs:
            await self._attempt(path, dst_tree.set_attrs(path, src[path]))

    async def _attempt(self, path: str, op: Any) -> None:
        import asyncssh

        try:
            await op
        except (asyncssh.DisconnectError, asyncssh.SFTPConnectionLost, BrokenPipeError):
            raise  # the whole pair fails with one line (``transfer``)
        except (asyncssh.SFTPError, OSError) as exc:
            self.failures.append(f"{path}: {_describe(exc)}")

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

    async def _delete(self, path: str, entry: Entry) -> None:
        import asyncssh

        try:
            await self.dst.remove(path, entry.kind)
        except (OSError, asyncssh.SFTPError) as exc:
            if entry.kind != "dir":
                raise
            # excluded entries inside are kept, as rsync keeps them
            self.progress.message(f"cannot delete non-empty directory {path}: {_describe(exc)}")


@hookimpl
def register_transfer_backends(register: Callable[[TransferBackend], None]) -> None:
    """Register the builtin sftp backend."""
    register(SftpBackend())
