"""Logging in while ``xfer sync``/``xfer fetch`` start up.

An rsync run's ssh master login is almost all waiting for the server (a handshake,
key exchange, authentication: ~0.2 s on loopback, one round trip more per step on a
real link), while Python spends ~0.15 s importing the CLI before the engine gets to it.
:func:`start`, called first thing by the ``xfer`` script, overlaps the two: it reads
the command line (:func:`read_args`: only ``sync``/``fetch``, only the options it knows),
the config and each selected rsync cluster's ``ssh -G``, and starts the very login
the rsync backend would start (:func:`xfer_core.sync.ssh_login.master_login_argv`, with
``BatchMode``: it never prompts). The backend then takes that login over
(:func:`claim`: same ssh command line, same host) instead of starting its own, and goes
on as before -- waiting for its result, prompting on the terminal when it was refused
and a person is there, explaining the failure otherwise.

Anything unusual -- another command, ``--help``, an option it does not know, no config,
a config error, the user's own master already open, ``XFER_EARLY_LOGIN=0`` -- and
nothing is started: the run takes the usual path, and says what is wrong itself.
A master nobody took over (a usage error, an interrupt, a cluster whose pairs all
failed locally) is stopped when the process exits (:func:`stop_unclaimed`).
"""

from __future__ import annotations

import os

#: ``typing.TYPE_CHECKING``, without importing typing: the script imports this module for
#: every command (``xfer --version`` too), so it imports nothing but ``os`` itself.
TYPE_CHECKING = False
if TYPE_CHECKING:
    import subprocess

    from xfer_core.sync.backend import Direction, Remote
    from xfer_core.sync.ssh_login import SshSettings

#: The options of ``xfer sync``/``fetch``, and the root's that may follow the command:
#: option -> (what the early start reads from it, or None; whether it takes a value).
#: An option missing here makes :func:`read_args` give up (tests/sync/test_early_login.py
#: checks this table against the Typer command's options).
OPTIONS: dict[str, tuple[str | None, bool]] = {
    "-c": ("clusters", True),
    "--clusters": ("clusters", True),
    "-a": ("aliases", True),
    "--aliases": ("aliases", True),
    "-b": ("backend", True),
    "--backend": ("backend", True),
    "--config": ("config", True),
    "--accept-new-host-key": ("accept_new_host_key", False),
    "-e": (None, True),
    "--exclude": (None, True),
    "-j": ("jobs", True),
    "--jobs": ("jobs", True),
    "-n": (None, False),
    "--dry-run": (None, False),
    "--json": (None, False),
    "--delete": (None, False),
    "--checksum": (None, False),
    "-z": (None, False),
    "--compress": (None, False),
    "--batch": (None, False),
    "-q": (None, False),
    "--quiet": (None, False),
    "--verbose": (None, False),
}

#: The root's flags that may come before the command (``xfer --json sync``).
ROOT_FLAGS = frozenset({"--json", "-q", "--quiet", "--verbose"})


class Selection:
    """What a ``sync``/``fetch`` command line selects, as far as the login is concerned."""

    def __init__(self, direction: Direction) -> None:
        self.direction = direction
        self.clusters: list[str] = []
        self.aliases: list[str] = []
        self.backend: str | None = None
        self.config: str | None = None
        self.accept_new_host_key = False


def _verbose(token: str) -> bool:
    return len(token) > 1 and token[0] == "-" and token[1:] == "v" * (len(token) - 1)


def read_args(args: list[str]) -> Selection | None:
    """The selection of an ``xfer sync``/``fetch`` command line, or None for any other
    command line or one it does not fully understand (then Typer alone decides)."""
    pos = 0
    while pos < len(args) and (args[pos] in ROOT_FLAGS or _verbose(args[pos])):
        pos += 1
    if pos == len(args) or args[pos] not in ("sync", "fetch"):
        return None
    selection = Selection("push" if args[pos] == "sync" else "pull")
    rest = iter(args[pos + 1 :])
    for token in rest:
        if _verbose(token):
            continue
        name, eq, inline = token.partition("=") if token.startswith("--") else (token, "", "")
        spec = OPTIONS.get(name)
        if spec is None:  # --help, a typo, an argument, -nz, -cNAME, --: not ours to read
            return None
        dest, takes_value = spec
        value: str | bool
        if not takes_value:
            if eq:
                return None
            value = True
        elif eq:
            value = inline
        else:
            following = next(rest, None)
            if following is None:
                return None
            value = following
        if dest in ("clusters", "aliases"):
            getattr(selection, dest).append(value)
        elif dest == "jobs":  # Typer refuses anything but a count >= 1: nothing to start
            if not (isinstance(value, str) and value.isascii() and value.isdigit()):
                return None
            if int(value) < 1:
                return None
        elif dest is not None:
            setattr(selection, dest, value)
    return selection


