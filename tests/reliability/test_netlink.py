"""Faults: the network link to the cluster dropped mid-transfer (and before the run).

The cluster is a real sshd inside a network namespace, reached through a veth pair
(``xfer_core.testing.netns``). Mid-transfer, the namespace's end of the link goes
down (``ip link set down``): packets vanish without an answer, like a pulled cable.
xfer must notice within its ``io_timeout`` (here lowered to a few seconds) instead
of waiting for TCP's ~15 minutes, fail that pair with one clear line and exit 1,
leave no partial file under a real name, and a re-run once the link is back must
make the destination identical to the source.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from xfer_core.testing.conformance import _KillWhenTempAppears
from xfer_core.testing.fixtures import unavailable
from xfer_core.testing.netns import NetLink, netns_problem, netns_sshd
from xfer_core.testing.services import SshServer

from .conftest import Tally
from .helpers import cluster_config, popen_xfer, read_tree, ssh_env, xfer

CLASS = "faults: network link dropped"

#: The config's io_timeout for these tests (the default, 60 s, is for real links).
IO_TIMEOUT = 4
#: A run still going this long after the link went down counts as hung.
HANG = 90
NAMES = [f"big{i}.bin" for i in range(3)]
MIB = 1024 * 1024


@pytest.fixture(scope="module")
def netsshd() -> Iterator[tuple[NetLink, SshServer]]:
    problem = netns_problem()
    if problem:
        unavailable(f"netns sshd: {problem}")
    with netns_sshd() as pair:
        yield pair


@pytest.fixture
def link(netsshd: tuple[NetLink, SshServer]) -> Iterator[NetLink]:
    """The link, up and unthrottled again after each test whatever happened."""
    yield netsshd[0]
    netsshd[0].unthrottle()
    netsshd[0].up()


class Setup:
    """One cluster "c" behind the link, with a sync pair and a fetch pair on one remote dir."""

    def __init__(
        self, server: SshServer, tmp: Path, direction: str, io_timeout: int | None = IO_TIMEOUT
    ):
        self.server = server
        self.rdir = server.mkdtemp("netlink") / "data"
        self.rdir.mkdir()
        self.local = tmp / "local"
        self.local.mkdir()
        self.src, self.dst = (
            (self.local, self.rdir) if direction == "sync" else (self.rdir, self.local)
        )
        self.env = ssh_env(server, tmp)
        remote = f"~/{self.rdir.relative_to(server.home)}"
        self.config = cluster_config(
            tmp / "remotes.toml",
            server,
            **({"io_timeout": io_timeout} if io_timeout else {}),
            sync_dirs=[{"alias": "p", "local": str(self.local), "remote": remote}],
            fetch_dirs=[{"alias": "p", "local": str(self.local), "remote": remote}],
        )

    def write_source(self, mib: int) -> dict[str, bytes]:
        files = {}
        for name in NAMES:
            data = os.urandom(MIB) * mib
            (self.src / name).write_bytes(data)
            files[name] = data
        self.server.chown(self.rdir)
        return files

    def argv(self, command: str, backend: str) -> list[str]:
        return [command, "--config", str(self.config), "-b", backend]


def _failed_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("c/p: FAILED: ")]


def _temp_leftovers(dst: Path) -> list[str]:
    """Files at the destination that are not source names; each must be a temp name."""
    extra = sorted(set(read_tree(dst)) - set(NAMES))
    real_looking = [n for n in extra if not re.match(r"^\..+\.", n)]
    assert real_looking == [], f"files under non-temp names: {real_looking}"
    return extra


@pytest.mark.parametrize("backend", ["rsync", "sftp"])
@pytest.mark.parametrize("command", ["sync", "fetch"])
def test_link_dropped_mid_transfer_fails_in_bounded_time_then_rerun(
    netsshd: tuple[NetLink, SshServer],
    link: NetLink,
    tmp_path: Path,
    command: str,
    backend: str,
    tally: Tally,
) -> None:
    _drop_mid_transfer(Setup(netsshd[1], tmp_path, command), link, command, backend, tally)


@pytest.mark.soak
@pytest.mark.parametrize("backend", ["rsync", "sftp"])
def test_link_dropped_with_the_default_io_timeout(
    netsshd: tuple[NetLink, SshServer], link: NetLink, tmp_path: Path, backend: str, tally: Tally
) -> None:
    """No io_timeout in the config: the default (60 s) must end the run, not TCP's ~15 min."""
    setup = Setup(netsshd[1], tmp_path, "sync", io_timeout=None)
    _drop_mid_transfer(setup, link, "sync", backend, tally, hang=240)


