"""A path that changes kind (file, symlink, directory) between source and destination.

Every change, both directions, is in the conformance suite
(``test_kind_changes_replace_the_old_entry``); these are the cases around it.

Issue 16: a symlink synced with ``-b sftp`` and replaced by a regular file on the
cluster was deleted by the next sync, which then failed to make the link ("No such
file"): neither file nor link was left. Both backends must replace the old entry
with the new one, as rsync does, never removing it before the replacement is ready,
and keep a non-empty directory (rsync: "cannot delete non-empty directory") unless
``--delete`` empties it first.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from xfer_backends.rsync import RsyncBackend
from xfer_backends.sftp import SftpBackend
from xfer_core.testing.conformance import job_for, remote_for_server, run_pair, snapshot
from xfer_core.testing.services import SshServer

from .test_cli_sync import xfer

BACKENDS = {"rsync": RsyncBackend, "sftp": SftpBackend}
OLD_MTIME = 1_600_000_000


def _make(root: Path, kind: str, *, content: bytes = b"new\n") -> None:
    """``root/x`` as ``kind`` (a directory holds one file), plus an unrelated file."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "other.txt").write_bytes(b"other\n")
    os.utime(root / "other.txt", (OLD_MTIME, OLD_MTIME))
    x = root / "x"
    if kind == "file":
        x.write_bytes(content)
        os.utime(x, (OLD_MTIME, OLD_MTIME))
    elif kind == "link":
        os.symlink("other.txt", x)
    elif kind == "dir":
        x.mkdir()
        (x / "inner.txt").write_bytes(content)
        os.utime(x / "inner.txt", (OLD_MTIME, OLD_MTIME))
    elif kind == "emptydir":
        x.mkdir()


@pytest.mark.parametrize("backend_name", list(BACKENDS))
@pytest.mark.parametrize("new", ["file", "link"])
@pytest.mark.parametrize("delete", [False, True])
def test_non_empty_directory_is_replaced_only_when_delete_empties_it(
    sshd: SshServer, tmp_path: Path, backend_name: str, new: str, delete: bool
) -> None:
    """rsync's rule: without --delete the directory and its content stay (the pair fails);
    with --delete its content goes first, except excluded entries, which keep it."""
    src = tmp_path / "src"
    _make(src, new)
    for excluded in (False, True):
        dst = sshd.mkdtemp("nonempty") / "tree"
        (dst / "x").mkdir(parents=True)
        (dst / "x" / "keep.txt").write_bytes(b"precious\n")
        if excluded:
            (dst / "x" / "skip.log").write_bytes(b"excluded\n")
        sshd.chown(dst)
        job = job_for(src, dst, "push", excludes=["*.log"], delete=delete)
        result, _ = run_pair(BACKENDS[backend_name](), remote_for_server(sshd), job)
        if delete and not excluded:
            assert result.error == "", result
            assert snapshot(dst) == snapshot(src)
            continue
        assert result.error != "", result  # the pair says something was not done
        assert (dst / "x").is_dir() and not (dst / "x").is_symlink()
        assert (dst / "x" / "keep.txt").exists() != delete  # --delete removed it, as rsync
        if excluded:
            assert (dst / "x" / "skip.log").read_bytes() == b"excluded\n"
        assert sorted(p for p in os.listdir(dst) if p.startswith(".")) == []


@pytest.mark.parametrize("backend_name", list(BACKENDS))
def test_issue16_link_replaced_by_a_file_on_the_cluster_comes_back(
    sshd: SshServer, tmp_path: Path, backend_name: str
) -> None:
    """The reproduction of issue 16, through the CLI: ``link_to_readme -> README``."""
    local = tmp_path / "proj"
    local.mkdir()
    (local / "README").write_text("read me\n")
    os.symlink("README", local / "link_to_readme")
    rdir = sshd.mkdtemp("issue16")
    config = tmp_path / "remotes.toml"
    config.write_text(
        f'[[clusters]]\nname = "c"\nhost = "{sshd.host}"\nport = {sshd.port}\n'
        f'user = "{sshd.user}"\nkey_path = "{sshd.key_path}"\n'
        f'[[clusters.sync_dirs]]\nalias = "p"\nlocal = "{local}"\nremote = "{rdir}/proj"\n'
    )
    ssh_config = tmp_path / "ssh_config"
    ssh_config.write_text(f"Host *\n  UserKnownHostsFile {sshd.known_hosts}\n")
    env = {"XFER_SSH_CONFIG": str(ssh_config), "XFER_PLAIN": "1"}
    args = ("sync", "-b", backend_name, "--config", str(config))
    first = xfer(*args, env=env)
    assert first.returncode == 0, first.stderr
    link = rdir / "proj" / "link_to_readme"
    assert os.readlink(link) == "README"
    # on the cluster, the link becomes a regular file (e.g. `cp -L`, an editor, a tool)
    link.unlink()
    link.write_text("a regular file now\n")
    sshd.chown(link)
    again = xfer(*args, env=env)
    assert again.returncode == 0, again.stderr
    assert link.is_symlink() and os.readlink(link) == "README"
    assert (rdir / "proj" / "README").read_text() == "read me\n"
    assert snapshot(rdir / "proj") == snapshot(local)


@pytest.mark.parametrize("backend_name", list(BACKENDS))
def test_directory_replaced_by_a_link_never_deletes_through_the_link(
    sshd: SshServer, tmp_path: Path, backend_name: str
) -> None:
    """``x/`` holding ``y`` becomes ``x -> ../outside`` (which holds a ``y`` too), with
    --delete: ``x/y`` is deleted before the link exists, so ``outside/y`` survives."""
    src = tmp_path / "src"
    src.mkdir()
    os.symlink("../outside", src / "x")
    base = sshd.mkdtemp("through")
    (base / "tree" / "x").mkdir(parents=True)
    (base / "tree" / "x" / "y").write_bytes(b"goes\n")
    (base / "outside").mkdir()
    (base / "outside" / "y").write_bytes(b"must stay\n")
    sshd.chown(base)
    job = job_for(src, base / "tree", "push", delete=True)
    result, _ = run_pair(BACKENDS[backend_name](), remote_for_server(sshd), job)
    assert result.error == "", result
    assert os.readlink(base / "tree" / "x") == "../outside"
    assert (base / "outside" / "y").read_bytes() == b"must stay\n"
