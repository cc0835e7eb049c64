"""Bugs the differential suites found, each pinned by a named case (same check: xfer
against raw rsync on the same pre-state, both backends, both directions)."""

from __future__ import annotations

import pytest
from reliability.conftest import Tally

from .sync_oracle import Env, config, run_differential, xfer
from .test_sync_vs_rsync import DIRECTIONS
from .trees import BASE, NON_UTF8_NAME, Tree, materialise, snapshot

CLASS = "differential: sync/fetch vs rsync"

pytestmark = [
    pytest.mark.sshd,
    pytest.mark.parametrize("direction", DIRECTIONS),
    pytest.mark.parametrize("backend", ["sftp"]),  # the bugs were sftp's; rsync is the oracle
]

F = "file"


def run(
    env: Env,
    factory: pytest.TempPathFactory,
    tally: Tally,
    backend: str,
    direction: str,
    *cases: tuple[Tree, Tree, list[str]],
    flags: tuple[str, ...] = (),
) -> None:
    tmp = factory.mktemp(f"reg-{direction}-{backend}")
    run_differential(env, tmp, direction, backend, list(cases), list(flags), tally)


@pytest.mark.parametrize("flags", [[], ["--checksum"]])
def test_up_to_date_file_gets_the_source_mode_and_mtime(
    env: Env,
    tmp_path_factory: pytest.TempPathFactory,
    tally: Tally,
    backend: str,
    direction: str,
    flags: list[str],
) -> None:
    """sftp left an unchanged file's mode (and, with --checksum, its older mtime) as it
    was; rsync -pt sets both."""
    src: Tree = {"m": (F, b"same\n", 0o755, BASE), "t": (F, b"same\n", 0o644, BASE + 10)}
    pre: Tree = {"m": (F, b"same\n", 0o600, BASE), "t": (F, b"same\n", 0o644, BASE)}
    run(env, tmp_path_factory, tally, backend, direction, (src, pre, []), flags=tuple(flags))


def test_read_only_destination_directory_is_written_into(
    env: Env, tmp_path_factory: pytest.TempPathFactory, tally: Tally, backend: str, direction: str
) -> None:
    """sftp wrote into a read-only destination directory before giving it the source's
    mode: Permission denied. A read-only source directory is read-only at the end."""
    src: Tree = {"d": ("dir", 0o755, BASE), "d/new": (F, b"new\n", 0o644, BASE)}
    src |= {"r": ("dir", 0o555, BASE), "r/new": (F, b"new\n", 0o644, BASE)}
    pre: Tree = {"d": ("dir", 0o555, BASE + 5), "r": ("dir", 0o555, BASE)}
    run(env, tmp_path_factory, tally, backend, direction, (src, pre, []))


@pytest.mark.parametrize("flags", [[], ["--delete"]])
def test_directory_in_the_way_of_a_file(
    env: Env,
    tmp_path_factory: pytest.TempPathFactory,
    tally: Tally,
    backend: str,
    direction: str,
    flags: list[str],
) -> None:
    """sftp removed a non-empty directory in the way of a file even without --delete, and
    with excluded files inside (lost); with --delete it deleted the directory's content
    twice ("No such file"). rsync empties it only with --delete, never removes excluded
    files, and then fails the pair ("could not make way"). A failure naming a non-UTF-8
    name (sorted first here) crashed ``--json`` output (internal error)."""
    src: Tree = {"b": (F, b"file now\n", 0o644, BASE), "e": (F, b"file\n", 0o644, BASE)}
    src["a" + NON_UTF8_NAME] = (F, b"file\n", 0o644, BASE)
    pre: Tree = {
        "b": ("dir", 0o755, BASE),
        "b/l": ("link", "nowhere"),
        "b/f": (F, b"f\n", 0o644, BASE),
    }
    pre |= {"e": ("dir", 0o755, BASE), "e/keep.tmp": (F, b"excluded\n", 0o644, BASE)}
    pre |= {
        "a" + NON_UTF8_NAME: ("dir", 0o755, BASE),
        f"a{NON_UTF8_NAME}/f": (F, b"f\n", 0o644, BASE),
        f"a{NON_UTF8_NAME}/k.tmp": (F, b"excluded\n", 0o644, BASE),
    }
    run(env, tmp_path_factory, tally, backend, direction, (src, pre, ["*.tmp"]), flags=tuple(flags))


