"""Logging in to a cluster the way its user does, shared by the rsync and sftp backends.

- **The user's ssh configuration.** :func:`openssh_settings` asks OpenSSH itself
  (``ssh -G``) what it would use for a cluster's ``host``: ``Include``, ``Match``,
  ``Host`` aliases, ``HostName``/``User``/``Port``, ``IdentityFile``,
  ``CertificateFile``, ``IdentityAgent``, ``ProxyJump``, ``ControlPath``, known_hosts
  files, all with ``~`` expanded to the account's home as OpenSSH does (not ``$HOME``).
  rsync runs that same ``ssh`` and adds only xfer's own options (:func:`openssh_argv`);
  sftp gives the resolved values to asyncssh, or -- when the user already has an
  OpenSSH master connection open (``ControlMaster``, e.g. after a 2FA login) -- runs
  its SFTP session through the user's ``ssh`` (:class:`OpenSsh`).
- **One host-key policy, one known_hosts lookup** (:func:`known_hosts_files`,
  :func:`accept_new_host_key`): the config's ``known_hosts``, else the ssh config's
  ``UserKnownHostsFile`` (first file: where new keys are remembered), plus
  ``GlobalKnownHostsFile`` for reading. A changed key is always refused; an unknown one
  is accepted and remembered with ``--accept-new-host-key`` or the user's own
  ``StrictHostKeyChecking accept-new`` (or ``no``).
- **A person at a terminal** (:class:`Terminal`): a key passphrase, a keyboard-interactive
  (OTP) answer or a password is asked for on the terminal, with the prompt text the server
  sends, once per cluster per run, one cluster at a time, the live display paused. Without
  a terminal, or under ``--json``/``--batch``, nothing is asked: the login fails at once with
  one line saying what to do (:func:`needs_person`).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shlex
import shutil
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, asynccontextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from xfer_core.errors import TransferError
from xfer_core.sync.backend import KEEPALIVE_COUNT_MAX, Remote

if TYPE_CHECKING:
    import asyncio  # imported where used: `xfer sync` starts its login before asyncio is loaded
    from collections.abc import AsyncIterator

#: Where the login patterns are explained (named in the one-line errors).
LOGIN_DOC = "docs/login.md"


def account_home() -> str:
    """The account's home directory, as OpenSSH finds it (the password database, not ``$HOME``)."""
    try:
        return pwd.getpwuid(os.getuid()).pw_dir
    except KeyError:
        return os.path.expanduser("~")


def _expand(path: str) -> str:
    """``~``/``%d`` in a path of ``ssh -G``'s output, expanded as OpenSSH does."""
    home = account_home()
    if path == "~" or path.startswith("~/"):
        path = home + path[1:]
    return path.replace("%d", home)


@dataclass(frozen=True)
class SshSettings:
    """What OpenSSH would use to reach one host (``ssh -G``)."""

    hostname: str
    user: str | None = None
    port: int | None = None
    #: Identity files in OpenSSH's order (the defaults too), expanded; may not exist.
    identity_files: tuple[str, ...] = ()
    certificate_files: tuple[str, ...] = ()
    identities_only: bool = False
    #: ``IdentityAgent``: a socket path, ``none`` (no agent) or None (``$SSH_AUTH_SOCK``).
    identity_agent: str | None = None
    user_known_hosts: tuple[str, ...] = ()
    global_known_hosts: tuple[str, ...] = ()
    strict_host_key_checking: str = "ask"
    control_master: str = "false"
    control_path: str | None = None
    proxy_jump: str | None = None
    #: The raw ``ssh -G`` options (lower-case keys, every value of repeated keys).
    options: dict[str, list[str]] = field(default_factory=dict, compare=False)


