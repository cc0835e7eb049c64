"""How the sftp backend logs in with asyncssh, the way the user's OpenSSH would.

The values come from :func:`xfer_core.sync.ssh_login.openssh_settings` (``ssh -G``): host,
user, port, identity files (``key_path`` first), certificates, the agent (kept when
``key_path`` is set: an encrypted key held by the agent works), and ``ProxyJump`` hops, each
logged in here with the same host-key policy. Keys the agent does not hold and that need a
passphrase, keyboard-interactive answers (OTP) and passwords are asked for at the run's
terminal (:class:`~xfer_core.sync.ssh_login.Terminal`) -- at most once -- or, without one,
the login fails with one line saying what to do.

Host keys: a known host must present its known key (a different key is always refused); an
unknown host is refused unless accepted (``--accept-new-host-key`` or the ssh config's
``StrictHostKeyChecking accept-new``), which appends its key to the first known_hosts file,
like OpenSSH's ``accept-new``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import re
import stat
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from xfer_core.errors import TransferError
from xfer_core.sync import ssh_login
from xfer_core.sync.backend import KEEPALIVE_COUNT_MAX, Remote

#: Each channel's receive window: how much a server may send before xfer reads it.
RECEIVE_WINDOW = 16 * 1024 * 1024
#: The largest SSH packet xfer accepts on a channel.
RECEIVE_PACKET = 256 * 1024

if TYPE_CHECKING:
    import asyncssh


def import_asyncssh() -> None:
    """Import asyncssh, without the slow part of its search for optional libraries.

    At import, asyncssh looks for liboqs (post-quantum key exchange) and libnettle (UMAC)
    with ``ctypes.util.find_library``, which on Linux runs ``ldconfig -p``, then ``gcc`` and
    ``ld`` for a name it does not find: ~50 ms for liboqs's two names, on every run. A
    library is loaded by name (dlopen), so without ``LD_LIBRARY_PATH`` it loads from the
    linker's cache, which ``ldconfig -p`` lists: that alone answers here (a library in a
    default directory that ldconfig has not indexed yet is done without, as if absent).
    With ``LD_LIBRARY_PATH`` or ``LIBRARY_PATH`` set, the full search runs.
    """
    if "asyncssh" in sys.modules:
        return
    import ctypes.util

    real = ctypes.util.find_library
    cached = getattr(ctypes.util, "_findSoname_ldconfig", None)

    def find_library(name: str) -> str | None:
        if cached is None:
            return real(name)
        found: str | None = cached(name)
        return found

    full_search = os.environ.get("LD_LIBRARY_PATH") or os.environ.get("LIBRARY_PATH")
    if sys.platform.startswith("linux") and not full_search:
        ctypes.util.find_library = find_library
    try:
        import asyncssh  # noqa: F401
    finally:
        ctypes.util.find_library = real


#: xfer's cipher order: AES-GCM costs asyncssh one cryptography call per packet
#: (chacha20-poly1305: three), and xfer sends its channel data itself (``sftp._lean_packets``).
PREFERRED_CIPHERS = (
    "aes128-gcm@openssh.com",
    "aes256-gcm@openssh.com",
    "chacha20-poly1305@openssh.com",
    "aes128-ctr",
    "aes256-ctr",
)
#: OpenSSH's default ``Ciphers``, which ``ssh -G`` prints when the ssh config sets none.
_OPENSSH_CIPHERS = (
    "chacha20-poly1305@openssh.com,aes128-ctr,aes192-ctr,aes256-ctr,"
    "aes128-gcm@openssh.com,aes256-gcm@openssh.com"
)


def ciphers(settings: ssh_login.SshSettings) -> list[str]:
    """The ciphers to offer, in order: the ssh config's ``Ciphers`` when it sets them (those
    asyncssh has; all of them if it has none, for asyncssh to refuse), else xfer's order."""
    listed = (settings.options.get("ciphers") or [""])[0]
    if not listed or listed == _OPENSSH_CIPHERS:
        return list(PREFERRED_CIPHERS)
    from asyncssh.encryption import get_encryption_algs

    known = {alg.decode() for alg in get_encryption_algs()}
    wanted = [c for c in listed.split(",") if c]
    return [c for c in wanted if c in known] or wanted


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
    target: Remote, settings: ssh_login.SshSettings | None = None, *, compress: bool = False
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
        conn = await _connect_one(target, settings, hops[-1] if hops else None, compress=compress)
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
    *,
    compress: bool = False,
) -> asyncssh.SSHClientConnection:
    import_asyncssh()
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
        # what the server may send ahead on each channel (asyncssh's default: 2 MiB, which
        # caps a fetch at 2 MiB per round trip)
        "window": RECEIVE_WINDOW,
        # and in packets of up to 256 KiB (asyncssh's default: 32 KiB): a fetch costs a
        # quarter of the packets (OpenSSH's sshd sends what fits, up to its own limit)
        "max_pktsize": RECEIVE_PACKET,
        "encryption_algs": ciphers(settings),
    }
    if compress:
        kwargs["compression_algs"] = ["zlib@openssh.com", "zlib", "none"]
    if tunnel is not None:
        kwargs["tunnel"] = tunnel
    # an IPv6 address is bracketed in the config, bare for asyncssh
    host = settings.hostname if resolved else target.host.removeprefix("[").removesuffix("]")
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
    except TransferError as exc:  # e.g. no answer at the terminal (end of input)
        raise TransferError(f"{where}: {exc.message}") from None
    if policy.new_key is not None:
        _remember(kh_path, policy.new_host, policy.new_key)
    return conn


def _remember(path: Path, pattern: str, key: asyncssh.SSHKey) -> None:
    """Append ``pattern key`` to the known_hosts file (created 0600 with its directory)."""
    line = key.export_public_key("openssh").decode().split()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    with os.fdopen(fd, "a") as fh:
        fh.write(f"{pattern} {line[0]} {line[1]}\n")
