"""The ``rsync`` transfer backend: the local ``rsync`` over OpenSSH.

One ssh master connection per cluster carries the remote ``$VAR``/``~user``
expansion, the ``mkdir -p`` fallback and every rsync of that cluster: the user's
own when their ssh config's ``ControlPath`` has one open (e.g. after a 2FA login),
else xfer's (``ControlMaster=auto``), opened by one login before the first pair --
on a terminal that login may ask for a passphrase or one-time password, once
(:mod:`xfer_core.sync.ssh_login`). ``xfer sync``/``fetch`` start that login (never
prompting) while the CLI is still starting up, and the session takes it over when its ssh
command line is the same (:mod:`xfer_core.sync.early_login`). That login runs no remote
command (``ssh -f -N``: it goes to the background once logged in), and a remote path ``~/x`` is passed as
``x`` (rsync starts in the login directory, the home): between xfer's start and the
first rsync there is one ssh handshake, as for a plain ``rsync -a`` (docs/bench-sync.md). ssh runs as the user configured it, plus only
xfer's host-key policy, timeouts and keepalives. Login problems (unreachable,
refused key, unknown or changed host key, nobody to answer a prompt) fail the
cluster's pairs with one line. rsync runs with ``-rlpt --update``: ``rsync -a`` without
owner, group and devices, which mean nothing across two accounts on two
machines (and which the sftp backend could not match).

Old rsyncs (macOS ships 2.6.9 or openrsync) are detected from ``rsync
--version`` and only given flags they know: without ``--mkpath`` the remote
directory is made with ``ssh mkdir -p``; without ``--protect-args`` the remote
path is shell-quoted; without ``--info=progress2`` progress advances per file.
``XFER_RSYNC_EMULATE=2.6.9`` makes xfer treat the local rsync as that version
(how the tests cover the old-rsync paths with a new binary).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shlex
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass

from xfer_core.errors import ConfigError, TransferError
from xfer_core.hookspecs import hookimpl
from xfer_core.plugin import AVAILABLE, Availability
from xfer_core.sync import early_login, remote_path, ssh_login
from xfer_core.sync.backend import (
    PairJob,
    PairResult,
    ProgressSink,
    Remote,
    TransferBackend,
    TransferOptions,
    TransferSession,
)
from xfer_core.sync.excludes import rsync_exclude_arg

#: rsync exits that can mean the connection died under it (socket/protocol I/O, ssh).
_CONNECTION_EXITS = frozenset({10, 12, 255})

#: rsync exit codes (man rsync, EXIT VALUES) → what to tell the user.
RSYNC_EXIT = {
    1: "rsync syntax or usage error",
    2: "rsync protocol incompatibility",
    3: "errors selecting input/output files or dirs",
    4: "requested action not supported by the remote rsync",
    5: "error starting the rsync protocol",
    10: "error in socket I/O",
    11: "error in file I/O",
    12: "error in the rsync protocol data stream (connection lost?)",
    13: "errors with program diagnostics",
    14: "error in IPC code",
    20: "interrupted",
    21: "some error returned by waitpid()",
    22: "error allocating memory",
    23: "partial transfer due to error",
    24: "partial transfer: some source files vanished",
    25: "the --max-delete limit stopped deletions",
    30: "timeout in data send/receive",
    35: "timeout waiting for the daemon connection",
    255: "ssh failed",
}

_MARK = b"XFER:"
_OUT_FORMAT = "XFER:%i:%l:%n"
_PROGRESS2 = re.compile(rb"^\s*([\d,]+)\s+\d+%")
_STATS_FILES = re.compile(rb"Number of files: [\d,]+ \(reg: ([\d,]+)")
#: Symlinks among them ("..., link: N"; absent when there are none).
_STATS_LINKS = re.compile(rb"Number of files: [\d,]+ \(.*\blink: ([\d,]+)")
_STATS_SENT = re.compile(rb"Number of regular files transferred: ([\d,]+)")
_ESCAPE = re.compile(rb"\\#([0-7]{3})")


@dataclass(frozen=True)
class RsyncCaps:
    """What the local rsync can do, from ``rsync --version``."""

    version: tuple[int, int, int]
    #: openrsync (macOS 15+) speaks protocol 29 and lacks most long options.
    openrsync: bool = False
    #: The real binary's version when emulating an older one (needs ``--old-args``).
    real_version: tuple[int, int, int] | None = None

    @property
    def mkpath(self) -> bool:
        return not self.openrsync and self.version >= (3, 2, 3)

    @property
    def protect_args(self) -> bool:
        return not self.openrsync and self.version >= (3, 0, 0)

    @property
    def progress2(self) -> bool:
        return not self.openrsync and self.version >= (3, 1, 0)

    @property
    def eight_bit(self) -> bool:
        return not self.openrsync

    @property
    def old_args(self) -> bool:
        """Emulating a pre-3.2.4 rsync with a newer binary: turn its own arg escaping off."""
        real = self.real_version or self.version
        return not self.protect_args and not self.openrsync and real >= (3, 2, 4)


def parse_version(text: str) -> RsyncCaps:
    """Capabilities from the first lines of ``rsync --version`` (rsync or openrsync)."""
    if "openrsync" in text:
        return RsyncCaps((2, 6, 9), openrsync=True)
    m = re.search(r"version\s+v?(\d+)\.(\d+)\.(\d+)", text)
    if m is None:
        return RsyncCaps((2, 6, 9))
    return RsyncCaps((int(m.group(1)), int(m.group(2)), int(m.group(3))))


def detect_caps(rsync: str, emulate: str | None = None) -> RsyncCaps:
    """Run ``rsync --version`` once; ``emulate`` (e.g. ``"2.6.9"``) pretends an older rsync."""
    res = subprocess.run([rsync, "--version"], capture_output=True, text=True, timeout=30)
    caps = parse_version(res.stdout + res.stderr)
    if emulate:
        fake = parse_version(f"version {emulate}")
        return RsyncCaps(fake.version, real_version=caps.version)
    return caps


def ssh_base(target: Remote) -> list[str]:
    """``ssh`` argv reaching ``target`` non-interactively with xfer's host-key policy."""
    return [*ssh_login.openssh_argv(target), "-o", "BatchMode=yes"]


