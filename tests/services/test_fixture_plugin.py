"""The pytest plugin's policy: a missing service skips, or fails under XFER_REQUIRE_SERVICES=1;
soak tests run only with XFER_SOAK=1; service tests carry their marker."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

PROBE = """
import pytest
from xfer_core.testing.fixtures import unavailable

@pytest.fixture
def fake_service():
    unavailable("fake: not installed (fakectl not found)")

def test_uses_service(fake_service):
    pass

@pytest.mark.soak
def test_long():
    pass
"""


def _run(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "test_probe.py").write_text(PROBE)
    clean = {k: v for k, v in os.environ.items() if k not in ("XFER_REQUIRE_SERVICES", "XFER_SOAK")}
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "xfer_core.testing.fixtures",
            "-rsf",
            "-q",
            "-p",
            "no:cacheprovider",
            "--rootdir",
            str(tmp_path),
            "-c",
            os.devnull,
            str(tmp_path / "test_probe.py"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env={**clean, **env},
        cwd=tmp_path,
    )


def test_missing_service_skips_with_reason(tmp_path: Path) -> None:
    res = _run(tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "2 skipped" in res.stdout
    assert "fake: not installed (fakectl not found)" in res.stdout
    assert "XFER_SOAK=1" in res.stdout


def test_missing_service_fails_when_services_are_required(tmp_path: Path) -> None:
    res = _run(tmp_path, XFER_REQUIRE_SERVICES="1")
    assert res.returncode == 1, res.stdout + res.stderr
    assert "1 error" in res.stdout or "1 failed" in res.stdout
    assert "fake: not installed" in res.stdout
    assert "XFER_REQUIRE_SERVICES=1" in res.stdout


def test_soak_runs_with_xfer_soak(tmp_path: Path) -> None:
    res = _run(tmp_path, XFER_SOAK="1")
    assert "1 passed" in res.stdout, res.stdout


@pytest.mark.usefixtures("sshd")
def test_service_fixture_users_get_its_marker(request: pytest.FixtureRequest) -> None:
    assert request.node.get_closest_marker("sshd") is not None
