"""rsync and sftp agree: the same tree and excludes give identical remote trees, both ways."""

from __future__ import annotations

from pathlib import Path

import pytest

from xfer_backends.rsync import RsyncBackend
from xfer_backends.sftp import SftpBackend
from xfer_core.sync.backend import TransferBackend
from xfer_core.testing.conformance import (
    job_for,
    make_tree,
    remote_for_server,
    run_pair,
    snapshot,
)
from xfer_core.testing.services import SshServer

EXCLUDES = [
    "*.bin",
    "/exec.sh",
    "private/",
    "hostile dir 1/***",
    "**/with space.txt",
    "dir a/link up",
    "[-]*",
    "*\\?*",
]

BACKENDS: dict[str, TransferBackend] = {"rsync": RsyncBackend(), "sftp": SftpBackend()}


@pytest.fixture
def src(tmp_path: Path) -> Path:
    root = tmp_path / "src"
    root.mkdir()
    make_tree(root)
    return root


def test_push_gives_identical_trees(sshd: SshServer, src: Path) -> None:
    remote = remote_for_server(sshd)
    trees = {}
    reported = {}
    for name, backend in BACKENDS.items():
        dest = sshd.mkdtemp(name)
        result, sink = run_pair(backend, remote, job_for(src, dest, excludes=EXCLUDES))
        assert result.error == "", (name, result)
        trees[name] = snapshot(dest)
        reported[name] = (sink.paths("send"), sink.paths("link"), result.files_sent)
    assert trees["rsync"] == trees["sftp"]
    assert reported["rsync"] == reported["sftp"]
    assert "exec.sh" not in trees["sftp"] and "-leading-dash.txt" not in trees["sftp"]
    assert "hostile dir 1" not in trees["sftp"] and "dir a/link up" not in trees["sftp"]


def test_pull_gives_identical_trees(sshd: SshServer, tmp_path: Path) -> None:
    remote = remote_for_server(sshd)
    rdir = sshd.mkdtemp("pull")
    make_tree(rdir / "r")
    sshd.chown(rdir)
    trees = {}
    for name, backend in BACKENDS.items():
        local = tmp_path / name
        result, _ = run_pair(backend, remote, job_for(local, rdir / "r", "pull", excludes=EXCLUDES))
        assert result.error == "", (name, result)
        trees[name] = snapshot(local)
    assert trees["rsync"] == trees["sftp"]


def test_one_backend_after_the_other_sends_nothing(sshd: SshServer, src: Path) -> None:
    """A tree pushed by sftp is up to date for rsync's quick check, and the other way round."""
    remote = remote_for_server(sshd)
    for first, second in (("sftp", "rsync"), ("rsync", "sftp")):
        dest = sshd.mkdtemp(first)
        assert run_pair(BACKENDS[first], remote, job_for(src, dest))[0].error == ""
        result, sink = run_pair(BACKENDS[second], remote, job_for(src, dest))
        assert result.error == "" and sink.paths("send") == set(), (first, second)
