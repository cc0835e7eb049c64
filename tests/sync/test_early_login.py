"""The rsync master login started while ``xfer sync`` starts up (xfer_core.sync.early_login).

Against the real sshd: the login is under way before Typer, asyncio or the engine are
imported; the backend takes it over (one login per cluster in the sshd log, not two);
a master nobody took over -- a usage error, pairs that all fail locally, SIGTERM while
still starting -- is gone when xfer exits; other command lines start nothing; with
``XFER_EARLY_LOGIN=0`` the usual path logs in. The command-line reader agrees with Typer
on every command line it reads (hypothesis), and knows every option of the command.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from xfer_core.sync import early_login
from xfer_core.testing import cli
from xfer_core.testing.services import SshServer


# -- the command-line reader ------------------------------------------------------------
def _typer_command(name: str) -> object:
    import typer

    from xfer_core.cli.app import app_for

    root = typer.main.get_command(app_for([name]))
    ctx = root.make_context("xfer", [name, "--help"], resilient_parsing=True)  # type: ignore[attr-defined]
    return root.get_command(ctx, name)  # type: ignore[attr-defined]


def _root_options() -> dict[str, bool]:
    import typer

    from xfer_core.cli.app import app_for

    root = typer.main.get_command(app_for(["sync"]))
    return {o: not p.is_flag and not p.count for p in root.params for o in p.opts}


@pytest.mark.parametrize("name", ["sync", "fetch"])
def test_the_reader_knows_every_option_of_the_command(name: str) -> None:
    command = _typer_command(name)
    takes: dict[str, bool] = {}
    dest: dict[str, str] = {}
    for param in command.params:  # type: ignore[attr-defined]
        for opt in param.opts:
            takes[opt] = not param.is_flag
            dest[opt] = param.name
    root = _root_options()
    for opt in ("--json", "-q", "--quiet", "--verbose"):  # hoisted after the command
        takes.setdefault(opt, root[opt])
    known = {o: t for o, (_, t) in early_login.OPTIONS.items()}
    assert known == {o: t for o, t in takes.items() if o not in ("-h", "--help")}
    for opt, (field, _) in early_login.OPTIONS.items():
        if field is not None:
            assert dest[opt] == field
    # a new root flag is either one the reader skips or one that makes it give up
    others = {"-v", "--version", "-h", "--help", "--install-completion", "--show-completion"}
    assert {o for o, t in root.items() if not t} - others == early_login.ROOT_FLAGS


def test_the_reader_reads_sync_and_fetch_only() -> None:
    sel = early_login.read_args(
        ["--json", "-vv", "sync", "-c", "a", "--clusters=b", "-a", "x", "-b", "rsync",
         "--config", "f.toml", "--accept-new-host-key", "-n", "-j", "4", "-q"]
    )  # fmt: skip
    assert sel is not None
    assert (sel.direction, sel.clusters, sel.aliases, sel.backend, sel.config) == (
        "push",
        ["a", "b"],
        ["x"],
        "rsync",
        "f.toml",
    )
    assert sel.accept_new_host_key
    fetch = early_login.read_args(["fetch"])
    assert fetch is not None and fetch.direction == "pull" and fetch.clusters == []
    for args in (
        [],
        ["--version"],
        ["run", "-c", "a"],
        ["config", "show"],
        ["sync", "--help"],
        ["sync", "-h"],
        ["--help", "sync"],
        ["sync", "-nz"],  # combined short flags: left to Typer
        ["sync", "-calpha"],
        ["sync", "extra"],
        ["sync", "--", "-c"],
        ["sync", "-c"],
        ["sync", "--dry-run=yes"],
        ["sync", "--clust", "a"],
    ):
        assert early_login.read_args(args) is None, args


def test_other_commands_pay_nothing_for_it() -> None:
    """The script reads every command line first: for ``xfer --version`` (answered before
    Typer is imported) that costs no import beyond ``os``."""
    code = (
        "import sys\n"
        "before = set(sys.modules)\n"
        "from xfer_core.sync import early_login\n"
        "early_login.start(['--version'])\n"
        "print(sorted(set(sys.modules) - before))\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    new = ["__future__", "xfer_core", "xfer_core.sync", "xfer_core.sync.early_login"]
    assert res.stdout.strip() == str(new), res.stdout + res.stderr


_TOKENS = st.sampled_from(
    ["-c", "--clusters", "-a", "--aliases", "-b", "--backend", "--config", "-e", "-j",
     "--accept-new-host-key", "-n", "--dry-run", "--json", "--delete", "-z", "--batch", "-q",
     "-v", "-vv", "--verbose", "--checksum", "--compress", "--quiet", "--exclude", "--jobs",
     "alpha", "beta", "rsync", "sftp", "2", "0", "--clusters=gamma", "--config=", "-", "--",
     "--jobs=3", "--jobs=-1", "+2"]
)  # fmt: skip


@settings(max_examples=300, deadline=None, derandomize=True)
@given(command=st.sampled_from(["sync", "fetch"]), rest=st.lists(_TOKENS, max_size=8))
def test_the_reader_agrees_with_typer(command: str, rest: list[str]) -> None:
    """Whenever the reader reads a command line, Typer reads the same selection from it."""
    sel = early_login.read_args([command, *rest])
    if sel is None:
        return
    import typer

    from xfer_core.cli.app import app_for, hoist_global_options

    args = hoist_global_options([command, *rest], app_for([command]))  # as the CLI does
    own = args[args.index(command) + 1 :]
    cmd = _typer_command(command)
    try:
        ctx = cmd.make_context(command, own)  # type: ignore[attr-defined]
    except typer.TyperException as exc:  # nothing may start for a command line Typer refuses
        raise AssertionError(f"read {[command, *rest]} that Typer refuses: {exc}") from None
    params = ctx.params
    assert (params["clusters"] or []) == sel.clusters
    assert (params["aliases"] or []) == sel.aliases
    assert params["backend"] == sel.backend
    assert params["config"] == sel.config
    assert params["accept_new_host_key"] == sel.accept_new_host_key


# -- against the real sshd ---------------------------------------------------------------
class Cluster:
    """One rsync cluster on the test sshd with one sync pair."""

    def __init__(self, sshd: SshServer, tmp: Path, *, local: Path | None = None):
        self.sshd = sshd
        self.local = local or tmp / "src"
        if local is None:
            self.local.mkdir()
            (self.local / "a.txt").write_text("one")
        self.remote = sshd.mkdtemp("early")
        ssh_config = tmp / "ssh_config"
        ssh_config.write_text(
            f"Host *\n  UserKnownHostsFile {sshd.known_hosts}\n  GlobalKnownHostsFile /dev/null\n"
        )
        self.config = tmp / "remotes.toml"
        self.config.write_text(
            f'[[clusters]]\nname = "alpha"\nhost = "{sshd.host}"\nport = {sshd.port}\n'
            f'user = "{sshd.user}"\nkey_path = "{sshd.key_path}"\n'
            f'[[clusters.sync_dirs]]\nalias = "up"\nlocal = "{self.local}"\n'
            f'remote = "{self.remote}/up"\n'
        )
        self.env = {"XFER_SSH_CONFIG": str(ssh_config), "XFER_PLAIN": "1"}

    def logins(self) -> int:
        """Logins the sshd accepted so far (any client of this session-wide server)."""
        text = self.sshd.log_path.read_text(errors="replace")
        return len(re.findall(r"Accepted publickey for ", text))

    def run(
        self, *args: str, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        return cli.xfer(
            *args, "--config", str(self.config), env={**self.env, **(env or {})}, timeout=120
        )

    def masters(self) -> list[int]:
        """ssh master processes (xfer's ControlMaster=auto) to this sshd's port."""
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                argv = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if (
                argv[:1] == [b"ssh"]
                and b"ControlMaster=auto" in argv
                and str(self.sshd.port).encode() in argv
            ):
                found.append(int(entry.name))
        return found

    def no_masters_left(self) -> bool:
        """True once no master to this sshd runs (they are stopped in the background)."""
        deadline = time.monotonic() + 20
        while self.masters():
            if time.monotonic() > deadline:
                return False
            time.sleep(0.1)
        return True


@pytest.fixture
def cluster(sshd: SshServer, tmp_path: Path) -> Cluster:
    c = Cluster(sshd, tmp_path)
    assert c.no_masters_left()  # nothing of an earlier test still running
    return c


def test_login_starts_before_the_heavy_imports(cluster: Cluster) -> None:
    code = (
        "import sys\n"
        "from xfer_core.sync import early_login\n"
        "early_login.start(sys.argv[1:])\n"
        "heavy = sorted(m for m in ('typer', 'click', 'asyncio', 'rich', 'pluggy', 'asyncssh',\n"
        "    'xfer_core.sync.engine', 'xfer_backends.rsync') if m in sys.modules)\n"
        "[master] = early_login.started()\n"
        "print(heavy, master.wait()[0], flush=True)\n"
    )
    res = subprocess.run(
        [sys.executable, "-c", code, "sync", "-b", "rsync", "--config", str(cluster.config)],
        env={**os.environ, **cluster.env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    # the login ran (and logged in: status 0) with none of them imported; the master it
    # left was stopped at exit
    assert res.stdout.strip() == "[] 0", res.stdout + res.stderr
    assert cluster.no_masters_left()


def test_the_backend_takes_the_early_login_over(cluster: Cluster) -> None:
    before = cluster.logins()
    res = cluster.run("sync", "--json")
    assert res.returncode == 0, res.stdout + res.stderr
    assert (cluster.remote / "up" / "a.txt").read_text() == "one"
    assert cluster.logins() - before == 1  # the early login, carrying the rsync too
    assert cluster.no_masters_left()


def test_without_early_login_the_usual_path_logs_in(cluster: Cluster) -> None:
    before = cluster.logins()
    assert _started(cluster, "sync", env={"XFER_EARLY_LOGIN": "0"}) == "0"
    res = cluster.run("sync", env={"XFER_EARLY_LOGIN": "0"})
    assert res.returncode == 0, res.stdout + res.stderr
    assert (cluster.remote / "up" / "a.txt").read_text() == "one"
    assert cluster.logins() - before == 1
    assert cluster.no_masters_left()


@pytest.mark.parametrize(
    "args",
    [["sync", "--help"], ["fetch", "-c", "alpha"], ["plugins"], ["sync", "-c", "nosuch"]],
    ids=["help", "nothing-to-fetch", "other-command", "unknown-cluster"],
)
def test_nothing_is_started_for_runs_that_need_no_login(cluster: Cluster, args: list[str]) -> None:
    before = cluster.logins()
    cluster.run(*args)
    assert cluster.logins() == before


def test_a_bad_command_line_starts_nothing(cluster: Cluster) -> None:
    before = cluster.logins()
    for jobs in ("0", "two"):
        res = cluster.run("sync", "-j", jobs)
        assert res.returncode == 2 and "--jobs" in res.stderr, res.stdout + res.stderr
        assert _started(cluster, "sync", "-j", jobs) == "0"
    assert cluster.logins() == before


def test_an_error_after_the_start_leaves_no_master_behind(cluster: Cluster) -> None:
    # an empty exclude pattern is refused by the engine, after the login was started
    assert _started(cluster, "sync", "-e", "") == "1"
    res = cluster.run("sync", "-e", "")
    assert res.returncode == 2 and "empty exclude pattern" in res.stderr, res.stderr
    assert cluster.no_masters_left()


def test_pairs_failing_locally_leave_no_master_behind(sshd: SshServer, tmp_path: Path) -> None:
    cluster = Cluster(sshd, tmp_path, local=tmp_path / "missing")
    before = cluster.logins()
    res = cluster.run("sync")
    assert res.returncode == 1 and "missing" in res.stdout + res.stderr
    assert cluster.logins() == before  # nothing to log in for (as on the usual path)
    assert cluster.no_masters_left()
    assert _started(cluster, "sync") == "0"
    assert _started(cluster, "sync", "-b", "sftp") == "0"  # not an rsync run
    (tmp_path / "missing").mkdir()
    assert _started(cluster, "sync") == "1"  # now there is something to move


def _started(cluster: Cluster, *args: str, env: dict[str, str] | None = None) -> str:
    """How many master logins the early start starts for ``xfer ARGS`` (stopped at exit)."""
    code = (
        "import sys\n"
        "from xfer_core.sync import early_login\n"
        "early_login.start(sys.argv[1:])\n"
        "print(len(early_login.started()))\n"
    )
    res = subprocess.run(
        [sys.executable, "-c", code, *args, "--config", str(cluster.config)],
        env={**os.environ, **cluster.env, **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
    )
    return res.stdout.strip()


def test_sigterm_while_starting_stops_the_early_master(cluster: Cluster) -> None:
    # SIGTERM arrives once the login is under way, before the CLI is even imported
    code = (
        "import os, signal, sys\n"
        "import xfer_core.cli as cli\n"
        "from xfer_core.sync import early_login\n"
        "def main():\n"
        "    [master] = early_login.started()\n"
        "    assert master.wait()[0] == 0\n"
        "    os.kill(os.getpid(), signal.SIGTERM)\n"
        "    raise AssertionError('not interrupted')\n"
        "cli.main = main\n"
        "cli.script()\n"
    )
    before = cluster.logins()
    res = subprocess.run(
        [sys.executable, "-c", code, "sync", "--config", str(cluster.config)],
        env={**os.environ, **cluster.env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 130, res.stdout + res.stderr
    assert res.stderr.strip() == "xfer: interrupted"
    assert cluster.logins() - before == 1
    assert cluster.no_masters_left()


def test_two_clusters_on_the_same_ssh_command_line_take_one_login_each(
    sshd: SshServer, tmp_path: Path
) -> None:
    cluster = Cluster(sshd, tmp_path)
    text = cluster.config.read_text()
    second = text.replace('name = "alpha"', 'name = "beta"').replace('/up"', '/beta"')
    cluster.config.write_text(text + second)
    assert _started(cluster, "sync") == "2"
    before = cluster.logins()
    res = cluster.run("sync", "-j", "2")
    assert res.returncode == 0, res.stdout + res.stderr
    assert (cluster.remote / "up" / "a.txt").is_file() and (
        cluster.remote / "beta" / "a.txt"
    ).is_file()
    assert cluster.logins() - before == 2  # one per cluster, as without the early start
    assert cluster.no_masters_left()