def test_file_sent_after_a_checksum_compare_keeps_its_directory_mtime(
    env: Env, tmp_path_factory: pytest.TempPathFactory, tally: Tally, backend: str, direction: str
) -> None:
    """With --checksum, a file found different by content was sent after the planner had
    chosen the directories whose mtime to restore: its directory (here the pair's root
    and ``d``) kept the time of the write."""
    src: Tree = {"f": (F, b"abc", 0o644, BASE), "d": ("dir", 0o755, BASE + 7)}
    src["d/g"] = (F, b"abc", 0o644, BASE)
    pre: Tree = {"f": (F, b"xyz", 0o644, BASE), "d": ("dir", 0o755, BASE + 7)}
    pre["d/g"] = (F, b"xyz", 0o644, BASE)
    run(env, tmp_path_factory, tally, backend, direction, (src, pre, []), flags=("--checksum",))


@pytest.mark.parametrize("flags", [["--delete"]])
def test_read_only_directories_are_deleted(
    env: Env,
    tmp_path_factory: pytest.TempPathFactory,
    tally: Tally,
    backend: str,
    direction: str,
    flags: list[str],
) -> None:
    """sftp --delete failed (Permission denied) on a read-only directory gone from the
    source, and on one in the way of a file; rsync makes it writable and deletes it."""
    src: Tree = {"f": (F, b"file\n", 0o644, BASE)}
    pre: Tree = {"gone": ("dir", 0o555, BASE), "gone/x": (F, b"x\n", 0o644, BASE)}
    pre |= {"gone/sub": ("dir", 0o500, BASE), "gone/sub/y": (F, b"y\n", 0o444, BASE)}
    pre |= {"f": ("dir", 0o555, BASE), "f/z": (F, b"z\n", 0o644, BASE)}
    run(env, tmp_path_factory, tally, backend, direction, (src, pre, []), flags=tuple(flags))


@pytest.mark.parametrize("flags", [[], ["--delete"]])
def test_excluded_directory_in_the_way_of_a_file(
    env: Env,
    tmp_path_factory: pytest.TempPathFactory,
    backend: str,
    direction: str,
    flags: list[str],
) -> None:
    """A documented difference (docs/sync.md): a destination directory that only a
    directory pattern (``d/``) excludes, where the source has a file ``d``. rsync with
    --delete removes it and sends the file; xfer sftp leaves the excluded directory and
    its content alone and fails the pair with one line (exit 1)."""
    s = env.sshd
    src: Tree = {"d": (F, b"a file\n", 0o644, BASE), "e": (F, b"e\n", 0o644, BASE)}
    pre: Tree = {"d": ("dir", 0o755, BASE), "d/keep": (F, b"kept\n", 0o644, BASE)}
    tmp = tmp_path_factory.mktemp(f"in-the-way-{direction}")
    remote = s.mkdtemp("in-the-way")
    src_root, dst_root = (
        (tmp / "src", remote / "dst")
        if direction == "push"
        else (
            remote / "src",
            tmp / "dst",
        )
    )
    materialise(src_root, src)
    materialise(dst_root, pre)
    s.chown(remote)
    local, far = (src_root, dst_root) if direction == "push" else (dst_root, src_root)
    conf = tmp / "remotes.toml"
    kind = "sync_dirs" if direction == "push" else "fetch_dirs"
    conf.write_text(config(env, kind, [(str(local), str(far), ["d/"])]))
    command = "sync" if direction == "push" else "fetch"
    proc = xfer(env, command, "--config", str(conf), "-b", backend, *flags)
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr and "d: " in proc.stderr, proc.stderr
    after = snapshot(dst_root)
    assert after["d"][0] == "dir" and after["d/keep"][1] == b"kept\n"
    assert after["e"][1] == b"e\n"  # the rest of the pair was moved


@pytest.mark.parametrize("flags", [["--delete"]])
def test_read_only_directory_kept_for_excluded_content(
    env: Env,
    tmp_path_factory: pytest.TempPathFactory,
    tally: Tally,
    backend: str,
    direction: str,
    flags: list[str],
) -> None:
    """A read-only directory gone from the source but holding excluded files stays; like
    rsync, xfer makes it writable only where it must (a non-root user), not as root (sftp
    left it writable as root). Its non-UTF-8 name is in the "cannot delete" warning
    (escaped, as every failure line)."""
    src: Tree = {"f": (F, b"file\n", 0o644, BASE)}
    name = "r" + NON_UTF8_NAME
    pre: Tree = {name: ("dir", 0o555, BASE), f"{name}/x": (F, b"x\n", 0o644, BASE)}
    pre[f"{name}/keep.tmp"] = (F, b"excluded\n", 0o644, BASE)
    run(env, tmp_path_factory, tally, backend, direction, (src, pre, ["*.tmp"]), flags=tuple(flags))
