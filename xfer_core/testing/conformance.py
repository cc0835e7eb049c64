"""The transfer-backend conformance suite (rclone's ``fstest`` idea), for builtins and plugins.

Every transfer backend must pass it unchanged against the real ``sshd`` fixture.
A plugin author runs it on their backend with one import and one fixture::

    # tests/test_conformance.py of the plugin
    import pytest
    from xfer_core.testing.conformance import TransferBackendConformance
    from xfer_mybackend import MyBackend

    pytest_plugins = ["xfer_core.testing.fixtures"]   # the sshd fixture

    class TestMyBackend(TransferBackendConformance):
        @pytest.fixture
        def backend(self):
            return MyBackend()

The suite pushes and pulls trees with hostile names, symlinks, empty
directories and modes; checks the destination byte for byte with mtimes and
permission bits; re-runs (nothing sent), touches one file (only it sent),
dry-runs (nothing changed, the right list reported), excludes, ``delete``,
``checksum``, missing sources, host-key policy, unreachable hosts and an
interrupted transfer (sshd killed mid-file: no truncated file under the real
name, the next run completes).

The helpers (:func:`make_tree`, :func:`snapshot`, :func:`run_pair`) are
importable on their own.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import stat
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from xfer_core.config.model import Cluster, Config, DirPair, GlobalConfig
from xfer_core.errors import TransferError
from xfer_core.sync.backend import (
    Direction,
    PairJob,
    PairResult,
    ProgressSink,
    Remote,
    TransferBackend,
    TransferOptions,
)
from xfer_core.sync.excludes import ExcludeMatcher, merge_excludes
from xfer_core.sync.progress import CollectingSink
from xfer_core.testing.services import SshServer

#: mtimes of the generated tree (whole seconds, far from "now").
BASE_MTIME = 1_600_000_000

#: Names the source may hold and every backend must carry unchanged.
HOSTILE_NAMES = [
    "with space.txt",
    'it\'s "quoted".txt',
    "hash#semi;colon&amp.txt",
    "-leading-dash.txt",
    "--rf",
    "back\\slash.txt",
    "unicodé-ñ-日本.txt",
    "new\nline.txt",
    "$HOME-`id`-$(id).txt",
    "*star?[x].txt",
]

#: A name that is not valid UTF-8 (Latin-1 é), as rsync and SFTP both allow.
NON_UTF8_NAME = os.fsdecode(b"latin1-\xe9.txt")


def make_tree(root: Path, *, hostile: bool = True) -> dict[str, bytes]:
    """Create the standard test tree under ``root``; return ``{relpath: content}`` of its files.

    Regular files (one executable, one read-only, one 300 KiB binary), nested and
    empty directories, a private (0700) directory, relative symlinks (one dangling),
    and with ``hostile`` the names of :data:`HOSTILE_NAMES` in two places.
    """
    files: dict[str, bytes] = {
        "plain.txt": b"plain\n",
        "dir a/file in dir.txt": b"in a dir with a space\n",
        "deep/a/b/c/data.bin": bytes(range(256)) * 1200,
        "exec.sh": b"#!/bin/sh\necho hi\n",
        "readonly.txt": b"read only\n",
        "private/secret.txt": b"secret\n",
        "zero-length": b"",
    }
    if hostile:
        for i, name in enumerate(HOSTILE_NAMES):
            files[name] = f"hostile {i}\n".encode()
            files[f"hostile dir {i % 3}/{name}"] = f"nested hostile {i}\n".encode()
        files[NON_UTF8_NAME] = b"latin-1 name\n"
    for i, (rel, content) in enumerate(sorted(files.items())):
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
        os.utime(path, (BASE_MTIME + i, BASE_MTIME + i))
    (root / "exec.sh").chmod(0o755)
    (root / "readonly.txt").chmod(0o444)
    (root / "private").chmod(0o700)
    (root / "empty dir" / "nested empty").mkdir(parents=True)
    os.symlink("plain.txt", root / "link-to-plain")
    os.symlink("../plain.txt", root / "dir a" / "link up")
    os.symlink("does-not-exist", root / "dangling link")
    return files


#: (kind at the destination, kind at the source) of :func:`make_kind_changes`.
KIND_CHANGES = [
    (old, new) for old in ("file", "link", "dir") for new in ("file", "link", "dir") if old != new
]


def make_kind_changes(src: Path, dst: Path) -> None:
    """For each of :data:`KIND_CHANGES` a path ``OLD-to-NEW``: ``NEW`` at ``src`` (a directory
    holds one file), ``OLD`` at ``dst`` (a directory is empty), the destination's newer."""
    newer = time.time() + 3600
    for old, new in KIND_CHANGES:
        name = f"{old}-to-{new}"
        for root, kind in ((src, new), (dst, old)):
            path = root / name
            root.mkdir(parents=True, exist_ok=True)
            if kind == "file":
                path.write_bytes(f"{name} at {root.name}\n".encode())
            elif kind == "link":
                os.symlink(f"target-of-{name}", path)
            else:
                path.mkdir()
                if root == src:
                    (path / "inner.txt").write_bytes(b"inner\n")
                    os.utime(path / "inner.txt", (BASE_MTIME, BASE_MTIME))
            mtime = BASE_MTIME if root == src else newer
            os.utime(path, (mtime, mtime), follow_symlinks=False)


