"""Real rsync as the oracle: which entries of a local tree ``rsync -a --exclude=...`` would send."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from xfer_core.sync.excludes import ExcludeMatcher

RSYNC = shutil.which("rsync")

#: Names in every directory of the test tree: wildcard characters, dots, spaces, non-ASCII.
FILE_NAMES = ("x", "a.b", "[a]", "b*", "é", "c d", "a\\b", "?")
DIR_NAMES = ("a", "b", "ab")


def build_tree(root: Path, depth: int = 3) -> None:
    """A tree with every FILE_NAME in every dir and DIR_NAMES nested ``depth`` deep."""

    def fill(d: Path, level: int) -> None:
        d.mkdir(parents=True, exist_ok=True)
        for name in FILE_NAMES:
            (d / name).write_bytes(b"")
        if level < depth:
            for name in DIR_NAMES:
                fill(d / name, level + 1)

    fill(root, 0)
    (root / "empty").mkdir()
    (root / "a" / "empty").mkdir()
    # symlinks to directories are not directories for rsync -a (they are sent as links)
    (root / "lnk").symlink_to("a")
    (root / "b" / "lnk").symlink_to("../a")


def rsync_sent(root: Path, patterns: list[str]) -> set[str]:
    """Relative paths rsync would transfer from ``root`` (dirs without trailing slash)."""
    assert RSYNC is not None
    args = ExcludeMatcher(patterns).rsync_args()
    proc = subprocess.run(
        [RSYNC, "-a", "-8", "--dry-run", "--out-format=%n", *args, f"{root}/", f"{root}.dst/"],
        capture_output=True,
        check=True,
    )
    names = set()
    for line in proc.stdout.split(b"\n"):
        if not line or line == b"./":
            continue
        names.add(os.fsdecode(line.rstrip(b"/")))
    return names


def matcher_sent(root: Path, patterns: list[str]) -> set[str]:
    """Relative paths our matcher keeps, asking ``excluded()`` for every entry of the tree."""
    m = ExcludeMatcher(patterns)
    kept = set()
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = os.path.relpath(dirpath, root)
        for name in dirnames + filenames:
            rel = name if rel_dir == "." else f"{rel_dir}/{name}"
            full = os.path.join(dirpath, name)
            is_dir = os.path.isdir(full) and not os.path.islink(full)
            if not m.excluded(rel, is_dir):
                kept.add(rel)
    return kept


def walker_sent(root: Path, patterns: list[str]) -> set[str]:
    """The same set through a pruning top-down walk that only calls ``matches()``."""
    m = ExcludeMatcher(patterns)
    kept = set()

    def walk(d: Path, rel: str) -> None:
        for entry in os.scandir(d):
            r = f"{rel}{entry.name}"
            is_dir = entry.is_dir(follow_symlinks=False)
            if m.matches(r, is_dir):
                continue
            kept.add(r)
            if is_dir:
                walk(Path(entry.path), r + "/")

    walk(root, "")
    return kept