def rsync_host(host: str) -> str:
    """``host`` as the HOST of rsync's ``HOST:PATH`` (an IPv6 address in brackets).

    The config refuses a host with '/' (rsync would take ``HOST:PATH`` for a local
    path) or starting with '-'; this refuses them too, for library callers.
    """
    bare = host.removeprefix("[").removesuffix("]")
    if not bare or bare.startswith("-") or "/" in bare or "@" in bare:
        raise ConfigError(f"host {host!r} cannot be used in rsync's HOST:PATH")
    return f"[{bare}]" if ":" in bare else bare


def explain_ssh_failure(stderr: str, target: Remote, who: str | None = None) -> str:
    """One line saying why ssh could not reach ``target`` (from ssh's stderr)."""
    return ssh_login.explain_ssh_failure(stderr, target, who)


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[-1] if lines else ""


def unescape_name(raw: bytes) -> str:
    """A name as rsync printed it (``\\#ooo`` escapes) back to the real name (fs-decoded)."""
    return os.fsdecode(_ESCAPE.sub(lambda m: bytes([int(m.group(1), 8)]), raw))


class RsyncBackend(TransferBackend):
    """rsync over ssh, one ssh master connection per cluster."""

    name = "rsync"
    description = "the local rsync over OpenSSH (-rlpt --update, ssh master connection per cluster)"
    #: where rsync is missing, sftp needs nothing but Python
    fallback = "sftp"

    def __init__(self, rsync: str | None = None, emulate: str | None = None):
        self._rsync = rsync
        self._emulate = emulate

    def _binary(self) -> str | None:
        return self._rsync or shutil.which("rsync")

    def check(self) -> Availability:
        if self._binary() is None:
            return Availability(False, "rsync: not on PATH")
        if shutil.which("ssh") is None:
            return Availability(False, "ssh: not on PATH")
        return AVAILABLE

    async def open(self, target: Remote, options: TransferOptions) -> TransferSession:
        rsync = self._binary()
        if rsync is None:
            raise TransferError("rsync: not on PATH")
        emulate = self._emulate or os.environ.get("XFER_RSYNC_EMULATE") or None
        try:  # before ssh sees the host: refused for library callers too (the config checks it)
            rsync_host(target.host)
        except ConfigError as exc:
            raise TransferError(f"{target.name}: {exc.message}") from None
        # `rsync --version` and `ssh -G` side by side: both are on the way to the first byte
        # (`ssh -G` already answered when `xfer sync` started this cluster's login early)
        settings = early_login.settings_for(target)
        if settings is not None:
            caps = await asyncio.to_thread(detect_caps, rsync, emulate)
        else:
            caps, settings = await asyncio.gather(
                asyncio.to_thread(detect_caps, rsync, emulate),
                asyncio.to_thread(ssh_login.openssh_settings, target),
            )
        session = RsyncSession(rsync, caps, target, settings, compress=options.compress)
        try:
            await session.login()
        except BaseException:
            await session.close()
            raise
        return session