def snapshot(root: Path) -> dict[str, tuple[Any, ...]]:
    """Everything the suite compares below ``root``.

    ``{relpath: ("file", mode, size, mtime_seconds, sha256) | ("dir", mode) |
    ("link", target)}``; the root itself is left out.
    """
    out: dict[str, tuple[Any, ...]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            rel = os.path.relpath(path, root)
            st = os.lstat(path)
            if stat.S_ISLNK(st.st_mode):
                out[rel] = ("link", os.readlink(path))
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = ("dir", stat.S_IMODE(st.st_mode))
            else:
                with open(path, "rb") as fh:
                    digest = hashlib.sha256(fh.read()).hexdigest()
                out[rel] = ("file", stat.S_IMODE(st.st_mode), st.st_size, int(st.st_mtime), digest)
    return out


def files_of(snap: dict[str, tuple[Any, ...]]) -> set[str]:
    """Relative paths of the regular files of a snapshot."""
    return {k for k, v in snap.items() if v[0] == "file"}


def links_of(snap: dict[str, tuple[Any, ...]]) -> set[str]:
    """Relative paths of the symlinks of a snapshot."""
    return {k for k, v in snap.items() if v[0] == "link"}


def remote_for_server(server: SshServer, **changes: Any) -> Remote:
    """A :class:`Remote` reaching the test sshd with its key and known_hosts only."""
    fields: dict[str, Any] = {
        "name": "conformance",
        "host": server.host,
        "port": server.port,
        "user": server.user,
        "key_path": str(server.key_path),
        "known_hosts": str(server.known_hosts),
        "ssh_config": "/dev/null",
        "connect_timeout": 10.0,
    }
    fields.update(changes)
    return Remote(**fields)


async def _run(
    backend: TransferBackend, remote: Remote, jobs: list[PairJob], sink: ProgressSink
) -> list[PairResult]:
    session = await backend.open(remote, TransferOptions())
    try:
        return [await session.transfer(job, sink) for job in jobs]
    finally:
        await session.close()


def run_pair(
    backend: TransferBackend,
    remote: Remote,
    job: PairJob,
    sink: ProgressSink | None = None,
) -> tuple[PairResult, CollectingSink]:
    """Open a session, move one pair, close; return the result and what was reported."""
    collected = CollectingSink()
    results = asyncio.run(_run(backend, remote, [job], sink or collected))
    return results[0], collected


def connection_failure(backend: TransferBackend, remote: Remote, job: PairJob) -> str:
    """The one-line error of a pair whose cluster cannot be used.

    A backend may refuse in :meth:`~TransferBackend.open` (raising
    :class:`TransferError`) or when the pair runs (``PairResult.error``); both count.
    """
    try:
        result, _ = run_pair(backend, remote, job)
    except TransferError as exc:
        return exc.message
    assert result.error, f"expected {remote.label} to be refused, got {result}"
    return result.error


def job_for(
    local: Path,
    remote: str | Path,
    direction: Direction = "push",
    excludes: list[str] | None = None,
    **flags: Any,
) -> PairJob:
    """A :class:`PairJob` for the suite (cluster ``conformance``, alias ``t``)."""
    return PairJob(
        cluster="conformance",
        alias="t",
        direction=direction,
        local=str(local),
        remote=str(remote),
        excludes=ExcludeMatcher(excludes or []),
        **flags,
    )


class _KillWhenTempAppears:
    """Stops sshd as soon as a partially written copy of ``name`` shows up under ``root``
    (or runs ``action`` instead, e.g. cutting a network link); ``fired_at`` is when."""

    def __init__(
        self,
        server: SshServer | None,
        root: Path,
        name: str,
        final_size: int,
        action: Callable[[], None] | None = None,
    ):
        self.server = server
        self.root = root
        self.name = name
        self.final_size = final_size
        self.action = action
        self.fired = False
        self.fired_at: float | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def __enter__(self) -> _KillWhenTempAppears:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _watch(self) -> None:
        while not self._stop.is_set():
            try:
                entries = list(os.scandir(self.root))
            except OSError:
                entries = []
            for entry in entries:
                if entry.name != self.name and self.name in entry.name:
                    try:
                        size = entry.stat(follow_symlinks=False).st_size
                    except OSError:
                        continue
                    if 0 < size < self.final_size:
                        if self.action is not None:
                            self.action()
                        elif self.server is not None:
                            self.server.stop()
                        self.fired, self.fired_at = True, time.monotonic()
                        return
            time.sleep(0.002)


class TransferBackendConformance:
    """Subclass it and override the ``backend`` fixture; every test must pass unchanged."""

    @pytest.fixture
    def backend(self) -> TransferBackend:
        """The backend under test: override in the subclass."""
        raise NotImplementedError("override the `backend` fixture with your TransferBackend")

    @pytest.fixture
    def remote(self, sshd: SshServer) -> Remote:
        """Where the backend connects (the real sshd fixture)."""
        return remote_for_server(sshd)

    @pytest.fixture
    def rdir(self, sshd: SshServer) -> Path:
        """A fresh remote directory (owned by the ssh user, readable by the test)."""
        return sshd.mkdtemp("conf")

    @pytest.fixture
    def src(self, tmp_path: Path) -> Path:
        root = tmp_path / "src"
        root.mkdir()
        make_tree(root)
        return root

    # -- push ----------------------------------------------------------------------
    def test_push_tree_identical(
        self, backend: TransferBackend, remote: Remote, src: Path, rdir: Path
    ) -> None:
        dest = rdir / "proj"
        result, sink = run_pair(backend, remote, job_for(src, dest))
        assert result.error == "" and result.failed == 0, result
        want = snapshot(src)
        assert snapshot(dest) == want
        assert result.files_sent == len(files_of(want)) + len(links_of(want))
        assert result.bytes_sent == sum(v[2] for v in want.values() if v[0] == "file")
        assert sink.paths("send") == files_of(want)

    def test_rerun_sends_nothing(
        self, backend: TransferBackend, remote: Remote, src: Path, rdir: Path
    ) -> None:
        first, _ = run_pair(backend, remote, job_for(src, rdir))
        assert first.error == ""
        again, sink = run_pair(backend, remote, job_for(src, rdir))
        assert again.error == ""
        assert (again.files_sent, again.bytes_sent) == (0, 0)
        assert sink.paths("send") == set()
        # symlinks count like files: sent the first time, up to date the next
        assert again.skipped == len(files_of(snapshot(src))) + len(links_of(snapshot(src)))

    def test_touch_one_file_sends_only_it(
        self, backend: TransferBackend, remote: Remote, src: Path, rdir: Path
    ) -> None:
        assert run_pair(backend, remote, job_for(src, rdir))[0].error == ""
        changed = src / "dir a" / "file in dir.txt"
        changed.write_bytes(b"changed content, longer than before\n")
        os.utime(changed, (BASE_MTIME + 10_000, BASE_MTIME + 10_000))
        result, sink = run_pair(backend, remote, job_for(src, rdir))
        assert result.error == ""
        assert sink.paths("send") == {"dir a/file in dir.txt"}
        assert result.files_sent == 1
        assert snapshot(rdir) == snapshot(src)

    def test_dry_run_changes_nothing_and_lists(
        self, backend: TransferBackend, remote: Remote, src: Path, rdir: Path
    ) -> None:
        dest = rdir / "new"
        before_local = snapshot(src)
        result, sink = run_pair(backend, remote, job_for(src, dest, dry_run=True))
        assert result.error == "" and result.dry_run
        assert not dest.exists()
        assert snapshot(src) == before_local
        assert sink.paths("send") == files_of(before_local)
        assert sink.paths("link") == links_of(before_local)
        # after a real run, a dry run of one change lists exactly that change
        assert run_pair(backend, remote, job_for(src, dest))[0].error == ""
        (src / "plain.txt").write_text("newer\n")
        os.utime(src / "plain.txt", (BASE_MTIME + 9_999, BASE_MTIME + 9_999))
        before_remote = snapshot(dest)
        result, sink = run_pair(backend, remote, job_for(src, dest, dry_run=True))
        assert sink.paths("send") == {"plain.txt"}
        assert snapshot(dest) == before_remote

    def test_missing_remote_parents_created(
        self, backend: TransferBackend, remote: Remote, src: Path, rdir: Path
    ) -> None:
        dest = rdir / "a" / "b c" / "d"
        assert run_pair(backend, remote, job_for(src, dest))[0].error == ""
        assert snapshot(dest) == snapshot(src)

    def test_remote_path_expanded_remotely(
        self, backend: TransferBackend, remote: Remote, src: Path, rdir: Path, sshd: SshServer
    ) -> None:
        rel = rdir.relative_to(sshd.home)
        for spec, where in (
            (f"~/{rel}/tilde", rdir / "tilde"),
            (f"$HOME/{rel}/var", rdir / "var"),
            (f"${{HOME}}/{rel}/it's; `id` #1", rdir / "it's; `id` #1"),
            (f"{rel}/relative", rdir / "relative"),
        ):
            result, _ = run_pair(backend, remote, job_for(src, spec))
            assert result.error == "", (spec, result)
            assert snapshot(where) == snapshot(src), spec

    def test_unset_remote_variable_is_an_error(
        self, backend: TransferBackend, remote: Remote, src: Path
    ) -> None:
        result, _ = run_pair(backend, remote, job_for(src, "$XFER_SURELY_UNSET_VAR/x"))
        assert "XFER_SURELY_UNSET_VAR" in result.error

    def test_missing_local_dir_fails_pair(
        self, backend: TransferBackend, remote: Remote, tmp_path: Path, rdir: Path
    ) -> None:
        result, _ = run_pair(backend, remote, job_for(tmp_path / "nope", rdir / "x"))
        assert result.error and "nope" in result.error
        assert not (rdir / "x").exists()

    def test_excludes_every_level(
        self, backend: TransferBackend, remote: Remote, src: Path, rdir: Path
    ) -> None:
        for name in ("common", "gsync", "cluster", "csync", "pair", "cli", "keep"):
            (src / "lvl" / name).mkdir(parents=True)
            (src / "lvl" / name / "f.txt").write_text(name)
        pair = DirPair(alias="t", local=str(src), remote=str(rdir), excludes=["pair"])
        cluster = Cluster(
            name="c", host="h", excludes=["cluster"], sync_excludes=["csync"], sync_dirs=[pair]
        )
        config = Config(
            global_=GlobalConfig(common_excludes=["common", "*.bin"], sync_excludes=["/lvl/gsync"]),
            clusters=[cluster],
        )
        patterns = merge_excludes(config, cluster, pair, "push", ["cli", "private/"])
        job = job_for(src, rdir, excludes=patterns)
        result, _ = run_pair(backend, remote, job)
        assert result.error == ""
        got = snapshot(rdir)
        assert sorted(p for p in got if p.startswith("lvl/")) == ["lvl/keep", "lvl/keep/f.txt"]
        assert "deep/a/b/c/data.bin" not in got and "private" not in got
        matcher = ExcludeMatcher(patterns)
        for path, entry in snapshot(src).items():
            if matcher.excluded(path, entry[0] == "dir"):
                assert path not in got
            else:
                assert got.get(path) == entry, path

    def test_delete_spares_excluded(
        self, backend: TransferBackend, remote: Remote, src: Path, rdir: Path, sshd: SshServer
    ) -> None:
        assert run_pair(backend, remote, job_for(src, rdir))[0].error == ""
        (rdir / "stale.txt").write_text("stale")
        (rdir / "stale dir").mkdir()
        (rdir / "stale dir" / "x").write_text("x")
        (rdir / "keep.log").write_text("excluded: never deleted")
        sshd.chown(rdir)
        excludes = ["*.log"]
        result, sink = run_pair(
            backend, remote, job_for(src, rdir, excludes=excludes, delete=True, dry_run=True)
        )
        assert {"stale.txt", "stale dir"} <= sink.paths("delete")
        assert (rdir / "stale.txt").exists()
        result, sink = run_pair(backend, remote, job_for(src, rdir, excludes=excludes, delete=True))
        assert result.error == "" and result.deleted >= 2
        assert not (rdir / "stale.txt").exists() and not (rdir / "stale dir").exists()
        assert (rdir / "keep.log").read_text() == "excluded: never deleted"
        assert "keep.log" not in sink.paths("delete")

    def test_newer_destination_never_overwritten(
        self, backend: TransferBackend, remote: Remote, src: Path, rdir: Path
    ) -> None:
        assert run_pair(backend, remote, job_for(src, rdir))[0].error == ""
        dest = rdir / "plain.txt"
        dest.write_bytes(b"edited on the cluster, and longer\n")
        os.utime(dest, (BASE_MTIME + 50_000, BASE_MTIME + 50_000))
        _, sink = run_pair(backend, remote, job_for(src, rdir))
        assert "plain.txt" not in sink.paths("send")
        assert dest.read_bytes() == b"edited on the cluster, and longer\n"

    def test_checksum_compares_content(
        self, backend: TransferBackend, remote: Remote, src: Path, rdir: Path
    ) -> None:
        assert run_pair(backend, remote, job_for(src, rdir))[0].error == ""
        dest = rdir / "plain.txt"
        st = dest.stat()
        dest.write_bytes(b"PLAIN\n")  # same size, same mtime, other content
        os.utime(dest, (st.st_atime, st.st_mtime))
        result, sink = run_pair(backend, remote, job_for(src, rdir))
        assert "plain.txt" not in sink.paths("send")
        result, sink = run_pair(backend, remote, job_for(src, rdir, checksum=True))
        assert result.error == ""
        assert sink.paths("send") == {"plain.txt"}
        assert dest.read_bytes() == b"plain\n"

    # -- kind changes ----------------------------------------------------------------
    @pytest.mark.parametrize("direction", ["push", "pull"])
    def test_kind_changes_replace_the_old_entry(
        self,
        backend: TransferBackend,
        remote: Remote,
        rdir: Path,
        tmp_path: Path,
        sshd: SshServer,
        direction: Direction,
    ) -> None:
        """Every change of kind (file, symlink, empty directory → another kind) at once, with
        the destination's entry newer: the destination ends as the source, as with rsync."""
        local = tmp_path / "kinds"
        src, dst = (local, rdir / "kinds") if direction == "push" else (rdir / "kinds", local)
        make_kind_changes(src, dst)
        sshd.chown(rdir)
        job = job_for(local, rdir / "kinds", direction)
        result, _ = run_pair(backend, remote, job)
        assert result.error == "" and result.failed == 0, result
        assert snapshot(dst) == snapshot(src)
        assert not [n for n in os.listdir(dst) if n.startswith(".")]  # nothing left aside
        again, _ = run_pair(backend, remote, job)
        assert (again.error, again.files_sent) == ("", 0)

    # -- pull ----------------------------------------------------------------------
    def test_fetch_tree_identical(
        self, backend: TransferBackend, remote: Remote, rdir: Path, tmp_path: Path, sshd: SshServer
    ) -> None:
        make_tree(rdir / "results")
        sshd.chown(rdir)
        local = tmp_path / "fetched" / "into" / "here"
        result, sink = run_pair(backend, remote, job_for(local, rdir / "results", "pull"))
        assert result.error == "", result
        want = snapshot(rdir / "results")
        assert snapshot(local) == want
        assert sink.paths("send") == files_of(want)
        again, sink = run_pair(backend, remote, job_for(local, rdir / "results", "pull"))
        assert (again.error, again.files_sent, again.bytes_sent) == ("", 0, 0)

    def test_fetch_dry_run_and_excludes(
        self, backend: TransferBackend, remote: Remote, rdir: Path, tmp_path: Path, sshd: SshServer
    ) -> None:
        make_tree(rdir / "r", hostile=False)
        sshd.chown(rdir)
        local = tmp_path / "out"
        result, sink = run_pair(
            backend, remote, job_for(local, rdir / "r", "pull", excludes=["deep/"], dry_run=True)
        )
        assert result.error == ""
        assert not local.exists()
        want = {p for p in files_of(snapshot(rdir / "r")) if not p.startswith("deep/")}
        assert sink.paths("send") == want
        result, _ = run_pair(
            backend, remote, job_for(local, rdir / "r", "pull", excludes=["deep/"])
        )
        assert files_of(snapshot(local)) == want

    def test_fetch_missing_remote_dir_fails_pair(
        self, backend: TransferBackend, remote: Remote, rdir: Path, tmp_path: Path
    ) -> None:
        result, _ = run_pair(backend, remote, job_for(tmp_path / "o", rdir / "absent", "pull"))
        assert result.error and "absent" in result.error

    # -- connections ---------------------------------------------------------------
    def test_unknown_host_key_refused_unless_accepted(
        self, backend: TransferBackend, remote: Remote, src: Path, rdir: Path, tmp_path: Path
    ) -> None:
        known = tmp_path / "known_hosts"
        known.write_text("")
        strict = _replace(remote, known_hosts=str(known))
        assert "unknown" in connection_failure(backend, strict, job_for(src, rdir))
        accepting = _replace(strict, accept_new_host_key=True)
        result, _ = run_pair(backend, accepting, job_for(src, rdir))
        assert result.error == ""
        assert known.read_text().strip()  # the key was remembered (maybe hashed)
        # now known: the strict policy accepts it
        assert run_pair(backend, strict, job_for(src, rdir))[0].error == ""

    def test_changed_host_key_always_refused(
        self, backend: TransferBackend, remote: Remote, src: Path, rdir: Path, tmp_path: Path
    ) -> None:
        known = tmp_path / "known_hosts"
        other = (
            "AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"  # unrelated key
        )
        known.write_text(f"[{remote.host}]:{remote.port} ssh-ed25519 {other}\n")
        for accept in (False, True):
            target = _replace(remote, known_hosts=str(known), accept_new_host_key=accept)
            assert "does not match" in connection_failure(backend, target, job_for(src, rdir))

    def test_unreachable_host_fails_with_one_line(
        self, backend: TransferBackend, remote: Remote, src: Path, rdir: Path
    ) -> None:
        from xfer_core.testing.services import free_port

        target = _replace(remote, port=free_port(), connect_timeout=5.0)
        message = connection_failure(backend, target, job_for(src, rdir))
        assert "\n" not in message and "unreachable" in message

    def test_wrong_key_fails_with_one_line(
        self, backend: TransferBackend, remote: Remote, src: Path, rdir: Path, tmp_path: Path
    ) -> None:
        import subprocess

        key = tmp_path / "other_key"
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)],
            check=True,
            capture_output=True,
        )
        message = connection_failure(
            backend, _replace(remote, key_path=str(key)), job_for(src, rdir)
        )
        assert "\n" not in message and "login refused" in message

    def test_key_readable_by_others_refused(
        self, backend: TransferBackend, remote: Remote, src: Path, rdir: Path, tmp_path: Path
    ) -> None:
        loose = tmp_path / "loose_key"
        loose.write_bytes(Path(str(remote.key_path)).read_bytes())
        loose.chmod(0o644)
        message = connection_failure(
            backend, _replace(remote, key_path=str(loose)), job_for(src, rdir)
        )
        assert message and "\n" not in message
        assert not (rdir / "plain.txt").exists()

    # -- faults --------------------------------------------------------------------
    def test_interrupted_transfer_leaves_no_truncated_file(
        self, backend: TransferBackend, remote: Remote, rdir: Path, tmp_path: Path, sshd: SshServer
    ) -> None:
        src = tmp_path / "big"
        src.mkdir()
        size = 96 * 1024 * 1024
        with open(src / "big.bin", "wb") as fh:
            block = os.urandom(1024 * 1024)
            for _ in range(size // len(block)):
                fh.write(block)
        try:
            with _KillWhenTempAppears(sshd, rdir, "big.bin", size) as killer:
                result, _ = run_pair(backend, remote, job_for(src, rdir))
        finally:
            sshd.start()
        # whatever the timing, the real name holds nothing or the whole file
        final = rdir / "big.bin"
        assert not final.exists() or snapshot(rdir)["big.bin"] == snapshot(src)["big.bin"]
        if not killer.fired or not result.error:
            pytest.skip("the transfer finished before sshd could be stopped")
        assert not final.exists()
        result, _ = run_pair(backend, remote, job_for(src, rdir))
        assert result.error == ""
        assert (rdir / "big.bin").stat().st_size == size
        assert snapshot(rdir)["big.bin"] == snapshot(src)["big.bin"]


def _replace(remote: Remote, **changes: Any) -> Remote:
    import msgspec

    return msgspec.structs.replace(remote, **changes)
