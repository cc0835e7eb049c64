"""Faults not covered elsewhere: sshd killed mid-fetch, read-only and full remote
dirs, local files changing while they are sent.

(sshd killed mid-push for both backends is in the backends' conformance suite.)
Each: inject, check that nothing is reported done that is not and that no file
under its real name is partial, then re-run and check that nothing is lost.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
from pathlib import Path
from typing import Any

import pytest

from xfer_core.testing.conformance import _KillWhenTempAppears
from xfer_core.testing.fixtures import remote_tmpfs
from xfer_core.testing.services import SshServer

from .conftest import Tally
from .helpers import cluster_config, read_tree, ssh_env, xfer

CLASS = "faults: ssh, remote disk, changing files"


class Pair:
    """One cluster (the test sshd) with one sync pair and one fetch pair."""

    def __init__(self, sshd: SshServer, tmp: Path, remote: str, local: Path, back: Path):
        self.sshd = sshd
        self.env = ssh_env(sshd, tmp)
        self.config = cluster_config(
            tmp / "remotes.toml",
            sshd,
            sync_dirs=[{"alias": "p", "local": str(local), "remote": remote}],
            fetch_dirs=[{"alias": "b", "local": str(back), "remote": remote}],
        )

    def run(self, command: str, backend: str, *extra: str) -> subprocess.CompletedProcess[str]:
        return xfer(
            "--json", command, "--config", str(self.config), "-b", backend, *extra, env=self.env
        )


def _summary(proc: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    lines = [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]
    assert lines and lines[-1].get("event") == "summary", proc.stdout
    return lines[-1]


def _big(path: Path, mib: int) -> bytes:
    block = os.urandom(1024 * 1024)
    data = block * mib
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return data


@pytest.mark.sshd
@pytest.mark.parametrize("backend", ["rsync", pytest.param("sftp", marks=pytest.mark.soak)])
def test_sshd_killed_mid_fetch_then_rerun(
    sshd: SshServer, tmp_path: Path, backend: str, tally: Tally
) -> None:
    rdir = sshd.mkdtemp("kill")
    data = _big(rdir / "src" / "big.bin", 64)
    sshd.chown(rdir)
    back = tmp_path / "back"
    back.mkdir()
    pair = Pair(sshd, tmp_path, f"~/{rdir.relative_to(sshd.home)}/src", tmp_path / "x", back)
    try:
        with _KillWhenTempAppears(sshd, back, "big.bin", len(data)) as killer:
            first = pair.run("fetch", backend)
    finally:
        sshd.start()
    if not killer.fired:
        pytest.skip("the fetch finished before sshd could be stopped")
    assert first.returncode == 1, first.stderr
    assert _summary(first)["failed_pairs"] == 1
    big = back / "big.bin"
    assert not big.exists() or big.read_bytes() == data, "partial file under its real name"
    again = pair.run("fetch", backend)
    assert again.returncode == 0, again.stderr
    assert big.read_bytes() == data
    tally(cases=1, lost=0 if big.read_bytes() == data else 1)


@pytest.mark.sshd
@pytest.mark.parametrize("backend", ["rsync", "sftp"])
def test_read_only_remote_dir_fails_then_rerun(
    sshd: SshServer, tmp_path: Path, backend: str, tally: Tally
) -> None:
    local = tmp_path / "src"
    files = {f"f{i}.txt": f"file {i}\n".encode() * 100 for i in range(5)}
    for name, content in files.items():
        (local / name).parent.mkdir(parents=True, exist_ok=True)
        (local / name).write_bytes(content)
    rdir = sshd.mkdtemp("ro")
    dest = rdir / "dst"
    dest.mkdir(mode=0o755)  # owned by root: the ssh user can neither write nor chmod it
    pair = Pair(sshd, tmp_path, f"~/{rdir.relative_to(sshd.home)}/dst", local, tmp_path / "b")
    first = pair.run("sync", backend)
    assert first.returncode == 1, first.stderr
    assert "Traceback" not in first.stderr
    assert _summary(first)["failed_pairs"] == 1
    assert read_tree(dest) == {}
    sshd.chown(dest)
    again = pair.run("sync", backend)
    assert again.returncode == 0, again.stderr
    assert read_tree(dest) == files
    tally(cases=1)


@pytest.mark.sshd
@pytest.mark.parametrize("backend", ["rsync", "sftp"])
def test_full_remote_disk_fails_without_partial_files(
    sshd: SshServer, tmp_path: Path, backend: str, tally: Tally
) -> None:
    """The remote dir is a 1 MiB tmpfs: the 3 MiB file cannot fit."""
    local = tmp_path / "src"
    small = b"small\n"
    (local).mkdir()
    (local / "small.txt").write_bytes(small)
    big = _big(local / "big.bin", 3)
    rdir = sshd.mkdtemp("full")
    mnt = rdir / "dst"
    mnt.mkdir()
    with remote_tmpfs(sshd, mnt, "1m"):
        pair = Pair(sshd, tmp_path, f"~/{rdir.relative_to(sshd.home)}/dst", local, tmp_path / "b")
        first = pair.run("sync", backend)
        assert first.returncode == 1, first.stderr
        assert "Traceback" not in first.stderr
        assert _summary(first)["failed_pairs"] == 1
        got = read_tree(mnt)
        assert got.get("big.bin", big) == big, "partial big.bin under its real name"
        assert "big.bin" not in got
        leftovers = [n for n in got if n not in ("small.txt",)]
        assert leftovers == [], f"temp files left on the full disk: {leftovers}"
    again = pair.run("sync", backend)  # now onto the real disk underneath
    assert again.returncode == 0, again.stderr
    assert read_tree(mnt) == {"small.txt": small, "big.bin": big}
    tally(cases=1)


@pytest.mark.sshd
@pytest.mark.parametrize("backend", ["rsync", pytest.param("sftp", marks=pytest.mark.soak)])
def test_files_changing_while_sent_converge_after_rerun(
    sshd: SshServer, tmp_path: Path, backend: str, tally: Tally
) -> None:
    local = tmp_path / "src"
    local.mkdir()
    names = [f"grow{i}.log" for i in range(4)]
    for name in names:
        (local / name).write_bytes(os.urandom(1024 * 1024))
    rdir = sshd.mkdtemp("chg")
    pair = Pair(sshd, tmp_path, f"~/{rdir.relative_to(sshd.home)}/dst", local, tmp_path / "b")
    stop = threading.Event()
    writes = 0

    def churn() -> None:
        nonlocal writes
        while not stop.is_set():
            for name in names:
                with open(local / name, "ab") as fh:  # appended like a growing log
                    fh.write(os.urandom(64 * 1024))
                writes += 1
            (local / names[writes % len(names)]).write_bytes(os.urandom(1024 * 1024 + writes))

    thread = threading.Thread(target=churn, daemon=True)
    thread.start()
    try:
        first = pair.run("sync", backend)
    finally:
        stop.set()
        thread.join()
    assert writes > 0
    assert first.returncode in (0, 1), first.stderr
    assert "Traceback" not in first.stderr
    again = pair.run("sync", backend, "--checksum")
    assert again.returncode == 0, again.stderr
    want = read_tree(local)
    got = read_tree(rdir / "dst")
    lost = sum(1 for n in want if got.get(n) != want[n])
    assert got == want
    tally(cases=1, lost=lost)