def _explicit_options(target: Remote) -> list[str]:
    """ssh options for what the cluster's config entry sets itself (the rest: ssh config)."""
    argv: list[str] = []
    if target.ssh_config:
        argv += ["-F", target.ssh_config]
    if target.port:
        argv += ["-p", str(target.port)]
    if target.user:
        argv += ["-l", target.user]
    if target.key_path:
        argv += ["-i", target.key_path]
    if target.known_hosts:
        argv += ["-o", f"UserKnownHostsFile={target.known_hosts}"]
    return argv


def ssh_g_argv(target: Remote) -> list[str]:
    """The ``ssh -G`` command line that shows what OpenSSH would use for ``target``."""
    return ["ssh", "-G", *_explicit_options(target), "--", target.host]


def parse_ssh_g(text: str) -> SshSettings:
    """:class:`SshSettings` from the output of ``ssh -G``."""
    opts: dict[str, list[str]] = {}
    for line in text.splitlines():
        key, _, value = line.strip().partition(" ")
        if key:
            opts.setdefault(key.lower(), []).append(value.strip())

    def one(key: str) -> str | None:
        values = opts.get(key)
        return values[0] if values else None

    def files(key: str) -> tuple[str, ...]:
        return tuple(_expand(p) for v in opts.get(key, ()) for p in v.split() if p != "none")

    port = one("port")
    agent = one("identityagent")
    jump = one("proxyjump")
    control = one("controlpath")
    return SshSettings(
        hostname=one("hostname") or "",
        user=one("user"),
        port=int(port) if port and port.isdigit() else None,
        identity_files=tuple(_expand(v) for v in opts.get("identityfile", ())),
        certificate_files=tuple(_expand(v) for v in opts.get("certificatefile", ())),
        identities_only=one("identitiesonly") == "yes",
        identity_agent=None if agent in (None, "SSH_AUTH_SOCK") else _expand(agent),
        user_known_hosts=files("userknownhostsfile"),
        global_known_hosts=files("globalknownhostsfile"),
        strict_host_key_checking=(one("stricthostkeychecking") or "ask").lower(),
        control_master=(one("controlmaster") or "false").lower(),
        control_path=_expand(control) if control and control != "none" else None,
        proxy_jump=jump if jump and jump != "none" else None,
        options=opts,
    )


def _default_settings(target: Remote) -> SshSettings:
    """Without OpenSSH installed (sftp only): asyncssh's reading of the ssh config."""
    import asyncssh

    home = account_home()
    config = target.ssh_config or os.path.join(home, ".ssh", "config")
    known: tuple[str, ...] = ()
    with contextlib.suppress(Exception):
        options = asyncssh.SSHClientConnectionOptions(
            host=target.host,
            config=[config] if os.path.isfile(config) else [],
            known_hosts=(),
        )
        if isinstance(options.known_hosts, list):
            known = tuple(os.path.expanduser(str(p)) for p in options.known_hosts)
    ssh_dir = os.path.join(home, ".ssh")
    return SshSettings(
        hostname=target.host,
        user=target.user,
        port=target.port,
        user_known_hosts=known
        or (os.path.join(ssh_dir, "known_hosts"), os.path.join(ssh_dir, "known_hosts2")),
        global_known_hosts=("/etc/ssh/ssh_known_hosts", "/etc/ssh/ssh_known_hosts2"),
    )