def _drop_mid_transfer(
    setup: Setup, link: NetLink, command: str, backend: str, tally: Tally, hang: int = HANG
) -> None:
    """Cut the link while a file is half written, check the failure, re-run, compare."""
    size = 4 * MIB
    files = setup.write_source(4)
    link.throttle("40mbit")  # 5 MB/s in all: a file takes a second or more, cut long before
    proc = popen_xfer("--json", *setup.argv(command, backend), env=setup.env)
    try:
        with _KillWhenTempAppears(None, setup.dst, NAMES[0], size, action=link.down) as cutter:
            try:
                out_bytes, err_bytes = proc.communicate(timeout=hang)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.communicate()
                pytest.fail(f"xfer {command} -b {backend} still running {hang}s after it began")
        ended = time.monotonic()
    finally:
        link.unthrottle()
        link.up()
    err = err_bytes.decode(errors="replace")
    events = [json.loads(line) for line in out_bytes.decode().splitlines() if line.strip()]
    assert cutter.fired_at is not None, f"no partial file seen; the run ended first:\n{err}"
    detect = ended - cutter.fired_at
    # nothing under a real name is partial, and the run says it failed
    partial = [
        n for n in NAMES if (setup.dst / n).exists() and (setup.dst / n).read_bytes() != files[n]
    ]
    assert partial == [], f"partial files under their real names: {partial}"
    assert proc.returncode == 1, err
    assert "Traceback" not in err
    summary = events[-1]
    assert summary["event"] == "summary" and summary["ok"] is False, events[-1]
    # nothing counted as sent that did not arrive whole under its real name
    arrived = sum(1 for n in NAMES if (setup.dst / n).exists())
    false_done = max(0, summary["files_sent"] - arrived)
    assert false_done == 0, f"{summary['files_sent']} reported sent, {arrived} arrived"
    (error,) = [p["error"] for p in summary["pairs"]]
    # one line naming the pair and the cluster's address, and what happened
    assert "\n" not in error and error.startswith(f"c/p ({setup.server.user}@{setup.server.host}:")
    assert "connection lost mid-transfer" in error and "re-run" in error, error
    leftovers_after_cut = _temp_leftovers(setup.dst)

    again = xfer(*setup.argv(command, backend), env=setup.env, timeout=HANG)
    assert again.returncode == 0, again.stderr
    got = read_tree(setup.dst)
    lost = sum(1 for n in NAMES if got.get(n) != files[n])
    assert lost == 0, "re-run after the link came back did not restore every file"
    tally(
        cases=1,
        lost=lost,
        false_done=false_done,
        detect_seconds=round(detect, 1),
        temp_left=len(_temp_leftovers(setup.dst)),
        temp_after_cut=len(leftovers_after_cut),
    )


@pytest.mark.parametrize("backend", ["rsync", "sftp"])
def test_link_down_before_the_run_fails_fast(
    netsshd: tuple[NetLink, SshServer], link: NetLink, tmp_path: Path, backend: str, tally: Tally
) -> None:
    setup = Setup(netsshd[1], tmp_path, "sync")
    files = setup.write_source(1)
    link.down()
    started = time.monotonic()
    first = xfer(*setup.argv("sync", backend), env=setup.env, timeout=HANG)
    seconds = time.monotonic() - started
    link.up()
    assert first.returncode == 1, first.stderr
    assert "Traceback" not in first.stderr
    failed = _failed_lines(first.stderr)
    assert len(failed) == 1 and "unreachable" in failed[0], first.stderr
    assert "No route to host" in failed[0] or "timed out" in failed[0], failed[0]
    assert read_tree(setup.rdir) == {}
    again = xfer(*setup.argv("sync", backend), env=setup.env, timeout=HANG)
    assert again.returncode == 0, again.stderr
    assert read_tree(setup.rdir) == files
    tally(cases=1, fail_seconds=round(seconds, 1))


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("1", "out of range (4-86400 seconds)"),
        ("1e9", "out of range (4-86400 seconds)"),
        ("nan", "out of range (4-86400 seconds)"),
        ("true", "expected a number of seconds, got a boolean"),
        ('"60"', "expected a number of seconds, got a string"),
    ],
)
def test_io_timeout_is_validated(value: str, message: str) -> None:
    from xfer_core.config.load import validate_text

    text = (
        f'[global]\nio_timeout = 60\n\n[[clusters]]\nname = "c"\nhost = "h"\nio_timeout = {value}\n'
    )
    problems = [str(p) for p in validate_text(text)]
    assert len(problems) == 1, problems
    assert problems[0].startswith("remotes.toml:7: clusters[0].io_timeout: ")
    assert problems[0].endswith(message)


def test_io_timeout_reaches_both_backends() -> None:
    """The cluster's io_timeout wins over [global]'s, then 60 s; ssh gets a quarter as interval."""
    from xfer_backends.rsync import ssh_base
    from xfer_core.config.load import parse_config
    from xfer_core.sync.engine import remote_for

    config = parse_config(
        '[global]\nio_timeout = 20\n[[clusters]]\nname = "a"\nhost = "h"\nio_timeout = 8\n'
        '[[clusters]]\nname = "b"\nhost = "h"\n'
    )
    glob = config.global_.io_timeout
    a, b = (remote_for(c, io_timeout=glob) for c in config.clusters)
    assert (a.io_timeout, b.io_timeout, remote_for(config.clusters[1]).io_timeout) == (8, 20, 60)
    assert a.keepalive_interval == 2
    argv = " ".join(ssh_base(b))
    assert "ServerAliveInterval=5" in argv and "ServerAliveCountMax=3" in argv