class EarlyMaster:
    """One master login started early: its ssh process, ControlPath and whether the
    rsync backend took it over."""

    def __init__(self, key: tuple[str, ...], host: str, directory: str) -> None:
        self.key = key
        self.host = host
        self.directory = directory
        self.proc: subprocess.Popen[bytes] | None = None
        self.claimed = False

    @property
    def control(self) -> str:
        return os.path.join(self.directory, "cm")

    def wait(self) -> tuple[int, str]:
        """The login's exit status and stderr (once it logged in or failed)."""
        assert self.proc is not None
        _, err = self.proc.communicate()
        return self.proc.returncode or 0, err.decode(errors="replace")

    def stop(self) -> None:
        """Stop the login if still under way, then the master if it runs."""
        import subprocess

        from xfer_core.sync import ssh_login

        proc = self.proc
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        ssh_login.stop_master(self.control, self.host.strip("[]"), self.directory)


_masters: list[EarlyMaster] = []
#: ``ssh -G`` answers of the early start, by its command line (the backend reuses them).
_settings: dict[tuple[str, ...], SshSettings] = {}


def start(args: list[str]) -> None:
    """Start the ssh master login of each rsync cluster ``xfer sync``/``fetch`` ``args``
    select; nothing for any other command line (see the module's doc)."""
    if os.environ.get("XFER_EARLY_LOGIN") == "0":
        return
    selection = read_args(args)
    if selection is None:
        return
    try:
        _start(selection)
    except Exception:  # the run's own path reports what is wrong
        return


def _start(selection: Selection) -> None:
    import shutil

    if shutil.which("ssh") is None or shutil.which("rsync") is None:
        return  # the backend falls back to sftp (and says so)
    from xfer_core.config.load import backend_for, read_config, select_partial
    from xfer_core.config.paths import resolve_config_path
    from xfer_core.sync.backend import local_problem, remote_for

    location = resolve_config_path(selection.config)
    if not location.exists:
        return
    config = read_config(location, warn=False)
    direction = selection.direction
    selected, _ = select_partial(config, selection.clusters, selection.aliases, direction)
    # the rsync clusters with a pair that can run (a missing source fails without a login)
    clusters = {
        c.name: c
        for c, pair in selected
        if backend_for(config, c, selection.backend) == "rsync"
        and not local_problem("", direction, os.path.abspath(pair.local))
    }
    for cluster in clusters.values():
        target = remote_for(
            cluster,
            accept_new_host_key=selection.accept_new_host_key,
            io_timeout=config.global_.io_timeout,
        )
        _start_master(target)


def _start_master(target: Remote) -> None:
    import subprocess
    import tempfile

    from xfer_core.sync import ssh_login

    settings = ssh_login.openssh_settings(target)
    _settings[tuple(ssh_login.ssh_g_argv(target))] = settings
    if settings.control_path and os.path.exists(settings.control_path):
        return  # maybe the user's own master (e.g. after a 2FA login): the backend checks
    ssh_login.prepare_known_hosts(target, settings)
    base = ssh_login.openssh_argv(target, settings)
    if not _masters:
        import atexit
        import signal

        atexit.register(stop_unclaimed)
        # until the CLI installs its own handler: SIGTERM stops the run as Ctrl-C does
        # (the exit handlers run), not outright (a master left behind)
        signal.signal(signal.SIGTERM, signal.default_int_handler)
    master = EarlyMaster((*base, target.host), target.host, tempfile.mkdtemp(prefix="xfer-ssh-"))
    _masters.append(master)
    master.proc = subprocess.Popen(
        ssh_login.master_login_argv(base, master.control, target.host, batch=True),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def settings_for(target: Remote) -> SshSettings | None:
    """The early start's ``ssh -G`` answer for ``target``, if it asked the same question."""
    if not _settings:
        return None
    from xfer_core.sync import ssh_login

    return _settings.get(tuple(ssh_login.ssh_g_argv(target)))


def claim(base: list[str], host: str) -> EarlyMaster | None:
    """The master login started early with ssh command line ``base`` to ``host``, taken
    over by the caller (who stops it from now on), or None."""
    key = (*base, host)
    for master in _masters:
        if not master.claimed and master.key == key and master.proc is not None:
            master.claimed = True
            return master
    return None


def started() -> list[EarlyMaster]:
    """The master logins started early in this process."""
    return list(_masters)


def stop_unclaimed() -> None:
    """Stop every master started early that no session took over (at exit)."""
    for master in _masters:
        if not master.claimed:
            master.claimed = True
            master.stop()