def openssh_settings(target: Remote) -> SshSettings:
    """What the user's OpenSSH would use to reach ``target`` (``ssh -G``); one-line error if
    the ssh config is broken."""
    if shutil.which("ssh") is None:
        return _default_settings(target)
    try:
        res = subprocess.run(
            ssh_g_argv(target),
            capture_output=True,
            text=True,
            timeout=30,
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise TransferError(f"{target.name}: cannot read the ssh config: {exc}") from None
    if res.returncode != 0:
        raise TransferError(
            f"{target.name}: cannot read the ssh config: {_last_line(res.stderr) or 'ssh -G failed'}"
        )
    return parse_ssh_g(res.stdout)


# -- host keys -----------------------------------------------------------------------
def known_hosts_files(
    target: Remote, settings: SshSettings | None = None
) -> tuple[list[Path], list[Path]]:
    """(user files, global files) checked for host keys; new keys go to the first user file.

    The config's ``known_hosts`` wins; else the ssh config's ``UserKnownHostsFile``
    (``~`` is the account's home, as for OpenSSH), else ``~/.ssh/known_hosts``.
    """
    settings = settings or openssh_settings(target)
    if target.known_hosts:
        user = [Path(target.known_hosts)]
    else:
        user = [Path(p) for p in settings.user_known_hosts] or [
            Path(account_home()) / ".ssh" / "known_hosts"
        ]
    return user, [Path(p) for p in settings.global_known_hosts]


def known_hosts_path(target: Remote, settings: SshSettings | None = None) -> Path:
    """The known_hosts file new host keys are remembered in (the first user file)."""
    return known_hosts_files(target, settings)[0][0]


def accept_new_host_key(target: Remote, settings: SshSettings) -> bool:
    """Whether an unknown host key is accepted (and remembered): ``--accept-new-host-key``
    or the user's ``StrictHostKeyChecking accept-new``/``no``. A changed key never is."""
    return target.accept_new_host_key or settings.strict_host_key_checking in (
        "accept-new",
        "false",
        "no",
        "off",
    )


def prepare_known_hosts(target: Remote, settings: SshSettings) -> None:
    """When unknown keys are accepted, create the directory of the file they are remembered
    in (0700), as the sftp backend does: OpenSSH would not, and would not remember them."""
    if not accept_new_host_key(target, settings):
        return
    with contextlib.suppress(OSError):
        known_hosts_path(target, settings).parent.mkdir(parents=True, exist_ok=True, mode=0o700)


# -- OpenSSH -------------------------------------------------------------------------
def openssh_argv(target: Remote, settings: SshSettings | None = None) -> list[str]:
    """The user's ``ssh`` plus only what xfer needs: the config's explicit values, the
    host-key policy, timeouts and keepalives. Everything else comes from the ssh config."""
    argv = ["ssh", *_explicit_options(target)]
    accept = target.accept_new_host_key or (
        settings is not None and accept_new_host_key(target, settings)
    )
    return [
        *argv,
        "-o",
        f"StrictHostKeyChecking={'accept-new' if accept else 'yes'}",
        "-o",
        f"ConnectTimeout={max(1, round(target.connect_timeout))}",
        # a dropped link is noticed after io_timeout s of silence instead of TCP's ~15 min
        "-o",
        f"ServerAliveInterval={max(1, round(target.keepalive_interval))}",
        "-o",
        f"ServerAliveCountMax={KEEPALIVE_COUNT_MAX}",
    ]


def master_alive(argv: list[str], host: str, control_path: str | None = None) -> bool:
    """Whether an OpenSSH master connection answers (``ssh -O check``) for ``host``."""
    extra = ["-o", f"ControlPath={control_path}"] if control_path else []
    with contextlib.suppress(OSError, subprocess.TimeoutExpired):
        res = subprocess.run(
            [*argv, *extra, "-O", "check", "--", host],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=30,
        )
        return res.returncode == 0
    return False


def user_master(target: Remote, settings: SshSettings) -> str | None:
    """The ControlPath of the user's own OpenSSH master connection to ``target`` when one
    is open (e.g. after a 2FA login), else None."""
    path = settings.control_path
    if not path or not os.path.exists(path):
        return None
    return path if master_alive(openssh_argv(target), target.host) else None


def own_master_options(control: str) -> list[str]:
    """ssh options that open (or reuse) xfer's own master connection at ``control``."""
    return [
        "-o",
        "ControlMaster=auto",
        "-o",
        f"ControlPath={control}",
        "-o",
        "ControlPersist=120",
    ]


def master_login_argv(base: list[str], control: str, host: str, *, batch: bool) -> list[str]:
    """The login that opens xfer's master at ``control``: it runs no remote command and goes
    to the background once logged in (``-f -N``). ``batch``: never prompt (``BatchMode``);
    else ssh asks on the terminal (/dev/tty) itself, with the server's prompt, once."""
    mode = ["-o", "BatchMode=yes"] if batch else ["-o", "NumberOfPasswordPrompts=1"]
    return [*base, *own_master_options(control), *mode, "-f", "-N", "--", host]


def stop_master(control: str, host: str, directory: str) -> None:
    """Stop xfer's master at ``control`` (if it runs) and remove ``directory`` (its
    ControlPath's), in the background: nobody waits for it."""
    if not os.path.exists(control):
        shutil.rmtree(directory, ignore_errors=True)
        return
    stop = shlex.join(["ssh", "-o", f"ControlPath={control}", "-O", "exit", "--", host])
    with contextlib.suppress(OSError):
        subprocess.Popen(
            ["sh", "-c", f"{stop}; rm -rf {shlex.quote(directory)}"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )


def explain_ssh_failure(stderr: str, target: Remote, who: str | None = None) -> str:
    """One line saying why ssh could not reach ``target`` (from ssh's stderr)."""
    text = stderr.strip()
    where = f"{who or target.name} ({target.label})"
    if "REMOTE HOST IDENTIFICATION HAS CHANGED" in text or "Host key for" in text:
        return (
            f"{where}: host key does not match known_hosts (possible man-in-the-middle); "
            "if the server's key really changed, remove the old line with `ssh-keygen -R`"
        )
    if "Host key verification failed" in text or ("No " in text and "host key is known" in text):
        return (
            f"{where}: host key is unknown; add it to known_hosts "
            "or re-run with --accept-new-host-key"
        )
    if "Permission denied" in text:
        return f"{where}: login refused (check user and key_path): {_last_line(text)}"
    for needle in ("Connection refused", "timed out", "Could not resolve", "No route to host"):
        if needle in text:
            return f"{where}: unreachable: {_last_line(text)}"
    return f"{where}: ssh failed: {_last_line(text) or 'no message'}"


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[-1] if lines else ""


def encrypted_keys(paths: tuple[str, ...] | list[str]) -> list[str]:
    """The existing private key files among ``paths`` that need a passphrase."""
    found = []
    for path in paths:
        try:
            head = Path(path).read_bytes()[:4096]
        except OSError:
            continue
        if b"ENCRYPTED" in head:  # PEM
            found.append(path)
        elif b"BEGIN OPENSSH PRIVATE KEY" in head:
            res = subprocess.run(
                ["ssh-keygen", "-y", "-P", "", "-f", path],
                capture_output=True,
                stdin=subprocess.DEVNULL,
                timeout=30,
                check=False,
            )
            if res.returncode != 0 and b"passphrase" in res.stderr.lower():
                found.append(path)
    return found


def needs_person(where: str, what: str, *, key: str | None = None, host: str = "") -> str:
    """The one-line error of a login that needs an answer nobody can give (no terminal,
    ``--json`` or ``--batch``), saying what to do instead."""
    why = "there is no terminal to ask on (no tty, --json or --batch)"
    if key is not None:
        return (
            f"{where}: key {key} needs its passphrase and {why}: load it into the agent "
            f"first (`ssh-add {key}`), or run xfer on a terminal"
        )
    return (
        f"{where}: the server asks for {what} and {why}: log in once with an OpenSSH "
        f"ControlMaster (ControlPath in your ssh config, then `ssh -fN {host}`; see "
        f"{LOGIN_DOC}), or run xfer on a terminal"
    )


# -- the terminal --------------------------------------------------------------------
def _read_tty(prompt: str, echo: bool) -> str:
    """Read one answer from the controlling terminal (never from a pipe)."""
    import getpass

    if not echo:
        return getpass.getpass(prompt)
    with open("/dev/tty", "r+") as tty:
        tty.write(prompt)
        tty.flush()
        return tty.readline().rstrip("\n")


class Terminal:
    """The person at the terminal, if there is one; shared by every cluster of a run.

    ``enabled``: prompts are allowed (a terminal, not ``--json``/``--batch``). ``pause``:
    a context manager that hides the live display while a prompt is on screen.
    """

    def __init__(
        self,
        *,
        enabled: bool = False,
        pause: Callable[[], AbstractContextManager[object]] | None = None,
        read: Callable[[str, bool], str] = _read_tty,
    ):
        self.enabled = enabled
        self._pause = pause or contextlib.nullcontext
        self._read = read
        self._lock: asyncio.Lock | None = None
        #: Passphrases given this run, per key file (asked once, used for every cluster).
        self.passphrases: dict[str, str] = {}

    @asynccontextmanager
    async def use(self) -> AsyncIterator[None]:
        """Exclusive use of the terminal (one cluster's login at a time), display paused."""
        import asyncio

        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            with self._pause():
                yield

    async def ask(self, prompt: str, *, echo: bool = False) -> str:
        """One answer typed at the terminal (call inside :meth:`use`).

        Read in a daemon thread: an interrupted prompt does not keep the process alive.
        """
        import asyncio

        loop = asyncio.get_running_loop()
        done: asyncio.Future[str] = loop.create_future()

        def run() -> None:
            try:
                answer = self._read(prompt, echo)
            except BaseException as exc:  # EOF, Ctrl-D: no answer
                loop.call_soon_threadsafe(_settle, done, None, exc)
            else:
                loop.call_soon_threadsafe(_settle, done, answer, None)

        saved = _tty_state()
        threading.Thread(target=run, name="xfer-prompt", daemon=True).start()
        try:
            return await done
        except asyncio.CancelledError:
            _restore_tty(saved)  # Ctrl-C at the prompt: echo back on, as getpass would
            raise


def _tty_state() -> list[Any] | None:
    """The terminal's settings (echo on), to put back if a prompt is interrupted."""
    try:
        import termios

        with open("/dev/tty") as tty:
            return list(termios.tcgetattr(tty.fileno()))
    except (OSError, ImportError):
        return None


def _restore_tty(state: list[Any] | None) -> None:
    if state is None:
        return
    with contextlib.suppress(OSError, ImportError):
        import termios

        with open("/dev/tty") as tty:
            termios.tcsetattr(tty.fileno(), termios.TCSADRAIN, state)


def _settle(fut: asyncio.Future[str], value: str | None, exc: BaseException | None) -> None:
    if fut.done():
        return
    if exc is not None:
        fut.set_exception(TransferError(f"no answer at the terminal ({type(exc).__name__})"))
    else:
        fut.set_result(value or "")


_TERMINAL: ContextVar[Terminal | None] = ContextVar("xfer_terminal", default=None)


def terminal() -> Terminal:
    """The terminal of the current run (prompts disabled unless a run enabled them)."""
    term = _TERMINAL.get()
    if term is None:
        term = Terminal()
        _TERMINAL.set(term)
    return term


@contextlib.contextmanager
def use_terminal(term: Terminal) -> Iterator[Terminal]:
    """Make ``term`` the terminal of the run in this context (the sync engine does)."""
    token = _TERMINAL.set(term)
    try:
        yield term
    finally:
        _TERMINAL.reset(token)


def is_interactive(*, json: bool = False, batch: bool = False) -> bool:
    """Whether a person can answer prompts: stdin and stderr are a terminal, no
    ``--json``/``--batch``."""
    if json or batch:
        return False
    try:
        return sys.stdin.isatty() and sys.stderr.isatty() and os.path.exists("/dev/tty")
    except (AttributeError, ValueError):
        return False