class RsyncSession(TransferSession):
    """One cluster: an ssh master connection and the rsync runs that reuse it.

    The master is the user's own when one is open (``ControlPath`` of their ssh config,
    e.g. after a 2FA login), else xfer's, opened by :meth:`login` (on a terminal it may
    prompt, once). Every later ssh runs with ``BatchMode=yes`` over that master.
    """

    def __init__(
        self,
        rsync: str,
        caps: RsyncCaps,
        target: Remote,
        settings: ssh_login.SshSettings | None = None,
        *,
        compress: bool = False,
    ):
        self.rsync = rsync
        self.compress = compress
        self.caps = caps
        self.target = target
        #: The host as ssh takes it (an IPv6 address without brackets).
        self.host = target.host.removeprefix("[").removesuffix("]")
        self.settings = settings
        self._dir = tempfile.mkdtemp(prefix="xfer-ssh-")
        self._control = os.path.join(self._dir, "cm")
        #: False when the session rides on the user's own master (never stopped by xfer).
        self._own_master = True
        #: The master xfer started while the CLI was starting, when this session took it over.
        self._early: early_login.EarlyMaster | None = None
        self._base = ssh_login.openssh_argv(target, settings)
        self.ssh = [*self._base, *self._own_control(), "-o", "BatchMode=yes"]

    def _own_control(self) -> list[str]:
        return ssh_login.own_master_options(self._control)

    def _adopt(self, early: early_login.EarlyMaster) -> None:
        """Ride on the master the CLI started early for this very ssh command line."""
        shutil.rmtree(self._dir, ignore_errors=True)
        self._early, self._dir, self._control = early, early.directory, early.control
        self.ssh = [*self._base, *self._own_control(), "-o", "BatchMode=yes"]

    async def login(self) -> None:
        """Reach the cluster once before any pair: the user's open master, else log in
        and keep xfer's master (prompting at the terminal when a person is there)."""
        target, settings = self.target, self.settings
        if settings is None:
            return
        user = await asyncio.to_thread(ssh_login.user_master, target, settings)
        if user is not None:
            self._own_master = False
            self._control = user
            self.ssh = [*self._base, "-o", "BatchMode=yes"]
            return
        await asyncio.to_thread(ssh_login.prepare_known_hosts, target, settings)
        # `xfer sync` may have started this very login while Python was still starting up
        early = early_login.claim(self._base, target.host)
        if early is not None:
            self._adopt(early)
            rc, err = await asyncio.to_thread(early.wait)
        else:
            rc, err = await self._login_once(batch=True)
        if rc == 0:
            return
        term = ssh_login.terminal()
        if "Permission denied" in err and term.enabled:
            async with term.use():
                rc, err = await self._login_once(batch=False)
            if rc == 0:
                return
            raise TransferError(explain_ssh_failure(err, target))
        if settings.proxy_jump and "Permission denied" not in err:
            _, err = await self._login_once(batch=True, master=False)
        raise TransferError(await asyncio.to_thread(self._explain_login, err))

    async def _login_once(self, *, batch: bool, master: bool = True) -> tuple[int, str]:
        # The master logs in and goes to the background (-f -N): no remote command, so no
        # session round trips before the first rsync (two round trips less on a long link).
        argv = ssh_login.master_login_argv(self._base, self._control, self.target.host, batch=batch)
        if not master:
            # a plain connection, whose ProxyJump errors are not hidden (OpenSSH sends a
            # jump ssh's stderr to /dev/null under ControlPersist)
            argv = [*self._base, "-o", "ControlPath=none", "-o", "BatchMode=yes"]
            argv += ["--", self.target.host, "true"]
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        _, err = await proc.communicate()
        return proc.returncode or 0, err.decode(errors="replace")

    def _explain_login(self, stderr: str) -> str:
        """The one-line error of a login that failed without a terminal to prompt on."""
        target, settings = self.target, self.settings
        m = re.search(r"Permission denied \(([^)]*)\)", stderr)
        if m is None or settings is None:
            return explain_ssh_failure(stderr, target)
        methods = m.group(1).split(",")
        where = f"{target.name} ({target.label})"
        keys = [target.key_path] if target.key_path else list(settings.identity_files)
        locked = ssh_login.encrypted_keys(keys) if "publickey" in methods else []
        if locked:
            return ssh_login.needs_person(where, "", key=locked[0])
        if "keyboard-interactive" in methods or "password" in methods:
            what = "keyboard-interactive (e.g. a one-time password)"
            if "keyboard-interactive" not in methods:
                what = "a password"
            return ssh_login.needs_person(where, what, host=target.host)
        return explain_ssh_failure(stderr, target)

    async def _ssh(self, command: str) -> tuple[int, bytes, bytes]:
        proc = await asyncio.create_subprocess_exec(
            *self.ssh,
            "--",
            self.host,
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        out, err = await proc.communicate()
        if proc.returncode == 255:  # ssh itself failed (not the remote command)
            raise TransferError(explain_ssh_failure(err.decode(errors="replace"), self.target))
        return proc.returncode or 0, out, err

    async def resolve(self, path: str) -> str:
        """The remote path with ``~``/``$VAR`` expanded by the remote side."""
        if not remote_path.needs_expansion(path):
            return path
        if path == "~" or (path.startswith("~/") and "$" not in path):
            # the login directory is the home: no round trip to ask for $HOME
            return path[2:] or "."
        wanted = remote_path.refs(path)
        rc, out, err = await self._ssh(remote_path.query_command(wanted))
        if rc != 0:
            raise TransferError(
                f"{self.target.name}: cannot expand {path!r}: {_last_line(err.decode(errors='replace'))}"
            )
        return remote_path.substitute(path, wanted, out, cluster=self.target.name)

    async def transfer(self, job: PairJob, progress: ProgressSink) -> PairResult:
        started = time.monotonic()
        result = PairResult(job.cluster, job.alias, job.direction, dry_run=job.dry_run)
        try:
            await self._run(job, progress, result)
        except (TransferError, ConfigError) as exc:
            result.error = exc.message
        result.seconds = round(time.monotonic() - started, 3)
        return result

    async def _run(self, job: PairJob, progress: ProgressSink, result: PairResult) -> None:
        problem = job.local_problem()
        if problem:
            raise TransferError(problem)
        remote = await self.resolve(job.remote)
        if job.direction == "push":
            if not self.caps.mkpath and not job.dry_run:
                rc, _, err = await self._ssh("mkdir -p -- " + shlex.quote(remote))
                if rc != 0:
                    raise TransferError(
                        f"{job.cluster}/{job.alias}: cannot create {remote!r}: "
                        f"{_last_line(err.decode(errors='replace'))}"
                    )
        elif not job.dry_run:
            try:
                os.makedirs(job.local, exist_ok=True)
            except OSError as exc:
                raise TransferError(
                    f"{job.cluster}/{job.alias}: cannot create {job.local}: {exc.strerror}"
                ) from None
        argv = self.argv(job, remote)
        rc, stderr = await self._stream(argv, job, progress, result)
        if rc != 0:
            lost = rc in _CONNECTION_EXITS and not await self._master_alive()
            if lost:
                # rsync logs each file as it *starts* it; with the connection gone there is
                # no telling which of them arrived: claim none (the re-run skips those that did)
                result.files_sent = result.bytes_sent = 0
            raise TransferError(self._explain(rc, stderr, job, lost=lost))

    def argv(self, job: PairJob, remote: str) -> list[str]:
        """The rsync command line for ``job`` (``remote`` already expanded)."""
        caps = self.caps
        argv = [self.rsync, "-rlpt", "--update", f"--out-format={_OUT_FORMAT}", "--stats"]
        if caps.eight_bit:
            argv.append("-8")
        if caps.protect_args:
            argv.append("-s")
        if caps.old_args:
            argv.append("--old-args")
        if caps.mkpath and job.direction == "push":
            argv.append("--mkpath")
        if caps.progress2:
            argv += ["--info=progress2"]
        if job.delete:
            argv.append("--delete")
        if job.checksum:
            argv.append("--checksum")
        if job.dry_run:
            argv.append("--dry-run")
        if self.compress:
            argv.append("-z")
        argv += [rsync_exclude_arg(p) for p in job.excludes.patterns]
        # rsync appends the host and its server command to this: ``--`` keeps the host
        # out of option position (the config refuses a host starting with '-' anyway)
        argv += ["-e", shlex.join([*self.ssh, "--"])]
        remote_arg = remote.rstrip("/") + "/"
        if remote_arg.startswith(
            "-"
        ):  # a relative path the remote rsync must not take as an option
            remote_arg = "./" + remote_arg
        if not caps.protect_args:
            remote_arg = shlex.quote(remote_arg)
        remote_spec = f"{rsync_host(self.target.host)}:{remote_arg}"
        local = job.local.rstrip("/") + "/"
        argv += (
            ["--", local, remote_spec] if job.direction == "push" else ["--", remote_spec, local]
        )
        return argv

    async def _stream(
        self, argv: list[str], job: PairJob, progress: ProgressSink, result: PairResult
    ) -> tuple[int, str]:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env={**os.environ, "LC_ALL": "C"},
        )
        assert proc.stdout is not None and proc.stderr is not None
        reader = _OutputReader(self.caps, progress, result)
        err_task = asyncio.ensure_future(proc.stderr.read())
        try:
            buf = b""
            while chunk := await proc.stdout.read(65536):
                buf += chunk
                *lines, buf = re.split(rb"[\r\n]", buf)
                for line in lines:
                    reader.line(line)
            if buf:
                reader.line(buf)
            stderr = await err_task
            rc = await proc.wait()
        except BaseException:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
            err_task.cancel()
            raise
        reader.finish()
        return rc, stderr.decode("utf-8", "replace")

    async def _master_alive(self) -> bool:
        """Whether the session's ssh master connection still runs (``ssh -O check``)."""
        control = self._control
        with contextlib.suppress(OSError):
            proc = await asyncio.create_subprocess_exec(
                *["ssh", "-o", f"ControlPath={control}", "-O", "check", "--", self.host],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            return await proc.wait() == 0
        return False

    def _explain(self, rc: int, stderr: str, job: PairJob, *, lost: bool = False) -> str:
        pair = f"{job.cluster}/{job.alias}"
        if lost and "(0 bytes received so far)" not in stderr:
            # the ssh connection died under a running rsync: a dropped link (ssh's keepalives
            # went unanswered for io_timeout) or the server went away
            return self.target.lost(pair)
        if rc == 255 or "(0 bytes received so far)" in stderr:  # ssh never got rsync started
            return explain_ssh_failure(stderr, self.target, pair)
        lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
        detail = next((ln for ln in lines if ln.startswith("rsync:")), lines[0] if lines else "")
        what = RSYNC_EXIT.get(rc, "failed")
        if "No such file or directory" in stderr and job.direction == "pull":
            return f"{pair}: remote directory {job.remote!r} does not exist"
        return f"{pair}: rsync exit {rc} ({what}){': ' + detail if detail else ''}"

    async def close(self) -> None:
        if self._early is not None:
            self._early.stop()  # a login still under way too (the run was interrupted)
            return
        control = os.path.join(self._dir, "cm")
        if not self._own_master:
            shutil.rmtree(self._dir, ignore_errors=True)
            return
        ssh_login.stop_master(control, self.host, self._dir)


class _OutputReader:
    """Turns rsync's stdout (``--out-format`` lines, progress2, ``--stats``) into progress."""

    def __init__(self, caps: RsyncCaps, progress: ProgressSink, result: PairResult):
        self.caps = caps
        self.progress = progress
        self.result = result
        self.regular: int | None = None
        self.links = 0
        self.links_sent = 0
        self.transferred: int | None = None
        self._seen_bytes = 0

    def line(self, line: bytes) -> None:
        if line.startswith(_MARK):
            self._item(line[len(_MARK) :])
            return
        m = _PROGRESS2.match(line)
        if m is not None and self.caps.progress2:
            done = int(m.group(1).replace(b",", b""))
            if done > self._seen_bytes:
                self.progress.advance(done - self._seen_bytes)
                self._seen_bytes = done
            return
        m = _STATS_FILES.search(line)
        if m is not None:
            self.regular = int(m.group(1).replace(b",", b""))
            links = _STATS_LINKS.search(line)
            self.links = int(links.group(1).replace(b",", b"")) if links else 0
            return
        m = _STATS_SENT.search(line)
        if m is not None:
            self.transferred = int(m.group(1).replace(b",", b""))

    def _item(self, rest: bytes) -> None:
        itemize, _, rest = rest.partition(b":")
        size_text, _, raw_name = rest.partition(b":")
        name = unescape_name(raw_name)
        try:
            size = int(size_text.replace(b",", b""))
        except ValueError:
            size = 0
        result = self.result
        if itemize.startswith(b"*deleting"):
            result.deleted += 1
            self.progress.item("delete", name.rstrip("/"))
        elif itemize[:1] in (b"<", b">") and itemize[1:2] == b"f":
            result.files_sent += 1
            result.bytes_sent += size
            self.progress.item("send", name, size)
            if not self.caps.progress2:
                self.progress.advance(size)
        elif itemize[:2] == b"cL":
            result.files_sent += 1
            self.links_sent += 1
            self.progress.item("link", name)
        elif itemize[:2] == b"cd":
            self.progress.item("mkdir", name.rstrip("/"))

    def finish(self) -> None:
        if self.regular is not None:
            # files and symlinks alike: a link sent once is up to date the next time
            if self.transferred is not None:
                sent = self.transferred + self.links_sent
            else:
                sent = self.result.files_sent
            self.result.skipped = max(0, self.regular + self.links - sent)


@hookimpl
def register_transfer_backends(register: Callable[[TransferBackend], None]) -> None:
    """Register the builtin rsync backend."""
    register(RsyncBackend())
