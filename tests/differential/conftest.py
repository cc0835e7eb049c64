"""The differential suites share the reliability suite's ``tally`` fixture and the hooks
that record each test's class and outcome (bench/reliability_report.py counts them).
``env`` is the sync suites' ssh setup (one per module, on the session's sshd)."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator

import pytest
from reliability.conftest import (  # noqa: F401 (fixtures and hooks of this directory too)
    pytest_configure,
    pytest_runtest_logreport,
    pytest_runtest_makereport,
    tally,
)

from xfer_core.testing.services import SshServer

from .sync_oracle import Env


@pytest.fixture(scope="module")
def env(sshd: SshServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    tmp = tmp_path_factory.mktemp("diff-sync")
    ssh_config = tmp / "ssh_config"
    ssh_config.write_text(
        f"Host *\n  UserKnownHostsFile {sshd.known_hosts}\n  GlobalKnownHostsFile /dev/null\n"
    )
    control = tmp / "cm-%C"
    ssh = [
        *["ssh", "-F", "/dev/null", "-p", str(sshd.port), "-i", str(sshd.key_path)],
        *["-o", f"UserKnownHostsFile={sshd.known_hosts}", "-o", "BatchMode=yes"],
        *["-o", "ControlMaster=auto", "-o", f"ControlPath={control}", "-o", "ControlPersist=60"],
    ]
    yield Env(sshd, ssh, {"XFER_SSH_CONFIG": str(ssh_config), "XFER_PLAIN": "1"}, tmp)
    subprocess.run([*ssh, "-O", "exit", sshd.host], capture_output=True, check=False)
